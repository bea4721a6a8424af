"""The store of record on PostgreSQL: :class:`index.store.Store`'s semantics, shared by many
server and worker processes.

Open with :func:`index.store.open_store` (``postgresql://user@host:port/db`` and a shared
folder for the files). What differs from SQLite, and why:

* **Rows** live in PostgreSQL (schema: ``index/migrations/postgresql``); **originals and
  prepared surfaces** stay content-addressed files (:mod:`index.blobs`) in a folder every
  process mounts (NFS, a shared volume). Files are written and fsync'ed before the row that
  names them commits, as on SQLite. An object-store layout (S3 and kin) maps key for key:
  ``objects/ab/cdef...`` and ``surfaces/ab/cd/abcd...`` (docs/deployment.md); not built here.
* **Writers are serialised across processes** by a transaction-scoped advisory lock
  (``pg_advisory_xact_lock(1, 0)``) taken first in every write transaction, the counterpart of
  SQLite's ``BEGIN IMMEDIATE``. Why: the change log's ``seq`` must become visible in commit
  order, or a server catching up from "last seq applied" could skip a change committed late
  with a smaller number. Writes are short (files are written before the transaction), so one
  writer at a time is not the bottleneck; scan preparation runs in parallel everywhere.
* **Correlation jobs** are taken with ``SELECT ... FOR UPDATE SKIP LOCKED`` (no global lock),
  and the worker holds a session advisory lock ``(2, casing)`` while it runs the job. A job
  left 'running' whose lock nobody holds belongs to a dead process (PostgreSQL drops a killed
  client's locks with its connection) and :meth:`PgStore.requeue_running_jobs` puts it back;
  a live worker's job is never requeued, so no job runs twice at once and none is lost.
* **Row-level security** per agency (migration 0002): :meth:`PgStore.acting_for` sets the
  session's ``app.agency`` / ``app.agencies``; unset, a session is the trusted service.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg.types.numeric import FloatDumper, Int8Dumper

from .blobs import BlobStore
from .migrations import apply_postgresql
from .store import Store, _now

#: Advisory lock namespaces (the first key of pg_advisory_*lock(int, int)).
WRITE_LOCK = 1
JOB_LOCK = 2


@functools.lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    """sqlite3's ``?`` placeholders as psycopg's ``%s`` (and a literal ``%`` escaped). The
    store's SQL has no ``?`` inside string literals."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgConnection:
    """A psycopg connection that speaks sqlite3's ``execute(sql, params)`` with ``?``
    placeholders, so :class:`Store`'s SQL runs on both engines unchanged."""

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Iterable[Any] | None = None) -> psycopg.Cursor[Any]:
        if params is None:
            return self.raw.execute(sql)
        return self.raw.execute(_pg_sql(sql), list(params))

    def executemany(self, sql: str, seq: Iterable[Iterable[Any]]) -> psycopg.Cursor[Any]:
        cur = self.raw.cursor()
        cur.executemany(_pg_sql(sql), [list(p) for p in seq])
        return cur

    def close(self) -> None:
        self.raw.close()


def _connect(url: str) -> psycopg.Connection[Any]:
    raw = psycopg.connect(url, autocommit=True)
    # numpy integers and floats reach the store from callers that index arrays
    raw.adapters.register_dumper(np.int64, Int8Dumper)
    raw.adapters.register_dumper(np.int32, Int8Dumper)
    raw.adapters.register_dumper(np.float64, FloatDumper)
    raw.adapters.register_dumper(np.float32, FloatDumper)
    return raw


