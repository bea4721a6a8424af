"""Shared helpers for the server tests: tokens, policies, and a running server on loopback.

(No tests here; the module is imported by the test_server_* files.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.app import Server, create_server
from server.audit import AuditLog, generate_key, load_key
from server.auth import Authenticator, new_token_entry, write_auth_file
from server.client import Client
from server.policy import SharingPolicy
from server.service import Backend, ServiceLimits

# north and south share both ways; east shares with nobody.
POLICY = {
    "agencies": {"PD-North": "north", "PD-South": "south", "SO-East": "east"},
    "jurisdictions": {"north": ["south"], "south": ["north"], "east": []},
}

USERS = {
    # name: (agency, role)
    "north_sub": ("PD-North", "submitter"),
    "north_exam": ("PD-North", "examiner"),
    "north_admin": ("PD-North", "admin"),
    "south_exam": ("PD-South", "examiner"),
    "south_admin": ("PD-South", "admin"),
    "east_exam": ("SO-East", "examiner"),
}


@dataclass
class Running:
    server: Server
    port: int
    tokens: dict[str, str]
    data_dir: Path
    audit: AuditLog
    backend: Backend
    key_file: Path | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, user: str | None, **kw: Any) -> Client:
        return Client(self.address, self.tokens[user] if user else None, **kw)


def audit_key(dir_: Path) -> tuple[Path, bytes]:
    """An audit key file in ``dir_`` (made on first use) and the key."""
    path = dir_ / "audit.key"
    if not path.exists():
        generate_key(path)
    return path, load_key(path)


def scratch_audit(tmp_path: Path) -> AuditLog:
    """An audit log with its own key, for tests that only need somewhere to write."""
    return AuditLog(tmp_path / "audit.log", audit_key(tmp_path)[1])


def make_tokens(dir_: Path) -> tuple[Path, dict[str, str]]:
    tokens, entries = {}, []
    for user, (agency, role) in USERS.items():
        tok, entry = new_token_entry(user, agency, role)
        tokens[user] = tok
        entries.append(entry)
    path = dir_ / "auth.json"
    write_auth_file(path, entries)
    return path, tokens


def write_policy(dir_: Path) -> Path:
    path = dir_ / "policy.json"
    path.write_text(json.dumps(POLICY))
    return path


@contextmanager
def running_server(
    backend: Backend,
    data_dir: Path,
    *,
    limits: ServiceLimits | None = None,
    **kw: Any,
) -> Iterator[Running]:
    data_dir.mkdir(parents=True, exist_ok=True)
    auth_path, tokens = make_tokens(data_dir)
    key_file, key = audit_key(data_dir.parent)  # outside the data dir, as `serve` requires
    audit = AuditLog.in_dir(data_dir, key)
    server, port = create_server(
        backend,
        "127.0.0.1:0",
        auth=Authenticator.from_file(auth_path),
        policy=SharingPolicy.from_file(write_policy(data_dir)),
        audit=audit,
        limits=limits or ServiceLimits(spool_dir=str(data_dir)),
        **kw,
    )
    server.start()
    try:
        yield Running(server, port, tokens, data_dir, audit, backend, key_file)
    finally:
        server.stop(grace=2)
        audit.close()


@contextmanager
def catalog_server(tmp_path: Path, engine: Any = None) -> Iterator[tuple[Running, Any]]:
    """The server over the real store (``index.Catalog``: SQLite + FAISS) in
    ``tmp_path/data``, with ``engine`` (default ``index.testing.FakeEngine``); yields
    (server, catalog)."""
    from index.service import Catalog
    from index.testing import FakeEngine
    from server.app import CatalogBackend

    catalog = Catalog.open(tmp_path / "data", engine=engine or FakeEngine())
    try:
        with running_server(
            CatalogBackend(catalog),
            tmp_path / "data",
            limits=ServiceLimits(spool_dir=str(tmp_path)),
        ) as srv:
            yield srv, catalog
    finally:
        catalog.close()


def test_search_response_says_which_candidates_were_not_compared() -> None:
    from server.commands_remote import _fmt_candidates
    from server.service import CandidateRec, SearchResult, search_to_proto

    r = SearchResult(
        combined=[
            CandidateRec("a", "combined", score=1.4, cmc=12, screen_score=0.8),
            CandidateRec("b", "combined", score=0.0, screen_score=0.1, rescored=False),
        ],
        scored=1,
        screened_out=1,
    )
    pb = search_to_proto(r)
    assert pb.screened_out == 1
    first, second = pb.combined.candidates
    assert first.rescored and first.screen_score == 0.8
    assert not second.rescored and second.screen_score == 0.1
    text = "\n".join(_fmt_candidates(pb))
    b_line = next(line for line in text.splitlines() if " b " in line)
    assert "not compared" in b_line and "0.000" not in b_line
    assert "1 candidates screened out" in text
