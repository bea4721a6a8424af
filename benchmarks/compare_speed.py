"""Speed of ``ballistics.compare.compare`` per pair on one core, side by side with the
exhaustive full-rotation search in the same process, and whether both find the same pose on
every known match of every instrument model.

Usage::

    python benchmarks/compare_speed.py [--pairs 20] [--seed 3] [--exhaustive 0]
        [--models all] [--model-seed 2] [--same 8] [--diff 4] [--presweep 12]
        [--no-fadul-matches]

Methods, all in this process:

* ``fast``: this tree's ``compare(a, b)`` with the default ``CompareParams`` (the full
  rotation sweep, with cheaper NCC transforms, cell grids, refinement and congruence);
* ``full_sweep`` (the exhaustive full-rotation search, the reference): the comparison of
  commit ``--before`` (main before this speed-up), loaded from git beside this tree's: every
  rotation (4-deg steps over 360 deg) scored on the 50-um level over all translations within
  +-1 mm, then the same hypothesis and cell stages;
* ``presweep``: this tree with the opt-in ``presweep_keep=--presweep`` (rotations ranked on
  the 100-um level first; 0: not run).

Parts:

1. *Speed, Fadul*: ``--pairs`` Fadul pairs (half same-slide, seeded choice), each casing
   prepared once beforehand. Per pair, interleaved: each method cold (fresh from the stored
   "full" blob, so pyramid levels are built inside the timing) and from the "levels" blob
   (levels stored, as the index's file store keeps them); the stage split of this tree.
2. *Pose agreement, Fadul*: every known match (63 same-slide pairs): each method's pose vs
   the full sweep's (rotation within 2 deg, translation within ``--tol-um``).
3. *Pose agreement, instrument models*: seeded synthetic pairs from
   ``benchmarks/pose_survival.py``'s makers (instrument models of :mod:`ballistics.instruments`,
   3-D and 2-D, and the built-in hard conditions of :mod:`ballistics.synth`) with the known
   pose: per model, same pose as the full sweep, right (within 2 deg and 60 um of the truth),
   and ``lost`` = the full sweep right and the method not (must be 0).
4. ``--exhaustive N``: the brute-force baseline of earlier versions (every 1-deg rotation at
   6.25 um, +-500 um) on the first N pairs, for the speed ratio.

Times are the process's CPU time (``time.process_time``; one thread) unless ``--wall``.
Writes ``benchmarks/results/compare-speed.json``.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import argparse
import cProfile
import csv
import dataclasses
import io
import itertools
import json
import math
import pickle
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

TARGET_MS = 25.0
#: CPU time of this process (one thread: equal to wall time on an idle machine, and not
#: inflated by other jobs on a shared one); ``--wall`` switches to the wall clock.
clock = time.process_time
MAX_OFFSET_UM = 500.0
#: Same pose: rotation within this (degrees) and translation within ``--tol-um``.
ROT_TOL_DEG = 2.0
#: Right pose (synthetic truth): as pose_survival's FINE_TOL.
TRUTH_TOL = (2.0, 60.0)
#: Default instrument models and conditions of part 3 (all of pose_survival's makers).
MODELS = (
    "confocal",
    "focus_variation",
    "photometric_stereo",
    "photometric_stereo_faint",
    "ring_low",
    "ring_high",
    "side_light",
    "coaxial",
    "standard",
    "offset_1mm",
    "faint",
    "hard",
    "stepped",
)
CACHE = ROOT / "benchmarks" / "_data" / "compare-speed"
#: The comparison before the speed-up of issue 11 item 5 (main when it started).
BEFORE = "f11a2e3"


def exhaustive(a: Any, b: Any, batch: int = 8) -> dict[str, Any]:
    """Brute force: every 1-deg rotation at full resolution, masked NCC over +-500 um."""
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


def load_before(commit: str) -> Any:
    """``ballistics/compare.py`` and ``ballistics/register.py`` as of ``commit``, imported
    beside this tree's (the comparison before the speed-up, timed in the same run)."""
    import importlib.util
    import subprocess

    mods = {}
    for name in ("register", "compare"):
        src = subprocess.run(
            ["git", "show", f"{commit}:ballistics/{name}.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        src = src.replace("from .register import", "from ._before_register import")
        full = f"ballistics._before_{name}"
        spec = importlib.util.spec_from_loader(full, loader=None)
        assert spec is not None
        mod = importlib.util.module_from_spec(spec)
        mod.__package__ = "ballistics"
        sys.modules[full] = mod
        exec(compile(src, f"{commit}:ballistics/{name}.py", "exec"), mod.__dict__)
        mods[name] = mod
    return mods["compare"]


def stage_split(a: Any, b: Any, p: Any) -> dict[str, float]:
    """Time compare()'s stages by calling the same internals in the same order (warm levels):
    coarse sweep, cell evidence, refinement of the best hypothesis, then the cell level
    (translation refinement, cells both ways, congruence) for it."""
    from ballistics import compare as cm

    t0 = clock()
    coarse = cm.coarse_hypotheses(a, b, p)
    t1 = clock()
    screened = cm.cell_evidence(a, b, coarse, p)
    t2 = clock()
    pose = cm.refine_hypotheses(a, b, screened[:1], p)[0].pose
    t3 = clock()
    spacing = a.surface.spacing_m[0] * p.cell_factor
    la, lb = cm._levels(a, b, p.cell_factor, p)
    pose, _ = cm._refine_translation(la, lb, pose, spacing)
    cm._congruence(cm._cells(la, lb, pose, p, spacing, "a->b"), p)
    cm._congruence(cm._cells(lb, la, pose.inverse(), p, spacing, "b->a"), p)
    t4 = clock()
    return {"coarse": t1 - t0, "evidence": t2 - t1, "refine": t3 - t2, "cells": t4 - t3}


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


def pose_um(c: Any) -> list[float]:
    return [round(c.pose.rotation_deg, 2), round(c.pose.dy_m * 1e6, 1), round(c.pose.dx_m * 1e6, 1)]


def same_pose(p: list[float], q: list[float], tol_um: float) -> bool:
    return angle_diff(p[0], q[0]) <= ROT_TOL_DEG and math.hypot(p[1] - q[1], p[2] - q[2]) <= tol_um


def timed(fn: Any, *args: Any, **kw: Any) -> tuple[Any, float]:
    t = clock()
    out = fn(*args, **kw)
    return out, 1000 * (clock() - t)


def model_pairs(model: str, seed: int, n_same: int, n_diff: int) -> list[tuple[Any, ...]]:
    """(blob a, blob b, true canvas Pose or None, label) per pair of one model, generated with
    pose_survival's makers and cached under benchmarks/_data (ignored by git)."""
    from ballistics.pipeline import PreparedCasing
    from benchmarks import pose_survival as ps

    dest = CACHE / f"{model}-seed{seed}-s{n_same}-d{n_diff}.pkl"
    if dest.exists():
        return list(pickle.loads(dest.read_bytes()))
    make = (
        ps.instrument_maker(model) if model in ps.INSTRUMENT_CONDITIONS else ps.synth_maker(model)
    )
    out = []
    for c in make(seed, n_same, n_diff):
        try:
            pa, ca = ps.prepared_with_centre(c.a)
            pb, cb = ps.prepared_with_centre(c.b)
        except Exception as exc:  # a refused scan is reported, not compared
            print(f"{c.label}: not prepared ({exc})", flush=True)
            continue
        assert isinstance(pa, PreparedCasing) and isinstance(pb, PreparedCasing)
        truth = ps.canvas_pose(c.truth, ca, cb) if c.truth is not None else None
        out.append((pa.to_bytes(), pb.to_bytes(), truth, c.label))
    CACHE.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(pickle.dumps(out))
    return out


def agreement(
    pairs: list[tuple[Any, ...]], methods: dict[str, Any], tol_um: float
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every method on every pair (poses, CMC, times; against the truth when known), each
    against the ``full_sweep`` method's pose."""
    from ballistics.pipeline import PreparedCasing

    rows = []
    for ba, bb, truth, label in pairs:
        row: dict[str, Any] = {"pair": label}
        for name, fn in methods.items():
            c, ms = timed(fn, PreparedCasing.from_bytes(ba), PreparedCasing.from_bytes(bb))
            row[f"{name}_pose"] = pose_um(c)
            row[f"{name}_cmc"] = c.cmc
            row[f"{name}_score"] = round(c.score, 4)
            row[f"{name}_ms"] = round(ms, 1)
        ref = row["full_sweep_pose"]
        t = None
        if truth is not None:
            t = [truth.rotation_deg, truth.dy_m * 1e6, truth.dx_m * 1e6]
            row["truth_pose"] = [round(x, 2) for x in t]
        for name in methods:
            q = row[f"{name}_pose"]
            if name != "full_sweep":
                row[f"{name}_same_pose"] = same_pose(q, ref, tol_um)
                row[f"{name}_translation_diff_um"] = round(
                    math.hypot(q[1] - ref[1], q[2] - ref[2]), 2
                )
            if t is not None:
                row[f"{name}_right"] = same_pose(q, t, TRUTH_TOL[1])
        rows.append(row)
    summ: dict[str, Any] = {"known_matches": len(rows)}
    for name in methods:
        summ[f"{name}_median_ms"] = round(float(np.median([r[f"{name}_ms"] for r in rows])), 1)
        if any("truth_pose" in r for r in rows):
            summ[f"{name}_right"] = sum(r[f"{name}_right"] for r in rows)
        if name == "full_sweep":
            continue
        summ[f"{name}_same_pose"] = sum(r[f"{name}_same_pose"] for r in rows)
        summ[f"{name}_max_translation_diff_um_same_pose"] = max(
            (r[f"{name}_translation_diff_um"] for r in rows if r[f"{name}_same_pose"]), default=None
        )
        if any("truth_pose" in r for r in rows):
            summ[f"{name}_lost"] = sum(
                r["full_sweep_right"] and not r[f"{name}_right"] for r in rows
            )
            summ[f"{name}_gained"] = sum(
                r[f"{name}_right"] and not r["full_sweep_right"] for r in rows
            )
        summ[f"{name}_different_pose"] = [
            {
                k: r[k]
                for k in r
                if k == "pair" or k.startswith(("full_sweep_", f"{name}_", "truth"))
            }
            for r in rows
            if not r[f"{name}_same_pose"]
        ]
    return rows, summ


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument(
        "--exhaustive", type=int, default=0, help="pairs run by brute force (1 deg, 6.25 um)"
    )
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--wall", action="store_true", help="time with the wall clock, not CPU")
    ap.add_argument("--models", nargs="*", default=list(MODELS), help="part 3 ('none': skip)")
    ap.add_argument("--model-seed", type=int, default=2, help="seed of the synthetic pairs")
    ap.add_argument("--same", type=int, default=8, help="same-gun pairs per model")
    ap.add_argument("--diff", type=int, default=4, help="different-gun pairs per model")
    ap.add_argument("--tol-um", type=float, default=10.0, help="same-pose translation tolerance")
    ap.add_argument("--no-fadul-matches", action="store_true", help="skip part 2")
    ap.add_argument(
        "--before", default=BEFORE, help="commit whose comparison is the full-sweep reference"
    )
    ap.add_argument("--presweep", type=int, default=12, help="presweep_keep (0: not run)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "compare-speed.json"))
    args = ap.parse_args()
    global clock
    if args.wall:
        clock = time.perf_counter
    wall0 = time.perf_counter()

    from ballistics.compare import CompareParams, compare
    from ballistics.io import read_scan
    from ballistics.pipeline import PreparedCasing, prepare

    fast = CompareParams()
    before = load_before(args.before)
    methods: dict[str, Any] = {
        "fast": lambda a, b: compare(a, b, params=fast),
        "full_sweep": lambda a, b: before.compare(a, b),
    }
    if args.presweep:
        pre = dataclasses.replace(fast, presweep_keep=args.presweep)
        methods["presweep"] = lambda a, b: compare(a, b, params=pre)
    folder = REAL / "csafe-cartridgeCaseScans"
    rows = list(csv.DictReader(open(folder / "MANIFEST.tsv"), delimiter="\t"))
    labels = [r["firearm_id"] for r in rows]
    pairs = choose_pairs(labels, args.pairs, args.seed)
    prepared = {i: prepare(read_scan(folder / r["file"])) for i, r in enumerate(rows)}
    blobs = {i: p.to_bytes() for i, p in prepared.items()}
    stored = {i: p.to_bytes("levels") for i, p in prepared.items()}
    fresh = lambda i: PreparedCasing.from_bytes(blobs[i])  # noqa: E731
    from_store = lambda i: PreparedCasing.from_bytes(stored[i])  # noqa: E731

    # -- part 1: speed, methods interleaved per pair -----------------------------------------
    for fn in methods.values():
        fn(fresh(pairs[0][0]), fresh(pairs[0][1]))  # warm-up
    per_pair = []
    for i, j in pairs:
        rec: dict[str, Any] = {
            "a": rows[i]["casing_id"],
            "b": rows[j]["casing_id"],
            "same_slide": labels[i] == labels[j],
        }
        for name, fn in methods.items():
            c, rec[f"{name}_cold_ms"] = timed(fn, fresh(i), fresh(j))
            _, rec[f"{name}_stored_ms"] = timed(fn, from_store(i), from_store(j))
            a, b = fresh(i), fresh(j)
            fn(a, b)
            _, rec[f"{name}_warm_ms"] = timed(fn, a, b)
            rec[f"{name}_pose"] = pose_um(c)
            rec[f"{name}_cmc"] = c.cmc
            rec[f"{name}_score"] = round(c.score, 4)
        for k, v in stage_split(a, b, fast).items():
            rec[f"fast_{k}_ms"] = 1000 * v
        for k in list(rec):
            if k.endswith("_ms"):
                rec[k] = round(rec[k], 1)
        rec["same_pose"] = same_pose(rec["fast_pose"], rec["full_sweep_pose"], args.tol_um)
        # Field names of earlier versions of this benchmark (the default comparison).
        rec["compare_cold_ms"] = rec["fast_cold_ms"]
        rec["compare_warm_ms"] = rec["fast_warm_ms"]
        per_pair.append(rec)
        print(json.dumps(rec), flush=True)

    # -- part 4: brute-force baseline on the first pairs --------------------------------------
    exh = []
    for (i, j), pp in zip(pairs[: args.exhaustive], per_pair, strict=False):
        c, fast_ms = timed(compare, fresh(i), fresh(j))
        e = exhaustive(fresh(i), fresh(j))
        cp = pose_um(c)
        dt_um = math.hypot(e["dy_m"] * 1e6 - cp[1], e["dx_m"] * 1e6 - cp[2])
        exh.append(
            {
                "a": pp["a"],
                "b": pp["b"],
                "same_slide": pp["same_slide"],
                "exhaustive_s": round(e["seconds"], 2),
                "compare_ms_beside": round(fast_ms, 1),
                "ratio": round(e["seconds"] / (fast_ms / 1000), 1),
                "exhaustive_rotation_deg": e["rotation_deg"],
                "exhaustive_dy_um": round(e["dy_m"] * 1e6, 1),
                "exhaustive_dx_um": round(e["dx_m"] * 1e6, 1),
                "exhaustive_ncc": round(e["ncc"], 4),
                "compare_rotation_deg": cp[0],
                "compare_dy_um": cp[1],
                "compare_dx_um": cp[2],
                "rotation_diff_deg": round(angle_diff(e["rotation_deg"], cp[0]), 2),
                "translation_diff_um": round(dt_um, 1),
                "same_rotation_within_3deg": angle_diff(e["rotation_deg"], cp[0]) <= 3.0,
                "fft_size": e["fft_size"],
                "canvas_px": e["canvas_px"],
            }
        )
        print(json.dumps(exh[-1]), flush=True)

    # -- profile of the fast path -------------------------------------------------------------
    prof = cProfile.Profile()
    cases = [(fresh(i), fresh(j)) for i, j in pairs]
    prof.enable()
    for a, b in cases:
        compare(a, b)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(12)

    # -- part 2: every Fadul known match ------------------------------------------------------
    fadul_rows: list[dict[str, Any]] = []
    fadul_summ: dict[str, Any] = {}
    if not args.no_fadul_matches:
        matches = [
            (blobs[i], blobs[j], None, f"fadul {rows[i]['casing_id']} / {rows[j]['casing_id']}")
            for i, j in itertools.combinations(range(len(rows)), 2)
            if labels[i] == labels[j]
        ]
        fadul_rows, fadul_summ = agreement(matches, methods, args.tol_um)
        print(json.dumps({"fadul_known_matches": fadul_summ}), flush=True)

    # -- part 3: instrument models ------------------------------------------------------------
    models: dict[str, Any] = {}
    model_rows: dict[str, list[dict[str, Any]]] = {}
    for model in [] if args.models == ["none"] else args.models:
        mp = model_pairs(model, args.model_seed, args.same, args.diff)
        known = [x for x in mp if x[2] is not None]
        model_rows[model], models[model] = agreement(known, methods, args.tol_um)
        print(json.dumps({model: models[model]}), flush=True)

    def stat(key: str) -> dict[str, float]:
        v = np.array([p[key] for p in per_pair])
        return {
            "median": round(float(np.median(v)), 1),
            "p90": round(float(np.percentile(v, 90)), 1),
        }

    exh_s = [e["exhaustive_s"] for e in exh]
    beside = [e["compare_ms_beside"] for e in exh]
    kinds = ("cold", "stored", "warm")
    speed = {f"{n}_{k}_ms": stat(f"{n}_{k}_ms") for n in methods for k in kinds}
    for k in ("coarse", "evidence", "refine", "cells"):
        speed[f"fast_{k}_ms"] = stat(f"fast_{k}_ms")
    ratios = {
        f"ratio_{n}_over_fast_{k}": round(
            speed[f"{n}_{k}_ms"]["median"] / speed[f"fast_{k}_ms"]["median"], 2
        )
        for n in methods
        if n != "fast"
        for k in ("cold", "stored")
    }
    res: dict[str, Any] = {
        "before_commit": args.before,
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "threads": 1,
        "clock": "perf_counter (wall)" if args.wall else "process_time (CPU)",
        "wall_s": round(time.perf_counter() - wall0, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "params_fast": dataclasses.asdict(fast),
        "presweep_keep": args.presweep or None,
        "target_ms_median": TARGET_MS,
        "pairs": len(pairs),
        "same_slide_pairs": sum(p["same_slide"] for p in per_pair),
        **speed,
        **ratios,
        "same_pose_speed_pairs": sum(p["same_pose"] for p in per_pair),
        "compare_cold_ms": speed["fast_cold_ms"],
        "compare_warm_ms": speed["fast_warm_ms"],
        "target_met_cold": speed["fast_cold_ms"]["median"] <= TARGET_MS,
        "target_met_stored": speed["fast_stored_ms"]["median"] <= TARGET_MS,
        "fadul_known_matches": fadul_summ,
        "models": models,
        "model_seed": args.model_seed,
        "exhaustive": {
            "pairs": len(exh),
            "median_s": round(float(np.median(exh_s)), 2) if exh else None,
            "compare_beside_median_ms": round(float(np.median(beside)), 1) if exh else None,
            "ratio_of_medians": (
                round(1000 * float(np.median(exh_s)) / float(np.median(beside)), 1) if exh else None
            ),
            "per_pair": exh,
        },
        "profile_top_tottime": buf.getvalue().splitlines()[-20:],
        "per_pair": per_pair,
        "fadul_known_match_pairs": fadul_rows,
        "model_pairs": model_rows,
    }
    dest = Path(args.out)
    dest.write_text(json.dumps(res, indent=1))
    skip = ("per_pair", "fadul_known_match_pairs", "model_pairs", "profile_top_tottime")
    print(json.dumps({k: v for k, v in res.items() if k not in skip}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
