"""``python -m harness.status``: a table of every participant's state.

Exit status 0 when every participant answers and all hold the same
storage_server and version; 1 otherwise; 2 on a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from tabulate import tabulate

from harness.node.address import default_servers, servers_arg
from harness.node.query import query_all
from harness.node.timing import STATUS_TIMEOUT
from harness.node.tls import TlsError
from harness.node.tls import load as load_tls
from harness.protocol.messages import State


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.status",
        description="Show each participant's storage_server, version and lock.",
    )
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
    args = build_parser().parse_args(argv)
    try:
        ssl_context = load_tls(args.tls, member=False).client if args.tls is not None else None
    except TlsError as e:
        print(f"harness.status: {e}", file=sys.stderr)
        return 2
    states = asyncio.run(query_all(args.servers, args.timeout, ssl=ssl_context))
    rows = []
    for (host, port), s in zip(args.servers, states, strict=True):
        if isinstance(s, State):
            rows.append([f"{host}:{port}", s.storage_server, s.version, s.lock or "-", s.committed, s.aborted])
        else:
            rows.append([f"{host}:{port}", "unreachable", "", "", "", s])
    print(tabulate(rows, headers=["participant", "storage_server", "version", "lock", "committed", "aborted"]))
    answered = [s for s in states if isinstance(s, State)]
    same = len({(s.storage_server, s.version) for s in answered}) == 1
    if len(answered) == len(states) and same:
        print(f"\nconsistent: storage_server={answered[0].storage_server} version={answered[0].version}")
        return 0
    print(
        "\nNOT consistent: "
        + ("some participants did not answer" if len(answered) < len(states) else "participants hold different values")
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
