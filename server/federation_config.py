"""The federation config: this server's name, its national contact point, peers and agreements.

A JSON file passed to ``ballistics serve --federation FILE`` (paths relative to the file)::

    {
      "name": "A",                       # this server (country or region); its certificates' CN
      "contact_agency": "NCP-A",         # the agency whose queue receives requests from abroad
      "listen": {"host": "127.0.0.1", "port": 50071,
                 "cert": "pki/A-server.pem", "key": "pki/A-server.key"},
      "peer_timeout_s": 10,              # longest wait for one peer in a federated search
      "peers": [
        {"name": "B", "address": "127.0.0.1:50072",
         "ca": "pki/B-ca.pem",           # B's CA: verifies B's server and client certificates
         "cert": "pki/A-client-for-B.pem", "key": "pki/A-client-for-B.key",  # what A shows B
         "identity": "B"}                # the CN B's certificates must carry
      ],
      "agreements": [
        {"id": "AB-2025", "peer": "B",
         "send_agencies": ["PD-A"],      # A's agencies that may send requests to B
         "accept_requests": true,        # B may send requests to A under this agreement
         "calibres": ["9mm"],            # [] or absent: any calibre
         "date_from": "2020-01-01", "date_to": "2030-12-31",  # incident dates covered
         "release": "pictures",          # what the answering side releases (see LEVELS)
         "send": "prepared",             # what A sends: "prepared" (descriptors+surface) or "scan"
         "shared_agencies": ["PD-A"]}    # optional: A's agencies whose casings B may search
      ]
    }

An agreement is one document kept by both servers under the same id; each side enforces its
own copy, so what crosses is what *both* copies allow: the requester sends only under an
agreement whose ``send_agencies`` lists the asking agency, and the receiver answers only under
its copy with the calling peer that ``accept_requests``, at its own ``release`` level, inside
its calibres and dates, and only from casings its national contact point may see under the
sharing policy (narrowed by ``shared_agencies``). No agreement, no request, in both directions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from .jsonfile import read_json

#: What an answering server may release, each level including the ones before it.
LEVELS = ("scores", "case_refs", "pictures", "surface")
SEND_KINDS = ("prepared", "scan")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class FederationConfigError(ValueError):
    """The federation config is unusable; the message names the field and the fix."""


def level_rank(level: str) -> int:
    """0 for "scores" ... 3 for "surface"."""
    return LEVELS.index(level)


@dataclass(frozen=True)
class Peer:
    name: str
    address: str
    ca: Path
    cert: Path
    key: Path
    identity: str


@dataclass(frozen=True)
class Agreement:
    id: str
    peer: str
    send_agencies: frozenset[str]
    accept_requests: bool
    calibres: frozenset[str]
    date_from: str | None
    date_to: str | None
    release: str
    send: str = "prepared"
    shared_agencies: frozenset[str] | None = None

    def allows(self, level: str) -> bool:
        """Whether this agreement releases ``level`` (a LEVELS name)."""
        return level_rank(self.release) >= level_rank(level)

    def covers_calibre(self, calibre: str) -> bool:
        return not self.calibres or calibre in self.calibres

    def covers_date(self, day: str) -> bool:
        if self.date_from is None and self.date_to is None:
            return True
        if not day:
            return False  # a dated agreement covers dated incidents only
        return (self.date_from is None or day >= self.date_from) and (
            self.date_to is None or day <= self.date_to
        )

    def scope_text(self) -> str:
        parts = [f"release {self.release}"]
        if self.calibres:
            parts.append("calibres " + ", ".join(sorted(self.calibres)))
        if self.date_from or self.date_to:
            parts.append(f"incidents {self.date_from or '...'} to {self.date_to or '...'}")
        return "; ".join(parts)


@dataclass(frozen=True)
class FederationConfig:
    name: str
    contact_agency: str
    listen_host: str
    listen_port: int
    cert: Path
    key: Path
    peers: dict[str, Peer]
    agreements: dict[str, Agreement]
    peer_timeout_s: float = 10.0

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path) -> FederationConfig:
        p = Path(path)
        doc = read_json(p, FederationConfigError, "federation config")
        return cls.from_dict(doc, base=p.parent, source=str(p))

    @classmethod
    def from_dict(
        cls, doc: Any, *, base: Path | None = None, source: str = "federation config"
    ) -> FederationConfig:
        base = base or Path(".")

        def fail(msg: str) -> FederationConfigError:
            return FederationConfigError(f"{source}: {msg}")

        if not isinstance(doc, dict):
            raise fail("expected an object: name, contact_agency, listen, peers, agreements")
        unknown = set(doc) - {
            "name",
            "contact_agency",
            "listen",
            "peers",
            "agreements",
            "peer_timeout_s",
        }
        if unknown:
            raise fail(f"unknown keys {sorted(unknown)}")
        name = _name(doc.get("name"), "name", fail)
        contact = doc.get("contact_agency")
        if not isinstance(contact, str) or not contact.strip():
            raise fail(
                "'contact_agency' must name the agency (of this server) whose lead queue"
                " receives requests from peers"
            )
        listen = doc.get("listen")
        if not isinstance(listen, dict):
            raise fail("'listen' must be an object {host, port, cert, key} (the federation port)")
        port = listen.get("port")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port < 65536:
            raise fail("listen.port must be an integer 0..65535 (0: any free port)")
        host = str(listen.get("host") or "127.0.0.1")
        cert = _file(listen.get("cert"), "listen.cert", base, fail)
        key = _file(listen.get("key"), "listen.key", base, fail)
        timeout = doc.get("peer_timeout_s", 10.0)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise fail("peer_timeout_s must be a positive number of seconds")

        peers: dict[str, Peer] = {}
        raw_peers = doc.get("peers", [])
        if not isinstance(raw_peers, list):
            raise fail("'peers' must be a list of objects")
        for i, rp in enumerate(raw_peers):
            where = f"peers[{i}]"
            if not isinstance(rp, dict):
                raise fail(f"{where} must be an object")
            pname = _name(rp.get("name"), f"{where}.name", fail)
            if pname == name:
                raise fail(f"{where}: a server cannot be its own peer ({pname!r})")
            if pname in peers:
                raise fail(f"{where}: peer {pname!r} is listed twice")
            address = rp.get("address")
            if not isinstance(address, str) or ":" not in address:
                raise fail(f"{where}.address must be 'host:port'")
            identity = rp.get("identity")
            if not isinstance(identity, str) or not identity:
                raise fail(
                    f"{where}.identity must be the CN the peer's certificates carry"
                    " (usually its name)"
                )
            peers[pname] = Peer(
                pname,
                address,
                _file(rp.get("ca"), f"{where}.ca", base, fail),
                _file(rp.get("cert"), f"{where}.cert", base, fail),
                _file(rp.get("key"), f"{where}.key", base, fail),
                identity,
            )
        identities = [p.identity for p in peers.values()]
        if len(set(identities)) != len(identities):
            raise fail("two peers expect the same certificate identity; each needs its own CN")

        agreements: dict[str, Agreement] = {}
        raw_ag = doc.get("agreements", [])
        if not isinstance(raw_ag, list):
            raise fail("'agreements' must be a list of objects")
        for i, ra in enumerate(raw_ag):
            ag = _agreement(ra, f"agreements[{i}]", peers, fail)
            if ag.id in agreements:
                raise fail(f"agreements[{i}]: agreement id {ag.id!r} is used twice")
            agreements[ag.id] = ag
        return cls(name, contact.strip(), host, port, cert, key, peers, agreements, float(timeout))

    # -- questions ------------------------------------------------------------------------
    @property
    def client_cas(self) -> bytes:
        """Every peer's CA (PEM, concatenated): the trust of the federation port."""
        return b"".join(p.ca.read_bytes() for p in self.peers.values())

    def outgoing(self, peer: str, agency: str) -> list[Agreement]:
        """Agreements under which ``agency`` may send requests to ``peer`` (id order)."""
        return [
            a
            for _, a in sorted(self.agreements.items())
            if a.peer == peer and agency in a.send_agencies
        ]

    def incoming(self, peer: str, agreement_id: str) -> Agreement | None:
        """This server's copy of ``agreement_id`` with ``peer``, if it accepts requests."""
        a = self.agreements.get(agreement_id)
        if a is None or a.peer != peer or not a.accept_requests:
            return None
        return a

    def peer_by_identity(self, cn: str) -> Peer | None:
        for p in self.peers.values():
            if p.identity == cn:
                return p
        return None

    def check_credentials(self) -> None:
        """Read every PEM file: certificates parse, keys are unencrypted and match their
        certificate. Raises :class:`FederationConfigError` naming the file (gRPC itself only
        says "failed to bind" for a bad listen pair and fails a bad peer pair at first call).
        """
        fail = FederationConfigError
        _pem_pair(self.cert, self.key, "listen", fail)
        for p in self.peers.values():
            _pem_certs(p.ca, f"peer {p.name}: ca", fail)
            _pem_pair(p.cert, p.key, f"peer {p.name}", fail)


