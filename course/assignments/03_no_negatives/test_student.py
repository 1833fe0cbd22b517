"""Classroom auto-grading: `pytest course/assignments/03_no_negatives` grades student.py."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from grade import CHECKS, grade, load_student  # noqa: E402


@pytest.mark.parametrize("name", list(CHECKS))
def test_check(name):
    result = next(r for r in grade(load_student()) if r.name == name)
    assert result.passed, result.message
