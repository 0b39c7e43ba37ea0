"""``python -m harness COMMAND ...`` (or ``harness COMMAND ...`` once installed): every program by name.

Each subcommand is one of the command-line programs (``harness run`` is
``python -m harness.run``); its arguments go to it untouched, so ``harness run
--help`` is that program's own help. Programs are imported only when named,
so that ``harness --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from harness.console.cli import EXIT_USAGE, add_version, exit_with

# name -> (module whose main(argv) runs it, what it does)
COMMANDS: dict[str, tuple[str, str]] = {
    "participant": ("harness.participant", "run one participant (the seed's servidorN.py)"),
    "client": ("harness.client", "coordinate transactions (the seed's cliente.py)"),
    "status": ("harness.status", "a table of every participant's state"),
    "run": ("harness.run", "start participants and clients, contend, check, report"),
    "check": ("harness.check", "re-check a run folder"),
    "report": ("harness.report.__main__", "write a run folder's report.html, history.jsonl and events.jsonl"),
    "sim": ("harness.sim.__main__", "simulate or exhaustively explore the protocol core"),
    "bench": ("harness.bench.__main__", "measure the harness against the machine's floor"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="harness",
        description="Two-Phase Commit over TCP: participants, clients, a runner that checks them.",
        epilog="commands:\n"
        + "\n".join(f"  {name:<12} {doc}" for name, (_, doc) in COMMANDS.items())
        + "\n\n'harness COMMAND --help' shows a command's own flags.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version(p)
    p.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help="the program to run (below)")
    p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv:
        parser.print_usage(sys.stderr)
        print("harness: name a command; harness --help lists them", file=sys.stderr)
        return EXIT_USAGE
    if argv[0] in COMMANDS:  # its flags are its own, --help and --version included
        module = importlib.import_module(COMMANDS[argv[0]][0])
        status: int = module.main(argv[1:])
        return status
    parser.parse_args(argv)  # --help, --version, or a usage error naming the commands
    return EXIT_USAGE


if __name__ == "__main__":
    exit_with(main)
