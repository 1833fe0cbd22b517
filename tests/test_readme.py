"""The README's tables say what the code and the tree hold (docs that match the code)."""

import re
from pathlib import Path

from ssl_minimal.training import BUDGETS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_budget_table_matches_the_code():
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| (.*)$", README, flags=re.M)}
    assert set(BUDGETS) <= set(rows)
    for name, budget in BUDGETS.items():
        cells = [cell.strip() for cell in rows[name].split("|")]
        assert cells[0] == budget.backbone and cells[1] == budget.vit_backbone
        expected_images = f"{budget.train_samples:,}" if budget.train_samples else "all (50,000)"
        assert cells[2] == expected_images, name
        assert int(cells[3]) == budget.epochs and int(cells[4]) == budget.batch_size, name
        assert float(cells[5]) == budget.warmup_epochs, name
        assert cells[7] == f"{budget.checkpoint_every_steps:,} steps", name


def test_lesson_tables_point_at_files_that_exist():
    """Every notebook, guide and method file named in the README's and the course's lesson tables
    exists, and every notebook in notebooks/ is listed: the tables cannot drift from the tree."""
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    course = (root / "course" / "README.md").read_text()
    named_notebooks = set(re.findall(r"`notebooks/(\d\d_\w+)\.ipynb`", readme))
    for name in named_notebooks:
        assert (root / "notebooks" / f"{name}.ipynb").exists(), f"README names a missing notebook {name}"
    for path in re.findall(r"`(ssl_minimal/methods/\w+\.py)`", readme):
        assert (root / path).exists(), f"README names a missing method file {path}"
    for guide in re.findall(r"\]\((lessons/\w+\.md)\)", course):
        assert (root / "course" / guide).exists(), f"course/README.md links a missing guide {guide}"
    ready = re.findall(r"^\| \d+ \|.*\| `(\d\d_\w+)` \|.*\| ready \|$", course, flags=re.M)
    on_disk = {path.stem for path in (root / "notebooks").glob("*.ipynb")}
    assert set(ready) <= on_disk, f"lessons marked ready without a notebook: {set(ready) - on_disk}"
    assert on_disk <= named_notebooks, f"notebooks missing from the README's lesson table: {on_disk - named_notebooks}"
