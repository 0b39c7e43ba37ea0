"""Making a cluster's certificates: its CA, one certificate per member, one per client.

Theory of operation (docs/security.md). A --tls folder holds the cluster's CA
(``ca.pem``; ``ca.key`` to issue more) and every node's certificate and key by
name, where harness.node.tls looks for them: ``members/HOST:PORT.pem`` for a
participant (its name as participant lists write it), ``clients/NAME.pem``
for a client (its name as its txids begin). A certificate says who it belongs
to in one subject alternative name, ``urn:2pc-harness:ROLE:NAME``
(harness.node.tls.Identity), which is what the nodes check; a member's also
names its host (an IP address or a DNS name), so that ordinary tools
(``openssl s_client -verify_hostname``) can check it too, and the common name
repeats the name for people reading ``openssl x509 -subject``.

Issuing reuses the folder's CA if it has one (so certificates can be added
for a new member or client later), or makes one. The runner issues its nodes'
certificates this way for each run (:func:`for_run`): it knows their addresses
only once it has bound their ports. Keys are ECDSA P-256 made with the
``cryptography`` package (``pip install '.[tls]'``); private keys are written
mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.node.address import parse_address
from harness.node.tls import CA_FILE, FOLDERS, Identity, Role, cert_paths

CA_KEY = "ca.key"
DAYS = 825  # the longest validity browsers accept: a cluster's certificates outlive no policy
# A client's name: it begins its txids, NAME-TOKEN-SEQ with a 12-digit hex token, which must
# fit harness.protocol.messages.TXID_RE (at most 64 of [A-Za-z0-9._:-]); and it is a file name.
CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")


class CertError(ValueError):
    """A name that cannot be issued a certificate, or a folder without its CA's key."""


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def check_name(me: Identity) -> None:
    """CertError unless ``me`` can be named by a certificate and a file."""
    if me.role is Role.MEMBER:
        try:
            host, _ = parse_address(me.name)
        except ValueError as e:
            raise CertError(f"member {e}") from None
        if "/" in host or any(c.isspace() for c in host) or host.startswith("."):
            raise CertError(f"member {me.name!r}: not a host name")
    elif not CLIENT_NAME.fullmatch(me.name):
        raise CertError(f"client {me.name!r}: at most 40 letters, digits and ._- starting with a letter or digit")


class Authority:
    """A cluster's CA, able to issue its nodes' certificates."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert, self.key = cert, key

    @classmethod
    def new(cls, days: int = DAYS) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "2pc-harness cluster CA")])
        now = datetime.datetime.now(datetime.UTC)
        usage = dict.fromkeys(
            ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement"),
            False,
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(**usage, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, folder: Path) -> Authority:
        """The CA of ``folder``; CertError if it has none (or not its key)."""
        try:
            cert = x509.load_pem_x509_certificate((folder / CA_FILE).read_bytes())
            key = serialization.load_pem_private_key((folder / CA_KEY).read_bytes(), password=None)
        except (OSError, ValueError) as e:
            raise CertError(f"{folder} has no usable CA ({CA_FILE} and {CA_KEY}): {e}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertError(f"{folder / CA_KEY}: not an ECDSA key")
        return cls(cert, key)

    def save(self, folder: Path) -> None:
        _write(folder / CA_KEY, _key_pem(self.key), private=True)
        _write(folder / CA_FILE, self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, folder: Path, me: Identity, days: int = DAYS) -> Path:
        """Write the certificate and key of ``me`` where harness.node.tls looks for
        them in ``folder``; return the certificate's path."""
        check_name(me)
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(me.uri())]
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if me.role is Role.MEMBER:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
            host = parse_address(me.name)[0].strip("[]")
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, me.name[:64])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        pem, key_path = cert_paths(folder, me)
        _write(key_path, _key_pem(key), private=True)
        _write(pem, cert.public_bytes(serialization.Encoding.PEM))
        return pem


def issue(
    folder: Path,
    members: Iterable[str] = (),
    clients: Iterable[str] = (),
    *,
    days: int = DAYS,
    new_ca: bool = False,
) -> list[Path]:
    """Certificates for ``members`` and ``clients`` in ``folder``, signed by its CA
    (made first if it has none, or if ``new_ca``). Every name is checked before
    anything is written. Returns the certificates' paths."""
    wanted = [Identity(Role.MEMBER, m) for m in members] + [Identity(Role.CLIENT, c) for c in clients]
    for me in wanted:
        check_name(me)
    folder.mkdir(parents=True, exist_ok=True)
    if new_ca or not (folder / CA_FILE).exists():
        ca = Authority.new(days)
        ca.save(folder)
        for sub in FOLDERS.values():  # certificates of an old CA would only fail their handshakes
            shutil.rmtree(folder / sub, ignore_errors=True)
    else:
        ca = Authority.load(folder)
    return [ca.issue(folder, me, days) for me in wanted]


def for_run(source: Path, dest: Path, members: Iterable[str], clients: Iterable[str]) -> Path:
    """The --tls folder a run's nodes use. If ``source`` holds its CA's key, a new
    folder ``dest`` with the CA's certificate (not its key) and a certificate for
    each of the run's members and clients, by the names they have in this run
    (its ports are bound only now); else ``source`` itself, which must then hold
    them (the nodes say which is missing)."""
    if not (source / CA_KEY).is_file():
        return source
    ca = Authority.load(source)
    dest.mkdir(parents=True, exist_ok=True)
    _write(dest / CA_FILE, (source / CA_FILE).read_bytes())
    for me in [Identity(Role.MEMBER, m) for m in members] + [Identity(Role.CLIENT, c) for c in clients]:
        ca.issue(dest, me)
    return dest
