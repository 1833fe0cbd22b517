"""pyproject.toml and environment.yml install the same packages."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    from_pyproject = set(project["dependencies"]).union(*project["optional-dependencies"].values())
    assert set(project["optional-dependencies"]) == {"dev", "course", "docs"}
    text = (ROOT / "environment.yml").read_text()
    pip_section = text.split("  - pip:\n", 1)[1]
    from_environment = set(re.findall(r"^      - (\S+)$", pip_section, flags=re.M)) - {"-e ."}
    assert from_environment == from_pyproject
    assert project["requires-python"] == ">=3.10" and "  - python>=3.10" in (ROOT / "environment.yml").read_text()


def test_pytest_starts_without_nbval():
    """The root pytest options must not need nbval: an instructor with only the `course` extra (nbgrader, no
    nbval) can still run pytest; nbval's options are set in conftest.py when it is installed."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:nbval", "-p", "no:cacheprovider",
                             "tests/test_packaging.py", "-k", "environment_yml"],
                            cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "nbval is not installed" in result.stdout
