"""The README's budget table says what training.BUDGETS holds (docs that match the code)."""

import re
from pathlib import Path

from ssl_minimal.training import BUDGETS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_budget_table_matches_the_code():
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| (.*)$", README, flags=re.M)}
    assert set(BUDGETS) <= set(rows)
    for name, budget in BUDGETS.items():
        cells = [cell.strip() for cell in rows[name].split("|")]
        assert cells[0] == budget.backbone
        expected_images = f"{budget.train_samples:,}" if budget.train_samples else "all (50,000)"
        assert cells[1] == expected_images, name
        assert int(cells[2]) == budget.epochs and int(cells[3]) == budget.batch_size, name
        assert float(cells[4]) == budget.warmup_epochs, name
        assert cells[6] == f"{budget.checkpoint_every_steps:,} steps", name
