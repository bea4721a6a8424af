"""How well the index descriptor and the screen (``ballistics.screen``) keep true matches.

Usage::

    python benchmarks/screen_accuracy.py fadul
    python benchmarks/screen_accuracy.py synth --guns 50 --shots 4 --seed 7 [--png]

For every casing as a query against all the others, and every known match of it, the share of
the query's known non-matches that score above that match ("exceedance"). A stage that keeps
the best fraction p of its candidates loses the match when its exceedance is above p, so the
table reports, per stage, the share of known-match pairs lost at p = 5 %, 10 %, 20 %, 30 %,
and the share of queries that lose *every* known match. Also the pair AUC and the time per
casing (signature) and per pair (screen). Writes ``benchmarks/results/screen-<dataset>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REAL, ROOT, auc, fadul_files, machine, synth_files

FRACTIONS = (0.05, 0.10, 0.20, 0.30)


def stage_metrics(s: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Exceedance metrics for a symmetric (n, n) score matrix."""
    n = len(labels)
    lab = np.asarray(labels)
    km, knm, exceed, best = [], [], [], []
    for i in range(n):
        same = (lab == lab[i]) & (np.arange(n) != i)
        diff = lab != lab[i]
        if not same.any() or not diff.any():
            continue
        nm = s[i, diff]
        ex = [float(np.mean(nm > s[i, j])) for j in np.nonzero(same)[0]]
        exceed += ex
        best.append(min(ex))
        km += [s[i, j] for j in np.nonzero(same)[0] if j > i]
        knm += [s[i, j] for j in np.nonzero(diff)[0] if j > i]
    e, b = np.asarray(exceed), np.asarray(best)
    return {
        "pair_auc": round(auc(km, knm), 4),
        "match_pairs": int(e.size),
        "queries": int(b.size),
        "pairs_lost": {f"{p:.2f}": round(float(np.mean(e > p)), 4) for p in FRACTIONS},
        "queries_losing_every_match": {
            f"{p:.2f}": round(float(np.mean(b > p)), 4) for p in FRACTIONS
        },
        "max_exceedance": round(float(e.max()), 4),
    }


def evaluate(name: str, files: list[Path], labels: list[str]) -> dict[str, Any]:
    from ballistics.descriptors import describe
    from ballistics.io import read_scan
    from ballistics.pipeline import prepare
    from ballistics.screen import screen, signature

    prepared = [prepare(read_scan(f)) for f in files]
    vec = np.stack([describe(p)["breech_face"] for p in prepared])
    t = time.perf_counter()
    sig = np.stack([signature(p) for p in prepared])
    t_sig = (time.perf_counter() - t) / len(prepared)
    t = time.perf_counter()
    scr = np.stack([screen(sig[i], sig)[0] for i in range(len(sig))])
    t_pair = (time.perf_counter() - t) / len(sig) ** 2
    return {
        "dataset": name,
        "casings": len(files),
        "descriptor": stage_metrics(vec @ vec.T, labels),
        "screen": stage_metrics(scr, labels),
        "signature_ms": round(1e3 * t_sig, 2),
        "screen_us_per_pair": round(1e6 * t_pair, 2),
        "machine": machine(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("dataset", choices=["fadul", "synth"])
    ap.add_argument("--guns", type=int, default=50)
    ap.add_argument("--shots", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--png", action="store_true", help="synthetic: use the 2-D renders")
    args = ap.parse_args()
    if args.dataset == "fadul":
        if not (REAL / "csafe-cartridgeCaseScans" / "MANIFEST.tsv").exists():
            print(f"no Fadul data under {REAL}", file=sys.stderr)
            return 2
        res = evaluate("fadul", *fadul_files())
    else:
        name, files, labels, _ = synth_files(args.guns, args.shots, args.seed, args.png)
        res = evaluate(name, files, labels)
    res["command"] = "python " + " ".join(sys.argv)
    dest = ROOT / "benchmarks" / "results" / f"screen-{res['dataset']}.json"
    dest.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
