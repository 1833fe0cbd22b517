"""The ledger of claims (course/claims.md) agrees with the claims files and with the notebooks' outputs."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_minimal import claims
from ssl_minimal.checks import SSLMinimalError

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "figures"
# Lessons whose claims must be in the ledger (new lessons join when their notebook records its claims).
LEDGER_LESSONS = ["00_metric_learning", "01_instdisc", "02_invaspread", "03_cpc", "04_cmc", "05_moco", "06_simclr",
                  "07_simclr_v2", "08_swav", "09_byol_simsiam_barlow_twins", "10_collapse", "11_moco_v3", "12_dino",
                  "13_clip", "14_mae"]


def claims_files():
    return sorted(FIGURES.glob(f"*{claims.CLAIMS_SUFFIX}"))


def _cells(notebook: Path) -> list[dict]:
    return json.loads(notebook.read_text())["cells"]


def _cell_text(cell: dict) -> str:
    parts = []
    for output in cell.get("outputs", []):
        parts.append("".join(output.get("text", "")))
        parts.append("".join(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def unsupported_values(path: Path) -> list[str]:
    """Results of a claims file whose values are not printed where the file says they come from: the cited
    cells of its notebook ("from committed outputs of DATE (cells N, M)"), or, for a file the notebook wrote
    itself, any output cell other than the one that called record_claims."""
    record = claims.load_claims(path)
    cells = _cells(ROOT / "notebooks" / f"{record['lesson']}.ipynb")
    cited = re.search(r"\(cells? ([\d, ]+)\)", record.get("source", ""))
    if cited:
        chosen = [cells[int(index)] for index in cited.group(1).split(",")]
    else:
        chosen = [cell for cell in cells if "record_claims(" not in "".join(cell["source"])]
    numbers = claims.numbers_in("\n".join(_cell_text(cell) for cell in chosen if cell["cell_type"] == "code"))
    percent = record.get("percent", True)
    missing = []
    for claim in record["claims"]:
        for result in claim["results"]:
            for value in result["values"]:
                if not claims.appears_in(100 * value if percent else value, 1, percent, numbers):
                    missing.append(f"{claim['claim']!r}: {result['name']} = {value}")
    return missing


@pytest.mark.parametrize("path", claims_files(), ids=lambda path: path.name)
def test_every_number_of_the_ledger_is_in_its_notebook(path):
    assert path.name.endswith(claims.CLAIMS_SUFFIX)
    assert (ROOT / "notebooks" / f"{claims.load_claims(path)['lesson']}.ipynb").is_file()
    missing = unsupported_values(path)
    assert not missing, f"{path.name}: values not printed by the notebook cells they are said to come from: {missing}"


def test_a_notebook_that_records_its_claims_printed_the_committed_file():
    for path in claims_files():
        record = claims.load_claims(path)
        cells = _cells(ROOT / "notebooks" / f"{record['lesson']}.ipynb")
        recording = [cell for cell in cells if "record_claims(" in "".join(cell["source"])]
        assert (record["source"] == "notebook") == bool(recording), (
            f"{path.name}: source {record['source']!r}, but the notebook "
            f"{'has' if recording else 'has no'} a record_claims cell")
        for claim in record["claims"] if recording else []:
            assert f"{claim['claim']}: {claim['verdict']}" in _cell_text(recording[-1]), (
                f"{path.name} differs from what its notebook's last run recorded: rerun the notebook")


def test_the_ledger_is_up_to_date_and_covers_the_lessons():
    assert (ROOT / "course" / "claims.md").read_text() == claims.render_ledger(FIGURES), \
        "course/claims.md is out of date: run python course/build_claims.py"
    assert not set(f"{lesson}{claims.CLAIMS_SUFFIX}" for lesson in LEDGER_LESSONS) - {p.name for p in claims_files()}
    for name in ("README.md", "course/README.md"):
        assert "claims.md" in (ROOT / name).read_text(), f"{name} does not link the ledger"
    result = subprocess.run([sys.executable, str(ROOT / "course" / "build_claims.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_checks_catch_a_changed_number_and_a_stale_ledger(tmp_path, monkeypatch):
    source = FIGURES / "05_moco_claims.json"
    record = json.loads(source.read_text())
    first = record["claims"][0]["results"][0]
    first["values"] = [0.987] + first["values"][1:]                     # 98.7%: no kNN accuracy printed is that high
    changed = tmp_path / source.name
    changed.write_text(json.dumps(record))
    assert not unsupported_values(source)
    assert unsupported_values(changed) == [f"{record['claims'][0]['claim']!r}: {first['name']} = 0.987"]
    assert claims.render_ledger(tmp_path) != claims.render_ledger(FIGURES)


def test_record_claims_writes_prints_and_checks(tmp_path, capsys):
    claim = dict(claim="A beats B", paper="Someone 2020, Table 1: 70% vs 60%", experiment="2 epochs, cpu budget",
                 results=[dict(name="A", values=[0.41, 0.43, 0.42]), dict(name="B", values=[0.40])],
                 verdict="reproduced in direction but within noise", why="1 point apart, spread 1 point")
    path = claims.record_claims("99_example", [claim], folder=tmp_path)
    assert path == tmp_path / "99_example_claims.json"
    record = claims.load_claims(path)
    assert record["source"] == "notebook" and record["claims"][0]["results"][0]["values"] == [0.41, 0.43, 0.42]
    printed = capsys.readouterr().out
    assert "A beats B: reproduced in direction but within noise" in printed and "42.0% ± 1.0 (3 seeds)" in printed
    assert "40.0% (1 seed)" in claims.render_ledger(tmp_path)
    for broken, message in [(dict(claim, verdict="sort of"), "verdict must be one of"),
                            (dict(claim, paper=""), "lacks paper"),
                            (dict(claim, results=[dict(name="A", values=[])]), "finite values")]:
        with pytest.raises(SSLMinimalError, match=message):
            claims.record_claims("99_example", [broken], folder=tmp_path)
    with pytest.raises(SSLMinimalError, match="lesson must be"):
        claims.record_claims("example", [claim], folder=tmp_path)
