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

Usage::

    .venv/bin/python benchmarks/search_core.py --rows 100000
    .venv/bin/python benchmarks/search_core.py --rows 1000000 --out benchmarks/_data/r1m.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from index.vectors import FaissIndex, choose_factory


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
    args = ap.parse_args(argv)

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


if __name__ == "__main__":
    sys.exit(main())
