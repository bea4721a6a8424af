"""Background correlation on the 40 real Fadul casings: what leads it finds, what a job costs,
and what it does to interactive search latency.

Usage::

    nice -n 10 python benchmarks/correlate_leads.py [--queries 6]

Ingests the 40 Fadul casings (one agency, calibre 9mm) into a fresh store under
``benchmarks/_data/correlate-store`` (each gets a correlation job), then

1. times ``--queries`` searches (by casing id, default settings) while a
   :class:`index.correlate.CorrelationWorker` thread works through the 40 jobs;
2. waits for the queue to drain and times the same searches again with the worker idle;
3. reports the jobs' times and the leads against ground truth (same slide = ``firearm_id``).

Caveat: the 3-D non-match reference that gives the non-match frequency (and so the lead
threshold's meaning) was measured on Fadul itself, so the lead counts here are not a held-out
judgement of the threshold. Writes ``benchmarks/results/correlate-leads.json``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import itertools
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REAL, ROOT, machine


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=6)
    args = ap.parse_args()
    from index.correlate import CorrelationConfig, CorrelationWorker
    from index.service import Catalog

    folder = REAL / "csafe-cartridgeCaseScans"
    rows = list(csv.DictReader(open(folder / "MANIFEST.tsv"), delimiter="\t"))
    store = ROOT / "benchmarks" / "_data" / "correlate-store"
    shutil.rmtree(store, ignore_errors=True)
    truth: dict[str, str] = {}
    t0 = time.time()
    with Catalog.open(store) as cat:
        for r in rows:
            rec = cat.ingest_bytes(
                (folder / r["file"]).read_bytes(), Path(r["file"]).name, {"caliber": "9mm"}
            )
            truth[rec.casing_id] = r["firearm_id"]
    ingest_s = time.time() - t0
    ids = list(truth)
    queries = ids[:: max(1, len(ids) // args.queries)][: args.queries]
    cfg = CorrelationConfig()
    jobs: list[dict] = []

    def done(out) -> None:  # type: ignore[no-untyped-def]
        jobs.append(
            {
                "casing": out.casing,
                "partition": out.n_partition,
                "compared": out.n_compared,
                "leads": len(out.leads),
                "elapsed_s": round(out.elapsed_s, 3),
            }
        )

    with Catalog.open(store) as cat:

        def timed() -> list[float]:
            out = []
            for q in queries:
                t = time.perf_counter()
                cat.search(q)
                out.append(time.perf_counter() - t)
            return out

        w = CorrelationWorker(cat, config=cfg, on_done=done)
        w.start()
        time.sleep(2.0)  # the worker is inside its jobs
        busy = timed()
        busy_jobs_done = cat.store.job_counts()["done"]
        t_drain = time.time()
        while cat.store.job_counts()["pending"] + cat.store.job_counts()["running"]:
            time.sleep(0.5)
        drain_s = time.time() - t_drain
        w.stop()
        idle = timed()
        leads = cat.store.list_leads()
    same = {frozenset(p) for p in itertools.combinations(ids, 2) if truth[p[0]] == truth[p[1]]}
    found = {frozenset((ld.casing_a, ld.casing_b)) for ld in leads}
    res = {
        "command": "python benchmarks/correlate_leads.py " + " ".join(sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "casings": len(ids),
        "ingest_s": round(ingest_s, 1),
        "config": {
            "compare_fraction": cfg.compare_fraction,
            "compare_min": cfg.compare_min,
            "compare_max": cfg.compare_max,
            "lead_max_nmf": cfg.lead_max_nmf,
            "lead_min_cmc": cfg.lead_min_cmc,
            "nice": cfg.nice,
        },
        "search_s_worker_busy": [round(x, 3) for x in busy],
        "search_s_worker_idle": [round(x, 3) for x in idle],
        "search_median_s": {
            "worker_busy": round(statistics.median(busy), 3),
            "worker_idle": round(statistics.median(idle), 3),
        },
        "jobs_done_during_busy_searches": busy_jobs_done,
        "queue_drain_after_searches_s": round(drain_s, 1),
        "job_s": {
            "median": round(statistics.median(j["elapsed_s"] for j in jobs), 3),
            "max": max(j["elapsed_s"] for j in jobs),
            "total": round(sum(j["elapsed_s"] for j in jobs), 1),
        },
        "comparisons": sum(j["compared"] for j in jobs),
        "same_slide_pairs": len(same),
        "leads": len(found),
        "leads_same_slide": len(found & same),
        "leads_different_slide": len(found - same),
        "same_slide_pairs_compared_or_not_found": len(same - found),
        "jobs": jobs,
    }
    out = ROOT / "benchmarks" / "results" / "correlate-leads.json"
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "jobs"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
