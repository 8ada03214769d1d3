"""The README's "Extending rclib" section runs as written: a method, a model family and a figure panel, each added
the way the section shows, work end to end; the registries are restored afterwards."""
from pathlib import Path

import pytest
from test_readme_api import readme_blocks

ROOT = Path(__file__).resolve().parents[1]


def extending_blocks() -> list[str]:
    return readme_blocks("## Extending rclib")


@pytest.fixture
def restored_registries():
    from rclib import viz
    from rclib.methods import METHODS

    methods, panels = dict(METHODS), dict(viz.PANELS)
    yield
    METHODS.clear(), METHODS.update(methods)
    viz.PANELS.clear(), viz.PANELS.update(panels)


def test_the_section_shows_the_three_extension_points():
    blocks = extending_blocks()
    assert len(blocks) == 3
    assert "METHODS[" in blocks[0] and "class LlavaNextVideo(LlavaNext)" in blocks[1] and "PANELS[" in blocks[2]


def test_every_block_runs(restored_registries, monkeypatch):
    from rclib import viz
    from rclib.methods import METHODS
    from rclib.models.families import FAMILIES
    from rclib.models.families.llava_next_video import LlavaNextVideo

    monkeypatch.chdir(ROOT)
    namespaces = []
    for block in extending_blocks():
        namespace: dict = {}
        exec(compile(block, "README.md", "exec"), namespace)
        namespaces.append(namespace)
    assert "top_text" in METHODS and namespaces[0]["result"].method == "top_text"
    shown = namespaces[1]["LlavaNextVideo"]
    assert (shown.model_type, shown.model_class) == (LlavaNextVideo.model_type, LlavaNextVideo.model_class)
    assert type(FAMILIES["llava_next_video"]) is LlavaNextVideo, "the README shows the family rclib registers"
    assert "merged" in viz.PANELS and len(namespaces[2]["figure"].axes) >= 2
