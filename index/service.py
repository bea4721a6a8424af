"""The catalog: store of record + one vector index per descriptor region, kept consistent.

Used by the CLI (``ballistics ingest`` / ``search``) and by the gRPC server. Thread-safe: any
number of concurrent searches and reads; writes (ingest, delete, decisions, re-extraction) are
serialised by one lock so the vector indexes apply store changes in ``seq`` order.

Start-up (:meth:`Catalog.open`): each region's snapshot (``<data_dir>/index/<region>.faiss`` +
``.json`` sidecar) is loaded only if its checksum, factory, dimension, extractor version and
store seq check out; changes logged after the snapshot's seq are replayed; then its id set must
equal the store's live ids for that region. Anything else -> rebuilt from the store (never
served). An exclusive ``flock`` on ``<data_dir>/LOCK`` keeps a second writer process out.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np

from .engine import BallisticsEngine, Engine, Processed
from .errors import CatalogLockedError, NotFoundError
from .search import (
    FUSION_WEIGHT,
    RERANK_CAP,
    RERANK_FLOOR,
    RERANK_FRACTION,
    SCREEN_KEY,
    Query,
    RerankPolicy,
    Rescue,
    Screen,
    Searcher,
    SearchResult,
    indexed,
)
from .store import CasingRecord, Decision, Filters, Store, open_store
from .vectors import FaissIndex, SnapshotError, effective_factory
from .vectors_milvus import MilvusIndex, MilvusVectors, parse_vectors_uri

#: A region's vector index: embedded FAISS (default) or a Milvus collection.
RegionIndex = FaissIndex | MilvusIndex

DEFAULT_MAX_FILE_BYTES = 512 * 1024 * 1024


@dataclass
class CatalogConfig:
    """Tunables; every field has a safe default."""

    factory: str | None = None
    """FAISS factory override (None: :func:`index.vectors.choose_factory` on the row count)."""
    ef_search: int = 128
    nprobe: int = 64
    workers: int = 0
    """Re-ranking threads (0: all cores)."""
    rerank_k: int | None = None
    """Descriptor candidates per region (stage 1); None: ``rerank_fraction`` of the casings
    searched, at least ``rerank_floor``, at most ``rerank_cap`` (:class:`RerankPolicy`)."""
    rerank_fraction: float = RERANK_FRACTION
    rerank_floor: int = RERANK_FLOOR
    rerank_cap: int = RERANK_CAP
    compare_k: int = 20
    """How many of them the screen keeps for the full comparison (0: compare every one).
    20 keeps a search under 2 s on 2 cores (RESULTS-search-e2e.md: 1.2 s; 40: 2.1 s)."""
    rescue_head: int = 0
    """The rescue stage (:class:`index.search.Rescue`): stage 2's order up to this position is
    scored by the engine's ``coarse_similarity`` beyond the ``compare_k`` kept, and the best
    ``rescue_k`` of those are compared too. 0 (default): none. It costs
    ``rescue_head - compare_k`` coarse sweeps (~20 ms each) a search."""
    rescue_k: int = 2
    fusion_weight: float | None = FUSION_WEIGHT
    """Stage 2 ranks by descriptor and screen scores fused (:func:`index.search.fused_scores`)
    with this weight on the screen; None: by the screen score alone (before 2026-12)."""
    snapshot_every: int = 500
    """Write index snapshots after this many changes (and on close)."""
    read_only: bool = False
    default_agency: str = "local"
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    auto_reextract: bool = True
    store: str | None = None
    """Where the store of record lives: None (SQLite in the data directory, unless the
    environment variable ``BALLISTICS_STORE`` names a server) or ``postgresql://...``
    (:func:`index.store.open_store`). The data directory then keeps this process's index
    snapshots and lock only."""
    files_dir: str | None = None
    """A PostgreSQL store's shared folder of originals and surfaces (None:
    ``BALLISTICS_FILES``, else the data directory)."""
    vectors: str | None = None
    """Vector engine URI (:func:`index.vectors_milvus.parse_vectors_uri`): None or "faiss" for
    the embedded FAISS indexes (default), ``milvus://host:19530`` or
    ``milvus-lite:///path/vectors.db`` for Milvus."""

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any] | None) -> CatalogConfig:
        if m is None:
            return cls()
        known = {k: v for k, v in m.items() if k in cls.__dataclass_fields__}
        unknown = set(m) - set(known)
        if unknown:
            raise ValueError(f"unknown catalog configuration keys: {sorted(unknown)}")
        return cls(**known)


