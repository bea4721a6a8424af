"""CLI handlers for crime-gun intelligence: ``ballistics firearm``, ``locate``, ``series``,
``report`` (index/intel.py, server/intel_service.py).

Changes (firearm add, status, test-fire, trace, trace-result, locate) go through a server
(``--server``), so they carry the token's agency and are audited. Reading (firearm show,
series, report) works remotely or locally on a store (``--data-dir D --agency A [--policy
P]``: the view an examiner of A gets under that policy). ``--json`` prints the documented
JSON forms: a firearm (``index.intel.Firearm.as_dict``), a series, a report. Exit status: 0
ok, 2 bad input, unknown id or a refusal, 1 internal failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import intel_output as out
from .commands_remote import UsageError, _client, _handles_errors


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, sort_keys=True))


@contextmanager
def _local(args: argparse.Namespace) -> Iterator[tuple[Any, set[str], Any]]:
    """(Intel, visible agencies, sharing policy) for ``--data-dir``/``--agency``/``--policy``."""
    from index.intel import Intel
    from index.store import Store

    from .policy import PolicyError, SharingPolicy

    if not args.agency:
        raise UsageError("--data-dir needs --agency (whose view to show)")
    if not (Path(args.data_dir) / "store.sqlite").is_file():
        raise UsageError(f"no store in {args.data_dir} (run 'ballistics ingest' first)")
    try:
        policy = SharingPolicy.from_file(args.policy) if args.policy else SharingPolicy.isolated()
    except PolicyError as e:
        raise UsageError(str(e)) from e
    store = Store(args.data_dir)
    try:
        yield Intel(store), policy.allowed_agencies(args.agency), policy
    finally:
        store.close()


@contextmanager
def _local_errors() -> Iterator[None]:
    """Local input and lookup errors as one line (exit 2), like the service's refusals."""
    from index.errors import NotFoundError
    from index.intel import IntelError

    try:
        yield
    except IntelError as e:
        raise UsageError(str(e)) from e
    except NotFoundError as e:
        raise UsageError(f"NOT_FOUND: {e.args[0] if e.args else e}") from e


