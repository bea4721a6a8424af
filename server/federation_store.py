"""What a federated server remembers, in ``<data_dir>/federation.sqlite`` (apart from the index).

* ``refs``: the opaque references this server released, per peer (ref -> casing id). A ref is
  ``HMAC(key, peer NUL casing_id)`` with a random key kept here, so the same casing has a
  different ref for every peer and a ref says nothing about the id.
* ``incoming``: the national contact point's queue of requests from abroad (one row per
  Correlate call: who asked, under which agreement, which local casings came back, with scores).
  Chosen over the index's leads table because a lead pairs two *local* casings; here one side
  is abroad and known only by the request. ``ballistics federation inbox`` lists it.
* ``foreign``: candidates peers released to this server's agencies (peer, ref, agreement,
  agency), so a Decide or Compare on a foreign candidate is checked against what was received.
* ``hits``: confirmed hits across a border, on both sides (``side`` "requester" or "holder"),
  keyed by the hit id: recording the same hit twice records it once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DB_NAME = "federation.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS refs (
  ref TEXT PRIMARY KEY, casing_id TEXT NOT NULL, peer TEXT NOT NULL,
  agreement_id TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS incoming (
  id INTEGER PRIMARY KEY, peer TEXT NOT NULL, request_id TEXT NOT NULL,
  agreement_id TEXT NOT NULL, requesting_agency TEXT NOT NULL, contact_agency TEXT NOT NULL,
  calibre TEXT, received_at TEXT NOT NULL, candidates_json TEXT NOT NULL,
  state TEXT NOT NULL DEFAULT 'new', UNIQUE (peer, request_id));
CREATE TABLE IF NOT EXISTS foreign_candidates (
  peer TEXT NOT NULL, ref TEXT NOT NULL, agency TEXT NOT NULL, agreement_id TEXT NOT NULL,
  release TEXT NOT NULL, request_id TEXT NOT NULL, score REAL, seen_at TEXT NOT NULL,
  PRIMARY KEY (peer, ref, agency));
CREATE TABLE IF NOT EXISTS hits (
  hit_id TEXT PRIMARY KEY, side TEXT NOT NULL, peer TEXT NOT NULL, agreement_id TEXT NOT NULL,
  local_casing_id TEXT NOT NULL, foreign_ref TEXT NOT NULL, requesting_agency TEXT NOT NULL,
  examiner TEXT NOT NULL, comment TEXT NOT NULL, confirmed_at TEXT NOT NULL,
  recorded_at TEXT NOT NULL, notified_at TEXT);
"""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Hit:
    hit_id: str
    side: str
    peer: str
    agreement_id: str
    local_casing_id: str
    foreign_ref: str
    requesting_agency: str
    examiner: str
    comment: str
    confirmed_at: str
    recorded_at: str
    notified_at: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ForeignCandidateRec:
    peer: str
    ref: str
    agency: str
    agreement_id: str
    release: str
    request_id: str
    score: float | None


