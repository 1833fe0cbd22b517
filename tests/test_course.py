"""The course's auto-graders: a correct answer passes every check, the handed-out stub passes none, and
typical mistakes fail the check that should catch them (so the grader itself is tested)."""

import importlib.util
import types
from pathlib import Path

import torch
import torch.nn.functional as F

from ssl_minimal import losses

ASSIGNMENT = Path(__file__).resolve().parents[1] / "course" / "assignments" / "01_instance_discrimination"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"assignment_{name}", ASSIGNMENT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _correct_answer():
    def memory_bank_update(bank, indices, features, momentum):
        bank = bank.clone()
        bank[indices] = F.normalize(momentum * bank[indices] + (1 - momentum) * features.detach(), dim=1)
        return bank
    return types.SimpleNamespace(memory_bank_update=memory_bank_update,
                                 nonparametric_softmax_loss=losses.nonparametric_softmax_loss,
                                 nce_loss=losses.nce_loss,
                                 invariance_spreading_loss=losses.invariance_spreading_loss)


def _failed(results):
    return {result.name for result in results if not result.passed}


def test_a_correct_answer_passes_every_check():
    grade = _load("grade")
    assert _failed(grade.grade(_correct_answer())) == set()


def test_the_stub_handed_to_students_passes_no_check():
    grade = _load("grade")
    results = grade.grade(_load("student"))
    assert _failed(results) == set(grade.CHECKS)
    assert all(result.message == "not implemented yet" for result in results)


def test_typical_mistakes_are_caught_by_the_right_check():
    grade = _load("grade")
    answer = _correct_answer()
    answer.nonparametric_softmax_loss = lambda v, bank, idx, t: F.cross_entropy(v @ bank.t(), idx)  # no temperature
    answer.nce_loss = lambda p, q, n: losses.nce_loss(p, q, n) / q.shape[1]                         # mean, not sum
    answer.invariance_spreading_loss = (                                                            # no normalisation
        lambda z1, z2, t: losses.invariance_spreading_loss(z1, z2, t) * (z1.norm(dim=1).mean() / z1.norm(dim=1).mean().detach()) ** 2)

    def in_place_update(bank, indices, features, momentum):
        bank[indices] = F.normalize(momentum * bank[indices] + (1 - momentum) * features, dim=1)
        return bank
    answer.memory_bank_update = in_place_update
    assert _failed(grade.grade(answer)) == set(grade.CHECKS)


def test_a_crash_in_student_code_is_reported_not_raised():
    grade = _load("grade")
    answer = _correct_answer()
    answer.nce_loss = lambda p, q, n: q @ torch.log(p)        # [B, m] @ [B]: a shape error
    results = {result.name: result for result in grade.grade(answer)}
    assert not results["nce_loss"].passed and "raised RuntimeError" in results["nce_loss"].message
    assert results["nonparametric_softmax_loss"].passed
