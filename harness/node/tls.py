"""Who may say what: mutual TLS between nodes, roles from certificates, and the bind rule.

Theory of operation (docs/security.md). A cluster has its own certificate
authority, made with its certificates by ``python -m harness.certs DIR``
(harness.node.certificates): one certificate per *member*, naming it as
participant lists do (``host:port``), which it presents as a server to anyone
and as a client to its peers; and one per *client*, naming it as its txids do
(``client1``). The folder holds them all by name (``members/NAME.pem``,
``clients/NAME.pem``, and ``ca.pem``); each node loads its own. With ``--tls
DIR`` every connection is mutual TLS (TLS 1.3, the standard ``ssl`` module):
each side proves it holds a key certified by the cluster's CA, and who it is,
an :class:`Identity` (a role and a name), is the certificate's subject
alternative name ``urn:2pc-harness:ROLE:NAME``. Host names are not checked the
way browsers do: the name is the member's name in the cluster, checked by the
node that dials it (a client or a peer refuses a server whose certificate
names another member, or a client), so the same rule holds for addresses no
DNS knows (network namespaces).

What each identity may ask is :func:`refusal`: the table :data:`ALLOWED` by
role (clients prepare, commit, abort and resolve; members resolve and ask
STATUS), and for a client, only its own transactions: the txid's owner
(:func:`txid_owner`, the client's name that ``ClientNode.new_txid`` puts
first) must be its name, so a client cannot commit, abort or resolve another
client's transaction. Members may RESOLVE anything: cooperative termination.
A participant refuses a member certificate whose name is not in its cluster.
Nobody else gets a connection at all. Without TLS every connection is
:attr:`Role.TRUSTED` and may ask anything: that is the loopback default, and
:func:`check_bind` refuses it on any other address.
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
from harness.protocol.messages import DecodeError, Kind, Message

CA_FILE = "ca.pem"
# A certificate's identity: its subject alternative name URI_PREFIX + "member:127.0.0.1:8886".
URI_PREFIX = "urn:2pc-harness:"
HANDSHAKE_TIMEOUT = 5.0  # seconds a connection gets to finish its TLS handshake


class Role(enum.Enum):
    """Who is at the other end of a connection, as far as it has proved."""

    TRUSTED = "trusted"  # no TLS: loopback, anyone who can connect (docs/security.md)
    CLIENT = "client"
    MEMBER = "member"


# Where a node's own certificate and key are, in the --tls folder: FOLDERS[role]/NAME.pem and .key.
FOLDERS = {Role.MEMBER: "members", Role.CLIENT: "clients"}


@dataclass(frozen=True)
class Identity:
    """Who proved to be at the other end: a role and its name (a member's
    ``host:port``, a client's name); TRUSTED has no name."""

    role: Role
    name: str = ""

    def uri(self) -> str:
        return f"{URI_PREFIX}{self.role.value}:{self.name}"


TRUSTED = Identity(Role.TRUSTED)


_TXN = frozenset({Role.TRUSTED, Role.CLIENT})
ALLOWED: dict[Kind, frozenset[Role]] = {
    Kind.PREPARE: _TXN,
    Kind.COMMIT: _TXN,
    Kind.ABORT: _TXN,
    Kind.RESOLVE: frozenset({Role.TRUSTED, Role.CLIENT, Role.MEMBER}),
    Kind.STATUS: frozenset({Role.TRUSTED, Role.CLIENT, Role.MEMBER}),
    Kind.MARKS: frozenset({Role.TRUSTED, Role.MEMBER}),  # a rejoining member learns them
}


_ANYONE = frozenset(Role)  # made once: building it per call cost microseconds per line


def allowed(role: Role, kind: Kind) -> bool:
    """May a peer of ``role`` send a request of ``kind``? (Replies are refused by the core.)"""
    return role in ALLOWED.get(kind, _ANYONE)


# The requests about one transaction that only its owner (or a member, for RESOLVE) may send.
_OWNED = frozenset({Kind.PREPARE, Kind.COMMIT, Kind.ABORT, Kind.RESOLVE})


def txid_owner(txid: str) -> str | None:
    """The client a txid belongs to: ClientNode.new_txid makes ``NAME-TOKEN-SEQ``
    (a hex token, a decimal sequence), so NAME is all before the last two dashes
    (a name may hold dashes itself). None if the txid is not of that form."""
    parts = txid.rsplit("-", 2)
    return parts[0] if len(parts) == 3 and parts[0] else None


def unwelcome(peer: Identity, cluster: tuple[str, ...] | None) -> str | None:
    """Why a participant of ``cluster`` serves no connection of ``peer`` (None: it does):
    a member certificate of a name outside the cluster (a former member, another
    cluster's name under the same CA)."""
    if peer.role is Role.MEMBER and cluster is not None and peer.name not in cluster:
        return f"member {peer.name} is not in this cluster"
    return None


def refusal(peer: Identity, msg: Message) -> DecodeError | None:
    """Why ``peer`` may not send ``msg`` (an ERROR to answer, then close), or
    None if it may: its role must be allowed the kind, and a client may send a
    request about a transaction only if the txid is its own (``not-yours``)."""
    if peer.role is Role.TRUSTED:
        return None
    if not allowed(peer.role, msg.kind):
        return DecodeError("forbidden", f"a {peer.role.value} may not send {msg.kind.value}")
    if peer.role is Role.CLIENT and msg.kind in _OWNED:
        txid = getattr(msg, "txid", "")
        if txid_owner(txid) != peer.name:
            return DecodeError("not-yours", f"client {peer.name} may not send {msg.kind.value} for txid {txid}")
    return None


class TlsError(Exception):
    """The --tls folder cannot be used (missing or bad files): a usage error."""


@dataclass(frozen=True)
class Tls:
    """The TLS contexts one node needs: ``server`` (participants only) and ``client``."""

    folder: Path
    client: ssl.SSLContext
    server: ssl.SSLContext | None = None
    me: Identity = TRUSTED  # whose certificate this node presents


def cert_paths(folder: Path, me: Identity) -> tuple[Path, Path]:
    """Where the certificate and key of ``me`` are in a --tls folder."""
    base = folder / FOLDERS[me.role] / me.name
    return base.with_name(base.name + ".pem"), base.with_name(base.name + ".key")


def names_in(folder: Path, role: Role) -> list[str]:
    """The names that have a certificate of ``role`` in a --tls folder, sorted."""
    where = folder / FOLDERS[role]
    return sorted(p.name[: -len(".pem")] for p in where.glob("*.pem")) if where.is_dir() else []


def default_client(folder: Path) -> str:
    """The client's name when none is given: the folder's only client certificate.
    TlsError if it has none or several."""
    names = names_in(folder, Role.CLIENT)
    if len(names) != 1:
        have = f"it has certificates for {', '.join(names)}" if names else "it has no client certificate"
        raise TlsError(f"{folder}: give this client's name (--name): {have}")
    return names[0]


def _files(folder: Path, me: Identity) -> tuple[Path, Path]:
    cert, key = cert_paths(folder, me)
    if not (folder / CA_FILE).is_file():
        raise TlsError(
            f"{folder / CA_FILE} is missing: make the cluster's certificates with python -m harness.certs {folder}"
        )
    if not cert.is_file() or not key.is_file():
        flag = "--members" if me.role is Role.MEMBER else "--clients"
        raise TlsError(
            f"{folder} has no certificate for {me.role.value} {me.name}: "
            f"add one with python -m harness.certs {folder} {flag} {me.name}"
        )
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


def load(folder: Path, *, member: bool, name: str | None = None) -> Tls:
    """Contexts for a participant (``member``: serves, and connects to peers as a
    member) or a client (connects as a client), with the certificate of ``name``
    (a member's ``host:port``; a client's name, by default the folder's first
    client certificate: enough for STATUS). TlsError if a file is missing or
    bad, or if the nodes run on uvloop: TLS here is asyncio's own (its buffers
    are sized for a flood of handshakes, see _small_tls_buffers), not uvloop's."""
    if event_loop.chosen() is event_loop.LoopKind.UVLOOP:
        raise TlsError(f"--tls runs on asyncio's own event loop: unset {event_loop.ENV}=uvloop")
    if name is None:
        if member:
            raise TlsError("a participant's certificate is chosen by its name")
        name = next(iter(names_in(folder, Role.CLIENT)), "")
        if not name:
            raise TlsError(
                f"{folder} has no client certificate: add one with python -m harness.certs {folder} --clients NAME"
            )
    me = Identity(Role.MEMBER if member else Role.CLIENT, name)
    cert, key = _files(folder, me)
    ca = str(folder / CA_FILE)
    _small_tls_buffers()
    try:
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.minimum_version = ssl.TLSVersion.TLSv1_3
        client.check_hostname = False  # the identity is checked instead (see the module's docstring)
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
    return Tls(folder=folder, client=client, server=server, me=me)


def identity_of(peercert: dict[str, Any] | None) -> Identity | None:
    """The identity a verified peer certificate (``getpeercert()``) carries:
    its one ``urn:2pc-harness:ROLE:NAME`` subject alternative name. None if it
    has none, several, or an unknown role."""
    found = [
        value[len(URI_PREFIX) :]
        for kind, value in (peercert or {}).get("subjectAltName", ())
        if kind == "URI" and value.startswith(URI_PREFIX)
    ]
    if len(found) != 1:
        return None
    role, _, name = found[0].partition(":")
    for r in FOLDERS:
        if r.value == role and name:
            return Identity(r, name)
    return None


def transport_identity(transport: Any) -> Identity | None:
    """Who is at the other end of an asyncio transport: TRUSTED without TLS,
    None for a certificate without an identity."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return TRUSTED
    return identity_of(ssl_object.getpeercert())


def is_member(transport: Any, name: str) -> bool:
    """Dialling member ``name``: is the server at the other end that member?
    (True without TLS.) A client's certificate, or another member's, is not."""
    return transport_identity(transport) in (TRUSTED, Identity(Role.MEMBER, name))


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