class FederationStore:
    """Thread-safe (one connection, one lock: the tables are small and writes are rare)."""

    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / DB_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._con = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=FULL")
        self._con.executescript(_SCHEMA)
        row = self._con.execute("SELECT value FROM meta WHERE key = 'ref_key'").fetchone()
        if row is None:
            self._con.execute(
                "INSERT OR IGNORE INTO meta VALUES ('ref_key', ?)", (secrets.token_hex(32),)
            )
            row = self._con.execute("SELECT value FROM meta WHERE key = 'ref_key'").fetchone()
        self._ref_key = bytes.fromhex(row[0])

    def close(self) -> None:
        with self._lock:
            self._con.close()

    # -- references released to peers ------------------------------------------------------
    def ref_for(self, casing_id: str, peer: str) -> str:
        """The opaque reference of a casing for one peer (stable; 32 hex digits)."""
        mac = hmac.new(self._ref_key, f"{peer}\0{casing_id}".encode(), hashlib.sha256)
        return mac.hexdigest()[:32]

    def release_refs(self, peer: str, agreement_id: str, casing_ids: list[str]) -> list[str]:
        refs = [self.ref_for(c, peer) for c in casing_ids]
        t = now()
        with self._lock:
            self._con.executemany(
                "INSERT OR IGNORE INTO refs VALUES (?, ?, ?, ?, ?)",
                [(r, c, peer, agreement_id, t) for r, c in zip(refs, casing_ids, strict=True)],
            )
        return refs

    def casing_of_ref(self, ref: str, peer: str) -> str | None:
        """The casing behind a ref released to ``peer`` (None: unknown, or released to another)."""
        with self._lock:
            row = self._con.execute(
                "SELECT casing_id FROM refs WHERE ref = ? AND peer = ?", (ref, peer)
            ).fetchone()
        return None if row is None else str(row[0])

    # -- the contact point's queue ----------------------------------------------------------
    def record_incoming(
        self,
        *,
        peer: str,
        request_id: str,
        agreement_id: str,
        requesting_agency: str,
        contact_agency: str,
        calibre: str,
        candidates: list[dict[str, Any]],
    ) -> None:
        with self._lock:
            self._con.execute(
                "INSERT OR REPLACE INTO incoming (peer, request_id, agreement_id,"
                " requesting_agency, contact_agency, calibre, received_at, candidates_json)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    peer,
                    request_id,
                    agreement_id,
                    requesting_agency,
                    contact_agency,
                    calibre,
                    now(),
                    json.dumps(candidates, sort_keys=True),
                ),
            )

    def incoming(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._con.execute(
                "SELECT peer, request_id, agreement_id, requesting_agency, contact_agency,"
                " calibre, received_at, candidates_json, state FROM incoming"
                " ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        keys = (
            "peer",
            "request_id",
            "agreement_id",
            "requesting_agency",
            "contact_agency",
            "calibre",
            "received_at",
            "candidates",
            "state",
        )
        out = []
        for r in rows:
            d = dict(zip(keys, r, strict=True))
            d["candidates"] = json.loads(d["candidates"])
            out.append(d)
        return out

    def mark_incoming_hit(self, peer: str, casing_id: str) -> None:
        """Requests from ``peer`` that returned ``casing_id`` become 'confirmed'."""
        with self._lock:
            self._con.execute(
                "UPDATE incoming SET state = 'confirmed' WHERE peer = ? AND candidates_json LIKE ?",
                (peer, f'%"casing_id": "{casing_id}"%'),
            )

    # -- what peers released to this server -------------------------------------------------
    def remember_foreign(self, recs: list[ForeignCandidateRec]) -> None:
        t = now()
        with self._lock:
            self._con.executemany(
                "INSERT OR REPLACE INTO foreign_candidates VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (r.peer, r.ref, r.agency, r.agreement_id, r.release, r.request_id, r.score, t)
                    for r in recs
                ],
            )

    def foreign(self, peer: str, ref: str, agencies: set[str]) -> ForeignCandidateRec | None:
        """A candidate ``peer`` released to one of ``agencies`` (None: never released to them)."""
        if not agencies:
            return None
        marks = ",".join("?" * len(agencies))
        with self._lock:
            row = self._con.execute(
                "SELECT peer, ref, agency, agreement_id, release, request_id, score FROM"
                f" foreign_candidates WHERE peer = ? AND ref = ? AND agency IN ({marks})"
                " ORDER BY seen_at DESC LIMIT 1",
                (peer, ref, *sorted(agencies)),
            ).fetchone()
        return None if row is None else ForeignCandidateRec(*row)

    # -- hits -------------------------------------------------------------------------------
    def record_hit(self, hit: Hit) -> tuple[Hit, bool]:
        """Record a hit once; returns (the stored hit, whether this call recorded it)."""
        with self._lock:
            cur = self._con.execute(
                "INSERT OR IGNORE INTO hits VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                tuple(hit.__dict__.values()),
            )
            new = cur.rowcount == 1
            row = self._con.execute("SELECT * FROM hits WHERE hit_id = ?", (hit.hit_id,)).fetchone()
        return Hit(*row), new

    def mark_notified(self, hit_id: str) -> None:
        with self._lock:
            self._con.execute(
                "UPDATE hits SET notified_at = ? WHERE hit_id = ? AND notified_at IS NULL",
                (now(), hit_id),
            )

    def hits(self) -> list[Hit]:
        with self._lock:
            rows = self._con.execute("SELECT * FROM hits ORDER BY recorded_at, hit_id").fetchall()
        return [Hit(*r) for r in rows]
