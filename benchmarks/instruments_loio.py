"""Accuracy per instrument model, and leave-one-instrument-out (LOIO) parameter choice.

Usage::

    python benchmarks/instruments_loio.py            # full run (~20 min on one shared core)
    python benchmarks/instruments_loio.py --quick    # small corpora, a few minutes

For each instrument of :data:`ballistics.instruments.INSTRUMENTS` a seeded corpus (its own
firearms: no two instruments share a gun, so a left-out instrument is new data, not new
pictures of known guns; consecutive-manufacture groups included) is fired, recorded by the
instrument at one of its pixel sizes, prepared with :func:`ballistics.pipeline.prepare` and
compared pairwise with :func:`ballistics.compare.compare`, once per candidate setting of
:data:`CANDIDATES`. Scans that fail to prepare are *refusals*: counted, listed with the
message, and scored 0 against everything (so they count against AUC and retrieval; the
AUC over scored pairs only is reported beside it).

LOIO: within a modality (3-D instruments; 2-D instruments), for each instrument the
candidate with the best mean pair AUC (refusals counted) on the *other* instruments of the
modality is chosen (ties: mean top-10 retrieval, then the order of :data:`CANDIDATES`), and
its result on the left-out instrument is reported next to the fixed default.

Writes ``benchmarks/results/instruments_loio[-quick].json`` (command, machine, every score and
refusal) and prints the tables of ``benchmarks/RESULTS-instruments.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import ROOT, auc, machine, quantiles


@dataclass(frozen=True)
class Candidate:
    """One parameter setting the LOIO choice picks from."""

    name: str
    description: str
    short_cutoff_um: float = 16.0
    long_cutoff_um: float = 250.0
    compare: dict[str, Any] = field(default_factory=dict)

    @property
    def prepare_key(self) -> tuple[float, float]:
        return (self.short_cutoff_um, self.long_cutoff_um)


#: The documented candidate settings. "default" is what the service runs today.
CANDIDATES: tuple[Candidate, ...] = (
    Candidate("default", "prepare 16-250 um band-pass, CompareParams() (3 rotation hints)"),
    Candidate(
        "full_sweep",
        "prepare 16-250 um, CompareParams(rotation_hints=0): full-circle coarse sweep",
        compare={"rotation_hints": 0},
    ),
    Candidate(
        "band_40_400",
        "prepare 40-400 um band-pass (Song 2014 cut-offs), CompareParams()",
        short_cutoff_um=40.0,
        long_cutoff_um=400.0,
    ),
)

MODALITIES = {
    "3-D": ("confocal", "focus_variation", "photometric_stereo"),
    "2-D": ("ring_low", "ring_high", "coaxial", "side_light"),
}


def _instrument_seed(seed: int, name: str) -> int:
    """Each instrument fires its own guns (distinct seeds)."""
    return (seed * 7919 + zlib.crc32(name.encode())) % 100_000


def build_scans(name: str, guns: int, shots: int, seed: int) -> list[dict[str, Any]]:
    """Fire and record one instrument's corpus in memory: scans and their truth."""
    from ballistics.instruments import INSTRUMENTS, instrument_rng, record
    from ballistics.synth import fired_surface, make_firearms

    inst = INSTRUMENTS[name]
    iseed = _instrument_seed(seed, name)
    firearms = make_firearms(guns, seed=iseed, group_fraction=0.5)
    rng = np.random.default_rng([iseed, 0xC0])
    out = []
    for fa in firearms:
        for k in range(shots):
            shot_seed = iseed * 1000 + k
            pixel = float(rng.choice(inst.pixels_um))
            surface = fired_surface(
                fa, shot_seed=shot_seed, spacing_m=pixel * 1e-6, casing_id=f"{fa.id}-{k + 1:02d}"
            )
            scan, truth = record(surface, name, rng=instrument_rng(fa.seed, shot_seed, name))
            out.append({"scan": scan, "truth": truth, "pixel_um": pixel})
    return out


def prepare_all(
    scans: list[dict[str, Any]], key: tuple[float, float]
) -> tuple[list[Any], list[dict[str, Any]], list[float]]:
    """Prepare every scan; refusals are kept as None and listed with the message."""
    from ballistics.errors import BallisticsError
    from ballistics.pipeline import prepare

    prepared: list[Any] = []
    refusals: list[dict[str, Any]] = []
    times: list[float] = []
    for s in scans:
        t = time.perf_counter()
        try:
            prepared.append(prepare(s["scan"], short_cutoff_um=key[0], long_cutoff_um=key[1]))
        except BallisticsError as exc:
            prepared.append(None)
            refusals.append(
                {
                    "casing_id": s["truth"].casing_id,
                    "error": type(exc).__name__,
                    "message": str(exc),
                }
            )
        times.append(time.perf_counter() - t)
    return prepared, refusals, times


