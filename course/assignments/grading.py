"""What every assignment's grader shares: a check result, a tensor comparison with a readable hint,
running all checks on a student's module, and the command-line entry point.

An assignment folder holds `student.py` (functions to fill in), `grade.py` (its checks, built on this
module) and `test_student.py` (the same checks as pytest tests). Checks compare the student's function
with ssl_minimal's reference implementation on random inputs, values and gradients.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Callable, NamedTuple

import torch


class Check(NamedTuple):
    name: str
    passed: bool
    message: str = ""


def close(answer, expected: torch.Tensor, what: str, rtol: float = 1e-4, atol: float = 1e-5) -> str:
    """"" when `answer` matches `expected` (shape and values); otherwise a one-line hint naming `what`."""
    if not isinstance(answer, torch.Tensor):
        return f"{what}: expected a tensor, got {type(answer).__name__}"
    if answer.shape != expected.shape:
        return f"{what}: expected shape {list(expected.shape)}, got {list(answer.shape)}"
    if not torch.allclose(answer.detach().double(), expected.detach().double(), rtol=rtol, atol=atol):
        return f"{what}: expected {expected.flatten()[:3].tolist()}..., got {answer.detach().flatten()[:3].tolist()}..."
    return ""


def grade(module, checks: dict[str, Callable[[object], str]]) -> list[Check]:
    """Run every check on `module`; an exception inside the student's code counts as a failed check."""
    results = []
    for name, check in checks.items():
        try:
            message = check(module)
        except NotImplementedError:
            message = "not implemented yet"
        except Exception as error:                       # the student's code crashed: report, don't stop
            message = f"raised {type(error).__name__}: {error}"
        results.append(Check(name, not message, message))
    return results


def load_student(path: str | Path):
    """Import the student's file as a module."""
    spec = importlib.util.spec_from_file_location("student", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(checks: dict[str, Callable[[object], str]], default_student: Path) -> None:
    """`python grade.py [student.py]`: a line per check, the score, exit code 0 when all pass."""
    results = grade(load_student(sys.argv[1] if len(sys.argv) > 1 else default_student), checks)
    for result in results:
        print(f"{'PASS' if result.passed else 'FAIL'}  {result.name}" + ("" if result.passed else f": {result.message}"))
    print(f"score: {sum(r.passed for r in results)}/{len(results)}")
    sys.exit(0 if all(r.passed for r in results) else 1)
