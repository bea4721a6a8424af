"""Milvus as the vector engine (``pymilvus.MilvusClient``): a :class:`index.vectors.VectorIndex`.

Chosen by URI (:func:`parse_vectors_uri`; ``ballistics serve --vectors URI``):

* ``faiss`` (or nothing): the embedded FAISS indexes, snapshotted in the data folder (default).
* ``milvus://host:19530[/db_name][?prefix=ballistics]``: a Milvus standalone or cluster
  (``milvus+https://`` for TLS). A token, when the server needs one, comes from the
  environment variable ``BALLISTICS_MILVUS_TOKEN`` (never from the URI, which is logged).
* ``milvus-lite:///abs/path/vectors.db`` (or ``milvus-lite:relative/vectors.db``): milvus-lite,
  the embedded Milvus in one local file (same client API; what the tests run on).

Collection layout: one collection per descriptor region, ``<prefix>_<region>``, with the
fields ``id`` (INT64 primary key: the store's casing row id), ``vec`` (FLOAT_VECTOR, the
L2-normalised descriptor; metric IP, so scores are cosine similarities as with FAISS),
``agency`` (VARCHAR, the *partition key*: Milvus hashes agencies to partitions, so a search
restricted to some agencies touches only theirs when the filter names them) and ``caliber``
(VARCHAR scalar). Collection properties record the store ``seq`` the collection reflects,
the extractor version and the region (:meth:`MilvusIndex.snapshot`), so a restarting server
replays only the store's later changes (as a FAISS snapshot's sidecar does).

Consistency: every collection is created, searched and queried at ``Strong`` consistency.
Milvus's default (``Bounded``) lets a search miss writes of the last few seconds; the catalog
checks an index's ids against the store right after writing, and an acknowledged casing must be
searchable at once - from this server and from any other server on the same Milvus once that
server has applied the same store seq - so neither Bounded nor ``Session`` (read-your-writes
for one client only) is enough. Strong costs a wait for the latest write timestamp on each read
(on milvus-lite nothing measurable).

Filtered search (the planner contract of :class:`index.vectors.FaissIndex`: top-k *inside*
the allowed ids, equal to exact filtered search on the test data): the allowed ids become a
boolean ``filter`` expression on the primary key, ``id in [...]``, or ``id not in [...]`` over
the live ids the filter excludes when that list is shorter (a 90 % filter costs the 10 %), and
``ef`` is raised by 1/selectivity (capped at ``ef_cap``), the rule of FAISS HNSW (plan
``filter``). A narrow filter (at most ``exact_max_rows`` allowed rows) is not left to the
graph: the allowed rows' vectors are fetched by primary key and scored exactly here (plan
``exact-fetch``). Why: HNSW with a filter walks a neighbourhood of about ``ef`` nodes, most of
them excluded, and misses allowed rows that lie elsewhere; milvus-lite (FAISS HNSW per sealed
segment) has no brute-force fallback, and at 1 M rows with ``ef`` = the allowed rows it found
recall@100 0.36 at 1,000 allowed rows and 0.01 at 100 (benchmarks/RESULTS-vector-engines.md).
Milvus standalone/cluster switch to brute force by themselves on narrow filters; fetching keeps
the result exact on every Milvus.

Ids: a local mirror of the live ids (bool mask by id) answers ``count``/``ids``/``contains``
and checks duplicate adds without a round trip; :meth:`MilvusIndex.refresh` reloads it from
Milvus. Writes are ``upsert`` (idempotent on the primary key), so two servers replaying the same
store change never store a row twice.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from .vectors import as_matrix

#: The index a new collection gets. FLAT (exact) since 2026-12-05: among 100k distractors,
#: milvus-lite's HNSW (M 32, ef = k = 2,001) kept 0.833 of the held-out photometric-stereo
#: mate pairs in the top 2,001 where exact search keeps 0.933, as FAISS's HNSW did (mates in
#: a small cluster apart from the bulk are walked past); FLAT searched in 71-80 ms against
#: 67-71 ms for HNSW (benchmarks/scale_stage1.py).
DEFAULT_INDEX_TYPE = "FLAT"
#: Milvus's largest ``limit`` (top-k) per search.
MILVUS_MAX_TOPK = 16384
#: Rows per insert/upsert request (about 0.6 MB each at 144 dimensions: far below the 64 MB
#: gRPC message cap, large enough that per-request overhead does not dominate).
WRITE_BATCH = 1000
TOKEN_ENV = "BALLISTICS_MILVUS_TOKEN"
PIP_HINT = "pip install pymilvus milvus-lite (or pip install -e '.[dev]')"

#: (agency, caliber) per id, for the scalar fields; unknown ids get ("", "").
AttrsFn = Callable[[np.ndarray], list[tuple[str, str]]]


class VectorsURIError(ValueError):
    """A ``--vectors`` URI names no engine we know, or is malformed."""


@dataclass(frozen=True)
class VectorsURI:
    """A parsed ``--vectors`` URI: ``engine`` 'faiss' or 'milvus'; for Milvus, the client
    ``uri`` (a server address or a milvus-lite file), ``db_name`` and the collection
    ``prefix``."""

    engine: str
    uri: str = ""
    db_name: str = ""
    prefix: str = "ballistics"

    @property
    def lite(self) -> bool:
        return self.engine == "milvus" and not self.uri.startswith(("http://", "https://"))


def parse_vectors_uri(text: str | None) -> VectorsURI:
    """``faiss`` / ``milvus://host:port[/db][?prefix=p]`` / ``milvus+https://...`` /
    ``milvus-lite:///path/file.db``; VectorsURIError naming the accepted forms otherwise."""
    forms = (
        "use 'faiss' (default), 'milvus://HOST:PORT[/DB][?prefix=NAME]' "
        "(milvus+https:// for TLS) or 'milvus-lite:///path/vectors.db'"
    )
    s = (text or "").strip()
    if s in ("", "faiss", "faiss://"):
        return VectorsURI("faiss")
    parts = urlsplit(s)
    query = parse_qs(parts.query)
    prefix = (query.get("prefix") or ["ballistics"])[0]
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", prefix):
        raise VectorsURIError(
            f"bad collection prefix {prefix!r} in {s!r}: letters, digits and _ only; {forms}"
        )
    if unknown := set(query) - {"prefix"}:
        raise VectorsURIError(f"unknown option(s) {sorted(unknown)} in {s!r}; {forms}")
    if parts.scheme in ("milvus", "milvus+http", "milvus+https"):
        if not parts.hostname:
            raise VectorsURIError(f"no host in vectors URI {s!r}; {forms}")
        http = "https" if parts.scheme == "milvus+https" else "http"
        port = parts.port or 19530
        db = parts.path.strip("/")
        return VectorsURI("milvus", f"{http}://{parts.hostname}:{port}", db, prefix)
    if parts.scheme == "milvus-lite":
        path = (parts.netloc + parts.path) if parts.netloc else parts.path
        if not path:
            raise VectorsURIError(f"no file in vectors URI {s!r}; {forms}")
        if not path.endswith(".db"):
            raise VectorsURIError(
                f"milvus-lite file {path!r} must end in .db (milvus-lite's rule); {forms}"
            )
        return VectorsURI("milvus", os.path.abspath(path), "", prefix)
    raise VectorsURIError(f"unknown vector engine URI {s!r}; {forms}")


