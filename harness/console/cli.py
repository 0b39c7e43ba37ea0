"""What every command line shares: ``--version``, exit statuses, one-line errors.

Theory of operation. A program of the harness ends in one of a few ways, and a
person (or a script) tells them apart by the exit status alone: 0 all went
well, 1 the thing checked is wrong (a violation, an abort), 2 a usage or
environment problem (a bad flag, a port taken, a path that cannot be used), 3
a storage failure (a participant's data file unreadable or corrupted), 130
interrupted. A problem that is not our bug is one line on standard error,
``<program>: <what is wrong>``, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from harness import __version__

EXIT_OK = 0
EXIT_FAILED = 1  # a violation found, a transaction aborted, participants that disagree
EXIT_USAGE = 2  # usage or environment: what the person can fix by changing the command or the machine
EXIT_STORAGE = 3  # a participant's storage failed or holds what it cannot decode
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def add_version(parser: argparse.ArgumentParser) -> None:
    """``--version``: the program's name and the harness's version."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


def fail(program: str, message: str, status: int = EXIT_USAGE) -> int:
    """Print ``program: message`` on standard error; return ``status`` for main to exit with."""
    print(f"{program}: {message}", file=sys.stderr, flush=True)
    return status


def os_problem(e: OSError) -> str:
    """An OSError as a person reads it: what went wrong, and on which path."""
    what = e.strerror or str(e) or type(e).__name__
    return f"{e.filename}: {what}" if e.filename else what


def exit_with(main: Callable[[], int]) -> NoReturn:
    """Run a program's ``main`` and exit with its status. A reader that went away
    (``harness.check DIR | head``) is no error of ours: no traceback, as ``cat`` would."""
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes standard output again at exit: point it at nothing first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        status = EXIT_FAILED
    sys.exit(status)
