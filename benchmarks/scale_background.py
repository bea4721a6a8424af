"""Background correlation at scale: which candidates should a correlation job compare?

A correlation job (``index.correlate``) screens a newcomer against its whole partition and
fully compares the best ``CorrelationConfig.keep(n)`` (5 % of the partition, 20 to 2,000).
This benchmark measures, among N cheap distractors (``benchmarks/scale_corpus.py``, seed 7)
plus the query sets of ``benchmarks/scale.py`` (Fadul; synthetic 3-D sets of a seed), the
share of mate pairs that reach that comparison when the compared casings are chosen

* ``screen``: by the screen score alone over the whole partition (the rule before 2026-12-05);
* ``interleave``: alternately from the screen's order and the descriptor's order over the
  whole partition (the descriptor search is exact; ``index.correlate`` since 2026-12-05).

Each query is a newcomer and every other casing of the pool is in its partition (so a mate
pair counts twice, once per arrival order). Scores are exact over the whole pool (numpy
descriptor inner products; the engine's screen from precomputed spectra).

    nice -n 5 python benchmarks/scale_background.py --n 100000 --query-seed 301 --fadul-slides 0
    nice -n 5 python benchmarks/scale_background.py --n 100000 --query-seed 401 --fadul-slides 0
    nice -n 5 python benchmarks/scale_background.py --n 100000 --query-seed 301
    nice -n 5 python benchmarks/scale_background.py --n 100000 --query-seed 301 --rescue-head 4000

``--rescue-head H``: for the queries with a mate at positions 2,000 .. H-1 of the two-order
list, those positions are scored by the comparison's coarse sweep
(``ballistics.compare.coarse_similarity``; distractor surfaces regenerated) and the mate's
rank among them is recorded (``rescue`` in the output; rescued when below ``--rescue-k``).

Writes ``benchmarks/results/scale-background-n<N>-seed<S>[-fadul].json``.
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

from benchmarks import scale
from benchmarks._common import ROOT

KEEPS = (20, 200, 500, 1000, 2000)


def kept_share(positions: list[int], keep: int) -> float:
    """Share of mate pairs whose position in the compared order is below ``keep``."""
    return round(float(np.mean(np.asarray(positions) < keep)), 4)


def interleave_positions(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Position of every pool index in the interleave first[0], second[0], first[1], ...
    without repeats (``index.search.interleave`` over whole orders), vectorised: each index's
    position is fixed by the earlier of its two appearances."""
    n = first.size
    slot = np.empty(n, np.int64)
    slot[first] = 2 * np.arange(n)
    slot2 = np.empty(n, np.int64)
    slot2[second] = 2 * np.arange(n) + 1
    best = np.minimum(slot, slot2)
    order = np.argsort(best, kind="stable")
    pos = np.empty(n, np.int64)
    pos[order] = np.arange(n)
    return pos


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=100000, help="distractors (cached by scale_corpus)")
    ap.add_argument("--query-seed", type=int, default=scale.QUERY_SEED)
    ap.add_argument("--fadul-slides", type=int, default=10)
    ap.add_argument("--guns", type=int, default=5)
    ap.add_argument("--shots", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--rescue-head",
        type=int,
        default=0,
        help="also score positions 2,000 .. HEAD-1 of the two-order list by the comparison's"
        " coarse sweep, for the queries with a mate there (0: no)",
    )
    ap.add_argument("--rescue-k", type=int, default=20, help="best of those compared too")
    args = ap.parse_args()

    P = scale.load_pool(args.n, args.query_seed, args.fadul_slides, args.guns, args.shots)
    n, items, pool, failures = P.n, P.items, P.pool, P.failures
    Q, QS = pool[n:], P.signatures[n:]
    spec = scale.spectra(P.signatures)

    rows: dict[str, dict[str, list[int]]] = {}
    t_screen: list[float] = []
    t_sweep: list[float] = []
    rescue: list[dict[str, Any]] = []
    for j, it in enumerate(items):
        mates = P.mates(j)
        if not mates:
            continue
        desc = pool @ Q[j]
        t = time.perf_counter()
        scr = scale.screen_all(QS[j], spec)
        t_screen.append(time.perf_counter() - t)
        desc[n + j] = scr[n + j] = -np.inf  # the newcomer is not in its own partition
        by_screen = np.argsort(-scr, kind="stable")
        by_desc = np.argsort(-desc, kind="stable")
        pos_screen = np.empty(len(pool), np.int64)
        pos_screen[by_screen] = np.arange(len(pool))
        pos_inter = interleave_positions(by_screen, by_desc)
        for set_ in (it.set, "all"):
            r = rows.setdefault(set_, {"screen": [], "interleave": []})
            r["screen"].extend(int(pos_screen[m]) for m in mates)
            r["interleave"].extend(int(pos_inter[m]) for m in mates)
        keep, head = max(KEEPS), args.rescue_head
        if head > keep and any(keep <= pos_inter[m] < head for m in mates):
            # the rescue only adds candidates: queries with no mate in reach cannot change
            order = np.argsort(pos_inter, kind="stable")[keep:head]
            sw = P.coarse_scores(j, order, t_sweep)
            best = sorted(sw, key=lambda x: -sw[x])
            for m in mates:
                if keep <= pos_inter[m] < head:
                    rescue.append(
                        {
                            "query": it.key,
                            "set": it.set,
                            "position": int(pos_inter[m]),
                            "sweep_rank": best.index(m),
                            "rescued": best.index(m) < args.rescue_k,
                        }
                    )
            print(it.key, rescue[-1], flush=True)

    out: dict[str, Any] = {
        **scale.run_header(),
        "n_distractors": n,
        "query_seed": args.query_seed,
        "fadul_present": any(i.set == "fadul" for i in items),
        "prepare_failures": failures,
        "screen_whole_pool_s_median": round(float(np.median(t_screen)), 3),
        "keeps": list(KEEPS),
        "by_set": {},
    }
    for set_, r in sorted(rows.items()):
        out["by_set"][set_] = {
            "directed_mate_pairs": len(r["screen"]),
            **{rule: {str(k): kept_share(v, k) for k in KEEPS} for rule, v in r.items()},
            "worst_positions": {rule: sorted(v)[-5:] for rule, v in r.items()},
        }
    if args.rescue_head:
        out["rescue"] = {
            "positions": [max(KEEPS), args.rescue_head],
            "k": args.rescue_k,
            "sweep_cpu_ms_median": round(1e3 * float(np.median(t_sweep)), 1) if t_sweep else None,
            "mates_in_reach": rescue,
        }
    tag = f"n{n}-seed{args.query_seed}" + ("-fadul" if out["fadul_present"] else "")
    tag += f"-rescue{args.rescue_head}" if args.rescue_head else ""
    path = Path(args.out or ROOT / "benchmarks" / "results" / f"scale-background-{tag}.json")
    path.write_text(json.dumps(out, indent=1))
    for set_, r in out["by_set"].items():
        print(set_, json.dumps({k: v for k, v in r.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