def _pymilvus() -> Any:
    try:
        import pymilvus
    except ImportError as e:
        raise RuntimeError(f"Milvus vectors need the pymilvus package ({PIP_HINT}): {e}") from None
    return pymilvus


class MilvusVectors:
    """One Milvus connection (server or milvus-lite file) and its region collections."""

    def __init__(self, uri: VectorsURI, **index_kwargs: Any) -> None:
        if uri.engine != "milvus":
            raise VectorsURIError(f"not a Milvus URI: {uri}")
        pm = _pymilvus()
        self.uri = uri
        self.index_kwargs = index_kwargs
        kwargs: dict[str, Any] = {"uri": uri.uri}
        if uri.db_name:
            kwargs["db_name"] = uri.db_name
        if not uri.lite and os.environ.get(TOKEN_ENV):
            kwargs["token"] = os.environ[TOKEN_ENV]
        if uri.lite:
            os.makedirs(os.path.dirname(uri.uri) or ".", exist_ok=True)
        try:
            self.client = pm.MilvusClient(**kwargs)
        except Exception as e:
            where = f"milvus-lite file {uri.uri}" if uri.lite else f"Milvus at {uri.uri}"
            raise RuntimeError(
                f"cannot connect to {where}: {type(e).__name__}: {e}. Check that the server "
                "runs and the address is right (for milvus-lite: that milvus-lite is installed "
                "and the folder is writable)"
            ) from None

    def collection(self, region: str) -> str:
        if not region.replace("_", "").isalnum():
            raise ValueError(f"bad region name {region!r}")
        return f"{self.uri.prefix}_{region}"

    def regions(self) -> list[str]:
        """Regions that have a collection under this prefix."""
        p = self.uri.prefix + "_"
        return sorted(c[len(p) :] for c in self.client.list_collections() if c.startswith(p))

    def open(self, region: str, attrs_fn: AttrsFn | None = None) -> MilvusIndex | None:
        """The region's existing collection (None: there is none)."""
        name = self.collection(region)
        if not self.client.has_collection(name):
            return None
        return MilvusIndex(self.client, name, None, attrs_fn=attrs_fn, **self.index_kwargs)

    def create(self, region: str, dim: int, attrs_fn: AttrsFn | None = None) -> MilvusIndex:
        """A new, empty collection for the region (an existing one is dropped first)."""
        name = self.collection(region)
        self.drop(region)
        return MilvusIndex(self.client, name, dim, attrs_fn=attrs_fn, **self.index_kwargs)

    def drop(self, region: str) -> None:
        name = self.collection(region)
        if self.client.has_collection(name):
            self.client.drop_collection(name)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


