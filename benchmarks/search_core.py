"""Benchmark of the coarse search core (index.vectors.FaissIndex) on synthetic descriptors.

Data: a mixture of Gaussians (``--clusters`` centres, within-cluster spread ``--spread``), then
L2-normalised - clustered like real descriptors (many casings per gun / per class), not
uniform random. Queries are fresh draws from the same mixture.

Reports, single-threaded queries (faiss.omp_set_num_threads(1)):
* the structure chosen by ``choose_factory`` for the row count, its build time, recall@100
  against exact search and median / p99 latency, for a few efSearch values;
* exact flat search (IndexFlatIP) timed side by side, and the latency ratio;
* filtered search at selectivities 100 % .. 0.01 %: the planner (``FaissIndex.search`` with
  ``allowed_ids``) and, for comparison, raw HNSW + IDSelector without the planner.

Streaming mode (``--streaming``; on by default above 2 M rows, ``--no-streaming`` forces the
in-memory path): the database is never held as one float32 matrix. It is generated in chunks of
``--chunk`` rows, chunk ``c`` drawn from its own generator seeded by ``(seed, c)`` so any chunk
can be regenerated instead of kept. The index is trained on a sample (64 x nlist rows from the
first chunk(s), :meth:`FaissIndex.from_training_sample`) and the rows are added chunk by chunk.
In the same pass the exact ground truth (top-k by inner product, all threads) is computed per
chunk and merged across chunks, unfiltered and for each filter (over the allowed ids of the
chunk only), and exact flat search is timed on one thread for ``--exact-timed`` queries as the
sum over chunks of ``faiss.knn`` on the chunk. Reports train / add / build time, the serialised
index size, peak RSS (``ru_maxrss``), recall@k and median / p99 latency (one thread) per nprobe
(IVF) or efSearch (HNSW), and filtered recall per selectivity with the plan used. For each filter
it also times the per-query filter preparation alone (ids -> live count + bitmap), the raw
index + IDSelectorBitmap at the default nprobe / efSearch with the bitmap built once, the plan
the planner did not choose, forced (``--compare-plans``; exact-subset only up to
``--exact-compare-max`` allowed rows), and for IVF optionally raw selector searches at a sweep
of nprobe values (``--filter-nprobe-sweep``) - the data behind the IVF planner's rule.

Usage::

    .venv/bin/python benchmarks/search_core.py --rows 100000
    .venv/bin/python benchmarks/search_core.py --rows 1000000 --out benchmarks/_data/r1m.json
    .venv/bin/python benchmarks/search_core.py --rows 10000000 --factory IVF4096,SQfp16 \
        --nprobe 8,16,32,64,128,4096 --out benchmarks/results/search-core-10m-sqfp16.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from index.vectors import FaissIndex, choose_factory, effective_factory

STREAMING_AUTO_ROWS = 2_000_000  # above this, --streaming is the default
SELECTIVITIES = (1.0, 0.5, 0.2, 0.1, 0.02, 0.01, 0.001, 0.0001)
# streaming mode adds a few narrow filters where the IVF planner switches plan
STREAMING_SELECTIVITIES = (
    1.0,
    0.5,
    0.2,
    0.1,
    0.02,
    0.01,
    0.005,
    0.001,
    0.0005,
    0.0004,
    0.0002,
    0.0001,
)


def descriptor_dim() -> tuple[int, str]:
    try:
        from ballistics.descriptors import DESCRIPTOR_DIMS

        return int(DESCRIPTOR_DIMS["breech_face"]), "ballistics.descriptors.DESCRIPTOR_DIMS"
    except Exception:  # the pipeline may not be importable yet
        return 256, "assumed 256 (ballistics.descriptors not importable)"


def mixture(
    n: int, dim: int, centres: np.ndarray, spread: float, rng: np.random.Generator
) -> np.ndarray:
    out = np.empty((n, dim), dtype=np.float32)
    step = 100_000
    for s in range(0, n, step):
        m = min(step, n - s)
        lab = rng.integers(0, len(centres), m)
        x = centres[lab] + spread * rng.standard_normal((m, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s : s + m] = x
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = 0
    total = 0
    for f, t in zip(found, truth, strict=True):
        t = t[t >= 0]
        total += len(t)
        hits += len(np.intersect1d(f[f >= 0], t))
    return hits / max(total, 1)


def timed(fn, queries: np.ndarray) -> tuple[list[float], list[np.ndarray]]:
    lat, out = [], []
    for q in queries:
        t = time.perf_counter()
        r = fn(q[None, :])
        lat.append(time.perf_counter() - t)
        out.append(r)
    return lat, out


def ms(lat: list[float]) -> dict[str, float]:
    a = np.asarray(lat) * 1e3
    return {"median_ms": float(np.median(a)), "p99_ms": float(np.percentile(a, 99))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--spread", type=float, default=0.06)
    ap.add_argument("--factory", help="override choose_factory")
    ap.add_argument("--ef", default="64,128,256")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument(
        "--streaming",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"chunked generation / ground truth / build (default: on above {STREAMING_AUTO_ROWS:,} rows)",
    )
    ap.add_argument("--chunk", type=int, default=1_000_000, help="streaming: rows per chunk")
    ap.add_argument(
        "--nprobe", default="8,16,32,64,128", help="streaming, IVF: nprobe values to sweep"
    )
    ap.add_argument(
        "--filter-nprobe",
        type=int,
        default=None,
        help="streaming, IVF: nprobe for the filtered runs (default: FaissIndex's default)",
    )
    ap.add_argument("--filter-queries", type=int, default=100, help="streaming: filtered queries")
    ap.add_argument(
        "--compare-plans",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="streaming: also time the plan(s) the planner did not choose, forced",
    )
    ap.add_argument(
        "--filter-nprobe-sweep",
        default="",
        help="streaming, IVF: also time IVF + selector (bitmap built once) at these nprobe "
        "values for every filter narrower than 100 %% (e.g. 64,256,1024,4096)",
    )
    ap.add_argument(
        "--exact-compare-max",
        type=int,
        default=100_000,
        help="streaming: force exact-subset for comparison only up to this many allowed rows",
    )
    ap.add_argument(
        "--exact-timed", type=int, default=50, help="streaming: queries for exact flat timing"
    )
    ap.add_argument(
        "--numpy-blas-threads",
        type=int,
        default=1,
        help="streaming: numpy's OpenBLAS threads during the timed queries (0: leave as is)",
    )
    args = ap.parse_args(argv)
    streaming = args.streaming if args.streaming is not None else args.rows > STREAMING_AUTO_ROWS
    if streaming:
        return main_streaming(args, argv)

    dim, dim_src = descriptor_dim()
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.clusters, dim), dtype=np.float32) / np.sqrt(dim)
    t = time.perf_counter()
    x = mixture(args.rows, dim, centres, args.spread / np.sqrt(dim) * 4, rng)
    q = mixture(args.queries, dim, centres, args.spread / np.sqrt(dim) * 4, rng)
    ids = np.arange(args.rows, dtype=np.int64)
    res: dict = {
        "rows": args.rows,
        "dim": dim,
        "dim_source": dim_src,
        "queries": args.queries,
        "k": args.k,
        "clusters": args.clusters,
        "gen_s": time.perf_counter() - t,
        "command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    print(f"data {args.rows} x {dim} ({dim_src}) generated in {res['gen_s']:.1f}s", flush=True)

    # exact ground truth (all threads) and single-thread exact timing
    flat = faiss.IndexFlatIP(dim)
    flat.add(x)
    _, truth = flat.search(q, args.k)
    faiss.omp_set_num_threads(1)
    lat_flat, _ = timed(lambda v: flat.search(v, args.k), q[: min(50, len(q))])
    res["exact_flat"] = ms(lat_flat)
    print("exact flat", res["exact_flat"], flush=True)
    faiss.omp_set_num_threads(os.cpu_count() or 1)

    factory = args.factory or choose_factory(args.rows, dim)
    t = time.perf_counter()
    idx = FaissIndex.build(dim, [(ids, x)], factory=factory)
    res["factory"] = idx.factory
    res["build_s"] = time.perf_counter() - t
    print(f"built {idx.factory} in {res['build_s']:.1f}s", flush=True)
    faiss.omp_set_num_threads(1)

    res["unfiltered"] = []
    for ef in [int(e) for e in args.ef.split(",")]:
        idx.ef_search = ef
        lat, out = timed(lambda v: idx.search(v, args.k)[1], q)
        row = {"ef_search": ef, "recall_at_k": recall(np.vstack(out), truth), **ms(lat)}
        row["speedup_vs_exact"] = res["exact_flat"]["median_ms"] / row["median_ms"]
        res["unfiltered"].append(row)
        print("unfiltered", row, flush=True)
    idx.ef_search = 128

    res["filtered"] = []
    nq = min(len(q), 100)
    for sel in (1.0, 0.5, 0.2, 0.1, 0.02, 0.01, 0.001, 0.0001):
        m = max(1, round(sel * args.rows))
        allowed = np.sort(rng.choice(args.rows, size=m, replace=False)).astype(np.int64)
        sub = x[allowed]
        s = q[:nq] @ sub.T
        kk = min(args.k, m)
        top = np.argsort(-s, axis=1)[:, :kk]
        truth_f = allowed[top]
        plan = idx.plan(m)
        lat, out = timed(lambda v, a=allowed: idx.search(v, args.k, a)[1], q[:nq])
        row = {
            "selectivity": sel,
            "allowed_rows": m,
            "plan": plan,
            "recall_at_k": recall(np.vstack(out), truth_f),
            **ms(lat),
        }
        if idx.kind != "flat":  # what the planner avoids: graph/IVF search + selector only
            mask = np.zeros(args.rows, dtype=bool)
            mask[allowed] = True
            bits = np.packbits(mask, bitorder="little")

            def raw(v: np.ndarray, bits: np.ndarray = bits) -> np.ndarray:
                sel_ = faiss.IDSelectorBitmap(args.rows, faiss.swig_ptr(bits))
                p = (
                    faiss.SearchParametersHNSW(sel=sel_, efSearch=128)
                    if idx.kind == "hnsw"
                    else faiss.SearchParametersIVF(sel=sel_, nprobe=idx.nprobe)
                )
                return idx._index.search(v, args.k, params=p)[1]

            lat_r, out_r = timed(raw, q[:nq])
            row["raw_selector_recall"] = recall(np.vstack(out_r), truth_f)
            row["raw_selector_median_ms"] = ms(lat_r)["median_ms"]
        res["filtered"].append(row)
        print("filtered", row, flush=True)

    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


# -- streaming mode --------------------------------------------------------------------------


def rss_peak_bytes() -> int:
    """Peak resident set size of this process so far (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_now_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def gib(b: float) -> str:
    return f"{b / 2**30:.2f} GiB"


def numpy_blas_threads(n: int) -> str | None:
    """Set the thread count of numpy's own OpenBLAS (a different library from FAISS's, which
    follows ``faiss.omp_set_num_threads``). The planner's exact-subset path multiplies with
    numpy, so without this a "one thread" query may use numpy's BLAS threads. Returns the
    symbol used, or None when numpy's OpenBLAS could not be found."""
    import ctypes
    import glob

    libdir = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for path in sorted(glob.glob(str(libdir / "*openblas*.so*"))):
        lib = ctypes.CDLL(path)  # already loaded by numpy: the same handle
        for sym in (
            "scipy_openblas_set_num_threads64_",
            "openblas_set_num_threads64_",
            "openblas_set_num_threads",
        ):
            fn = getattr(lib, sym, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                return f"{Path(path).name}:{sym}"
    return None


class TopK:
    """Running top-k (largest score) per query, merged chunk by chunk; ids -1 pad."""

    def __init__(self, nq: int, k: int) -> None:
        self.k = k
        self.d = np.full((nq, k), -np.inf, np.float32)
        self.i = np.full((nq, k), -1, np.int64)

    def merge(self, d: np.ndarray, i: np.ndarray) -> None:
        dd = np.concatenate([self.d, d], axis=1)
        ii = np.concatenate([self.i, i], axis=1)
        part = np.argpartition(-dd, self.k - 1, axis=1)[:, : self.k]
        self.d = np.take_along_axis(dd, part, axis=1)
        self.i = np.take_along_axis(ii, part, axis=1)

    def ids(self) -> np.ndarray:
        order = np.argsort(-self.d, axis=1, kind="stable")
        return np.take_along_axis(self.i, order, axis=1)


def knn_ip(q: np.ndarray, xb: np.ndarray, k: int, offset_ids: np.ndarray) -> tuple:
    """Exact top-min(k, n) by inner product of q against xb; ids mapped through offset_ids."""
    kk = min(k, len(xb))
    d, i = faiss.knn(q, xb, kk, metric=faiss.METRIC_INNER_PRODUCT)
    return d, offset_ids[i]


def index_bytes(idx: FaissIndex) -> dict:
    """Serialised size (counted through a callback writer, never materialised) and, for IVF,
    the inverted lists' code and id bytes."""
    n = [0]

    def count(buf: bytes) -> int:
        n[0] += len(buf)
        return len(buf)

    w = faiss.PyCallbackIOWriter(count)
    faiss.write_index(idx._index, w)
    del w
    out = {"serialized_bytes": n[0]}
    if idx.kind == "ivf":
        ivf = faiss.extract_index_ivf(idx._index)
        inv = ivf.invlists
        sizes = np.array([inv.list_size(j) for j in range(ivf.nlist)], dtype=np.int64)
        out.update(
            {
                "ntotal": int(ivf.ntotal),
                "code_size": int(ivf.code_size),
                "codes_bytes": int(sizes.sum() * ivf.code_size),
                "list_ids_bytes": int(sizes.sum() * 8),
                "nlist": int(ivf.nlist),
                "list_size_max": int(sizes.max()),
                "list_size_median": float(np.median(sizes)),
                "empty_lists": int((sizes == 0).sum()),
                "imbalance_factor": float(inv.imbalance_factor()),
            }
        )
    return out


def main_streaming(args: argparse.Namespace, argv: list[str] | None) -> int:
    t_all = time.perf_counter()
    dim, dim_src = descriptor_dim()
    ncpu = os.cpu_count() or 1
    rows, k, chunk = args.rows, args.k, args.chunk
    n_chunks = -(-rows // chunk)
    spread = args.spread / np.sqrt(dim) * 4
    centres = np.random.default_rng(args.seed).standard_normal(
        (args.clusters, dim), dtype=np.float32
    ) / np.sqrt(dim)

    def make_chunk(c: int) -> tuple[np.ndarray, np.ndarray]:
        s = c * chunk
        m = min(chunk, rows - s)
        x = mixture(m, dim, centres, spread, np.random.default_rng([args.seed, 1, c]))
        return np.arange(s, s + m, dtype=np.int64), x

    q = mixture(args.queries, dim, centres, spread, np.random.default_rng([args.seed, 2]))
    nf = min(args.filter_queries, len(q))
    nt = min(args.exact_timed, len(q))
    qf = np.ascontiguousarray(q[:nf])
    rng_f = np.random.default_rng([args.seed, 3])
    allowed_sets: list[np.ndarray] = []
    for sel in STREAMING_SELECTIVITIES:
        m = max(1, round(sel * rows))
        if m >= rows:
            allowed_sets.append(np.arange(rows, dtype=np.int64))
        else:
            a = rng_f.choice(rows, size=m, replace=False).astype(np.int64)
            allowed_sets.append(np.sort(a))

    factory = effective_factory(rows, dim, args.factory)
    mm = re.search(r"IVF(\d+)", factory)
    nlist = int(mm.group(1)) if mm else 0
    res: dict = {
        "mode": "streaming",
        "rows": rows,
        "dim": dim,
        "dim_source": dim_src,
        "queries": args.queries,
        "filter_queries": nf,
        "k": k,
        "clusters": args.clusters,
        "seed": args.seed,
        "chunk_rows": chunk,
        "chunks": n_chunks,
        "command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
        "machine": {"platform": platform.platform(), "cpus": ncpu},
        "loadavg_start": os.getloadavg(),
        "factory": factory,
    }
    print(
        f"streaming: {rows:,} x {dim} ({dim_src}) in {n_chunks} chunks of {chunk:,}; "
        f"factory {factory}",
        flush=True,
    )

    # -- train on a sample from the first chunk(s) ---------------------------------------------
    faiss.omp_set_num_threads(ncpu)
    want = min(rows, 64 * nlist) if nlist else 0
    parts: list[np.ndarray] = []
    t = time.perf_counter()
    c = 0
    while sum(len(p) for p in parts) < want:
        parts.append(make_chunk(c)[1])
        c += 1
    sample = np.concatenate(parts) if len(parts) > 1 else (parts[0] if parts else q[:0])
    del parts
    res["train_sample_gen_s"] = time.perf_counter() - t
    t = time.perf_counter()
    idx = FaissIndex.from_training_sample(dim, sample, n_rows=rows, factory=factory, seed=args.seed)
    res["train_s"] = time.perf_counter() - t
    res["train_rows"] = min(len(sample), 64 * nlist) if nlist else 0
    res["train_sample_from_chunks"] = c
    del sample
    res["peak_rss_after_train_bytes"] = rss_peak_bytes()
    print(
        f"trained {idx.factory} on {res['train_rows']:,} rows in {res['train_s']:.1f}s; "
        f"peak RSS {gib(rss_peak_bytes())}",
        flush=True,
    )

    # -- one pass: generate chunk, add it, ground truth, single-thread exact timing -------------
    truth_all = TopK(len(q), k)
    truth_sel = [TopK(nf, min(k, len(a))) for a in allowed_sets]
    exact_lat = np.zeros(nt)
    gen_s = add_s = gt_s = 0.0
    for c in range(n_chunks):
        t = time.perf_counter()
        ids_c, x = make_chunk(c)
        gen_s += time.perf_counter() - t
        lo, hi = int(ids_c[0]), int(ids_c[-1]) + 1

        t = time.perf_counter()
        idx.add(ids_c, x)
        add_s += time.perf_counter() - t

        t = time.perf_counter()
        truth_all.merge(*knn_ip(q, x, k, ids_c))
        for a, tk in zip(allowed_sets, truth_sel, strict=True):
            if len(a) == rows:
                continue  # keeps every row: the unfiltered truth (first nf queries)
            sub = a[np.searchsorted(a, lo) : np.searchsorted(a, hi)]
            if len(sub):
                tk.merge(*knn_ip(qf, np.ascontiguousarray(x[sub - lo]), tk.k, sub))
        gt_s += time.perf_counter() - t

        faiss.omp_set_num_threads(1)
        for j in range(nt):
            t = time.perf_counter()
            faiss.knn(q[j : j + 1], x, k, metric=faiss.METRIC_INNER_PRODUCT)
            exact_lat[j] += time.perf_counter() - t
        faiss.omp_set_num_threads(ncpu)
        del x, ids_c
        print(
            f"chunk {c + 1}/{n_chunks}: add {add_s:.1f}s, gt {gt_s:.1f}s, gen {gen_s:.1f}s, "
            f"exact {exact_lat.sum():.1f}s, rss {gib(rss_now_bytes())} "
            f"(peak {gib(rss_peak_bytes())})",
            flush=True,
        )
    truth = truth_all.ids()
    truth_f = [
        truth[:nf] if len(a) == rows else tk.ids()
        for a, tk in zip(allowed_sets, truth_sel, strict=True)
    ]
    del truth_all, truth_sel

    res["gen_s"] = gen_s
    res["ground_truth_s"] = gt_s
    res["add_s"] = add_s
    res["build_s"] = res["train_s"] + add_s
    res["count"] = idx.count()
    res["peak_rss_after_build_bytes"] = rss_peak_bytes()
    res["rss_after_build_bytes"] = rss_now_bytes()
    res["index_bytes"] = index_bytes(idx)
    res["exact_flat"] = {
        **ms(list(exact_lat)),
        "queries_timed": nt,
        "method": f"sum over {n_chunks} chunks of faiss.knn (IndexFlatIP kernel), 1 thread",
    }
    print(
        f"built {idx.factory}: train {res['train_s']:.1f}s + add {add_s:.1f}s = "
        f"{res['build_s']:.1f}s; index {res['index_bytes']['serialized_bytes']:,} bytes; "
        f"exact flat {res['exact_flat']}",
        flush=True,
    )

    # -- unfiltered, one thread ----------------------------------------------------------------
    faiss.omp_set_num_threads(1)
    if args.numpy_blas_threads > 0:
        res["numpy_blas_threads"] = args.numpy_blas_threads
        res["numpy_blas_threads_set_via"] = numpy_blas_threads(args.numpy_blas_threads)
    else:
        res["numpy_blas_threads"] = "default (not set)"
    res["unfiltered"] = []
    if idx.kind == "ivf":
        knob, values = "nprobe", [int(v) for v in args.nprobe.split(",")]
    elif idx.kind == "hnsw":
        knob, values = "ef_search", [int(v) for v in args.ef.split(",")]
    else:
        knob, values = "none", [0]
    default_knob = {"nprobe": idx.nprobe, "ef_search": idx.ef_search}.get(knob)
    for v in values:
        if knob != "none":
            setattr(idx, knob, v)
        lat, out = timed(lambda u: idx.search(u, k)[1], q)
        row = {knob: v, "recall_at_k": recall(np.vstack(out), truth), **ms(lat)}
        row["speedup_vs_exact"] = res["exact_flat"]["median_ms"] / row["median_ms"]
        res["unfiltered"].append(row)
        print("unfiltered", row, flush=True)
    if knob == "nprobe":
        idx.nprobe = args.filter_nprobe or int(default_knob or idx.nprobe)
        res["filter_nprobe"] = idx.nprobe
    elif knob == "ef_search":
        idx.ef_search = int(default_knob or idx.ef_search)
        res["filter_ef_search"] = idx.ef_search

    # -- filtered, one thread ------------------------------------------------------------------
    res["planner"] = {
        a: getattr(idx, a)
        for a in ("exact_max_rows", "exact_fraction", "ivf_exact_max_rows", "ivf_scan_factor")
    }
    res["filtered"] = []
    for sel, allowed, tf in zip(STREAMING_SELECTIVITIES, allowed_sets, truth_f, strict=True):
        m = len(allowed)
        plan = idx.plan(None if m == idx.count() else m, k)
        lat, out = timed(lambda u, a=allowed: idx.search(u, k, a)[1], qf)
        row = {
            "selectivity": sel,
            "allowed_rows": m,
            "plan": plan,
            "recall_at_k": recall(np.vstack(out), tf),
            **ms(lat),
        }
        if idx.kind == "ivf" and plan != "exact-subset":
            row["nprobe_used"] = idx.ivf_nprobe(None if plan == "full" else m, k)
        # per-query filter preparation alone (ids -> live count + bitmap), the planner's overhead
        lat_p = []
        for _ in range(min(20, nf)):
            t = time.perf_counter()
            n_, ids_, mask_ = idx._filter_locked(allowed)
            if mask_ is None and ids_ is not None and n_ > idx.ivf_exact_max_rows:
                mask_ = np.zeros(len(idx._live), dtype=bool)
                mask_[ids_] = True
            if mask_ is not None:
                idx._bitmap(mask_)
            lat_p.append(time.perf_counter() - t)
            del n_, ids_, mask_
        row["filter_prep_median_ms"] = ms(lat_p)["median_ms"]
        if args.compare_plans and m < idx.count():
            others = [p_ for p_ in ("selector", "exact-subset") if p_ != plan]
            for other in others:
                if other == "exact-subset" and m > args.exact_compare_max:
                    continue
                lat_o, out_o = timed(
                    lambda u, a=allowed, o=other: idx._search(u, k, a, force_plan=o)[1], qf
                )
                key = other.replace("-", "_")
                row[f"forced_{key}_recall"] = recall(np.vstack(out_o), tf)
                row[f"forced_{key}_median_ms"] = ms(lat_o)["median_ms"]
                row[f"forced_{key}_p99_ms"] = ms(lat_o)["p99_ms"]
                if other == "selector" and idx.kind == "ivf":
                    row["forced_selector_nprobe"] = idx.ivf_nprobe(m, k)
        if idx.kind != "flat":  # the index + selector alone, no planner, bitmap built once
            mask = np.zeros(rows, dtype=bool)
            mask[allowed] = True
            bits = np.packbits(mask, bitorder="little")
            del mask
            sel_ = faiss.IDSelectorBitmap(rows, faiss.swig_ptr(bits))
            p = (
                faiss.SearchParametersHNSW(sel=sel_, efSearch=idx.ef_search)
                if idx.kind == "hnsw"
                else faiss.SearchParametersIVF(sel=sel_, nprobe=idx.nprobe)
            )
            lat_r, out_r = timed(lambda u, p=p: idx._index.search(u, k, params=p)[1], qf)
            row["raw_selector_recall"] = recall(np.vstack(out_r), tf)
            row["raw_selector_median_ms"] = ms(lat_r)["median_ms"]
            if idx.kind == "ivf" and args.filter_nprobe_sweep and m < idx.count():
                row["raw_selector_sweep"] = []
                for npb in [int(v) for v in args.filter_nprobe_sweep.split(",")]:
                    p_s = faiss.SearchParametersIVF(sel=sel_, nprobe=npb)
                    lat_s, out_s = timed(lambda u, p=p_s: idx._index.search(u, k, params=p)[1], qf)
                    row["raw_selector_sweep"].append(
                        {"nprobe": npb, "recall_at_k": recall(np.vstack(out_s), tf), **ms(lat_s)}
                    )
            del sel_, p, bits
        res["filtered"].append(row)
        print("filtered", row, flush=True)

    res["peak_rss_bytes"] = rss_peak_bytes()
    res["peak_rss_gib"] = res["peak_rss_bytes"] / 2**30
    res["peak_rss_target_bytes"] = 12 * 10**9
    res["peak_rss_target_met"] = res["peak_rss_bytes"] <= 12 * 10**9
    res["loadavg_end"] = os.getloadavg()
    res["total_s"] = time.perf_counter() - t_all
    print(
        f"peak RSS {res['peak_rss_bytes']:,} bytes ({gib(res['peak_rss_bytes'])}); "
        f"total {res['total_s']:.0f}s",
        flush=True,
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
