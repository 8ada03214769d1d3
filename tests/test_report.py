"""`make report` / rclib report: notebooks run in a kernel, published without code as a site with no broken image or
link, all or nothing. The notebooks of the real report pass the same check where nbmake runs them (conftest.py)."""
import base64
import io

import nbformat
import numpy as np
import pytest
from PIL import Image

from rclib.cli import main
from rclib.outputs import MARKER
from rclib.report import INDEX, page_html, parse, site_problems, title, write_site

FIGURE_CODE = "import matplotlib.pyplot as plt\nplt.plot([0, 1, 4], color='tab:blue')\nplt.title('{name}')"


def notebook_file(folder, name: str, code: str):
    """A small notebook of a heading, a link to the other page and a code cell, unexecuted, at folder/name.ipynb."""
    other = "one" if name == "two" else "two"
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell(f"# Page {name} · small\n\n## Results\n\nSee [page {other}]"
                                      f"({other}.html#Results) and [the results above](#Results)."),
        nbformat.v4.new_code_cell(code)])
    path = folder / f"{name}.ipynb"
    nbformat.write(notebook, path)
    return path


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="png")
    return buffer.getvalue()


def test_a_report_runs_its_notebooks_and_publishes_them_without_code(tmp_path, capsys):
    paths = [notebook_file(tmp_path, name, FIGURE_CODE.format(name=name)) for name in ("one", "two")]
    out = tmp_path / "report"
    assert main(["report", *map(str, paths), "--out", str(out)]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, INDEX, "one.html", "two.html"])
    assert site_problems(out) == [], "every image inline and drawn, every link and anchor reached, every page indexed"
    for name in ("one", "two"):
        page = (out / f"{name}.html").read_text()
        assert [src[:22] for src in parse(out / f"{name}.html").images] == ["data:image/png;base64,"], "the figure"
        assert "plt.plot" not in page, "no code"
        assert f"<title>Page {name} · small</title>" in page
    index = (out / INDEX).read_text()
    assert '<a href="one.html">Page one · small</a>' in index and '<a href="two.html">Page two · small</a>' in index

    before = {p.name: p.read_bytes() for p in out.iterdir()}
    broken = notebook_file(tmp_path, "one", "raise RuntimeError('the data is missing')")
    assert main(["report", str(broken), "--out", str(out)]) == 2
    assert "notebook one.ipynb failed: RuntimeError: the data is missing" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before, "a failed run leaves the previous report"


def test_a_folder_of_other_files_is_refused_before_any_notebook_runs(tmp_path, capsys):
    out = tmp_path / "site"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["report", str(tmp_path / "missing.ipynb"), "--out", str(out)]) == 2
    assert "holds what rclib did not write (notes.txt)" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing.ipynb"), "--out", str(tmp_path / "new")]) == 2
    assert "no notebook" in capsys.readouterr().err and not (tmp_path / "new").exists()
    assert main(["report", "a/one.ipynb", "b/one.ipynb", "index.ipynb", "--out", str(tmp_path / "new")]) == 2
    assert "notebooks named index, one would write the same page" in capsys.readouterr().err


def test_the_check_names_every_broken_image_and_link(tmp_path):
    drawn = png(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    blank = png(np.full((4, 4, 3), 255, np.uint8))
    (tmp_path / "figure.png").write_bytes(drawn)
    (tmp_path / "empty.png").write_bytes(b"")

    def uri(data: bytes) -> str:
        return "data:image/png;base64," + base64.b64encode(data).decode()

    anchors = '<h2 id="top">A</h2><h2 id="caf%C3%A9">B</h2><h2 id="thé">C</h2>'  # nbconvert's ids are encoded
    images = (f'<img src="{uri(drawn)}"><img src="figure.png"><img src="{uri(blank)}">'
              '<img src="data:image/png;base64,"><img src="missing.png"><img src="empty.png">'
              '<img src="https://example.org/x.png">')
    links = ('<a href="#top">up</a><a href="#caf%C3%A9">B</a><a href="#th%C3%A9">C</a><a href="https://example.org">'
             'web</a><a href="b.html">b</a><a href="b.html#nowhere">b, nowhere</a><a href="#gone">gone</a>'
             '<a href="../outside.html">out</a>')
    (tmp_path / "a.html").write_text(anchors + images + links)
    (tmp_path / "b.html").write_text("<p>b</p>")
    (tmp_path / "c.html").write_text("<p>c</p>")
    (tmp_path / INDEX).write_text('<a href="a.html">a</a><a href="b.html">b</a>')
    assert site_problems(tmp_path) == [
        "a.html: image 3 is blank (one colour)",
        "a.html: image 4 is empty",
        "a.html: image 5: 'missing.png' is no file of the site",
        "a.html: image 6 is empty",
        "a.html: image 7 is not in the site ('https://example.org/x.png'): inline it or copy it into the site",
        "a.html: the link to 'b.html#nowhere' names an anchor its page does not have",
        "a.html: the link to '#gone' names an anchor its page does not have",
        "a.html: the link to '../outside.html' reaches no file of the site",
        "index.html does not link c.html"]
    (tmp_path / INDEX).unlink()
    assert site_problems(tmp_path)[-1] == "the site has no index.html"


def test_a_broken_site_is_not_published(tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Broken\n\n[next](next.html)")])
    assert title(notebook, "fallback") == "Broken" and "<h1" in page_html(notebook, "broken")
    with pytest.raises(ValueError, match=r"not written.*the link to 'next.html' reaches no file of the site"):
        write_site({"broken": notebook}, tmp_path / "site")
    assert not (tmp_path / "site").exists()
