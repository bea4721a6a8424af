"""Background correlation: every new casing against the stored ones, as IBIS correlation
servers do overnight, leaving a queue of **leads** for examiners.

Each stored casing gets a job in the store's ``correlation_jobs`` table, written in the same
transaction as the casing (``Store.add_casing``). A :class:`CorrelationWorker` (one thread in
``ballistics serve``; ``ballistics correlate`` drains the queue without a server) takes the
oldest pending job and, with the search's own stages (:mod:`index.search`):

1. **Partition.** Every live casing stored *before* the newcomer, of its calibre (or of no
   recorded calibre; a newcomer without a calibre: every calibre), whose agency shares a viewer
   with the newcomer's: some agency may see both (:func:`partition_agencies`). That holds the
   casings the submitting agency may see, and the stored casings whose owners may see the
   newcomer, so an older casing finds a newer one. Newer casings are left to their own jobs:
   each pair is compared once, by the newer casing's job.
2. **Screen** the whole partition (``screen_candidates``, in chunks of
   :attr:`CorrelationConfig.screen_chunk` signatures) and search it by descriptor
   (``coarse_candidates``); keep :attr:`CorrelationConfig.keep` of it (a
   ``compare_fraction``, at least ``compare_min``, at most ``compare_max``) taken alternately
   from the two orders (:attr:`CorrelationConfig.use_descriptor`).
   The next ``rescue_factor`` x that many of the list are scored by the engine's
   ``coarse_similarity`` and the best ``rescue_k`` of them are added (the rescue).
3. **Compare** those fully (``compare_candidates`` on a one-thread pool at low CPU priority,
   waiting between comparisons while an interactive search runs: ``Catalog.wait_idle``), and
   rank them with the search's own evidence (``rank_candidates``: score, CMC, non-match
   frequency, quality, low-confidence reasons, flags).
4. **Leads.** A compared pair is a lead when its non-match frequency is known and at most
   :attr:`CorrelationConfig.lead_max_nmf` (default 0.01: at most 1 in 100 known non-matches of
   that kind of scan scored as high), or, when no calibration is known, when its CMC count is
   at least :attr:`CorrelationConfig.lead_min_cmc` (6, NIST's C >= 6 criterion). Scans of low
   quality are not dropped: their leads carry ``low_confidence`` and the reasons.

The job's leads and its 'done' mark are written in one short transaction; everything before
it only reads. A worker killed mid-job leaves the job 'running'; the next worker to start
(:meth:`CorrelationWorker.recover`) puts it back to 'pending' and it is done again, and the
unique pair constraint keeps its leads single. A lead's state (new, reviewed, confirmed,
excluded) is the pair's latest examiner decision (``Decide``; ``Store.list_leads``), never a
second record. A change of sharing policy does not re-correlate stored casings.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .search import (
    SCREEN_KEY,
    Coarse,
    Screen,
    allowed_ids,
    coarse_candidates,
    compare_candidates,
    compare_one,
    interleave,
    live_candidates,
    load_candidate,
    rank_candidates,
    rescue_candidates,
    screen_candidates,
)
from .store import Filters

if TYPE_CHECKING:
    from .service import Catalog

log = logging.getLogger("ballistics.correlate")

#: Default :attr:`CorrelationConfig.rescue_factor`, set before it was measured. Among 100k
#: distractors (2,000 compared, positions 2,000-3,999 rescued, best 20 compared too) the
#: coarse sweep ranked first, of those 2,000, each of the 3 mates there (2 Fadul, 1
#: synthetic), which lifted Fadul's compared mate pairs from 0.984 to 1.000, at ~22 ms of CPU
#: a sweep: ~25 % more per job (benchmarks/RESULTS-scale.md).
RESCUE_FACTOR = 1.0


class Visibility(Protocol):
    """Who may see whose casings (``server.policy.SharingPolicy`` satisfies it)."""

    @property
    def agencies(self) -> Mapping[str, str]:
        """Agencies the policy names (agency -> jurisdiction)."""
        ...

    def allowed_agencies(self, requesting_agency: str) -> set[str]: ...


@dataclass
class CorrelationConfig:
    """What a correlation job screens, compares and calls a lead; every field has a default."""

    compare_fraction: float = 0.05
    """Fraction of the partition that gets the full comparison (chosen as ``use_descriptor``
    says). 5 %: on Fadul the screen keeps every known match within its best 10 % but two
    (RESULTS-screen.md); the store grows, so keep ``compare_max`` in mind."""
    use_descriptor: bool = True
    """Take the compared casings alternately from the screen's order and from the descriptor
    search's (exact over the partition), as a search's stage 2 alternates; False: by the
    screen alone (the rule before 2026-12-05). Among 100k distractors, 2,000 compared, the
    alternation kept 0.956 of the tuning set's mate pairs against 0.878 for the screen
    alone (benchmarks/RESULTS-scale.md)."""
    compare_min: int = 20
    """At least this many (or the whole partition when smaller), like a search's 20."""
    compare_max: int = 2000
    """At most this many comparisons per job (about 5 min on one core at 158 ms a pair)."""
    rescue_factor: float = RESCUE_FACTOR
    """The rescue (``index.search``'s rescue stage, in the background): beyond the
    :meth:`keep` compared, the next ``rescue_factor`` x keep casings of the list are scored by
    the engine's ``coarse_similarity`` (the comparison's coarse rotation sweep, ~20 ms each)
    and the best ``rescue_k`` are compared too. 0: none."""
    rescue_k: int = 20
    lead_max_nmf: float = 0.01
    """A compared pair is a lead when its non-match frequency is at most this."""
    lead_min_cmc: int = 6
    """... or, when no non-match frequency is known, when its CMC count is at least this."""
    screen_chunk: int = 20000
    """Signatures loaded and screened at a time (bounds memory on a large partition)."""
    max_attempts: int = 3
    """A job whose process died this many times while running it is marked 'failed'."""
    poll_s: float = 2.0
    """How often an idle worker looks for new jobs (it is also woken by each ingest)."""
    nice: int = 10
    """CPU niceness added to the worker's threads (Linux: per thread), so searches come first."""
    yield_s: float = 5.0
    """Longest wait, before each comparison, for interactive searches to finish."""

    def keep(self, n: int) -> int:
        """How many of ``n`` screened casings are compared."""
        want = max(math.ceil(self.compare_fraction * n), self.compare_min)
        return int(min(n, want, self.compare_max))

    def reach(self, n: int) -> int:
        """How far down the list of ``n`` the job looks: :meth:`keep` compared, and as many
        again times ``rescue_factor`` scored by the rescue (none when ``rescue_k`` is 0)."""
        keep = self.keep(n)
        if self.rescue_k <= 0 or self.rescue_factor <= 0:
            return keep
        return int(min(n, keep + math.ceil(self.rescue_factor * keep)))

    def is_lead(self, nmf: float | None, cmc: float | None) -> bool:
        """The lead rule (see the module doc)."""
        if nmf is not None:
            return float(nmf) <= self.lead_max_nmf
        return cmc is not None and float(cmc) >= self.lead_min_cmc