class MilvusIndex:
    """One region's Milvus collection as a :class:`index.vectors.VectorIndex` (module doc).

    ``dim`` None opens an existing collection (dimension from its schema); an int creates it.
    ``index_type``: Milvus index on ``vec`` (None: :data:`DEFAULT_INDEX_TYPE`, "FLAT", exact;
    or "HNSW", M 32, efConstruction 80 like FAISS's HNSW32; "IVF_FLAT", "AUTOINDEX"). An
    opened collection keeps the type it was made with (:attr:`index_type`; the catalog
    rebuilds one whose type is not the one asked for). ``ef_search``: HNSW ef for an
    unfiltered search (at least k). ``exact_max_rows``: a filter keeping at most this many rows is
    searched exactly on the allowed rows' vectors fetched by id (``exact-fetch``).
    """

    def __init__(
        self,
        client: Any,
        collection: str,
        dim: int | None,
        *,
        attrs_fn: AttrsFn | None = None,
        index_type: str | None = None,
        m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 128,
        ef_cap: int = 16384,
        exact_max_rows: int = 4096,
    ) -> None:
        self.client = client
        self.collection = collection
        self.attrs_fn = attrs_fn
        self.ef_search = int(ef_search)
        self.ef_cap = int(ef_cap)
        self.exact_max_rows = int(exact_max_rows)
        #: the index type asked for (an opened collection may hold another: ``index_type``)
        self.wanted_type = index_type or DEFAULT_INDEX_TYPE
        self._lock = threading.RLock()
        if dim is None:
            desc = client.describe_collection(collection)
            vec = next(f for f in desc["fields"] if f["name"] == "vec")
            self.dim = int(vec["params"]["dim"])
            idx = client.describe_index(collection, "vec") or {}
            self.index_type = str(idx.get("index_type", self.wanted_type))
        else:
            if dim <= 0:
                raise ValueError(f"dimension must be positive; got {dim}")
            self.dim = int(dim)
            self.index_type = self.wanted_type
            self._create(m, ef_construction)
        self.factory = f"milvus:{self.index_type}"
        client.load_collection(collection)
        self._live = np.zeros(0, dtype=bool)
        self._n_live = 0
        self.refresh()

    def _create(self, m: int, ef_construction: int) -> None:
        pm = _pymilvus()
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", pm.DataType.INT64, is_primary=True)
        schema.add_field("vec", pm.DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("agency", pm.DataType.VARCHAR, max_length=256, is_partition_key=True)
        schema.add_field("caliber", pm.DataType.VARCHAR, max_length=128)
        params = self.client.prepare_index_params()
        p = {"M": m, "efConstruction": ef_construction} if self.index_type == "HNSW" else {}
        params.add_index("vec", index_type=self.index_type, metric_type="IP", params=p)
        self.client.create_collection(
            self.collection, schema=schema, index_params=params, consistency_level="Strong"
        )

    # -- ids ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Reload the local mirror of live ids from Milvus (another writer may have changed it)."""
        parts: list[np.ndarray] = []
        it = self.client.query_iterator(
            self.collection,
            batch_size=16384,
            filter="",
            output_fields=["id"],
            consistency_level="Strong",
        )
        try:
            while batch := it.next():
                parts.append(np.fromiter((r["id"] for r in batch), np.int64, len(batch)))
        finally:
            it.close()
        ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        with self._lock:
            self._live = np.zeros(int(ids.max()) + 1 if ids.size else 0, dtype=bool)
            self._live[ids] = True
            self._n_live = int(self._live.sum())

    def count(self) -> int:
        return self._n_live

    def ids(self) -> np.ndarray:
        """Live ids, sorted."""
        with self._lock:
            return np.flatnonzero(self._live).astype(np.int64)

    def contains(self, i: int) -> bool:
        return 0 <= i < len(self._live) and bool(self._live[i])

    # -- writes ------------------------------------------------------------------------------
    def add(self, ids: Any, vecs: Any) -> None:
        """Add vectors (n, dim) with int64 ids (n,); an id already present is a ValueError."""
        a = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        x = as_matrix(vecs, self.dim)
        if len(a) != len(x):
            raise ValueError(f"{len(a)} ids for {len(x)} vectors")
        if a.size and a.min() < 0:
            raise ValueError("ids must be non-negative")
        if len(np.unique(a)) != len(a):
            raise ValueError("duplicate ids in one add")
        attrs = self.attrs_fn(a) if self.attrs_fn is not None else [("", "")] * len(a)
        with self._lock:
            if any(self.contains(int(i)) for i in a):
                raise ValueError("some ids are already in the index")
            for s in range(0, len(a), WRITE_BATCH):
                rows = [
                    {"id": int(i), "vec": v, "agency": ag or "", "caliber": cal or ""}
                    for i, v, (ag, cal) in zip(
                        a[s : s + WRITE_BATCH],
                        x[s : s + WRITE_BATCH],
                        attrs[s : s + WRITE_BATCH],
                        strict=True,
                    )
                ]
                self.client.upsert(self.collection, rows)
            if a.size and int(a.max()) >= len(self._live):
                grown = np.zeros(int(a.max()) + 1, dtype=bool)
                grown[: len(self._live)] = self._live
                self._live = grown
            self._live[a] = True
            self._n_live += len(a)

    def mark(self, ids: Iterable[int], *, live: bool) -> None:
        """Update the id mirror only (a read-only replica learning of another process's
        write from the store's change log; the rows themselves are that process's to write)."""
        a = np.fromiter((int(i) for i in ids), np.int64)
        with self._lock:
            if a.size and int(a.max()) >= len(self._live):
                grown = np.zeros(int(a.max()) + 1, dtype=bool)
                grown[: len(self._live)] = self._live
                self._live = grown
            self._live[a] = live
            self._n_live = int(self._live.sum())

    def remove(self, ids: Iterable[int]) -> int:
        """Remove ids (absent ids are ignored); returns how many were removed."""
        a = np.unique(np.fromiter((int(i) for i in ids), np.int64))
        with self._lock:
            present = [int(i) for i in a if self.contains(int(i))]
            if present:
                self.client.delete(self.collection, ids=present)
                self._live[present] = False
                self._n_live -= len(present)
            return len(present)

    def snapshot(self, path: Any = None, meta: dict[str, Any] | None = None) -> None:
        """Flush and record ``meta`` (store seq, extractor version, region) in the collection's
        properties; ``path`` is unused (Milvus persists the rows itself)."""
        self.client.flush(self.collection)
        props = {f"ballistics.{k}": str(v) for k, v in (meta or {}).items()}
        if props:
            self.client.alter_collection_properties(self.collection, properties=props)

    def meta(self) -> dict[str, str]:
        """What :meth:`snapshot` recorded (keys without the ``ballistics.`` prefix)."""
        props = self.client.describe_collection(self.collection).get("properties") or {}
        return {
            k.removeprefix("ballistics."): str(v)
            for k, v in props.items()
            if k.startswith("ballistics.")
        }

    # -- search ------------------------------------------------------------------------------
    def plan(self, n_allowed: int | None, k: int = 100) -> str:
        """'full', 'exact-fetch' (narrow filter: exact on the fetched vectors) or 'filter'."""
        if n_allowed is None:
            return "full"
        return "exact-fetch" if n_allowed <= self.exact_max_rows else "filter"

    def _ef(self, n_allowed: int | None, k: int) -> int:
        ef = max(self.ef_search, k)
        if n_allowed is None:
            return ef
        sel = n_allowed / max(self._n_live, 1)
        return int(min(max(self.ef_cap, ef), max(ef, ef / max(sel, 1e-6))))

    def _allowed(self, allowed_ids: Any) -> np.ndarray:
        """The allowed ids that are live here: sorted, unique."""
        a = np.asarray(allowed_ids, dtype=np.int64).reshape(-1)
        a = np.unique(a[(a >= 0) & (a < len(self._live))])
        return a[self._live[a]]

    def _expr(self, a: np.ndarray) -> str | None:
        """Filter expression for live allowed ids ``a`` (None: they are every live row)."""
        n = len(a)
        if n == self._n_live:
            return None
        if 2 * n <= self._n_live:
            return f"id in [{','.join(map(str, a.tolist()))}]"
        mask = self._live.copy()
        mask[a] = False
        return f"id not in [{','.join(map(str, np.flatnonzero(mask).tolist()))}]"

    def _exact_fetch(self, q: np.ndarray, k: int, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over the live allowed ids ``a``: their vectors fetched by primary key."""
        got_ids: list[int] = []
        vecs: list[Any] = []
        for s in range(0, len(a), WRITE_BATCH):
            rows = self.client.get(
                self.collection,
                ids=a[s : s + WRITE_BATCH].tolist(),
                output_fields=["vec"],
                consistency_level="Strong",
            )
            got_ids += [int(r["id"]) for r in rows]
            vecs += [r["vec"] for r in rows]
        nq = q.shape[0]
        scores = np.full((nq, k), -np.inf, np.float32)
        out = np.full((nq, k), -1, np.int64)
        if not got_ids:
            return scores, out
        x = np.asarray(vecs, dtype=np.float32).reshape(len(got_ids), self.dim)
        ids = np.asarray(got_ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")  # ties broken by id, whatever order get() used
        x, ids = x[order], ids[order]
        sims = q @ x.T
        kk = min(k, len(ids))
        top = np.argsort(-sims, axis=1, kind="stable")[:, :kk]
        scores[:, :kk] = np.take_along_axis(sims, top, axis=1)
        out[:, :kk] = ids[top]
        return scores, out

    def search(
        self, queries: Any, k: int, allowed_ids: Any | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product: scores float32 (nq, k) and ids int64 (nq, k), best first,
        padded with id -1 / score -inf. ``allowed_ids``: restrict to these ids (None: all)."""
        q = as_matrix(queries, self.dim, "queries")
        k = int(k)
        if k <= 0:
            raise ValueError(f"k must be positive; got {k}")
        nq = q.shape[0]
        scores = np.full((nq, k), -np.inf, np.float32)
        out = np.full((nq, k), -1, np.int64)
        with self._lock:
            n_allowed: int | None = None
            expr: str | None = None
            a = None
            if allowed_ids is not None:
                a = self._allowed(allowed_ids)
                n_allowed = len(a)
                if n_allowed == 0:
                    return scores, out
                expr = self._expr(a)
                if expr is None:
                    n_allowed = None
            if self._n_live == 0:
                return scores, out
            if a is not None and n_allowed is not None and self.plan(n_allowed) == "exact-fetch":
                return self._exact_fetch(q, k, a)
            kk = min(k, MILVUS_MAX_TOPK, self._n_live if n_allowed is None else n_allowed)
            ef = self._ef(n_allowed, kk)
        params: dict[str, Any] = {"metric_type": "IP"}
        if self.index_type == "HNSW":
            params["params"] = {"ef": ef}
        res = self.client.search(
            self.collection,
            data=list(q),
            limit=kk,
            filter=expr or "",
            output_fields=["id"],
            search_params=params,
            anns_field="vec",
            consistency_level="Strong",
        )
        for row, hits in enumerate(res):
            for j, h in enumerate(hits[:kk]):
                out[row, j] = int(h["id"])
                scores[row, j] = float(h["distance"])
        return scores, out
