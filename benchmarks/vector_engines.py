"""FAISS (the project's configuration) against Milvus (milvus-lite; a Milvus server when one is
reachable) as the coarse-stage vector engine, on the same synthetic descriptors in one run.

Data: ``--rows`` L2-normalised vectors of the real descriptor dimension (144, from
``ballistics.descriptors``), a Gaussian mixture as in ``search_core.py`` (``--clusters``
centres, ``--spread``), seeded; ``--queries`` fresh draws from the same mixture (their own
seed). Filters: random subsets of the ids keeping 100 %, 10 %, 1 %, 0.1 %, 0.01 % of the rows
(seeded). Ground truth: exact top-``k`` by inner product inside each filter (``faiss.knn``).
Everything is generated once into ``--cache`` (an ignored folder) and reused.

Each engine runs in its own child process (so its peak memory is its own) and reports: ingest
time (FAISS: ``FaissIndex.build`` with ``choose_factory`` - HNSW32 at 1 M rows, efSearch 128;
Milvus: ``MilvusIndex.add`` in batches of 50 k + flush, and for milvus-lite the wait until every
sealed segment has its HNSW index, :func:`wait_indexed`), peak RSS (``VmHWM``) and RSS before
the build, on-disk size, then per filter: recall@k against the exact filtered top-k and the
latency of one query at a time (median / p90), with the index's plan. No parameter is tuned
here: both engines run with the project's defaults, so there is no tuning/held-out split.

Usage::

    nice -n 10 .venv/bin/python benchmarks/vector_engines.py --rows 1000000 \\
        --out benchmarks/results/vector-engines-1m.json
    # add a Milvus server: --engines faiss,milvus-lite,milvus://127.0.0.1:19530
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SELECTIVITIES = (1.0, 0.1, 0.01, 0.001, 0.0001)


def descriptor_dim() -> int:
    from ballistics.descriptors import DESCRIPTOR_DIMS

    return int(DESCRIPTOR_DIMS["breech_face"])


def mixture(n: int, centres: np.ndarray, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, centres.shape[1]), dtype=np.float32)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        x = centres[rng.integers(0, len(centres), m)]
        x = x + spread * rng.standard_normal((m, centres.shape[1]), dtype=np.float32)
        out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def prepare(args: argparse.Namespace) -> Path:
    """Data, queries, filters and exact ground truth in ``--cache`` (made once)."""
    import faiss

    dim = descriptor_dim()
    path = Path(args.cache) / f"r{args.rows}-q{args.queries}-k{args.k}-s{args.seed}.npz"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    base = mixture(args.rows, centres, args.spread, args.seed + 1)
    queries = mixture(args.queries, centres, args.spread, args.seed + 2)
    ids = np.arange(args.rows, dtype=np.int64) * 2 + 1  # sparse ids, like a store's
    frng = np.random.default_rng(args.seed + 3)
    arrays: dict[str, np.ndarray] = {"base": base, "queries": queries, "ids": ids}
    for sel in SELECTIVITIES:
        m = max(1, round(sel * args.rows))
        rows = np.arange(args.rows) if sel >= 1 else np.sort(frng.choice(args.rows, m, False))
        _, i = faiss.knn(queries, base[rows], min(args.k, m), metric=faiss.METRIC_INNER_PRODUCT)
        truth = np.full((args.queries, args.k), -1, np.int64)
        truth[:, : i.shape[1]] = np.where(i >= 0, ids[rows][np.maximum(i, 0)], -1)
        arrays[f"allowed_{sel}"] = ids[rows]
        arrays[f"truth_{sel}"] = truth
    np.savez(path, **arrays)
    print(f"prepared {path} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return path


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _dir_bytes(p: Path) -> int:
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def wait_indexed(db: Path, timeout_s: float = 3600.0) -> float:
    """milvus-lite builds each sealed segment's HNSW index in the background and searches a
    segment by brute force until its index is there: wait until every segment file
    (``data_*.parquet``) has its ``.hnsw.idx`` (seconds waited), so the search is measured on
    the index, not on brute force."""
    t = time.perf_counter()
    while time.perf_counter() - t < timeout_s:
        segs = {p.stem for p in db.rglob("data_*.parquet")}
        built = {p.name.split(".")[0] for p in db.rglob("*.hnsw.idx")}
        if segs and segs <= built:
            break
        time.sleep(1.0)
    return time.perf_counter() - t


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = total = 0
    for f, t in zip(found, truth, strict=True):
        t = t[t >= 0]
        total += len(t)
        hits += len(np.intersect1d(f[f >= 0], t))
    return hits / max(total, 1)


def worker(args: argparse.Namespace) -> dict:
    """One engine: build, then every filter; returns the measurements."""
    import faiss

    from index.vectors import FaissIndex

    data = np.load(args.cache_file)
    base, queries, ids = data["base"], data["queries"], data["ids"]
    rss_before_kb = _status_kb("VmRSS")
    work = Path(args.cache) / f"engine-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out: dict = {"engine": args.worker}
    t = time.perf_counter()
    mv = None
    if args.worker == "faiss":
        faiss.omp_set_num_threads(os.cpu_count() or 1)  # as the server builds
        idx: object = FaissIndex.build(base.shape[1], [(ids, base)])
        out["ingest_s"] = time.perf_counter() - t
        out["structure"] = idx.factory  # type: ignore[attr-defined]
        snap = work / "bf.faiss"
        idx.snapshot(snap)  # type: ignore[attr-defined]
        out["disk_bytes"] = snap.stat().st_size
    else:
        from index.vectors_milvus import MilvusVectors, parse_vectors_uri

        uri = "milvus-lite://" + str(work / "v.db") if args.worker == "milvus-lite" else args.worker
        mv = MilvusVectors(parse_vectors_uri(uri))
        idx = mv.create("bench", base.shape[1])
        for s in range(0, len(ids), 50_000):
            idx.add(ids[s : s + 50_000], base[s : s + 50_000])  # type: ignore[attr-defined]
        idx.snapshot(None, {"seq": 0})  # type: ignore[attr-defined]  # flush: seal segments
        out["insert_flush_s"] = time.perf_counter() - t
        if args.worker == "milvus-lite":
            out["index_wait_s"] = wait_indexed(work / "v.db")
        out["ingest_s"] = time.perf_counter() - t
        out["structure"] = idx.factory  # type: ignore[attr-defined]
        out["disk_bytes"] = _dir_bytes(work / "v.db") if args.worker == "milvus-lite" else None
    out["rss_before_build_mib"] = rss_before_kb / 1024
    out["rss_after_build_mib"] = _status_kb("VmRSS") / 1024
    out["filters"] = []
    for sel in [float(v) for v in args.selectivities.split(",")]:
        allowed = None if sel >= 1 else data[f"allowed_{sel}"]
        truth = data[f"truth_{sel}"]
        lat, found = [], []
        for q in queries:
            t = time.perf_counter()
            _, i = idx.search(q[None, :], args.k, allowed)  # type: ignore[attr-defined]
            lat.append(time.perf_counter() - t)
            found.append(i[0])
        a = np.asarray(lat) * 1e3
        row = {
            "selectivity": sel,
            "allowed_rows": len(ids) if allowed is None else len(allowed),
            "plan": idx.plan(None if allowed is None else len(allowed)),  # type: ignore[attr-defined]
            "recall": recall(np.stack(found), truth),
            "median_ms": float(np.median(a)),
            "p90_ms": float(np.percentile(a, 90)),
        }
        print(json.dumps(row), file=sys.stderr)
        out["filters"].append(row)
    out["peak_rss_mib"] = _status_kb("VmHWM") / 1024
    if mv is not None:
        mv.close()
    shutil.rmtree(work, ignore_errors=True)
    return out


def _reachable(uri: str) -> str | None:
    """None when a Milvus server answers at ``uri``, else why not."""
    try:
        from index.vectors_milvus import MilvusVectors, parse_vectors_uri

        MilvusVectors(parse_vectors_uri(uri)).close()
        return None
    except Exception as e:
        return f"{type(e).__name__}: {e}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--spread", type=float, default=0.06)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engines", default="faiss,milvus-lite")
    ap.add_argument(
        "--selectivities",
        default=",".join(map(str, SELECTIVITIES)),
        help="filters to measure (a subset of the prepared ones)",
    )
    ap.add_argument("--cache", default=str(ROOT / "out" / "vector-engines"))
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--cache-file", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    cache_file = prepare(args)
    results = []
    for engine in args.engines.split(","):
        if engine.startswith("milvus:") or engine.startswith("milvus+"):
            why = _reachable(engine)
            if why is not None:
                print(f"{engine}: not reachable ({why}); skipped", file=sys.stderr)
                results.append({"engine": engine, "skipped": f"not reachable: {why}"})
                continue
        cmd = [sys.executable, __file__, "--worker", engine, "--cache-file", str(cache_file)]
        cmd += ["--cache", args.cache, "--k", str(args.k), "--selectivities", args.selectivities]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        results.append(json.loads(r.stdout.strip().splitlines()[-1]))
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_at_end": os.getloadavg(),
        },
        "rows": args.rows,
        "dim": descriptor_dim(),
        "queries": args.queries,
        "k": args.k,
        "clusters": args.clusters,
        "spread": args.spread,
        "seed": args.seed,
        "selectivities": args.selectivities,
        "engines": results,
    }
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
