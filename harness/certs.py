"""``python -m harness.certs DIR``: a cluster's certificate authority and its two certificates.

Writes ``DIR/ca.pem`` (and ``ca.key``, to issue more), ``DIR/member.pem`` and
``member.key`` (every participant), ``DIR/client.pem`` and ``client.key``
(coordinators and harness.status). Keys are ECDSA P-256, private keys are
mode 0600. The role is the certificate's common name (harness.node.tls). Give
the same DIR to every node with ``--tls DIR``; give a client only ca.pem and
the client pair. Exit 0 on success, 2 on a usage error (DIR holds a CA already
and no --force, or the ``cryptography`` package is missing: ``pip install
'.[tls]'``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

from harness.node.tls import CA_FILE, CLIENT_CN, MEMBER_CN


def make(folder: Path, days: int = 825) -> None:
    """Write the CA and both certificates into ``folder`` (made if missing)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    until = now + datetime.timedelta(days=days)

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def write(name: str, data: bytes, private: bool = False) -> None:
        path = folder / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "2pc-harness cluster CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    write("ca.key", key_pem(ca_key), private=True)
    write(CA_FILE, ca.public_bytes(serialization.Encoding.PEM))
    for name, cn, usages in (
        ("member", MEMBER_CN, [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
        ("client", CLIENT_CN, [ExtendedKeyUsageOID.CLIENT_AUTH]),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        write(f"{name}.key", key_pem(key), private=True)
        write(f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.certs",
        description="Make a cluster's CA and its member and client certificates, for --tls DIR.",
    )
    p.add_argument("folder", type=Path, help="where to write ca.pem, member.pem/.key, client.pem/.key")
    p.add_argument("--days", type=int, default=825, help="validity in days (default 825)")
    p.add_argument("--force", action="store_true", help="replace a CA already in the folder")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (args.folder / CA_FILE).exists() and not args.force:
        print(f"harness.certs: {args.folder / CA_FILE} exists; pass --force to replace it", file=sys.stderr)
        return 2
    try:
        make(args.folder, args.days)
    except ImportError:
        print("harness.certs: needs the cryptography package: pip install '.[tls]'", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"harness.certs: cannot write {args.folder}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"certificates for one cluster in {args.folder}: pass --tls {args.folder} to every node")
    return 0


if __name__ == "__main__":
    sys.exit(main())
