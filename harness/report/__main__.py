"""``python -m harness.report DIR...``: write report.html, history.jsonl and events.jsonl in run folders.

Works on folders of earlier runs too. Exit status: 0 written, 2 not a run folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.report.files import write_all
from harness.verify.model import CheckError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.report",
        description="Write report.html (open it in a browser), history.jsonl and events.jsonl in run folders.",
    )
    parser.add_argument("folders", type=Path, nargs="+", metavar="DIR", help="a run folder (reports/<...>/)")
    parser.add_argument("--no-events", action="store_true", help="skip events.jsonl (every log line as JSON)")
    args = parser.parse_args(argv)
    for folder in args.folders:
        try:
            written = write_all(folder, events=not args.no_events)
        except CheckError as e:
            print(f"harness.report: {e}", file=sys.stderr)
            return 2
        print(" ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
