"""pyproject.toml and environment.yml install the same packages."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    from_pyproject = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    text = (ROOT / "environment.yml").read_text()
    pip_section = text.split("  - pip:\n", 1)[1]
    from_environment = set(re.findall(r"^      - (\S+)$", pip_section, flags=re.M)) - {"-e ."}
    assert from_environment == from_pyproject
    assert project["requires-python"] == ">=3.10" and "  - python>=3.10" in (ROOT / "environment.yml").read_text()
