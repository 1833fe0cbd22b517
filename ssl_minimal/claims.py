"""The ledger of claims: what each lesson says it reproduces from its paper, with our numbers and a verdict.

A notebook's last cell calls `record_claims(lesson, [claim, ...])`; it prints the claims and writes them as
JSON beside the notebook's figures (`<figures>/<lesson>_claims.json`). `course/build_claims.py` gathers the
committed JSON files into `course/claims.md`, and `tests/test_claims.py` checks that every number of the
ledger appears in the outputs of the notebook it comes from.

One claim is a dict:

    dict(claim="InvaSpread (in-batch negatives) beats InstDisc (memory bank)",
         paper="Ye et al. 2019, Table 1: CIFAR-10 kNN, InvaSpread above InstDisc's 80.8%",
         experiment="5 epochs on 5,000 CIFAR-10 images, small ConvNet, kNN (k = 200) on 1,000 test queries",
         results=[dict(name="InstDisc", values=[0.401]), dict(name="InvaSpread", values=[0.381])],
         verdict="not reproduced at this budget",
         why="one seed; 2 points apart where one accuracy has a standard error of 1.5 points")

`values` holds one number per seed (accuracies as fractions in [0, 1], printed as percentages); the
ledger shows their mean, their spread (sample standard deviation) and the number of seeds.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Mapping, Sequence

from .checks import SSLMinimalError

VERDICTS = ("reproduced", "reproduced in direction but within noise", "not reproduced at this budget")
CLAIM_FIELDS = ("claim", "paper", "experiment", "results", "verdict")      # required; "why" is optional
CLAIMS_SUFFIX = "_claims.json"


def summarise(values: Sequence[float], percent: bool = True) -> str:
    """'40.1%' for one seed, '38.3% ± 0.6 (3 seeds)' for several (mean ± sample standard deviation)."""
    values = [float(v) for v in values]
    scale, unit = (100.0, "%") if percent else (1.0, "")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{scale * mean:.1f}{unit} (1 seed)"
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{scale * mean:.1f}{unit} ± {scale * spread:.1f} ({len(values)} seeds)"


def check_claim(claim: Mapping) -> None:
    """Raise SSLMinimalError, in one sentence, when a claim lacks a field or has an unknown verdict."""
    if not isinstance(claim, Mapping):
        raise SSLMinimalError(f"a claim must be a dict with the fields {', '.join(CLAIM_FIELDS)}, "
                              f"got {type(claim).__name__}")
    missing = [name for name in CLAIM_FIELDS if not claim.get(name)]
    if missing:
        raise SSLMinimalError(f"claim {claim.get('claim', '?')!r} lacks {', '.join(missing)} "
                              f"(every claim needs {', '.join(CLAIM_FIELDS)})")
    if claim["verdict"] not in VERDICTS:
        raise SSLMinimalError(f"verdict must be one of {', '.join(repr(v) for v in VERDICTS)}, "
                              f"got {claim['verdict']!r}")
    for result in claim["results"]:
        values = result.get("values") if isinstance(result, Mapping) else None
        if not result.get("name") or not values or not all(isinstance(v, (int, float)) and math.isfinite(v)
                                                           for v in values):
            raise SSLMinimalError(f"each result of claim {claim['claim']!r} needs a name and a non-empty list of "
                                  f"finite values (one per seed), got {result!r}")


def record_claims(lesson: str, claims: Sequence[Mapping], folder: str | Path | None = None,
                  percent: bool = True) -> Path:
    """Print a lesson's claims and write them to `<folder>/<lesson>_claims.json` (folder: `figures_dir()`).

    Call it in a notebook's last cell with the numbers the notebook just measured."""
    if not re.fullmatch(r"\d\d_\w+", str(lesson)):
        raise SSLMinimalError(f"lesson must be the notebook's name without .ipynb, such as '02_invaspread', "
                              f"got {lesson!r}")
    if not claims:
        raise SSLMinimalError("record_claims needs at least one claim")
    for claim in claims:
        check_claim(claim)
    if folder is None:
        from .visualize import figures_dir
        folder = figures_dir()
    path = Path(folder) / f"{lesson}{CLAIMS_SUFFIX}"
    record = dict(lesson=lesson, source="notebook", percent=percent,
                  claims=[dict(claim) for claim in claims])
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    for claim in claims:
        print(f"{claim['claim']}: {claim['verdict']}")
        for result in claim["results"]:
            print(f"    {result['name']:<36} {summarise(result['values'], percent)}   values: "
                  + ", ".join(f"{100 * v:.1f}%" if percent else f"{v:g}" for v in result["values"]))
    return path


