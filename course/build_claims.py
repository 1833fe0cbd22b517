"""Build course/claims.md, the ledger of claims, from the committed figures/<lesson>_claims.json files.

    python course/build_claims.py            # rewrite course/claims.md
    python course/build_claims.py --check    # exit 1 (and say so) when course/claims.md is out of date
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ssl_minimal.claims import render_ledger  # noqa: E402

LEDGER = ROOT / "course" / "claims.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that course/claims.md is up to date")
    arguments = parser.parse_args()
    text = render_ledger(ROOT / "figures")
    if arguments.check:
        if LEDGER.is_file() and LEDGER.read_text() == text:
            return 0
        print(f"{LEDGER.relative_to(ROOT)} is out of date: run python course/build_claims.py", file=sys.stderr)
        return 1
    LEDGER.write_text(text)
    print(f"wrote {LEDGER.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
