"""The store of record: SQLite plus content-addressed originals, in one data directory.

Layout::

    <data_dir>/store.sqlite          casings, descriptors, surfaces, decisions, changes log
    <data_dir>/objects/ab/cdef...    original files, named by SHA-256 (written before the commit)
    <data_dir>/surfaces/ab/cd/abcd.. prepared surfaces, named by SHA-256 (index.blobs; written
                                     before the commit; SQLite keeps hash, size and codec)

Durability contract
-------------------
* The original and the prepared surface are each written to a temporary file, fsync'ed,
  renamed into place and the directory fsync'ed *before* the database transaction that
  references them. Stores whose surfaces were BLOBs inside SQLite (table ``surfaces``) are
  migrated on open (:func:`_migrate_surface_blobs`: file first, then the row moves, batch by
  batch; a kill at any point leaves every surface readable from one place or the other).
* The database runs in WAL mode with ``synchronous=FULL``: when :meth:`Store.add_casing`
  returns, its COMMIT is on disk. Callers acknowledge an ingest only after it returns.
* Every add / delete / re-extraction appends a row to ``changes``; its ``seq`` is monotonically
  increasing and is what vector-index snapshots record as "last change applied".

Concurrency: one SQLite connection per thread (readers never block each other in WAL mode);
all writes go through one lock, so there is at most one writer per process. A separate
process must not write the same directory concurrently (the :class:`index.service.Catalog`
takes an exclusive file lock).

FAISS ids are the ``casings.id`` integer primary key (AUTOINCREMENT: never reused).

Schema: versioned SQL files ``index/migrations/sqlite/NNNN_*.sql`` applied on open
(:mod:`index.migrations`). The same store on PostgreSQL, for several servers and workers:
:mod:`index.store_pg`; :func:`open_store` chooses (the SQL below is written in the dialect both
engines speak: ``ON CONFLICT``, ``RETURNING``, no SQLite-only functions).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import sqlite3
import threading
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .blobs import BlobStore, SurfaceFileError, atomic_write, fsync_dir
from .errors import NotFoundError
from .migrations import apply_sqlite

VERDICTS = ("hit", "excluded", "inconclusive")

_CASINGS_TABLE = """
CREATE TABLE IF NOT EXISTS {name}(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    casing_id TEXT NOT NULL UNIQUE,
    exhibit_id TEXT,
    incident TEXT,
    caliber TEXT,
    firing_pin_shape TEXT,
    acquisition_date TEXT,
    agency TEXT NOT NULL REFERENCES agencies(id),
    sha256 TEXT NOT NULL,
    filename TEXT,
    format TEXT,
    spacing_m REAL,
    created_at TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    deleted_reason TEXT,
    deleted_at TEXT,
    superseded_by INTEGER REFERENCES casings(id),
    FOREIGN KEY(agency, incident) REFERENCES incidents(agency, id));
"""

_CASING_COLS = (
    "id, casing_id, exhibit_id, incident, caliber, firing_pin_shape, acquisition_date, agency, "
    "sha256, filename, format, spacing_m, created_at, deleted, deleted_reason, deleted_at, "
    "superseded_by"
)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def _check_date(value: str | None, what: str) -> str | None:
    if value is None or value == "":
        return None
    try:
        return _dt.date.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise ValueError(f"{what} must be a date YYYY-MM-DD; got {value!r}") from None


@dataclass(frozen=True)
class CasingRecord:
    """One stored casing. ``id`` is the integer FAISS id; ``casing_id`` the public name."""

    id: int
    casing_id: str
    exhibit_id: str | None
    incident: str | None
    caliber: str | None
    firing_pin_shape: str | None
    acquisition_date: str | None
    agency: str
    sha256: str
    filename: str | None
    format: str | None
    spacing_m: float | None
    created_at: str
    deleted: bool = False
    deleted_reason: str | None = None
    deleted_at: str | None = None
    superseded_by: int | None = None
    created: bool = field(default=False, compare=False)
    """True when this call created the record; False when it already existed (idempotent add)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Decision:
    id: int
    casing_id: str
    candidate_id: str
    verdict: str
    comment: str
    examiner: str
    agency: str | None
    time: str
    supersedes: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Change:
    seq: int
    kind: str
    casing: int | None


@dataclass
class Filters:
    """Class-characteristic and metadata filters for search and listing (None: no filter)."""

    caliber: str | None = None
    firing_pin_shape: str | None = None
    date_from: str | None = None
    date_to: str | None = None
    agencies: set[str] | frozenset[str] | None = None
    incident: str | None = None
    unknown_caliber: bool = False
    """With ``caliber``: also casings whose calibre was not recorded (they may be of it)."""

    def is_empty(self) -> bool:
        return (
            self.caliber is None
            and self.firing_pin_shape is None
            and self.date_from is None
            and self.date_to is None
            and self.agencies is None
            and self.incident is None
        )

    def where(self) -> tuple[str, list[Any]]:
        """SQL WHERE fragment (always restricted to live casings) and its parameters."""
        clauses = ["deleted = 0"]
        params: list[Any] = []
        if self.caliber is not None:
            clauses.append(
                "(caliber = ? OR caliber IS NULL)" if self.unknown_caliber else "caliber = ?"
            )
            params.append(self.caliber)
        if self.firing_pin_shape is not None:
            clauses.append("firing_pin_shape = ?")
            params.append(self.firing_pin_shape)
        if self.date_from is not None:
            clauses.append("acquisition_date >= ?")
            params.append(_check_date(self.date_from, "date_from"))
        if self.date_to is not None:
            clauses.append("acquisition_date <= ?")
            params.append(_check_date(self.date_to, "date_to"))
        if self.agencies is not None:
            ags = sorted(self.agencies)
            if not ags:
                clauses.append("1 = 0")
            else:
                clauses.append(f"agency IN ({','.join('?' * len(ags))})")
                params.extend(ags)
        if self.incident is not None:
            clauses.append("incident = ?")
            params.append(self.incident)
        return " AND ".join(clauses), params


#: Where the store of record lives when no ``--store`` is given: a PostgreSQL URL, or unset
#: (SQLite in the data directory, the default).
STORE_ENV = "BALLISTICS_STORE"
#: The shared folder of originals and surfaces for a PostgreSQL store (default: the data dir).
FILES_ENV = "BALLISTICS_FILES"


