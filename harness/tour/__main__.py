"""``python -m harness.tour pictures``: make docs/tutorial/*.png again from real runs.

Exit status: 0 every picture made, 2 a picture could not be made (no Chromium
or Playwright, or a run did not end as the tour says).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from harness.console.cli import EXIT_OK, EXIT_USAGE, add_version, exit_with, fail
from harness.tour.pictures import SHOTS, PictureError, take

PROG = "harness.tour"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.tour", description=__doc__.splitlines()[0])
    add_version(p)
    sub = p.add_subparsers(dest="command", required=True)
    pics = sub.add_parser("pictures", help="run the tour's runs and photograph their report.html")
    pics.add_argument(
        "--out", type=Path, default=Path("docs/tutorial"), help="folder for the PNGs (default docs/tutorial)"
    )
    pics.add_argument(
        "--only", action="append", choices=[s.name for s in SHOTS], help="make only this picture (repeatable)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    shots = [s for s in SHOTS if not args.only or s.name in args.only]
    with tempfile.TemporaryDirectory(prefix="harness-tour-") as tmp:
        try:
            made = take(shots, args.out, Path(tmp))
        except PictureError as e:
            return fail(PROG, str(e), EXIT_USAGE)
    for png, size in made:
        print(f"{png}  ({size / 1000:.0f} kB)", file=sys.stdout)
    return EXIT_OK


if __name__ == "__main__":
    exit_with(main)
