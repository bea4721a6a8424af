"""Append-only, hash-chained audit log: one JSON line per call, allowed or refused.

Each record holds ``seq`` (1, 2, ...), ``time`` (RFC 3339 UTC), ``user``, ``agency``,
``method``, ``targets`` (casing/incident/decision ids), ``outcome`` ("OK" or a gRPC status
name), ``detail``, ``prev_hash`` (the previous record's hash; 64 zeros for the first) and
``hash`` = SHA-256 of the canonical JSON of every other field. Changing, deleting, inserting or
reordering a record breaks the chain, and :func:`verify` names the first bad record.

A side file ``audit.log.head`` holds the last (seq, hash) written, so cutting records off the
end is caught too (as long as the head file is not rewritten with them). Every write is
flushed and fsync'ed before the call returns.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
LOG_NAME = "audit.log"
HEAD_SUFFIX = ".head"


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of the record without its ``hash`` field."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(_canonical(body)).hexdigest()


class AuditLog:
    """Thread-safe appender; resumes the chain of an existing log."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.name + HEAD_SUFFIX)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._seq, self._prev = self._tail()
        self._fh = open(self.path, "ab")

    @classmethod
    def in_dir(cls, data_dir: str | Path) -> AuditLog:
        return cls(Path(data_dir) / LOG_NAME)

    def _tail(self) -> tuple[int, str]:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return 0, GENESIS
        last = None
        with open(self.path, "rb") as f:
            f.seek(max(0, self.path.stat().st_size - 65536))
            lines = [ln for ln in f.read().splitlines() if ln.strip()]
            if lines:
                last = lines[-1]
        try:
            rec = json.loads(last or b"")
            return int(rec["seq"]), str(rec["hash"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"audit log {self.path} ends with an unreadable record; run"
                " `ballistics audit verify` and keep the file as evidence before starting over"
            ) from e

    def append(
        self,
        *,
        user: str,
        agency: str,
        method: str,
        targets: Sequence[str] = (),
        outcome: str = "OK",
        detail: str = "",
    ) -> dict[str, Any]:
        """Write one record durably and return it."""
        with self._lock:
            rec: dict[str, Any] = {
                "seq": self._seq + 1,
                "time": datetime.now(UTC).isoformat(timespec="microseconds"),
                "user": user,
                "agency": agency,
                "method": method,
                "targets": [str(t) for t in targets if t],
                "outcome": outcome,
                "detail": detail[:500],
                "prev_hash": self._prev,
            }
            rec["hash"] = record_hash(rec)
            self._fh.write(_canonical(rec) + b"\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._seq, self._prev = rec["seq"], rec["hash"]
            tmp = self.head_path.with_name(self.head_path.name + ".tmp")
            tmp.write_text(json.dumps({"seq": self._seq, "hash": self._prev}) + "\n")
            os.replace(tmp, self.head_path)
            return rec

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()


def verify(path: str | Path) -> tuple[bool, int | None, str]:
    """Check the whole chain. Returns ``(ok, first_bad_seq, message)``.

    ``first_bad_seq`` is the sequence number (position, counting from 1) of the first record
    that fails, or None when the log is intact.
    """
    p = Path(path)
    if p.is_dir():
        p = p / LOG_NAME
    if not p.exists():
        return False, None, f"no audit log at {p}"
    prev = GENESIS
    n = 0
    with open(p, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            n += 1
            try:
                rec = json.loads(raw)
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
            except ValueError:
                return False, n, f"record {n} (line {lineno}) is not valid JSON"
            if rec.get("seq") != n:
                return (
                    False,
                    n,
                    f"record {n} (line {lineno}) has seq {rec.get('seq')!r}, expected {n}:"
                    " a record was deleted, inserted or moved",
                )
            if rec.get("prev_hash") != prev:
                return (
                    False,
                    n,
                    f"record {n} (line {lineno}) does not chain to the record before it:"
                    " a record was deleted, inserted, moved or changed",
                )
            if rec.get("hash") != record_hash(rec):
                return False, n, f"record {n} (line {lineno}) was changed after it was written"
            prev = rec["hash"]
    head = p.with_name(p.name + HEAD_SUFFIX)
    if head.exists():
        try:
            h = json.loads(head.read_text())
            hseq, hhash = int(h["seq"]), str(h["hash"])
        except (ValueError, KeyError, TypeError):
            return False, None, f"head file {head} is unreadable"
        if hseq > n:
            return (
                False,
                n + 1,
                f"the log ends at record {n} but {hseq} were written: records {n + 1}..{hseq}"
                " were cut off the end",
            )
        if hseq == n and hhash != prev:
            return False, n, f"record {n} (the last) does not match the head file"
    return True, None, f"audit log intact: {n} records, last hash {prev[:16]}"
