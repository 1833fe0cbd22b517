"""The course's nbgrader assignments (course/assignments/): a correct answer passes every graded cell, the
handed-out release passes none, typical mistakes fail the graded cell that should catch them with a hint,
and nbgrader itself runs the whole cycle (generate the release, autograde a solved and an unanswered
submission) in a temporary course directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
COURSE = ROOT / "course" / "assignments"
ASSIGNMENTS = sorted(path.name for path in (COURSE / "source").iterdir() if path.is_dir())


def _notebook(assignment: str, version: str = "source") -> dict:
    return json.loads((COURSE / version / assignment / f"{assignment}.ipynb").read_text())


def _graded_cells(notebook: dict) -> list[str]:
    return [cell["metadata"]["nbgrader"]["grade_id"] for cell in notebook["cells"]
            if cell["metadata"].get("nbgrader", {}).get("grade")]


def run_in_process(assignment: str, replace: dict[str, str] | None = None, until: str | None = None,
                   version: str = "source") -> dict[str, BaseException | None]:
    """Execute the notebook's code cells in one namespace, as a kernel would, with the source of the cells
    named in `replace` (by grade_id) swapped; stop after the graded cell `until`. Returns, for each graded
    cell, the exception it raised (None when it passed)."""
    replace = replace or {}
    namespace: dict = {"__name__": "__main__"}
    results: dict[str, BaseException | None] = {}
    threads = torch.get_num_threads()
    try:
        for cell in _notebook(assignment, version)["cells"]:
            if cell["cell_type"] != "code":
                continue
            meta = cell["metadata"].get("nbgrader", {})
            source = replace.get(meta.get("grade_id"), "".join(cell["source"]))
            try:
                exec(compile(source, f"<{assignment}:{meta.get('grade_id')}>", "exec"), namespace)
                error = None
            except Exception as exception:                      # noqa: BLE001 (a failing cell, as in a kernel)
                error = exception
            if meta.get("grade"):
                results[meta["grade_id"]] = error
                if meta["grade_id"] == until:
                    break
    finally:
        torch.set_num_threads(threads)
    return results


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_the_solution_passes_every_graded_cell(assignment):
    results = run_in_process(assignment)
    assert set(results) == set(_graded_cells(_notebook(assignment)))
    assert {name: repr(error) for name, error in results.items() if error} == {}


def test_there_is_an_assignment_per_era():
    assert len(ASSIGNMENTS) >= 6
    for era in ("instance_discrimination", "contrastive", "clustering", "collapse", "dino", "mae"):
        assert any(era in name for name in ASSIGNMENTS), era


# A typical mistake for each graded function (and for the runs), the graded cell that must catch it, and a
# word its hint must contain.
MISTAKES = {
    "01_instance_discrimination": [
        ("answer-bank", "def running_mean_bank_update(bank, counts, indices, features):\n"
         "    c = counts[indices].to(bank.dtype)[:, None]\n    bank = bank.clone(); counts = counts.clone()\n"
         "    bank[indices] = (c * bank[indices] + F.normalize(features.detach(), dim=1)) / (c + 1)\n"
         "    counts[indices] += 1\n    return bank, counts\n", "test-bank", "normalise"),
        ("answer-proximal", "def proximal_softmax_loss(embeddings, bank, indices, temperature, lambd):\n"
         "    return F.cross_entropy(embeddings @ bank.t(), indices) + lambd * (embeddings - bank[indices])"
         ".pow(2).sum(1).mean()\n", "test-proximal", "temperature"),
    ],
    "02_contrastive": [
        ("answer-align", "def alignment(x, y, alpha=2.0):\n    return (x - y).norm(dim=1).pow(alpha).mean()\n"
         "def uniformity(x, t=2.0):\n    return torch.cdist(x, x).pow(2).mul(-t).exp().mean().log()\n",
         "test-align", "pairs"),
        ("answer-dcl", "from ssl_minimal import losses\n"
         "def decoupled_contrastive_loss(z1, z2, temperature):\n    return losses.nt_xent(z1, z2, temperature)\n",
         "test-dcl", "positive"),
    ],
    "03_clustering": [
        ("answer-sinkhorn", "def sinkhorn_with_prior(scores, epsilon, iterations, prior):\n"
         "    q = torch.exp((scores - scores.max()) / epsilon); q = q / q.sum(); b = len(scores)\n"
         "    for _ in range(iterations):\n        q = q / (b * q.sum(1, keepdim=True))\n"
         "        q = q * (prior / q.sum(0))[None]\n    return q * b\n", "test-sinkhorn", "row step"),
        ("answer-swapped", "def swapped_prediction_loss(scores1, scores2, codes1, codes2, temperature):\n"
         "    return -0.5 * ((codes1.detach() * F.log_softmax(scores1 / temperature, 1)).sum(1).mean()"
         " + (codes2.detach() * F.log_softmax(scores2 / temperature, 1)).sum(1).mean())\n",
         "test-swapped", "SWAP"),
        ("answer-sinkhorn", "def sinkhorn_with_prior(scores, epsilon, iterations, prior):\n"
         "    return torch.softmax(scores / epsilon, dim=1)\n", "test-training", "prototypes in use"),
    ],
    "04_collapse_detective": [
        ("answer-diagnose", "def diagnose(embeddings):\n    return 'healthy'\n", "test-diagnose", "collapse"),
        ("answer-variance", "def variance_term(z, gamma=1.0, eps=1e-4):\n"
         "    return F.relu(gamma - torch.sqrt(z.var(dim=0, unbiased=False) + eps)).mean()\n"
         "def covariance_term(z):\n    c = torch.cov(z.t())\n    return c.pow(2).sum() / z.shape[1]\n",
         "test-variance", "unbiased"),
        ("answer-variance", "def variance_term(z, gamma=1.0, eps=1e-4):\n"
         "    return F.relu(gamma - torch.sqrt(z.var(dim=0) + eps)).mean()\n"
         "def covariance_term(z):\n    c = torch.cov(z.t())\n    return c.pow(2).sum() / z.shape[1]\n",
         "test-covariance", "off-diagonal"),
    ],
    "05_dino": [
        ("answer-teacher", "def teacher_targets(teacher_logits, center, tau_t):\n"
         "    return torch.softmax(teacher_logits.detach() / tau_t - center, dim=1)\n"
         "def update_center(center, teacher_logits, momentum):\n"
         "    return momentum * center + (1 - momentum) * teacher_logits.detach().mean(0)\n",
         "test-teacher", "SUBTRACT"),
        ("answer-teacher", "def teacher_targets(teacher_logits, center, tau_t):\n"
         "    return torch.softmax((teacher_logits - center) / tau_t, dim=1)\n"
         "def update_center(center, teacher_logits, momentum):\n"
         "    return momentum * center + (1 - momentum) * teacher_logits.detach().mean(0)\n",
         "test-teacher", "detach"),
        ("answer-koleo", "def koleo(x):\n    x = F.normalize(x, dim=1)\n"
         "    return -torch.log(torch.cdist(x, x).min(dim=1).values + 1e-8).mean()\n", "test-koleo", "OTHER"),
        ("answer-teacher", "def teacher_targets(teacher_logits, center, tau_t):\n"
         "    return torch.softmax((teacher_logits.detach() - center) / tau_t, dim=1)\n"
         "def update_center(center, teacher_logits, momentum):\n    return center\n",
         "test-training", "dimensions"),
    ],
    "06_mae": [
        ("answer-grid", "import math\ndef grid_masking(tokens, offsets):\n    B, N, D = tokens.shape; g = math.isqrt(N)\n"
         "    row, col = torch.arange(N) // g, torch.arange(N) % g\n"
         "    keep = (row[None] % 2 == offsets[:, :1]) & (col[None] % 2 == offsets[:, 1:])\n"
         "    ids_shuffle = ((~keep).long() * N + torch.arange(N)[None]).argsort(1)\n"
         "    visible = tokens.gather(1, ids_shuffle[:, :N // 4, None].expand(-1, -1, D))\n"
         "    return visible, (~keep).float(), ids_shuffle\n", "test-grid", "ids_restore"),
        ("answer-loss", "def weighted_mae_loss(prediction, target, mask, visible_weight):\n"
         "    error = (prediction - target.detach()).pow(2).mean(-1)\n"
         "    return (error * mask).sum() / mask.sum() + visible_weight * (error * (1 - mask)).sum() / (1 - mask).sum()\n",
         "test-loss", "normalise"),
    ],
}


CASES = [(assignment, *mistake) for assignment, mistakes in MISTAKES.items() for mistake in mistakes]


@pytest.mark.parametrize("assignment, answer, mistake, cell, hint", CASES,
                         ids=[f"{case[0][:2]}-{case[3]}-{case[4]}" for case in CASES])
def test_a_typical_mistake_fails_the_right_cell_with_a_hint(assignment, answer, mistake, cell, hint):
    results = run_in_process(assignment, replace={answer: mistake}, until=cell)
    error = results[cell]
    assert isinstance(error, AssertionError), f"{cell} should fail with an AssertionError, got {error!r}"
    assert hint in str(error), f"the hint of {cell} should mention {hint!r}: {error}"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_the_release_hides_solutions_and_hidden_tests_and_fails_every_graded_cell(assignment):
    release = json.dumps(_notebook(assignment, "release"))
    source = _notebook(assignment)
    assert "BEGIN SOLUTION" not in release and "BEGIN HIDDEN TESTS" not in release and "raise NotImplementedError" in release
    assert "BEGIN HIDDEN TESTS" in json.dumps(source)
    for cell in source["cells"]:              # every graded cell checks something the student cannot see
        if cell["metadata"]["nbgrader"].get("grade"):
            assert "### BEGIN HIDDEN TESTS" in "".join(cell["source"]), cell["metadata"]["nbgrader"]["grade_id"]
    results = run_in_process(assignment, version="release")
    assert results and all(error is not None for error in results.values()), results


# ----------------------------------------------------------------------------------------------
# nbgrader end to end, in a temporary copy of the course directory.
def _nbgrader(course: Path, *arguments: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               OMP_NUM_THREADS="1")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])   # nbgrader runs alembic
    result = subprocess.run([sys.executable, "-m", "nbgrader", *arguments], cwd=course, env=env,
                            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def graded_course(tmp_path_factory):
    try:
        import nbgrader  # noqa: F401
    except ImportError:                     # skipped on a machine without it; CI installs it (.ci/run)
        if os.environ.get("CI") == "true":
            pytest.fail("CI must install the `course` extra (nbgrader)")
        pytest.skip("nbgrader is in the `course` extra: pip install -e '.[course]'")
    course = tmp_path_factory.mktemp("course")
    shutil.copytree(COURSE / "source", course / "source")
    shutil.copy(COURSE / "nbgrader_config.py", course)
    for assignment in ASSIGNMENTS:
        _nbgrader(course, "generate_assignment", assignment, "--force")
        for student, version in (("solved", "source"), ("unanswered", "release")):
            folder = course / "submitted" / student / assignment
            folder.mkdir(parents=True)
            shutil.copy(course / version / assignment / f"{assignment}.ipynb", folder)
    for assignment in ASSIGNMENTS:
        _nbgrader(course, "autograde", assignment, "--create")
    return course


def _scores(course: Path, assignment: str, student: str) -> dict[str, tuple[float, float]]:
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        notebook = gradebook.find_submission_notebook(assignment, assignment, student)
        return {grade.name: (grade.score, grade.max_score) for grade in notebook.grades}


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_nbgrader_generates_the_committed_release(graded_course, assignment):
    generated = json.loads((graded_course / "release" / assignment / f"{assignment}.ipynb").read_text())
    committed = _notebook(assignment, "release")
    assert [c["source"] for c in generated["cells"]] == [c["source"] for c in committed["cells"]], \
        f"course/assignments/release/{assignment} is stale: run `nbgrader generate_assignment {assignment} --force`"
    assert [c["metadata"] for c in generated["cells"]] == [c["metadata"] for c in committed["cells"]]


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_nbgrader_gives_the_solution_full_marks_and_the_release_zero(graded_course, assignment):
    solved = _scores(graded_course, assignment, "solved")
    unanswered = _scores(graded_course, assignment, "unanswered")
    assert set(solved) == set(unanswered) == set(_graded_cells(_notebook(assignment))) and solved
    assert {name: score for name, score in solved.items() if score[0] != score[1]} == {}
    assert {name: score for name, score in unanswered.items() if score[0] != 0} == {}
    autograded = graded_course / "autograded" / "unanswered" / assignment / f"{assignment}.ipynb"
    assert "NotImplementedError" in autograded.read_text()           # ran to the end, the failures recorded
