"""The notebooks of `make report`, checked as published where the suite already runs them: nbmake executes each
notebook (pyproject.toml's --nbmake); for those the report holds (rclib.report.REPORTED) the executed notebook is
also written as a report page and checked as `rclib report` checks its site (rclib.report.write_site: no broken or
empty image, no dead link, every page indexed) and must show a figure. The notebooks run once, not again."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    if not getattr(item, "nbmake", False):
        return (yield)
    from nbmake.nb_run import NotebookRun

    from rclib.report import REPORTED, parse, write_site

    name = Path(item.filename).stem
    if name not in REPORTED:
        return (yield)
    runs = []
    execute = NotebookRun.execute

    def keep(run):
        runs.append(execute(run))
        return runs[-1]

    with pytest.MonkeyPatch.context() as patch:  # nbmake keeps the executed notebook only to overwrite the file
        patch.setattr(NotebookRun, "execute", keep)
        result = yield
    with tempfile.TemporaryDirectory() as folder:
        site = write_site({name: runs[-1].nb}, Path(folder) / "report")  # ValueError naming each problem
        assert parse(site / f"{name}.html").images, f"the report's page of {name} shows no figure"
    return result
