"""The environment files agree: conda users get the same pins as the venv."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pins(lines) -> dict[str, str]:
    found = {}
    for line in lines:
        match = re.match(r"\s*-?\s*\"?([A-Za-z0-9_.+-]+)==([^\"\s,]+)", line)
        if match:
            found[match.group(1).lower().replace("_", "-")] = match.group(2)
    return found


def test_environment_yml_pins_equal_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = pins(project["dependencies"] + project["optional-dependencies"]["test"]
                    + project["optional-dependencies"]["dev"] + project["optional-dependencies"]["eval"])
    conda = pins((ROOT / "environment.yml").read_text().splitlines())
    assert declared == conda, f"pyproject vs environment.yml differ: {set(declared.items()) ^ set(conda.items())}"
    assert declared["torch"] == "2.14.1" and declared["torchvision"] == "0.29.1"