def _firearm_out(doc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(doc)
        return
    name = " ".join(x for x in (doc["make"], doc["model"], doc["caliber"]) if x) or "firearm"
    print(f"{doc['firearm_id']}: {name}, serial {doc['serial_number'] or '?'} ({doc['status']})")
    print(
        f"  recovered by {doc['agency']} on {doc['recovered_on'] or '?'}"
        f" at {doc['place'] or '?'}"
        + (f" ({doc['lat']:.5f}, {doc['lon']:.5f})" if doc["lat"] is not None else "")
    )
    print(f"  test fires: {', '.join(doc['test_fires']) or '-'}")
    for t in doc["traces"]:
        print(
            f"  trace {t['trace_id']} asked of {t['requested_of']} on {t['requested_at']}:"
            f" {t['status']}" + (f" -- {t['outcome']}" if t["outcome"] else "")
        )
    for c in doc["status_changes"]:
        print(
            f"  status {c['previous']} -> {c['status']} on {c['changed_at'][:10]}"
            f" by {c['changed_by']}: {c['comment']}"
        )


@_handles_errors
def cmd_firearm(args: argparse.Namespace) -> int:
    from .intel_service import firearm_from_proto

    if args.action == "show" and not args.server and getattr(args, "data_dir", None):
        with _local(args) as (intel, visible, _), _local_errors():
            fa = intel.get_firearm(args.firearm_id)
            if fa.agency not in visible:
                raise UsageError(f"NOT_FOUND: no firearm with id {args.firearm_id}")
            doc = fa.as_dict()
            doc["test_fires"] = [
                c for c in doc["test_fires"] if intel.store.get_casing(c).agency in visible
            ]
        _firearm_out(doc, args.json)
        return 0
    if not args.server:
        if args.action == "show":
            raise UsageError("firearm show needs --server, or --data-dir with --agency")
        raise UsageError(f"firearm {args.action} needs --server (changes are audited there)")
    with _client(args) as client:
        if args.action == "add":
            fields: dict[str, Any] = {
                "firearm_id": args.firearm_id or "",
                "make": args.make or "",
                "model": args.model or "",
                "calibre": args.caliber or "",
                "serial_number": args.serial or "",
                "recovered_on": args.recovered_on or "",
                "place": args.place or "",
                "status": args.status,
            }
            if (args.lat is None) != (args.lon is None):
                raise UsageError("give both --lat and --lon, or neither")
            if args.lat is not None:
                fields.update(lat=args.lat, lon=args.lon)
            msg = client.add_firearm(**fields)
        elif args.action == "show":
            msg = client.get_firearm(args.firearm_id)
        elif args.action == "status":
            msg = client.set_firearm_status(args.firearm_id, args.status, args.comment)
        elif args.action == "test-fire":
            for cid in args.casing_ids:
                msg = client.add_test_fire(args.firearm_id, cid)
        elif args.action == "trace":
            msg = client.add_trace(args.firearm_id, args.requested_of, args.date or "")
        else:  # trace-result
            msg = client.update_trace(args.trace_id, args.status, args.outcome)
    _firearm_out(firearm_from_proto(msg), args.json)
    return 0


@_handles_errors
def cmd_locate(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.set_incident_location(args.incident_id, args.lat, args.lon)
    if args.json:
        _print_json({"incident_id": args.incident_id, "lat": args.lat, "lon": args.lon})
    else:
        print(f"incident {args.incident_id}: {args.lat:.6f}, {args.lon:.6f}")
    return 0


def _write(path: str | None, data: str | bytes) -> None:
    if not path:
        return
    p = Path(path)
    if isinstance(data, bytes):
        p.write_bytes(data)
    else:
        p.write_text(data, encoding="utf-8")
    print(f"wrote {p}", file=sys.stderr)


@_handles_errors
def cmd_series(args: argparse.Namespace) -> int:
    named = [args.series_id, args.incident_id, args.casing_id, args.firearm_id]
    if sum(bool(x) for x in named) > 1:
        raise UsageError("name one series: a series id, --incident-id, --casing-id or --firearm-id")
    listing = not any(named)
    if listing and (args.html or args.png or args.csv):
        raise UsageError("--html, --png and --csv need one series (an id or --incident-id ...)")
    view: dict[str, Any]
    views: list[dict[str, Any]] = []
    if not args.server:
        if not args.data_dir:
            raise UsageError("series needs --server, or --data-dir with --agency")
        from .intel_service import add_jurisdictions, find_series_for

        with _local(args) as (intel, visible, policy), _local_errors():
            if listing:
                views = [add_jurisdictions(v, policy) for v in intel.list_series(visible)]
            else:
                view = add_jurisdictions(
                    find_series_for(
                        intel,
                        visible,
                        args.agency,
                        series_id=args.series_id or "",
                        incident_id=args.incident_id or "",
                        casing_id=args.casing_id or "",
                        firearm_id=args.firearm_id or "",
                    ),
                    policy,
                )
        if not listing:
            _write(args.csv, out.series_csv(view))
            _write(args.png, out.series_png(view) if args.png else b"")
            _write(args.html, out.series_html(view, Path(args.png).name if args.png else None))
    else:
        with _client(args) as client:
            if listing:
                views = json.loads(client.list_series().series_json)
            else:
                resp = client.get_series(
                    series_id=args.series_id or "",
                    incident_id=args.incident_id or "",
                    casing_id=args.casing_id or "",
                    firearm_id=args.firearm_id or "",
                    with_png=bool(args.png),
                )
                view = json.loads(resp.series_json)
                _write(args.csv, resp.csv)
                _write(args.png, resp.png)
                _write(args.html, out.series_html(view, Path(args.png).name if args.png else None))
    if listing:
        if args.json:
            for v in views:
                _print_json(v)
        elif not views:
            print("no series you may see")
        else:
            for v in views:
                print(out.series_text(v))
        return 0
    if args.json:
        _print_json(view)
    else:
        print(out.series_text(view))
    return 0


@_handles_errors
def cmd_report(args: argparse.Namespace) -> int:
    if not args.server:
        if not args.data_dir:
            raise UsageError("report needs --server, or --data-dir with --agency")
        border: list[tuple[str, str, str]] = []
        if (Path(args.data_dir) / "federation.sqlite").is_file():
            from .federation_store import FederationStore
            from .intel_service import federation_hits

            fed = FederationStore(args.data_dir)
            try:
                border = federation_hits(fed)
            finally:
                fed.close()
        with _local(args) as (intel, visible, policy), _local_errors():
            rep = intel.report(
                visible,
                policy.jurisdiction_of,
                date_from=args.date_from,
                date_to=args.date_to,
                jurisdictions=args.jurisdiction,
                border_hits=border,
            )
        png = out.report_png(rep) if args.png else b""
    else:
        with _client(args) as client:
            resp = client.report(
                date_from=args.date_from or "",
                date_to=args.date_to or "",
                jurisdictions=args.jurisdiction or [],
                with_png=bool(args.png),
            )
        rep = json.loads(resp.report_json)
        png = resp.png
    _write(args.csv, out.report_csv(rep))
    _write(args.png, png)
    if args.json:
        _print_json(rep)
    else:
        print(out.report_text(rep))
    return 0
