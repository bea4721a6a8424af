"""Does storing only the comparison's pyramid levels change any result?

For every casing of a set: prepare the scan, keep it in the "full" form (the 6.25-um canvas,
what the store held before) and in the "levels" form (``PreparedCasing.to_bytes("levels")``:
levels 2, 4 and 8 only), read both back, and compare every pair both ways with
``ballistics.lighting.compare_prepared`` (the product's comparison). Reports bytes per casing
of each form, the largest difference of score, CMC, pose and cells between the two, and
whether descriptors and screen signatures are identical.

    python benchmarks/store_levels.py fadul
    python benchmarks/store_levels.py synth --guns 6 --shots 3 --seed 4243

Raw output: benchmarks/results/store_levels-<dataset>.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import fadul_files, machine, synth_files


def _comparison_key(c: Any) -> dict[str, Any]:
    return {
        "score": float(c.score),
        "cmc": int(c.cmc),
        "rotation_deg": float(c.pose.rotation_deg),
        "dy_m": float(c.pose.dy_m),
        "dx_m": float(c.pose.dx_m),
        "cells": [(cell.direction, bool(cell.congruent), float(cell.ccf)) for cell in c.cells],
        "flags": list(getattr(c, "flags", ())),
    }


def run(files: list[Path]) -> dict[str, Any]:
    from ballistics import descriptors, screen
    from ballistics.io import read_scan
    from ballistics.lighting import compare_prepared, load_prepared, prepare_scan

    full, lev, sizes_full, sizes_lev, t_prep, t_ser = [], [], [], [], [], []
    for f in files:
        t0 = time.perf_counter()
        prep = prepare_scan(read_scan(f))
        t1 = time.perf_counter()
        bf = prep.to_bytes()
        t2 = time.perf_counter()
        bl = prep.to_bytes("levels")
        t3 = time.perf_counter()
        t_prep.append(t1 - t0)
        t_ser.append({"full_s": t2 - t1, "levels_s": t3 - t2})
        sizes_full.append(len(bf))
        sizes_lev.append(len(bl))
        full.append(load_prepared(bf))
        lev.append(load_prepared(bl))
    same_desc = all(
        all(
            np.array_equal(v, descriptors.describe(b)[k])
            for k, v in descriptors.describe(a).items()
        )
        for a, b in zip(full, lev, strict=True)
    )
    same_sig = all(
        np.array_equal(screen.signature(a), screen.signature(b))
        for a, b in zip(full, lev, strict=True)
    )
    diffs = {"score": 0.0, "cmc": 0, "rotation_deg": 0.0, "translation_m": 0.0, "ccf": 0.0}
    n_identical = n_pairs = 0
    t_cmp = {"full_s": 0.0, "levels_s": 0.0}
    for i, j in itertools.combinations(range(len(files)), 2):
        t0 = time.perf_counter()
        a = _comparison_key(compare_prepared(full[i], full[j]))
        t1 = time.perf_counter()
        b = _comparison_key(compare_prepared(lev[i], lev[j]))
        t2 = time.perf_counter()
        t_cmp["full_s"] += t1 - t0
        t_cmp["levels_s"] += t2 - t1
        n_pairs += 1
        n_identical += a == b
        diffs["score"] = max(diffs["score"], abs(a["score"] - b["score"]))
        diffs["cmc"] = max(diffs["cmc"], abs(a["cmc"] - b["cmc"]))
        diffs["rotation_deg"] = max(
            diffs["rotation_deg"], abs(a["rotation_deg"] - b["rotation_deg"])
        )
        diffs["translation_m"] = max(
            diffs["translation_m"], abs(a["dy_m"] - b["dy_m"]), abs(a["dx_m"] - b["dx_m"])
        )
        if len(a["cells"]) == len(b["cells"]):
            for ca, cb in zip(a["cells"], b["cells"], strict=True):
                diffs["ccf"] = max(diffs["ccf"], abs(ca[2] - cb[2]))
        else:
            diffs["ccf"] = float("inf")
    return {
        "casings": len(files),
        "pairs": n_pairs,
        "pairs_identical": n_identical,
        "max_abs_difference": diffs,
        "descriptors_identical": bool(same_desc),
        "screen_signatures_identical": bool(same_sig),
        "bytes_per_casing_full_mean": float(np.mean(sizes_full)),
        "bytes_per_casing_levels_mean": float(np.mean(sizes_lev)),
        "bytes_per_casing_full_max": int(np.max(sizes_full)),
        "bytes_per_casing_levels_max": int(np.max(sizes_lev)),
        "prepare_s_median": float(np.median(t_prep)),
        "serialise_full_s_median": float(np.median([t["full_s"] for t in t_ser])),
        "serialise_levels_s_median": float(np.median([t["levels_s"] for t in t_ser])),
        "compare_s_per_pair_full": t_cmp["full_s"] / max(1, n_pairs),
        "compare_s_per_pair_levels": t_cmp["levels_s"] / max(1, n_pairs),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("dataset", choices=["fadul", "synth"])
    ap.add_argument("--guns", type=int, default=6)
    ap.add_argument("--shots", type=int, default=3)
    ap.add_argument("--seed", type=int, default=4243)
    args = ap.parse_args()
    if args.dataset == "fadul":
        files, _ = fadul_files()
        name = "fadul"
    else:
        _, files, _, _ = synth_files(args.guns, args.shots, args.seed, png=False)
        name = f"synth-g{args.guns}-s{args.shots}-seed{args.seed}"
    res = {
        "dataset": name,
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        **run(files),
    }
    out = Path(__file__).resolve().parent / "results" / f"store_levels-{name}.json"
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "machine"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
