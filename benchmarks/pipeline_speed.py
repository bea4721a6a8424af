"""Speed of read + segment + condition (and descriptor extraction) per casing, one core.

Usage::

    python benchmarks/pipeline_speed.py [--casings 20] [--seed 11]

Three sets: raw synthetic casings at 6.25 um and at 3.125 um (written as X3P into the
git-ignored ``benchmarks/_data/speed-*``; same firearms and shots at both spacings) and the real
Fadul files (pre-cropped). Per casing, each stage is timed separately:

* ``read``: ``ballistics.io.read_scan`` (X3P unzip + decode),
* ``segment``: ``ballistics.segment.segment``,
* ``condition``: what ``prepare`` does after segmentation (crop to the primer, level, outliers,
  band-pass, resample to 6.25 um, centre the canvas), timed by calling the same functions,
* ``prepare``: the whole ``ballistics.pipeline.prepare`` (segments again, inside),
* ``describe``: ``ballistics.descriptors.describe`` on the prepared casing (after conditioning).

``total`` = read + prepare, the issue-2 "read + segment + condition" figure.
Times are the process's CPU time (``time.process_time``; one thread, so equal to wall time on
an idle machine, and not inflated by other jobs on a shared one); ``--wall`` uses the wall clock.
Writes ``benchmarks/results/pipeline-speed.json``.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REAL, ROOT, machine

cv2.setNumThreads(1)

TARGET_TOTAL_S = 0.5  # issue 2: read + segment + condition per 6.25-um casing
TARGET_DESCRIBE_S = 0.3  # issue 3: descriptor extraction per casing after conditioning
#: Time with the process's CPU clock (robust to other jobs on a shared machine; equals wall
#: time on an idle machine since everything runs on one thread) unless --wall is given.
CPU = True
STAGES = ("read", "segment", "condition", "prepare", "describe", "total")


def synth_files(n: int, seed: int, spacing_m: float) -> list[Path]:
    """Write (once) ``n`` raw synthetic casings at ``spacing_m``; return their paths."""
    from ballistics.synth import fire, make_firearms
    from ballistics.x3p import write_x3p

    tag = f"{spacing_m * 1e6:.3f}".rstrip("0").rstrip(".")
    out = ROOT / "benchmarks" / "_data" / f"speed-n{n}-seed{seed}-{tag}um"
    out.mkdir(parents=True, exist_ok=True)
    guns = make_firearms(math.ceil(n / 2), seed=seed)
    files = []
    for k in range(n):
        path = out / f"c{k:03d}.x3p"
        if not path.exists():
            scan, _ = fire(guns[k // 2], shot_seed=seed * 1000 + k, spacing_m=spacing_m)
            write_x3p(path, scan)
        files.append(path)
    return files


def time_one(path: Path) -> dict[str, Any]:
    from ballistics import pipeline
    from ballistics.descriptors import describe
    from ballistics.io import read_scan
    from ballistics.segment import segment

    clock = time.process_time if CPU else time.perf_counter
    t0 = clock()
    scan = read_scan(path)
    t1 = clock()
    seg = segment(scan)
    t2 = clock()
    # The post-segmentation part of prepare(), same calls and arguments.
    half = math.ceil(seg.primer_radius * 1.04) + 2
    crop = pipeline._crop_centred(scan, seg.breech_face_mask & scan.mask, seg.primer_center, half)
    pipeline.condition_breech_face(crop)
    t3 = clock()
    prepared = pipeline.prepare(scan)
    t4 = clock()
    describe(prepared)
    t5 = clock()
    return {
        "file": path.name,
        "shape": list(scan.shape),
        "spacing_um": round(scan.spacing_m[0] * 1e6, 4),
        "read": t1 - t0,
        "segment": t2 - t1,
        "condition": t3 - t2,
        "prepare": t4 - t3,
        "describe": t5 - t4,
        "total": (t1 - t0) + (t4 - t3),
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"casings": len(rows)}
    shapes = np.array([r["shape"] for r in rows])
    out["median_shape"] = [int(v) for v in np.median(shapes, axis=0)]
    for st in STAGES:
        v = np.array([r[st] for r in rows])
        out[st] = {
            "median_s": round(float(np.median(v)), 4),
            "p90_s": round(float(np.percentile(v, 90)), 4),
            "max_s": round(float(v.max()), 4),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--casings", type=int, default=20, help="synthetic casings per spacing")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--fadul", type=int, default=40, help="Fadul files to time (max 40)")
    ap.add_argument("--wall", action="store_true", help="time with the wall clock, not CPU")
    args = ap.parse_args()
    global CPU
    CPU = not args.wall

    sets = {
        "synthetic 6.25 um (raw)": synth_files(args.casings, args.seed, 6.25e-6),
        "synthetic 3.125 um (raw)": synth_files(args.casings, args.seed, 3.125e-6),
        "fadul (pre-cropped)": sorted((REAL / "csafe-cartridgeCaseScans" / "fadul").glob("*.x3p"))[
            : args.fadul
        ],
    }
    time_one(sets["synthetic 6.25 um (raw)"][0])  # warm-up: imports, FFT plans, caches
    wall0 = time.perf_counter()
    # Interleave the sets so that background load hits all of them alike.
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in sets}
    for i in range(max(len(v) for v in sets.values())):
        for name, files in sets.items():
            if i < len(files):
                rows[name].append(time_one(files[i]))
    wall = time.perf_counter() - wall0
    res: dict[str, Any] = {
        "wall_s": round(wall, 1),
        "command": "python " + " ".join(sys.argv),
        "machine": machine(),
        "threads": 1,
        "clock": "process_time (CPU s)" if CPU else "perf_counter (wall s)",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "targets": {"total_6.25um_s": TARGET_TOTAL_S, "describe_s": TARGET_DESCRIBE_S},
        "sets": {k: summarise(v) for k, v in rows.items()},
        "per_casing": {
            k: [
                {kk: (round(vv, 4) if isinstance(vv, float) else vv) for kk, vv in r.items()}
                for r in v
            ]
            for k, v in rows.items()
        },
    }
    s625 = res["sets"]["synthetic 6.25 um (raw)"]
    res["verdict"] = {
        "total_6.25um_median_s": s625["total"]["median_s"],
        "total_6.25um_met": s625["total"]["median_s"] <= TARGET_TOTAL_S,
        "describe_max_median_s": max(s["describe"]["median_s"] for s in res["sets"].values()),
        "describe_met": all(
            s["describe"]["median_s"] <= TARGET_DESCRIBE_S for s in res["sets"].values()
        ),
    }
    dest = ROOT / "benchmarks" / "results" / "pipeline-speed.json"
    dest.write_text(json.dumps(res, indent=1))
    for name, s in res["sets"].items():
        print(f"{name}: {s['casings']} casings, median shape {s['median_shape']}")
        for st in STAGES:
            print(f"  {st:10s} median {s[st]['median_s']:.3f} s  p90 {s[st]['p90_s']:.3f} s")
    print(json.dumps(res["verdict"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
