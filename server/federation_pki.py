"""Certificates for a federation, made with ``cryptography`` (demo, tests, a first setup).

Each server has its own CA; the CA issues the server's federation-port certificate (CN and
SAN DNS = the server's name, plus localhost and 127.0.0.1) and its client certificate (CN =
the server's name) that it shows its peers. A peer is given the CA certificate (never its
key): with it the peer checks both the server's port and its client certificate, and the
configured ``identity`` (the CN) says who it is. A production network would use the national
PKI instead; the file layout is the same.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerPki:
    """The PEM files of one server (paths)."""

    name: str
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _write_key(path: Path, key: object) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    assert isinstance(key, ec.EllipticCurvePrivateKey)
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _cert(
    subject_cn: str,
    key: object,
    issuer_cn: str,
    issuer_key: object,
    *,
    ca: bool,
    sans: list[str] | None = None,
    days: int = 30,
) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(issuer_key, ec.EllipticCurvePrivateKey)
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
    else:
        b = b.add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    if sans:
        names: list[x509.GeneralName] = []
        for s in sans:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(s)))
            except ValueError:
                names.append(x509.DNSName(s))
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = b.sign(issuer_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM)


def make_server_pki(out_dir: str | Path, name: str, *, client_cn: str | None = None) -> ServerPki:
    """A CA for ``name`` and the two certificates it issues (files ``<name>-*.pem/.key``).

    ``client_cn``: the client certificate's CN (default ``name``; tests give another to
    make a certificate whose identity does not match).
    """
    from cryptography.hazmat.primitives.asymmetric import ec

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cn = f"{name} federation CA"
    files = ServerPki(
        name,
        d / f"{name}-ca.pem",
        d / f"{name}-ca.key",
        d / f"{name}-server.pem",
        d / f"{name}-server.key",
        d / f"{name}-client.pem",
        d / f"{name}-client.key",
    )
    files.ca_cert.write_bytes(_cert(ca_cn, ca_key, ca_cn, ca_key, ca=True, days=365))
    _write_key(files.ca_key, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    files.server_cert.write_bytes(
        _cert(name, server_key, ca_cn, ca_key, ca=False, sans=[name, "localhost", "127.0.0.1"])
    )
    _write_key(files.server_key, server_key)
    client_key = ec.generate_private_key(ec.SECP256R1())
    files.client_cert.write_bytes(_cert(client_cn or name, client_key, ca_cn, ca_key, ca=False))
    _write_key(files.client_key, client_key)
    return files


def issue_client_cert(pki: ServerPki, cn: str, out_cert: Path, out_key: Path) -> None:
    """Another client certificate from ``pki``'s CA with subject ``cn``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    out_cert.write_bytes(_cert(cn, key, f"{pki.name} federation CA", ca_key, ca=False))
    _write_key(out_key, key)
