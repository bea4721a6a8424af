"""Stage 1 at scale, per vector structure: does the descriptor search return the mates that
exact search ranks within the top K?

The pool of ``benchmarks/scale.py`` (N cheap distractors of ``scale_corpus``, seed 7, plus the
query sets: synthetic 3-D sets of a seed, and Fadul when present) is indexed by each engine;
every query-set casing with mates searches it for the top K (``index.search.RerankPolicy`` of
the pool size: 2,001 at 100k) and the share of mate pairs found is set beside the share that
exact search (numpy inner products) ranks within K. Also the median search time (one query,
one thread).

    nice -n 5 python benchmarks/scale_stage1.py --n 100000 --query-seed 401 --fadul-slides 0
    nice -n 5 python benchmarks/scale_stage1.py --flat-timing 100000,1000000,4000000

``--flat-timing``: only the time of one exact search (``FaissIndex``, ``Flat``, k = 2,001, one
thread) and of removing one id, over that many random unit 144-d vectors (seeded), for store
sizes the corpus does not reach; written to ``results/scale-stage1-flat-timing.json``.

Engines: ``faiss-hnsw`` (``HNSW32,Flat``, FAISS's rule from 50k rows until 2026-12-05),
``faiss-flat`` (the rule since), ``faiss-ivf`` (``IVF1024,SQfp16``, nprobe 64: the rule's
structure from 5 M rows, scaled to the pool), ``milvus-lite-hnsw`` and ``milvus-lite-flat`` (skipped with a
note without pymilvus / milvus-lite). Writes
``benchmarks/results/scale-stage1-n<N>-seed<S>.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import scale
from benchmarks._common import ROOT

#: engine name -> (kind, structure)
ENGINES = {
    "faiss-hnsw": ("faiss", "HNSW32,Flat"),
    "faiss-flat": ("faiss", "Flat"),
    # the rule's structure from 5 M rows, with nlist scaled to the pool (IVF4096 needs 160k
    # training rows); nprobe 64 as configured by default
    "faiss-ivf": ("faiss", "IVF1024,SQfp16"),
    "milvus-lite-hnsw": ("milvus-lite", "HNSW"),
    "milvus-lite-flat": ("milvus-lite", "FLAT"),
}


def build(engine: str, pool: np.ndarray, work: Path) -> Any:
    """The engine's index over ``pool`` (ids = row numbers), ready to search."""
    ids = np.arange(len(pool), dtype=np.int64)
    kind, structure = ENGINES[engine]
    if kind == "faiss":
        from index.vectors import FaissIndex

        return FaissIndex.build(pool.shape[1], [(ids, pool)], factory=structure)
    from benchmarks.vector_engines import wait_indexed
    from index.vectors_milvus import MilvusVectors, parse_vectors_uri

    db = work / f"{structure}.db"
    mv = MilvusVectors(parse_vectors_uri(f"milvus-lite://{db}"), index_type=structure)
    idx = mv.create("stage1", pool.shape[1])
    for s in range(0, len(ids), 50_000):
        idx.add(ids[s : s + 50_000], pool[s : s + 50_000])
    idx.snapshot(None, {"seq": 0})  # flush: sealed segments get their index
    if structure == "HNSW":
        wait_indexed(db)  # else milvus-lite searches unindexed segments by brute force
    return idx


