"""Each notebook in JupyterLab, in a real browser: run all, no error output, saved exactly as committed; the
explorer of notebook 01 answers its controls. Screenshots go to out/browser/ for a person to look at."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
RUN_TIMEOUT_S = 900  # one notebook's "Run All Cells" on 2 shared cores
UPDATE_TIMEOUT_S = 120  # one explorer input until its new figure (about 0.1-0.2 s on a quiet machine)
CURRENT = ".jp-NotebookPanel:not(.lm-mod-hidden)"
ALL_RAN = f"""() => {{
  const prompts = [...document.querySelectorAll('{CURRENT} .jp-CodeCell .jp-InputPrompt')]
    .map(e => e.textContent.trim());
  return prompts.length > 0 && prompts.every(p => /^\\[\\d+\\]:$/.test(p));
}}"""
ERRORS = f"""() => [...document.querySelectorAll('{CURRENT} .jp-OutputArea-output')]
  .filter(e => e.dataset.mimeType === 'application/vnd.jupyter.stderr' || /Error displaying widget/.test(e.textContent))
  .map(e => e.textContent.slice(0, 2000))"""


def open_notebook(page, lab, name: str) -> None:
    """Open ``name`` (an .ipynb) in JupyterLab and wait for its kernel; the file browser is folded away."""
    page.goto(lab.notebook_url(name))
    page.wait_for_selector(f"{CURRENT} .jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=180_000)
    page.keyboard.press("Control+b")  # fold the left sidebar: the notebook gets the width


def run_all(page) -> float:
    """Run > Run All Cells, wait until every code cell has run; seconds it took."""
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.click("li[data-command='runmenu:run-all']")
    start = time.perf_counter()
    page.wait_for_function(ALL_RAN, timeout=RUN_TIMEOUT_S * 1000, polling=1000)
    page.wait_for_selector(f"{CURRENT} .jp-Notebook-ExecutionIndicator[data-status='idle']")
    return time.perf_counter() - start


def save(page) -> None:
    page.click(f"{CURRENT} .jp-Notebook-ExecutionIndicator")  # focus the notebook, not a cell's editor
    page.keyboard.press("Control+s")
    page.wait_for_function("() => !document.querySelector('.lm-TabBar-tab.jp-mod-current.jp-mod-dirty')",
                           timeout=120_000)  # a save waits for the kernel's busy moments on 2 cores


# What a reader sees wrong in the outputs on screen: a figure scaled down or drawn with fewer pixels than the screen
# shows (2 per CSS pixel), a table running past the window outside a box of its own that scrolls.
UNFIT = f"""() => {{
  const found = [];
  for (const img of document.querySelectorAll('{CURRENT} .jp-OutputArea-output img')) {{
    const own = Number(img.getAttribute('width')) || img.naturalWidth;
    if (img.clientWidth < own - 1) found.push(`a figure shown at ${{img.clientWidth}} of its ${{own}} px`);
    if (img.naturalWidth < 2 * img.clientWidth - 2) found.push(`a figure of ${{img.naturalWidth}} px shown at ${{img.clientWidth}}`);
  }}
  for (const table of document.querySelectorAll('{CURRENT} .jp-OutputArea-output table')) {{
    let box = table.parentElement, scrolls = false;
    while (box && !box.classList.contains('jp-OutputArea-output')) {{
      scrolls = scrolls || (['auto', 'scroll'].includes(getComputedStyle(box).overflowX) &&
                            box.getBoundingClientRect().right <= window.innerWidth);
      box = box.parentElement;
    }}
    if (table.getBoundingClientRect().right > window.innerWidth && !scrolls)
      found.push(`a table ${{Math.round(table.getBoundingClientRect().width)}} px wide, cut off`);
  }}
  return found;
}}"""
SLIDE = {"width": 1280, "height": 720}  # a projector's screen


def screenshot_notebook(page, path) -> list[str]:
    """The whole notebook in one image: the notebook scrolled a screen at a time, the screens stacked; returns what
    :data:`UNFIT` finds on each screen."""
    from PIL import Image

    outer = page.locator(f"{CURRENT} .jp-WindowedPanel-outer")
    box = outer.bounding_box()
    height = outer.evaluate("e => e.scrollHeight")
    whole = Image.new("RGB", (round(box["width"]), height), "white")
    top, unfit = 0, []
    while True:
        shown = outer.evaluate(f"e => {{ e.scrollTop = {top}; return e.scrollTop; }}")  # the last screen stops early
        page.wait_for_timeout(300)  # cells scrolled into view are drawn
        unfit += page.evaluate(UNFIT)
        part = path.with_suffix(".part.png")
        page.screenshot(path=part, clip=box)
        whole.paste(Image.open(part), (0, round(shown)))
        if top + box["height"] >= height:
            break
        top += box["height"]
    part.unlink()
    whole.save(path)
    return list(dict.fromkeys(unfit))


def screenshot_explorer(page, path) -> None:
    """The explorer alone, the window tall enough to hold it."""
    page.set_viewport_size({"width": 1400, "height": 2400})
    explorer = page.locator(".rclib-explorer")
    explorer.scroll_into_view_if_needed()
    explorer.screenshot(path=path)
    page.set_viewport_size({"width": 1400, "height": 1000})


def check_saved_as_committed(lab, name: str) -> None:
    """After running and saving, both files of the pair are byte for byte the committed ones (as copied)."""
    for path in (lab.root / name, (lab.root / name).with_suffix(".py")):
        assert path.read_bytes() == lab.copied[path.name], f"saving {name} changed {path.name}: a dirty working tree"


def run_notebook(page, lab, name: str, screenshots) -> float:
    open_notebook(page, lab, name)
    save(page)  # as JupyterLab's autosave would: the kernel's details added on opening are not written
    check_saved_as_committed(lab, name)
    seconds = run_all(page)
    assert page.evaluate(ERRORS) == [], f"{name} shows error output"
    return seconds


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("0[2-9]_*.ipynb")))
def test_notebook_runs_cleanly_and_saves_as_committed(page, lab, screenshots, name):
    run_notebook(page, lab, name, screenshots)
    assert page.locator(f"{CURRENT} .jp-OutputArea-output img").count() > 0, f"{name} shows no figure"
    page.set_viewport_size({"width": SLIDE["width"], "height": 1000})
    unfit = screenshot_notebook(page, screenshots / f"{name.removesuffix('.ipynb')}.png")
    assert unfit == [], f"{name} at {SLIDE['width']} px: {unfit}"
    save(page)
    check_saved_as_committed(lab, name)


def timed(page, action: str, act, timings: list, selector: str = ".rclib-figure") -> None:
    """Do ``act`` and wait until the explorer shows a new figure; record the seconds under ``action``."""
    before = page.get_attribute(selector, "src")
    start = time.perf_counter()
    act()
    page.wait_for_function(f"src => document.querySelector('{selector}').getAttribute('src') !== src", arg=before,
                           timeout=UPDATE_TIMEOUT_S * 1000, polling="raf")
    timings.append({"action": action, "seconds": round(time.perf_counter() - start, 3)})


def below(page, selector: str) -> float:
    """How far below the explorer's top the element of ``selector`` starts, in CSS px (scrolling moves both)."""
    return page.locator(selector).bounding_box()["y"] - page.locator(".rclib-explorer").bounding_box()["y"]


