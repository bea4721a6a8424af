"""Who is calling: bearer tokens (hashed at rest), roles, and optional (mutual) TLS.

The auth file is JSON, either a list of token entries or an object::

    {
      "tokens": [
        {"user": "alice", "agency": "PD-North", "role": "examiner",
         "token_sha256": "<hex SHA-256 of the token>"}
      ],
      "client_certs": [
        {"cn": "lab1.pd-north.example", "o": "PD North", "agency": "PD-North"}
      ]
    }

Tokens are never stored: only their SHA-256, compared with :func:`hmac.compare_digest`.

Mutual TLS is all or nothing: ``--tls-ca`` (the CA of client certificates) requires
``--require-client-cert`` and vice versa, and then the auth file must map certificates to
agencies (``client_certs``). Every call must then come over a certificate whose subject CN (and
O, when given) is listed, and its bearer token must belong to the same agency; anything else is
refused (UNAUTHENTICATED). :func:`check_tls_auth` enforces the combination at start-up.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import grpc

from .jsonfile import read_json

ROLES = ("submitter", "examiner", "admin")


class Permission(Enum):
    SUBMIT = "submit"
    SEARCH = "search"
    READ = "read"
    COMPARE = "compare"
    DECIDE = "decide"
    LINKS = "links"
    DELETE = "delete"
    LEADS = "list leads"
    FIREARMS = "record firearms"
    INTEL = "read series and reports"


_SUBMITTER = frozenset({Permission.SUBMIT, Permission.SEARCH, Permission.READ, Permission.FIREARMS})
_EXAMINER = _SUBMITTER | {
    Permission.COMPARE,
    Permission.DECIDE,
    Permission.LINKS,
    Permission.LEADS,
    Permission.INTEL,
}
ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "submitter": _SUBMITTER,
    "examiner": _EXAMINER,
    "admin": _EXAMINER | {Permission.DELETE},
}


class AuthError(Exception):
    """A refusal with the gRPC status it maps to."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class AuthConfigError(ValueError):
    """The auth file or the TLS options are unusable; the message says how to fix them."""