def load_claims(path: str | Path) -> dict:
    """One lesson's claims file, checked."""
    record = json.loads(Path(path).read_text())
    for claim in record.get("claims", []):
        check_claim(claim)
    return record


# ----------------------------------------------------------------------------------------------
# Numbers in notebook outputs (used by the ledger's builder and by the tests that compare prose with outputs)
NUMBER = re.compile(r"(?<![\w.^])([-+−]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|[-+−]?\d+\.\d+|[-+−]?\d+)(?![\w.]\d)(\s?%)?")


def notebook_outputs(path: str | Path) -> str:
    """All text a notebook printed (streams and the text/plain of results), in order."""
    notebook = json.loads(Path(path).read_text())
    parts = []
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            if "text" in output:
                parts.append("".join(output["text"]))
            if "text/plain" in output.get("data", {}):
                parts.append("".join(output["data"]["text/plain"]))
    return "\n".join(parts)


def numbers_in(text: str) -> list[tuple[float, bool]]:
    """Every number in `text` as (value, is_percentage); thousands separators are removed."""
    return [(float(match.group(1).replace(",", "").replace("−", "-")), bool(match.group(2)))
            for match in NUMBER.finditer(text)]


def appears_in(value: float, decimals: int, percent: bool, numbers: Sequence[tuple[float, bool]]) -> bool:
    """Does `value` (as quoted, with `decimals` digits; a percentage if `percent`) round-trip from one of
    `numbers`? A percentage also matches a fraction printed in [0, 1] (0.401 for 40.1%)."""
    tolerance = 0.5 * 10 ** -decimals + 1e-9
    for number, is_percentage in numbers:
        candidates = [number] if is_percentage or not percent else ([100 * number] if abs(number) <= 1 else [])
        if not percent and is_percentage:
            candidates = []
        if any(abs(abs(candidate) - abs(value)) <= tolerance for candidate in candidates):
            return True
    return False


# ----------------------------------------------------------------------------------------------
# The ledger: course/claims.md, built from the committed claims files
LEDGER_HEADER = """# The ledger of claims

Generated by `python course/build_claims.py` from the claims files `figures/<lesson>_claims.json` (written by a
notebook's last cell through `ssl_minimal.claims.record_claims`, or, for notebooks not yet rerun with that cell,
written by hand from their committed outputs, which the `source` column cites). `tests/test_claims.py` fails when
this file and the claims files disagree, or when a number below is not in the outputs of its notebook.

One row per claim: the paper's claim with its own number, our experiment and budget, our numbers (mean ± sample
standard deviation over seeds, or one seed), and the verdict: **reproduced** (the margin is larger than the noise),
**reproduced in direction but within noise**, or **not reproduced at this budget**. Accuracies are on CIFAR-10's
JPEG-q75 copy with small networks trained for minutes; the papers' numbers mostly come from ImageNet and ResNet-50s
trained for hundreds of epochs: compare directions, not values.
"""


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def render_ledger(folder: str | Path) -> str:
    """course/claims.md from every `*_claims.json` in `folder` (the repository's figures/), in lesson order."""
    records = [load_claims(path) for path in sorted(Path(folder).glob(f"*{CLAIMS_SUFFIX}"))]
    counts = {verdict: sum(claim["verdict"] == verdict for record in records for claim in record["claims"])
              for verdict in VERDICTS}
    lines = [LEDGER_HEADER, f"{sum(counts.values())} claims from {len(records)} lessons: "
             + ", ".join(f"{count} {verdict}" for verdict, count in counts.items()) + ".\n",
             "| lesson | claim | the paper | our experiment | ours | verdict | why | source |",
             "|---|---|---|---|---|---|---|---|"]
    for record in records:
        for claim in record["claims"]:
            ours = "; ".join(f"{result['name']}: {summarise(result['values'], record.get('percent', True))}"
                             for result in claim["results"])
            lines.append("| " + " | ".join(_cell(text) for text in (
                f"`{record['lesson']}`", claim["claim"], claim["paper"], claim["experiment"], ours,
                f"**{claim['verdict']}**", claim.get("why", ""), record.get("source", ""))) + " |")
    return "\n".join(lines) + "\n"
