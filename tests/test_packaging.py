"""The environment is the locked one: requirements/lock.txt holds every package with its exact version, the
installed environment matches it, pyproject.toml keeps ranges for users, and conda installs the same lock."""
import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(text: str) -> dict[str, str]:
    """{name: version} of the `name==version` lines of a pip requirements file."""
    return {canonical(m.group(1)): m.group(2) for m in re.finditer(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", text, re.M)}


def drift(lock: dict[str, str], installed: dict[str, str]) -> list[str]:
    """What differs between the lock and an installed set: missing packages and other versions."""
    return [f"{name}: locked {version}, installed {installed.get(name, 'nothing')}"
            for name, version in sorted(lock.items()) if installed.get(name) != version]


def installed_versions() -> dict[str, str]:
    return {canonical(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}


def test_every_locked_package_is_installed_at_its_version():
    lock = locked(LOCK.read_text())
    assert len(lock) > 200, "the lock holds the whole dev + eval environment, transitive packages included"
    problems = drift(lock, installed_versions())
    assert not problems, ("the environment drifted from requirements/lock.txt (run `make setup`, or `make lock` "
                          "after changing pyproject.toml):\n" + "\n".join(problems))


def test_drift_names_a_missing_package_and_another_version():
    lock = {"torch": "2.14.1", "filelock": "4.2.12", "six": "1.17.0"}
    assert drift(lock, {"torch": "2.14.1", "filelock": "4.3.2"}) == [
        "filelock: locked 4.2.12, installed 4.3.2", "six: locked 1.17.0, installed nothing"]
    assert drift(lock, dict(lock)) == []


def test_every_lock_entry_carries_hashes():
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", LOCK.read_text().split("\n", 2)[2])
    assert all("--hash=sha256:" in block for block in blocks if "==" in block.split("\n")[0])


def test_pyproject_declares_ranges_and_every_declared_package_is_locked():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    lock = locked(LOCK.read_text())
    for requirement in declared:
        name = canonical(re.match(r"[A-Za-z0-9_.-]+", requirement).group(0))
        if name != "rclib":
            assert "==" not in requirement, f"{requirement!r}: a library declares ranges; the lock pins"
            assert name in lock, f"{name} is declared but not locked: run `make lock`"
    assert lock["torch"] == "2.14.1" and lock["torchvision"] == "0.29.1"


@pytest.mark.parametrize("path", ["environment.yml", "Makefile"])
def test_installers_install_the_lock(path):
    assert "requirements/lock.txt" in (ROOT / path).read_text()