@dataclass(frozen=True)
class Identity:
    user: str
    agency: str
    role: str

    def can(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS.get(self.role, frozenset())


@dataclass(frozen=True)
class TokenEntry:
    user: str
    agency: str
    role: str
    token_sha256: str


@dataclass(frozen=True)
class CertEntry:
    cn: str
    agency: str
    o: str | None = None


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token, as stored in the auth file."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token_entry(user: str, agency: str, role: str) -> tuple[str, dict[str, str]]:
    """Make a fresh random token and the auth-file entry that accepts it.

    Returns ``(token, entry)``; give the token to the user and store only the entry.
    """
    if role not in ROLES:
        raise AuthConfigError(f"role must be one of {ROLES}; got {role!r}")
    if not user or not agency:
        raise AuthConfigError("user and agency must be non-empty")
    token = secrets.token_urlsafe(32)
    return token, {"user": user, "agency": agency, "role": role, "token_sha256": hash_token(token)}


def write_auth_file(
    path: str | Path,
    entries: Sequence[Mapping[str, str]],
    client_certs: Sequence[Mapping[str, str]] = (),
) -> None:
    """Write an auth file (mode 0600) with token entries and optional client-cert mappings.

    Atomic: the document goes to a temporary file created 0600 in the same folder, is
    fsync'ed and renamed over ``path``, so a crash leaves the old file or the new one (never a
    half-written one) and the token hashes are never readable by others, not even briefly.
    """
    p = Path(path)
    doc: dict[str, Any] = {"tokens": [dict(e) for e in entries]}
    if client_certs:
        doc["client_certs"] = [dict(c) for c in client_certs]
    data = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
    tmp = p.with_name(f".{p.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)  # the umask may have narrowed it further; never wider
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename durable
        dfd = os.open(p.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


# ------------------------------------------------------------------ managing the auth file
# (``ballistics auth add-user | list | revoke``; the server reads the file at start-up only)

#: Longest user or agency name the auth commands accept.
MAX_NAME_CHARS = 128


def read_auth_doc(path: str | Path) -> dict[str, Any]:
    """The auth file as ``{"tokens": [...], "client_certs": [...]}``, checked like the server
    checks it (so a file these helpers write is one the server accepts)."""
    doc = read_json(path, AuthConfigError, "auth file")
    if isinstance(doc, list):
        doc = {"tokens": doc}
    Authenticator.from_dict(doc, source=str(path))  # raises AuthConfigError when unusable
    return {
        "tokens": list(doc.get("tokens", [])),
        "client_certs": list(doc.get("client_certs", [])),
    }


def _check_name(what: str, value: str) -> str:
    value = value.strip()
    if not value or len(value) > MAX_NAME_CHARS:
        raise AuthConfigError(f"{what} must be 1 to {MAX_NAME_CHARS} characters; got {value!r}")
    if any(not c.isprintable() for c in value):
        raise AuthConfigError(f"{what} must not contain control characters; got {value!r}")
    return value


def add_user(path: str | Path, user: str, agency: str, role: str) -> str:
    """Add a user with a fresh token to the auth file (created if absent); return the token.

    Only the token's SHA-256 is written; the token itself exists only in the return value.
    Refuses a user name that already has an entry (revoke it first to re-issue a token).
    """
    user, agency = _check_name("user", user), _check_name("agency", agency)
    p = Path(path)
    doc = read_auth_doc(p) if p.exists() else {"tokens": [], "client_certs": []}
    if any(t.get("user") == user for t in doc["tokens"]):
        raise AuthConfigError(
            f"{p}: user {user!r} already has a token; 'ballistics auth revoke --auth {p}"
            f" --user {user}' first to issue a new one"
        )
    token, entry = new_token_entry(user, agency, role)
    write_auth_file(p, [*doc["tokens"], entry], doc["client_certs"])
    return token


def list_users(path: str | Path) -> list[dict[str, str]]:
    """The users of an auth file (user, agency, role): never a token or its hash."""
    doc = read_auth_doc(path)
    return [{k: str(t[k]) for k in ("user", "agency", "role")} for t in doc["tokens"]]


def revoke_user(path: str | Path, user: str) -> int:
    """Remove every token entry of ``user``; returns how many were removed (0: none)."""
    p = Path(path)
    doc = read_auth_doc(p)
    keep = [t for t in doc["tokens"] if t.get("user") != user]
    removed = len(doc["tokens"]) - len(keep)
    if removed:
        write_auth_file(p, keep, doc["client_certs"])
    return removed


class Authenticator:
    """Maps call metadata (and the TLS peer certificate) to an :class:`Identity`."""

    def __init__(self, tokens: Iterable[TokenEntry], certs: Iterable[CertEntry] = ()) -> None:
        self._tokens = list(tokens)
        self._certs = list(certs)
        self.require_client_cert = False  # set by check_tls_auth for a mutual-TLS server

    @property
    def has_cert_mappings(self) -> bool:
        return bool(self._certs)

    @classmethod
    def from_file(cls, path: str | Path) -> Authenticator:
        return cls.from_dict(read_json(path, AuthConfigError, "auth file"), source=str(path))

    @classmethod
    def from_dict(cls, doc: Any, *, source: str = "auth file") -> Authenticator:
        if isinstance(doc, list):
            doc = {"tokens": doc}
        if not isinstance(doc, dict) or not isinstance(doc.get("tokens", []), list):
            raise AuthConfigError(f"{source}: expected a list of tokens or {{'tokens': [...]}}")
        tokens = []
        for i, t in enumerate(doc.get("tokens", [])):
            missing = [k for k in ("user", "agency", "role", "token_sha256") if not t.get(k)]
            if not isinstance(t, dict) or missing:
                raise AuthConfigError(f"{source}: token entry {i} lacks {missing}")
            if t["role"] not in ROLES:
                raise AuthConfigError(
                    f"{source}: token entry {i} ({t['user']}) has role {t['role']!r};"
                    f" use one of {ROLES}"
                )
            h = str(t["token_sha256"]).lower()
            if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
                raise AuthConfigError(
                    f"{source}: token entry {i} ({t['user']}): token_sha256 must be 64 hex"
                    " digits (the SHA-256 of the token, never the token itself)"
                )
            tokens.append(TokenEntry(str(t["user"]), str(t["agency"]), str(t["role"]), h))
        certs = []
        for i, c in enumerate(doc.get("client_certs", [])):
            if not isinstance(c, dict) or not c.get("cn") or not c.get("agency"):
                raise AuthConfigError(f"{source}: client_certs entry {i} needs 'cn' and 'agency'")
            certs.append(CertEntry(str(c["cn"]), str(c["agency"]), c.get("o")))
        return cls(tokens, certs)

    def identify_token(self, token: str) -> Identity | None:
        digest = hash_token(token)
        found: TokenEntry | None = None
        for entry in self._tokens:  # compare against every entry: timing does not tell which
            if hmac.compare_digest(digest, entry.token_sha256):
                found = entry
        return None if found is None else Identity(found.user, found.agency, found.role)

    def cert_agency(self, cn: str | None, o: str | None) -> str | None:
        for c in self._certs:
            if cn == c.cn and (c.o is None or c.o == o):
                return c.agency
        return None

    def authenticate(self, context: grpc.ServicerContext) -> Identity:
        """Identity of the caller, or raise :class:`AuthError` (UNAUTHENTICATED)."""
        header = None
        for key, value in context.invocation_metadata() or ():
            if key.lower() == "authorization":
                header = value if isinstance(value, str) else value.decode("latin-1")
                break
        if not header:
            raise AuthError(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing 'authorization: Bearer <token>' metadata",
            )
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(
                grpc.StatusCode.UNAUTHENTICATED, "authorization metadata must be 'Bearer <token>'"
            )
        identity = self.identify_token(token.strip())
        if identity is None:
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "invalid token")
        cn, o = peer_subject(context)
        if self.require_client_cert and cn is None:
            raise AuthError(
                grpc.StatusCode.UNAUTHENTICATED,
                "this server requires a client certificate with a subject CN mapped to an agency",
            )
        if cn is not None and (self._certs or self.require_client_cert):
            agency = self.cert_agency(cn, o)
            if agency is None:
                raise AuthError(
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"client certificate CN={cn!r} is not mapped to an agency in the auth file",
                )
            if agency != identity.agency:
                raise AuthError(
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"token agency {identity.agency!r} does not match the client certificate's"
                    f" agency {agency!r}",
                )
        return identity


def peer_subject(context: grpc.ServicerContext) -> tuple[str | None, str | None]:
    """(CN, O) of the verified client certificate, or (None, None) without mutual TLS."""
    try:
        auth = context.auth_context() or {}
    except Exception:
        return None, None
    cns = auth.get("x509_common_name") or []
    cn = cns[0].decode() if cns else None
    subject = (auth.get("x509_subject") or [b""])[0].decode("utf-8", "replace")
    return cn, _subject_field(subject, "O")


def _subject_field(subject: str, key: str) -> str | None:
    """One attribute of an RFC 2253 subject string such as ``CN=lab1,O=PD North``."""
    for part in re.split(r"(?<!\\),", subject):
        k, _, v = part.strip().partition("=")
        if k.strip().upper() == key:
            return v.strip().replace("\\,", ",")
    return None


@dataclass(frozen=True)
class TlsConfig:
    """Server TLS material (PEM files). ``client_ca`` enables verifying client certificates."""

    cert: Path
    key: Path
    client_ca: Path | None = None
    require_client_cert: bool = False

    def validate(self) -> None:
        _check_mutual(self.client_ca is not None, self.require_client_cert)
        for name, p in (("certificate", self.cert), ("key", self.key), ("CA", self.client_ca)):
            if p is not None and not Path(p).is_file():
                raise AuthConfigError(f"TLS {name} file not found: {p}")

    def server_credentials(self) -> grpc.ServerCredentials:
        self.validate()
        ca = Path(self.client_ca).read_bytes() if self.client_ca else None
        return grpc.ssl_server_credentials(
            [(Path(self.key).read_bytes(), Path(self.cert).read_bytes())],
            root_certificates=ca,
            require_client_auth=self.require_client_cert,
        )


def tls_from_options(
    cert: str | None, key: str | None, ca: str | None, require_client_cert: bool
) -> TlsConfig | None:
    """TLS config from CLI options, or None for plaintext; refuses inconsistent options."""
    _check_mutual(bool(ca), require_client_cert)
    if not cert and not key:
        if ca:
            raise AuthConfigError("--tls-ca needs --tls-cert and --tls-key (the server's own)")
        return None
    if not cert or not key:
        raise AuthConfigError("TLS needs both --tls-cert and --tls-key")
    cfg = TlsConfig(Path(cert), Path(key), Path(ca) if ca else None, require_client_cert)
    cfg.validate()
    return cfg


def _check_mutual(has_ca: bool, require_client_cert: bool) -> None:
    if require_client_cert and not has_ca:
        raise AuthConfigError(
            "--require-client-cert needs --tls-ca (the CA that signs client certificates);"
            " refusing to start without it"
        )
    if has_ca and not require_client_cert:
        # gRPC would never ask for a client certificate: the CA would silently do nothing
        raise AuthConfigError(
            "--tls-ca (the CA of client certificates) only works with --require-client-cert;"
            " add it for mutual TLS, or drop --tls-ca for server-only TLS"
        )


def check_tls_auth(tls: TlsConfig | None, auth: Authenticator) -> None:
    """Refuse TLS/auth combinations that would not do what they say; arm the cert check.

    Mutual TLS needs ``client_certs`` in the auth file (otherwise any certificate the CA signed
    would be accepted with any agency's token); ``client_certs`` without mutual TLS would never
    be checked.
    """
    mutual = tls is not None and tls.require_client_cert
    if tls is not None:
        tls.validate()
    if mutual and not auth.has_cert_mappings:
        raise AuthConfigError(
            "--require-client-cert needs 'client_certs' in the auth file (which certificate CN"
            " and O belong to which agency); refusing to accept any certificate for any agency"
        )
    if auth.has_cert_mappings and not mutual:
        raise AuthConfigError(
            "the auth file maps client certificates ('client_certs') but the server does not"
            " ask for them: add --tls-ca and --require-client-cert, or remove 'client_certs'"
        )
    auth.require_client_cert = mutual
