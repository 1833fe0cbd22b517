"""The course's auto-graders: a correct answer passes every check, the handed-out stub passes none, and
typical mistakes fail the check that should catch them (so the grader itself is tested)."""

import importlib.util
import math
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ssl_minimal import losses

ASSIGNMENTS = Path(__file__).resolve().parents[1] / "course" / "assignments"
ASSIGNMENT = ASSIGNMENTS / "01_instance_discrimination"


def _load(name, assignment=ASSIGNMENT):
    spec = importlib.util.spec_from_file_location(f"{assignment.name}_{name}", assignment / f"{name}.py")
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


# ----------------------------------------------------------------------------------------------
# Assignment 2 (contrastive) and 3 (no negatives): correct answers written here by hand, independently
# of the library, so these tests also cross-check the references the graders compare with.
CONTRASTIVE = ASSIGNMENTS / "02_contrastive"
NO_NEGATIVES = ASSIGNMENTS / "03_no_negatives"


def _contrastive_answer():
    def info_nce(q, k, queue, t):
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.t()], dim=1) / t
        return -(logits[:, 0] - logits.logsumexp(dim=1)).mean()

    def nt_xent(z1, z2, t):
        z = F.normalize(torch.cat([z1, z2]), dim=1)
        n = z1.shape[0]
        total = 0.0
        for i in range(2 * n):
            j = (i + n) % (2 * n)
            others = torch.stack([z[i] @ z[k] / t for k in range(2 * n) if k != i])
            total = total - (z[i] @ z[j] / t - others.logsumexp(dim=0))
        return total / (2 * n)

    def momentum_update(key_parameters, query_parameters, m):
        return [(m * k + (1 - m) * q).detach() for k, q in zip(key_parameters, query_parameters)]

    def enqueue(queue, pointer, keys):
        queue = queue.clone()
        for row in keys:
            queue[pointer] = row
            pointer = (pointer + 1) % queue.shape[0]
        return queue, pointer
    return types.SimpleNamespace(info_nce=info_nce, nt_xent=nt_xent, momentum_update=momentum_update, enqueue=enqueue)


def _no_negatives_answer():
    def cosine(a, b):
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))

    def simsiam_loss(p1, p2, z1, z2):
        return -cosine(p1, z2.detach()).mean() / 2 - cosine(p2, z1.detach()).mean() / 2

    def byol_loss(p, z):
        return ((F.normalize(p, dim=1) - F.normalize(z, dim=1)) ** 2).sum(1).mean()

    def byol_momentum(base, step, total):
        return 1 - (1 - base) * (math.cos(math.pi * step / total) + 1) / 2

    def sinkhorn(scores, epsilon, iterations):
        q = torch.exp((scores - scores.max()) / epsilon)
        q = q / q.sum()
        b, k = q.shape
        for _ in range(iterations):
            q = q / (k * q.sum(0, keepdim=True))
            q = q / (b * q.sum(1, keepdim=True))
        return q * b

    def barlow_twins_loss(z1, z2, lambd):
        def standardise(z):
            return (z - z.mean(0)) / (z.var(0, unbiased=False) + 1e-5).sqrt()
        c = standardise(z1).t() @ standardise(z2) / z1.shape[0]
        off_diagonal = c - torch.diag(torch.diagonal(c))
        return ((1 - torch.diagonal(c)) ** 2).sum() + lambd * (off_diagonal ** 2).sum()
    return types.SimpleNamespace(simsiam_loss=simsiam_loss, byol_loss=byol_loss, byol_momentum=byol_momentum,
                                 sinkhorn=sinkhorn, barlow_twins_loss=barlow_twins_loss)


ANSWERS = {CONTRASTIVE: _contrastive_answer, NO_NEGATIVES: _no_negatives_answer}


@pytest.mark.parametrize("assignment", list(ANSWERS), ids=lambda path: path.name)
def test_later_assignments_pass_a_correct_answer_and_fail_the_stub(assignment):
    grade = _load("grade", assignment)
    assert _failed(grade.grade(ANSWERS[assignment]())) == set()
    results = grade.grade(_load("student", assignment))
    assert _failed(results) == set(grade.CHECKS)
    assert all(result.message == "not implemented yet" for result in results)


def test_contrastive_mistakes_are_caught_by_the_right_check():
    grade = _load("grade", CONTRASTIVE)
    answer = _contrastive_answer()
    correct = _contrastive_answer()
    answer.info_nce = lambda q, k, queue, t: F.cross_entropy(                                   # positive last
        torch.cat([q @ queue.t(), (q * k).sum(1, keepdim=True)], dim=1) / t, torch.zeros(len(q), dtype=torch.long))
    answer.nt_xent = lambda z1, z2, t: F.cross_entropy(                                        # self kept in the softmax
        (lambda z: z @ z.t() / t)(F.normalize(torch.cat([z1, z2]), dim=1)),
        torch.cat([torch.arange(len(z1), 2 * len(z1)), torch.arange(len(z1))]))
    answer.momentum_update = lambda k, q, m: correct.momentum_update(k, q, 1 - m)              # weights swapped
    answer.enqueue = lambda queue, pointer, keys: (                                            # no wrap-around
        torch.cat([queue[:pointer], keys, queue[pointer + len(keys):]])[:len(queue)], pointer + len(keys))
    assert _failed(grade.grade(answer)) == set(grade.CHECKS)


def test_no_negatives_mistakes_are_caught_by_the_right_check():
    grade = _load("grade", NO_NEGATIVES)
    answer = _no_negatives_answer()
    correct = _no_negatives_answer()
    answer.simsiam_loss = lambda p1, p2, z1, z2: (                                             # no stop-gradient
        -F.cosine_similarity(p1, z2).mean() / 2 - F.cosine_similarity(p2, z1).mean() / 2)
    answer.byol_loss = lambda p, z: ((p - z) ** 2).sum(1).mean()                               # not normalised
    answer.byol_momentum = lambda base, step, total: correct.byol_momentum(base, total - step, total)   # runs backwards
    answer.sinkhorn = lambda scores, epsilon, iterations: torch.softmax(scores / epsilon, dim=1)       # no equal partition
    answer.barlow_twins_loss = lambda z1, z2, lambd: (                                         # no batch normalisation
        (lambda c: ((1 - torch.diagonal(c)) ** 2).sum() + lambd * (c - torch.diag(torch.diagonal(c))).pow(2).sum())(
            z1.t() @ z2 / len(z1)))
    assert _failed(grade.grade(answer)) == set(grade.CHECKS)
