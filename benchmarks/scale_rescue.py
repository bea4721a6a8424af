"""Could a coarse registration rescue the mates stage 2 drops? (issue 11; measured, not built)

Among N cheap distractors (``benchmarks/scale_corpus.py``, seed 7) plus the query sets of
``benchmarks/scale.py``, each query's candidates are chosen as the search chooses them (exact
descriptor top K by ``RerankPolicy``, then ``screen_candidates``' order: screen and fused score
alternately). The search compares the first 20. Here the candidates at positions 20 .. head-1
are also scored by the comparison's own first step, the full-rotation NCC sweep on the coarse
level (``ballistics.compare.coarse_similarity``: factor 8 = 50 um, 4-degree steps, 35-um blur,
translations up to 1 mm), and the best ``rescue`` of them by that score are added to the comparison. Reported:
the share of mate pairs compared without and with the rescue, each lost mate's position and
its rank by the sweep score, and the sweep's CPU time per pair. Distractor surfaces are
regenerated from their seed.

    nice -n 5 python benchmarks/scale_rescue.py --query-seed 301 --sets fadul
    nice -n 5 python benchmarks/scale_rescue.py --query-seed 401 --fadul-slides 0

Writes ``benchmarks/results/scale-rescue-seed<S>[-<sets>].json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import scale
from benchmarks._common import ROOT

RESCUES = (2, 5, 10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--query-seed", type=int, default=scale.QUERY_SEED)
    ap.add_argument("--fadul-slides", type=int, default=10)
    ap.add_argument("--sets", default=None, help="only query sets whose name starts so")
    ap.add_argument("--head", type=int, default=150, help="positions scored by the sweep")
    ap.add_argument("--compare", type=int, default=20)
    args = ap.parse_args()
    from ballistics.screen import screen_spectra, spectra
    from index.search import FUSION_WEIGHT, RerankPolicy, fused_scores, interleave

    P = scale.load_pool(args.n, args.query_seed, args.fadul_slides)
    n, items, pool, psig = P.n, P.items, P.pool, P.signatures
    Q, QS = pool[n:], psig[n:]
    k = RerankPolicy().k(len(pool))
    c = args.compare
    pairs = 0
    kept_plain = 0
    kept_rescued = dict.fromkeys(RESCUES, 0)
    lost: list[dict[str, Any]] = []
    cpu: list[float] = []
    for j, it in enumerate(items):
        if args.sets and not it.set.startswith(args.sets):
            continue
        mates = P.mates(j)
        if not mates:
            continue
        s = pool @ Q[j]
        s[n + j] = -np.inf
        cand = np.argsort(-s)[:k]
        scr, _ = screen_spectra(QS[j], spectra(psig[cand]))
        fused = fused_scores(s[cand], scr, FUSION_WEIGHT)
        order = interleave(
            [int(x) for x in cand[np.argsort(-scr)]], [int(x) for x in cand[np.argsort(-fused)]]
        )
        tail = order[c : args.head]
        sw = P.coarse_scores(j, tail, cpu)
        by_sweep = sorted(tail, key=lambda x: -sw[x])
        for m in mates:
            pairs += 1
            plain = m in order[:c]
            kept_plain += plain
            for r in RESCUES:
                kept_rescued[r] += plain or m in by_sweep[:r]
            if not plain:
                lost.append(
                    {
                        "query": it.key,
                        "position": order.index(m) if m in order else None,
                        "sweep_rank_in_head": by_sweep.index(m) if m in sw else None,
                    }
                )
        print(it.key, len(lost), flush=True)
    out = {
        **scale.run_header(),
        "n_distractors": n,
        "k": k,
        "compare": c,
        "head": args.head,
        "mate_pairs": pairs,
        "compared_share": round(kept_plain / max(pairs, 1), 4),
        "compared_share_with_rescue": {
            str(r): round(v / max(pairs, 1), 4) for r, v in kept_rescued.items()
        },
        "sweep_cpu_ms_per_pair_median": round(1e3 * float(np.median(cpu)), 1) if cpu else None,
        "lost_by_stage2": lost,
    }
    tag = f"seed{args.query_seed}" + (f"-{args.sets}" if args.sets else "")
    path = ROOT / "benchmarks" / "results" / f"scale-rescue-{tag}.json"
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps({k_: v for k_, v in out.items() if k_ not in ("machine", "lost_by_stage2")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