def flat_timing(sizes: list[int]) -> dict[str, Any]:
    """Median wall time of one exact top-2,001 search at each size (20 queries, one thread)."""
    import faiss

    from index.vectors import FaissIndex

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    for n in sizes:
        x = rng.standard_normal((n, 144), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        idx = FaissIndex.build(144, [(np.arange(n, dtype=np.int64), x)], factory="Flat")
        q = x[:20] + np.float32(0.01)
        times = []
        for i in range(len(q)):
            t = time.perf_counter()
            idx.search(q[i], 2001)
            times.append(time.perf_counter() - t)
        removes = []
        for i in range(3):  # Flat removes physically: the rows after it move up
            t = time.perf_counter()
            idx.remove([1000 + i])
            removes.append(time.perf_counter() - t)
        out[str(n)] = {
            "structure": idx.factory,
            "ms_median": round(1e3 * float(np.median(times)), 1),
            "remove_one_ms_median": round(1e3 * float(np.median(removes)), 1),
        }
        print(n, out[str(n)], flush=True)
        del idx, x
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--query-seed", type=int, default=scale.QUERY_SEED)
    ap.add_argument("--fadul-slides", type=int, default=10)
    ap.add_argument(
        "--engines", default=",".join(ENGINES), help="comma-separated, of " + ", ".join(ENGINES)
    )
    ap.add_argument("--flat-timing", default=None, help="comma-separated row counts (see above)")
    args = ap.parse_args()
    from index.search import RerankPolicy

    if args.flat_timing:
        res = {
            **scale.run_header(),
            "k": 2001,
            "sizes": flat_timing([int(v) for v in args.flat_timing.split(",")]),
        }
        path = ROOT / "benchmarks" / "results" / "scale-stage1-flat-timing.json"
        path.write_text(json.dumps(res, indent=1))
        return 0

    P = scale.load_pool(args.n, args.query_seed, args.fadul_slides)
    n, items, pool = P.n, P.items, P.pool
    Q = pool[n:]
    k = RerankPolicy().k(len(pool))
    pairs = []  # (query j, mate pool row, set, exact rank)
    for j, it in enumerate(items):
        s = pool @ Q[j]
        s[n + j] = -np.inf
        pairs.extend((j, m, it.set, int((s > s[m]).sum())) for m in P.mates(j))
    out: dict[str, Any] = {
        **scale.run_header(),
        "n_distractors": n,
        "query_seed": args.query_seed,
        "k": k,
        "mate_pairs": len(pairs),
        "exact_within_k": {},
        "engines": {},
    }
    sets = [*sorted({p[2] for p in pairs}), "all"]
    for set_ in sets:
        sel = [p for p in pairs if set_ in ("all", p[2])]
        out["exact_within_k"][set_] = round(float(np.mean([p[3] < k for p in sel])), 4)
    work = Path(tempfile.mkdtemp(prefix="scale-stage1-"))
    try:
        for engine in args.engines.split(","):
            try:
                t = time.perf_counter()
                idx = build(engine, pool, work)
            except ImportError as e:
                out["engines"][engine] = {"skipped": f"{type(e).__name__}: {e}"}
                continue
            build_s = time.perf_counter() - t
            found: dict[int, set[int]] = {}
            times = []
            for j in sorted({p[0] for p in pairs}):
                t = time.perf_counter()
                _, got = idx.search(Q[j], k + 1)
                times.append(time.perf_counter() - t)
                found[j] = {int(c) for c in got[0] if c != n + j}
            res: dict[str, Any] = {
                "structure": getattr(idx, "factory", engine),
                "build_s": round(build_s, 1),
                "search_ms_median": round(1e3 * float(np.median(times)), 2),
                "found_within_k": {},
                "missed_exact_ranks": sorted(
                    p[3] for p in pairs if p[3] < k and p[1] not in found[p[0]]
                ),
            }
            for set_ in sets:
                sel = [p for p in pairs if set_ in ("all", p[2])]
                res["found_within_k"][set_] = round(
                    float(np.mean([p[1] in found[p[0]] for p in sel])), 4
                )
            out["engines"][engine] = res
            print(engine, json.dumps(res), flush=True)
            if hasattr(idx, "client"):
                idx.client.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    path = ROOT / "benchmarks" / "results" / f"scale-stage1-n{n}-seed{args.query_seed}.json"
    path.write_text(json.dumps(out, indent=1))
    print("exact", json.dumps(out["exact_within_k"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
