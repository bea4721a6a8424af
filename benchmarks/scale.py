"""Scale benchmark: do a query's mates survive the search when hidden among N distractors?

Queries whose mates are in the store: the 40 Fadul casings (../shared/data/real; skipped with a
note when absent) and synthetic sets recorded by the 3-D instrument models (full simulation:
``synth.fired_surface`` + ``instruments.record`` + ``pipeline.prepare``; seed
:data:`QUERY_SEED`, a few 9-mm guns x ``--shots`` each per instrument). Every query-set casing
is in the pool; a query's mates are the other casings of its gun. The pool also holds the first
N cheap distractors of ``benchmarks/scale_corpus.py`` (seed :data:`DISTRACTOR_SEED`).

Per N, per query, the stages of ``index.search.Searcher`` on the breech-face region, under two
candidate policies side by side (:class:`Policy`):

* ``old``: stage 1 keeps ``--rerank`` (200), stage 2 keeps the ``--compare`` (20) best by the
  screen score alone (the search before 2026-12-05);
* ``new``: stage 1 keeps ``index.search.RerankPolicy`` of the pool size (2 %, at least 200, at
  most 4000), stage 2 keeps ``--compare`` taken alternately from the screen's order and
  the order of ``index.search.fused_scores`` (as ``screen_candidates`` does).

1. stage 1: ``index.vectors.FaissIndex`` built over the pool (factory by ``choose_factory``),
   the top K by descriptor, the query itself excluded;
2. stage 2: the real ``index.search.screen_candidates`` with the engine's screen
   (``ballistics.screen``) over those candidates' signatures, the best ``--compare`` kept;
3. stage 3 (for every ``--stage3-every``-th query; 0: none): ``ballistics.compare.compare`` of
   the query with each kept candidate (distractor surfaces regenerated from their seed), ranked
   by score as ``rank_candidates`` ranks them.

For each mate: survives stage 1, stage 2 (reaches the comparison), reaches the final top 10;
per query: top 1 is a mate. Rank percentiles over the whole pool (exact, numpy): the number of
distractors scoring above the mate / N, by descriptor, by the screen (``screen_spectra``) and
by the new policy's fused score. Projection to 1 M and 4 M: see :func:`tail_p` and
RESULTS-scale.md. ``--tune``: the fusion grid on the synthetic sets only (:func:`tune_grid`).

Hardness check: the same queries against full-simulation non-mates (seed :data:`HARD_SEED`, one
shot per gun, instruments cycled) and against the cheap distractors.

Usage::

    nice -n 10 python benchmarks/scale.py --quick          # a couple of minutes
    nice -n 10 python benchmarks/scale_corpus.py --n 10000 --workers 2
    nice -n 10 python benchmarks/scale.py --sizes 1000,10000
    nice -n 10 python benchmarks/scale.py --sizes 1000,10000 --stage3-every 0   # stages 1-2
    nice -n 10 python benchmarks/scale.py --tune --fadul-slides 0 --hard 0 --sizes 1000,10000

Writes ``benchmarks/results/scale.json`` (``scale-quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import scale_corpus as sc
from benchmarks._common import REAL, ROOT, machine
from index.search import FUSION_WEIGHT, SCREEN_TAIL_QUANTILE

QUERY_SEED = 301
HARD_SEED = 201
DISTRACTOR_SEED = 7
INSTRUMENTS_3D = ("confocal", "focus_variation", "photometric_stereo")
QDIR = sc.CACHE / "queries"
COMPARE_CACHE = sc.CACHE / "compare-cache.jsonl"
#: compare_k values whose survival to comparison is also reported (cost: ~0.16 s CPU each)
KEEP_CURVE = (10, 20, 30, 40)


@dataclass
class Item:
    """A fully simulated or real casing: cache key, gun label, set name, features."""

    key: str
    gun: str
    set: str
    desc: np.ndarray
    sig: np.ndarray
    surface_bytes: int


def _cached_prepared(key: str, make: Any) -> Any:
    """A prepared casing from the cache (``make()`` once; None is remembered as a failure)."""
    from ballistics.pipeline import PreparedCasing

    path = QDIR / f"{key}.npz"
    fail = QDIR / f"{key}.failed"
    if path.exists():
        return PreparedCasing.from_bytes(path.read_bytes())
    if fail.exists():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        p = make()
    except Exception as exc:  # segmentation refusals etc.: recorded, counted, not hidden
        fail.write_text(f"{type(exc).__name__}: {exc}")
        return None
    path.write_bytes(p.to_bytes())
    return p


def load_prepared(key: str) -> Any:
    from ballistics.pipeline import PreparedCasing

    return PreparedCasing.from_bytes((QDIR / f"{key}.npz").read_bytes())


def _item(key: str, gun: str, set_: str, make: Any, failures: list[str]) -> Item | None:
    p = _cached_prepared(key, make)
    if p is None:
        failures.append(key)
        return None
    d, s = sc.features(p)
    return Item(key, gun, set_, d, s, (QDIR / f"{key}.npz").stat().st_size)


def fadul_items(slides: int, failures: list[str]) -> list[Item]:
    from ballistics.io import read_scan
    from ballistics.pipeline import prepare
    from benchmarks._common import fadul_files

    if not (REAL / "csafe-cartridgeCaseScans" / "MANIFEST.tsv").exists():
        return []
    files, guns = fadul_files()
    keep = sorted(set(guns))[:slides]
    out = []
    for f, g in zip(files, guns, strict=True):
        if g in keep:
            it = _item(f"fadul/{f.stem}", g, "fadul", lambda f=f: prepare(read_scan(f)), failures)
            if it is not None:
                out.append(it)
    return out


def _full_sim(fa: Any, shot: int, instrument: str) -> Any:
    from ballistics.instruments import INSTRUMENTS, instrument_rng, record
    from ballistics.pipeline import prepare
    from ballistics.synth import fired_surface

    sp = INSTRUMENTS[instrument].pixels_um[0] * 1e-6
    surface = fired_surface(fa, shot_seed=shot, spacing_m=sp)
    scan, _ = record(surface, instrument, rng=instrument_rng(fa.seed, shot, instrument))
    return prepare(scan)


def synth_items(
    guns: int,
    shots: int,
    instruments: tuple[str, ...],
    failures: list[str],
    seed: int = QUERY_SEED,
) -> list[Item]:
    """Full simulations: per instrument, ``guns`` 9-mm guns (consecutive-manufacture groups as
    ``make_firearms`` draws them) x ``shots``."""
    from ballistics.synth import make_firearms

    out = []
    for j, inst in enumerate(instruments):
        for fa in make_firearms(guns, seed=seed + j, calibers=("9mm",)):
            for k in range(1, shots + 1):
                it = _item(
                    f"q{seed}-g{guns}/{inst}/{fa.id}-{k}",
                    f"{inst}/{fa.id}",
                    f"synth-{inst}",
                    lambda fa=fa, k=k, inst=inst: _full_sim(fa, k, inst),
                    failures,
                )
                if it is not None:
                    out.append(it)
    return out


@dataclass
class Pool:
    """The first ``n`` distractors of the cached corpus and the query sets, as one pool: rows
    0 .. n-1 are distractors, row n + j is ``items[j]``."""

    n: int
    items: list[Item]
    failures: list[str]
    pool: np.ndarray
    """(n + len(items), 144) float32 descriptors."""
    signatures: np.ndarray
    """(n + len(items), RADII, ANGLES) screening signatures."""

    def mates(self, j: int) -> list[int]:
        """Pool rows of the other casings of ``items[j]``'s gun."""
        gun = self.items[j].gun
        return [self.n + m for m, it in enumerate(self.items) if m != j and it.gun == gun]

    def prepared(self, row: int) -> Any:
        """The prepared casing of pool row ``row`` (a distractor is regenerated from its seed)."""
        if row < self.n:
            return sc.prepared(DISTRACTOR_SEED, row)
        return load_prepared(self.items[row - self.n].key)

    def coarse_scores(self, j: int, rows: Any, cpu: list[float]) -> dict[int, float]:
        """``ballistics.compare.coarse_similarity`` of ``items[j]`` with each pool row in
        ``rows``; the CPU seconds of each call are appended to ``cpu``."""
        from ballistics.compare import coarse_similarity

        query = load_prepared(self.items[j].key)
        out = {}
        for row in (int(r) for r in rows):
            other = self.prepared(row)
            t = time.process_time()
            out[row] = coarse_similarity(query, other)
            cpu.append(time.process_time() - t)
        return out