def check_the_figure_holds_still(page, timings, where: str) -> None:
    """The explorer's answers box fills up (a budget of 400: long counts; prumerge; a question with a word the model
    never saw, one without a word, an empty one: warnings and notes) and the figure stays where it is. where: the
    timings' prefix."""
    figure = below(page, ".rclib-figure")
    page.locator(".rclib-budget .widget-readout").click()
    page.keyboard.press("Control+a")
    page.keyboard.type("400")
    timed(page, f"{where}: budget typed 400, Enter", lambda: page.keyboard.press("Enter"), timings)
    assert below(page, ".rclib-figure") == figure, "the figure moved when the budget grew the answers"
    timed(page, f"{where}: method prumerge", lambda: page.select_option(".rclib-method select", "prumerge"), timings)
    assert below(page, ".rclib-figure") == figure, "the figure moved with the method"
    question = page.locator(".rclib-question input")
    question.fill("what zebra ?")
    timed(page, f"{where}: a question with an unknown word (the encoders run)", lambda: question.press("Enter"),
          timings)
    assert "zebra" in page.locator(".rclib-warning").inner_text()
    assert below(page, ".rclib-figure") == figure, "the figure moved when a warning appeared"
    question.fill("?")
    timed(page, f"{where}: a question without a word", lambda: question.press("Enter"), timings)
    assert "has no word" in page.locator(".rclib-warning").inner_text()
    assert below(page, ".rclib-figure") == figure, "the figure moved when a second warning replaced the first"
    question.fill("")
    question.press("Enter")
    page.wait_for_function("() => /question is empty/.test(document.querySelector('.rclib-warning').innerText)")
    assert below(page, ".rclib-figure") == figure, "the figure moved when the answers went for an empty question"


# Where the budget slider's top and the figure's bottom are in the notebook's scrolled area, the budget scrolled to
# its top: both on screen when the figure ends above the area's bottom; and neither cut off at the sides.
SLIDER_AND_FIGURE = f"""() => {{
  document.querySelector('.rclib-budget').scrollIntoView({{block: 'start'}});
  const area = document.querySelector('{CURRENT} .jp-WindowedPanel-outer').getBoundingClientRect();
  const slider = document.querySelector('.rclib-budget').getBoundingClientRect();
  const figure = document.querySelector('.rclib-figure').getBoundingClientRect();
  return {{area: [area.left, area.top, area.right, area.bottom], slider: [slider.left, slider.top, slider.right],
           figure: [figure.left, figure.bottom, figure.right]}};
}}"""
NARROW = {"width": 1100, "height": 720}  # a laptop's browser window beside another


