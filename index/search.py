"""Two-stage search, as in IBIS: descriptor search per region, then registration re-ranking.

Stage 1: for each region the query has a descriptor for, the vector index returns the top
``rerank_k`` casings *inside the filter* (calibre, firing-pin shape, dates, agencies).
Stage 2 (optional, :class:`Screen`): the union of those candidates is screened with a cheap
rotation-aligned comparison of stored signatures (``ballistics.screen``: microseconds per
candidate, and no surface to load); the best ``keep`` go on. Candidates without a stored
signature always go on, so a missing signature can cost time but never a match.
Stage 3: the survivors are re-scored with the registration comparison
(``score_fn(query_prepared, candidate_prepared)``; default ``ballistics.compare.compare``),
best first, on a thread pool. Candidates screened out keep their coarse and screen scores with
``score=None`` / ``rescored=False`` and rank after every re-scored one.

Why threads and not processes: the comparison's cost is FFTs / cross-correlations in numpy,
scipy and OpenCV, which release the GIL, so threads use every core; the query and candidate
surfaces (MBs each) need no pickling; the pool can share the store's per-thread SQLite
connections; and the gRPC server that calls this is multi-threaded, where fork()-based process
pools are unsafe. A pure-Python ``score_fn`` would serialise on the GIL - that is the trade.

Deadline: ``deadline_s`` bounds the wall time. Candidates not re-scored by then keep their
coarse score with ``score=None`` / ``rescored=False`` and the result is ``partial=True``
(comparisons already running finish in the background; their results are discarded).
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
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


@dataclass
class Screen:
    """The screening stage: ``score_fn(query_signature, signatures (N, D)) -> scores (N,)``,
    ``load_fn(rowids) -> {rowid: signature}`` (missing ids: no stored signature) and how
    many candidates to keep for the full comparison."""

    score_fn: Callable[[np.ndarray, np.ndarray], np.ndarray]
    load_fn: Callable[[list[int]], Mapping[int, np.ndarray]]
    keep: int


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "query_casing_id": self.query_casing_id,
            "query_quality": self.query_quality,
            "partial": self.partial,
            "n_candidates": self.n_candidates,
            "n_screened_out": self.n_screened_out,
            "n_rescored": self.n_rescored,
            "n_errors": self.n_errors,
            "elapsed_s": self.elapsed_s,
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
        rerank_k: int = 200,
        filters: Filters | None = None,
        deadline_s: float | None = None,
        score_fn: ScoreFn,
        load_fn: LoadFn,
        nmf_fn: NmfFn | None = None,
        screen: Screen | None = None,
    ) -> SearchResult:
        t0 = time.monotonic()
        if top <= 0 or rerank_k <= 0:
            raise ValueError("top and rerank_k must be positive")
        rerank_k = max(rerank_k, top)
        nmf = nmf_fn or _no_nmf
        allowed: np.ndarray | None = None
        if filters is not None and not filters.is_empty():
            allowed = store.filter_ids(filters)
        if allowed is not None and query.rowid is not None:
            allowed = allowed[allowed != query.rowid]

        # -- stage 1: coarse search per region ----------------------------------------------
        coarse: dict[str, list[tuple[int, float]]] = {}
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
            hits = [
                (int(i), float(s))
                for i, s in zip(ids[0], scores[0], strict=True)
                if i >= 0 and int(i) != query.rowid
            ]
            coarse[region] = hits[:rerank_k]
        best: dict[int, float] = {}
        for hits in coarse.values():
            for i, s in hits:
                best[i] = max(best.get(i, -np.inf), s)
        order = sorted(best, key=lambda i: -best[i])
        records = store.get_many(order)
        order = [i for i in order if i in records and not records[i].deleted]
        # The query's own file stored again (same SHA-256) is no match to rank: it would top
        # every list with a perfect score. It is reported apart and not compared.
        same_file = [i for i in order if query.sha256 and records[i].sha256 == query.sha256]
        if same_file:
            skip = set(same_file)
            order = [i for i in order if i not in skip]
            coarse = {r: [h for h in hits if h[0] not in skip] for r, hits in coarse.items()}
        qualities = store.qualities_of(order)
        query_quality = getattr(query.prepared, "quality", None)

        # -- stage 2: screen ---------------------------------------------------------------
        screened: dict[int, float] = {}
        to_compare = order
        query_sig = query.descriptors.get(SCREEN_KEY)
        if screen is not None and query_sig is not None and order:
            sigs = screen.load_fn(order)
            have = [i for i in order if i in sigs]
            if have:
                values = screen.score_fn(query_sig, np.stack([sigs[i] for i in have]))
                screened = {i: float(v) for i, v in zip(have, values, strict=True)}
            # Best screen score first, so a deadline cuts the least promising; a candidate
            # without a stored signature goes first (it costs time, never a match).
            to_compare = sorted(order, key=lambda i: -screened.get(i, np.inf))[: screen.keep]

        # -- stage 3: re-rank with the registration comparison ------------------------------
        def work(rowid: int) -> Any:
            surface = store.load_surface(rowid)
            if surface is None:
                raise LookupError(f"no stored surface for casing {rowid}")
            return score_fn(query.prepared, load_fn(surface))

        futures = {self._pool.submit(work, i): i for i in to_compare}
        timeout = None if deadline_s is None else max(0.0, deadline_s - (time.monotonic() - t0))
        done, not_done = cf.wait(futures, timeout=timeout)
        for f in not_done:
            f.cancel()
        results: dict[int, Any] = {}
        n_errors = 0
        for f in done:
            if f.cancelled():
                continue
            err = f.exception()
            if err is None:
                results[futures[f]] = f.result()
            else:
                n_errors += 1

        def entry(rowid: int, region: str, coarse_score: float) -> Candidate:
            rec = records[rowid]
            comp = results.get(rowid)
            quality = qualities.get(rowid)
            flags = [str(f) for f in (getattr(comp, "flags", None) or ())]
            low, reasons = _low_confidence(query_quality, quality, flags)
            score = cmc = nmf_v = None
            if comp is not None:
                regs = getattr(comp, "regions", None) or {}
                raw = regs.get(region, comp.score) if region != "combined" else comp.score
                score = None if raw is None else float(raw)
                c = getattr(comp, "cmc", None)
                cmc = None if c is None else float(c)
                nmf_v = None if score is None else nmf(score, region)
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
                screen_score=screened.get(rowid),
                quality=quality,
                low_confidence=low,
                low_confidence_reasons=reasons,
                flags=flags,
            )

        def ranked(entries: list[Candidate]) -> list[Candidate]:
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

        per_region = {
            region: ranked([entry(i, region, s) for i, s in hits if i in records])
            for region, hits in coarse.items()
        }
        combined = ranked([entry(i, "combined", best[i]) for i in order])
        identical = [entry(i, "combined", best[i]) for i in same_file]
        for c in identical:
            c.identical_file = True
        return SearchResult(
            query_casing_id=query.casing_id,
            combined=combined,
            regions=per_region,
            partial=bool(not_done),
            n_candidates=len(order),
            n_screened_out=len(order) - len(to_compare),
            n_rescored=len(results),
            n_errors=n_errors,
            elapsed_s=time.monotonic() - t0,
            plans=plans,
            identical=identical,
            query_quality=query_quality if isinstance(query_quality, dict) else None,
        )
