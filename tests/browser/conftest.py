"""The notebooks as people use them: JupyterLab on localhost, Debian's Chromium driven headless by Playwright.

One JupyterLab server per session, serving a copy of notebooks/ (so that the tests can compare what a save
writes with the committed files), with notebooks/.jupyter on JUPYTER_CONFIG_PATH as `make lab` has it and
the repository on the kernel's PYTHONPATH. The browser is /usr/bin/chromium (`make setup` installs it with
apt; Playwright never downloads one). Screenshots and the explorer's response times go to out/browser/
(RCLIB_BROWSER_OUT elsewhere); the times are also printed at the end of the run.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from rclib.eval.grid import free_port

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
CHROMIUM = Path(os.environ.get("RCLIB_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]
TOKEN = "rclib-browser-tests"  # the server's fixed token
SERVER_START_S = 180  # JupyterLab's first start builds its caches: slow on 2 shared cores
OUT = Path(os.environ.get("RCLIB_BROWSER_OUT", REPO / "out" / "browser"))
MEASURED: list[dict] = []  # {"action", "seconds"} of each explorer input timed this session
# No "would you like news" prompt over the screenshots, no update check (the server is offline).
LAB_SETTINGS = {"@jupyterlab/apputils-extension/notification.jupyterlab-settings":
                {"fetchNews": "false", "checkForUpdates": False}}


@dataclass
class Lab:
    url: str  # http://127.0.0.1:port
    root: Path  # the folder it serves: a copy of notebooks/
    copied: dict[str, bytes]  # file name -> its bytes when copied (what a save must leave as it is)

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?token={TOKEN}&reset"


def wait_for_server(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=5)
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"jupyter lab did not answer within {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def lab(tmp_path_factory) -> Lab:
    """A JupyterLab server on a free localhost port, serving a copy of the notebooks."""
    base = tmp_path_factory.mktemp("lab")
    root = base / "notebooks"
    shutil.copytree(NOTEBOOKS, root, ignore=shutil.ignore_patterns(".jupyter", ".ipynb_checkpoints", "__pycache__"))
    copied = {path.name: path.read_bytes() for path in root.iterdir() if path.is_file()}
    settings = base / "settings"
    for name, values in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values))
    env = {key: value for key, value in os.environ.items() if key != "MPLBACKEND"}  # the notebook's inline plots
    env.setdefault("OMP_NUM_THREADS", "1")  # 2 cores shared with JupyterLab and Chromium: torch threads would spin
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
               JUPYTER_CONFIG_PATH=str(NOTEBOOKS / ".jupyter"), JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"), JUPYTER_RUNTIME_DIR=str(base / "runtime"),
               MPLCONFIGDIR=str(base / "matplotlib"))  # a font cache of this matplotlib, not one left by another
    port = free_port()
    command = [sys.executable, "-m", "jupyterlab", f"--port={port}", "--ServerApp.ip=127.0.0.1",
               f"--IdentityProvider.token={TOKEN}", "--ServerApp.open_browser=False", f"--ServerApp.root_dir={root}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    log = base / "jupyter.log"
    with open(log, "w") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(url, process, log)
        yield Lab(url, root, copied)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless, through Playwright (never a downloaded browser)."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: `make setup` installs Debian's chromium (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    yield context.new_page()
    context.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    return OUT


@pytest.fixture(scope="session")
def timings() -> list[dict]:
    """Where a test records the explorer's response times; printed at the end and written to out/browser."""
    yield MEASURED
    if MEASURED:
        (OUT / "explorer-timings.json").write_text(json.dumps(MEASURED, indent=1))


def pytest_terminal_summary(terminalreporter):
    """The explorer's response times, measured in the browser (a report, not an assertion)."""
    if MEASURED:
        terminalreporter.section("explorer in the browser: seconds from an input to the new figure")
        for entry in MEASURED:
            terminalreporter.write_line(f"{entry['seconds']:6.2f}  {entry['action']}")
        terminalreporter.write_line(f"screenshots and explorer-timings.json: {OUT}")