def _unit_kw(length_unit: Any) -> dict[str, str]:
    """``{"length_unit": unit}`` for an engine's ``process``, or ``{}`` for metres (the default),
    so engines written before the keyword keep working."""
    unit = str(length_unit or "m")
    return {} if unit == "m" else {"length_unit": unit}


def _light_kw(light: Any) -> dict[str, Any]:
    """``{"light": request}`` for an engine's ``process`` when a light was given (anything but
    None / "auto"), else ``{}`` so engines without the keyword keep working."""
    if light is None or getattr(light, "is_auto", False):
        return {}
    return {"light": light}


@dataclass
class Ingested:
    """What one ingest did: the stored record and, when this call stored it, what the
    pipeline computed (``processed``; None for a casing found already stored)."""

    record: CasingRecord
    processed: Processed | None = None

    @property
    def segmentation(self) -> dict[str, Any] | None:
        """What segmentation found (None: not computed by this call, or no segmentation)."""
        return None if self.processed is None else self.processed.segmentation

    @property
    def quality(self) -> dict[str, Any] | None:
        return None if self.processed is None else self.processed.quality


class Catalog:
    """Store + per-region indexes. Create with :meth:`open`; close with :meth:`close`."""

    def __init__(self, data_dir: Path, config: CatalogConfig, engine: Engine, store: Store) -> None:
        self.data_dir = data_dir
        self.config = config
        self.engine = engine
        self.store = store
        self.indexes: dict[str, RegionIndex] = {}
        self.milvus: MilvusVectors | None = None
        """The Milvus connection when ``config.vectors`` names Milvus (else FAISS)."""
        self.applied_seq = 0
        self.extractor_version = str(engine.extractor_version)
        self._write_lock = threading.RLock()
        self._lock_fd: int | None = None
        self._closed = False
        self._last_snapshot_seq = 0
        self._searcher = Searcher(config.workers or None)
        self.repairs: dict[str, str] = {}
        """What start-up did per region: 'loaded', 'replayed N', 'rebuilt: <why>'."""
        self._searching = 0
        self._idle = threading.Condition()
        self._on_add: list[Callable[[CasingRecord], None]] = []

    # -- life cycle --------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str],
        config: CatalogConfig | Mapping[str, Any] | None = None,
        *,
        engine: Engine | None = None,
    ) -> Catalog:
        cfg = config if isinstance(config, CatalogConfig) else CatalogConfig.from_mapping(config)
        d = Path(data_dir)
        d.mkdir(parents=True, exist_ok=True)
        lock_fd = None
        if not cfg.read_only:
            lock_fd = os.open(d / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(lock_fd)
                raise CatalogLockedError(
                    f"data directory {d} is open for writing by another process"
                ) from None
        uri = parse_vectors_uri(cfg.vectors)  # a bad URI fails before anything is opened
        store = open_store(d, cfg.store, files_dir=cfg.files_dir)
        self = cls(d, cfg, engine or BallisticsEngine(), store)
        self._lock_fd = lock_fd
        try:
            if uri.engine == "milvus":
                self.milvus = MilvusVectors(uri, ef_search=cfg.ef_search)
            self._startup()
        except BaseException:
            self.close(snapshot=False)
            raise
        return self

    def _startup(self) -> None:
        with self._write_lock:
            if self.config.auto_reextract and not self.config.read_only:
                if self.store.casings_missing_version(self.extractor_version):
                    reextract(self, rebuild=False)
            self.applied_seq = self.store.seq()
            regions = set(indexed(dict.fromkeys(self.store.regions(self.extractor_version))))
            idx_dir = self.data_dir / "index"
            if self.milvus is not None:
                regions |= set(self.milvus.regions())
            elif idx_dir.is_dir():
                regions |= {p.stem for p in idx_dir.glob("*.faiss")}
            changed = False
            for region in sorted(regions):
                idx, how = self._load_or_rebuild(region)
                self.repairs[region] = how
                changed |= how != "loaded"
                if idx is not None:
                    self.indexes[region] = idx
            self._last_snapshot_seq = self.applied_seq
            if changed and not self.config.read_only:
                self.snapshot()

    def _snapshot_path(self, region: str) -> Path:
        if not region.replace("_", "").isalnum():
            raise ValueError(f"bad region name {region!r}")
        return self.data_dir / "index" / f"{region}.faiss"

    def _index_kwargs(self) -> dict[str, Any]:
        return {"ef_search": self.config.ef_search, "nprobe": self.config.nprobe}

    def _load_or_rebuild(self, region: str) -> tuple[RegionIndex | None, str]:
        if self.milvus is not None:
            return self._load_or_rebuild_milvus(region)
        path = self._snapshot_path(region)
        store_seq = self.applied_seq
        why = "no snapshot"
        if path.exists():
            try:
                idx, side = FaissIndex.load(path, **self._index_kwargs())
                if side.get("extractor_version") != self.extractor_version:
                    raise SnapshotError("extractor version differs")
                if side.get("region") != region:
                    raise SnapshotError("region differs")
                # an unconfigured snapshot written under an older rule (HNSW from 50k rows
                # until 2026-12-05) is rebuilt in the structure the rule now gives
                if idx.factory != effective_factory(idx.count(), idx.dim, self.config.factory):
                    raise SnapshotError("factory differs from the configured or chosen one")
                seq = int(side.get("seq", -1))
                if seq > store_seq or seq < 0:
                    raise SnapshotError(f"snapshot seq {seq} is ahead of the store ({store_seq})")
                n = self._replay(region, idx, seq)
                expect = self.store.live_vector_ids(region, self.extractor_version)
                if not np.array_equal(idx.ids(), expect):
                    raise SnapshotError(
                        f"snapshot holds {idx.count()} rows, the store {len(expect)}"
                    )
                return idx, ("loaded" if n == 0 else f"replayed {n}")
            except (SnapshotError, ValueError, KeyError) as e:
                why = str(e)
        return self._build(region), f"rebuilt: {why}"

    def _attrs(self, ids: np.ndarray) -> builtins.list[tuple[str, str]]:
        """(agency, caliber) of casings, for Milvus's partition-key and scalar fields."""
        recs = self.store.get_many(ids.tolist())
        return [
            (recs[i].agency or "", recs[i].caliber or "") if i in recs else ("", "")
            for i in ids.tolist()
        ]

    def _load_or_rebuild_milvus(self, region: str) -> tuple[RegionIndex | None, str]:
        """The region's Milvus collection if its recorded seq and extractor version check out
        (store changes after that seq are replayed), else rebuilt from the store. A read-only
        catalog never writes to Milvus: it refuses a collection that is not current."""
        assert self.milvus is not None
        store_seq = self.applied_seq
        why = "no collection"
        try:
            idx = self.milvus.open(region, self._attrs)
        except Exception as e:  # a collection of another layout (e.g. made by hand)
            idx, why = None, f"unreadable collection: {type(e).__name__}: {e}"
        if idx is not None:
            try:
                meta = idx.meta()
                if idx.index_type != idx.wanted_type:
                    raise SnapshotError(f"index type {idx.index_type}, {idx.wanted_type} wanted")
                if meta.get("extractor_version") != self.extractor_version:
                    raise SnapshotError("extractor version differs")
                if meta.get("region") != region:
                    raise SnapshotError("region differs")
                seq = int(meta.get("seq", -1))
                if seq > store_seq or seq < 0:
                    raise SnapshotError(f"collection seq {seq} is ahead of the store ({store_seq})")
                n = 0
                if seq < store_seq:
                    if self.config.read_only:
                        raise SnapshotError(f"collection at seq {seq}, store at {store_seq}")
                    n = self._replay(region, idx, seq)
                expect = self.store.live_vector_ids(region, self.extractor_version)
                if not np.array_equal(idx.ids(), expect):
                    raise SnapshotError(
                        f"collection holds {idx.count()} rows, the store {len(expect)}"
                    )
                return idx, ("loaded" if n == 0 else f"replayed {n}")
            except (SnapshotError, ValueError, KeyError) as e:
                why = str(e)
        if self.config.read_only:
            raise SnapshotError(
                f"Milvus collection {self.milvus.collection(region)} is not current ({why}); "
                "open the catalog read-write once (ballistics serve) to rebuild it"
            )
        return self._build(region), f"rebuilt: {why}"

    def _replay(self, region: str, idx: RegionIndex, seq: int) -> int:
        n = 0
        for ch in self.store.changes_since(seq):
            n += 1
            if ch.kind == "reextract":
                raise SnapshotError("descriptors were re-extracted after the snapshot")
            if ch.casing is None:
                continue
            if ch.kind == "add":
                rec = self.store.get_casing(ch.casing, include_deleted=True)
                if rec.deleted or idx.contains(ch.casing):
                    continue
                v = self.store.descriptors_of(ch.casing, self.extractor_version).get(region)
                if v is not None:
                    idx.add(np.array([ch.casing]), v[None, :])
            elif ch.kind == "delete":
                idx.remove([ch.casing])
        return n

    def _build(self, region: str) -> RegionIndex | None:
        n = self.store.count_vectors(region, self.extractor_version)
        if n == 0:
            if self.milvus is not None:
                self.milvus.drop(region)
            with contextlib.suppress(FileNotFoundError):
                self._snapshot_path(region).unlink()
            return None
        batches = self.store.iter_vectors(region, self.extractor_version)
        first = next(iter(self.store.iter_vectors(region, self.extractor_version, batch=1)))
        dim = first[1].shape[1]
        if self.milvus is not None:
            idx = self.milvus.create(region, dim, self._attrs)
            for ids, vecs in batches:
                idx.add(ids, vecs)
            return idx
        return FaissIndex.build(dim, batches, factory=self.config.factory, **self._index_kwargs())

    def rebuild(self, region: str | None = None) -> None:
        """Rebuild one region's index (or all) from the store, then snapshot."""
        with self._write_lock:
            for r in (
                [region]
                if region
                else sorted(
                    set(self.indexes)
                    | set(indexed(dict.fromkeys(self.store.regions(self.extractor_version))))
                )
            ):
                idx = self._build(r)
                if idx is None:
                    self.indexes.pop(r, None)
                else:
                    self.indexes[r] = idx
            self.applied_seq = self.store.seq()
            self.snapshot()

    def snapshot(self) -> None:
        """Write every region's index snapshot (atomic) recording the applied store seq."""
        if self.config.read_only:
            return
        with self._write_lock:
            for region, idx in list(self.indexes.items()):
                idx.snapshot(
                    self._snapshot_path(region),
                    {
                        "region": region,
                        "seq": self.applied_seq,
                        "extractor_version": self.extractor_version,
                    },
                )
            self._last_snapshot_seq = self.applied_seq

    def _after_change(self) -> None:
        if self.config.read_only:
            return
        if self.applied_seq - self._last_snapshot_seq >= self.config.snapshot_every:
            if not self.config.factory:  # grow Flat -> HNSW -> IVF as the rule says
                for region, idx in list(self.indexes.items()):
                    if not isinstance(idx, FaissIndex):
                        continue  # Milvus builds and grows its own index
                    if effective_factory(idx.count(), idx.dim) != idx.factory:
                        self.indexes[region] = FaissIndex.build(
                            idx.dim,
                            self.store.iter_vectors(region, self.extractor_version),
                            **self._index_kwargs(),
                        )
            self.snapshot()

    def close(self, *, snapshot: bool = True) -> None:
        """Snapshot (unless told not to) and release everything; idempotent."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            if snapshot and self.applied_seq != self._last_snapshot_seq:
                with contextlib.suppress(OSError):
                    self.snapshot()
            self._searcher.close()
            if self.milvus is not None:
                self.milvus.close()
            self.store.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes ------------------------------------------------------------------------------
    def ingest_bytes(
        self, data: bytes, filename: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> CasingRecord:
        """Process and store one scan; returns its record once the COMMIT is durable.

        ``metadata`` keys (all optional): casing_id, exhibit_id, incident (or incident_id),
        case_number, place, caliber, agency, date (acquisition date YYYY-MM-DD), spacing_um,
        length_unit (of an X3P's lengths: "m", the default, or "um"; see
        :func:`ballistics.x3p.read_x3p`; recorded in the stored surface's provenance).
        Idempotent: the same bytes from the same agency return the existing record
        (``created=False``). Bad input raises ``ValueError`` (``BallisticsError``).
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ValueError("empty upload")
        data = bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        return self._ingest(data, len(data), sha, filename, metadata).record

    def ingest_file(
        self,
        path: Path,
        filename: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        sha256: str,
    ) -> Ingested:
        """:meth:`ingest_bytes` for a file the caller has written and hashed (an upload spooled
        to disk): the content is not hashed again, the reader reads it from the file, and the
        original is copied into the store block by block. ``sha256``: the file's digest (hex).
        Returns the record with the segmentation and quality the pipeline computed."""
        if not _is_sha256(sha256):
            # Content addressing trusts this digest: a wrong one would file the scan under
            # another scan's address (and find that scan as "already stored").
            raise ValueError(
                f"ingest_file: sha256 must be the file's 64-hex-digit SHA-256, got {sha256!r}"
            )
        return self._ingest(path, path.stat().st_size, sha256, filename, metadata)

    def _ingest(
        self,
        source: bytes | Path,
        size: int,
        sha: str,
        filename: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> Ingested:
        """Hashed content (bytes or a file) -> stored casing; the one ingest path."""
        if self.config.read_only:
            raise PermissionError("catalog is open read-only")
        md = dict(metadata or {})
        if size == 0:
            raise ValueError("empty upload")
        if size > self.config.max_file_bytes:
            raise ValueError(f"file is {size} bytes; the limit is {self.config.max_file_bytes}")
        agency = str(md.get("agency") or self.config.default_agency)
        existing = self.store.find_by_sha(sha, agency)
        if existing is not None:
            return Ingested(existing)
        spacing_um = md.get("spacing_um")
        spacing_m = None if spacing_um in (None, "") else float(spacing_um) * 1e-6
        with self._interactive():  # background correlation waits while a scan is prepared
            proc = self.engine.process(
                source,
                filename,
                spacing_m,
                **_unit_kw(md.get("length_unit")),
                **_light_kw(md.get("light")),
            )
        with self._write_lock:
            rec, seq = self.store.add_casing(
                original=source,
                sha256=sha,
                agency=agency,
                descriptors=proc.descriptors,
                extractor_version=self.extractor_version,
                surface=proc.surface,
                casing_id=md.get("casing_id") or None,
                exhibit_id=md.get("exhibit_id") or None,
                incident=md.get("incident") or md.get("incident_id") or None,
                case_number=md.get("case_number") or None,
                place=md.get("place") or None,
                caliber=md.get("caliber") or None,
                firing_pin_shape=proc.firing_pin_shape,
                acquisition_date=md.get("date") or md.get("acquisition_date") or None,
                filename=filename,
                format=proc.format,
                spacing_m=proc.spacing_m,
                quality=proc.quality,
            )
            if rec.created and self.store.shared:
                self._catch_up()  # other processes' changes up to and including this one
            elif rec.created:
                self._apply_add(rec.id, proc.descriptors)
                self.applied_seq = seq
                self._after_change()
        if rec.created:
            for fn in list(self._on_add):
                fn(rec)
        return Ingested(rec, proc if rec.created else None)

    def on_add(self, fn: Callable[[CasingRecord], None]) -> None:
        """Call ``fn(record)`` after each casing this catalog stores (after its COMMIT; e.g. to
        wake the correlation worker). ``fn`` must be quick and must not raise."""
        self._on_add.append(fn)

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no interactive search or ingest is running, or ``timeout_s`` passed;
        True when idle. Background work calls it between comparisons so requests keep the
        cores."""
        with self._idle:
            return self._idle.wait_for(lambda: self._searching == 0, timeout_s)

    @contextlib.contextmanager
    def _interactive(self) -> Iterator[None]:
        with self._idle:
            self._searching += 1
        try:
            yield
        finally:
            with self._idle:
                self._searching -= 1
                if self._searching == 0:
                    self._idle.notify_all()

    def _apply_add(
        self, rowid: int, descriptors: Mapping[str, np.ndarray], *, skip_present: bool = False
    ) -> None:
        """Add one casing's descriptors to each region's index (created when new).
        ``skip_present``: an index that has the id already is left alone (replaying changes)."""
        for region, v in indexed(descriptors).items():
            vec = np.ascontiguousarray(v, dtype=np.float32).reshape(1, -1)
            idx = self.indexes.get(region)
            if idx is None and self.milvus is not None:
                idx = self.milvus.open(region, self._attrs)  # another server may have made it
                if idx is not None:
                    self.indexes[region] = idx
            if idx is not None and (skip_present or self.milvus is not None):
                if idx.contains(rowid):
                    continue
            if isinstance(idx, MilvusIndex) and self.config.read_only:
                idx.mark([rowid], live=True)  # the writer stores the row; never write here
                continue
            if idx is None:
                if self.milvus is not None:
                    if self.config.read_only:
                        continue  # no collection yet: the writer makes it, a later sync finds it
                    idx = self.milvus.create(region, vec.shape[1], self._attrs)
                else:
                    f = effective_factory(0, vec.shape[1], self.config.factory)
                    idx = FaissIndex(vec.shape[1], f, **self._index_kwargs())
                self.indexes[region] = idx
            idx.add(np.array([rowid], dtype=np.int64), vec)

    def delete(self, casing_id: str, reason: str) -> CasingRecord:
        """Soft-delete (kept for audit); removed from every index without a rebuild."""
        with self._write_lock:
            rec, seq = self.store.delete_casing(casing_id, reason)
            if self.store.shared:
                self._catch_up()
                return rec
            for idx in self.indexes.values():
                idx.remove([rec.id])
            self.applied_seq = seq
            self._after_change()
        return rec

    def sync(self) -> int:
        """Apply the changes other processes committed to the store since this catalog's
        ``applied_seq`` (several servers on PostgreSQL; a read-only replica beside a SQLite
        writer); returns how many. Searches call it first, so every server answers from the
        same casings. A read-only catalog on Milvus only updates its id mirror (the writer that
        made the change writes the rows); re-extracted descriptors rebuild the indexes."""
        if self.store.seq() == self.applied_seq:
            return 0
        with self._write_lock:
            return self._catch_up()

    def _catch_up(self) -> int:
        """Replay the store's changes after ``applied_seq`` into the indexes (under the write
        lock). The store commits changes in ``seq`` order (index/store_pg.py), so nothing
        committed later can carry a smaller number."""
        changes = self.store.changes_since(self.applied_seq)
        if not changes:
            return 0
        if any(ch.kind == "reextract" for ch in changes):
            self.rebuild()  # descriptors changed under us: rebuild from the store
            return len(changes)
        for ch in changes:
            if ch.casing is None:
                continue
            if ch.kind == "delete":
                for idx in self.indexes.values():
                    if isinstance(idx, MilvusIndex) and self.config.read_only:
                        idx.mark([ch.casing], live=False)
                    else:
                        idx.remove([ch.casing])
                continue
            rec = self.store.get_casing(ch.casing, include_deleted=True)
            if rec.deleted:
                continue
            descs = self.store.descriptors_of(ch.casing, self.extractor_version)
            fresh = {
                r: v
                for r, v in indexed(descs).items()
                if r not in self.indexes or not self.indexes[r].contains(ch.casing)
            }
            if fresh:
                self._apply_add(ch.casing, fresh)
        self.applied_seq = changes[-1].seq
        self._after_change()
        return len(changes)

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
        with self._write_lock:
            return self.store.record_decision(
                casing_id, candidate_id, verdict, examiner=examiner, comment=comment, agency=agency
            )

    # -- reads -------------------------------------------------------------------------------
    def get(self, casing_id: str) -> CasingRecord:
        """NotFoundError ('no casing with id ...') when absent or deleted."""
        return self.store.get_casing(casing_id)

    def list(
        self, filters: Filters | None = None, *, limit: int = 1000, offset: int = 0
    ) -> builtins.list[CasingRecord]:
        return self.store.list_casings(filters, limit=limit, offset=offset)

    def decisions(self, casing_id: str) -> builtins.list[Decision]:
        return self.store.decisions_for(casing_id)

    def links(
        self,
        *,
        casing_id: str | None = None,
        incident_id: str | None = None,
        agency: str | None = None,
        agencies: Iterable[str] | None = None,
    ) -> dict:
        """See :meth:`index.store.Store.links` (incidents are scoped per agency)."""
        return self.store.links(
            casing_id=casing_id, incident_id=incident_id, agency=agency, agencies=agencies
        )

    def prepared(self, casing_id: str) -> Any:
        """The stored PreparedCasing of a casing (for a remote compare)."""
        rec = self.get(casing_id)
        surface = self.store.load_surface(rec.id)
        if surface is None:
            raise NotFoundError(f"no stored surface for casing {casing_id}")
        return self.engine.load(surface)

    def stats(self) -> dict[str, Any]:
        return {
            "casings": self.store.count_live(),
            "seq": self.applied_seq,
            "extractor_version": self.extractor_version,
            "indexes": {
                r: {"rows": i.count(), "factory": i.factory, "dim": i.dim}
                for r, i in self.indexes.items()
            },
            "repairs": dict(self.repairs),
        }

    def make_query(
        self,
        query: str | bytes | Query | Any,
        *,
        spacing_um: float | None = None,
        length_unit: str = "m",
        light: Any = None,
    ) -> Query:
        """Resolve a casing id (str), scan file bytes, a prepared casing or a Query.
        ``spacing_um``, ``length_unit`` and ``light`` apply to file bytes only."""
        if isinstance(query, Query):
            return query
        if isinstance(query, str):
            rec = self.get(query)
            descs = self.store.descriptors_of(rec.id, self.extractor_version)
            surface = self.store.load_surface(rec.id)
            prepared = self.engine.load(surface) if surface is not None else None
            return Query(descs, prepared, rowid=rec.id, casing_id=rec.casing_id, sha256=rec.sha256)
        if isinstance(query, bytes | bytearray):
            sp = None if spacing_um is None else spacing_um * 1e-6
            proc = self.engine.process(
                bytes(query), None, sp, **_unit_kw(length_unit), **_light_kw(light)
            )
            return Query(proc.descriptors, proc.prepared, sha256=hashlib.sha256(query).hexdigest())
        return Query(self.engine.describe(query), query)

    def search(
        self,
        query: str | bytes | Query | Any,
        *,
        top: int = 10,
        rerank_k: int | None = None,
        compare_k: int | None = None,
        filters: Filters | None = None,
        deadline_s: float | None = None,
        spacing_um: float | None = None,
        length_unit: str = "m",
        light: Any = None,
        rescue_head: int | None = None,
    ) -> SearchResult:
        """Staged search (see :mod:`index.search`). ``query``: stored casing id (excluded
        from its own results), scan file bytes (not stored), or a prepared casing. Visible
        casings holding the query's very file (same SHA-256) are not ranked but listed in
        ``SearchResult.identical``.
        ``rerank_k``: descriptor candidates per region (None: the configured value, by default
        2 % of the casings searched, at least 200, at most 4000); ``compare_k``: how many of
        them stage 2 (screen and descriptor scores fused) keeps for the full comparison
        (0: all; None: the configured value, by default 20);
        ``length_unit``: of an X3P query file ("m" or "um"); ``light``: of a 2-D query file
        (``ballistics.light.LightRequest``; None: detected); ``rescue_head``: the rescue
        stage's reach (:attr:`CatalogConfig.rescue_head`; None: the configured value, 0: no
        rescue)."""
        keep = self.config.compare_k if compare_k is None else int(compare_k)
        if keep < 0:
            raise ValueError(f"compare_k must be >= 0 (0: compare every candidate); got {keep}")
        head = self.config.rescue_head if rescue_head is None else int(rescue_head)
        if head < 0:
            raise ValueError(f"rescue_head must be >= 0 (0: no rescue); got {head}")
        self.sync()
        with self._interactive():
            return self._search(
                query,
                top,
                rerank_k,
                keep,
                filters,
                deadline_s,
                spacing_um,
                length_unit,
                light,
                head,
            )

    def _search(
        self,
        query: str | bytes | Query | Any,
        top: int,
        rerank_k: int | None,
        keep: int,
        filters: Filters | None,
        deadline_s: float | None,
        spacing_um: float | None,
        length_unit: str,
        light: Any,
        rescue_head: int = 0,
    ) -> SearchResult:
        q = self.make_query(query, spacing_um=spacing_um, length_unit=length_unit, light=light)
        coarse_fn = getattr(self.engine, "coarse_similarity", None)
        rescue = (
            Rescue(coarse_fn, rescue_head, self.config.rescue_k)
            if rescue_head and coarse_fn is not None
            else None
        )
        screen_fn = self.engine.screen
        screen = None
        if keep and screen_fn is not None:
            version = self.extractor_version
            screen = Screen(
                score_fn=screen_fn,
                load_fn=lambda ids: self.store.vectors_of(ids, SCREEN_KEY, version),
                keep=max(keep, top),
                fusion_weight=self.config.fusion_weight,
            )
        return self._searcher.search(
            self.store,
            dict(self.indexes),
            q,
            top=top,
            rerank_k=rerank_k or self.config.rerank_k,
            rerank_policy=RerankPolicy(
                self.config.rerank_fraction, self.config.rerank_floor, self.config.rerank_cap
            ),
            filters=filters,
            deadline_s=deadline_s,
            score_fn=self.engine.score,
            load_fn=self.engine.load,
            nmf_fn=partial(
                self.engine.non_match_frequency,
                kind=getattr(q.prepared, "kind", "topography"),
            ),
            screen=screen,
            rescue=rescue,
        )

    def check(self, out: IO[str] = sys.stderr, *, verify_surfaces: bool = True) -> bool:
        """True when every index holds exactly the store's live ids for its region and every
        live casing's surface file is present and intact (``verify_surfaces``: re-hashing
        each file; False: only present with its recorded size). Problems, and surface files
        no casing uses (harmless), are printed to ``out``."""
        ok = True
        for region, idx in self.indexes.items():
            expect = self.store.live_vector_ids(region, self.extractor_version)
            if not np.array_equal(idx.ids(), expect):
                print(f"index {region}: {idx.count()} rows, store {len(expect)}", file=out)
                ok = False
        problems, notes = self.store.check_surfaces(verify_hashes=verify_surfaces)
        for line in problems:
            print(line, file=out)
        if notes:
            print(
                f"{len(notes)} surface file(s) used by no casing (left by an interrupted write "
                f"or delete; Store.collect_garbage removes them), e.g. {notes[0]}",
                file=out,
            )
        return ok and not problems


def reextract(catalog: Catalog, *, rebuild: bool = True, batch: int = 64) -> int:
    """Recompute descriptors of every live casing lacking ``catalog.extractor_version`` (after
    the descriptor code changed), from the stored prepared surface - or, when none is stored,
    from the original file. Old-version descriptors are dropped when all are done; then the
    indexes are rebuilt. Returns how many casings were re-described."""
    store = catalog.store
    eng = catalog.engine
    version = catalog.extractor_version
    todo = store.casings_missing_version(version)
    pending: dict[int, dict[str, Any]] = {}
    n = 0
    for rowid in todo:
        surface = store.load_surface(rowid)
        if surface is not None:
            descs = eng.describe(eng.load(surface))
        else:
            rec = store.get_casing(rowid)
            proc = eng.process(store.read_object(rec.sha256), rec.filename, rec.spacing_m)
            store.put_surface(rowid, proc.surface)
            if proc.quality is not None:
                store.put_quality(rowid, proc.quality)
            descs = proc.descriptors
        pending[rowid] = descs
        n += 1
        if len(pending) >= batch:
            store.replace_descriptors(pending, version)
            pending = {}
    if pending:
        store.replace_descriptors(pending, version)
    if n:
        store.drop_other_versions(version)
    if rebuild:
        catalog.rebuild()
    return n


def _is_sha256(s: str) -> bool:
    return len(s) == 64 and all(c in "0123456789abcdef" for c in s)
