"""TLS and mutual TLS: certificates made with the openssl CLI in a temp dir (skipped without it)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from server.app import ServerStartError, create_server
from server.auth import (
    AuthConfigError,
    Authenticator,
    TlsConfig,
    new_token_entry,
    tls_from_options,
)
from server.client import Client
from server.policy import SharingPolicy
from tests.test_server_machinery import FakeBackend
from tests.test_server_support import scratch_audit

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not found")


def _ssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _ssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Test CA",
        cwd=d,
    )

    def issue(name: str, subj: str, ext: str) -> None:
        _ssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            subj,
            cwd=d,
        )
        (d / f"{name}.ext").write_text(ext)
        _ssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
            cwd=d,
        )

    issue("server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    issue("north", "/CN=lab1.north/O=PD North", "extendedKeyUsage=clientAuth\n")
    issue("stranger", "/CN=unknown.lab/O=Nobody", "extendedKeyUsage=clientAuth\n")
    issue("nocn", "/O=PD North", "extendedKeyUsage=clientAuth\n")  # CA-signed, no CN at all
    return d


@pytest.fixture
def mtls_server(pki: Path, tmp_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    tokens, entries = {}, []
    for user, agency in (("n", "PD-North"), ("s", "PD-South")):
        tokens[user], e = new_token_entry(user, agency, "examiner")
        entries.append(e)
    auth = Authenticator.from_dict(
        {
            "tokens": entries,
            "client_certs": [{"cn": "lab1.north", "o": "PD North", "agency": "PD-North"}],
        }
    )
    audit = scratch_audit(tmp_path)
    tls = TlsConfig(pki / "server.pem", pki / "server.key", pki / "ca.pem", True)
    server, port = create_server(
        FakeBackend(), "127.0.0.1:0", auth=auth, policy=SharingPolicy(), audit=audit, tls=tls
    )
    server.start()
    yield port, tokens
    server.stop(1)
    audit.close()


def test_tls_only(pki: Path, tmp_path: Path) -> None:
    tok, e = new_token_entry("n", "PD-North", "examiner")
    audit = scratch_audit(tmp_path)
    tls = TlsConfig(pki / "server.pem", pki / "server.key")
    server, port = create_server(
        FakeBackend(),
        "127.0.0.1:0",
        auth=Authenticator.from_dict([e]),
        policy=SharingPolicy(),
        audit=audit,
        tls=tls,
    )
    server.start()
    try:
        with Client(f"127.0.0.1:{port}", tok, tls_ca=str(pki / "ca.pem")) as c:
            assert len(c.list().casings) == 0
        with Client(f"127.0.0.1:{port}", tok, timeout=3) as c, pytest.raises(grpc.RpcError) as ex:
            c.list()  # plaintext client against a TLS server
        assert ex.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(1)
        audit.close()


def test_mutual_tls(pki: Path, mtls_server: tuple[int, dict[str, str]]) -> None:
    port, tokens = mtls_server
    addr = f"127.0.0.1:{port}"
    cert: dict[str, Any] = {
        "tls_ca": str(pki / "ca.pem"),
        "tls_cert": str(pki / "north.pem"),
        "tls_key": str(pki / "north.key"),
    }
    with Client(addr, tokens["n"], **cert) as c:
        assert c.submit(b"SCAN over mTLS", search=False).casing_id
    # the certificate says PD-North; a PD-South token over it is refused
    with Client(addr, tokens["s"], **cert) as c, pytest.raises(grpc.RpcError) as ex:
        c.list()
    assert ex.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "does not match" in ex.value.details()
    # a certificate from the right CA but not mapped to an agency
    other = {**cert, "tls_cert": str(pki / "stranger.pem"), "tls_key": str(pki / "stranger.key")}
    with Client(addr, tokens["n"], **other) as c, pytest.raises(grpc.RpcError) as ex:
        c.list()
    assert ex.value.code() is grpc.StatusCode.UNAUTHENTICATED
    # no client certificate at all: the handshake fails
    with Client(addr, tokens["n"], tls_ca=str(pki / "ca.pem"), timeout=3) as c:
        with pytest.raises(grpc.RpcError) as ex:
            c.list()
    assert ex.value.code() is grpc.StatusCode.UNAVAILABLE


def test_require_client_cert_needs_ca(pki: Path) -> None:
    with pytest.raises(AuthConfigError, match="--tls-ca"):
        tls_from_options(str(pki / "server.pem"), str(pki / "server.key"), None, True)
    with pytest.raises(AuthConfigError, match="--tls-ca"):
        TlsConfig(pki / "server.pem", pki / "server.key", None, True).validate()
    with pytest.raises(AuthConfigError, match="both"):
        tls_from_options(str(pki / "server.pem"), None, None, False)
    assert tls_from_options(None, None, None, False) is None


def test_client_ca_without_require_client_cert_is_an_error(pki: Path) -> None:
    """gRPC never asks for a client certificate without require_client_auth: refuse the
    combination instead of silently ignoring the CA (issue 10, item 6)."""
    cert, key, ca = str(pki / "server.pem"), str(pki / "server.key"), str(pki / "ca.pem")
    with pytest.raises(AuthConfigError, match="--require-client-cert"):
        tls_from_options(cert, key, ca, False)
    with pytest.raises(AuthConfigError, match="--require-client-cert"):
        TlsConfig(pki / "server.pem", pki / "server.key", pki / "ca.pem", False).validate()
    assert tls_from_options(cert, key, ca, True) is not None


def test_serve_refuses_client_ca_alone(
    pki: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.auth import write_auth_file
    from server.cli import main

    _, entry = new_token_entry("n", "PD-North", "examiner")
    write_auth_file(tmp_path / "auth.json", [entry])
    args = ["serve", "--data-dir", str(tmp_path / "d"), "--auth", str(tmp_path / "auth.json")]
    args += ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")]
    assert main([*args, "--tls-ca", str(pki / "ca.pem")]) == 2
    assert "--require-client-cert" in capsys.readouterr().err


def test_mutual_tls_needs_a_cert_mapping(pki: Path, tmp_path: Path) -> None:
    """--require-client-cert without client_certs would accept any CA-signed certificate with
    any agency's token: refused at start-up. And a mapping without mutual TLS is never used."""
    _, e = new_token_entry("n", "PD-North", "examiner")
    mutual = TlsConfig(pki / "server.pem", pki / "server.key", pki / "ca.pem", True)
    audit = scratch_audit(tmp_path)
    with pytest.raises(ServerStartError, match="client_certs"):
        create_server(
            FakeBackend(),
            "127.0.0.1:0",
            auth=Authenticator.from_dict([e]),
            policy=SharingPolicy(),
            audit=audit,
            tls=mutual,
        )
    mapped = Authenticator.from_dict(
        {"tokens": [e], "client_certs": [{"cn": "lab1.north", "agency": "PD-North"}]}
    )
    for tls in (None, TlsConfig(pki / "server.pem", pki / "server.key")):
        with pytest.raises(ServerStartError, match="does not ask for them"):
            create_server(
                FakeBackend(),
                "127.0.0.1:0",
                auth=mapped,
                policy=SharingPolicy(),
                audit=audit,
                tls=tls,
            )
    audit.close()


def test_certificate_without_cn_is_refused(
    pki: Path, mtls_server: tuple[int, dict[str, str]]
) -> None:
    """A CA-signed certificate with no subject CN cannot be mapped to an agency: refused
    with either agency's token (a regression guard for the mandatory mapping)."""
    port, tokens = mtls_server
    cert = {
        "tls_ca": str(pki / "ca.pem"),
        "tls_cert": str(pki / "nocn.pem"),
        "tls_key": str(pki / "nocn.key"),
    }
    for user in ("n", "s"):
        with Client(f"127.0.0.1:{port}", tokens[user], **cert) as c:
            with pytest.raises(grpc.RpcError) as ex:
                c.list()
        assert ex.value.code() is grpc.StatusCode.UNAUTHENTICATED