class JobInterrupted(Exception):
    """The worker was told to stop in the middle of a job (it goes back to the queue)."""


@dataclass
class JobOutcome:
    """What one job did."""

    casing: int
    n_partition: int = 0
    n_compared: int = 0
    n_rescued: int = 0
    """Of the compared, those the rescue added (:attr:`CorrelationConfig.rescue_factor`)."""
    n_errors: int = 0
    leads: list[dict[str, Any]] = field(default_factory=list)
    n_new_leads: int = 0
    elapsed_s: float = 0.0


def partition_agencies(
    agency: str, store_agencies: Iterable[str], policy: Visibility | None
) -> set[str] | None:
    """Agencies whose casings are paired with a newcomer of ``agency``: those some viewer may
    see together with the newcomer (None: no policy, every agency). The viewers are the
    store's agencies and the policy's (an agency with no casing of its own may still see two
    others')."""
    if policy is None:
        return None
    viewers = set(store_agencies) | set(policy.agencies) | {agency}
    out: set[str] = set()
    for z in viewers:
        seen = policy.allowed_agencies(z)
        if agency in seen:
            out |= seen
    return out


def _niced(increment: int) -> None:
    """Lower the calling thread's CPU priority (Linux: niceness is per thread)."""
    if increment > 0 and hasattr(os, "setpriority"):
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(
                os.PRIO_PROCESS,
                threading.get_native_id(),
                os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) + increment,
            )