class PgStore(Store):
    """The store of record on PostgreSQL. ``url``: a libpq URL (``postgresql://...``);
    ``files_dir``: the folder of originals and surfaces, shared by every process of the
    deployment (created if absent)."""

    engine = "postgresql"
    shared = True
    legacy_blobs = False

    def __init__(self, url: str, files_dir: str | os.PathLike[str]) -> None:
        self.url = url
        self.data_dir = Path(files_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.objects_dir = self.data_dir / "objects"
        self.surface_files = BlobStore(self.data_dir / "surfaces")
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._conns: list[Any] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        self._held_jobs: set[int] = set()
        try:
            con = self._conn()
        except psycopg.OperationalError as e:
            raise ConnectionError(
                f"cannot connect to the PostgreSQL store {redact(url)}: {e}. Check that the "
                "server runs and the URL (user, host, port, database) is right."
            ) from None
        apply_postgresql(con.raw)

    def __repr__(self) -> str:
        return f"PgStore({redact(self.url)}, files={self.data_dir})"

    # -- connections -------------------------------------------------------------------------
    def _conn(self) -> PgConnection:
        if self._closed:
            raise RuntimeError("store is closed")
        con: PgConnection | None = getattr(self._local, "con", None)
        if con is not None and (con.raw.closed or con.raw.broken):
            con = None  # the server restarted or dropped us: reconnect (the old tx is gone)
        if con is None:
            con = PgConnection(_connect(self.url))
            self._local.con = con
            with self._conns_lock:
                self._conns.append(con)
        return con

    @contextlib.contextmanager
    def _tx(self, *, serial: bool = True) -> Iterator[PgConnection]:
        """One write transaction. ``serial``: first take the cross-process writer lock (see
        the module doc); job taking runs without it (SKIP LOCKED)."""
        with self._write_lock:
            con = self._conn()
            con.raw.execute("BEGIN")
            try:
                if serial:
                    con.raw.execute("SELECT pg_advisory_xact_lock(%s, 0)", (WRITE_LOCK,))
                yield con
            except BaseException:
                with contextlib.suppress(psycopg.Error):
                    con.raw.execute("ROLLBACK")
                raise
            con.raw.execute("COMMIT")

    def close(self) -> None:
        with self._conns_lock:
            for con in self._conns:
                with contextlib.suppress(psycopg.Error):
                    con.close()
            self._conns.clear()
        self._closed = True

    # -- row-level security ------------------------------------------------------------------
    @contextlib.contextmanager
    def acting_for(
        self, agency: str | None, readable: Iterable[str] | None = None
    ) -> Iterator[None]:
        """Within the block, this thread's session writes only ``agency``'s rows and reads
        only casings and incidents of ``readable`` (None: unrestricted), enforced by the
        database's row-level security (migration 0002), whatever the SQL asks."""
        con = self._conn()
        ags = None if readable is None else ",".join(sorted(readable))
        if ags is not None and not ags:
            ags = ","  # no agency ('' is never one): an empty list restricts to nothing
        con.raw.execute(
            "SELECT set_config('app.agency', %s, false), set_config('app.agencies', %s, false)",
            (agency or "", ags or ""),
        )
        try:
            yield
        finally:
            with contextlib.suppress(psycopg.Error):
                con.raw.execute(
                    "SELECT set_config('app.agency', '', false), "
                    "set_config('app.agencies', '', false)"
                )

    # -- large reads -------------------------------------------------------------------------
    def iter_vectors(
        self, region: str, extractor_version: str, *, batch: int = 65536
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """As :meth:`Store.iter_vectors`, through a server-side cursor on its own connection
        (a client cursor would hold every vector in memory at once)."""
        with _connect(self.url) as raw, raw.transaction():
            with raw.cursor(name="iter_vectors") as cur:
                cur.itersize = batch
                cur.execute(
                    "SELECT d.casing, d.vector FROM descriptors d JOIN casings c ON "
                    "c.id = d.casing WHERE d.region = %s AND d.extractor_version = %s AND "
                    "c.deleted = 0 ORDER BY d.casing",
                    (region, extractor_version),
                )
                while rows := cur.fetchmany(batch):
                    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                    yield ids, np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])

    # -- shared files ------------------------------------------------------------------------
    def _drop_unreferenced(self, sha256: str) -> bool:
        # Under the cross-process writer lock: another process's add of the same content
        # re-checks the file under that lock (Store._insert_surface_file) and writes it again.
        with self._tx() as con:
            row = con.execute(
                "SELECT 1 FROM surface_files WHERE sha256 = ? LIMIT 1", (sha256,)
            ).fetchone()
            return row is None and self.surface_files.delete(sha256)

    def collect_garbage(self) -> int:
        """Remove surface files no row refers to (under the writer lock, see
        :meth:`_drop_unreferenced`). Temporary files are left alone: in a shared folder they
        may be another process's write in flight."""
        n = 0
        with self._tx() as con:
            refs = {str(r[0]) for r in con.execute("SELECT DISTINCT sha256 FROM surface_files")}
            for sha in list(self.surface_files.iter_shas()):
                if sha not in refs:
                    n += int(self.surface_files.delete(sha))
        return n

    # -- correlation jobs --------------------------------------------------------------------
    def take_job(self, worker: str, *, max_attempts: int = 3) -> int | None:
        """As :meth:`Store.take_job`, safe with any number of workers in any number of
        processes: the oldest pending job not locked by another taker (``FOR UPDATE SKIP
        LOCKED``), held by this session's advisory lock until it is finished, failed or
        released."""
        with self._tx(serial=False) as con:
            while True:
                row = con.execute(
                    "SELECT casing, attempts FROM correlation_jobs WHERE state = 'pending' "
                    "ORDER BY casing LIMIT 1 FOR UPDATE SKIP LOCKED"
                ).fetchone()
                if row is None:
                    return None
                rowid, attempts = int(row[0]), int(row[1])
                if attempts >= max_attempts:
                    con.execute(
                        "UPDATE correlation_jobs SET state = 'failed', finished_at = ?, "
                        "error = ? WHERE casing = ?",
                        (_now(), f"gave up after {attempts} attempts", rowid),
                    )
                    continue
                # Session-level: survives this COMMIT, dies with the connection.
                con.execute("SELECT pg_advisory_lock(?, ?)", (JOB_LOCK, rowid))
                self._held_jobs.add(rowid)
                con.execute(
                    "UPDATE correlation_jobs SET state = 'running', attempts = attempts + 1, "
                    "started_at = ?, worker = ? WHERE casing = ?",
                    (_now(), worker, rowid),
                )
                return rowid

    def _unhold(self, rowid: int) -> None:
        if int(rowid) in self._held_jobs:
            self._held_jobs.discard(int(rowid))
            with contextlib.suppress(psycopg.Error):
                self._conn().execute("SELECT pg_advisory_unlock(?, ?)", (JOB_LOCK, int(rowid)))

    def finish_job(
        self, rowid: int, leads: Iterable[Any], *, n_screened: int, n_compared: int
    ) -> int:
        try:
            return super().finish_job(rowid, leads, n_screened=n_screened, n_compared=n_compared)
        finally:
            self._unhold(rowid)

    def release_job(self, rowid: int) -> None:
        try:
            super().release_job(rowid)
        finally:
            self._unhold(rowid)

    def fail_job(self, rowid: int, error: str, *, retry: bool) -> None:
        try:
            super().fail_job(rowid, error, retry=retry)
        finally:
            self._unhold(rowid)

    def requeue_running_jobs(self) -> int:
        """Put back to 'pending' the running jobs whose worker is gone (nobody holds their
        advisory lock); safe to call at any time from any process."""
        n = 0
        con = self._conn()
        running = [
            int(r[0])
            for r in con.execute("SELECT casing FROM correlation_jobs WHERE state = 'running'")
        ]
        for rowid in running:
            if rowid in self._held_jobs:
                continue  # this store's own job in hand
            got = con.execute("SELECT pg_try_advisory_lock(?, ?)", (JOB_LOCK, rowid)).fetchone()
            if not (got and got[0]):
                continue  # a live worker holds it
            try:
                with self._tx() as tx:
                    n += tx.execute(
                        "UPDATE correlation_jobs SET state = 'pending', worker = NULL "
                        "WHERE casing = ? AND state = 'running'",
                        (rowid,),
                    ).rowcount
            finally:
                con.execute("SELECT pg_advisory_unlock(?, ?)", (JOB_LOCK, rowid))
        return n


def redact(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparseable PostgreSQL URL>"
    info.pop("password", None)
    user, host = info.get("user", ""), info.get("host", "")
    return f"postgresql://{user}@{host}:{info.get('port', '')}/{info.get('dbname', '')}"
