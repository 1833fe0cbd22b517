"""Auto-grader for assignment 1. Each check compares a student function with ssl_minimal's reference
on random inputs (values and gradients), so a wrong sign, a missing temperature or a forgotten
normalisation fails with a hint.

    python grade.py                  # grades student.py beside this file; exit code 0 when all pass
    grade(module) -> list[Check]     # for tests and for classroom auto-grading
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from ssl_minimal import losses

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # course/assignments: the shared grading code
from grading import Check, close as _close, load_student as _load_student, main  # noqa: E402
from grading import grade as _grade  # noqa: E402


def _check_memory_bank_update(student) -> str:
    generator = torch.Generator().manual_seed(1)
    bank = F.normalize(torch.randn(10, 4, generator=generator), dim=1)
    indices = torch.tensor([2, 7, 5])
    features = F.normalize(torch.randn(3, 4, generator=generator), dim=1)
    original = bank.clone()
    answer = student.memory_bank_update(bank, indices, features, 0.5)
    if not torch.equal(bank, original):
        return "the bank passed in was modified in place; return a new tensor"
    expected = original.clone()
    expected[indices] = F.normalize(0.5 * original[indices] + 0.5 * features, dim=1)
    return _close(answer, expected, "updated bank (rows of the batch move towards f_i, then are L2-normalised)")


def _check_nonparametric_softmax(student) -> str:
    generator = torch.Generator().manual_seed(2)
    v = F.normalize(torch.randn(4, 8, generator=generator), dim=1).requires_grad_(True)
    bank = F.normalize(torch.randn(12, 8, generator=generator), dim=1)
    indices = torch.tensor([0, 5, 3, 11])
    answer = student.nonparametric_softmax_loss(v, bank, indices, 0.07)
    expected = losses.nonparametric_softmax_loss(v, bank, indices, 0.07)
    problem = _close(answer, expected, "loss (did you divide by the temperature?)")
    if problem:
        return problem
    (gradient,) = torch.autograd.grad(answer, v)
    (expected_gradient,) = torch.autograd.grad(expected, v)
    return _close(gradient, expected_gradient, "gradient with respect to the embeddings")


def _check_nce(student) -> str:
    generator = torch.Generator().manual_seed(3)
    positive = torch.rand(5, generator=generator).mul(0.01).add(1e-4).requires_grad_(True)
    noise = torch.rand(5, 16, generator=generator).mul(0.01).add(1e-4).requires_grad_(True)
    answer = student.nce_loss(positive, noise, 100)
    expected = losses.nce_loss(positive, noise, 100)
    problem = _close(answer, expected, "NCE loss (h = P / (P + m P_n), noise term summed over the m samples)")
    if problem:
        return problem
    gradients = torch.autograd.grad(answer, (positive, noise))
    expected_gradients = torch.autograd.grad(expected, (positive, noise))
    return _close(gradients[1], expected_gradients[1], "gradient with respect to the noise probabilities")


def _check_invariance_spreading(student) -> str:
    generator = torch.Generator().manual_seed(4)
    z1 = torch.randn(4, 6, generator=generator).requires_grad_(True)
    z2 = torch.randn(4, 6, generator=generator)
    answer = student.invariance_spreading_loss(z1 * 3.0, z2, 0.1)     # scale: the loss must normalise
    expected = losses.invariance_spreading_loss(z1 * 3.0, z2, 0.1)
    problem = _close(answer, expected, "loss (normalise the embeddings; exclude a == c from the softmax)")
    if problem:
        return problem
    (gradient,) = torch.autograd.grad(answer, z1)
    (expected_gradient,) = torch.autograd.grad(expected, z1)
    return _close(gradient, expected_gradient, "gradient with respect to z1")


CHECKS = {
    "memory_bank_update": _check_memory_bank_update,
    "nonparametric_softmax_loss": _check_nonparametric_softmax,
    "nce_loss": _check_nce,
    "invariance_spreading_loss": _check_invariance_spreading,
}


def grade(module) -> list[Check]:
    """Run every check on `module`; an exception inside the student's code counts as a failed check."""
    return _grade(module, CHECKS)


def load_student(path: str | Path = Path(__file__).with_name("student.py")):
    return _load_student(path)


if __name__ == "__main__":
    main(CHECKS, Path(__file__).with_name("student.py"))
