"""`make report` / ``rclib report``: notebooks run and published without their code, as one static HTML site.

Each notebook runs in a fresh kernel in its own folder, as ``jupyter nbconvert --execute`` runs it (the kernel
gets no MPLBACKEND, so figures show inline as in Jupyter), and becomes a page without code cells or prompts, as
``nbconvert --no-input`` writes it; ``index.html`` links every page. The site is written into a temporary folder
that replaces the output folder as a whole (:func:`rclib.outputs.output_folder`): a notebook that fails, or an
interrupt, leaves the previous report, and a folder holding files rclib did not write is refused, not emptied.

Before it is published the site is checked (:func:`site_problems`): every image is inline (a data: URI) or a
file of the site, and not empty; every link to a local page reaches a file of the site, and the anchor it names;
the index links every page. A site with a problem is refused, each problem named.
"""
from __future__ import annotations

import base64
import html
import io
import os
import re
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

from rclib.models.registry import REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"
# The notebooks with results (01 is the explorer: `make present` serves it live).
REPORTED = ("02_reproduce_paper", "03_how_it_works", "04_compare_methods")
CELL_TIMEOUT_S = 3600  # one cell's run (notebook 02's benchmark on 2 shared cores takes minutes)
INDEX = "index.html"


def execute(notebook, path: Path, timeout: int = CELL_TIMEOUT_S):
    """``notebook`` (read from ``path``) run top to bottom, in place, in a fresh kernel started in its folder;
    returns it. ValueError naming the notebook and the error when a cell fails."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    environment = {key: value for key, value in os.environ.items() if key != "MPLBACKEND"}  # inline figures
    try:
        NotebookClient(notebook, timeout=timeout, kernel_name="python3").execute(cwd=str(path.parent),
                                                                                  env=environment)
    except CellExecutionError as error:
        raise ValueError(f"notebook {path.name} failed: {error.ename}: {error.evalue} (run it in `make lab` to see "
                         "the cell)") from error
    return notebook


def read_notebook(path: Path):
    """The notebook at ``path``; ValueError saying what to pass when it is missing or not a notebook."""
    import nbformat

    if path.suffix != ".ipynb" or not path.is_file():
        raise ValueError(f"no notebook {str(path)!r}: pass .ipynb files (the .py of a jupytext pair is not one)")
    try:
        return nbformat.read(path, as_version=4)
    except (OSError, ValueError) as error:  # nbformat's NotJSONError is a ValueError
        raise ValueError(f"{str(path)!r} is not a readable notebook ({error}): open and save it in Jupyter") from error


def title(notebook, default: str) -> str:
    """The notebook's first Markdown heading ("02 · Reproduce the paper"), else ``default``."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            heading = re.search(r"^#+\s+(.+?)\s*$", cell.source, re.M)
            if heading:
                return heading.group(1)
    return default


def page_html(notebook, name: str) -> str:
    """An executed notebook as a page without its code: its Markdown and outputs, no prompts (``--no-input``)."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": title(notebook, name)}})
    return body


def index_html(titles: dict[str, str], day: str) -> str:
    """The site's first page: what it is, and a link to each page (page file name -> its title)."""
    items = "".join(f'<li><a href="{html.escape(page)}">{html.escape(text)}</a></li>' for page, text in titles.items())
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>rclib report</title></head><body>\n'
            f"<h1>rclib: Recoverable Compression, measured</h1>\n<p>These notebooks ran on {day} (UTC) and are shown "
            "without their code. The explorer (notebook 01) runs live: <code>make present</code>.</p>\n"
            f"<ul>{items}</ul>\n</body></html>\n")


def write_site(notebooks: dict, out: str | Path) -> Path:
    """Write executed notebooks (page name -> NotebookNode, in the index's order) as pages ``<name>.html`` and
    ``index.html`` into ``out``, all or nothing; a site :func:`site_problems` finds fault with is not published
    (ValueError naming each problem). Returns the folder."""
    from rclib.outputs import output_folder

    if not notebooks:
        raise ValueError("no notebook to report: pass at least one")
    with output_folder(out, "report") as folder:
        titles = {}
        for name, notebook in notebooks.items():
            (folder / f"{name}.html").write_text(page_html(notebook, name), encoding="utf-8")
            titles[f"{name}.html"] = title(notebook, name)
        day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        (folder / INDEX).write_text(index_html(titles, day), encoding="utf-8")
        problems = site_problems(folder)
        if problems:
            raise ValueError(f"the report is not written, its pages have {len(problems)} problem(s): "
                             + "; ".join(problems))
    return Path(out)


