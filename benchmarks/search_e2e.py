"""End-to-end search on the embedded store: descriptor stage + registration re-rank.

Usage::

    python benchmarks/search_e2e.py [--queries 12] [--rerank 200] [--compare 0,40] [--workers 0]

Builds (once) a store in ``benchmarks/_data/e2e-store`` from the 40 Fadul casings and a seeded
synthetic corpus (X3P; 6.25 and 3.125 um), then times ``Catalog.search`` by casing id for Fadul
queries with ``rerank_k`` descriptor candidates, once per ``--compare`` setting (how many of them
the screen keeps for the full comparison; 0: all), side by side in one run, and reports how
many of each query's same-firearm casings reach the top 10 under each setting. Re-ranking cost does not depend on the store
size (it is ``rerank_k`` comparisons); the descriptor stage at 100 k and 1 M rows is measured
by ``benchmarks/search_core.py``. Writes ``benchmarks/results/search-e2e.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REAL, ROOT, machine


def build(store: Path, guns: int, shots: int, seed: int) -> dict[str, str]:
    """Ingest Fadul + a synthetic corpus; returns casing id -> firearm id."""
    from ballistics.synth import write_corpus
    from index.service import Catalog

    truth_file = store / "truth.json"
    if truth_file.exists():
        return dict(json.loads(truth_file.read_text()))
    files: list[tuple[Path, str, str]] = []
    fadul = REAL / "csafe-cartridgeCaseScans"
    if (fadul / "MANIFEST.tsv").exists():
        for r in csv.DictReader((fadul / "MANIFEST.tsv").read_text().splitlines(), delimiter="\t"):
            files.append((fadul / r["file"], r["firearm_id"], "fadul"))
    corpus = ROOT / "benchmarks" / "_data" / f"e2e-synth-g{guns}-s{shots}-seed{seed}"
    manifest = corpus / "manifest.csv"
    if not manifest.exists():
        write_corpus(corpus, guns=guns, shots=shots, seed=seed)
    for r in csv.DictReader(manifest.read_text().splitlines()):
        files.append((corpus / r["file"], r["firearm_id"], "synthetic"))
    truth: dict[str, str] = {}
    t = time.time()
    with Catalog.open(store) as cat:
        for i, (f, gun, source) in enumerate(files):
            rec = cat.ingest_bytes(f.read_bytes(), f.name, {"agency": source, "caliber": "9mm"})
            truth[rec.casing_id] = gun
            print(f"\ringest {i + 1}/{len(files)}", end="", file=sys.stderr)
    print(f"\ningested {len(files)} casings in {time.time() - t:.0f} s", file=sys.stderr)
    truth_file.write_text(json.dumps(truth))
    return truth


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--queries", type=int, default=12)
    ap.add_argument("--rerank", type=int, default=200)
    ap.add_argument(
        "--compare", default="0,40", help="compare_k settings to time side by side (0: all)"
    )
    ap.add_argument("--workers", type=int, default=0, help="re-ranking threads (0: all cores)")
    ap.add_argument("--guns", type=int, default=110)
    ap.add_argument("--shots", type=int, default=2)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    from index.service import Catalog, CatalogConfig

    settings = [int(x) for x in args.compare.split(",")]
    store = ROOT / "benchmarks" / "_data" / "e2e-store"
    truth = build(store, args.guns, args.shots, args.seed)
    ids = list(truth)
    queries = [c for c in ids if truth[c].startswith("fadul")][: args.queries] or ids[
        : args.queries
    ]
    rows = []
    t = time.perf_counter()
    with Catalog.open(store, CatalogConfig(workers=args.workers)) as cat:
        open_s = time.perf_counter() - t  # includes re-extraction after a descriptor change
        cat.search(queries[0], top=10, rerank_k=5)  # warm-up: thread pool, imports
        for q in queries:
            siblings = sum(truth[c] == truth[q] for c in ids) - 1
            for k in settings:  # interleaved, so machine noise hits every setting alike
                t = time.perf_counter()
                res = cat.search(q, top=10, rerank_k=args.rerank, compare_k=k)
                wall = time.perf_counter() - t
                top = [c.casing_id for c in res.combined]
                rows.append(
                    {
                        "query": q,
                        "compare_k": k,
                        "wall_s": round(wall, 3),
                        "n_candidates": res.n_candidates,
                        "n_rescored": res.n_rescored,
                        "partial": res.partial,
                        "top1_same_firearm": bool(top) and truth.get(top[0]) == truth[q],
                        "siblings": siblings,
                        "siblings_in_top10": sum(truth.get(c) == truth[q] for c in top),
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr)
    per: dict[str, dict] = {}
    for k in settings:
        r = [x for x in rows if x["compare_k"] == k]
        walls = [x["wall_s"] for x in r]
        per[str(k)] = {
            "median_s": round(statistics.median(walls), 3),
            "p90_s": round(sorted(walls)[int(0.9 * (len(walls) - 1))], 3),
            "comparisons_per_search": statistics.median(x["n_rescored"] for x in r),
            "top1_same_firearm": sum(x["top1_same_firearm"] for x in r),
            "siblings_in_top10": sum(x["siblings_in_top10"] for x in r),
            "siblings_total": sum(x["siblings"] for x in r),
        }
    out = {
        "command": "python " + " ".join(sys.argv),
        "machine": machine(),
        "store_casings": len(ids),
        "rerank_k": args.rerank,
        "workers": args.workers,
        "queries": len(queries),
        "open_s": round(open_s, 1),
        "settings": per,
        "rows": rows,
    }
    (ROOT / "benchmarks" / "results" / "search-e2e.json").write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
