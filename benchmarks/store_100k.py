"""A store of N casings with real prepared surfaces, searched end to end.

Each casing is a ``benchmarks/scale_corpus.py`` distractor (a 9-mm breech face drawn directly
on the 6.25-um canvas, ~0.1 s each; see that module for how they differ from full
simulations), stored through ``Store.add_casing`` exactly as an ingest stores it: its
descriptors and screening signature by the index's own engine (``BallisticsEngine.describe``),
its surface in the storage form asked for (``PreparedCasing.to_bytes``) as a file under
``surfaces/`` fsync'ed before the row commits (synchronous=FULL), one transaction per casing.
No original file (a synthetic SHA-256 stands for it). Then the catalog builds its indexes and
``Catalog.search`` is timed end to end (descriptor search, screen, full comparison of the kept
candidates on the stored surfaces) for stored casings as queries.

    nice -n 10 python benchmarks/store_100k.py --n 10000 --queries 20

Data: ``benchmarks/_data/store/n<N>-<form>/`` (ignored by git; resumable: casings already
stored are skipped). Raw output: ``benchmarks/results/store_100k-n<N>-<form>.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import scale_corpus
from benchmarks._common import ROOT, machine

SEED = 11  # distractor corpus seed (scale.py uses 7 for its distractors; any seed works)


def _make(args: tuple[int, str]) -> tuple[int, dict[str, np.ndarray], bytes, float]:
    """Casing ``i``: (i, descriptors incl. signature, surface bytes, seconds to make)."""
    from index.engine import BallisticsEngine

    i, form = args
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    t = time.perf_counter()
    p = scale_corpus.prepared(SEED, i)
    descs = BallisticsEngine().describe(p)
    return i, descs, p.to_bytes(form), time.perf_counter() - t


def build(d: Path, n: int, form: str, workers: int) -> dict[str, Any]:
    from index.engine import BallisticsEngine
    from index.store import Store

    version = BallisticsEngine().extractor_version
    st = Store(d)
    have = st.count_live()
    todo = [(i, form) for i in range(have, n)]
    t0 = time.perf_counter()
    add_s = 0.0
    make_s = 0.0
    sizes = []
    with ProcessPoolExecutor(max(1, workers)) as ex:
        for k, (i, descs, surface, s) in enumerate(ex.map(_make, todo, chunksize=8)):
            make_s += s
            sizes.append(len(surface))
            t = time.perf_counter()
            st.add_casing(
                original=None,
                sha256=hashlib.sha256(f"store-bench:{SEED}:{i}".encode()).hexdigest(),
                agency="BENCH",
                descriptors=descs,
                extractor_version=version,
                surface=surface,
                casing_id=f"d{i:06d}",
                caliber="9mm",
                filename=f"distractor-{i:06d}.x3p",
                format="x3p",
                spacing_m=6.25e-6,
            )
            add_s += time.perf_counter() - t
            if k % 500 == 0:
                print(f"\rstored {i + 1}/{n}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    st.close()
    return {
        "stored_now": len(todo),
        "wall_s": round(time.perf_counter() - t0, 1),
        "make_cpu_s_per_casing": round(make_s / max(1, len(todo)), 4),
        "add_casing_s_per_casing": round(add_s / max(1, len(todo)), 5),
        "surface_bytes_mean_new": float(np.mean(sizes)) if sizes else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--form", choices=["levels", "full"], default="levels")
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--rescue",
        type=int,
        default=0,
        metavar="HEAD",
        help="time searches with the rescue stage up to this position (Catalog.search"
        " rescue_head; 0: none); the output file then ends in -rescue<HEAD>",
    )
    args = ap.parse_args()
    from index.engine import BallisticsEngine
    from index.service import Catalog

    d = ROOT / "benchmarks" / "_data" / "store" / f"n{args.n}-{args.form}"
    d.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "n": args.n,
        "form": args.form,
        "build": build(d, args.n, args.form, args.workers),
    }
    t = time.perf_counter()
    with Catalog.open(d, engine=BallisticsEngine()) as cat:
        res["open_s"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        res["check"] = bool(cat.check(verify_surfaces=False))
        res["check_sizes_s"] = round(time.perf_counter() - t, 1)
        rng = np.random.default_rng(5)
        ids = [f"d{i:06d}" for i in rng.choice(args.n, size=args.queries, replace=False)]
        times, details = [], []
        for cid in ids:
            t = time.perf_counter()
            r = cat.search(cid, top=10, rescue_head=args.rescue)
            times.append(time.perf_counter() - t)
            details.append(
                {
                    "query": cid,
                    "s": round(times[-1], 3),
                    "top": r.combined[0].casing_id if r.combined else None,
                    "rescored": r.n_rescored,
                    "errors": r.n_errors,
                    "partial": r.partial,
                    "rerank_k": r.rerank_k,
                    "rescued": r.n_rescued,
                    "stage_s": {k: round(v, 4) for k, v in r.stage_s.items()},
                }
            )
        res["search_s"] = {
            "median": round(float(np.median(times)), 3),
            "p90": round(float(np.quantile(times, 0.9)), 3),
            "max": round(float(np.max(times)), 3),
            "queries": len(times),
            "stage_median_s": {
                k: round(float(np.median([d["stage_s"].get(k, 0.0) for d in details])), 4)
                for k in details[0]["stage_s"]
            },
        }
        res["searches"] = details
    # one walk, so a WAL checkpoint between two walks cannot make "other" negative
    sizes = {f: f.stat().st_size for f in d.rglob("*") if f.is_file()}
    db = sum(v for f, v in sizes.items() if f.parent == d and f.name.startswith("store.sqlite"))
    surf = sum(v for f, v in sizes.items() if (d / "surfaces") in f.parents)
    other = sum(sizes.values()) - db - surf
    res["disk"] = {
        "sqlite_bytes": db,
        "surface_files_bytes": surf,
        "other_bytes (vector indexes, snapshots)": other,
        "bytes_per_casing_sqlite": round(db / args.n),
        "bytes_per_casing_surfaces": round(surf / args.n),
        "bytes_per_casing_total": round((db + surf + other) / args.n),
    }
    tag = f"-rescue{args.rescue}" if args.rescue else ""
    out = ROOT / "benchmarks" / "results" / f"store_100k-n{args.n}-{args.form}{tag}.json"
    out.write_text(json.dumps(res, indent=1, default=str))
    print(json.dumps({k: v for k, v in res.items() if k not in ("machine", "searches")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
