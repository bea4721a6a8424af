"""Speed of ``ballistics.compare.compare`` per pair on one core, against a straightforward
exhaustive registration run side by side in the same process.

Usage::

    python benchmarks/compare_speed.py [--pairs 20] [--exhaustive 3] [--seed 3]

Pairs: Fadul casings (half same-slide, half different-slide, seeded choice), each casing read
and prepared once beforehand. Per pair:

* ``compare cold``: ``compare(a, b)`` on freshly deserialised casings
  (``PreparedCasing.from_bytes``,
  so the downsampled levels are computed inside the timing, as in a re-ranking request),
* ``compare warm``: the same call again (levels cached),
* stage split (warm): ``register()`` (coarse 360-deg sweep + refinement) vs the CMC cell stage
  (cells in both directions + congruence), by calling the same internals ``compare`` calls.

Exhaustive baseline (on the first ``--exhaustive`` pairs): every rotation 0..359 deg in 1-deg
steps at full 6.25-um resolution (``PreparedCasing.level(1)``), masked NCC over all translations
within +-500 um for each rotation (``ballistics.register.reference/ncc_maps/rotate``), rotations
processed in batches. Then the ratio of medians, and whether both find the same pose.
A cProfile of ``compare`` over all pairs lists the dominant functions.
Times are the process's CPU time (``time.process_time``; one thread, so equal to wall time on
an idle machine) unless ``--wall``. Writes ``benchmarks/results/compare-speed.json``.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import argparse
import cProfile
import csv
import io
import json
import math
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REAL, ROOT, machine

cv2.setNumThreads(1)

TARGET_MS = 100.0
#: CPU time of this process (one thread: equal to wall time on an idle machine, and not
#: inflated by other jobs on a shared one); ``--wall`` switches to the wall clock.
clock = time.process_time
MAX_OFFSET_UM = 500.0


def exhaustive(a: Any, b: Any, batch: int = 8) -> dict[str, Any]:
    """Every 1-deg rotation at full resolution, masked NCC over +-500 um translations."""
    from ballistics.compare import _same_canvas
    from ballistics.register import ncc_maps, reference, rotate

    t = clock()
    (da, ma), (db, mb) = _same_canvas(a.level(1), b.level(1))
    spacing = a.surface.spacing_m[0]
    s = round(MAX_OFFSET_UM * 1e-6 / spacing)
    ref = reference(da, ma, s)
    best = (-2.0, 0.0, 0, 0)
    for start in range(0, 360, batch):
        angles = range(start, min(360, start + batch))
        d = np.empty((len(angles), *db.shape), np.float32)
        m = np.empty((len(angles), *db.shape), bool)
        for k, ang in enumerate(angles):
            d[k], m[k] = rotate(db, mb, float(ang))
        maps = ncc_maps(ref, d, m, s)
        k, i, j = np.unravel_index(int(np.argmax(maps)), maps.shape)
        if maps[k, i, j] > best[0]:
            best = (float(maps[k, i, j]), float(angles[k]), int(i) - s, int(j) - s)
    return {
        "seconds": clock() - t,
        "ncc": best[0],
        "rotation_deg": best[1],
        "dy_m": best[2] * spacing,
        "dx_m": best[3] * spacing,
        "fft_size": ref.size,
        "canvas_px": int(da.shape[0]),
    }


def stage_split(a: Any, b: Any) -> dict[str, float]:
    """Time compare()'s two stages by calling the same internals in the same order: the
    registration, then everything on the cell level (translation refinement, cells both ways,
    congruence)."""
    from ballistics import compare as cm

    p = cm.CompareParams()
    t0 = clock()
    pose, _ = cm.register(a, b, p)
    t1 = clock()
    spacing = a.surface.spacing_m[0] * p.cell_factor
    la, lb = cm._same_canvas(a.level(p.cell_factor), b.level(p.cell_factor))
    if hasattr(cm, "_refine_translation"):  # sub-pixel translation on the cell level
        pose, _ = cm._refine_translation(la, lb, pose, spacing)
    cm._congruence(cm._cells(la, lb, pose, p, spacing, "a->b"), p)
    cm._congruence(cm._cells(lb, la, pose.inverse(), p, spacing, "b->a"), p)
    t2 = clock()
    return {"register": t1 - t0, "cells": t2 - t1}


def choose_pairs(labels: list[str], n: int, seed: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    idx = range(len(labels))
    same = [(i, j) for i in idx for j in idx if i < j and labels[i] == labels[j]]
    diff = [(i, j) for i in idx for j in idx if i < j and labels[i] != labels[j]]
    ns = (n + 1) // 2
    a = [same[k] for k in rng.choice(len(same), ns, replace=False)]
    b = [diff[k] for k in rng.choice(len(diff), n - ns, replace=False)]
    # Interleave same/different so the exhaustive subset has both kinds.
    out: list[tuple[int, int]] = []
    for k in range(max(len(a), len(b))):
        out += a[k : k + 1] + b[k : k + 1]
    return out


def angle_diff(x: float, y: float) -> float:
    return abs((x - y + 180.0) % 360.0 - 180.0)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--exhaustive", type=int, default=3, help="pairs run exhaustively too")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--wall", action="store_true", help="time with the wall clock, not CPU")
    args = ap.parse_args()
    global clock
    if args.wall:
        clock = time.perf_counter
    wall0 = time.perf_counter()

    from ballistics.compare import compare
    from ballistics.io import read_scan
    from ballistics.pipeline import PreparedCasing, prepare

    folder = REAL / "csafe-cartridgeCaseScans"
    rows = list(csv.DictReader(open(folder / "MANIFEST.tsv"), delimiter="\t"))
    labels = [r["firearm_id"] for r in rows]
    pairs = choose_pairs(labels, args.pairs, args.seed)
    used = sorted({i for p in pairs for i in p})
    blobs = {i: prepare(read_scan(folder / rows[i]["file"])).to_bytes() for i in used}
    fresh = lambda i: PreparedCasing.from_bytes(blobs[i])  # noqa: E731

    compare(fresh(pairs[0][0]), fresh(pairs[0][1]))  # warm-up
    per_pair = []
    for i, j in pairs:
        a, b = fresh(i), fresh(j)
        t = clock()
        c = compare(a, b)
        cold = clock() - t
        t = clock()
        compare(a, b)
        warm = clock() - t
        split = stage_split(a, b)
        per_pair.append(
            {
                "a": rows[i]["casing_id"],
                "b": rows[j]["casing_id"],
                "same_slide": labels[i] == labels[j],
                "score": round(c.score, 4),
                "cmc": c.cmc,
                "rotation_deg": round(c.rotation_deg, 2),
                "dy_um": round(c.dy_m * 1e6, 1),
                "dx_um": round(c.dx_m * 1e6, 1),
                "correlation": round(c.correlation, 4),
                "compare_cold_ms": round(1000 * cold, 1),
                "compare_warm_ms": round(1000 * warm, 1),
                "register_ms": round(1000 * split["register"], 1),
                "cells_ms": round(1000 * split["cells"], 1),
            }
        )
        print(json.dumps(per_pair[-1]), flush=True)

    # Exhaustive baseline on the first pairs, with compare timed again right beside it.
    exh = []
    for (i, j), pp in zip(pairs[: args.exhaustive], per_pair, strict=False):
        t = clock()
        compare(fresh(i), fresh(j))
        fast = clock() - t
        e = exhaustive(fresh(i), fresh(j))
        rot_ok = angle_diff(e["rotation_deg"], pp["rotation_deg"]) <= 3.0
        dt_um = math.hypot(e["dy_m"] * 1e6 - pp["dy_um"], e["dx_m"] * 1e6 - pp["dx_um"])
        exh.append(
            {
                "a": pp["a"],
                "b": pp["b"],
                "same_slide": pp["same_slide"],
                "exhaustive_s": round(e["seconds"], 2),
                "compare_ms_beside": round(1000 * fast, 1),
                "ratio": round(e["seconds"] / fast, 1),
                "exhaustive_rotation_deg": e["rotation_deg"],
                "exhaustive_dy_um": round(e["dy_m"] * 1e6, 1),
                "exhaustive_dx_um": round(e["dx_m"] * 1e6, 1),
                "exhaustive_ncc": round(e["ncc"], 4),
                "compare_rotation_deg": pp["rotation_deg"],
                "compare_dy_um": pp["dy_um"],
                "compare_dx_um": pp["dx_um"],
                "rotation_diff_deg": round(angle_diff(e["rotation_deg"], pp["rotation_deg"]), 2),
                "translation_diff_um": round(dt_um, 1),
                "same_rotation_within_3deg": rot_ok,
                "fft_size": e["fft_size"],
                "canvas_px": e["canvas_px"],
            }
        )
        print(json.dumps(exh[-1]), flush=True)

    # Profile compare over all pairs (cold casings).
    prof = cProfile.Profile()
    cases = [(fresh(i), fresh(j)) for i, j in pairs]
    prof.enable()
    for a, b in cases:
        compare(a, b)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(12)
    st = pstats.Stats(prof)
    total = sum(v[2] for v in st.stats.values())  # type: ignore[attr-defined]
    by_func = {}
    for (fname, _line, func), v in st.stats.items():  # type: ignore[attr-defined]
        if "ballistics" in fname or func in ("matchTemplate", "warpAffine"):
            key = f"{Path(fname).name}:{func}" if "ballistics" in fname else func
            by_func[key] = {"tottime_s": round(v[2], 3), "cumtime_s": round(v[3], 3)}

    def stat(key: str) -> dict[str, float]:
        v = np.array([p[key] for p in per_pair])
        return {
            "median": round(float(np.median(v)), 1),
            "p90": round(float(np.percentile(v, 90)), 1),
        }

    exh_s = [e["exhaustive_s"] for e in exh]
    beside = [e["compare_ms_beside"] for e in exh]
    res: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv),
        "machine": machine(),
        "threads": 1,
        "clock": "perf_counter (wall)" if args.wall else "process_time (CPU)",
        "wall_s": round(time.perf_counter() - wall0, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "target_ms_median": TARGET_MS,
        "pairs": len(pairs),
        "same_slide_pairs": sum(p["same_slide"] for p in per_pair),
        "compare_cold_ms": stat("compare_cold_ms"),
        "compare_warm_ms": stat("compare_warm_ms"),
        "register_ms": stat("register_ms"),
        "cells_ms": stat("cells_ms"),
        "target_met_cold": stat("compare_cold_ms")["median"] <= TARGET_MS,
        "exhaustive": {
            "pairs": len(exh),
            "median_s": round(float(np.median(exh_s)), 2) if exh else None,
            "compare_beside_median_ms": round(float(np.median(beside)), 1) if exh else None,
            "ratio_of_medians": (
                round(1000 * float(np.median(exh_s)) / float(np.median(beside)), 1) if exh else None
            ),
            "ratio_vs_all_pairs_cold_median": (
                round(1000 * float(np.median(exh_s)) / stat("compare_cold_ms")["median"], 1)
                if exh
                else None
            ),
            "per_pair": exh,
        },
        "profile_total_s": round(total, 3),
        "profile_ballistics_functions": dict(
            sorted(by_func.items(), key=lambda kv: -kv[1]["cumtime_s"])[:15]
        ),
        "profile_top_tottime": buf.getvalue().splitlines()[-20:],
        "per_pair": per_pair,
    }
    dest = ROOT / "benchmarks" / "results" / "compare-speed.json"
    dest.write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k not in ("per_pair",)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
