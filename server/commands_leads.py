"""CLI handlers for background correlation: ``ballistics correlate`` (drain the job queue of an
embedded store, without a server) and ``ballistics leads`` (list leads, locally or remotely).

``leads --json`` prints one object ``{"jobs": {pending, running, done, failed}, "leads":
[...]}`` with the keys of :data:`server.output.LEAD_KEYS`, the same locally and remotely.
``correlate --json`` prints one object per finished job per line, after its commit.
Exit status: 0 ok, 2 bad input or a refusal, 1 internal failure, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .commands_remote import _client, _handles_errors
from .output import jobs_dict, lead_from_local, lead_from_proto


def _fail(msg: str, code: int = 2) -> int:
    print(f"ballistics: {msg}", file=sys.stderr)
    return code


def _policy(path: str | None) -> Any:
    """The sharing policy of ``--policy`` (None: not given)."""
    if not path:
        return None
    from .policy import SharingPolicy

    return SharingPolicy.from_file(path)


def correlation_config(args: argparse.Namespace) -> Any:
    """``index.correlate.CorrelationConfig`` from ``--compare-fraction``, ``--rescue-factor``,
    ``--lead-max-nmf``, ``--lead-min-cmc`` (defaults where not given)."""
    from index.correlate import CorrelationConfig

    cfg = CorrelationConfig()
    frac = getattr(args, "compare_fraction", None)
    if frac is not None:
        if not 0.0 < frac <= 1.0:
            raise ValueError(f"--compare-fraction must be in (0, 1]; got {frac}")
        cfg.compare_fraction = float(frac)
    rescue = getattr(args, "rescue_factor", None)
    if rescue is not None:
        if not 0.0 <= rescue <= 100.0:
            raise ValueError(f"--rescue-factor must be in [0, 100] (0: no rescue); got {rescue}")
        cfg.rescue_factor = float(rescue)
    nmf = getattr(args, "lead_max_nmf", None)
    if nmf is not None:
        if not 0.0 < nmf <= 1.0:
            raise ValueError(f"--lead-max-nmf must be in (0, 1]; got {nmf}")
        cfg.lead_max_nmf = float(nmf)
    cmc = getattr(args, "lead_min_cmc", None)
    if cmc is not None:
        if cmc < 1:
            raise ValueError(f"--lead-min-cmc must be >= 1; got {cmc}")
        cfg.lead_min_cmc = int(cmc)
    return cfg


def _progress_line(jobs: dict[str, int]) -> str:
    return (
        f"correlation jobs: {jobs['pending']} pending, {jobs['running']} running,"
        f" {jobs['done']} done, {jobs['failed']} failed"
    )


def cmd_correlate(args: argparse.Namespace) -> int:
    """``ballistics correlate``: run the pending correlation jobs of ``--data-dir`` (all of
    them; ``--once``: one; ``--max-jobs N``: at most N) and exit."""
    from index.correlate import CorrelationWorker, JobOutcome
    from index.errors import CatalogLockedError
    from index.service import Catalog
    from index.store import store_exists

    from .commands_index import _engine, store_config
    from .policy import PolicyError

    skw = store_config(args)
    if not store_exists(args.data_dir, skw.get("store")):
        return _fail(f"no store in {args.data_dir} (run 'ballistics ingest' first)")
    try:
        cfg = correlation_config(args)
        policy = _policy(args.policy)
    except (ValueError, PolicyError) as e:
        return _fail(str(e))
    max_jobs = 1 if args.once else args.max_jobs
    if max_jobs is not None and max_jobs < 1:
        return _fail("--max-jobs must be >= 1")
    try:
        with Catalog.open(args.data_dir, skw, engine=_engine()) as cat:
            names: dict[int, str] = {}

            def done(out: JobOutcome) -> None:
                cid = (
                    names.get(out.casing)
                    or cat.store.get_casing(out.casing, include_deleted=True).casing_id
                )
                rec = {
                    "casing_id": cid,
                    "partition": out.n_partition,
                    "compared": out.n_compared,
                    "errors": out.n_errors,
                    "leads": len(out.leads),
                    "new_leads": out.n_new_leads,
                    "elapsed_s": round(out.elapsed_s, 3),
                }
                if args.json:
                    print(json.dumps(rec), flush=True)
                else:
                    print(
                        f"{cid}: screened {out.n_partition}, compared {out.n_compared},"
                        f" leads {len(out.leads)} ({out.n_new_leads} new), {out.elapsed_s:.1f} s",
                        file=sys.stderr,
                        flush=True,
                    )

            worker = CorrelationWorker(cat, policy=policy, config=cfg, on_done=done)
            try:
                if args.backfill:
                    n = cat.store.enqueue_missing_jobs()
                    print(f"backfill: {n} stored casing(s) queued", file=sys.stderr)
                if getattr(args, "follow", False):
                    _follow(worker)
                else:
                    worker.drain(max_jobs)
            finally:
                worker.stop()
            jobs = cat.store.job_counts()
    except CatalogLockedError as e:
        return _fail(f"{e}; a running server correlates in the background itself")
    print(_progress_line(jobs), file=sys.stderr)
    return 0


def _follow(worker: Any) -> None:
    """Run ``worker`` in its background thread until SIGTERM or SIGINT."""
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker.start()
    print("correlation worker running; SIGTERM or Ctrl-C stops", file=sys.stderr, flush=True)
    while not stop.wait(1.0):
        worker.wake()  # other processes' ingests do not wake this one: poll


def _print_leads(leads: list[dict[str, Any]], jobs: dict[str, int], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"jobs": jobs, "leads": leads}, sort_keys=False))
        return
    print(_progress_line(jobs))
    if not leads:
        print("no leads")
        return
    print(
        f"{'lead':>6}  {'state':<9} {'casing_a':<20} {'casing_b':<20} {'score':>7} {'cmc':>4}"
        "  non-match freq  agencies"
    )
    for ld in leads:
        score = "-" if ld["score"] is None else f"{ld['score']:.3f}"
        cmc = "-" if ld["cmc"] is None else str(ld["cmc"])
        nmf = "-" if ld["non_match_frequency"] is None else f"{ld['non_match_frequency']:.3g}"
        print(
            f"{ld['lead_id']:>6}  {ld['state']:<9} {ld['casing_a']:<20} {ld['casing_b']:<20}"
            f" {score:>7} {cmc:>4}  {nmf:>14}  {ld['agency_a']} / {ld['agency_b']}"
        )
        if ld["low_confidence"]:  # a lead on a poor scan says less
            print(f"        LOW-CONFIDENCE: {'; '.join(ld['low_confidence_reasons'])}")


def cmd_leads(args: argparse.Namespace) -> int:
    """``ballistics leads --data-dir D``: the store's leads (``--agency A``: only those an
    examiner of A may see under ``--policy``, isolated without one)."""
    from index.store import open_store, store_exists

    from .commands_index import store_config
    from .policy import PolicyError, SharingPolicy

    if not args.data_dir:
        return _fail("leads needs --data-dir (or --server for a remote list)")
    skw = store_config(args)
    if not store_exists(args.data_dir, skw.get("store")):
        return _fail(f"no store in {args.data_dir} (run 'ballistics ingest' first)")
    if args.limit < 0 or args.offset < 0:
        return _fail("--limit and --offset must be >= 0")
    try:
        policy = _policy(args.policy)
    except PolicyError as e:
        return _fail(str(e))
    if policy is not None and not args.agency:
        return _fail("--policy needs --agency (whose view of the leads to list)")
    visible = None
    if args.agency:
        visible = (policy or SharingPolicy.isolated()).allowed_agencies(args.agency)
    store = open_store(args.data_dir, skw.get("store"), files_dir=skw.get("files_dir"))
    try:
        if args.casing_id is not None:
            try:
                rec = store.get_casing(args.casing_id)
            except LookupError:
                rec = None
            if rec is None or (visible is not None and rec.agency not in visible):
                return _fail(
                    f"no casing {args.casing_id} in {args.data_dir}"
                    + (f" that {args.agency} may see" if visible is not None else "")
                )
        leads = store.list_leads(
            state=args.state,
            agencies=visible,
            limit=min(args.limit or 100, 1000),
            offset=args.offset,
            casing=args.casing_id,
        )
        jobs = store.job_counts(agencies=visible)
    finally:
        store.close()
    rows = [lead_from_local(ld) for ld in leads]
    for row, ld in zip(rows, leads, strict=True):
        if visible is not None and ld.decided_by_agency and ld.decided_by_agency not in visible:
            row["decision_id"] = row["decided_at"] = None  # as the service shows it
    _print_leads(rows, jobs_dict(jobs), args.json)
    return 0


@_handles_errors
def cmd_leads_remote(args: argparse.Namespace) -> int:
    with _client(args) as client:
        resp = client.leads(
            state=args.state or "",
            limit=args.limit,
            offset=args.offset,
            casing_id=args.casing_id or "",
        )
    _print_leads([lead_from_proto(ld) for ld in resp.leads], jobs_dict(resp.jobs), args.json)
    return 0
