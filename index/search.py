"""Two-stage search, as in IBIS: descriptor search per region, then registration re-ranking.

Stage 1: for each region the query has a descriptor for, the vector index returns the top
``rerank_k`` casings *inside the filter* (calibre, firing-pin shape, dates, agencies).
``rerank_k`` grows with the number of casings searched (:class:`RerankPolicy`: 2 % of them,
at least 200, at most 4000) because a mate's descriptor rank grows with the store: a fixed 200
is nearly the whole of a small store and 0.2 % of a 100 k one (``benchmarks/RESULTS-scale.md``).
An explicit ``rerank_k`` is used as given.
Stage 2 (optional, :class:`Screen`): the union of those candidates is screened with a cheap
rotation-aligned comparison of stored signatures (``ballistics.screen``: ~20 us per candidate
vectorised, and no surface to load); ``keep`` go on, taken alternately from the screen's order
and from the order of the *fusion* of descriptor and screen scores (:func:`fused_scores`): the
screen's best always go on (it is the better discriminator at the top), and so does a mate the
screen ranks badly but the descriptor far above the crowd (the screen alone ranks some real
mates worse than the descriptor does). Candidates without a stored signature always go on, so
a missing signature can cost time but never a match.
Rescue (optional, :class:`Rescue`, off by default): the candidates stage 2 set aside at
positions ``keep`` .. ``head`` - 1 of its order are scored by the engine's
``coarse_similarity`` (the comparison's coarse full-rotation sweep, ~20 ms a pair) and its best
``k`` go on to stage 3 too. Among 100k distractors, with ``keep`` 20, ``head`` 150 and ``k``
2, it raised the share of mate pairs compared from 0.913 to 0.952 on Fadul and from 0.944 to
0.967 on held-out synthetic seed 401 (benchmarks/RESULTS-scale.md). It costs ``head - keep``
sweeps (~2.7 s of CPU at head 150), so it is for a thorough search, not the default.
Stage 3: the survivors are re-scored with the registration comparison
(``score_fn(query_prepared, candidate_prepared)``; default ``ballistics.compare.compare``),
best first, on a thread pool. Candidates screened out keep their coarse and screen scores with
``score=None`` / ``rescored=False`` and rank after every re-scored one.

Why threads and not processes: the comparison's cost is FFTs / cross-correlations in numpy,
scipy and OpenCV, which release the GIL, so threads use every core; the query and candidate
surfaces (MBs each) need no pickling; the pool can share the store's per-thread SQLite
connections; and the gRPC server that calls this is multi-threaded, where fork()-based process
pools are unsafe. A pure-Python ``score_fn`` would serialise on the GIL - that is the trade.

Each stage is a function (:func:`allowed_ids`, :func:`coarse_candidates`, :func:`live_candidates`,
:func:`screen_candidates`, :func:`compare_candidates` with :func:`compare_one`,
:func:`rank_candidates`); :meth:`Searcher.search` chains them, and the benchmarks call them one
by one to time each.

Deadline: ``deadline_s`` bounds the wall time. Candidates not re-scored by then keep their
coarse score with ``score=None`` / ``rescored=False`` and the result is ``partial=True``
(comparisons already running finish in the background; their results are discarded).
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np

from .store import Filters, Store
from .vectors import VectorIndex

#: The descriptor key under which an engine returns, and the store keeps, the screening
#: signature. It is versioned and re-extracted with the descriptors but never indexed.
SCREEN_KEY = "screen:breech_face"

ScoreFn = Callable[[Any, Any], Any]
LoadFn = Callable[[bytes], Any]
NmfFn = Callable[[float, str], "float | None"]


def indexed(descriptors: Mapping[str, Any]) -> dict[str, Any]:
    """The descriptors that belong in a vector index (every one but the screening signature)."""
    return {r: v for r, v in descriptors.items() if r != SCREEN_KEY}


#: Stage-1 size when ``rerank_k`` is not given: this share of the casings searched ...
RERANK_FRACTION = 0.02
#: ... at least this many (what a fixed ``rerank_k`` was before; nearly all of a small store) ...
RERANK_FLOOR = 200
#: ... at most this many: loading and screening 4000 signatures costs ~0.1-0.3 s.
RERANK_CAP = 4000
#: Weight of the screen's calibrated score against the descriptor's in the stage-2 ranking
#: (:func:`fused_scores`), and the quantile of the candidates' screen scores its scale is
#: measured above: chosen on the synthetic query sets of ``benchmarks/scale.py --tune``
#: (seed 301; Fadul held out), see RESULTS-scale.md.
FUSION_WEIGHT = 0.5
SCREEN_TAIL_QUANTILE = 0.5


@dataclass(frozen=True)
class RerankPolicy:
    """Stage 1's ``rerank_k`` from the number of casings searched: ``fraction`` of them, at
    least ``floor``, at most ``cap`` (at least ``top`` in any case, see :meth:`Searcher.search`)."""

    fraction: float = RERANK_FRACTION
    floor: int = RERANK_FLOOR
    cap: int = RERANK_CAP

    def __post_init__(self) -> None:
        if not (0.0 <= self.fraction <= 1.0) or self.floor <= 0 or self.cap < self.floor:
            raise ValueError(
                f"rerank policy needs 0 <= fraction <= 1 and 0 < floor <= cap; got "
                f"fraction={self.fraction}, floor={self.floor}, cap={self.cap}"
            )

    def k(self, n_rows: int) -> int:
        """``rerank_k`` for a search over ``n_rows`` casings."""
        return int(min(self.cap, max(self.floor, math.ceil(self.fraction * max(0, n_rows)))))


def tail_calibration(x: np.ndarray, quantile: float) -> tuple[float, float]:
    """(u, beta) of scores ``x`` (N,): u their ``quantile``, beta the mean excess above u (an
    exponential tail's scale: above u, ``-log P(a non-mate scores above s)`` grows as
    (s - u) / beta)."""
    u = float(np.quantile(x, quantile))
    excess = x[x > u] - u
    beta = float(excess.mean()) if excess.size else 0.0
    if not beta > 0:
        beta = float(np.std(x)) or 1.0  # all equal: no evidence either way
    return u, beta


def fused_scores(
    coarse: np.ndarray,
    screened: np.ndarray,
    weight: float = FUSION_WEIGHT,
    screen_quantile: float = SCREEN_TAIL_QUANTILE,
) -> np.ndarray:
    """Stage 2's ranking score of candidates from both their scores.

    Each score is put in units of its own upper tail among the candidates
    (:func:`tail_calibration`:
    the descriptor's above the weakest candidate's, since the candidates *are* its top; the
    screen's above its ``screen_quantile``), and the two are added, ``weight`` on the screen.
    With exponential tails that is the sum of ``-log P(a non-mate scores above)`` of the two
    (Fisher's combination), so a mate far out on either score ranks high even when the other
    score is ordinary. Calibrated per query on its own candidates: no global constants, and a
    query whose scores are all high (e.g. an unusual canvas) is not favoured.

    Parameters
    ----------
    coarse, screened : ndarray of shape (N,)
        Descriptor (stage 1) and screen scores of the same N candidates.

    Returns
    -------
    ndarray of shape (N,), float64: higher is better.
    """
    c = np.asarray(coarse, np.float64)
    s = np.asarray(screened, np.float64)
    if c.shape != s.shape:
        raise ValueError(f"coarse {c.shape} and screen {s.shape} scores must match")
    if c.size < 2:
        return s.copy()
    (ud, bd), (us, bs) = tail_calibration(c, 0.0), tail_calibration(s, screen_quantile)
    return (c - ud) / bd + weight * (s - us) / bs


@dataclass
class Screen:
    """The screening stage: ``score_fn(query_signature, signatures (N, D)) -> scores (N,)``,
    ``load_fn(rowids) -> {rowid: signature}`` (missing ids: no stored signature), how many
    candidates to keep for the full comparison, and how they are ranked: by
    :func:`fused_scores` with the descriptor scores when those are given to
    :func:`screen_candidates` (``fusion_weight``; None: by the screen score alone)."""

    score_fn: Callable[[np.ndarray, np.ndarray], np.ndarray]
    load_fn: Callable[[list[int]], Mapping[int, np.ndarray]]
    keep: int
    fusion_weight: float | None = FUSION_WEIGHT


@dataclass
class Rescue:
    """The rescue stage (module doc): ``score_fn(query_prepared, candidate_prepared)`` (the
    engine's ``coarse_similarity``) over stage 2's order at positions ``keep`` .. ``head`` - 1;
    the best ``k`` are compared too. ``head`` <= ``keep``: no rescue."""

    score_fn: Callable[[Any, Any], float]
    head: int
    k: int = 2

    def __post_init__(self) -> None:
        if self.head < 0 or self.k < 0:
            raise ValueError(f"rescue head and k must be >= 0; got {self.head}, {self.k}")


@dataclass
class Query:
    """A resolved query: descriptors per region, the prepared surface, and (for a stored
    casing) its row id so it is excluded from its own results."""

    descriptors: dict[str, np.ndarray]
    prepared: Any
    rowid: int | None = None
    casing_id: str | None = None
    sha256: str | None = None
    """SHA-256 of the query's file (stored or uploaded): candidates with the same file are
    reported apart (:attr:`SearchResult.identical`), never ranked as matches."""


@dataclass
class Candidate:
    casing_id: str
    region: str
    rank: int
    coarse_score: float
    score: float | None
    cmc: float | None
    non_match_frequency: float | None
    incident: str | None
    agency: str | None
    caliber: str | None = None
    rescored: bool = True
    screen_score: float | None = None
    identical_file: bool = False
    """The candidate's stored file is byte-identical to the query's (same SHA-256)."""
    quality: dict[str, Any] | None = None
    """The candidate scan's quality record (``ballistics.quality``); None when not stored."""
    low_confidence: bool = False
    """The query's or the candidate's scan is of low quality, or the comparison carries flags:
    a low score then says little about the gun."""
    low_confidence_reasons: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    """The comparison's flags (e.g. ``"directions_disagree"``)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResult:
    query_casing_id: str | None
    combined: list[Candidate]
    regions: dict[str, list[Candidate]]
    partial: bool = False
    n_candidates: int = 0
    n_screened_out: int = 0
    n_rescored: int = 0
    n_errors: int = 0
    elapsed_s: float = 0.0
    plans: dict[str, str] = field(default_factory=dict)
    identical: list[Candidate] = field(default_factory=list)
    """Visible casings whose file is byte-identical to the query's (the same scan stored again,
    e.g. by another agency): not compared, not ranked (``rank`` 0), listed here instead."""
    query_quality: dict[str, Any] | None = None
    rerank_k: int = 0
    """Stage 1's candidates per region in this search (given, or from the rerank policy)."""
    stage_s: dict[str, float] = field(default_factory=dict)
    """Wall seconds per stage: ``candidates`` (filter, vector search, records), ``screen``
    (signatures loaded and scored), ``rescue`` (when asked for), ``compare`` (the full
    comparisons, on the pool) and ``rank``."""
    n_rescued: int = 0
    """Candidates the rescue stage added to the full comparison (0 without a rescue)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "query_casing_id": self.query_casing_id,
            "rerank_k": self.rerank_k,
            "query_quality": self.query_quality,
            "partial": self.partial,
            "n_candidates": self.n_candidates,
            "n_screened_out": self.n_screened_out,
            "n_rescored": self.n_rescored,
            "n_rescued": self.n_rescued,
            "n_errors": self.n_errors,
            "elapsed_s": self.elapsed_s,
            "stage_s": dict(self.stage_s),
            "plans": dict(self.plans),
            "combined": [c.as_dict() for c in self.combined],
            "regions": {r: [c.as_dict() for c in cs] for r, cs in self.regions.items()},
            "identical": [c.as_dict() for c in self.identical],
        }


def _low_confidence(
    query: Any, candidate: Mapping[str, Any] | None, flags: list[str]
) -> tuple[bool, list[str]]:
    """(low_confidence, reasons) from the two scans' quality records and the flags."""
    from ballistics.quality import combine

    q = query if isinstance(query, Mapping) else None
    return combine({"query": q, "candidate": candidate}, flags)


def _no_nmf(score: float, region: str) -> float | None:
    return None


@dataclass
class Coarse:
    """Stage 1's candidates: per region the (row id, coarse score) hits, best first; each
    candidate's best score over the regions; the candidates by that score, best first; and the
    index's plan per region (``FaissIndex.plan``)."""

    hits: dict[str, list[tuple[int, float]]]
    best: dict[int, float]
    order: list[int]
    plans: dict[str, str] = field(default_factory=dict)


@dataclass
class Live:
    """Stage 1's candidates that are stored and live (``order``, best first), their records,
    and those holding the query's very file (``same_file``: reported apart, not compared)."""

    order: list[int]
    records: dict[int, Any]
    same_file: list[int]
    hits: dict[str, list[tuple[int, float]]]


@dataclass
class Compared:
    """Stage 3's results: comparisons by row id, how many failed, and whether the deadline
    cut some off."""

    results: dict[int, Any]
    n_errors: int = 0
    partial: bool = False


def allowed_ids(
    store: Store, filters: Filters | None, query_rowid: int | None
) -> np.ndarray | None:
    """The row ids the filter allows, without the query's own (None: no filter)."""
    allowed: np.ndarray | None = None
    if filters is not None and not filters.is_empty():
        allowed = store.filter_ids(filters)
    if allowed is not None and query_rowid is not None:
        allowed = allowed[allowed != query_rowid]
    return allowed


def coarse_candidates(
    indexes: Mapping[str, VectorIndex],
    query: Query,
    allowed: np.ndarray | None,
    rerank_k: int,
) -> Coarse:
    """Stage 1: the top ``rerank_k`` of each region's vector index inside ``allowed``."""
    hits: dict[str, list[tuple[int, float]]] = {}
    plans: dict[str, str] = {}
    for region, vec in indexed(query.descriptors).items():
        idx = indexes.get(region)
        if idx is None or idx.count() == 0:
            continue
        extra = 1 if (allowed is None and query.rowid is not None) else 0
        scores, ids = idx.search(vec, rerank_k + extra, allowed)
        plan = getattr(idx, "plan", None)
        if callable(plan):
            plans[region] = str(plan(None if allowed is None else len(allowed)))
        found = [
            (int(i), float(s))
            for i, s in zip(ids[0], scores[0], strict=True)
            if i >= 0 and int(i) != query.rowid
        ]
        hits[region] = found[:rerank_k]
    best: dict[int, float] = {}
    for found in hits.values():
        for i, s in found:
            best[i] = max(best.get(i, -np.inf), s)
    order = sorted(best, key=lambda i: -best[i])
    return Coarse(hits, best, order, plans)


def live_candidates(store: Store, coarse: Coarse, query_sha256: str | None) -> Live:
    """Stage 1's candidates that are stored and not deleted. The query's own file stored again
    (same SHA-256) is no match to rank: it would top every list with a perfect score, so it is
    set apart (``same_file``) and not compared."""
    records = store.get_many(coarse.order)
    order = [i for i in coarse.order if i in records and not records[i].deleted]
    same_file = [i for i in order if query_sha256 and records[i].sha256 == query_sha256]
    hits = coarse.hits
    if same_file:
        skip = set(same_file)
        order = [i for i in order if i not in skip]
        hits = {r: [h for h in found if h[0] not in skip] for r, found in hits.items()}
    return Live(order, records, same_file, hits)


def screen_candidates(
    screen: Screen | None,
    query: Query,
    order: list[int],
    coarse_scores: Mapping[int, float] | None = None,
) -> tuple[dict[int, float], list[int]]:
    """Stage 2: (screen score by row id, the candidates kept for the comparison). When
    ``coarse_scores`` (stage 1's, by row id) are given and ``screen.fusion_weight`` is set, the
    kept are taken alternately from the screen's order and from the :func:`fused_scores` order
    (so the screen's top ``keep / 2`` always go on, and so do the fused score's); else by the
    screen score alone. Best first, so a deadline cuts the least promising. A candidate
    without a stored signature goes first (it costs time, never a match). No screen: every
    candidate is kept."""
    query_sig = query.descriptors.get(SCREEN_KEY)
    if screen is None or query_sig is None or not order:
        return {}, order
    sigs = screen.load_fn(order)
    have = [i for i in order if i in sigs]
    screened: dict[int, float] = {}
    rank_by: dict[int, float] = {}
    if have:
        values = np.asarray(screen.score_fn(query_sig, np.stack([sigs[i] for i in have])))
        screened = {i: float(v) for i, v in zip(have, values, strict=True)}
        rank_by = screened
        if screen.fusion_weight is not None and coarse_scores is not None:
            fused = fused_scores(
                np.array([coarse_scores[i] for i in have]), values, screen.fusion_weight
            )
            rank_by = {i: float(v) for i, v in zip(have, fused, strict=True)}
    kept = sorted(order, key=lambda i: -rank_by.get(i, np.inf))
    if rank_by is not screened:
        # alternate the fused order with the screen's own, so the screen's best (the better
        # discriminator at the very top) are never pushed out by casings only the descriptor
        # likes, e.g. non-mates scanned with the same instrument and crop
        by_screen = sorted(order, key=lambda i: -screened.get(i, np.inf))
        kept = interleave(by_screen, kept)
    return screened, kept[: screen.keep]


def interleave(a: list[int], b: list[int]) -> list[int]:
    """a[0], b[0], a[1], b[1], ... without repeats; the longer list's tail follows."""
    seen: set[int] = set()
    out: list[int] = []
    for pair in itertools.zip_longest(a, b):
        for i in pair:
            if i is not None and i not in seen:
                seen.add(i)
                out.append(i)
    return out


def rescue_candidates(
    pool: cf.Executor,
    rowids: list[int],
    score: Callable[[int], float],
    k: int,
    timeout_s: float | None,
) -> list[int]:
    """The rescue stage: ``score(rowid)`` for every candidate on ``pool`` (until
    ``timeout_s``; failures and unfinished ones are left out), the best ``k`` (best first)."""
    if k <= 0 or not rowids:
        return []
    futures = {pool.submit(score, i): i for i in rowids}
    done, not_done = cf.wait(futures, timeout=timeout_s)
    for f in not_done:
        f.cancel()
    got = {
        futures[f]: float(f.result()) for f in done if not f.cancelled() and f.exception() is None
    }
    return sorted(got, key=lambda i: -got[i])[:k]


def load_candidate(store: Store, rowid: int, load_fn: LoadFn) -> Any:
    """A candidate's prepared surface, loaded from the store."""
    surface = store.load_surface(rowid)
    if surface is None:
        raise LookupError(f"no stored surface for casing {rowid}")
    return load_fn(surface)


def _rescue_one(
    store: Store, query: Query, score_fn: Callable[[Any, Any], float], load_fn: LoadFn, rowid: int
) -> float:
    return float(score_fn(query.prepared, load_candidate(store, rowid, load_fn)))


def compare_one(store: Store, query: Query, rowid: int, score_fn: ScoreFn, load_fn: LoadFn) -> Any:
    """Stage 3 for one candidate: its stored surface, loaded and compared with the query's."""
    return score_fn(query.prepared, load_candidate(store, rowid, load_fn))


def compare_candidates(
    pool: cf.Executor,
    rowids: list[int],
    compare: Callable[[int], Any],
    timeout_s: float | None,
) -> Compared:
    """Stage 3: ``compare(rowid)`` for every candidate on ``pool``, until ``timeout_s``.
    Comparisons not done by then are cancelled (``partial``); failures are counted."""
    futures = {pool.submit(compare, i): i for i in rowids}
    done, not_done = cf.wait(futures, timeout=timeout_s)
    for f in not_done:
        f.cancel()
    out = Compared({}, partial=bool(not_done))
    for f in done:
        if f.cancelled():
            continue
        err = f.exception()
        if err is None:
            out.results[futures[f]] = f.result()
        else:
            out.n_errors += 1
    return out


@dataclass
class _Evidence:
    """What a candidate's entry is made of (the stages' outputs for one search)."""

    records: dict[int, Any]
    results: dict[int, Any]
    screened: dict[int, float]
    qualities: Mapping[int, dict[str, Any]]
    query_quality: Any
    nmf: NmfFn

    def entry(self, rowid: int, region: str, coarse_score: float) -> Candidate:
        rec = self.records[rowid]
        comp = self.results.get(rowid)
        quality = self.qualities.get(rowid)
        flags = [str(f) for f in (getattr(comp, "flags", None) or ())]
        low, reasons = _low_confidence(self.query_quality, quality, flags)
        score = cmc = nmf_v = None
        if comp is not None:
            regs = getattr(comp, "regions", None) or {}
            raw = regs.get(region, comp.score) if region != "combined" else comp.score
            score = None if raw is None else float(raw)
            c = getattr(comp, "cmc", None)
            cmc = None if c is None else float(c)
            nmf_v = None if score is None else self.nmf(score, region)
        return Candidate(
            casing_id=rec.casing_id,
            region=region,
            rank=0,
            coarse_score=float(coarse_score),
            score=score,
            cmc=cmc,
            non_match_frequency=nmf_v,
            incident=rec.incident,
            agency=rec.agency,
            caliber=rec.caliber,
            rescored=comp is not None,
            screen_score=self.screened.get(rowid),
            quality=quality,
            low_confidence=low,
            low_confidence_reasons=reasons,
            flags=flags,
        )


def _ranked(entries: list[Candidate], top: int) -> list[Candidate]:
    """Compared first by score, then by screen score, then by coarse score; ranks 1..top."""
    entries.sort(
        key=lambda c: (
            c.score is None,
            -(c.score if c.score is not None else 0.0),
            -(c.screen_score if c.screen_score is not None else -np.inf),
            -c.coarse_score,
        )
    )
    out = entries[:top]
    for r, c in enumerate(out, 1):
        c.rank = r
    return out


def rank_candidates(
    store: Store,
    query: Query,
    coarse: Coarse,
    live: Live,
    screened: dict[int, float],
    compared: Compared,
    *,
    top: int,
    nmf_fn: NmfFn | None = None,
) -> tuple[dict[str, list[Candidate]], list[Candidate], list[Candidate]]:
    """The ranked lists: (per region, combined, identical files), each candidate with its
    scores, quality and low-confidence reasons."""
    ev = _Evidence(
        records=live.records,
        results=compared.results,
        screened=screened,
        qualities=store.qualities_of(live.order),
        query_quality=getattr(query.prepared, "quality", None),
        nmf=nmf_fn or _no_nmf,
    )
    per_region = {
        region: _ranked([ev.entry(i, region, s) for i, s in hits if i in live.records], top)
        for region, hits in live.hits.items()
    }
    combined = _ranked([ev.entry(i, "combined", coarse.best[i]) for i in live.order], top)
    identical = [ev.entry(i, "combined", coarse.best[i]) for i in live.same_file]
    for c in identical:
        c.identical_file = True
    return per_region, combined, identical


class Searcher:
    """Holds the re-ranking thread pool (reused across searches; thread-safe)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, int(workers or os.cpu_count() or 1))
        self._pool = cf.ThreadPoolExecutor(self.workers, thread_name_prefix="rerank")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def search(
        self,
        store: Store,
        indexes: Mapping[str, VectorIndex],
        query: Query,
        *,
        top: int = 10,
        rerank_k: int | None = None,
        filters: Filters | None = None,
        deadline_s: float | None = None,
        score_fn: ScoreFn,
        load_fn: LoadFn,
        nmf_fn: NmfFn | None = None,
        screen: Screen | None = None,
        rerank_policy: RerankPolicy | None = None,
        rescue: Rescue | None = None,
    ) -> SearchResult:
        """The stages in order (see the module doc). ``rerank_k``: stage 1's candidates per
        region; None: ``rerank_policy`` (default :class:`RerankPolicy`) of the number of
        casings searched (those the filter allows, else the largest index). ``rescue``: the
        rescue stage (needs ``screen``; None: none)."""
        t0 = time.monotonic()
        if top <= 0 or (rerank_k is not None and rerank_k <= 0):
            raise ValueError("top and rerank_k must be positive")
        allowed = allowed_ids(store, filters, query.rowid)
        if rerank_k is None:
            n_rows = (
                len(allowed)
                if allowed is not None
                else max((idx.count() for idx in indexes.values()), default=0)
            )
            rerank_k = (rerank_policy or RerankPolicy()).k(n_rows)
        rerank_k = max(rerank_k, top)
        coarse = coarse_candidates(indexes, query, allowed, rerank_k)
        live = live_candidates(store, coarse, query.sha256)
        t1 = time.monotonic()
        wide = screen
        if rescue is not None and screen is not None and rescue.head > screen.keep:
            wide = replace(screen, keep=rescue.head)  # stage 2's order up to the rescue's reach
        screened, to_compare = screen_candidates(wide, query, live.order, coarse.best)
        t2 = time.monotonic()
        rescued: list[int] = []
        rescuing = wide is not screen
        if rescuing and screen is not None and rescue is not None:
            aside = to_compare[screen.keep :]
            to_compare = to_compare[: screen.keep]
            timeout = None if deadline_s is None else max(0.0, deadline_s - (t2 - t0))
            rescued = rescue_candidates(
                self._pool,
                aside,
                partial(_rescue_one, store, query, rescue.score_fn, load_fn),
                rescue.k,
                timeout,
            )
            to_compare = to_compare + rescued
        t2r = time.monotonic()
        timeout = None if deadline_s is None else max(0.0, deadline_s - (t2r - t0))
        compared = compare_candidates(
            self._pool,
            to_compare,
            partial(compare_one, store, query, score_fn=score_fn, load_fn=load_fn),
            timeout,
        )
        t3 = time.monotonic()
        per_region, combined, identical = rank_candidates(
            store, query, coarse, live, screened, compared, top=top, nmf_fn=nmf_fn
        )
        t4 = time.monotonic()
        stage_s = {"candidates": t1 - t0, "screen": t2 - t1, "compare": t3 - t2r, "rank": t4 - t3}
        if rescuing:
            stage_s["rescue"] = t2r - t2
        query_quality = getattr(query.prepared, "quality", None)
        return SearchResult(
            query_casing_id=query.casing_id,
            combined=combined,
            regions=per_region,
            partial=compared.partial,
            n_candidates=len(live.order),
            n_screened_out=len(live.order) - len(to_compare),
            n_rescored=len(compared.results),
            n_errors=compared.n_errors,
            elapsed_s=time.monotonic() - t0,
            stage_s=stage_s,
            plans=coarse.plans,
            identical=identical,
            query_quality=query_quality if isinstance(query_quality, dict) else None,
            rerank_k=rerank_k,
            n_rescued=len(rescued),
        )