def open_store(
    data_dir: str | os.PathLike[str],
    url: str | None = None,
    *,
    files_dir: str | os.PathLike[str] | None = None,
) -> Store:
    """Open the store of record: the one place that chooses the engine.

    ``url``: ``postgresql://user@host:port/db`` (PostgreSQL, :class:`index.store_pg.PgStore`)
    or None / ``"sqlite"`` (SQLite in ``data_dir``, the default). None also consults the
    environment variable ``BALLISTICS_STORE``. ``files_dir``: a PostgreSQL store's shared
    folder of originals and surfaces (default ``BALLISTICS_FILES``, else ``data_dir``)."""
    if url is None:
        url = os.environ.get(STORE_ENV) or None
    if url is None or url == "sqlite":
        return Store(data_dir)
    if url.startswith(("postgresql://", "postgres://")):
        from .store_pg import PgStore  # psycopg is needed only for this engine

        files = files_dir or os.environ.get(FILES_ENV) or data_dir
        return PgStore(url, files)
    raise ValueError(
        f"unknown store {url.split('@')[-1]!r}: give a postgresql://user@host:port/db URL, "
        "or nothing for the embedded SQLite store in the data directory"
    )


def store_exists(data_dir: str | os.PathLike[str], url: str | None = None) -> bool:
    """Whether there is a store to read: a SQLite file in ``data_dir``, or a server URL (its
    database is checked when opened)."""
    if url is None:
        url = os.environ.get(STORE_ENV) or None
    if url is not None and url != "sqlite":
        return True
    return (Path(data_dir) / "store.sqlite").is_file()


def decode_surface(codec: str, blob: bytes) -> bytes:
    if codec == "zlib":
        return zlib.decompress(blob)
    if codec == "raw":
        return bytes(blob)
    raise ValueError(f"unknown surface codec {codec!r}")


