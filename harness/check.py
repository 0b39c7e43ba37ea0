"""``python -m harness.check DIR``: re-check a stored run folder and print the same report.

Exit status: 0 consistent, 1 a violation, 2 not a run folder. A folder left
by a run that was interrupted (SIGINT, SIGTERM, a killed runner) is checked as
far as it goes: the report says what could not be checked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.console.cli import EXIT_FAILED, EXIT_OK, add_version, exit_with, fail
from harness.console.terminal import terminal_width
from harness.report import tables
from harness.verify.checker import check_run
from harness.verify.model import CheckError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.check", description="Re-check a run folder written by python -m harness.run."
    )
    add_version(parser)
    parser.add_argument("folder", type=Path, help="the run folder (reports/<...>/)")
    args = parser.parse_args(argv)
    try:
        checked = check_run(args.folder)
    except CheckError as e:
        return fail("harness.check", str(e))
    extra = ["", f"run folder: {args.folder}  ({checked.lines} log lines checked)"]
    print(tables.render(checked, extra=extra, width=terminal_width(sys.stdout)))
    return EXIT_OK if checked.consistent else EXIT_FAILED


if __name__ == "__main__":
    exit_with(main)