def _name(value: Any, what: str, fail: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise fail(
            f"'{what}' must be 1-64 characters: letters, digits, '_', '.', '-' (got {value!r})"
        )
    return value


def _file(value: Any, what: str, base: Path, fail: Any) -> Path:
    if not isinstance(value, str) or not value:
        raise fail(f"'{what}' must be a file path (PEM)")
    p = Path(value)
    if not p.is_absolute():
        p = base / p
    if not p.is_file():
        raise fail(f"'{what}': no such file {p}")
    return p


def _pem_certs(path: Path, what: str, fail: Any) -> list[Any]:
    """The X.509 certificates of a PEM file (at least one)."""
    from cryptography import x509

    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        raise fail(
            f"{what}: {path} is not a PEM certificate file (-----BEGIN CERTIFICATE-----)"
        ) from None
    return list(certs)


def _pem_pair(cert: Path, key: Path, what: str, fail: Any) -> None:
    """``cert`` (PEM) and ``key`` (unencrypted PEM private key) belong together."""
    from cryptography.hazmat.primitives import serialization

    first = _pem_certs(cert, f"{what}.cert", fail)[0]
    try:
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:  # TypeError: encrypted key
        raise fail(f"{what}.key: {key} is not an unencrypted PEM private key ({e})") from None
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(der, spki) != first.public_key().public_bytes(der, spki):
        raise fail(
            f"{what}: the key {key} does not belong to the certificate {cert}"
            " (give the key the certificate was issued for)"
        )


def _strings(value: Any, what: str, fail: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise fail(f"'{what}' must be a list of non-empty strings")
    return frozenset(value)


def _day(value: Any, what: str, fail: Any) -> str | None:
    if value in (None, ""):
        return None
    try:
        return date.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise fail(f"'{what}' must be a date YYYY-MM-DD (got {value!r})") from None


def _agreement(ra: Any, where: str, peers: dict[str, Peer], fail: Any) -> Agreement:
    if not isinstance(ra, dict):
        raise fail(f"{where} must be an object")
    known = {
        "id",
        "peer",
        "send_agencies",
        "accept_requests",
        "calibres",
        "date_from",
        "date_to",
        "release",
        "send",
        "shared_agencies",
    }
    unknown = set(ra) - known
    if unknown:
        raise fail(f"{where}: unknown keys {sorted(unknown)}")
    ag_id = _name(ra.get("id"), f"{where}.id", fail)
    peer = ra.get("peer")
    if peer not in peers:
        raise fail(
            f"{where} ({ag_id}): peer {peer!r} is not in 'peers' ({', '.join(sorted(peers))})"
        )
    release = ra.get("release")
    if release not in LEVELS:
        raise fail(f"{where} ({ag_id}): 'release' must be one of {LEVELS} (got {release!r})")
    send = ra.get("send", "prepared")
    if send not in SEND_KINDS:
        raise fail(f"{where} ({ag_id}): 'send' must be one of {SEND_KINDS} (got {send!r})")
    accept = ra.get("accept_requests", True)
    if not isinstance(accept, bool):
        raise fail(f"{where} ({ag_id}): 'accept_requests' must be true or false")
    if "send_agencies" not in ra:
        raise fail(
            f"{where} ({ag_id}): 'send_agencies' is required: the agencies of this server that"
            " may send requests to the peer ([] for none)"
        )
    d_from = _day(ra.get("date_from"), f"{where}.date_from", fail)
    d_to = _day(ra.get("date_to"), f"{where}.date_to", fail)
    if d_from and d_to and d_from > d_to:
        raise fail(f"{where} ({ag_id}): date_from {d_from} is after date_to {d_to}")
    shared = ra.get("shared_agencies")
    return Agreement(
        id=ag_id,
        peer=str(peer),
        send_agencies=_strings(ra.get("send_agencies"), f"{where}.send_agencies", fail),
        accept_requests=accept,
        calibres=_strings(ra.get("calibres"), f"{where}.calibres", fail),
        date_from=d_from,
        date_to=d_to,
        release=str(release),
        send=str(send),
        shared_agencies=None
        if shared is None
        else _strings(shared, f"{where}.shared_agencies", fail),
    )


def agreement_dict(a: Agreement) -> dict[str, Any]:
    """An agreement as written in the config (for the demo and tests that write configs)."""
    out: dict[str, Any] = {
        "id": a.id,
        "peer": a.peer,
        "send_agencies": sorted(a.send_agencies),
        "accept_requests": a.accept_requests,
        "calibres": sorted(a.calibres),
        "release": a.release,
        "send": a.send,
    }
    if a.date_from:
        out["date_from"] = a.date_from
    if a.date_to:
        out["date_to"] = a.date_to
    if a.shared_agencies is not None:
        out["shared_agencies"] = sorted(a.shared_agencies)
    return out
