"""Append-only, keyed (HMAC-SHA256) audit log: one JSON line per call, allowed or refused.

Each record holds ``v`` (2), ``seq`` (1, 2, ...), ``time`` (RFC 3339 UTC), ``user``,
``agency``, ``peer`` (the client address), ``method``, ``targets`` (casing/incident/decision
ids), ``outcome`` ("OK", "STARTED", or a gRPC status name), ``detail``, ``prev_mac`` (the
previous record's MAC; 64 zeros for the first) and ``mac`` = HMAC-SHA256 under the audit key of
the canonical JSON of every other field.

The key lives *outside* the data directory (``--audit-key-file``, default
:func:`default_key_path`), so someone who can write the data directory but not the key cannot
re-chain the log after deleting, changing, inserting or appending records.

A signed head file ``audit.log.head`` (count and last MAC, with their own MAC) anchors the
end: cutting records off the end, or cutting them and rewriting the head, is detected. The log
may hold *more* records than the head (a crash between the log fsync and the head update), but
the head's record must then be in the log unchanged. Rolling both the log and the head back to
an older copy of both is not detectable locally: ship the head (``audit verify --json``)
off-host if that matters.

Every field is bounded (:data:`MAX_FIELD_CHARS`; longer values are replaced by their length and
a SHA-256 prefix), so one call cannot write a record the start-up check chokes on.

Logs written before keying (records with ``hash`` instead of ``mac``) are an unkeyed prefix,
checked as the old SHA-256 chain. A log of *only* such records fails verification by default
(anyone can write one); ``serve --accept-unkeyed-audit-log`` accepts it once and seals it with a
keyed record chained to the last of them, after which rewriting the prefix breaks that record.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
LOG_NAME = "audit.log"
HEAD_SUFFIX = ".head"
VERSION = 2
KEY_ENV = "BALLISTICS_AUDIT_KEY_FILE"
KEY_BYTES = 32
MAX_FIELD_CHARS = 256
MAX_DETAIL_CHARS = 500
MAX_TARGETS = 16


class AuditKeyError(ValueError):
    """The audit key is missing or unusable; the message says how to fix it."""


class AuditIntegrityError(RuntimeError):
    """The audit log fails verification; the server must not append to it."""


# ------------------------------------------------------------------------- the key


def default_key_path() -> Path:
    """Where the audit key is looked for without ``--audit-key-file``.

    ``$BALLISTICS_AUDIT_KEY_FILE`` if set, else ``$XDG_CONFIG_HOME/ballistics/audit.key``
    (``~/.config/ballistics/audit.key``): outside any data directory.
    """
    env = os.environ.get(KEY_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ballistics" / "audit.key"


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def generate_key(path: str | Path) -> Path:
    """Write a new random key (64 hex digits, mode 0600); refuses to overwrite one."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AuditKeyError(
            f"{p} already exists; an audit key is never overwritten (the log written with it"
            " could no longer be verified)"
        ) from None
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(KEY_BYTES) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return p