class Store:
    """SQLite store of record. Open with ``Store(data_dir)``; close with :meth:`close`.

    :class:`index.store_pg.PgStore` is the same store on PostgreSQL (the SQL here is written
    in the dialect both engines speak; :func:`open_store` chooses from a URL)."""

    engine = "sqlite"
    shared = False
    """True when other processes may write the same store at the same time (PostgreSQL):
    the catalog then catches up on their changes before it searches."""
    legacy_blobs = True
    """Whether the store may still hold surfaces as BLOBs (SQLite stores from before
    surface files); never on PostgreSQL."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.objects_dir = self.data_dir / "objects"
        self.surface_files = BlobStore(self.data_dir / "surfaces")
        self.db_path = self.data_dir / "store.sqlite"
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        con = self._conn()
        with self._write_lock:
            _migrate_incident_owner(con)
            apply_sqlite(con)
        _migrate_surface_blobs(self)

    # -- connections -------------------------------------------------------------------------
    def _conn(self) -> Any:
        """This thread's connection (``sqlite3.Connection``; a PgStore's speaks the same
        ``execute(sql with ?, params)``)."""
        if self._closed:
            raise RuntimeError("store is closed")
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA foreign_keys=ON")
            con.execute("PRAGMA busy_timeout=30000")
            self._local.con = con
            with self._conns_lock:
                self._conns.append(con)
        return con

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Any]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT) under the writer lock."""
        with self._write_lock:
            con = self._conn()
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def close(self) -> None:
        with self._conns_lock:
            for con in self._conns:
                with contextlib.suppress(sqlite3.Error):
                    con.close()
            self._conns.clear()
        self._closed = True

    @contextlib.contextmanager
    def acting_for(
        self, agency: str | None, readable: Iterable[str] | None = None
    ) -> Iterator[None]:
        """Row-level security for the calls of this thread in the block (PostgreSQL:
        :meth:`index.store_pg.PgStore.acting_for`). SQLite has none: a no-op, the sharing
        policy is the only line."""
        yield

    # -- originals ---------------------------------------------------------------------------
    def object_path(self, sha256: str) -> Path:
        return self.objects_dir / sha256[:2] / sha256[2:]

    def put_object(self, data: bytes | Path, sha256: str | None = None) -> str:
        """Store an original file (its bytes, or a file copied block by block)
        content-addressed; returns its SHA-256 (hex). ``sha256``: the content's digest when the
        caller computed it already (trusted, not recomputed; required for a path)."""
        if sha256 is None:
            if isinstance(data, Path):
                raise ValueError("put_object: give the sha256 of a file to store")
            sha256 = hashlib.sha256(data).hexdigest()
        sha = sha256
        size = data.stat().st_size if isinstance(data, Path) else len(data)
        path = self.object_path(sha)
        if path.exists() and path.stat().st_size == size:
            return sha
        atomic_write(path, data)
        fsync_dir(path.parent.parent)
        return sha

    def read_object(self, sha256: str) -> bytes:
        data = self.object_path(sha256).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError(f"original {sha256} is corrupt (checksum mismatch)")
        return data

    # -- casings -----------------------------------------------------------------------------
    def find_by_sha(self, sha256: str, agency: str) -> CasingRecord | None:
        row = (
            self._conn()
            .execute(
                f"SELECT {_CASING_COLS} FROM casings WHERE sha256 = ? AND agency = ? "
                "AND deleted = 0",
                (sha256, agency),
            )
            .fetchone()
        )
        return None if row is None else _record(row)

    def add_casing(
        self,
        *,
        original: bytes | Path | None,
        agency: str,
        descriptors: Mapping[str, np.ndarray],
        extractor_version: str,
        surface: bytes | None = None,
        sha256: str | None = None,
        casing_id: str | None = None,
        exhibit_id: str | None = None,
        incident: str | None = None,
        case_number: str | None = None,
        place: str | None = None,
        caliber: str | None = None,
        firing_pin_shape: str | None = None,
        acquisition_date: str | None = None,
        filename: str | None = None,
        format: str | None = None,
        spacing_m: float | None = None,
        quality: Mapping[str, Any] | None = None,
    ) -> tuple[CasingRecord, int]:
        """Add one casing with its descriptors and prepared surface; returns (record, seq).

        Idempotent on (sha256, agency) among live casings: a second add returns the existing
        record (``created=False``) and the current seq without writing anything.
        ``original`` (the file as received: its bytes, or the path of a file holding them) is
        stored content-addressed before the commit. ``sha256``: its digest, when the caller
        has computed it (trusted, so each upload is hashed once; required with a path).
        """
        if not agency:
            raise ValueError("agency is required")
        if original is None and sha256 is None:
            raise ValueError("either the original bytes or their sha256 is required")
        acquisition_date = _check_date(acquisition_date, "acquisition date")
        vecs: dict[str, np.ndarray] = {}
        for region, v in descriptors.items():
            a = np.ascontiguousarray(v, dtype=np.float32).reshape(-1)
            if a.size == 0 or not np.all(np.isfinite(a)):
                raise ValueError(f"descriptor {region!r} is empty or not finite")
            vecs[region] = a
        if sha256 is None:
            if not isinstance(original, bytes):
                raise ValueError("the sha256 of an original given as a file is required")
            sha256 = hashlib.sha256(original).hexdigest()
        existing = self.find_by_sha(sha256, agency)
        if existing is not None:
            return existing, self.seq()
        if original is not None:
            self.put_object(original, sha256)
        # The surface file is durable before the row that refers to it commits.
        surface_ref = None if surface is None else self.surface_files.put(surface)
        cid = casing_id or uuid.uuid4().hex[:16]
        now = _now()
        with self._tx() as con:
            row = con.execute(
                f"SELECT {_CASING_COLS} FROM casings WHERE sha256 = ? AND agency = ? "
                "AND deleted = 0",
                (sha256, agency),
            ).fetchone()
            if row is not None:  # raced with another writer thread
                return _record(row), self._seq(con)
            if con.execute("SELECT 1 FROM casings WHERE casing_id = ?", (cid,)).fetchone():
                raise ValueError(f"casing id {cid!r} already exists")
            con.execute(
                "INSERT INTO agencies(id, name) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (agency, agency),
            )
            if incident:
                con.execute(  # the caller's own incident of that name (created on first use)
                    "INSERT INTO incidents(agency, id, case_number, date, place) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (agency, incident, case_number, acquisition_date, place),
                )
            cur = con.execute(
                "INSERT INTO casings(casing_id, exhibit_id, incident, caliber, firing_pin_shape,"
                " acquisition_date, agency, sha256, filename, format, spacing_m, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    cid,
                    exhibit_id,
                    incident or None,
                    caliber,
                    firing_pin_shape,
                    acquisition_date,
                    agency,
                    sha256,
                    filename,
                    format,
                    spacing_m,
                    now,
                ),
            )
            rowid = int(cur.fetchone()[0])
            for region, a in vecs.items():
                con.execute(
                    "INSERT INTO descriptors(casing, region, extractor_version, dim, vector) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (rowid, region, extractor_version, int(a.size), a.tobytes()),
                )
            if surface is not None and surface_ref is not None:
                self._insert_surface_file(con, rowid, surface, surface_ref)
            if quality is not None:
                con.execute(
                    "INSERT INTO qualities(casing, record) VALUES (?, ?)",
                    (rowid, json.dumps(dict(quality), sort_keys=True)),
                )
            con.execute(  # its correlation job, in the same transaction: never lost
                "INSERT INTO correlation_jobs(casing, created_at) VALUES (?, ?) "
                "ON CONFLICT DO NOTHING",
                (rowid, now),
            )
            seq = self._log(con, "add", rowid, now)
            row = con.execute(
                f"SELECT {_CASING_COLS} FROM casings WHERE id = ?", (rowid,)
            ).fetchone()
        rec = _record(row)
        return CasingRecord(**{**rec.as_dict(), "created": True}), seq

    def _log(self, con: Any, kind: str, casing: int | None, now: str) -> int:
        cur = con.execute(
            "INSERT INTO changes(kind, casing, time) VALUES (?, ?, ?) RETURNING seq",
            (kind, casing, now),
        )
        return int(cur.fetchone()[0])

    def get_casing(self, casing_id: str | int, *, include_deleted: bool = False) -> CasingRecord:
        """Look a casing up by public id (str) or row id (int); NotFoundError when absent."""
        col = "id" if isinstance(casing_id, int) else "casing_id"
        row = (
            self._conn()
            .execute(f"SELECT {_CASING_COLS} FROM casings WHERE {col} = ?", (casing_id,))
            .fetchone()
        )
        if row is None or (row[13] and not include_deleted):
            raise NotFoundError(f"no casing with id {casing_id}")
        return _record(row)

    def get_many(self, rowids: Iterable[int]) -> dict[int, CasingRecord]:
        ids = [int(i) for i in rowids]
        out: dict[int, CasingRecord] = {}
        con = self._conn()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            q = f"SELECT {_CASING_COLS} FROM casings WHERE id IN ({','.join('?' * len(chunk))})"
            for row in con.execute(q, chunk):
                out[int(row[0])] = _record(row)
        return out

    def list_casings(
        self, filters: Filters | None = None, *, limit: int = 1000, offset: int = 0
    ) -> list[CasingRecord]:
        where, params = (filters or Filters()).where()
        rows = (
            self._conn()
            .execute(
                f"SELECT {_CASING_COLS} FROM casings WHERE {where} ORDER BY id LIMIT ? OFFSET ?",
                [*params, int(limit), int(offset)],
            )
            .fetchall()
        )
        return [_record(r) for r in rows]

    def filter_ids(self, filters: Filters | None) -> np.ndarray:
        """Row ids (int64, sorted) of live casings passing ``filters``."""
        where, params = (filters or Filters()).where()
        rows = self._conn().execute(f"SELECT id FROM casings WHERE {where}", params).fetchall()
        # Sorting here rather than ORDER BY lets SQLite answer from the covering index alone.
        return np.sort(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))

    def set_metadata(self, rowid: int, items: Mapping[str, str]) -> None:
        """Store (replace) free-form ``key -> value`` metadata of a casing (one transaction)."""
        if not items:
            return
        with self._tx() as con:
            con.executemany(
                "INSERT INTO casing_metadata(casing, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT(casing, key) DO UPDATE SET value = excluded.value",
                [(int(rowid), str(k), str(v)) for k, v in items.items()],
            )

    def metadata_of(self, rowid: int) -> dict[str, str]:
        """The free-form metadata of a casing (empty when none was given)."""
        rows = self._conn().execute(
            "SELECT key, value FROM casing_metadata WHERE casing = ? ORDER BY key", (int(rowid),)
        )
        return {str(k): str(v) for k, v in rows}

    def count_live(self) -> int:
        row = self._conn().execute("SELECT COUNT(*) FROM casings WHERE deleted = 0").fetchone()
        return int(row[0])

    def delete_casing(self, casing_id: str, reason: str) -> tuple[CasingRecord, int]:
        """Soft-delete a casing (kept for the audit trail, invisible to search).

        Its prepared surface goes with it (the row in the same transaction, the file after the
        commit unless another casing shares it): a deleted casing is never searched or compared
        again, and its original file is kept, from which the surface can be prepared again."""
        if not reason or not reason.strip():
            raise ValueError("a reason is required to delete a casing")
        rec = self.get_casing(casing_id)
        now = _now()
        with self._write_lock:
            with self._tx() as con:
                n = con.execute(
                    "UPDATE casings SET deleted = 1, deleted_reason = ?, deleted_at = ? "
                    "WHERE id = ? AND deleted = 0",
                    (reason, now, rec.id),
                ).rowcount
                if n != 1:
                    raise NotFoundError(f"no casing with id {casing_id}")
                seq = self._log(con, "delete", rec.id, now)
                row = con.execute(
                    "SELECT sha256 FROM surface_files WHERE casing = ?", (rec.id,)
                ).fetchone()
                con.execute("DELETE FROM surface_files WHERE casing = ?", (rec.id,))
                if self.legacy_blobs:
                    con.execute("DELETE FROM surfaces WHERE casing = ?", (rec.id,))
            if row is not None:
                self._drop_unreferenced(str(row[0]))
        return self.get_casing(rec.id, include_deleted=True), seq

    # -- sequence / changes ------------------------------------------------------------------
    @staticmethod
    def _seq(con: Any) -> int:
        row = con.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()
        return int(row[0])

    def seq(self) -> int:
        """The last change number (0 for an empty store)."""
        return self._seq(self._conn())

    def changes_since(self, seq: int) -> list[Change]:
        rows = self._conn().execute(
            "SELECT seq, kind, casing FROM changes WHERE seq > ? ORDER BY seq", (int(seq),)
        )
        return [Change(int(s), str(k), None if c is None else int(c)) for s, k, c in rows]

    # -- descriptors and surfaces ------------------------------------------------------------
    def regions(self, extractor_version: str) -> list[str]:
        rows = self._conn().execute(
            "SELECT DISTINCT region FROM descriptors WHERE extractor_version = ? ORDER BY region",
            (extractor_version,),
        )
        return [str(r[0]) for r in rows]

    def descriptors_of(self, rowid: int, extractor_version: str) -> dict[str, np.ndarray]:
        rows = self._conn().execute(
            "SELECT region, vector FROM descriptors WHERE casing = ? AND extractor_version = ?",
            (int(rowid), extractor_version),
        )
        return {str(r): np.frombuffer(v, dtype=np.float32).copy() for r, v in rows}

    def iter_vectors(
        self, region: str, extractor_version: str, *, batch: int = 65536
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (ids int64 (n,), vectors float32 (n, d)) batches of live casings' descriptors."""
        cur = self._conn().execute(
            "SELECT d.casing, d.vector FROM descriptors d JOIN casings c ON c.id = d.casing "
            "WHERE d.region = ? AND d.extractor_version = ? AND c.deleted = 0 ORDER BY d.casing",
            (region, extractor_version),
        )
        while True:
            rows = cur.fetchmany(batch)
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
            yield ids, vecs

    def vectors_of(
        self, rowids: Iterable[int], region: str, extractor_version: str
    ) -> dict[int, np.ndarray]:
        """One region's stored vectors for many casings (absent ones are left out)."""
        ids = [int(i) for i in rowids]
        out: dict[int, np.ndarray] = {}
        con = self._conn()
        for s in range(0, len(ids), 500):  # SQLite's bound-parameter limit
            chunk = ids[s : s + 500]
            rows = con.execute(
                f"SELECT casing, vector FROM descriptors WHERE region = ? AND extractor_version"
                f" = ? AND casing IN ({','.join('?' * len(chunk))})",
                (region, extractor_version, *chunk),
            )
            out.update({int(c): np.frombuffer(v, dtype=np.float32) for c, v in rows})
        return out

    def count_vectors(self, region: str, extractor_version: str) -> int:
        row = (
            self._conn()
            .execute(
                "SELECT COUNT(*) FROM descriptors d JOIN casings c ON c.id = d.casing "
                "WHERE d.region = ? AND d.extractor_version = ? AND c.deleted = 0",
                (region, extractor_version),
            )
            .fetchone()
        )
        return int(row[0])

    def live_vector_ids(self, region: str, extractor_version: str) -> np.ndarray:
        rows = self._conn().execute(
            "SELECT d.casing FROM descriptors d JOIN casings c ON c.id = d.casing "
            "WHERE d.region = ? AND d.extractor_version = ? AND c.deleted = 0 ORDER BY d.casing",
            (region, extractor_version),
        )
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def casings_missing_version(self, extractor_version: str) -> list[int]:
        rows = self._conn().execute(
            "SELECT id FROM casings c WHERE deleted = 0 AND NOT EXISTS (SELECT 1 FROM "
            "descriptors d WHERE d.casing = c.id AND d.extractor_version = ?) ORDER BY id",
            (extractor_version,),
        )
        return [int(r[0]) for r in rows]

    def replace_descriptors(
        self, items: Mapping[int, Mapping[str, np.ndarray]], extractor_version: str
    ) -> int:
        """Store new-version descriptors for casings (one transaction); old versions are kept
        until :meth:`drop_other_versions`. Logs one 'reextract' change; returns its seq."""
        now = _now()
        with self._tx() as con:
            for rowid, descs in items.items():
                con.execute(
                    "DELETE FROM descriptors WHERE casing = ? AND extractor_version = ?",
                    (int(rowid), extractor_version),
                )
                for region, v in descs.items():
                    a = np.ascontiguousarray(v, dtype=np.float32).reshape(-1)
                    con.execute(
                        "INSERT INTO descriptors(casing, region, extractor_version, dim, vector)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (int(rowid), region, extractor_version, int(a.size), a.tobytes()),
                    )
            return self._log(con, "reextract", None, now)

    def drop_other_versions(self, extractor_version: str) -> None:
        with self._tx() as con:
            con.execute(
                "DELETE FROM descriptors WHERE extractor_version != ?", (extractor_version,)
            )

    def load_surface(self, casing: str | int) -> bytes | None:
        """The stored PreparedCasing bytes (decompressed, hash verified), or None when none was
        stored. Raises :class:`index.blobs.SurfaceFileError` (naming the casing and the file)
        when its file is missing or corrupt."""
        rowid = casing if isinstance(casing, int) else self.get_casing(casing).id
        con = self._conn()
        row = con.execute(
            "SELECT codec, sha256, size FROM surface_files WHERE casing = ?", (int(rowid),)
        ).fetchone()
        if row is not None:
            what = f"casing {casing}" if isinstance(casing, str) else f"casing row {rowid}"
            raw = self.surface_files.get(str(row[1]), int(row[2]), what=what)
            return decode_surface(str(row[0]), raw)
        if not self.legacy_blobs:
            return None
        # A legacy BLOB not yet moved out (another process opened the store mid-migration).
        row = con.execute(
            "SELECT codec, data FROM surfaces WHERE casing = ?", (int(rowid),)
        ).fetchone()
        return None if row is None else decode_surface(str(row[0]), row[1])

    def put_surface(self, rowid: int, surface: bytes) -> None:
        """Store (or replace) the prepared surface of a casing; a file no row uses any more
        is removed."""
        ref = self.surface_files.put(surface)
        with self._write_lock:
            with self._tx() as con:
                old = con.execute(
                    "SELECT sha256 FROM surface_files WHERE casing = ?", (int(rowid),)
                ).fetchone()
                if self.legacy_blobs:
                    con.execute("DELETE FROM surfaces WHERE casing = ?", (int(rowid),))
                self._insert_surface_file(con, int(rowid), surface, ref, replace=True)
            if old is not None and old[0] != ref[0]:
                self._drop_unreferenced(str(old[0]))

    def _insert_surface_file(
        self,
        con: Any,
        rowid: int,
        surface: bytes,
        ref: tuple[str, int],
        *,
        replace: bool = False,
    ) -> None:
        """The row of a surface file written by ``BlobStore.put`` (inside a transaction). The
        file is checked again under the writer lock: a delete or garbage collection that ran
        since may have removed a file of the same content, which is then written again."""
        sha, size = ref
        if not self.surface_files.has(sha, size):
            self.surface_files.put(surface)
        upsert = (
            " ON CONFLICT(casing) DO UPDATE SET codec = excluded.codec, sha256 = excluded.sha256,"
            " size = excluded.size"
            if replace
            else ""
        )
        con.execute(
            f"INSERT INTO surface_files(casing, codec, sha256, size) VALUES (?, ?, ?, ?){upsert}",
            (int(rowid), "raw", sha, int(size)),
        )

    def _drop_unreferenced(self, sha256: str) -> bool:
        """Remove a surface file when no row refers to it (call under the writer lock, after
        the commit that dropped the last reference: a kill in between leaves an orphan file,
        which :meth:`check_surfaces` reports and :meth:`collect_garbage` removes)."""
        with self._write_lock:
            row = (
                self._conn()
                .execute("SELECT 1 FROM surface_files WHERE sha256 = ? LIMIT 1", (sha256,))
                .fetchone()
            )
            return row is None and self.surface_files.delete(sha256)

    def surface_info(self, rowid: int) -> dict[str, Any] | None:
        """Where a casing's surface is kept: ``{"sha256", "size", "codec", "path"}`` for a
        file, ``{"codec", "size", "path": None}`` for a legacy BLOB; None when none is stored."""
        con = self._conn()
        row = con.execute(
            "SELECT codec, sha256, size FROM surface_files WHERE casing = ?", (int(rowid),)
        ).fetchone()
        if row is not None:
            return {
                "codec": str(row[0]),
                "sha256": str(row[1]),
                "size": int(row[2]),
                "path": str(self.surface_files.path(str(row[1]))),
            }
        if not self.legacy_blobs:
            return None
        row = con.execute(
            "SELECT codec, LENGTH(data) FROM surfaces WHERE casing = ?", (int(rowid),)
        ).fetchone()
        if row is None:
            return None
        return {"codec": str(row[0]), "sha256": None, "size": int(row[1]), "path": None}

    def check_surfaces(self, *, verify_hashes: bool = True) -> tuple[list[str], list[str]]:
        """Check every stored surface file: (problems, notes).

        ``problems``: one line per live casing whose file is missing, of the wrong size or
        (``verify_hashes``: re-reading every file) corrupt, naming the casing and the file.
        ``notes``: files no row refers to (left by a kill between a file's write and its
        commit, or a delete's commit and its unlink; harmless, :meth:`collect_garbage`
        removes them)."""
        problems: list[str] = []
        refs: set[str] = set()
        rows = self._conn().execute(
            "SELECT c.casing_id, c.deleted, s.sha256, s.size FROM surface_files s "
            "JOIN casings c ON c.id = s.casing ORDER BY c.id"
        )
        for cid, deleted, sha, size in rows:
            refs.add(str(sha))
            if deleted:
                continue
            what = f"casing {cid}"
            try:
                if verify_hashes:
                    self.surface_files.get(str(sha), int(size), what=what)
                elif not self.surface_files.has(str(sha), int(size)):
                    problems.append(
                        f"{what}: surface file {self.surface_files.path(str(sha))} is missing "
                        f"or not {int(size)} bytes long"
                    )
            except SurfaceFileError as exc:
                problems.append(str(exc))
        orphans = [s for s in self.surface_files.iter_shas() if s not in refs]
        notes = [f"surface file {self.surface_files.path(s)} is used by no casing" for s in orphans]
        return problems, notes

    def collect_garbage(self) -> int:
        """Remove surface files no row refers to, and temporary files of killed writers;
        returns how many surface files were removed. Call only where no other process
        writes this directory (the catalog's exclusive lock)."""
        n = 0
        with self._write_lock:
            self.surface_files.remove_temporaries()
            refs = {
                str(r[0]) for r in self._conn().execute("SELECT DISTINCT sha256 FROM surface_files")
            }
            for sha in list(self.surface_files.iter_shas()):
                if sha not in refs:
                    n += int(self.surface_files.delete(sha))
        return n

    def put_quality(self, rowid: int, quality: Mapping[str, Any]) -> None:
        """Store (or replace) the quality record of a casing."""
        with self._tx() as con:
            con.execute(
                "INSERT INTO qualities(casing, record) VALUES (?, ?) "
                "ON CONFLICT(casing) DO UPDATE SET record = excluded.record",
                (int(rowid), json.dumps(dict(quality), sort_keys=True)),
            )

    def qualities_of(self, rowids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Quality records by row id; casings without one (stored before quality records
        existed) are absent from the result."""
        ids = [int(i) for i in rowids]
        out: dict[int, dict[str, Any]] = {}
        con = self._conn()
        for k in range(0, len(ids), 500):
            chunk = ids[k : k + 500]
            marks = ",".join("?" * len(chunk))
            for rowid, text in con.execute(
                f"SELECT casing, record FROM qualities WHERE casing IN ({marks})", chunk
            ):
                with contextlib.suppress(ValueError):
                    out[int(rowid)] = json.loads(text)
        return out

    # -- decisions and links -----------------------------------------------------------------
    def record_decision(
        self,
        casing_id: str,
        candidate_id: str,
        verdict: str,
        *,
        examiner: str,
        comment: str = "",
        agency: str | None = None,
    ) -> Decision:
        """Append an examiner's verdict; a later decision on the same pair supersedes."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}; got {verdict!r}")
        if not examiner:
            raise ValueError("examiner is required")
        a = self.get_casing(casing_id, include_deleted=True)
        b = self.get_casing(candidate_id, include_deleted=True)
        if a.id == b.id:
            raise ValueError("a casing cannot be compared with itself")
        now = _now()
        with self._tx() as con:
            prev = con.execute(
                "SELECT MAX(id) FROM decisions WHERE (casing = ? AND candidate = ?) "
                "OR (casing = ? AND candidate = ?)",
                (a.id, b.id, b.id, a.id),
            ).fetchone()[0]
            cur = con.execute(
                "INSERT INTO decisions(casing, candidate, verdict, comment, examiner, agency, "
                "time, supersedes) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (a.id, b.id, verdict, comment or "", examiner, agency, now, prev),
            )
            did = int(cur.fetchone()[0])
        return Decision(
            did,
            a.casing_id,
            b.casing_id,
            verdict,
            comment or "",
            examiner,
            agency,
            now,
            None if prev is None else int(prev),
        )

    def decisions_for(self, casing_id: str) -> list[Decision]:
        """Every decision (superseded ones too) where the casing is either side, oldest first."""
        rec = self.get_casing(casing_id, include_deleted=True)
        rows = self._conn().execute(
            "SELECT d.id, a.casing_id, b.casing_id, d.verdict, d.comment, d.examiner, d.agency,"
            " d.time, d.supersedes FROM decisions d JOIN casings a ON a.id = d.casing "
            "JOIN casings b ON b.id = d.candidate WHERE d.casing = ? OR d.candidate = ? "
            "ORDER BY d.id",
            (rec.id, rec.id),
        )
        return [
            Decision(
                id=int(r[0]),
                casing_id=str(r[1]),
                candidate_id=str(r[2]),
                verdict=str(r[3]),
                comment=str(r[4]),
                examiner=str(r[5]),
                agency=r[6],
                time=str(r[7]),
                supersedes=None if r[8] is None else int(r[8]),
            )
            for r in rows
        ]

    def _hit_edges(self) -> list[HitEdge]:
        """Current (not superseded) hits between incidents.

        Nodes are ``(agency, incident)``; a casing without an incident is its own node
        ``(agency, "casing:<id>")``.
        """
        rows = self._conn().execute(
            "SELECT d.id, d.verdict, d.examiner, d.agency, d.time, a.casing_id, a.incident, "
            "a.agency, b.casing_id, b.incident, b.agency FROM decisions d "
            "JOIN casings a ON a.id = d.casing JOIN casings b ON b.id = d.candidate "
            "WHERE d.id IN (SELECT MAX(id) FROM decisions GROUP BY "
            "CASE WHEN casing < candidate THEN casing ELSE candidate END, "
            "CASE WHEN casing < candidate THEN candidate ELSE casing END) "
            "AND a.deleted = 0 AND b.deleted = 0"
        )
        return [
            HitEdge(
                ia or f"casing:{ca}",
                ib or f"casing:{cb}",
                ca,
                cb,
                ex,
                ag or "",
                t,
                int(did),
                agency_a=str(aa),
                agency_b=str(ab),
            )
            for did, verdict, ex, ag, t, ca, ia, aa, cb, ib, ab in rows
            if verdict == "hit"
        ]

    def incident_owners(self, incident_id: str) -> list[str]:
        """Agencies that have an incident named ``incident_id`` (sorted)."""
        rows = self._conn().execute(
            "SELECT agency FROM incidents WHERE id = ? ORDER BY agency", (incident_id,)
        )
        return [str(r[0]) for r in rows]

    def links(
        self,
        *,
        casing_id: str | None = None,
        incident_id: str | None = None,
        agency: str | None = None,
        agencies: Iterable[str] | None = None,
    ) -> dict:
        """Connected component of incidents linked by confirmed hits.

        Incidents are scoped per agency. ``incident_id`` starts from ``agency``'s incident of
        that name if it has one, else from every incident of that name among ``agencies``
        (all agencies when None). ``agencies`` (None: all) bounds the walk: incidents of other
        agencies are neither returned nor walked through, so nothing about them shows.

        Returns ``{"start", "nodes": [{"incident", "agency", "casings": [...]}], "edges":
        [{"a", "b", "casing_a", "casing_b", "examiner", "agency", "time", "decision_id",
        "agency_a", "agency_b"}]}``; the start node is always included.
        """
        if (casing_id is None) == (incident_id is None):
            raise ValueError("give exactly one of casing_id or incident_id")
        allowed = None if agencies is None else frozenset(agencies)

        def ok(a: str) -> bool:
            return allowed is None or a in allowed

        starts: list[tuple[str, str]]
        if casing_id is not None:
            rec = self.get_casing(casing_id)
            starts = [(rec.agency, rec.incident or f"casing:{rec.casing_id}")]
        else:
            assert incident_id is not None
            owners = [a for a in self.incident_owners(incident_id) if ok(a)]
            if agency is not None and agency in owners:
                owners = [agency]
            if not owners:
                raise NotFoundError(f"no incident with id {incident_id}")
            starts = [(a, incident_id) for a in owners]
        adj: dict[tuple[str, str], list[HitEdge]] = {}
        for e in self._hit_edges():
            if not (ok(e.agency_a) and ok(e.agency_b)):
                continue  # never walk through (or show) another agency's incident
            adj.setdefault((e.agency_a, e.a), []).append(e)
            adj.setdefault((e.agency_b, e.b), []).append(e)
        seen = set(starts)
        stack = list(starts)
        comp_edges: set[HitEdge] = set()
        while stack:
            n = stack.pop()
            for e in adj.get(n, []):
                comp_edges.add(e)
                for m in ((e.agency_a, e.a), (e.agency_b, e.b)):
                    if m not in seen:
                        seen.add(m)
                        stack.append(m)
        nodes = []
        con = self._conn()
        for ag, inc in sorted(seen, key=lambda k: (k[1], k[0])):
            casings: list[str]
            if inc.startswith("casing:"):
                casings = [inc[len("casing:") :]]
            else:
                casings = [
                    str(r[0])
                    for r in con.execute(
                        "SELECT casing_id FROM casings WHERE agency = ? AND incident = ? "
                        "AND deleted = 0 ORDER BY id",
                        (ag, inc),
                    )
                ]
            nodes.append({"incident": inc, "agency": ag, "casings": casings})
        edges = [asdict(e) for e in sorted(comp_edges, key=lambda e: (e.time, e.decision_id))]
        return {"start": starts[0][1], "nodes": nodes, "edges": edges}

    # -- background correlation: jobs and leads ----------------------------------------------
    def agencies(self) -> list[str]:
        """Every agency that has stored a casing (sorted)."""
        return [str(r[0]) for r in self._conn().execute("SELECT id FROM agencies ORDER BY id")]

    def enqueue_missing_jobs(self) -> int:
        """Give every live casing without a correlation job one (casings stored before jobs
        existed); returns how many were added."""
        with self._tx() as con:
            cur = con.execute(
                "INSERT INTO correlation_jobs(casing, created_at) SELECT id, ? FROM "
                "casings c WHERE deleted = 0 AND NOT EXISTS (SELECT 1 FROM correlation_jobs j "
                "WHERE j.casing = c.id) ON CONFLICT DO NOTHING",
                (_now(),),
            )
            return int(cur.rowcount or 0)

    def requeue_running_jobs(self) -> int:
        """Put jobs left 'running' by a process that died back to 'pending'. Call only where no
        other worker can be running (the catalog's exclusive lock, at worker start)."""
        with self._tx() as con:
            cur = con.execute(
                "UPDATE correlation_jobs SET state = 'pending', worker = NULL "
                "WHERE state = 'running'"
            )
            return int(cur.rowcount or 0)

    def take_job(self, worker: str, *, max_attempts: int = 3) -> int | None:
        """Mark the oldest pending job running (one short transaction); returns its casing row
        id, or None when none is pending. A job already taken ``max_attempts`` times (its
        process died each time) is marked 'failed' instead of being taken again."""
        with self._tx() as con:
            while True:
                row = con.execute(
                    "SELECT casing, attempts FROM correlation_jobs WHERE state = 'pending' "
                    "ORDER BY casing LIMIT 1"
                ).fetchone()
                if row is None:
                    return None
                rowid, attempts = int(row[0]), int(row[1])
                if attempts >= max_attempts:
                    con.execute(
                        "UPDATE correlation_jobs SET state = 'failed', finished_at = ?, error = ?"
                        " WHERE casing = ?",
                        (_now(), f"gave up after {attempts} attempts", rowid),
                    )
                    continue
                con.execute(
                    "UPDATE correlation_jobs SET state = 'running', attempts = attempts + 1, "
                    "started_at = ?, worker = ? WHERE casing = ?",
                    (_now(), worker, rowid),
                )
                return rowid

    def finish_job(
        self,
        rowid: int,
        leads: Iterable[Mapping[str, Any]],
        *,
        n_screened: int,
        n_compared: int,
    ) -> int:
        """Record a job's leads and mark it done, in one transaction (all or nothing).

        Each lead: ``a``, ``b`` (row ids, either order), ``score``, ``cmc``,
        ``non_match_frequency``, ``screen_score``, ``low_confidence``,
        ``low_confidence_reasons``, ``flags``. A pair already recorded is left as it is (the
        unique pair constraint: a retaken job never doubles a lead). Returns how many leads
        were new. Raises ``RuntimeError`` (and records nothing) when the job is not running.
        """
        now = _now()
        with self._tx() as con:
            n = 0
            for ld in leads:
                a, b = sorted((int(ld["a"]), int(ld["b"])))
                cur = con.execute(
                    "INSERT INTO leads(casing_a, casing_b, job, score, cmc, "
                    "non_match_frequency, screen_score, low_confidence, low_confidence_reasons,"
                    " flags, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (
                        a,
                        b,
                        int(rowid),
                        _opt_float(ld.get("score")),
                        _opt_float(ld.get("cmc")),
                        _opt_float(ld.get("non_match_frequency")),
                        _opt_float(ld.get("screen_score")),
                        int(bool(ld.get("low_confidence"))),
                        json.dumps(list(ld.get("low_confidence_reasons") or [])),
                        json.dumps(list(ld.get("flags") or [])),
                        now,
                    ),
                )
                n += int(cur.rowcount or 0)
            done = con.execute(
                "UPDATE correlation_jobs SET state = 'done', finished_at = ?, error = NULL, "
                "n_screened = ?, n_compared = ?, n_leads = ? WHERE casing = ? "
                "AND state = 'running'",
                (now, int(n_screened), int(n_compared), n, int(rowid)),
            ).rowcount
            if done != 1:
                raise RuntimeError(f"correlation job {rowid} is not running; nothing recorded")
        return n

    def release_job(self, rowid: int) -> None:
        """Put a running job back to 'pending' without counting the attempt (the worker
        stopped, e.g. the server shut down, before the job was done)."""
        with self._tx() as con:
            con.execute(
                "UPDATE correlation_jobs SET state = 'pending', worker = NULL, "
                "attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END "
                "WHERE casing = ? AND state = 'running'",
                (int(rowid),),
            )

    def fail_job(self, rowid: int, error: str, *, retry: bool) -> None:
        """A job whose correlation raised: back to 'pending' (``retry``) or 'failed'."""
        with self._tx() as con:
            con.execute(
                "UPDATE correlation_jobs SET state = ?, finished_at = ?, error = ? "
                "WHERE casing = ? AND state = 'running'",
                ("pending" if retry else "failed", _now(), error[:500], int(rowid)),
            )

    def job_counts(self, agencies: Iterable[str] | None = None) -> dict[str, int]:
        """Correlation jobs by state (``pending``, ``running``, ``done``, ``failed``), of the
        casings of ``agencies`` only (None: all)."""
        sql = "SELECT j.state, COUNT(*) FROM correlation_jobs j"
        params: list[Any] = []
        if agencies is not None:
            ags = sorted(agencies)
            sql += " JOIN casings c ON c.id = j.casing WHERE c.agency IN ({})".format(
                ",".join("?" * len(ags)) or "NULL"
            )
            params = list(ags)
        out = dict.fromkeys(("pending", "running", "done", "failed"), 0)
        for state, n in self._conn().execute(sql + " GROUP BY j.state", params):
            out[str(state)] = int(n)
        return out

    def job_of(self, rowid: int) -> dict[str, Any] | None:
        """One casing's correlation job as a dict (None: it has none)."""
        con = self._conn()
        cur = con.execute("SELECT * FROM correlation_jobs WHERE casing = ?", (int(rowid),))
        row = cur.fetchone()
        if row is None:
            return None
        return {d[0]: v for d, v in zip(cur.description, row, strict=True)}

    def list_leads(
        self,
        *,
        state: str | None = None,
        agencies: Iterable[str] | None = None,
        limit: int = 1000,
        offset: int = 0,
        casing: str | None = None,
    ) -> list[Lead]:
        """Leads between live casings, oldest first, each with its state from the pair's
        latest decision (:data:`LEAD_STATES`). ``agencies`` (None: all): only leads whose two
        casings both belong to one of them (a viewer sees a lead only if it may see both).
        ``casing`` (a public casing id; None: all): only the leads of that casing."""
        if state is not None and state not in LEAD_STATES:
            raise ValueError(f"lead state must be one of {LEAD_STATES}; got {state!r}")
        where = ["a.deleted = 0", "b.deleted = 0"]
        params: list[Any] = []
        if casing is not None:
            # on the leads' own indexed row ids (UNIQUE(casing_a, casing_b), leads_b), not
            # on the joined public ids, which would scan every lead
            one = "(SELECT id FROM casings WHERE casing_id = ?)"
            where.append(f"(l.casing_a = {one} OR l.casing_b = {one})")
            params += [casing, casing]
        if agencies is not None:
            ags = sorted(agencies)
            marks = ",".join("?" * len(ags)) or "NULL"
            where.append(f"a.agency IN ({marks}) AND b.agency IN ({marks})")
            params += ags + ags
        sql = (
            "SELECT * FROM (SELECT l.id, a.casing_id, b.casing_id, a.agency, b.agency, "
            "a.incident, b.incident, l.score, l.cmc, l.non_match_frequency, l.screen_score, "
            "l.low_confidence, l.low_confidence_reasons, l.flags, l.created_at, d.id, d.time, "
            "d.agency, CASE d.verdict WHEN 'hit' THEN 'confirmed' WHEN 'excluded' THEN "
            "'excluded' WHEN 'inconclusive' THEN 'reviewed' ELSE 'new' END AS state, "
            "l.casing_a, l.casing_b "
            "FROM leads l JOIN casings a ON a.id = l.casing_a JOIN casings b ON b.id = l.casing_b "
            "LEFT JOIN decisions d ON d.id = (SELECT MAX(x.id) FROM decisions x WHERE "
            "(x.casing = l.casing_a AND x.candidate = l.casing_b) OR "
            "(x.casing = l.casing_b AND x.candidate = l.casing_a)) "
            f"WHERE {' AND '.join(where)}) AS t"
        )
        if state is not None:
            sql += " WHERE state = ?"
            params.append(state)
        sql += " ORDER BY 1 LIMIT ? OFFSET ?"
        params += [int(limit), int(offset)]
        rows = self._conn().execute(sql, params).fetchall()
        quality = self.qualities_of({int(r[i]) for r in rows for i in (19, 20)})
        return [
            Lead(
                lead_id=int(r[0]),
                casing_a=str(r[1]),
                casing_b=str(r[2]),
                agency_a=str(r[3]),
                agency_b=str(r[4]),
                incident_a=r[5],
                incident_b=r[6],
                score=r[7],
                cmc=None if r[8] is None else round(float(r[8])),
                non_match_frequency=r[9],
                screen_score=r[10],
                quality_a=quality.get(int(r[19])),
                quality_b=quality.get(int(r[20])),
                low_confidence=bool(r[11]),
                low_confidence_reasons=list(json.loads(r[12] or "[]")),
                flags=list(json.loads(r[13] or "[]")),
                created_at=str(r[14]),
                state=str(r[18]),
                decision_id=None if r[15] is None else int(r[15]),
                decided_at=r[16],
                decided_by_agency=r[17],
            )
            for r in rows
        ]


#: A lead's state, from the pair's latest decision: none -> new; inconclusive -> reviewed;
#: hit -> confirmed; excluded -> excluded.
LEAD_STATES = ("new", "reviewed", "confirmed", "excluded")


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


@dataclass(frozen=True)
class Lead:
    """A pair found by background correlation (``casing_a`` the older), with the scores of
    its full comparison, both scans' quality records and its state (:data:`LEAD_STATES`)."""

    lead_id: int
    casing_a: str
    casing_b: str
    agency_a: str
    agency_b: str
    incident_a: str | None
    incident_b: str | None
    score: float | None
    cmc: int | None
    non_match_frequency: float | None
    screen_score: float | None
    quality_a: dict[str, Any] | None
    quality_b: dict[str, Any] | None
    low_confidence: bool
    low_confidence_reasons: list[str]
    flags: list[str]
    created_at: str
    state: str
    decision_id: int | None = None
    decided_at: str | None = None
    decided_by_agency: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HitEdge:
    """A confirmed hit linking two incidents (or casings without an incident)."""

    a: str
    b: str
    casing_a: str
    casing_b: str
    examiner: str
    agency: str
    time: str
    decision_id: int
    agency_a: str = ""
    agency_b: str = ""
    """The agencies owning incident ``a`` and ``b`` (incidents are scoped per agency)."""


def _migrate_incident_owner(con: sqlite3.Connection) -> None:
    """Upgrade a store whose incidents were global (``incidents.id`` the primary key).

    Old stores let any agency's casing join another agency's incident. Each agency now owns
    its incidents: every (casing agency, incident) pair becomes an incident of that agency
    (metadata kept where the old owner was that agency), and ``casings`` is rebuilt with the
    foreign key ``(agency, incident) -> incidents(agency, id)`` (SQLite cannot alter a
    constraint). Row ids, and with them the FAISS ids and change log, are unchanged.
    """
    row = con.execute("SELECT sql FROM sqlite_master WHERE name = 'incidents'").fetchone()
    if row is None or "PRIMARY KEY(agency, id)" in str(row[0]):
        return  # a new store, or already migrated
    seq = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'casings'").fetchone()
    con.execute("PRAGMA foreign_keys=OFF")  # only outside a transaction; back on below
    try:
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute(
                "CREATE TABLE incidents_v2(agency TEXT NOT NULL REFERENCES agencies(id), id TEXT"
                " NOT NULL, case_number TEXT, date TEXT, place TEXT, PRIMARY KEY(agency, id))"
            )
            con.execute(
                "INSERT OR IGNORE INTO incidents_v2 SELECT agency, id, case_number, date, place"
                " FROM incidents WHERE agency IS NOT NULL"
            )
            con.execute(
                "INSERT OR IGNORE INTO incidents_v2(agency, id) SELECT DISTINCT agency, incident"
                " FROM casings WHERE incident IS NOT NULL"
            )
            con.execute(_CASINGS_TABLE.format(name="casings_v2"))
            con.execute("INSERT INTO casings_v2 SELECT * FROM casings")
            con.execute("DROP TABLE casings")
            con.execute("ALTER TABLE casings_v2 RENAME TO casings")
            con.execute("DROP TABLE incidents")
            con.execute("ALTER TABLE incidents_v2 RENAME TO incidents")
            if seq is not None:
                con.execute(
                    "UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = 'casings'",
                    (int(seq[0]),),
                )
            bad = con.execute("PRAGMA foreign_key_check(casings)").fetchall()
            if bad:
                raise sqlite3.IntegrityError(f"incident migration left broken references: {bad}")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
    finally:
        con.execute("PRAGMA foreign_keys=ON")


def _migrate_surface_blobs(store: Store, batch: int = 64) -> int:
    """Move surfaces stored as BLOBs inside SQLite (the ``surfaces`` table of older stores)
    out into surface files; returns how many moved.

    Batch by batch: each surface's file is written and fsync'ed first, then one transaction
    inserts the ``surface_files`` rows and deletes the BLOBs. A kill at any point leaves every
    surface readable (from its BLOB, or from its file once the row moved) and at most some
    orphan files (found again, content-addressed, on the next open). The freed pages are
    returned to the file system by a VACUUM when anything moved.
    """
    moved = 0
    con = store._conn()
    while True:
        rows = con.execute(
            "SELECT casing, codec, data FROM surfaces ORDER BY casing LIMIT ?", (int(batch),)
        ).fetchall()
        if not rows:
            break
        refs = []
        for rowid, codec, blob in rows:
            raw = decode_surface(str(codec), blob)
            refs.append((int(rowid), raw, store.surface_files.put(raw)))
        with store._write_lock:
            with store._tx() as tx:
                for rowid, raw, ref in refs:
                    tx.execute("DELETE FROM surfaces WHERE casing = ?", (rowid,))
                    store._insert_surface_file(tx, rowid, raw, ref, replace=True)
        moved += len(rows)
    if moved:
        # Give the BLOBs' pages back; a store another connection holds busy keeps them until
        # a later open (nothing is lost, only space).
        with contextlib.suppress(sqlite3.OperationalError):
            con.execute("VACUUM")
    return moved


def _record(row: tuple[Any, ...]) -> CasingRecord:
    return CasingRecord(
        id=int(row[0]),
        casing_id=str(row[1]),
        exhibit_id=row[2],
        incident=row[3],
        caliber=row[4],
        firing_pin_shape=row[5],
        acquisition_date=row[6],
        agency=str(row[7]),
        sha256=str(row[8]),
        filename=row[9],
        format=row[10],
        spacing_m=None if row[11] is None else float(row[11]),
        created_at=str(row[12]),
        deleted=bool(row[13]),
        deleted_reason=row[14],
        deleted_at=row[15],
        superseded_by=None if row[16] is None else int(row[16]),
    )
