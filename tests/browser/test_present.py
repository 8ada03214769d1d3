"""`make present`: the explorer of notebook 01 served by Voila as a web app without code, on a projector's
1,280 x 720 screen in Debian's Chromium: the controls and the figure on one screen, a figure drawn for the screen
it is shown on, and a figure that stays where it is whatever the answers box shows. Each input's response time
is recorded (reported with the other browser timings, not asserted)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_notebooks import ERRORS, SLIDE, check_the_figure_holds_still

from rclib.eval.grid import free_port

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
START_S = 180  # Voila's start; the notebook then runs in the page's kernel
RUN_S = 900  # the notebook's cells, on 2 shared cores


@pytest.fixture(scope="module")
def voila(tmp_path_factory):
    """`make present`'s command on a free port: Voila serving notebook 01 without its code."""
    port = free_port()
    log = tmp_path_factory.mktemp("voila") / "voila.log"
    env = {key: value for key, value in os.environ.items() if key != "MPLBACKEND"}
    env.setdefault("OMP_NUM_THREADS", "1")
    command = [sys.executable, "-m", "voila", str(REPO / "notebooks" / "01_explore_one_image.ipynb"), f"--port={port}",
               "--no-browser", "--Voila.ip=127.0.0.1", "--strip_sources=True", "--theme=light"]
    with open(log, "w") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_S
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"voila did not start:\n{log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(url + "api/status", timeout=5)
                break
            except urllib.error.HTTPError:  # it answers (Voila serves no status page)
                break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def test_the_explorer_is_an_app_that_fits_a_slide_and_holds_still(browser, voila, screenshots, timings):
    context = browser.new_context(viewport=SLIDE, device_scale_factor=2)
    page = context.new_page()
    page.goto(voila, timeout=RUN_S * 1000)
    page.wait_for_selector(".rclib-figure[src]", timeout=RUN_S * 1000)
    assert page.locator(".jp-InputArea-editor, .jp-CodeMirrorEditor").count() == 0, "no code in the app"
    page.evaluate("document.querySelector('.rclib-explorer').scrollIntoView({block: 'start'})")
    page.screenshot(path=screenshots / "present-1280x720.png")

    budget, figure = page.locator(".rclib-budget").bounding_box(), page.locator(".rclib-figure").bounding_box()
    assert budget["y"] >= 0 and figure["y"] + figure["height"] <= SLIDE["height"], \
        f"controls and figure on one {SLIDE['width']} x {SLIDE['height']} screen: the figure ends at {figure}"
    natural, shown = page.evaluate("(e => [e.naturalWidth, e.clientWidth])(document.querySelector('.rclib-figure'))")
    assert natural >= 2 * shown - 2 and shown <= natural / 2 + 1, \
        f"the figure is {natural} px shown at {shown} CSS px: not drawn for a 2x screen, or stretched"

    check_the_figure_holds_still(page, timings, "app")
    page.screenshot(path=screenshots / "present-warning.png")
    assert page.evaluate(ERRORS.replace(".jp-NotebookPanel:not(.lm-mod-hidden) ", "")) == []
    context.close()
