"""Accuracy of the comparison and of the index descriptor on data with ground truth.

Usage::

    python benchmarks/accuracy.py fadul [--workers 2] [--write-reference]
    python benchmarks/accuracy.py synth --guns 50 --shots 4 [--seed 7] [--png]

Fadul: the 40 real casings in ../shared/data/real (780 pairs, 63 known matches).
Synthetic: a seeded corpus from ``ballistics.synth`` (X3P, and the 2-D renders with --png).
Writes ``benchmarks/results/accuracy-<name>.json``; the numbers quoted in
``benchmarks/RESULTS-accuracy.md`` come from these files.
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

from benchmarks._common import (
    ROOT,
    auc,
    descriptor_recall,
    fadul_files,
    machine,
    quantiles,
    rank_metrics,
    score_pairs,
    synth_files,
)


def _load(files: list[Path], spacing_m: float | None = None) -> tuple[list[Any], list[float]]:
    from ballistics.io import read_scan
    from ballistics.pipeline import prepare

    out, times = [], []
    for f in files:
        t = time.perf_counter()
        out.append(prepare(read_scan(f, spacing_m=spacing_m)))
        times.append(time.perf_counter() - t)
    return out, times


def evaluate(
    name: str,
    files: list[Path],
    labels: list[str],
    groups: list[str],
    workers: int,
    extra: dict[str, Any],
) -> dict[str, Any]:
    from ballistics.descriptors import EXTRACTOR_VERSION, describe

    t0 = time.time()
    prepared, prep_times = _load(files)
    t_desc = time.perf_counter()
    vectors = np.stack([describe(p)["breech_face"] for p in prepared])
    desc_s = (time.perf_counter() - t_desc) / len(prepared)
    n = len(files)
    pairs = list(itertools.combinations(range(n), 2))
    results = score_pairs(prepared, pairs, workers)
    score = np.full((n, n), -np.inf)
    cmc = np.full((n, n), -np.inf)
    km, knm, knm_sub, km_cmc, knm_cmc, times = [], [], [], [], [], []
    for i, j, c, dt in results:
        score[i, j] = score[j, i] = c["score"]
        cmc[i, j] = cmc[j, i] = c["cmc"] + 1e-3 * c["score"]
        times.append(dt)
        if labels[i] == labels[j]:
            km.append(c["score"])
            km_cmc.append(c["cmc"])
        else:
            knm.append(c["score"])
            knm_cmc.append(c["cmc"])
            if groups[i] and groups[i] == groups[j]:
                knm_sub.append(c["score"])
    return {
        "dataset": name,
        "casings": n,
        "pairs": len(pairs),
        "known_matches": len(km),
        "known_non_matches": len(knm),
        "extractor_version": EXTRACTOR_VERSION,
        "pair_auc_score": round(auc(km, knm), 4),
        "pair_auc_cmc": round(auc(km_cmc, knm_cmc), 4),
        "separation_gap": round(min(km) - max(knm), 4) if km and knm else None,
        "ranking_score": rank_metrics(score, labels),
        "ranking_top10": rank_metrics(score, labels, top=10),
        "descriptor_recall_5pct": descriptor_recall(vectors, labels, 0.05),
        "score_km": quantiles(km),
        "score_knm": quantiles(knm),
        "cmc_km": quantiles(km_cmc),
        "cmc_knm": quantiles(knm_cmc),
        "score_knm_same_group": quantiles(knm_sub) if knm_sub else None,
        "auc_vs_same_group_knm": round(auc(km, knm_sub), 4) if knm_sub else None,
        "prepare_s_median": round(float(np.median(prep_times)), 4),
        "describe_s_mean": round(desc_s, 4),
        "compare_ms_median": round(1000 * float(np.median(times)), 1),
        "compare_ms_p90": round(1000 * float(np.percentile(times, 90)), 1),
        "wall_s": round(time.time() - t0, 1),
        "workers": workers,
        "machine": machine(),
        "knm_scores": [round(s, 5) for s in knm],
        "km_scores": [round(s, 5) for s in km],
        **extra,
    }


def fadul(args: argparse.Namespace) -> dict[str, Any]:
    files, labels = fadul_files()
    # All ten slides were made consecutively: every non-match is a same-group non-match.
    return evaluate("fadul", files, labels, ["fadul"] * len(files), args.workers, {})


def synth(args: argparse.Namespace) -> dict[str, Any]:
    name, files, labels, groups = synth_files(args.guns, args.shots, args.seed, args.png)
    return evaluate(
        name,
        files,
        labels,
        groups,
        args.workers,
        {"seed": args.seed, "guns": args.guns, "shots": args.shots},
    )


def write_reference(res: dict[str, Any]) -> None:
    """Store the known-non-match scores as the packaged calibration for this kind of scan,
    keeping the other kinds' sections."""
    from ballistics.calibration import build_section

    kind = "image" if res["dataset"].endswith("-png") else "topography"
    path = ROOT / "ballistics" / "data" / "nonmatch_reference.json"
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc[kind] = build_section(
        {"combined": res["knm_scores"], "breech_face": res["knm_scores"]},
        {
            "dataset": res["dataset"],
            "pairs": res["known_non_matches"],
            "extractor_version": res["extractor_version"],
            "command": res["command"],
        },
    )
    path.write_text(json.dumps(doc))


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("dataset", choices=["fadul", "synth"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--guns", type=int, default=50)
    ap.add_argument("--shots", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--png", action="store_true", help="synthetic: use the 2-D renders")
    ap.add_argument(
        "--write-reference",
        action="store_true",
        help="store the known-non-match scores as the packaged calibration reference",
    )
    ap.add_argument(
        "--from-json",
        metavar="RESULT.json",
        help="with --write-reference: take the scores from an earlier result file",
    )
    args = ap.parse_args()
    if args.from_json:
        write_reference(json.loads(Path(args.from_json).read_text()))
        return 0
    res = fadul(args) if args.dataset == "fadul" else synth(args)
    res["command"] = "python " + " ".join(sys.argv)
    dest = ROOT / "benchmarks" / "results" / f"accuracy-{res['dataset']}.json"
    dest.write_text(json.dumps(res, indent=1))
    short = {k: v for k, v in res.items() if k not in ("knm_scores", "km_scores")}
    print(json.dumps(short, indent=1))
    if args.write_reference:
        write_reference(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
