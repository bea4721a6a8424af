"""How long the intelligence views take as the store grows (index/intel.py).

Builds a store of N casings (rows written directly, no scans: the views read only rows) in
incidents of 2 casings over 6 agencies, with hits chaining incidents into series of 2-8, a
lead per 4 casings, firearms with test fires, and times ``list_series``, ``find_series``
and ``report`` for one agency seeing 4 of the 6 agencies (median of 3 runs).

    python benchmarks/intel_scale.py --sizes 10000 100000 --json benchmarks/results/intel-scale.json
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from index.intel import Intel
from index.store import Store

AGENCIES = [f"AG-{i}" for i in range(6)]
JUR = {a: f"j{i // 2}" for i, a in enumerate(AGENCIES)}


def build(store: Store, n: int, seed: int) -> None:
    rng = random.Random(seed)
    now = "2026-01-01T00:00:00.000+00:00"
    with store._tx() as con:
        con.executemany("INSERT INTO agencies(id, name) VALUES (?, ?)", [(a, a) for a in AGENCIES])
        inc = [(AGENCIES[i % 6], f"I-{i}", "2025-06-01") for i in range(n // 2)]
        con.executemany("INSERT INTO incidents(agency, id, date) VALUES (?, ?, ?)", inc)
        con.executemany(
            "INSERT INTO casings(id, casing_id, incident, acquisition_date, agency, sha256,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (i + 1, f"c{i}", f"I-{i // 2}", "2025-06-01", AGENCIES[(i // 2) % 6], f"s{i}", now)
                for i in range(n)
            ],
        )
        dec, leads = [], []
        i = 0
        while i < n - 16:  # series of 2-8 incidents: chain incident k to k+1
            size = rng.randint(2, 8)
            for k in range(size - 1):
                a, b = 2 * (i // 2 + k) + 1, 2 * (i // 2 + k + 1) + 1
                dec.append((a, b, "hit", "e", now))
                leads.append((a, b, b, now))
            i += 2 * size + 2 * rng.randint(0, 6)  # some incidents stay alone
        con.executemany(
            "INSERT INTO decisions(casing, candidate, verdict, examiner, time) VALUES (?, ?, ?, ?, ?)",
            dec,
        )
        con.executemany(
            "INSERT INTO leads(casing_a, casing_b, job, created_at) VALUES (?, ?, ?, ?)", leads
        )


def timed(fn: Callable[[], object], repeat: int = 3) -> float:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def measure(intel: Intel, visible: set[str], sid: str) -> dict[str, float]:
    return {
        "list_series_s": round(timed(lambda: intel.list_series(visible)), 3),
        "find_series_s": round(timed(lambda: intel.find_series(visible, series_id=sid)), 3),
        "report_s": round(timed(lambda: intel.report(visible, JUR.__getitem__)), 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    visible = set(AGENCIES[:4])
    results = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(Path(tmp) / "d")
            intel = Intel(store)
            build(store, n, args.seed)
            comps = intel.components()
            series = intel.list_series(visible)
            sid = series[len(series) // 2]["series_id"]
            row = {"casings": n, "series": len(comps), "series_visible": len(series)}
            row.update(measure(intel, visible, sid))
            store.close()
        print(json.dumps(row), flush=True)
        results.append(row)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "command": " ".join(sys.argv),
                    "date": time.strftime("%Y-%m-%d"),
                    "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                    "python": platform.python_version(),
                    "results": results,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
