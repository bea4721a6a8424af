"""Several federated servers in one process, on loopback (the network demo and the tests).

Every server is a real one: its own data dir, store, audit log and key, tokens, sharing
policy, Matching port (plaintext, loopback) and Federation port (mutual TLS with certificates
from :mod:`server.federation_pki`). Only the process is shared.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .app import CatalogBackend, Server, create_server
from .audit import AuditLog, generate_key, load_key
from .auth import Authenticator, new_token_entry
from .federation import FederationNode
from .federation_config import FederationConfig
from .federation_pki import ServerPki, make_server_pki
from .policy import SharingPolicy


def free_port() -> int:
    """A port nobody listens on right now (for a peer that is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalServer:
    name: str
    root: Path
    pki: ServerPki
    agencies: list[str]
    token: dict[str, str] = field(default_factory=dict)  # agency -> an examiner's token
    catalog: Any = None
    audit: AuditLog | None = None
    node: FederationNode | None = None
    server: Server | None = None
    fed_port: int = 0
    address: str = ""

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def contact_agency(self) -> str:
        return f"NCP-{self.name}"

    def peer_entry(self, client_of: LocalServer, address: str | None = None) -> dict[str, Any]:
        """How ``client_of`` lists this server as a peer."""
        return {
            "name": self.name,
            "address": address or f"127.0.0.1:{self.fed_port}",
            "ca": str(self.pki.ca_cert),
            "cert": str(client_of.pki.client_cert),
            "key": str(client_of.pki.client_key),
            "identity": self.name,
        }

    def close(self) -> None:
        if self.server is not None:
            self.server.stop(0)
        if self.node is not None:
            self.node.close()
        if self.audit is not None:
            self.audit.close()
        if self.catalog is not None:
            self.catalog.close()


def prepare(root: Path, name: str, agencies: list[str]) -> LocalServer:
    """Certificates and a federation port number for one server (nothing running yet)."""
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    srv = LocalServer(name, d, make_server_pki(d / "pki", name), agencies)
    srv.fed_port = free_port()
    return srv


def start(
    srv: LocalServer,
    config: dict[str, Any],
    *,
    engine: Any = None,
    catalog_config: dict[str, Any] | None = None,
) -> LocalServer:
    """Open the store and start both ports with the federation ``config`` (a dict)."""
    from index.service import Catalog

    cfg_path = srv.root / "federation.json"
    cfg_path.write_text(json.dumps(config, indent=2))
    fed = FederationConfig.from_file(cfg_path)
    srv.catalog = Catalog.open(srv.data_dir, catalog_config, engine=engine)
    key_path = srv.root / "audit.key"
    if not key_path.exists():
        generate_key(key_path)
    srv.audit = AuditLog.in_dir(srv.data_dir, load_key(key_path, data_dir=srv.data_dir))
    everyone = [*srv.agencies, srv.contact_agency]
    # the national contact point sees every agency of its country; agencies see their own
    policy = SharingPolicy(
        {a: f"{srv.name}-{a}" for a in srv.agencies} | {srv.contact_agency: f"{srv.name}-ncp"},
        {f"{srv.name}-ncp": [f"{srv.name}-{a}" for a in srv.agencies]},
    )
    entries = []
    for agency in everyone:
        token, entry = new_token_entry(f"examiner-{agency}", agency, "examiner")
        srv.token[agency] = token
        entries.append(entry)
    srv.node = FederationNode(
        fed, srv.catalog, policy=policy, audit=srv.audit, data_dir=srv.data_dir
    )
    srv.server, port = create_server(
        CatalogBackend(srv.catalog),
        "127.0.0.1:0",
        auth=Authenticator.from_dict({"tokens": entries}),
        policy=policy,
        audit=srv.audit,
        federation=srv.node,
    )
    srv.server.start()
    srv.address = f"127.0.0.1:{port}"
    return srv


def base_config(srv: LocalServer) -> dict[str, Any]:
    """A federation config for ``srv`` without peers or agreements (add them)."""
    return {
        "name": srv.name,
        "contact_agency": srv.contact_agency,
        "listen": {
            "host": "127.0.0.1",
            "port": srv.fed_port,
            "cert": str(srv.pki.server_cert),
            "key": str(srv.pki.server_key),
        },
        "peer_timeout_s": 5,
        "peers": [],
        "agreements": [],
    }


def audit_records(srv: LocalServer) -> list[dict[str, Any]]:
    path = srv.data_dir / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
