"""``python -m harness.certs DIR``: a cluster's certificate authority and one certificate per node.

Writes ``DIR/ca.pem`` (and ``ca.key``, to issue more), then a certificate and
key for each member, ``DIR/members/HOST:PORT.pem`` (``--members``, default the
seed's 127.0.0.1:8886-8888), and for each client, ``DIR/clients/NAME.pem``
(``--clients``, default one client named ``client``). Run again on the same
DIR, it reuses the CA and adds the certificates named (``--force``: a new CA,
and the old certificates are removed). Give the same DIR to every node with
``--tls DIR``: each picks its own certificate by its name
(harness.node.certificates, docs/security.md); on real hosts, give each
host only ca.pem and its own pair. Exit 0 on success, 2 on a usage error (a
name that cannot be a certificate's, or the ``cryptography`` package is
missing: ``pip install '.[tls]'``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.node.address import default_servers

DEFAULT_CLIENTS = ("client",)


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.certs",
        description="Make a cluster's CA and a certificate for each member and client, for --tls DIR.",
    )
    p.add_argument("folder", type=Path, help="where to write ca.pem, members/HOST:PORT.pem, clients/NAME.pem")
    p.add_argument(
        "--members",
        type=_names,
        default=[f"{h}:{p}" for h, p in default_servers()],
        metavar="HOST:PORT,...",
        help="the members, named as in --cluster (default the seed's 127.0.0.1:8886-8888)",
    )
    p.add_argument(
        "--clients",
        type=_names,
        default=list(DEFAULT_CLIENTS),
        metavar="NAME,...",
        help="the clients, named as their --name (default: one, 'client')",
    )
    p.add_argument("--days", type=int, default=825, help="validity in days (default 825)")
    p.add_argument("--force", action="store_true", help="make a new CA even if the folder has one")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from harness.node.certificates import CertError, issue
    except ImportError:
        print("harness.certs: needs the cryptography package: pip install '.[tls]'", file=sys.stderr)
        return 2
    try:
        made = issue(args.folder, args.members, args.clients, days=args.days, new_ca=args.force)
    except CertError as e:
        print(f"harness.certs: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"harness.certs: cannot write {args.folder}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"{len(made)} certificates of one cluster in {args.folder}: pass --tls {args.folder} to every node")
    return 0


if __name__ == "__main__":
    sys.exit(main())