def load_pool(n: int, query_seed: int, fadul_slides: int, guns: int = 5, shots: int = 3) -> Pool:
    """:class:`Pool` of the first ``n`` distractors (seed :data:`DISTRACTOR_SEED`, built by
    ``scale_corpus.py``), Fadul (its first ``fadul_slides`` slides) and the synthetic 3-D
    sets of ``query_seed``."""
    failures: list[str] = []
    items = fadul_items(fadul_slides, failures) + synth_items(
        guns, shots, INSTRUMENTS_3D, failures, query_seed
    )
    D, S, _ = sc.load(n, DISTRACTOR_SEED)
    Q = np.stack([i.desc for i in items]).astype(np.float32)
    QS = np.stack([i.sig for i in items])
    return Pool(
        n,
        items,
        failures,
        np.concatenate([D[:n], Q]).astype(np.float32),
        np.concatenate([S[:n].reshape(n, *QS.shape[1:]), QS]),
    )


def run_header() -> dict[str, Any]:
    """What every result file starts with: the command, the date and the machine."""
    return {
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
    }


def hard_items(n: int, failures: list[str]) -> list[Item]:
    """Full-simulation non-mates: ``n`` unrelated 9-mm guns, one shot each, instruments cycled."""
    from ballistics.synth import make_firearms

    out = []
    for i, fa in enumerate(make_firearms(n, seed=HARD_SEED, calibers=("9mm",), group_size=1)):
        inst = INSTRUMENTS_3D[i % len(INSTRUMENTS_3D)]
        it = _item(
            f"h{HARD_SEED}/{inst}/{fa.id}",
            f"hard/{fa.id}",
            "hard",
            lambda fa=fa, inst=inst: _full_sim(fa, 1, inst),
            failures,
        )
        if it is not None:
            out.append(it)
    return out


