"""``python -m harness.status``: a table of every participant's state.

Exit status 0 when every participant answers and all hold the same
storage_server and version; 1 when some do not answer or they disagree; 2 on
a usage error or when none answers (nothing listening: the same as the
client's exit status when it cannot connect).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.console.cli import EXIT_FAILED, EXIT_INTERRUPTED, add_version, exit_with, fail
from harness.console.terminal import fit_table, terminal_width, wrap
from harness.node import event_loop
from harness.node.address import default_servers, servers_arg
from harness.node.query import query_all
from harness.node.timing import STATUS_TIMEOUT
from harness.node.tls import TlsError
from harness.node.tls import load as load_tls
from harness.protocol.messages import State

PROG = "harness.status"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.status",
        description="Show each participant's storage_server, version and lock.",
    )
    add_version(p)
    p.add_argument(
        "--servers",
        type=servers_arg,
        default=default_servers(),
        help="participants as host:port,... (default the seed's 127.0.0.1:8886-8888)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=STATUS_TIMEOUT,
        help=f"seconds to wait for each answer (default {STATUS_TIMEOUT:g})",
    )
    p.add_argument(
        "--tls",
        type=Path,
        default=None,
        metavar="DIR",
        help="mutual TLS with the client certificate in DIR (python -m harness.certs DIR)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be > 0")
    try:
        ssl_context = load_tls(args.tls, member=False).client if args.tls is not None else None
    except TlsError as e:
        return fail(PROG, str(e))
    try:
        states = event_loop.run(query_all(args.servers, args.timeout, ssl=ssl_context))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    answered = [s for s in states if isinstance(s, State)]
    if not answered:
        problems = sorted({str(s) for s in states})
        return fail(
            PROG, f"no participant answered at {', '.join(f'{h}:{p}' for h, p in args.servers)}: {'; '.join(problems)}"
        )
    rows, silent = [], []
    for (host, port), s in zip(args.servers, states, strict=True):
        if isinstance(s, State):
            rows.append([f"{host}:{port}", s.storage_server, s.version, s.lock or "-", s.committed, s.aborted])
        else:  # what went wrong goes under the table: in a column it would make the table too wide
            rows.append([f"{host}:{port}", "no answer", "", "", "", ""])
            silent.append(f"{host}:{port}: {s}")
    headers = ["participant", "storage_server", "version", "lock", "committed", "aborted"]
    width = terminal_width(sys.stdout)
    print(fit_table(headers, rows, width, keep=range(len(headers))))
    for line in silent:
        print("\n".join(wrap(line, width)))
    same = len({(s.storage_server, s.version) for s in answered}) == 1
    if len(answered) == len(states) and same:
        print(f"\nconsistent: storage_server={answered[0].storage_server} version={answered[0].version}")
        return 0
    print(
        "\nNOT consistent: "
        + ("some participants did not answer" if len(answered) < len(states) else "participants hold different values")
    )
    return EXIT_FAILED


if __name__ == "__main__":
    exit_with(main)