def build_report(paths, out: str | Path, timeout: int = CELL_TIMEOUT_S) -> Path:
    """Run the notebooks at ``paths`` (all read before the first runs) and write them as a site into ``out``
    (:func:`write_site`), each page named as its notebook. Returns the folder."""
    paths = [Path(p) for p in paths]
    names = [path.stem for path in paths]
    clashes = sorted({name for name in names if names.count(name) > 1 or f"{name}.html" == INDEX})
    if clashes:
        raise ValueError(f"notebooks named {', '.join(clashes)} would write the same page (or the index): rename "
                         "them or pass each name once")
    notebooks = {path: read_notebook(path) for path in paths}
    return write_site({path.stem: execute(notebook, path, timeout) for path, notebook in notebooks.items()}, out)


class Page(HTMLParser):
    """What a page holds that the check reads: its images' sources, its links' targets, the anchors it defines."""

    def __init__(self):
        super().__init__()
        self.images, self.links, self.anchors = [], [], set()

    def holds(self, fragment: str) -> bool:
        """Whether a link's ``#fragment`` finds an anchor here: as a browser looks, as written, then percent-decoded
        (nbconvert writes its headings' ids encoded)."""
        return bool({fragment, unquote(fragment)} & self.anchors)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.anchors.update(attrs[key] for key in ("id", "name") if attrs.get(key) and (key == "id" or tag == "a"))
        if tag == "img":
            self.images.append(attrs.get("src") or "")
        elif tag == "a" and attrs.get("href") is not None:
            self.links.append(attrs["href"])


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def image_problem(data: bytes, media: str) -> str | None:
    """Why image bytes show nothing (no bytes, unreadable, one colour everywhere), else None; ``media``: its MIME
    type (an SVG is only checked for bytes)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        return "is empty"
    if "svg" in media:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            extrema = image.getextrema()
    except (UnidentifiedImageError, OSError, ValueError) as error:
        return f"is not a readable image ({error})"
    bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
    if all(low == high for low, high in bands):
        return "is blank (one colour)"
    return None


def data_uri(source: str) -> tuple[bytes, str]:
    """(bytes, MIME type) of a data: URI."""
    header, _, payload = source[len("data:"):].partition(",")
    data = base64.b64decode(payload) if header.endswith(";base64") else unquote(payload).encode()
    return data, header.split(";")[0]


def site_problems(folder: str | Path) -> list[str]:
    """What is broken in the static site in ``folder``, one sentence each ([] for none): an image neither inline
    nor a file of the site, or empty, unreadable or blank; a link to a local page that is missing, outside the
    site, or lacks the anchor it names; a page the index does not link."""
    folder = Path(folder).resolve()
    pages = {path: parse(path) for path in sorted(folder.rglob("*.html"))}
    problems = []
    for path, page in pages.items():
        name = path.relative_to(folder).as_posix()
        for number, source in enumerate(page.images, 1):
            where = f"{name}: image {number}"
            if source.startswith("data:"):
                try:
                    data, media = data_uri(source)
                except ValueError:  # binascii.Error
                    problems.append(f"{where}: its data: URI is not valid base64")
                    continue
            elif urlsplit(source).scheme or source.startswith("//") or not source:
                problems.append(f"{where} is not in the site ({source[:80]!r}): inline it or copy it into the site")
                continue
            else:
                target = (path.parent / unquote(urlsplit(source).path)).resolve()
                if not target.is_file() or not target.is_relative_to(folder):
                    problems.append(f"{where}: {source!r} is no file of the site")
                    continue
                data, media = target.read_bytes(), target.suffix
            problem = image_problem(data, media)
            if problem:
                problems.append(f"{where} {problem}")
        for href in page.links:
            link = urlsplit(href)
            if link.scheme or href.startswith("//"):
                continue  # another site (http:, mailto:): not the report's to check
            target = (path.parent / unquote(link.path)).resolve() if link.path else path
            if not target.is_relative_to(folder) or not target.is_file():
                problems.append(f"{name}: the link to {href!r} reaches no file of the site")
            elif link.fragment and target in pages and not pages[target].holds(link.fragment):
                problems.append(f"{name}: the link to {href!r} names an anchor its page does not have")
    index = folder / INDEX
    if index not in pages:
        problems.append(f"the site has no {INDEX}")
    else:
        linked = {(folder / unquote(urlsplit(href).path)).resolve() for href in pages[index].links}
        problems += [f"{INDEX} does not link {path.relative_to(folder).as_posix()}"
                     for path in pages if path != index and path not in linked]
    return problems