# -- the screen over a whole pool ----------------------------------------------------------


def spectra(sig: np.ndarray, chunk: int = 5000) -> np.ndarray:
    """rfft along the angle of (N, 32, 128) signatures: (N, 32, 65) complex64
    (``ballistics.screen.spectra``)."""
    from ballistics.screen import spectra as _spectra

    return _spectra(sig, chunk)


def screen_all(q: np.ndarray, spec: np.ndarray, chunk: int = 5000) -> np.ndarray:
    """``ballistics.screen.screen(q, sigs)[0]`` for every signature, from their spectra
    (``ballistics.screen.screen_spectra``)."""
    from ballistics.screen import screen_spectra

    return screen_spectra(q, spec, chunk)[0]


# -- stage 3 -------------------------------------------------------------------------------


def _compare_job(job: tuple[str, str]) -> tuple[str, str, float, int, float]:
    """(query key, candidate ref) -> (.., score, cmc, CPU seconds). A candidate ref is an item
    key or ``d<seed>:<index>`` for a distractor (regenerated)."""
    from ballistics.compare import compare

    qk, ck = job
    q = load_prepared(qk)
    if ck.startswith("d") and ":" in ck:
        seed, idx = ck[1:].split(":")
        c = sc.prepared(int(seed), int(idx))
    else:
        c = load_prepared(ck)
    t = time.process_time()
    r = compare(q, c)
    return qk, ck, float(r.score), int(r.cmc), time.process_time() - t


def run_compares(
    jobs: list[tuple[str, str]], workers: int
) -> dict[tuple[str, str], dict[str, float]]:
    """Scores for every (query, candidate) job, through a cache that persists across runs."""
    cache: dict[tuple[str, str], dict[str, float]] = {}
    if COMPARE_CACHE.exists():
        for line in COMPARE_CACHE.read_text().splitlines():
            r = json.loads(line)
            cache[(r["q"], r["c"])] = r
    todo = sorted({j for j in jobs if j not in cache})
    print(
        f"stage 3: {len(todo)} comparisons to run ({len(set(jobs)) - len(todo)} cached)",
        file=sys.stderr,
    )
    COMPARE_CACHE.parent.mkdir(parents=True, exist_ok=True)
    with open(COMPARE_CACHE, "a") as fh:
        if todo:
            os.environ["OMP_NUM_THREADS"] = "1"
            with ProcessPoolExecutor(max(1, workers)) as ex:
                for i, (qk, ck, s, cmc, cpu) in enumerate(ex.map(_compare_job, todo, chunksize=4)):
                    r = {"q": qk, "c": ck, "score": s, "cmc": cmc, "cpu_s": round(cpu, 4)}
                    cache[(qk, ck)] = r
                    fh.write(json.dumps(r) + "\n")
                    if i % 50 == 0:
                        fh.flush()
                        print(f"\rcompare {i + 1}/{len(todo)}", end="", file=sys.stderr, flush=True)
            print(file=sys.stderr)
    return cache