def segmentation_errors(scans: list[dict[str, Any]], prepared: list[Any]) -> dict[str, Any]:
    """Primer and firing-pin centre errors (pixels of the scan) against the truth."""
    ep, ef = [], []
    for s, p in zip(scans, prepared, strict=True):
        if p is None:
            continue
        tr = s["truth"]
        seg = p.segmentation
        ep.append(math.dist(seg["primer_center"], tr.primer_center))
        ef.append(math.dist(seg["firing_pin_center"], tr.fp_center))
    a, b = np.asarray(ep), np.asarray(ef)
    return {
        "primer_center_median_px": round(float(np.median(a)), 2) if a.size else None,
        "pin_center_median_px": round(float(np.median(b)), 2) if b.size else None,
        "pin_within_10px": round(float((b <= 10).mean()), 4) if b.size else None,
    }


def score_matrix(
    prepared: list[Any], cand: Candidate
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """All-pairs scores and CMC counts; 0 for pairs with a refused scan."""
    from ballistics.compare import CompareParams, compare

    params = CompareParams(**cand.compare)
    n = len(prepared)
    score = np.zeros((n, n))
    cmc = np.zeros((n, n))
    times = []
    for i, j in itertools.combinations(range(n), 2):
        if prepared[i] is None or prepared[j] is None:
            continue
        t = time.perf_counter()
        c = compare(prepared[i], prepared[j], params=params)
        times.append(time.perf_counter() - t)
        score[i, j] = score[j, i] = c.score
        cmc[i, j] = cmc[j, i] = c.cmc
    return score, cmc, times


def metrics(
    score: np.ndarray, labels: list[str], groups: list[str], refused: set[int]
) -> dict[str, Any]:
    """Pair AUC (refusals as score 0, and over scored pairs only) and top-k retrieval."""
    n = len(labels)
    pos, neg, pos_s, neg_s, sub = [], [], [], [], []
    for i, j in itertools.combinations(range(n), 2):
        same = labels[i] == labels[j]
        (pos if same else neg).append(score[i, j])
        if i not in refused and j not in refused:
            (pos_s if same else neg_s).append(score[i, j])
            if not same and groups[i] and groups[i] == groups[j]:
                sub.append(score[i, j])
    s = score.copy()
    np.fill_diagonal(s, -np.inf)
    ranks = []
    for i in range(n):
        if not any(labels[j] == labels[i] for j in range(n) if j != i):
            continue
        if i in refused:
            ranks.append(n)  # a refused query finds nothing
            continue
        order = np.argsort(-s[i], kind="stable")
        ranks.append(next(r for r, j in enumerate(order) if labels[j] == labels[i]) + 1)
    r = np.asarray(ranks)
    return {
        "auc": round(auc(pos, neg), 4),
        "auc_scored_only": round(auc(pos_s, neg_s), 4),
        "auc_vs_same_group": round(auc(pos_s, sub), 4) if sub else None,
        "known_matches": len(pos),
        "known_non_matches": len(neg),
        "same_group_non_matches": len(sub),
        "top1": round(float((r <= 1).mean()), 4),
        "top10": round(float((r <= 10).mean()), 4),
        "queries": int(r.size),
        "score_matches": quantiles(pos_s),
        "score_non_matches": quantiles(neg_s),
    }


def choose(results: dict[str, dict[str, Any]], others: list[str]) -> str:
    """The candidate with the best mean AUC on ``others`` (ties: top-10, then order)."""

    def key(c: Candidate) -> tuple[float, float, int]:
        a = float(np.mean([results[o][c.name]["auc"] for o in others]))
        t = float(np.mean([results[o][c.name]["top10"] for o in others]))
        return (-a, -t, CANDIDATES.index(c))

    return min(CANDIDATES, key=key).name


def loio(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for modality, names in MODALITIES.items():
        present = [n for n in names if n in results]
        for left in present:
            others = [n for n in present if n != left]
            if not others:
                continue
            pick = choose(results, others)
            rows.append(
                {
                    "modality": modality,
                    "left_out": left,
                    "chosen_on": others,
                    "chosen": pick,
                    "auc": results[left][pick]["auc"],
                    "top10": results[left][pick]["top10"],
                    "default_auc": results[left]["default"]["auc"],
                    "default_top10": results[left]["default"]["top10"],
                }
            )
    return rows


def markdown(report: dict[str, Any]) -> str:
    out = []
    out.append(
        "| instrument | pixels (um) | scans | refused | primer / pin err (px, median) | "
        + " | ".join(f"{c.name} AUC / scored-only / top-10" for c in CANDIDATES)
        + " |"
    )
    out.append("|---" * (5 + len(CANDIDATES)) + "|")
    for name, r in report["instruments"].items():
        seg = r["segmentation"]
        cells = [
            f"{r['candidates'][c.name]['auc']:.3f} / {r['candidates'][c.name]['auc_scored_only']:.3f}"
            f" / {r['candidates'][c.name]['top10']:.3f}"
            for c in CANDIDATES
        ]
        out.append(
            f"| {name} | {', '.join(str(p) for p in r['pixels_um'])} | {r['scans']} | "
            f"{r['refused']} | {seg['primer_center_median_px']} / {seg['pin_center_median_px']} | "
            + " | ".join(cells)
            + " |"
        )
    out.append("")
    out.append(
        "| modality | left out | chosen on | chosen | AUC | top-10 | default AUC | default top-10 |"
    )
    out.append("|---|---|---|---|---|---|---|---|")
    for r in report["loio"]:
        out.append(
            f"| {r['modality']} | {r['left_out']} | {', '.join(r['chosen_on'])} | {r['chosen']} | "
            f"{r['auc']:.3f} | {r['top10']:.3f} | {r['default_auc']:.3f} | "
            f"{r['default_top10']:.3f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    from ballistics.instruments import INSTRUMENTS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 guns x 2 shots per instrument")
    ap.add_argument("--guns", type=int, help="firearms per instrument (default 6)")
    ap.add_argument("--shots", type=int, help="shots per firearm (default 3)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--instruments", help="comma-separated subset of the instruments")
    ap.add_argument("--out", help="JSON output path")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    guns = args.guns or (3 if args.quick else 6)
    shots = args.shots or (2 if args.quick else 3)
    names = args.instruments.split(",") if args.instruments else list(INSTRUMENTS)
    for n in names:
        if n not in INSTRUMENTS:
            ap.error(f"unknown instrument {n!r}; choose from {', '.join(INSTRUMENTS)}")
    t0 = time.time()
    report: dict[str, Any] = {
        "command": "python benchmarks/instruments_loio.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "guns": guns,
        "shots": shots,
        "seed": args.seed,
        "candidates": [asdict(c) for c in CANDIDATES],
        "instruments": {},
    }
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        t_inst = time.time()
        scans = build_scans(name, guns, shots, args.seed)
        labels = [s["truth"].firearm_id for s in scans]
        groups = [s["truth"].group or "" for s in scans]
        entry: dict[str, Any] = {
            "kind": INSTRUMENTS[name].kind,
            "pixels_um": sorted({s["pixel_um"] for s in scans}),
            "scans": len(scans),
            "casings": [s["truth"].casing_id for s in scans],
            "firearms": labels,
            "groups": groups,
            "generate_s": round(time.time() - t_inst, 1),
            "candidates": {},
        }
        preps: dict[tuple[float, float], tuple[list[Any], list[dict[str, Any]], list[float]]] = {}
        for cand in CANDIDATES:
            if cand.prepare_key not in preps:
                preps[cand.prepare_key] = prepare_all(scans, cand.prepare_key)
            prepared, refusals, ptimes = preps[cand.prepare_key]
            refused = {i for i, p in enumerate(prepared) if p is None}
            t = time.time()
            score, cmc, ctimes = score_matrix(prepared, cand)
            m = metrics(score, labels, groups, refused)
            m.update(
                refused=len(refused),
                refusals=refusals,
                prepare_median_s=round(float(np.median(ptimes)), 3),
                compare_median_ms=round(1000 * float(np.median(ctimes)), 1) if ctimes else None,
                compare_total_s=round(time.time() - t, 1),
                scores=np.round(score, 4).tolist(),
                cmc=cmc.astype(int).tolist(),
            )
            entry["candidates"][cand.name] = m
            print(
                f"{name:>18} {cand.name:>12}: AUC {m['auc']:.4f} (scored {m['auc_scored_only']:.4f})"
                f" top-10 {m['top10']:.3f} top-1 {m['top1']:.3f} refused {len(refused)}"
                f" [{m['compare_total_s']} s]",
                flush=True,
            )
        default_prep = preps[CANDIDATES[0].prepare_key][0]
        entry["segmentation"] = segmentation_errors(scans, default_prep)
        entry["refused"] = entry["candidates"]["default"]["refused"]
        entry["seconds"] = round(time.time() - t_inst, 1)
        report["instruments"][name] = entry
        results[name] = entry["candidates"]
    report["loio"] = loio(results)
    report["wall_s"] = round(time.time() - t0, 1)
    out = (
        Path(args.out)
        if args.out
        else ROOT
        / "benchmarks"
        / "results"
        / ("instruments_loio-quick.json" if args.quick else "instruments_loio.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print()
    print(markdown(report))
    print(f"\nwall {report['wall_s']} s; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
