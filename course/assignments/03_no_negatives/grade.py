"""Auto-grader for assignment 3. Each check compares a student function with ssl_minimal's reference
(losses.negative_cosine, losses.byol_loss, momentum.cosine_momentum, losses.sinkhorn,
losses.barlow_twins_loss) on random inputs, values and gradients: a missing stop-gradient, an
unnormalised cosine, a schedule running the wrong way, Sinkhorn normalising in the wrong order or a
cross-correlation without batch normalisation fail with a hint.

    python grade.py                  # grades student.py beside this file; exit code 0 when all pass
    grade(module) -> list[Check]     # for tests and for classroom auto-grading
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ssl_minimal import losses
from ssl_minimal.momentum import cosine_momentum

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # course/assignments: the shared grading code
from grading import Check, close, load_student as _load_student, main  # noqa: E402
from grading import grade as _grade  # noqa: E402


def _check_simsiam_loss(student) -> str:
    generator = torch.Generator().manual_seed(1)
    p1, p2, z1, z2 = (torch.randn(6, 5, generator=generator).requires_grad_(True) for _ in range(4))
    answer = student.simsiam_loss(p1, p2, z1, z2)
    expected = losses.negative_cosine(p1, z2.detach()) / 2 + losses.negative_cosine(p2, z1.detach()) / 2
    problem = close(answer, expected, "loss (D(p1, z2)/2 + D(p2, z1)/2 with D = -cosine, batch mean)")
    if problem:
        return problem
    gradients = torch.autograd.grad(answer, (p1, z1, z2), allow_unused=True)
    for name, gradient in zip(("z1", "z2"), gradients[1:]):
        if gradient is not None and gradient.abs().max() > 0:
            return f"a gradient reached {name}: stop the gradient of z (detach it) inside the loss"
    (expected_gradient,) = torch.autograd.grad(expected, p1)
    return close(gradients[0], expected_gradient, "gradient with respect to p1")


def _check_byol_loss(student) -> str:
    generator = torch.Generator().manual_seed(2)
    p = torch.randn(6, 5, generator=generator).requires_grad_(True)
    z = torch.randn(6, 5, generator=generator)
    answer = student.byol_loss(3.0 * p, z)                   # scaled: the loss must normalise
    expected = losses.byol_loss(3.0 * p, z)
    problem = close(answer, expected, "loss (2 - 2 cos(p, z), batch mean; normalise p and z)")
    if problem:
        return problem
    (gradient,) = torch.autograd.grad(answer, p)
    (expected_gradient,) = torch.autograd.grad(expected, p)
    return close(gradient, expected_gradient, "gradient with respect to p")


def _check_byol_momentum(student) -> str:
    for step in (0, 25, 50, 99, 100):
        answer = student.byol_momentum(0.996, step, 100)
        expected = cosine_momentum(0.996, step / 100)
        if not isinstance(answer, (float, int)) and not (isinstance(answer, torch.Tensor) and answer.numel() == 1):
            return f"expected a number, got {type(answer).__name__}"
        if abs(float(answer) - expected) > 1e-7:
            return f"tau at step {step} of 100: expected {expected:.6f}, got {float(answer):.6f}"
    return ""


def _check_sinkhorn(student) -> str:
    generator = torch.Generator().manual_seed(3)
    scores = torch.nn.functional.normalize(torch.randn(12, 4, generator=generator), dim=1) * 0.9
    answer = student.sinkhorn(scores, 0.05, 3)
    expected = losses.sinkhorn(scores, 0.05, 3)
    problem = close(answer, expected, "codes Q (exp(scores / eps), columns to 1/K, then rows to 1/B, times B)")
    if problem:
        return problem
    if not torch.isfinite(student.sinkhorn(scores + 50, 0.05, 3)).all():       # exp(50 / 0.05) overflows
        return "non-finite codes when every score is large: subtract the maximum score before exp"
    return ""


def _check_barlow_twins(student) -> str:
    generator = torch.Generator().manual_seed(4)
    z1 = (torch.randn(16, 6, generator=generator) * 3 + 1).requires_grad_(True)
    z2 = torch.randn(16, 6, generator=generator) * 0.5 - 2
    answer = student.barlow_twins_loss(z1, z2, 5e-3)
    expected = losses.barlow_twins_loss(z1, z2, 5e-3)
    problem = close(answer, expected, "loss (normalise each dimension over the batch; diagonal to 1, off-diagonal to 0)")
    if problem:
        return problem
    (gradient,) = torch.autograd.grad(answer, z1)
    (expected_gradient,) = torch.autograd.grad(expected, z1)
    return close(gradient, expected_gradient, "gradient with respect to z1")


CHECKS = {
    "simsiam_loss": _check_simsiam_loss,
    "byol_loss": _check_byol_loss,
    "byol_momentum": _check_byol_momentum,
    "sinkhorn": _check_sinkhorn,
    "barlow_twins_loss": _check_barlow_twins,
}


def grade(module) -> list[Check]:
    """Run every check on `module`; an exception inside the student's code counts as a failed check."""
    return _grade(module, CHECKS)


def load_student(path: str | Path = Path(__file__).with_name("student.py")):
    return _load_student(path)


if __name__ == "__main__":
    main(CHECKS, Path(__file__).with_name("student.py"))
