"""Who may say what: mutual TLS between nodes, roles from certificates, and the bind rule.

Theory of operation (docs/security.md). A cluster has its own certificate
authority, made with its certificates by ``python -m harness.certs DIR``: a
*member* certificate, which every participant presents (as a server to anyone,
and as a client to its peers), and a *client* certificate, which coordinators
and ``harness.status`` present. With ``--tls DIR`` every connection is mutual
TLS (TLS 1.3, the standard ``ssl`` module): each side proves it holds a key
certified by the cluster's CA, and the role is the certificate's common name.
Host names are not checked: the CA is private to one cluster and every member
is equally trusted, so what matters is "a member of this cluster", which the
chain proves; a client checks that the server it reached presents a *member*
certificate, so a client certificate cannot pose as a participant.

What each role may ask is one table, :data:`ALLOWED`: clients prepare, commit,
abort and resolve (the coordinator's step 4 asks RESOLVE of a silent
participant; a client may ABORT anyway, so RESOLVE gives it nothing more);
members resolve and ask STATUS; nobody else gets a connection at all. Without
TLS every connection is :attr:`Role.TRUSTED` and may ask anything: that is the
loopback default, and :func:`check_bind` refuses it on any other address.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.node import event_loop
from harness.protocol.messages import Kind

CA_FILE = "ca.pem"
# The common names that carry a certificate's role.
MEMBER_CN = "2pc-member"
CLIENT_CN = "2pc-client"
HANDSHAKE_TIMEOUT = 5.0  # seconds a connection gets to finish its TLS handshake


class Role(enum.Enum):
    """Who is at the other end of a connection, as far as it has proved."""

    TRUSTED = "trusted"  # no TLS: loopback, anyone who can connect (docs/security.md)
    CLIENT = "client"
    MEMBER = "member"


_TXN = frozenset({Role.TRUSTED, Role.CLIENT})
ALLOWED: dict[Kind, frozenset[Role]] = {
    Kind.PREPARE: _TXN,
    Kind.COMMIT: _TXN,
    Kind.ABORT: _TXN,
    Kind.RESOLVE: frozenset({Role.TRUSTED, Role.CLIENT, Role.MEMBER}),
    Kind.STATUS: frozenset({Role.TRUSTED, Role.CLIENT, Role.MEMBER}),
    Kind.MARKS: frozenset({Role.TRUSTED, Role.MEMBER}),  # a rejoining member learns them
}


def allowed(role: Role, kind: Kind) -> bool:
    """May a peer of ``role`` send a request of ``kind``? (Replies are refused by the core.)"""
    return role in ALLOWED.get(kind, frozenset(Role))


class TlsError(Exception):
    """The --tls folder cannot be used (missing or bad files): a usage error."""


@dataclass(frozen=True)
class Tls:
    """The TLS contexts one node needs: ``server`` (participants only) and ``client``."""

    folder: Path
    client: ssl.SSLContext
    server: ssl.SSLContext | None = None


def _files(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    for path in (folder / CA_FILE, cert, key):
        if not path.is_file():
            raise TlsError(f"{path} is missing: make the cluster's certificates with python -m harness.certs {folder}")
    return cert, key


# asyncio gives every TLS connection a 256 KiB read buffer (SSLProtocol.max_size):
# a participant at its connection cap of handshakes would hold cap x 256 KiB.
# A line is at most 4 KiB and a TLS record 16 KiB, so 32 KiB loses nothing
# (measured: a flood of handshakes cut short, RSS 108 -> 51 MB with 128 connections).
TLS_READ_BUFFER = 32 * 1024


def _small_tls_buffers() -> None:
    from asyncio import sslproto

    if getattr(sslproto.SSLProtocol, "max_size", 0) > TLS_READ_BUFFER:
        sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


def load(folder: Path, *, member: bool) -> Tls:
    """Contexts for a participant (``member``: serves, and connects to peers as a
    member) or a client (connects as a client). TlsError if a file is missing or
    bad, or if the nodes run on uvloop: TLS here is asyncio's own (its buffers
    are sized for a flood of handshakes, see _small_tls_buffers), not uvloop's."""
    if event_loop.chosen() is event_loop.LoopKind.UVLOOP:
        raise TlsError(f"--tls runs on asyncio's own event loop: unset {event_loop.ENV}=uvloop")
    cert, key = _files(folder, "member" if member else "client")
    ca = str(folder / CA_FILE)
    _small_tls_buffers()
    try:
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.minimum_version = ssl.TLSVersion.TLSv1_3
        client.check_hostname = False  # the role is checked instead (see the module's docstring)
        client.verify_mode = ssl.CERT_REQUIRED
        client.load_verify_locations(ca)
        client.load_cert_chain(cert, key)
        server = None
        if member:
            server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            server.minimum_version = ssl.TLSVersion.TLSv1_3
            server.verify_mode = ssl.CERT_REQUIRED
            server.load_verify_locations(ca)
            server.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as e:
        raise TlsError(f"{folder}: cannot load the certificates: {e}") from None
    return Tls(folder=folder, client=client, server=server)


def role_of(peercert: dict[str, Any] | None) -> Role | None:
    """The role a verified peer certificate (``getpeercert()``) carries; None if none."""
    if not peercert:
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                if value == MEMBER_CN:
                    return Role.MEMBER
                if value == CLIENT_CN:
                    return Role.CLIENT
    return None


def transport_role(transport: Any) -> Role | None:
    """The role of the peer of an asyncio transport: TRUSTED without TLS."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return Role.TRUSTED
    return role_of(ssl_object.getpeercert())


def is_loopback(host: str) -> bool:
    """Does ``host`` (an address or a name) only ever mean this machine's loopback?"""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def check_bind(host: str, tls: Path | None, private: bool = False) -> str | None:
    """None if a participant may listen on ``host``; else the one line that says why not.
    ``private``: the address is on a network that only the run's own nodes reach
    (--network netns, or an inventory that says so): loopback's trust."""
    if tls is not None or private or is_loopback(host):
        return None
    return (
        f"refusing to listen on {host} without --tls: anyone who can reach it could prepare, commit and abort "
        "(make certificates with python -m harness.certs DIR, then pass --tls DIR; docs/security.md)"
    )
