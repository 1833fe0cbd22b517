"""Auto-grader for assignment 2. Each check compares a student function with ssl_minimal's reference
(losses.info_nce, losses.nt_xent, momentum.momentum_update, memory.Queue) on random inputs, values and
gradients, so a positive in the wrong column, a missing temperature, a self-similarity left in the
softmax, swapped momentum weights or a queue that does not wrap fail with a hint.

    python grade.py                  # grades student.py beside this file; exit code 0 when all pass
    grade(module) -> list[Check]     # for tests and for classroom auto-grading
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ssl_minimal import losses
from ssl_minimal.memory import Queue
from ssl_minimal.momentum import momentum_update

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # course/assignments: the shared grading code
from grading import Check, close, load_student as _load_student, main  # noqa: E402
from grading import grade as _grade  # noqa: E402


def _check_info_nce(student) -> str:
    generator = torch.Generator().manual_seed(1)
    q = F.normalize(torch.randn(5, 8, generator=generator), dim=1).requires_grad_(True)
    k = F.normalize(torch.randn(5, 8, generator=generator), dim=1)
    queue = F.normalize(torch.randn(16, 8, generator=generator), dim=1)
    answer = student.info_nce(q, k, queue, 0.07)
    expected = losses.info_nce(q, k, queue, 0.07)
    problem = close(answer, expected, "loss (positive logit first, label 0, logits divided by tau)")
    if problem:
        return problem
    (gradient,) = torch.autograd.grad(answer, q)
    (expected_gradient,) = torch.autograd.grad(expected, q)
    return close(gradient, expected_gradient, "gradient with respect to the queries")


def _check_nt_xent(student) -> str:
    generator = torch.Generator().manual_seed(2)
    z1 = torch.randn(4, 6, generator=generator).requires_grad_(True)
    z2 = torch.randn(4, 6, generator=generator)
    answer = student.nt_xent(3.0 * z1, z2, 0.5)             # scaled: the loss must normalise
    expected = losses.nt_xent(3.0 * z1, z2, 0.5)
    problem = close(answer, expected, "loss (normalise z; exclude k = i from the softmax; mean over all 2N anchors)")
    if problem:
        return problem
    (gradient,) = torch.autograd.grad(answer, z1)
    (expected_gradient,) = torch.autograd.grad(expected, z1)
    return close(gradient, expected_gradient, "gradient with respect to z1")


def _check_momentum_update(student) -> str:
    generator = torch.Generator().manual_seed(3)
    query = nn.Linear(4, 3)
    key = nn.Linear(4, 3)
    with torch.no_grad():
        for module in (query, key):
            for parameter in module.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
    for parameter in key.parameters():
        parameter.requires_grad_(False)
    query_before = [p.detach().clone() for p in query.parameters()]
    answer = student.momentum_update(list(key.parameters()), list(query.parameters()), 0.9)
    if not all(torch.equal(p, before) for p, before in zip(query.parameters(), query_before)):
        return "the query parameters were changed; only the key parameters move"
    if not isinstance(answer, (list, tuple)) or len(answer) != len(query_before):
        return f"expected a list of {len(query_before)} tensors, got {type(answer).__name__}"
    expected_key = nn.Linear(4, 3)
    expected_key.load_state_dict(key.state_dict())
    momentum_update(expected_key, query, 0.9)
    for index, (got, expected) in enumerate(zip(answer, expected_key.parameters())):
        problem = close(got, expected.detach(), f"key parameter {index} (theta_k <- m theta_k + (1 - m) theta_q)")
        if problem:
            return problem
        if got.requires_grad:
            return f"key parameter {index} requires grad: the key encoder must receive no gradient"
    return ""


def _check_enqueue(student) -> str:
    generator = torch.Generator().manual_seed(4)
    reference = Queue(size=6, dim=3)
    reference.keys.copy_(torch.randn(6, 3, generator=generator))
    queue, pointer = reference.keys.clone(), 0
    for batch in range(3):                                   # 3 batches of 4 keys into 6 rows: wraps twice
        keys = torch.randn(4, 3, generator=generator)
        before = queue.clone()
        given = queue
        queue, pointer = student.enqueue(queue, pointer, keys)
        reference.enqueue(keys)
        if not isinstance(queue, torch.Tensor):
            return f"expected (queue tensor, pointer), got {type(queue).__name__}"
        if not torch.equal(given, before):
            return "the queue passed in was modified in place; return a new tensor"
        problem = close(queue, reference.keys, f"queue after batch {batch + 1} (oldest rows replaced, wrapping around)")
        if problem:
            return problem
        if int(pointer) != int(reference.ptr):
            return f"pointer after batch {batch + 1}: expected {int(reference.ptr)}, got {int(pointer)}"
    return ""


CHECKS = {
    "info_nce": _check_info_nce,
    "nt_xent": _check_nt_xent,
    "momentum_update": _check_momentum_update,
    "enqueue": _check_enqueue,
}


def grade(module) -> list[Check]:
    """Run every check on `module`; an exception inside the student's code counts as a failed check."""
    return _grade(module, CHECKS)


def load_student(path: str | Path = Path(__file__).with_name("student.py")):
    return _load_student(path)


if __name__ == "__main__":
    main(CHECKS, Path(__file__).with_name("student.py"))
