"""Calibrate and check the ``weak_registration`` flag: does it mark lost poses, and how often
does it fire on pairs that simply do not match?

Usage::

    python benchmarks/weak_registration.py collect --seed 5 --same 10 --diff 10
    python benchmarks/weak_registration.py collect --fadul --max-pairs 300
    python benchmarks/weak_registration.py report --tune seed5 seed9 fadul:tune \\
        --judge seed2 fadul:judge

``collect`` compares pairs with :func:`ballistics.compare.compare_traced` and stores, per
pair, what the flag can be decided from (congruent cells both ways, the chosen and the
runner-up hypotheses' NCC and cell evidence) and what it should predict (same gun, and for
synthetic pairs with a known pose whether the final pose is right). A *lost* match is a
same-gun pair with fewer than 6 congruent cells both ways: what the flag should mark. Synthetic pairs come from
``benchmarks/pose_survival.py``'s conditions; Fadul pairs are real (different-slide pairs
only tell how often the flag fires on true non-matches).

``report`` picks the rule's thresholds on the *tuning* files only (the loosest rule that fires
on at most ``--max-diff-rate`` of tuning non-matches, then the one catching most lost poses)
and reports the chosen rule on the *judging* files, which were not looked at.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import ROOT, fadul_files, machine

OUT = ROOT / "benchmarks" / "results" / "weak_registration"


def features(c: Any, tr: Any) -> dict[str, Any]:
    """What the flag may use, from one traced comparison."""
    refined = list(tr.refined)
    nccs = sorted((h.ncc for h in refined), reverse=True)
    screened_ncc = sorted((h.ncc for h in tr.screened), reverse=True)
    ev = sorted((h.evidence for h in tr.screened), reverse=True)
    final_cells = sorted((min(h.cells_forward, h.cells_backward) for h in tr.final), reverse=True)
    return {
        "cmc": int(c.cmc),
        "cmc_forward": int(c.cmc_forward),
        "cmc_backward": int(c.cmc_backward),
        "score": float(c.score),
        "corr": float(c.correlation),
        "flags": list(c.flags),
        "refined_ncc": nccs,
        "screened_ncc": screened_ncc,
        "screened_evidence": ev,
        "final_cells": final_cells,
    }


def collect_synth(seed: int, n_same: int, n_diff: int, conditions: list[str]) -> list[dict]:
    from ballistics.compare import compare_traced
    from benchmarks.pose_survival import (
        FINE_TOL,
        canvas_pose,
        close,
        prepared_with_centre,
        synth_maker,
    )

    rows = []
    for cond in conditions:
        for case in synth_maker(cond)(seed, n_same, n_diff):
            pa, ca = prepared_with_centre(case.a)
            pb, cb = prepared_with_centre(case.b)
            truth = None if case.truth is None else canvas_pose(case.truth, ca, cb)
            c, tr = compare_traced(pa, pb)
            row = {"set": f"seed{seed}", "condition": cond, "label": case.label}
            row["same"] = truth is not None
            row["pose_ok"] = None if truth is None else bool(close(c.pose, truth, FINE_TOL))
            row.update(features(c, tr))
            print(json.dumps({k: row[k] for k in ("label", "same", "pose_ok", "cmc", "flags")}))
            rows.append(row)
    return rows


def collect_fadul(max_pairs: int, seed: int) -> list[dict]:
    from ballistics.compare import compare_traced
    from ballistics.io import read_scan
    from ballistics.pipeline import prepare

    files, labels = fadul_files()
    prepared = [prepare(read_scan(f)) for f in files]
    pairs = list(itertools.combinations(range(len(files)), 2))
    rng = np.random.default_rng(seed)
    if len(pairs) > max_pairs:
        keep = rng.choice(len(pairs), size=max_pairs, replace=False)
        pairs = [pairs[k] for k in sorted(keep)]
    rows = []
    for i, j in pairs:
        c, tr = compare_traced(prepared[i], prepared[j])
        row = {"set": "fadul", "label": f"{files[i].stem}-{files[j].stem}"}
        row["same"] = labels[i] == labels[j]
        row["pose_ok"] = None
        row.update(features(c, tr))
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------
# rules


def fires(r: dict[str, Any], accept_cmc: int, partial_min: int, one_way: int) -> bool:
    """The rule family: fewer than ``accept_cmc`` congruent cells both ways, yet some pose
    found partial agreement: ``partial_min`` cells both ways on a hypothesis scored on the
    cell level, or ``one_way`` cells in one direction of the chosen pose. ``partial_min=0``
    is the rule as of this script (read from the stored flags)."""
    if partial_min == 0:
        return "weak_registration" in r["flags"]
    if r["cmc"] >= accept_cmc:
        return False
    partial = max(r["final_cells"] + [0]) >= partial_min
    return partial or max(r["cmc_forward"], r["cmc_backward"]) >= one_way


def rates(rows: list[dict[str, Any]], **rule: Any) -> dict[str, Any]:
    diff = [r for r in rows if not r["same"]]
    same = [r for r in rows if r["same"]]
    lost = [r for r in same if r["cmc"] < 6]
    kept = [r for r in same if r not in lost]

    def frac(sub: list[dict[str, Any]]) -> str | None:
        if not sub:
            return None
        return f"{sum(fires(r, **rule) for r in sub)}/{len(sub)}"

    return {"non_matches": frac(diff), "lost_matches": frac(lost), "found_matches": frac(kept)}


def _fadul_half(rows: list[dict[str, Any]], half: str) -> list[dict[str, Any]]:
    """Fadul pairs whose two casings both come from odd-numbered slides (``tune``) or both
    from even-numbered ones (``judge``): disjoint firearms, so one half can choose the rule
    and the other judge it."""
    files, labels = fadul_files()
    slide = {f.stem: int(lab.rsplit("-", 1)[-1]) for f, lab in zip(files, labels, strict=True)}
    want = 1 if half == "tune" else 0
    out = []
    for r in rows:
        a, b = r["label"].split("-Fadul")
        if slide[a] % 2 == want and slide["Fadul" + b] % 2 == want:
            out.append(r)
    return out


def load(names: list[str]) -> list[dict[str, Any]]:
    """Rows of stored sets; ``fadul:tune`` / ``fadul:judge`` are halves of ``fadul``."""
    rows: list[dict[str, Any]] = []
    for n in names:
        base, _, half = n.partition(":")
        got = json.loads((OUT / f"{base}.json").read_text())["rows"]
        rows += _fadul_half(got, half) if half else got
    return rows


def report(args: argparse.Namespace) -> int:
    tune = load(args.tune)
    current = {"accept_cmc": 6, "partial_min": 0, "one_way": 0}
    grid = [
        {"accept_cmc": 6, "partial_min": k, "one_way": w}
        for k in (1, 2, 3, 4, 5)
        for w in (3, 4, 5, 6, 99)
    ]
    diff_t = [r for r in tune if not r["same"]]
    ok = [
        g
        for g in grid
        if sum(fires(r, **g) for r in diff_t) <= args.max_diff_rate * max(1, len(diff_t))
    ]
    lost_t = [r for r in tune if r["same"] and r["cmc"] < 6]

    def caught(g: dict[str, Any]) -> tuple[int, int]:
        return (
            sum(fires(r, **g) for r in lost_t),
            -sum(fires(r, **g) for r in diff_t),
        )

    chosen = max(ok, key=caught) if ok else None
    out = {
        "command": "python benchmarks/weak_registration.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "tune": args.tune,
        "judge": args.judge,
        "max_diff_rate": args.max_diff_rate,
        "current_rule": {"rule": current, "tune": rates(tune, **current)},
        "chosen_rule": chosen,
    }
    if chosen is not None:
        out["chosen_on_tune"] = rates(tune, **chosen)
        out["chosen_on_judge"] = {n: rates(load([n]), **chosen) for n in args.judge}
    out["current_on_judge"] = {n: rates(load([n]), **current) for n in args.judge}
    print(json.dumps(out, indent=1))
    (OUT / "report.json").write_text(json.dumps(out, indent=1))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--seed", type=int, default=5)
    c.add_argument("--same", type=int, default=10)
    c.add_argument("--diff", type=int, default=10)
    c.add_argument("--conditions", nargs="*", default=["standard", "faint", "noisy", "hard"])
    c.add_argument("--fadul", action="store_true")
    c.add_argument("--max-pairs", type=int, default=300)
    r = sub.add_parser("report")
    r.add_argument("--tune", nargs="+", required=True)
    r.add_argument("--judge", nargs="+", required=True)
    r.add_argument("--max-diff-rate", type=float, default=0.05)
    args = ap.parse_args()
    if args.cmd == "report":
        return report(args)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.fadul:
        rows, name = collect_fadul(args.max_pairs, args.seed), "fadul"
    else:
        rows = collect_synth(args.seed, args.same, args.diff, args.conditions)
        name = f"seed{args.seed}"
    meta = {"command": "python benchmarks/weak_registration.py " + " ".join(sys.argv[1:])}
    (OUT / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
