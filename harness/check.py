"""``python -m harness.check DIR``: re-check a stored run folder and print the same report.

Exit status: 0 consistent, 1 a violation, 2 not a run folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.report import tables
from harness.verify.checker import check_run
from harness.verify.model import CheckError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.check", description="Re-check a run folder written by python -m harness.run."
    )
    parser.add_argument("folder", type=Path, help="the run folder (reports/<...>/)")
    args = parser.parse_args(argv)
    try:
        checked = check_run(args.folder)
    except CheckError as e:
        print(f"harness.check: {e}", file=sys.stderr)
        return 2
    print(tables.render(checked, extra=["", f"run folder: {args.folder}  ({checked.lines} log lines checked)"]))
    return 0 if checked.consistent else 1


if __name__ == "__main__":
    sys.exit(main())