def correlate(
    catalog: Catalog,
    rowid: int,
    *,
    policy: Visibility | None,
    config: CorrelationConfig,
    pool: cf.Executor,
    should_stop: Callable[[], bool] = lambda: False,
) -> JobOutcome:
    """One job: the newcomer ``rowid`` screened against its partition, the best compared, the
    leads returned (not stored: :meth:`CorrelationWorker.run_one` stores them with the job's
    'done' mark). Raises :class:`JobInterrupted` when ``should_stop()`` turns true before
    every comparison ran (the job is then not done)."""
    t0 = time.monotonic()
    store = catalog.store
    out = JobOutcome(rowid)
    rec = store.get_casing(rowid, include_deleted=True)
    if rec.deleted:
        return out
    agencies = partition_agencies(rec.agency, store.agencies(), policy)
    filters = Filters(
        caliber=rec.caliber,
        agencies=None if agencies is None else frozenset(agencies),
        unknown_caliber=True,
    )
    ids = allowed_ids(store, filters, rowid)
    if ids is None:
        ids = store.filter_ids(None)
    ids = ids[ids < rowid]  # newer casings pair with this one in their own jobs
    out.n_partition = int(ids.size)
    if ids.size == 0:
        out.elapsed_s = time.monotonic() - t0
        return out
    query = catalog.make_query(rec.casing_id)
    keep = config.keep(int(ids.size))
    coarse_fn = getattr(catalog.engine, "coarse_similarity", None)
    reach = config.reach(int(ids.size)) if coarse_fn is not None else keep
    desc: dict[int, float] = {}
    by_desc: list[int] = []
    if config.use_descriptor:
        found = coarse_candidates(catalog.indexes, query, ids, reach)
        desc, by_desc = found.best, found.order
    # one pass over the partition's signatures also keeps the descriptor's picks' scores
    screened, order = _screen(catalog, query, ids, reach, config.screen_chunk, also=set(by_desc))
    if by_desc:
        order = interleave(order, by_desc)[:reach]
    kept, aside = order[:keep], order[keep:]
    if aside and coarse_fn is not None:

        def rescore(i: int) -> float:
            catalog.wait_idle(config.yield_s)
            if should_stop():
                raise JobInterrupted(rowid)
            return float(coarse_fn(query.prepared, load_candidate(store, i, catalog.engine.load)))

        rescued = rescue_candidates(pool, aside, rescore, config.rescue_k, None)
        if should_stop():
            raise JobInterrupted(rowid)
        out.n_rescued = len(rescued)
        kept = kept + rescued
    best = {i: desc.get(i, screened.get(i, 0.0)) for i in kept}
    coarse = Coarse(hits={}, best=best, order=kept)
    live = live_candidates(store, coarse, query.sha256)  # the newcomer's very file: no lead

    def compare(i: int) -> Any:
        catalog.wait_idle(config.yield_s)
        if should_stop():
            raise JobInterrupted(rowid)
        return compare_one(store, query, i, catalog.engine.score, catalog.engine.load)

    compared = compare_candidates(pool, live.order, compare, None)
    if should_stop():
        raise JobInterrupted(rowid)
    out.n_compared = len(compared.results)
    out.n_errors = compared.n_errors
    nmf = partial(
        catalog.engine.non_match_frequency, kind=getattr(query.prepared, "kind", "topography")
    )
    _, ranked, _ = rank_candidates(
        store, query, coarse, live, screened, compared, top=len(live.order), nmf_fn=nmf
    )
    by_id = {live.records[i].casing_id: i for i in live.order}
    for c in ranked:
        if c.rescored and config.is_lead(c.non_match_frequency, c.cmc):
            out.leads.append(
                {
                    "a": rowid,
                    "b": by_id[c.casing_id],
                    "score": c.score,
                    "cmc": c.cmc,
                    "non_match_frequency": c.non_match_frequency,
                    "screen_score": c.screen_score,
                    "low_confidence": c.low_confidence,
                    "low_confidence_reasons": c.low_confidence_reasons,
                    "flags": c.flags,
                }
            )
    out.elapsed_s = time.monotonic() - t0
    return out