def test_explorer_fits_a_narrow_window_and_holds_still(page, lab, screenshots, timings):
    page.set_viewport_size(NARROW)
    run_notebook(page, lab, "01_explore_one_image.ipynb", screenshots)
    page.evaluate("document.querySelector('.rclib-explorer').scrollIntoView({block: 'start'})")
    page.screenshot(path=screenshots / "01-explorer-1100px.png")
    found = page.evaluate(SLIDER_AND_FIGURE)
    (left, top, right, bottom), slider, figure = found["area"], found["slider"], found["figure"]
    page.screenshot(path=screenshots / "01-explorer-1100px-slider.png")
    assert top - 1 <= slider[1] and figure[1] <= bottom, f"at {NARROW}, slider and figure on one screen: {found}"
    assert left <= min(slider[0], figure[0]) and max(slider[2], figure[2]) <= right, f"cut off at the side: {found}"
    check_the_figure_holds_still(page, timings, "lab at 1,100 px")
    page.screenshot(path=screenshots / "01-explorer-1100px-warning.png")
    assert page.evaluate(ERRORS) == [], "an explorer callback failed"


def test_explorer_answers_every_control(page, lab, screenshots, timings):
    name = "01_explore_one_image.ipynb"
    run_notebook(page, lab, name, screenshots)
    screenshot_explorer(page, screenshots / "01-explorer-opened.png")
    track = page.locator(".rclib-budget .noUi-target").bounding_box()["width"]
    answers = page.locator(".rclib-answers-table")
    assert answers.locator("table").count() == 1, "the answers are an HTML table"
    before = answers.inner_html()

    readout = page.locator(".rclib-budget .widget-readout")
    n_tokens = round(float(page.locator(".rclib-budget .noUi-handle").get_attribute("aria-valuemax")))
    assert track >= n_tokens, f"the budget slider is {track:.0f} px for {n_tokens} tokens: less than a pixel per token"

    readout.click()
    page.keyboard.press("Control+a")
    page.keyboard.type("24")
    timed(page, "budget typed: 24, Enter", lambda: page.keyboard.press("Enter"), timings)
    handle = page.locator(".rclib-budget .noUi-handle")
    for step in (25, 26, 27):
        timed(page, f"budget arrow key: {step}", lambda: handle.press("ArrowRight"), timings)
    assert float(handle.get_attribute("aria-valuenow")) == 27, "one token per arrow key"
    assert f"{n_tokens} of {n_tokens}" in answers.inner_html(), "token counts in the model's own units"
    timed(page, "KNN k arrow key", lambda: page.locator(".rclib-knn_k .noUi-handle").press("ArrowLeft"), timings)
    timed(page, "text stage off", lambda: page.locator(".rclib-text_stage input").click(), timings)
    assert answers.inner_html() != before, "the answers table follows the controls"

    timed(page, "method: fastervlm", lambda: page.select_option(".rclib-method select", "fastervlm"), timings)
    assert "fastervlm" in answers.inner_text()
    assert page.locator(".rclib-rule select").is_disabled(), "RC's filter rule greyed out for fastervlm"
    timed(page, "method: full", lambda: page.select_option(".rclib-method select", "full"), timings)
    assert readout.get_attribute("contenteditable") == "false", "no budget for all tokens"
    timed(page, "method: rc", lambda: page.select_option(".rclib-method select", "rc"), timings)

    question = page.locator(".rclib-question input")
    words = page.locator(".rclib-vocabulary code").inner_text().split()
    asked = f"{words[0]} {words[1]} zebra ?"  # two words the model knows, one it never saw
    question.fill(asked)
    timed(page, "question typed, Enter (the encoders run)", lambda: question.press("Enter"), timings)
    assert "Q: " + asked in answers.inner_text() and "zebra" in page.locator(".rclib-warning").inner_text()
    assert "not an answer" in answers.inner_text(), "an output to an unknown word is not shown as an answer"
    screenshot_explorer(page, screenshots / "01-explorer-unknown-word.png")

    options = page.locator(".rclib-example option").all_inner_texts()
    photo = next(i for i, option in enumerate(options) if not option.replace("\xa0", " ").startswith("shapes scene"))
    timed(page, "image: a photograph (the encoders run)",
          lambda: page.select_option(".rclib-example select", index=photo), timings)
    assert "ShapesWorld scenes only" in page.locator(".rclib-warning").inner_text()
    screenshot_explorer(page, screenshots / "01-explorer-photo.png")
    assert page.evaluate(ERRORS) == [], "an explorer callback failed"
    screenshot_notebook(page, screenshots / "01_explore_one_image.png")
    save(page)
    check_saved_as_committed(lab, name)
