"""The documentation says what the code does: the README's method table is the registry's, no link leaves the repository."""
import re
from pathlib import Path

from rclib.methods import METHODS, method_table

ROOT = Path(__file__).resolve().parents[1]


def test_readme_method_table_is_the_registry():
    readme = (ROOT / "README.md").read_text()
    table = re.search(r"<!-- methods-table.*?-->\n(.*?)\n<!-- /methods-table -->", readme, re.S).group(1)
    assert table == method_table(METHODS), "README's method table is stale: paste the output of `rclib methods`"


def test_no_document_points_outside_the_repository():
    markdown = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("data/**/*.md")]
    for path in [*markdown, *ROOT.glob("notebooks/*.py"), *ROOT.glob("rclib/**/*.py")]:
        links = re.findall(r"\]\(([^)#]+)", path.read_text()) if path.suffix == ".md" else []
        for target in links:
            if not re.match(r"[a-z]+://", target):
                assert (path.parent / target).resolve().is_relative_to(ROOT), f"{path.name} links outside: {target}"
                assert (path.parent / target).exists(), f"{path.name} links to a missing file: {target}"
        assert "../shared" not in path.read_text(), f"{path.name} points at ../shared, which users do not have"