def _screen(
    catalog: Catalog,
    query: Any,
    ids: np.ndarray,
    keep: int,
    chunk: int,
    also: Collection[int] = (),
) -> tuple[dict[int, float], list[int]]:
    """The search's stage 2 over every id, a chunk at a time: (screen scores of the kept and
    of the ids in ``also``, the ``keep`` best, best first; casings without a signature
    first, as in a search)."""
    score_fn = catalog.engine.screen
    if score_fn is None or SCREEN_KEY not in query.descriptors:
        # no screen: nothing ranks them, so the newest ``keep`` are compared
        return {}, [int(i) for i in ids[::-1][:keep]]
    version = catalog.extractor_version
    screen = Screen(
        score_fn=score_fn,
        load_fn=lambda rows: catalog.store.vectors_of(rows, SCREEN_KEY, version),
        keep=keep,
    )
    scores: dict[int, float] = {}
    extra: dict[int, float] = {}
    kept: list[int] = []
    for s in range(0, int(ids.size), max(1, chunk)):
        part = [int(i) for i in ids[s : s + chunk]]
        got, best = screen_candidates(screen, query, part)
        extra.update({i: got[i] for i in also if i in got})
        merged = kept + best
        scores.update({i: got[i] for i in best if i in got})
        kept = sorted(merged, key=lambda i: -scores.get(i, np.inf))[:keep]
        scores = {i: scores[i] for i in kept if i in scores}
    return {**extra, **scores}, kept


class CorrelationWorker:
    """Takes correlation jobs one at a time (see the module doc). Use :meth:`drain` in the
    foreground, or :meth:`start` / :meth:`stop` for a background thread."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        policy: Visibility | None = None,
        config: CorrelationConfig | None = None,
        on_done: Callable[[JobOutcome], None] | None = None,
    ) -> None:
        self.catalog = catalog
        self.policy = policy
        self.config = config or CorrelationConfig()
        self.on_done = on_done
        self.name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = cf.ThreadPoolExecutor(
            1, thread_name_prefix="correlate", initializer=_niced, initargs=(self.config.nice,)
        )
        self._recovered = False

    def recover(self) -> int:
        """Put jobs a dead process left 'running' back to 'pending' (once per worker)."""
        self._recovered = True
        n = self.catalog.store.requeue_running_jobs()
        if n:
            log.warning("correlation: %d job(s) left running by a stopped process requeued", n)
        return n

    def run_one(self) -> JobOutcome | None:
        """Take the oldest pending job, run it, store its leads and mark it done; None when no
        job is pending. A job that raises goes back to pending (failed after
        ``max_attempts``)."""
        if not self._recovered:
            self.recover()
        store = self.catalog.store
        rowid = store.take_job(self.name, max_attempts=self.config.max_attempts)
        if rowid is None and store.shared and store.requeue_running_jobs():
            # a worker of another process died mid-job (PostgreSQL: its lock went with it)
            rowid = store.take_job(self.name, max_attempts=self.config.max_attempts)
        if rowid is None:
            return None
        try:
            out = correlate(
                self.catalog,
                rowid,
                policy=self.policy,
                config=self.config,
                pool=self._pool,
                should_stop=self._stop.is_set,
            )
        except JobInterrupted:
            store.release_job(rowid)  # not an attempt that failed: retaken at the next start
            return None
        except Exception as exc:
            job = store.job_of(rowid) or {}
            retry = int(job.get("attempts") or 0) < self.config.max_attempts
            log.exception("correlation job %s failed", rowid)
            store.fail_job(rowid, f"{type(exc).__name__}: {exc}", retry=retry)
            return JobOutcome(rowid, n_errors=1)
        out.n_new_leads = store.finish_job(
            rowid, out.leads, n_screened=out.n_partition, n_compared=out.n_compared
        )
        if self.on_done is not None:
            self.on_done(out)
        return out

    def drain(self, max_jobs: int | None = None) -> list[JobOutcome]:
        """Run pending jobs until none is left (or ``max_jobs`` ran, or :meth:`stop`)."""
        done: list[JobOutcome] = []
        while not self._stop.is_set() and (max_jobs is None or len(done) < max_jobs):
            out = self.run_one()
            if out is None:
                break
            done.append(out)
        return done

    def wake(self, *_: object) -> None:
        """New work may be there (an ingest)."""
        self._wake.set()

    def start(self) -> None:
        """Run in a background thread until :meth:`stop`; woken by every ingest."""
        if self._thread is not None:
            return
        self.catalog.on_add(self.wake)
        self._thread = threading.Thread(target=self._loop, name="correlation", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        _niced(self.config.nice)
        while not self._stop.is_set():
            try:
                ran = self.run_one()
            except Exception:  # e.g. the store closed under it; keep serving searches
                log.exception("correlation worker")
                ran = None
            if ran is None:
                self._wake.wait(self.config.poll_s)
                self._wake.clear()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop after the job in hand (its comparisons finish; a job cut short by the process
        exiting is retaken at the next start)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)