def load_key(path: str | Path | None = None, *, data_dir: str | Path | None = None) -> bytes:
    """Read the audit key; ``data_dir`` (when given) must not contain it."""
    p = Path(path) if path else default_key_path()
    if data_dir is not None and _inside(p, Path(data_dir)):
        raise AuditKeyError(
            f"audit key {p} is inside the data directory {data_dir}; keep it elsewhere"
            " (whoever can rewrite the log must not be able to read the key)"
        )
    if not p.is_file():
        raise AuditKeyError(
            f"no audit key at {p}; create one with `ballistics audit keygen --audit-key-file"
            f" {p}` (outside the data directory; back it up: without it the log cannot be"
            " verified) or pass --audit-key-file"
        )
    text = p.read_text(encoding="ascii", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise AuditKeyError(
            f"audit key {p} is not at least 32 hex digits; make one with `ballistics audit keygen`"
        )
    return key


# ------------------------------------------------------------------------- records


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def bounded(value: Any, limit: int = MAX_FIELD_CHARS) -> str:
    """``value`` as a string of at most about ``limit`` characters.

    A longer value becomes ``<N chars sha256:XXXXXXXXXXXXXXXX>``: what it was can still be
    matched against a suspect value, but it cannot bloat the log.
    """
    s = str(value)
    if len(s) <= limit:
        return s
    digest = hashlib.sha256(s.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"<{len(s)} chars sha256:{digest}>"


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 of a legacy (unkeyed) record without its ``hash`` field."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(_canonical(body)).hexdigest()


def record_mac(key: bytes, record: dict[str, Any]) -> str:
    """HMAC-SHA256 over the canonical JSON of the record without its ``mac`` field."""
    body = {k: v for k, v in record.items() if k != "mac"}
    return hmac.new(key, b"record\x00" + _canonical(body), hashlib.sha256).hexdigest()


def head_mac(key: bytes, seq: int, mac: str) -> str:
    return hmac.new(
        key, b"head\x00" + _canonical({"seq": seq, "mac": mac}), hashlib.sha256
    ).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    # No directory fsync: a head lost in a crash is only stale, and verify accepts a log
    # longer than its head (the head's own record must still match).
    os.replace(tmp, path)


# ------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class Verdict:
    """What :func:`verify` found. ``first_bad_seq`` is None when the log is intact."""

    ok: bool
    first_bad_seq: int | None
    message: str
    count: int = 0
    last_mac: str = GENESIS
    legacy: int = 0


def _bad(seq: int | None, message: str, n: int = 0) -> Verdict:
    return Verdict(False, seq, message, n)


def verify(path: str | Path, key: bytes, *, accept_unkeyed: bool = False) -> Verdict:
    """Check the whole log and its signed head against ``key``.

    ``path`` is the log or the data directory holding it. Reads line by line (no record-size
    limit). A log holding only unkeyed (pre-keying) records fails unless ``accept_unkeyed``.
    """
    p = Path(path)
    if p.is_dir():
        p = p / LOG_NAME
    head = p.with_name(p.name + HEAD_SUFFIX)
    if not p.exists():
        if head.exists():
            return _bad(1, f"the audit log {p} is missing but its head file {head} exists")
        return _bad(None, f"no audit log at {p}")
    prev = GENESIS
    n = legacy = 0
    macs: dict[int, str] = {}
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
                return _bad(n, f"record {n} (line {lineno}) is not valid JSON", n)
            if rec.get("seq") != n:
                return _bad(
                    n,
                    f"record {n} (line {lineno}) has seq {bounded(rec.get('seq'), 32)}, expected"
                    f" {n}: a record was deleted, inserted or moved",
                    n,
                )
            if "mac" in rec:
                if rec.get("prev_mac") != prev:
                    return _bad(
                        n,
                        f"record {n} (line {lineno}) does not chain to the record before it:"
                        " a record was deleted, inserted, moved or changed",
                        n,
                    )
                if not hmac.compare_digest(str(rec["mac"]), record_mac(key, rec)):
                    return _bad(
                        n,
                        f"record {n} (line {lineno}) fails its MAC: it was changed or forged"
                        " (or the audit key is not the one the log was written with)",
                        n,
                    )
                prev = str(rec["mac"])
            elif "hash" in rec:  # written before keying: only a prefix of such records is valid
                if n != legacy + 1:
                    return _bad(
                        n,
                        f"record {n} (line {lineno}) is an unkeyed record after keyed ones:"
                        " it was forged",
                        n,
                    )
                if rec.get("prev_hash") != prev or rec.get("hash") != record_hash(rec):
                    return _bad(n, f"record {n} (line {lineno}) was changed or does not chain", n)
                legacy += 1
                prev = str(rec["hash"])
            else:
                return _bad(n, f"record {n} (line {lineno}) has neither a mac nor a hash", n)
            macs[n] = prev
    legacy_note = (
        f" ({legacy} written before keying, not protected against rewriting)" if legacy else ""
    )
    if legacy and legacy == n and not accept_unkeyed:
        return _bad(
            None,
            f"all {n} records are unkeyed: written before the audit log was keyed, or rewritten"
            " by someone without the key. If it predates keying, start the server once with"
            " --accept-unkeyed-audit-log to seal it",
            n,
        )
    if not head.exists():
        if n > legacy:
            return _bad(
                None, f"the head file {head} is missing: the end of the log cannot be checked", n
            )
        return Verdict(True, None, f"audit log intact: {n} records{legacy_note}", n, prev, legacy)
    try:
        h = json.loads(head.read_text())
        hseq, hlast = int(h["seq"]), str(h["mac"] if "mac" in h else h["hash"])
        hsig = h.get("head_mac")
    except (ValueError, KeyError, TypeError):
        return _bad(None, f"head file {head} is unreadable", n)
    if hsig is None:
        if n > legacy:
            return _bad(None, f"head file {head} is not signed but the log has keyed records", n)
    elif not hmac.compare_digest(str(hsig), head_mac(key, hseq, hlast)):
        return _bad(
            None,
            f"head file {head} fails its MAC: it was rewritten (or the key is not the log's)",
            n,
        )
    if hseq > n:
        return _bad(
            n + 1,
            f"the log ends at record {n} but {hseq} were written: records {n + 1}..{hseq}"
            " were cut off the end",
            n,
        )
    if hseq and macs.get(hseq) != hlast:
        return _bad(hseq, f"record {hseq} does not match the head file", n)
    return Verdict(
        True,
        None,
        f"audit log intact: {n} records{legacy_note}, last mac {prev[:16]}",
        n,
        prev,
        legacy,
    )


# ------------------------------------------------------------------------- the appender


class AuditLog:
    """Thread-safe appender. Opening verifies the existing log and refuses a broken one.

    Raises :class:`AuditIntegrityError` (message from :func:`verify`) instead of appending to a
    log that fails verification.
    """

    def __init__(self, path: str | Path, key: bytes, *, accept_unkeyed: bool = False) -> None:
        if not key:
            raise AuditKeyError("an audit key is required (see load_key)")
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.name + HEAD_SUFFIX)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._key = key
        self._lock = threading.Lock()
        if self.path.exists() or self.head_path.exists():
            v = verify(self.path, key, accept_unkeyed=accept_unkeyed)
            if not v.ok:
                raise AuditIntegrityError(
                    f"audit log {self.path} fails verification: {v.message}. Keep the file as"
                    " evidence; the server will not append to a broken log"
                )
            self._seq, self._prev = v.count, v.last_mac
        else:
            self._seq, self._prev = 0, GENESIS
        self._fh = open(self.path, "ab")
        if self._seq and v.legacy == self._seq:  # seal the unkeyed prefix with a keyed record
            self.append(
                user="",
                agency="",
                method="AuditKeyed",
                outcome="OK",
                detail=f"{v.legacy} earlier records were written before keying",
            )

    @classmethod
    def in_dir(cls, data_dir: str | Path, key: bytes, *, accept_unkeyed: bool = False) -> AuditLog:
        return cls(Path(data_dir) / LOG_NAME, key, accept_unkeyed=accept_unkeyed)

    @property
    def count(self) -> int:
        return self._seq

    def append(
        self,
        *,
        user: str,
        agency: str,
        method: str,
        targets: Sequence[str] = (),
        outcome: str = "OK",
        detail: str = "",
        peer: str = "",
    ) -> dict[str, Any]:
        """Write one record durably and return it (every field bounded)."""
        kept = [bounded(t) for t in targets if t]
        if len(kept) > MAX_TARGETS:
            kept = [*kept[: MAX_TARGETS - 1], f"<{len(kept) - MAX_TARGETS + 1} more>"]
        with self._lock:
            if self._fh.closed:
                raise OSError("audit log is closed")
            rec: dict[str, Any] = {
                "v": VERSION,
                "seq": self._seq + 1,
                "time": datetime.now(UTC).isoformat(timespec="microseconds"),
                "user": bounded(user),
                "agency": bounded(agency),
                "peer": bounded(peer),
                "method": bounded(method, 64),
                "targets": kept,
                "outcome": bounded(outcome, 64),
                "detail": bounded(detail, MAX_DETAIL_CHARS),
                "prev_mac": self._prev,
            }
            rec["mac"] = record_mac(self._key, rec)
            self._fh.write(_canonical(rec) + b"\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._seq, self._prev = rec["seq"], rec["mac"]
            head = {"seq": self._seq, "mac": self._prev}
            head["head_mac"] = head_mac(self._key, self._seq, self._prev)
            _atomic_write(self.head_path, (json.dumps(head) + "\n").encode())
            return rec

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()


def targets_of_log(path: str | Path) -> set[str]:
    """Every target named in the log (for reconciliation with the store)."""
    out: set[str] = set()
    p = Path(path)
    if not p.exists():
        return out
    with open(p, "rb") as f:
        for raw in f:
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.update(str(t) for t in rec.get("targets") or ())
    return out


def reconcile_stored(audit: AuditLog, stored: Iterable[tuple[str, str, str]]) -> list[str]:
    """Give every stored casing an audit record; returns the casing ids that lacked one.

    ``stored`` yields ``(casing_id, agency, sha256)``. A casing committed by a call that never
    finished (the server was killed between the store commit and the final audit record) is
    named only by its ``sha256:`` in the call's STARTED record; it gets a ``Reconcile`` record
    with outcome ``STORED_UNACKNOWLEDGED`` that names both, so the trail is complete.
    """
    seen = targets_of_log(audit.path)
    missing = []
    for casing_id, agency, sha in stored:
        if casing_id in seen:
            continue
        started = f"sha256:{sha}" in seen
        audit.append(
            user="",
            agency=agency,
            method="Reconcile",
            targets=[casing_id, f"sha256:{sha}"],
            outcome="STORED_UNACKNOWLEDGED",
            detail=(
                "stored without a final audit record: the call was killed in flight (see the"
                " SubmitCasing STARTED record with the same sha256)"
                if started
                else "stored without any audit record (a local `ballistics ingest`, or a server"
                " older than the STARTED records)"
            ),
        )
        missing.append(casing_id)
    return missing


def peer_of(context: Any) -> str:
    """The client's address as gRPC reports it (``ipv4:127.0.0.1:53412``), or '' - for the
    ``peer`` field of a record."""
    try:
        return str(context.peer() or "")[:200]
    except Exception:  # a test double without peer(): the record just lacks the address
        return ""
