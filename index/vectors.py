"""Vector index for the coarse (descriptor) stage: a small interface and a FAISS implementation.

Scores are inner products of L2-normalised float32 vectors (cosine similarity, higher is
better). Ids are the store's int64 casing row ids.

Choice of FAISS structure (:func:`choose_factory`, overridable by configuration)
--------------------------------------------------------------------------------
* ``n < 5_000_000``: ``IDMap2,Flat`` - exact brute force, one GEMV per query: at k = 2,001
  and 144 dimensions, one thread, 2-3 ms at 100k rows, 19-23 ms at 1 M and 82-96 ms at 4 M
  on a busy machine (``benchmarks/scale_stage1.py --flat-timing``), small beside the full
  comparisons a search runs after it.
  Until 2026-12-05 ``IDMap2,HNSW32,Flat`` was chosen from 50k rows. HNSW is fast on vectors
  spread like the bulk of the store, but a query whose mates form a small cluster apart from
  it (one gun's casings, one scanner's) can be walked past: among 100k distractors, HNSW at
  efSearch 2,001 missed mates that exact search ranks 1st and 2nd (seed-401 confocal and
  photometric-stereo queries: 0.900 of mate pairs in the top 2,001 against 0.978 exact;
  ``benchmarks/scale_stage1.py``).
  HNSW stays available by configuration (``factory="HNSW32,Flat"``, efSearch configurable).
* ``n >= 5_000_000``: ``IVF4096,SQfp16`` (``IVF16384,SQfp16`` from 16 M) - inverted lists with
  the residuals stored as float16 (2 bytes per dimension, half of float32); ``nprobe``
  configurable (default 64). Needs training; if there are fewer than 39 x nlist rows, Flat is
  used. :meth:`FaissIndex.build` holds all rows at once (it trains on a sample of them);
  :meth:`FaissIndex.from_training_sample` trains on a sample only, and the rows are then added
  batch by batch, which keeps the memory to the compressed index plus one batch.
  Why SQfp16 and not SQ8 (``benchmarks/RESULTS-search-core.md``, 10 M x 144, clustered data):
  SQ8 caps recall@100 at 0.926 whatever nprobe (the 8-bit code reorders near-tied neighbours);
  SQfp16 gives 0.9987 from nprobe 8 on, 2.1 ms median at nprobe 64 on one thread (as fast as
  SQ8), 3.1 GB of index (SQ8: 1.7 GB), 5.1 GiB peak RSS for the whole build-and-benchmark
  process, 126 s to build on 2 idle cores. A refine stage
  (``IVF,SQ8,Refine(...)``) is not supported here: IndexRefine has no ``add_with_ids`` /
  ``remove_ids`` and, behind IDMap2, ignores the IDSelector (it returns excluded ids).

Filtered search
---------------
Filters (calibre, firing-pin shape, dates, agencies) become a set of allowed ids. The ids are
turned into a live count and a bitmap with vectorised numpy, once per query: a sparse filter
(fewer ids than 1/64 of the id space) is sorted/deduplicated and checked against the live mask;
a dense one is scattered into a bool mask and ANDed with it (at 10 M rows: about 16 ms for a
filter listing every row, 9 ms for 5 M ids, 2 ms for 100k-200k - mostly the cost of reading the
ids; the previous code took 48 ms / 35 ms at 10 M / 5 M). A filter that keeps every live row is
a plain search. Then a planner picks, per index kind:

* ``selector``: the search runs *inside* FAISS with an ``IDSelectorBitmap`` passed in
  ``SearchParameters``.
* ``exact-subset``: exact top-k over exactly the allowed rows, scored on the index's own vectors:
  for Flat/HNSW ``IndexFlat.compute_distance_subset`` on the float32 storage (no copy; 20k rows
  scored in 1.7 ms where reconstructing them alone took 3.4 ms); for IVF the vectors decoded
  from the codes (the index's only copy, 1.1-2.4 us per row) and ``faiss.knn``. Both run in
  FAISS and follow ``faiss.omp_set_num_threads`` (numpy's BLAS did not).

HNSW (and Flat): HNSW with a selector loses recall when the filter is narrow (the graph walk is
spent on excluded nodes), so the plan is ``exact-subset`` when the allowed subset has at most
``exact_max_rows`` (100k) rows or at most ``exact_fraction`` (2 %) of the rows (capped at 250k
rows); otherwise ``selector`` with efSearch scaled up by 1/selectivity (capped at 4096). The
selector's recall depends on how clustered the vectors are: at 1 M rows and a 10 % filter it was
0.974 on the search-core data but 0.856 on the clustered data of
``benchmarks/vector_engines.py``, so filters up to 100k rows are scored exactly (~9 ms a query
at 100k rows, RESULTS-vector-engines.md). For Flat, selector search is exact anyway.

IVF: an IVF scan with a selector skips excluded ids cheaply and stays accurate as long as the
probed lists hold enough allowed rows, so the plan is ``selector`` down to
``ivf_exact_max_rows`` (4,000) allowed rows and ``exact-subset`` only below, with nprobe raised
for narrow filters to ``ceil(ivf_scan_factor x k x nlist / n_allowed)`` (``ivf_scan_factor`` 8,
capped at nlist; :meth:`FaissIndex.ivf_nprobe`), i.e. the probed lists hold about 8 x k allowed
rows. Measured at 10 M rows (``IVF4096,SQfp16``, random filters, k = 100, one thread): at
nprobe 64 the selector keeps recall@100 >= 0.99 down to 50k allowed rows but falls to 0.87 /
0.65 / 0.31 / 0.15 at 10k / 5k / 2k / 1k; 5-8 x k allowed rows in the probed lists give
>= 0.99 again (10k rows: nprobe 256 -> 0.996; 5k: 512 -> 0.996; 2k: 1024 -> 0.998). With the
boost the planner measured recall@100 >= 0.993 at every selectivity from 100 % to 0.01 %.
Cost: the boosted selector scans about 7-8 us per probed list (4.5-5.2 ms per query at 10k
allowed rows, 7.0-7.5 ms at 5k); exact-subset decodes 1.1-2.4 us per allowed row (1.1-1.6 ms
at 1k, 2.1-3.7 ms at 2k, 4.6-9.6 ms at 4k, 10-11 ms at 5k, 21 ms at 10k, 180 ms at 100k), so
the two cross near 4k rows. The old rule (exact-subset up to 2 % of the rows) cost 180-340 ms
per query at 100k-200k allowed rows for no recall gain.

Deletions: Flat and IVF remove ids physically (Flat moves the rows after the removed one up:
55-71 ms per removal at 1 M rows, 220-283 ms at 4 M, under the write lock; deletions are rare;
``benchmarks/scale_stage1.py --flat-timing``). HNSW cannot remove; deleted ids become
tombstones excluded from every search by a selector, and the index is compacted (rebuilt from
its own vectors) when tombstones exceed 20 % of the rows.

Result padding: when fewer than ``k`` results exist, the trailing ids are ``-1`` and their
scores ``-inf``.

Thread safety: any number of concurrent searches; add/remove/compact take an exclusive lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import faiss as _faiss
import numpy as np

from .store import fsync_dir

faiss: Any = _faiss  # the bundled type stubs are incomplete (SearchParametersHNSW, sel=...)

FLAT_MAX_ROWS = 5_000_000
IVF_EXACT_MAX_ROWS = 4_000
IVF_SCAN_FACTOR = 8.0
SNAPSHOT_FORMAT = 1


class SnapshotError(ValueError):
    """A snapshot file is missing, unreadable, truncated or disagrees with its sidecar."""


def choose_factory(n_rows: int, dim: int) -> str:
    """FAISS factory string for ``n_rows`` vectors of dimension ``dim`` (see module doc)."""
    if dim <= 0:
        raise ValueError(f"dimension must be positive; got {dim}")
    if n_rows < FLAT_MAX_ROWS:
        return "IDMap2,Flat"
    nlist = 4096 if n_rows < 16_000_000 else 16384
    return f"IVF{nlist},SQfp16"


def effective_factory(n_rows: int, dim: int, factory: str | None = None) -> str:
    """The factory :meth:`FaissIndex.build` uses: ``factory`` (or the rule), normalised, with
    IVF replaced by Flat when there are fewer than 39 x nlist rows to train on."""
    f = _normalise_factory(factory or choose_factory(n_rows, dim))
    if _nlist(f) and n_rows < 39 * _nlist(f):
        f = _normalise_factory(choose_factory(min(n_rows, FLAT_MAX_ROWS - 1), dim))
    return f


def _nlist(factory: str) -> int:
    m = re.search(r"IVF(\d+)", factory)
    return int(m.group(1)) if m else 0


def _normalise_factory(factory: str) -> str:
    """IDMap2 around Flat/HNSW (external ids, reconstruct by id); IVF keeps its own ids with a
    hashtable direct map (IDMap2 around IVF cannot reconstruct). Refine stages are refused:
    IndexRefine has no add_with_ids / remove_ids, and behind IDMap2 a selector in
    ``SearchParameters`` does not reach its base index (the search returns excluded ids)."""
    f = factory.strip()
    if re.search(r"Refine|RFlat", f):
        raise ValueError(f"unsupported FAISS factory {factory!r}: refine stages are not supported")
    if "IVF" in f:
        return f.removeprefix("IDMap2,").removeprefix("IDMap,")
    if not f.startswith("IDMap"):
        f = "IDMap2," + f
    return f


class RWLock:
    """Many readers or one writer; writers are preferred so ingest is not starved."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class VectorIndex(Protocol):
    """What the search and ingest code needs from a vector index."""

    dim: int

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        """Add vectors (n, dim) with int64 ids (n,); an id already present is a ValueError."""

    def remove(self, ids: Iterable[int]) -> int:
        """Remove ids (absent ids are ignored); returns how many were removed."""

    def search(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product: scores float32 (nq, k) and ids int64 (nq, k), best first,
        padded with id -1 / score -inf. ``allowed_ids``: restrict to these ids (None: all)."""
        ...

    def count(self) -> int:
        """Number of live (searchable) vectors."""
        ...

    def snapshot(self, path: str | os.PathLike[str], meta: dict[str, Any] | None = None) -> None:
        """Write atomically to ``path`` with a JSON sidecar ``path + '.json'``."""


def as_matrix(x: Any, dim: int, what: str = "vectors") -> np.ndarray:
    """Convert once to a C-contiguous float32 (n, dim) matrix; ValueError on a bad shape."""
    a = np.ascontiguousarray(x, dtype=np.float32)
    if a.ndim == 1:
        a = a.reshape(1, -1)
    if a.ndim != 2 or a.shape[1] != dim:
        raise ValueError(f"{what} must have shape (n, {dim}); got {np.shape(x)}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what} contain NaN or infinity")
    return a


def _as_ids(ids: Any) -> np.ndarray:
    a = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    if a.size and a.min() < 0:
        raise ValueError("ids must be non-negative")
    return a


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


class FaissIndex:
    """FAISS-backed :class:`VectorIndex` (inner product; see the module doc for the rules)."""

    def __init__(
        self,
        dim: int,
        factory: str | None = None,
        *,
        ef_search: int = 128,
        ef_construction: int = 80,
        nprobe: int = 64,
        exact_max_rows: int = 100_000,
        exact_fraction: float = 0.02,
        ivf_exact_max_rows: int = IVF_EXACT_MAX_ROWS,
        ivf_scan_factor: float = IVF_SCAN_FACTOR,
    ) -> None:
        if dim <= 0:
            raise ValueError(f"dimension must be positive; got {dim}")
        self.dim = int(dim)
        self.factory = _normalise_factory(factory or choose_factory(0, dim))
        self.ef_search = int(ef_search)
        self.ef_construction = int(ef_construction)
        self.nprobe = int(nprobe)
        self.exact_max_rows = int(exact_max_rows)
        self.exact_fraction = float(exact_fraction)
        self.ivf_exact_max_rows = int(ivf_exact_max_rows)
        self.ivf_scan_factor = float(ivf_scan_factor)
        self._lock = RWLock()
        self._index = self._new_index(self.factory)
        self._live = np.zeros(0, dtype=bool)  # indexed by id: True when searchable
        self._n_live = 0
        self._tombstones: set[int] = set()
        self._live_bitmap: np.ndarray | None = None
        # Flat / HNSW: id -> row of the index's float32 storage (-1: none); IVF: unused
        self._pos = np.full(0, -1, dtype=np.int64)

    # -- construction ------------------------------------------------------------------------
    def _new_index(self, factory: str) -> Any:
        idx = faiss.index_factory(self.dim, factory, faiss.METRIC_INNER_PRODUCT)
        self._configure(idx)
        return idx

    def _configure(self, idx: Any) -> None:
        inner = faiss.downcast_index(idx.index) if hasattr(idx, "index") else idx
        if isinstance(inner, faiss.IndexHNSW):
            inner.hnsw.efConstruction = self.ef_construction
            inner.hnsw.efSearch = self.ef_search
        with contextlib.suppress(RuntimeError):
            ivf = faiss.extract_index_ivf(inner)
            ivf.nprobe = self.nprobe
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)

    @property
    def kind(self) -> str:
        if "HNSW" in self.factory and "IVF" not in self.factory:
            return "hnsw"
        if "IVF" in self.factory:
            return "ivf"
        return "flat"

    @classmethod
    def build(
        cls,
        dim: int,
        batches: Iterable[tuple[np.ndarray, np.ndarray]],
        *,
        factory: str | None = None,
        **kwargs: Any,
    ) -> FaissIndex:
        """Build from (ids, vecs) batches; factory None: :func:`choose_factory` on the count."""
        id_parts: list[np.ndarray] = []
        vec_parts: list[np.ndarray] = []
        for ids, vecs in batches:
            id_parts.append(_as_ids(ids))
            vec_parts.append(as_matrix(vecs, dim))
        ids = np.concatenate(id_parts) if id_parts else np.zeros(0, np.int64)
        vecs = np.concatenate(vec_parts) if vec_parts else np.zeros((0, dim), np.float32)
        del id_parts, vec_parts
        n = len(ids)
        f = effective_factory(n, dim, factory)
        self = cls(dim, f, **kwargs)
        if n:
            if not self._index.is_trained:
                nl = _nlist(f)
                rng = np.random.default_rng(0)
                sample = vecs[rng.choice(n, size=min(n, 64 * nl), replace=False)]
                self._index.train(sample)
            self.add(ids, vecs)
        return self

    @classmethod
    def from_training_sample(
        cls,
        dim: int,
        sample: Any,
        *,
        n_rows: int,
        factory: str | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> FaissIndex:
        """An empty index for about ``n_rows`` rows, trained on ``sample`` if it needs training.

        The streaming counterpart of :meth:`build`: the caller then adds the rows batch by
        batch with :meth:`add`, so the full (n, dim) float32 matrix is never held (``build``
        concatenates all batches first). The structure is ``effective_factory(n_rows, dim,
        factory)``, as :meth:`build` would pick for ``n_rows`` rows. For IVF structures the
        quantisers are trained on at most 64 x nlist rows drawn from ``sample`` (seeded by
        ``seed``); ``sample`` should be drawn from the same distribution as the rows (e.g. a
        random subset of them). Flat / HNSW need no training and ignore ``sample``.
        ValueError when an IVF structure gets fewer than nlist sample rows.
        """
        if n_rows < 0:
            raise ValueError(f"n_rows must be non-negative; got {n_rows}")
        f = effective_factory(n_rows, dim, factory)
        self = cls(dim, f, **kwargs)
        if not self._index.is_trained:
            x = as_matrix(sample, dim, "training sample")
            nl = _nlist(f)
            if len(x) < nl:
                raise ValueError(f"{f} needs at least {nl} training rows; got {len(x)}")
            if len(x) > 64 * nl:
                rng = np.random.default_rng(seed)
                x = x[np.sort(rng.choice(len(x), size=64 * nl, replace=False))]
            self._index.train(x)
        return self

    # -- mutation ----------------------------------------------------------------------------
    def _grow(self, max_id: int) -> None:
        if max_id >= len(self._live):
            size = max(max_id + 1, 2 * len(self._live), 1024)
            new = np.zeros(size, dtype=bool)
            new[: len(self._live)] = self._live
            self._live = new
            if self.kind != "ivf":
                pos = np.full(size, -1, dtype=np.int64)
                pos[: len(self._pos)] = self._pos
                self._pos = pos

    def add(self, ids: Any, vecs: Any) -> None:
        ids = _as_ids(ids)
        x = as_matrix(vecs, self.dim)
        if len(ids) != len(x):
            raise ValueError(f"{len(ids)} ids for {len(x)} vectors")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("duplicate ids in one add")
        if not len(ids):
            return
        with self._lock.write():
            self._grow(int(ids.max()))
            present = [int(i) for i in ids if self._live[i] or int(i) in self._tombstones]
            if present:
                raise ValueError(f"ids already in the index: {present[:5]}")
            if not self._index.is_trained:
                raise ValueError("the IVF index is not trained; build it with FaissIndex.build")
            row0 = int(self._index.ntotal)
            self._index.add_with_ids(x, ids)
            if self.kind != "ivf":  # IDMap2 appends: internal rows row0, row0 + 1, ...
                self._pos[ids] = np.arange(row0, row0 + len(ids), dtype=np.int64)
            self._live[ids] = True
            self._n_live += len(ids)
            self._live_bitmap = None

    def remove(self, ids: Iterable[int]) -> int:
        a = _as_ids(list(ids))
        with self._lock.write():
            a = a[a < len(self._live)]
            a = np.unique(a[self._live[a]])
            if not len(a):
                return 0
            if self.kind == "hnsw":
                self._tombstones.update(int(i) for i in a)
            else:
                self._index.remove_ids(faiss.IDSelectorArray(a))
                if self.kind == "flat":  # IndexFlat compacts its rows: recompute positions
                    self._reset_positions()
            self._live[a] = False
            self._n_live -= len(a)
            self._live_bitmap = None
            if self._tombstones and len(self._tombstones) > 0.2 * max(self._index.ntotal, 1):
                self._compact_locked()
            return len(a)

    def _compact_locked(self) -> None:
        ids = np.flatnonzero(self._live).astype(np.int64)
        vecs = self._reconstruct(ids) if len(ids) else np.zeros((0, self.dim), np.float32)
        idx = self._new_index(self.factory)
        if len(ids):
            idx.add_with_ids(vecs, ids)
        self._index = idx
        self._tombstones.clear()
        self._reset_positions()

    def _reset_positions(self) -> None:
        """Flat / HNSW: id -> storage row, from the IDMap2's id map (IVF: none kept)."""
        if self.kind == "ivf":
            self._pos = np.full(0, -1, dtype=np.int64)
            return
        self._pos = np.full(len(self._live), -1, dtype=np.int64)
        if self._index.ntotal:
            id_map = faiss.vector_to_array(self._index.id_map).astype(np.int64)
            self._pos[id_map] = np.arange(len(id_map), dtype=np.int64)

    def _flat_storage(self) -> Any:
        """Flat / HNSW: the ``IndexFlat`` holding the float32 vectors (rows = ``_pos``)."""
        inner = faiss.downcast_index(self._index.index)
        if self.kind == "hnsw":
            inner = faiss.downcast_index(inner.storage)
        return inner

    # -- queries -----------------------------------------------------------------------------
    def count(self) -> int:
        return self._n_live

    def ids(self) -> np.ndarray:
        """Live ids, sorted."""
        with self._lock.read():
            return np.flatnonzero(self._live).astype(np.int64)

    def contains(self, i: int) -> bool:
        return 0 <= i < len(self._live) and bool(self._live[i])

    def reconstruct(self, ids: Any) -> np.ndarray:
        a = _as_ids(ids)
        with self._lock.read():
            if len(a) and (a.max() >= len(self._live) or not self._live[a].all()):
                raise KeyError("some ids are not in the index")
            return self._reconstruct(a)

    def _reconstruct(self, ids: np.ndarray) -> np.ndarray:
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        if len(ids):
            self._index.reconstruct_batch(ids, out)
        return out

    def _pad(self, nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)

    def _bitmap(self, mask: np.ndarray) -> Any:
        bits = np.packbits(mask, bitorder="little")
        sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
        sel.keepalive = bits  # the selector points into the numpy buffer
        return sel

    def _params(self, sel: Any, n_allowed: int | None, k: int) -> Any:
        kind = self.kind
        if kind == "hnsw":
            ef = max(self.ef_search, k)
            if n_allowed is not None:
                selectivity = n_allowed / max(self._n_live, 1)
                if selectivity < 1.0:
                    ef = int(min(4096, max(ef, ef / max(selectivity, 1e-6))))
            return faiss.SearchParametersHNSW(sel=sel, efSearch=ef)
        if kind == "ivf":
            return faiss.SearchParametersIVF(sel=sel, nprobe=self.ivf_nprobe(n_allowed, k))
        return faiss.SearchParameters(sel=sel) if sel is not None else None

    def ivf_nprobe(self, n_allowed: int | None, k: int = 100) -> int:
        """IVF: lists probed for a filter keeping ``n_allowed`` rows (None: no filter, every
        live row).

        ``nprobe`` lists hold about ``nprobe / nlist x n_allowed`` allowed rows; below
        ``ivf_scan_factor x k`` of them the search misses true neighbours, so nprobe is
        raised to ``ceil(ivf_scan_factor x k x nlist / n_allowed)`` (capped at nlist). The
        same holds without a filter when k is large (a search's stage 1 asks for thousands):
        at 100k rows, IVF1024 and k = 2,001, nprobe 64 missed a mate exact search ranks
        1,367th (benchmarks/scale_stage1.py)."""
        nlist = _nlist(self.factory) or 1
        if n_allowed is None:
            n_allowed = self._n_live
        if n_allowed <= 0:
            return min(self.nprobe, nlist)
        need = -(-int(self.ivf_scan_factor * max(k, 1) * nlist) // n_allowed)
        return int(min(nlist, max(self.nprobe, need)))

    def plan(self, n_allowed: int | None, k: int = 100) -> str:
        """'exact-subset', 'selector' or 'full' for a filter that keeps ``n_allowed`` rows
        (see the module doc; ``k`` does not change the plan, only the selector's nprobe)."""
        if n_allowed is None:
            return "full"
        if self.kind == "ivf":
            return "exact-subset" if n_allowed <= self.ivf_exact_max_rows else "selector"
        n = max(self._n_live, 1)
        small = n_allowed <= self.exact_max_rows or n_allowed <= self.exact_fraction * n
        if small and n_allowed <= 250_000:
            return "exact-subset"
        return "selector"

    def _filter_locked(self, allowed_ids: Any) -> tuple[int, np.ndarray | None, np.ndarray | None]:
        """Allowed ids -> (n, ids, mask): ``n`` live allowed rows, and either ``ids`` (sorted,
        unique, live) or ``mask`` (bool over id space, live rows only), whichever was cheaper.

        Vectorised, one pass or two over the ids: a sparse filter (fewer ids than 1/64 of the
        id space) is sorted/deduplicated and checked against the live mask; a dense one is
        scattered into a bool mask and ANDed with the live mask (no sort, no gather)."""
        a = np.asarray(allowed_ids)
        if a.dtype != np.int64:
            a = a.astype(np.int64)
        a = a.reshape(-1)
        size = len(self._live)
        if not a.size or size == 0:
            return 0, np.zeros(0, np.int64), None
        if int(a.min()) < 0:  # a negative index would wrap around in numpy
            a = a[a >= 0]
        if a.size * 64 <= size:
            if a.size and int(a.max()) >= size:
                a = a[a < size]
            if a.size > 1 and not bool(np.all(a[1:] > a[:-1])):
                a = np.unique(a)  # callers usually pass sorted unique ids (store order)
            a = a[self._live[a]]
            return len(a), a, None
        mask = np.zeros(size, dtype=bool)
        try:
            mask[a] = True  # ids >= size raise: cheaper than a max() pass when there are none
        except IndexError:
            mask[a[a < size]] = True
        np.logical_and(mask, self._live, out=mask)
        return int(np.count_nonzero(mask)), None, mask

    def search(
        self, queries: Any, k: int, allowed_ids: Any | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if np.ndim(queries) == 1 or len(queries) == 1:
            # One query: OpenMP threads cost more than they save (at 100k rows on a busy
            # 2-core machine 7.5 ms with 2 threads, 0.54 ms with 1; RESULTS-search-stages-100k),
            # and concurrent searches are parallel already. The setting is per calling thread.
            prev = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            try:
                return self._search(queries, k, allowed_ids)
            finally:
                faiss.omp_set_num_threads(prev)
        return self._search(queries, k, allowed_ids)

    def _search(
        self, queries: Any, k: int, allowed_ids: Any | None = None, force_plan: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search`; ``force_plan`` ('selector' / 'exact-subset') overrides the planner
        for a filtered search (benchmarks and tests)."""
        q = as_matrix(queries, self.dim, "queries")
        k = int(k)
        if k <= 0:
            raise ValueError(f"k must be positive; got {k}")
        nq = q.shape[0]
        with self._lock.read():
            n_allowed: int | None = None
            ids: np.ndarray | None = None
            mask: np.ndarray | None = None
            if allowed_ids is not None:
                n_allowed, ids, mask = self._filter_locked(allowed_ids)
                if n_allowed == 0:
                    return self._pad(nq, k)
                if n_allowed == self._n_live and force_plan is None:
                    n_allowed = ids = mask = None  # the filter keeps every row: plain search
            plan = self.plan(n_allowed, k) if force_plan is None else force_plan
            if n_allowed is not None and plan == "exact-subset":
                if ids is None:
                    assert mask is not None
                    ids = np.flatnonzero(mask).astype(np.int64)
                return self._exact_subset(q, k, ids)
            if self._n_live == 0:
                return self._pad(nq, k)
            sel = None
            if n_allowed is not None:
                if mask is None:
                    mask = np.zeros(len(self._live), dtype=bool)
                    mask[ids] = True
                sel = self._bitmap(mask)
                del mask, ids
            elif self._tombstones:
                if self._live_bitmap is None:
                    self._live_bitmap = self._bitmap(self._live)
                sel = self._live_bitmap
            params = self._params(sel, n_allowed, k)
            kk = min(k, max(self._index.ntotal, 1))
            d, i = self._index.search(q, kk, params=params)
        scores, out_ids = self._pad(nq, k)
        out_ids[:, :kk] = i
        scores[:, :kk] = d
        scores[out_ids < 0] = -np.inf
        return scores, out_ids

    def _exact_subset(
        self, q: np.ndarray, k: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over exactly the ``allowed`` (sorted, live) ids, scored on the index's
        own vectors. Flat / HNSW: ``IndexFlat.compute_distance_subset`` on the float32 storage
        (no copy of the vectors). IVF: the vectors decoded from the codes (the only copy the
        index has) and ``faiss.knn``. Both run in FAISS, so they follow
        ``faiss.omp_set_num_threads`` (numpy's BLAS would not)."""
        nq, m = q.shape[0], len(allowed)
        scores, ids = self._pad(nq, k)
        kk = min(k, m)
        if self.kind == "ivf":
            x = self._reconstruct(allowed)
            d, i = faiss.knn(q, x, kk, metric=faiss.METRIC_INNER_PRODUCT)
            scores[:, :kk] = d
            ids[:, :kk] = np.where(i >= 0, allowed[np.maximum(i, 0)], -1)
            scores[ids < 0] = -np.inf
            return scores, ids
        labels = np.ascontiguousarray(np.broadcast_to(self._pos[allowed], (nq, m)))
        s = np.empty((nq, m), dtype=np.float32)
        self._flat_storage().compute_distance_subset(
            nq, faiss.swig_ptr(q), m, faiss.swig_ptr(s), faiss.swig_ptr(labels)
        )
        if kk < m:
            part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        else:
            part = np.broadcast_to(np.arange(m), (nq, m))
        ps = np.take_along_axis(s, part, axis=1)
        top = np.take_along_axis(part, np.argsort(-ps, axis=1, kind="stable"), axis=1)
        scores[:, :kk] = np.take_along_axis(s, top, axis=1)
        ids[:, :kk] = allowed[top]
        return scores, ids

    # -- persistence -------------------------------------------------------------------------
    def snapshot(self, path: str | os.PathLike[str], meta: dict[str, Any] | None = None) -> None:
        """Atomic snapshot: temp file, fsync, rename, fsync dir; then the JSON sidecar the
        same way (the sidecar carries the file's SHA-256, so a half-written pair is detected).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with self._lock.read():
            faiss.write_index(self._index, str(tmp))
            side = {
                "format": SNAPSHOT_FORMAT,
                "factory": self.factory,
                "dim": self.dim,
                "metric": "inner_product",
                "count": self._n_live,
                "ntotal": int(self._index.ntotal),
                "tombstones": sorted(self._tombstones),
                "ef_search": self.ef_search,
                "nprobe": self.nprobe,
                **(meta or {}),
            }
        try:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            side["size"] = tmp.stat().st_size
            side["sha256"] = _sha256_file(tmp)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        fsync_dir(path.parent)
        from .store import atomic_write

        atomic_write(sidecar_path(path), json.dumps(side, indent=1).encode())

    @classmethod
    def load(cls, path: str | os.PathLike[str], **kwargs: Any) -> tuple[FaissIndex, dict[str, Any]]:
        """Load a snapshot and its sidecar; SnapshotError when anything does not check out."""
        path = Path(path)
        try:
            side = json.loads(sidecar_path(path).read_text())
        except (OSError, ValueError) as e:
            raise SnapshotError(f"snapshot sidecar unreadable: {e}") from None
        try:
            if side.get("format") != SNAPSHOT_FORMAT:
                raise SnapshotError(f"unknown snapshot format {side.get('format')!r}")
            if not path.is_file() or path.stat().st_size != int(side["size"]):
                raise SnapshotError("snapshot file missing or truncated")
            if _sha256_file(path) != side["sha256"]:
                raise SnapshotError("snapshot checksum mismatch")
            try:
                raw = faiss.read_index(str(path))
            except RuntimeError as e:
                raise SnapshotError(f"FAISS could not read the snapshot: {e}") from None
            dim = int(side["dim"])
            if raw.d != dim or int(raw.ntotal) != int(side["ntotal"]):
                raise SnapshotError("snapshot dimension or row count disagrees with sidecar")
            kwargs.setdefault("ef_search", int(side.get("ef_search", 128)))
            kwargs.setdefault("nprobe", int(side.get("nprobe", 64)))
            self = cls(dim, str(side["factory"]), **kwargs)
            idx = raw  # read_index returns the downcast object, which owns the C++ index
            if self.kind == "ivf":
                all_ids = _ivf_ids(idx)
            elif isinstance(idx, faiss.IndexIDMap2):
                all_ids = faiss.vector_to_array(idx.id_map).astype(np.int64)
            else:
                raise SnapshotError("snapshot is not an IDMap2 index")
            self._configure(idx)
            self._index = idx
            tomb = {int(t) for t in side.get("tombstones", [])}
            if all_ids.size:
                self._grow(int(all_ids.max()))
            self._live[all_ids] = True
            if tomb:
                t = np.fromiter(tomb, dtype=np.int64)
                if t.size and (t.max() >= len(self._live) or not self._live[t].all()):
                    raise SnapshotError("snapshot tombstones are not in the index")
                self._live[t] = False
            self._tombstones = tomb
            self._reset_positions()
            self._n_live = int(self._live.sum())
            if self._n_live != int(side["count"]):
                raise SnapshotError("snapshot live count disagrees with sidecar")
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, SnapshotError):
                raise
            raise SnapshotError(f"snapshot sidecar malformed: {e}") from None
        return self, side


def _ivf_ids(idx: Any) -> np.ndarray:
    ivf = faiss.extract_index_ivf(idx)
    inv = ivf.invlists
    parts = []
    for lst in range(ivf.nlist):
        n = inv.list_size(lst)
        if n:
            ptr = inv.get_ids(lst)
            parts.append(faiss.rev_swig_ptr(ptr, n).astype(np.int64).copy())
            inv.release_ids(lst, ptr)
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".json")
