"""The README's Python API section runs as written: every ```python block of it is executed in order, in one
namespace, from the repository root; the checkpoint-folder block loads a tiny LLaVA folder in place of the real one."""
import os
import re
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def readme_blocks(heading: str) -> list[str]:
    """The ```python blocks of the README's section ``heading`` (a "## " title), in order."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(heading):]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def api_blocks() -> list[str]:
    return readme_blocks("## Python API")


def test_the_api_section_has_its_blocks():
    blocks = api_blocks()
    assert len(blocks) >= 3 and any("rclib.load(" in b for b in blocks) and any("rclib.compress(" in b for b in blocks)


def test_every_api_block_runs(tiny_llava_dir, tiny_clip_dir, monkeypatch):
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    for block in api_blocks():
        code = block.replace("/path/to/llava-1.5-7b-hf", os.fspath(tiny_llava_dir)).replace(
            "/path/to/clip-vit-large-patch14-336", os.fspath(tiny_clip_dir))
        exec(compile(code, "README.md", "exec"), namespace)
    res = namespace["res"]
    assert len(res.kept_indices) == 2 and len(res.recovered_indices) == 2
    assert namespace["m"].model.config.text_config.hidden_size < 256, "the folder block loaded the tiny checkpoint"
