"""Where nodes listen and how addresses are written: the seed's defaults, port 0, ``host:port``.

The seed ran participant n on 127.0.0.1:(8885 + n); so do we, unless told
otherwise. A listener asked for port 0 gets a port below the kernel's
ephemeral range (see listen_socket).
"""

from __future__ import annotations

import argparse
import errno
import random
import socket

DEFAULT_HOST = "127.0.0.1"
BASE_PORT = 8886  # the seed's first server; participant ID n listens on 8885 + n
READ_CHUNK = 65536


def default_address(participant_id: int) -> tuple[str, int]:
    """The seed's addresses: participant 1 on 127.0.0.1:8886, 2 on 8887, ..."""
    return DEFAULT_HOST, BASE_PORT - 1 + participant_id


def default_servers(count: int = 3) -> list[tuple[str, int]]:
    return [default_address(i) for i in range(1, count + 1)]


# Port 0 ("any free port") for a listener: one below the kernel's ephemeral
# range, where connect() takes its local ports. A participant killed and
# restarted on its port finds it free; in the ephemeral range a connection made
# meanwhile could hold it (the restart fails), or a client reconnecting to the
# dead port could be given that very port as its own and connect to itself.
LOCAL_PORT_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
STATIC_PORTS_FROM = 20000


def _static_ports() -> list[int]:
    """Up to 50 random candidate ports below the ephemeral range (none where
    the range cannot be read or leaves no room)."""
    try:
        with open(LOCAL_PORT_RANGE, encoding="ascii") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    if low - STATIC_PORTS_FROM < 1000:
        return []
    return random.SystemRandom().sample(range(STATIC_PORTS_FROM, low), 50)


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    (family, kind, proto, _, address), *_ = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def listen_socket(host: str, port: int, backlog: int = 256) -> socket.socket:
    """A listening TCP socket on ``host:port``; OSError if it cannot be had.
    Port 0: a free port below the ephemeral range if there is one, else any."""
    if port == 0:
        for candidate in _static_ports():
            try:
                return _listen(host, candidate, backlog)
            except OSError as e:
                if e.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise
    return _listen(host, port, backlog)


def pick_port(host: str = DEFAULT_HOST) -> int:
    """A port free now (below the ephemeral range if possible), for a cluster
    whose names must be known before its members start (--cluster). Another
    process could take it before the member binds it; a start then fails
    loudly (port in use), never silently."""
    with listen_socket(host, 0) as sock:
        return int(sock.getsockname()[1])


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` -> (host, port); ValueError with a readable message otherwise."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port")
    return host, int(port)


def servers_arg(text: str) -> list[tuple[str, int]]:
    """An argparse type: ``host:port,host:port,...`` -> [(host, port), ...]."""
    try:
        servers = [parse_address(part) for part in text.split(",") if part.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not servers:
        raise argparse.ArgumentTypeError("give at least one host:port")
    return servers