# -- stages 1-2 under a candidate policy ----------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """A candidate-generation policy: stage-1 ``rerank`` (None: ``index.search.RerankPolicy``
    of the pool size), stage-2 fusion ``weight`` (None: the screen score alone) and ``keep``
    (how many are fully compared)."""

    name: str
    rerank: int | None
    weight: float | None
    keep: int

    def describe(self) -> dict[str, Any]:
        from index.search import RerankPolicy

        rp = RerankPolicy()
        return {
            "rerank_k": self.rerank
            if self.rerank is not None
            else f"{rp.fraction:g} x casings, at least {rp.floor}, at most {rp.cap}",
            "stage2": "screen alone" if self.weight is None else f"fused, weight {self.weight}",
            "compare_k": self.keep,
        }


def stage12(
    n: int, D: np.ndarray, S: np.ndarray, items: list[Item], queries: list[int], policies: list
) -> dict[str, Any]:
    """Stages 1-2 for every query among the first ``n`` distractors under each policy, by the
    real ``FaissIndex`` and ``index.search.screen_candidates`` (the engine's screen)."""
    from index.engine import BallisticsEngine
    from index.search import (
        SCREEN_KEY,
        Query,
        RerankPolicy,
        Screen,
        screen_candidates,
        tail_calibration,
    )
    from index.vectors import FaissIndex

    Q = np.stack([i.desc for i in items])
    ids = np.arange(n + len(items), dtype=np.int64)
    t = time.perf_counter()
    idx = FaissIndex.build(144, [(ids, np.concatenate([D[:n], Q]))])
    out: dict[str, Any] = {
        "faiss_factory": idx.factory,
        "faiss_build_s": round(time.perf_counter() - t, 2),
    }
    score_fn = BallisticsEngine().screen
    ks = {
        p.name: p.rerank if p.rerank is not None else RerankPolicy().k(idx.count())
        for p in policies
    }
    for pol in policies:
        out[pol.name] = {"rerank_k": ks[pol.name], "rows": [], "stage1_ms": [], "stage2_ms": []}
    for j in queries:  # policies interleaved per query, so machine load hits both alike
        qid = n + j
        mates = [m for m in range(len(items)) if m != j and items[m].gun == items[j].gun]
        for pol in policies:
            k = ks[pol.name]
            t = time.perf_counter()
            sc_, got = idx.search(Q[j], k + 1)
            hits = [
                (int(c), float(v))
                for c, v in zip(got[0], sc_[0], strict=True)
                if c >= 0 and c != qid
            ][:k]
            t1 = time.perf_counter() - t
            cand = [c for c, _ in hits]
            t = time.perf_counter()
            # signatures as the store hands them over (flat float32 rows), then the real stage 2
            sigs = {c: (S[c] if c < n else items[c - n].sig).ravel() for c in cand}
            # kept in order up to the widest keep of the curve: a prefix is what a smaller
            # keep gives (stage 2 sorts or alternates, then cuts)
            widest = max(pol.keep, *KEEP_CURVE)
            screen = Screen(score_fn, lambda ids_, sigs=sigs: sigs, widest, pol.weight)
            q = Query({SCREEN_KEY: items[j].sig.ravel()}, None, rowid=qid)
            screened, order = screen_candidates(screen, q, cand, dict(hits))
            kept = order[: pol.keep]
            t2 = time.perf_counter() - t
            sv = np.array([screened[c] for c in cand])
            calib = (
                tail_calibration(np.array([v for _, v in hits]), 0.0),
                tail_calibration(sv, SCREEN_TAIL_QUANTILE),
            )
            o = out[pol.name]
            o["rows"].append(
                {
                    "q": j,
                    "cand": set(cand),
                    "kept": kept,
                    "order": order,
                    "mates": mates,
                    "calibration": calib,
                }
            )
            o["stage1_ms"].append(1e3 * t1)
            o["stage2_ms"].append(1e3 * t2)
    return out


# -- projection ----------------------------------------------------------------------------


def tail_p(dist_scores: np.ndarray, s: float, k: int) -> float:
    """P(a distractor scores above ``s``) for one query: the empirical share when at least 10
    of the N distractors score above ``s``; otherwise an exponential tail fitted to the top
    ``k`` distractor scores (peaks over threshold with shape 0: the top k share k / N of the
    mass, above the threshold u it decays as exp(-(x - u) / beta), beta = mean excess)."""
    n = dist_scores.size
    above = int((dist_scores > s).sum())
    if above >= 10:
        return above / n
    top = np.sort(dist_scores)[-k:]
    u = float(top[0])
    beta = float(np.mean(top - u)) or 1e-12
    return (k / n) * math.exp(-max(0.0, s - u) / beta)


def survival(ps: list[float], m: int, keep: int) -> float:
    """Expected share of mates with fewer than ``keep`` of ``m`` i.i.d. distractors above them:
    mean over mates of P(Poisson(m p) <= keep - 1)."""
    from scipy.stats import poisson

    return float(np.mean([poisson.cdf(keep - 1, m * p) for p in ps])) if ps else math.nan


def to_comparison(
    pairs: list[tuple[int, int]],
    ps_desc: list[float],
    second: dict[str, list[tuple[np.ndarray, np.ndarray]]],
    desc_d: np.ndarray,
    measured: dict[str, dict[str, Any]],
    rerank: int,
    keep: int,
    ms: tuple[int, ...],
) -> dict[str, Any]:
    """Projected share of mates reaching the comparison at M casings, per policy.

    Stage 1: P(Poisson(M p_desc) <= K(M) - 1), the descriptor's fit, K(M) the policy's.
    Stage 2, three estimators (the mate assumed a candidate; for the new policy, which keeps
    the screen's and the fused order's best alternately, the larger of the two chances of
    being in their top ``keep // 2``, a lower bound):

    * ``conditional``: stage 1 x the measured P(kept | stage 1) at the largest N (assumes it
      does not change with M; optimistic for the new policy, whose K grows with M);
    * ``joint``: P(Poisson(lambda) <= keep - 1), lambda = K(M) x P(a stage-1 candidate
      outscores the mate on the stage-2 score), that conditional share estimated (``tail_p``)
      on the pool's distractors inside the descriptor's top K(M) / M share - at least the top
      50 (at 1 M and 4 M with a 10 k pool the top 40 / 10 are too few to fit; the top 50 have
      lower descriptor scores than the true candidates, so this is optimistic there);
    * ``whole_pool``: P(fewer than keep of *all* M distractors outscore it on the stage-2
      score) (pessimistic: in the search only stage 1's candidates compete).
    """
    from scipy.stats import poisson

    from index.search import RerankPolicy

    nmax = desc_d.shape[1]
    order = {j: np.argsort(-desc_d[j], kind="stable") for j, _ in pairs}
    out: dict[str, Any] = {}
    for pol, scores in second.items():
        # the new policy keeps the screen's and the fused order's best alternately: a mate
        # within the top keep // 2 of either goes on, so max(P(either)) is a lower bound
        c = keep if pol == "old" else keep // 2
        ps2 = [
            [tail_p(sd[j], si[j, m], max(20, nmax // 100)) for j, m in pairs] for sd, si in scores
        ]
        cond = measured[pol]["stage2_given_stage1"]
        out[pol] = {}
        for big_m in ms:
            k1 = rerank if pol == "old" else RerankPolicy().k(big_m)
            p1 = np.array([poisson.cdf(k1 - 1, big_m * p) for p in ps_desc])
            nt = int(min(nmax, max(50, round(k1 / big_m * nmax))))
            p2j = np.max(
                [
                    poisson.cdf(
                        c - 1,
                        [
                            k1 * tail_p(sd[j, order[j][:nt]], si[j, m], max(10, nt // 5))
                            for j, m in pairs
                        ],
                    )
                    for sd, si in scores
                ],
                axis=0,
            )
            p2w = np.max([poisson.cdf(c - 1, big_m * np.array(p)) for p in ps2], axis=0)
            out[pol][str(big_m)] = {
                "rerank_k": k1,
                "stage1": round(float(p1.mean()), 4),
                "conditional": round(float(p1.mean()) * cond, 4),
                "joint": round(float((p1 * p2j).mean()), 4),
                "joint_top_n_fitted": nt,
                "whole_pool": round(float((p1 * p2w).mean()), 4),
            }
    return out


def tune_grid(
    sizes: list[int],
    items: list[Item],
    queries: list[int],
    scores: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    keeps: tuple[int, ...] = (2, 3, 5, 10, 20),
) -> dict[str, Any]:
    """Stage-2 survival over a grid of fusion weights and screen-tail quantiles, on the
    synthetic query sets only (Fadul is held out: never passed here). Candidates are the
    descriptor's top K of the pool (K = 200 and the rerank policy's), scored exactly (numpy);
    keep = how many are compared. Also the mean log2 of the mates' rank among the candidates."""
    from index.search import RerankPolicy, fused_scores, interleave

    desc_d, desc_i, scr_d, scr_i = scores
    synth = [j for j in queries if items[j].set != "fadul"]
    weights: list[float | None] = [None, 0.0, 0.25, 0.5, 1.0, 2.0, 4.0]
    out: dict[str, Any] = {"queries": len(synth), "by": []}
    for n in sizes:
        for k in sorted({200, RerankPolicy().k(n + len(items))}):
            for quant in (0.5, 0.9, 0.98):
                for w, rule in [(x, r) for x in weights for r in ("fused", "interleaved")]:
                    if w is None and (quant != 0.9 or rule == "interleaved"):
                        continue
                    surv = dict.fromkeys(keeps, 0)
                    logr = []
                    mates = 0
                    for j in synth:
                        d = np.concatenate([desc_d[j, :n], desc_i[j]])
                        v = np.concatenate([scr_d[j, :n], scr_i[j]])
                        d[n + j] = -np.inf  # the query itself
                        cand = np.argsort(-d, kind="stable")[:k]
                        f = v[cand] if w is None else fused_scores(d[cand], v[cand], w, quant)
                        by = np.argsort(-f, kind="stable").tolist()
                        if rule == "interleaved" and w is not None:
                            by = interleave(np.argsort(-v[cand], kind="stable").tolist(), by)
                        rank = np.empty(k, np.int64)
                        rank[by] = np.arange(k)
                        pos = {int(c): int(r) for c, r in zip(cand, rank, strict=True)}
                        for m in range(len(items)):
                            if m == j or items[m].gun != items[j].gun:
                                continue
                            mates += 1
                            r = pos.get(n + m, k)  # not a candidate: lost at stage 1
                            logr.append(math.log2(1 + r))
                            for kk in keeps:
                                surv[kk] += r < kk
                    out["by"].append(
                        {
                            "n": n,
                            "rerank_k": k,
                            "screen_quantile": quant,
                            "weight": w,
                            "rule": "screen alone" if w is None else rule,
                            "mate_pairs": mates,
                            "mean_log2_rank": round(float(np.mean(logr)), 3),
                            **{f"keep{kk}": round(surv[kk] / max(1, mates), 4) for kk in keeps},
                        }
                    )
    return out


# -- main ----------------------------------------------------------------------------------


def _q(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else math.nan


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small run (a couple of minutes)")
    ap.add_argument("--sizes", default="1000,10000", help="distractor counts N")
    ap.add_argument("--rerank", type=int, default=200, help="the old policy's stage-1 K")
    ap.add_argument("--compare", type=int, default=20, help="compare_k of both policies")
    ap.add_argument("--guns", type=int, default=5, help="synthetic query guns per instrument")
    ap.add_argument(
        "--query-seed",
        type=int,
        default=QUERY_SEED,
        help="seed of the synthetic query sets (301: the tuning sets of the candidate policy)",
    )
    ap.add_argument("--shots", type=int, default=3)
    ap.add_argument("--fadul-slides", type=int, default=10)
    ap.add_argument("--hard", type=int, default=60, help="full-simulation non-mates")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--stage3-every",
        type=int,
        default=1,
        help="run stage 3 (full comparison) for every k-th query only (0: none, stages 1-2"
        " only: survival to comparison)",
    )
    ap.add_argument(
        "--tune", action="store_true", help="the stage-2 fusion grid on the synthetic sets only"
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.guns, args.shots, args.hard, args.fadul_slides = "300", 2, 3, 6, 0
        args.compare = 10  # 60 comparisons: stage 3 dominates the quick run
    sizes = sorted(int(x) for x in args.sizes.split(","))
    nmax = sizes[-1]
    out_path = Path(
        args.out
        or ROOT / "benchmarks" / "results" / ("scale-quick.json" if args.quick else "scale.json")
    )
    res: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "rerank_k": args.rerank,
        "compare_k": args.compare,
        "seeds": {
            "queries": args.query_seed,
            "hard_non_mates": HARD_SEED,
            "distractors": DISTRACTOR_SEED,
        },
    }

    # queries and their mates (full simulation / real), cached prepared surfaces
    t = time.perf_counter()
    failures: list[str] = []
    instruments = INSTRUMENTS_3D[:1] if args.quick else INSTRUMENTS_3D
    items = fadul_items(args.fadul_slides, failures) + synth_items(
        args.guns, args.shots, instruments, failures, args.query_seed
    )
    hard = hard_items(args.hard, failures)
    res["query_prep_s"] = round(time.perf_counter() - t, 1)
    res["fadul_present"] = any(i.set == "fadul" for i in items)
    res["prepare_failures"] = failures
    guns = [i.gun for i in items]
    queries = [j for j, i in enumerate(items) if guns.count(i.gun) > 1]
    res["query_sets"] = {
        s: sum(1 for j in queries if items[j].set == s) for s in sorted({i.set for i in items})
    }
    print("queries:", res["query_sets"], "failures:", len(failures), file=sys.stderr)

    # distractors
    t = time.perf_counter()
    if args.quick:
        sc.build(nmax, DISTRACTOR_SEED, args.workers)
    D, S, _meta = sc.load(nmax, DISTRACTOR_SEED)
    spec = spectra(S)
    res["distractor_load_s"] = round(time.perf_counter() - t, 1)
    builds = sorted(sc.corpus_dir(DISTRACTOR_SEED).glob("BUILD-*.json"))
    res["distractor_builds"] = [json.loads(b.read_text()) for b in builds]

    Q = np.stack([i.desc for i in items])
    QS = np.stack([i.sig for i in items])
    qspec = spectra(QS)
    # exact scores over the whole pool (distractors and query-set casings)
    t = time.perf_counter()
    desc_d = Q @ D.T  # (items, nmax)
    desc_i = Q @ Q.T
    t_desc = (time.perf_counter() - t) / len(items)
    scr_d = np.empty((len(items), nmax))
    scr_i = np.empty((len(items), len(items)))
    t_scr = []
    for j in range(len(items)):
        t = time.perf_counter()
        scr_d[j] = screen_all(QS[j], spec)
        t_scr.append(time.perf_counter() - t)
        scr_i[j] = screen_all(QS[j], qspec)
    # the vectorised screen is the real one
    from ballistics.screen import screen

    chk = screen(QS[0], np.asarray(S[:200], np.float32))[0]
    res["screen_all_max_abs_diff_vs_screen"] = float(np.abs(chk - scr_d[0, :200]).max())
    assert res["screen_all_max_abs_diff_vs_screen"] < 1e-4

    if args.tune:
        if res["fadul_present"]:
            raise SystemExit("--tune runs on the synthetic sets only: add --fadul-slides 0")
        res["tune"] = tune_grid(sizes, items, queries, (desc_d, desc_i, scr_d, scr_i))
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(res, indent=1))
        for r in res["tune"]["by"]:
            print(json.dumps(r))
        return 0

    # stages 1-2 per N and per policy, through the real index and stage-2 function

    policies = [
        Policy("old", args.rerank, None, args.compare),
        Policy("new", None, FUSION_WEIGHT, args.compare),
    ]
    res["policies"] = {p.name: p.describe() for p in policies}
    per_n: dict[int, dict[str, Any]] = {}
    jobs: list[tuple[str, str]] = []
    stage3_q = set(queries[:: args.stage3_every]) if args.stage3_every > 0 else set()

    def ref(pid: int, n: int) -> str:
        return f"d{DISTRACTOR_SEED}:{pid}" if pid < n else items[pid - n].key

    for n in sizes:
        per_n[n] = stage12(n, D, S, items, queries, policies)
        for pol in policies:
            for r in per_n[n][pol.name]["rows"]:
                if r["q"] in stage3_q:
                    jobs.extend((items[r["q"]].key, ref(c, n)) for c in r["kept"])

    t = time.perf_counter()
    cmp = run_compares(jobs, args.workers) if jobs else {}
    res["stage3_wall_s"] = round(time.perf_counter() - t, 1)
    res["stage3_queries"] = len(stage3_q)

    def summarise(rows: list[dict[str, Any]], n: int, sets: set[str]) -> dict[str, Any]:
        m1 = m2 = mates = nq = 0
        m10 = mates3 = top1 = nq3 = kept3 = 0
        cpu, n_cmp = [], []
        curve = dict.fromkeys(KEEP_CURVE, 0)
        for r in rows:
            j = r["q"]
            if items[j].set not in sets:
                continue
            nq += 1
            n_cmp.append(len(r["kept"]))
            ms = [n + m for m in r["mates"]]
            mates += len(ms)
            m1 += sum(m in r["cand"] for m in ms)
            m2 += sum(m in r["kept"] for m in ms)
            for c in KEEP_CURVE:
                curve[c] += sum(m in r["order"][:c] for m in ms)
            if j not in stage3_q:
                continue
            got = [cmp[(items[j].key, ref(c, n))] for c in r["kept"]]
            scored = [
                c for _, c in sorted(zip(got, r["kept"], strict=True), key=lambda x: -x[0]["score"])
            ]
            cpu.append(sum(g["cpu_s"] for g in got))
            nq3 += 1
            mates3 += len(ms)
            m10 += sum(m in scored[:10] for m in ms)
            kept3 += sum(m in r["kept"] for m in ms)
            top1 += bool(scored) and scored[0] >= n and items[scored[0] - n].gun == items[j].gun
        return {
            "queries": nq,
            "mate_pairs": mates,
            "stage1": round(m1 / max(1, mates), 4),
            "stage2": round(m2 / max(1, mates), 4),
            "stage2_given_stage1": round(m2 / max(1, m1), 4),
            "stage2_by_compare_k": {str(c): round(v / max(1, mates), 4) for c, v in curve.items()},
            "compared_per_query_median": statistics.median(n_cmp) if n_cmp else None,
            "stage3_queries": nq3,
            "stage3_mate_pairs": mates3,
            "top10": round(m10 / mates3, 4) if mates3 else None,
            "top10_of_compared_mates": f"{m10}/{kept3}",
            "top1_is_mate": round(top1 / nq3, 4) if nq3 else None,
            "stage3_cpu_s_per_query_median": round(statistics.median(cpu), 2) if cpu else None,
        }

    all_sets = {i.set for i in items}
    set_groups = {"all": all_sets, **{s: {s} for s in sorted(all_sets)}}
    res["sizes"] = {}
    for n in sizes:
        p = per_n[n]
        res["sizes"][str(n)] = {
            "faiss_factory": p["faiss_factory"],
            "faiss_build_s": p["faiss_build_s"],
            "policies": {
                pol.name: {
                    "rerank_k": p[pol.name]["rerank_k"],
                    "stage1_ms_median": round(statistics.median(p[pol.name]["stage1_ms"]), 3),
                    "stage2_ms_median": round(statistics.median(p[pol.name]["stage2_ms"]), 3),
                    "by_set": {
                        g: summarise(p[pol.name]["rows"], n, s) for g, s in set_groups.items()
                    },
                }
                for pol in policies
            },
        }
    cpu_pairs = [cmp[j]["cpu_s"] for j in set(jobs)]
    res["timing"] = {
        "descriptor_scores_whole_pool_ms_per_query": round(1e3 * t_desc, 3),
        "screen_whole_pool_ms_per_query_median": round(1e3 * statistics.median(t_scr), 1),
        "screen_whole_pool_pool_size": nmax,
        "compare_cpu_s_per_pair_median": round(statistics.median(cpu_pairs), 3)
        if cpu_pairs
        else None,
    }

    # rank percentiles over the whole pool, their fit and the projection
    def mate_pairs(sets: set[str]) -> list[tuple[int, int]]:
        return [
            (j, m)
            for j in queries
            if items[j].set in sets
            for m in range(len(items))
            if m != j and items[m].gun == items[j].gun
        ]

    # the new policy's stage-2 score over the whole pool: the fusion calibrated, per query, on
    # its stage-1 candidates at the largest N (as the search calibrates it)
    fus_d = np.full_like(scr_d, np.nan)
    fus_i = np.full_like(scr_i, np.nan)
    new_rows = {r["q"]: r for r in per_n[nmax]["new"]["rows"]}
    for j in queries:
        (ud, bd), (us, bs) = new_rows[j]["calibration"]
        fus_d[j] = (desc_d[j] - ud) / bd + FUSION_WEIGHT * (scr_d[j] - us) / bs
        fus_i[j] = (desc_i[j] - ud) / bd + FUSION_WEIGHT * (scr_i[j] - us) / bs

    proj: dict[str, Any] = {}
    fit_k = max(20, nmax // 100)
    ms = (10_000, 100_000, 1_000_000, 4_000_000)
    for g, sets in set_groups.items():
        pairs = mate_pairs(sets)
        out_g: dict[str, Any] = {"mate_pairs": len(pairs)}
        ps_by: dict[str, list[float]] = {}
        for name, dist, own in (
            ("descriptor", desc_d, desc_i),
            ("screen", scr_d, scr_i),
            ("fused", fus_d, fus_i),
        ):
            pct = [float((dist[j] > own[j, m]).sum()) / nmax for j, m in pairs]
            ps = [tail_p(dist[j], own[j, m], fit_k) for j, m in pairs]
            ps_by[name] = ps
            # the fit checked out of sample: fitted on the first tenth, predicts the measured N
            n_small = nmax // 10
            ps_small = [
                tail_p(dist[j, :n_small], own[j, m], max(20, n_small // 100)) for j, m in pairs
            ]
            keeps = (args.rerank,) if name == "descriptor" else (args.rerank, args.compare)
            out_g[name] = {
                "rank_pct": {q: round(_q(pct, q), 6) for q in (10, 25, 50, 75, 90)},
                "share_within": {
                    str(f): round(float(np.mean([x < f for x in pct])), 4) if pct else None
                    for f in (0.0002, 0.002, 0.01, 0.05)
                },
                "projected": {
                    f"keep{k}": {
                        f"fit_on_{n_small}_predicts_{nmax}": round(survival(ps_small, nmax, k), 4),
                        f"measured_{nmax}": round(float(np.mean([x * nmax < k for x in pct])), 4)
                        if pct
                        else None,
                        **{str(m): round(survival(ps, m, k), 4) for m in ms},
                    }
                    for k in keeps
                },
            }
        if pairs:
            out_g["to_comparison"] = to_comparison(
                pairs,
                ps_by["descriptor"],
                {"old": [(scr_d, scr_i)], "new": [(scr_d, scr_i), (fus_d, fus_i)]},
                desc_d,
                {p: res["sizes"][str(nmax)]["policies"][p]["by_set"][g] for p in ("old", "new")},
                args.rerank,
                args.compare,
                ms,
            )
        proj[g] = out_g
    res["rank_percentiles_and_projection"] = proj
    res["fit"] = {
        "tail_k": fit_k,
        "model": "per query: empirical share above the mate when >= 10 "
        "distractors beat it, else exponential tail on the top tail_k distractor scores; "
        "survival at M = mean over mates of P(Poisson(M p) <= keep - 1)",
    }

    # hardness check: full-simulation non-mates vs cheap distractors, same queries
    if hard:
        H = np.stack([h.desc for h in hard])
        HS = spectra(np.stack([h.sig for h in hard]))
        nh = min(nmax, 10_000)
        hc: dict[str, Any] = {"full_sim_non_mates": len(hard), "cheap_distractors": nh}
        for g, sets in set_groups.items():
            qs = [j for j in queries if items[j].set in sets]
            pairs = mate_pairs(sets)
            gout: dict[str, Any] = {}
            for name in ("descriptor", "screen"):
                if name == "descriptor":
                    full = {j: H @ Q[j] for j in qs}
                    cheap = {j: desc_d[j, :nh] for j in qs}
                    own = desc_i
                else:
                    full = {j: screen_all(QS[j], HS) for j in qs}
                    cheap = {j: scr_d[j, :nh] for j in qs}
                    own = scr_i
                # P(a full-simulation non-mate outscores a cheap distractor), per query averaged
                auc = [float(np.mean(np.searchsorted(np.sort(cheap[j]), full[j]) / nh)) for j in qs]
                pf = [float((full[j] > own[j, m]).mean()) for j, m in pairs]
                pc = [float((cheap[j] > own[j, m]).mean()) for j, m in pairs]
                gout[name] = {
                    "p_full_non_mate_above_cheap": round(float(np.mean(auc)), 4) if auc else None,
                    "mate_pct_among_full_sim_mean": round(float(np.mean(pf)), 4) if pf else None,
                    "mate_pct_among_cheap_mean": round(float(np.mean(pc)), 4) if pc else None,
                    "mate_pct_among_full_sim_median": round(_q(pf, 50), 4),
                    "mate_pct_among_cheap_median": round(_q(pc, 50), 4),
                    "full_sim_worth_cheap": round(
                        float(np.mean(pf)) / max(1e-9, float(np.mean(pc))), 2
                    )
                    if pf
                    else None,
                }
            hc[g] = gout
        res["hardness"] = hc

    # disk per casing
    sizes_d = [len(sc.prepared(DISTRACTOR_SEED, i).to_bytes()) for i in range(min(6, nmax))]
    res["disk_bytes_per_casing"] = {
        "descriptor": 144 * 4,
        "screen_signature": 32 * 128 * 4,
        "surface_npz_distractor_mean": int(np.mean(sizes_d)),
        "surface_npz_query_sets_mean": int(np.mean([i.surface_bytes for i in items])),
        "distractor_cache_per_casing": 144 * 4 + 32 * 128 * 4,
    }
    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(res, indent=1))
    brief = {
        n: {
            pol: {g: x["stage2"] for g, x in v["policies"][pol]["by_set"].items()}
            for pol in v["policies"]
        }
        for n, v in res["sizes"].items()
    }
    print(
        json.dumps(
            {
                "survival_to_comparison": brief,
                "projection_to_comparison": {g: proj[g].get("to_comparison") for g in proj},
                "hardness_all": res.get("hardness", {}).get("all"),
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
