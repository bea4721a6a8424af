"""Crime-gun intelligence on the store of record: recovered firearms, test fires, trace
requests, linked series and the hub's reports (issue 14).

Tables (created on open, next to the store's own; plain SQL, no SQLite-only syntax, so a
PostgreSQL store can run the same statements):

* ``firearms``: a recovered or seized firearm, owned by the recovering agency (public id
  ``firearm_id``), with make, model, calibre, serial number, date, place, optional
  coordinates and status (:data:`FIREARM_STATUSES`).
* ``test_fires``: a stored casing that is a test fire of a firearm (one firearm per casing).
* ``trace_requests``: who was asked to trace a firearm, when, the status
  (:data:`TRACE_STATUSES`) and the outcome as free text (last known legal owner, transfer
  chain). Nothing outside is ever called: the record is what an analyst types in.
* ``incident_locations``: coordinates (WGS84 degrees) of an agency's incident, for the maps.

**Series.** Nodes are incidents ``(agency, incident)``; a test fire's node is its firearm
``("firearm", firearm_id)``; a casing without an incident is a node of its own. Edges are the
pairs whose *latest* decision is ``hit`` (a later ``excluded``/``inconclusive`` on the pair
supersedes it) between live casings. A series is a connected component of two or more nodes.
Leads (``leads`` table) never join a series: open leads touching one are listed apart. A
series' id is ``S-`` and a hash of its smallest node key: the same while that node stays in
it; a series that splits keeps the id on the part holding that node.

**Visibility.** Every view takes ``visible``, the agencies the requester may see (the sharing
policy's ``allowed_agencies``). A node is shown when its agency is visible; an edge when both
of its casings and both nodes are; the rest of a series is only counted (``hidden_links``,
``hidden_nodes``). Reports count only records whose every agency is visible.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import statistics
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import NotFoundError
from .store import Store, _check_date, _now

FIREARM_STATUSES = ("recovered", "seized", "test_fired", "traced", "returned", "destroyed")
TRACE_STATUSES = ("requested", "completed", "no_result", "refused")
#: NIBIN's goal: a lead within 24-48 hours of the evidence coming in.
GOAL_HOURS = 48.0

_MAX_TEXT = 2000


class IntelError(ValueError):
    """Bad input to an intelligence call; the message names the field and the fix."""


def _text(value: Any, what: str, *, required: bool = False, limit: int = 200) -> str | None:
    if value is None or value == "":
        if required:
            raise IntelError(f"{what} is required")
        return None
    if not isinstance(value, str):
        raise IntelError(f"{what} must be text; got {type(value).__name__}")
    if len(value) > limit:
        raise IntelError(f"{what} is longer than {limit} characters")
    return value


def _date(value: Any, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise IntelError(f"{what} must be a date YYYY-MM-DD; got {type(value).__name__}")
    try:
        return _check_date(value, what)
    except ValueError as e:
        raise IntelError(str(e)) from None


def _coords(lat: Any, lon: Any) -> tuple[float | None, float | None]:
    if lat is None and lon is None:
        return None, None
    if lat is None or lon is None:
        raise IntelError("give both latitude and longitude, or neither")
    try:
        la, lo = float(lat), float(lon)
    except (TypeError, ValueError):
        raise IntelError(f"latitude/longitude must be numbers; got {lat!r}, {lon!r}") from None
    if not (-90.0 <= la <= 90.0 and -180.0 <= lo <= 180.0):
        raise IntelError(
            f"latitude must be in [-90, 90] and longitude in [-180, 180]; got {la}, {lo}"
        )
    return la, lo


@dataclass(frozen=True)
class TraceRequest:
    trace_id: str
    firearm_id: str
    requested_of: str
    requested_at: str
    status: str
    outcome: str
    updated_at: str
    updated_by: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StatusChange:
    """One change of a firearm's status after it was recorded (oldest first on a firearm)."""

    status: str
    previous: str
    comment: str
    changed_at: str
    changed_by: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Firearm:
    """A recovered or seized firearm; ``test_fires`` are casing ids, ``traces`` its trace
    requests and ``status_changes`` the changes of its status made with
    :meth:`Intel.set_status` (both oldest first)."""

    firearm_id: str
    agency: str
    make: str | None
    model: str | None
    caliber: str | None
    serial_number: str | None
    recovered_on: str | None
    place: str | None
    lat: float | None
    lon: float | None
    status: str
    created_at: str
    created_by: str
    test_fires: list[str] = field(default_factory=list)
    traces: list[TraceRequest] = field(default_factory=list)
    status_changes: list[StatusChange] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["traces"] = [t.as_dict() for t in self.traces]
        d["status_changes"] = [c.as_dict() for c in self.status_changes]
        return d


_FIREARM_COLS = (
    "firearm_id, agency, make, model, caliber, serial_number, recovered_on, place, lat, lon, "
    "status, created_at, created_by"
)
_TRACE_COLS = (
    "trace_id, firearm_id, requested_of, requested_at, status, outcome, updated_at, updated_by"
)


@dataclass(frozen=True)
class _Edge:
    """A current hit between two live casings (row ids), with the nodes they belong to."""

    decision_id: int
    casing_a: str
    casing_b: str
    agency_a: str
    agency_b: str
    node_a: tuple[str, str]
    node_b: tuple[str, str]
    time: str
    examiner: str
    decided_by: str


def _node_key(node: tuple[str, str]) -> str:
    return f"{node[0]}/{node[1]}"


def series_id_of(nodes: Iterable[tuple[str, str]]) -> str:
    """``S-`` and 10 hex digits of the smallest node key's SHA-256 (stable while it stays)."""
    key = min(_node_key(n) for n in nodes)
    return "S-" + hashlib.sha256(key.encode()).hexdigest()[:10]


def _hours_between(start: str, end: str) -> float | None:
    """Hours from ``start`` to ``end`` (ISO dates or timestamps; a bare date is 00:00 UTC)."""
    try:
        a = _parse_time(start)
        b = _parse_time(end)
    except ValueError:
        return None
    return (b - a).total_seconds() / 3600.0


def _parse_time(value: str) -> _dt.datetime:
    if len(value) == 10:
        d = _dt.date.fromisoformat(value)
        return _dt.datetime(d.year, d.month, d.day, tzinfo=_dt.UTC)
    t = _dt.datetime.fromisoformat(value)
    return t if t.tzinfo else t.replace(tzinfo=_dt.UTC)


def _in_period(day: str | None, date_from: str | None, date_to: str | None) -> bool:
    """``day``'s date part within [from, to] (both inclusive; None: open)."""
    if not day:
        return False
    d = day[:10]
    return (date_from is None or d >= date_from) and (date_to is None or d <= date_to)


def duration_stats(hours: list[float], goal_h: float = GOAL_HOURS) -> dict[str, Any]:
    """n, median, 90th percentile (nearest rank) and share within ``goal_h`` of durations."""
    if not hours:
        return {
            "n": 0,
            "median_h": None,
            "p90_h": None,
            "within_goal": 0,
            "share_within_goal": None,
        }
    s = sorted(hours)
    p90 = s[max(0, -(-len(s) * 9 // 10) - 1)]
    within = sum(1 for h in s if h <= goal_h)
    return {
        "n": len(s),
        "median_h": round(statistics.median(s), 2),
        "p90_h": round(p90, 2),
        "within_goal": within,
        "share_within_goal": round(within / len(s), 4),
    }


class Intel:
    """Intelligence records and views over one :class:`index.store.Store` (its connection and
    transaction helpers)."""

    def __init__(self, store: Store) -> None:
        self.store = store  # its tables: migration 0003_intelligence (index/migrations)

    # -- firearms ------------------------------------------------------------------------
    def add_firearm(
        self,
        *,
        agency: str,
        user: str,
        make: str | None = None,
        model: str | None = None,
        caliber: str | None = None,
        serial_number: str | None = None,
        recovered_on: str | None = None,
        place: str | None = None,
        lat: float | None = None,
        lon: float | None = None,
        status: str = "recovered",
        firearm_id: str | None = None,
    ) -> Firearm:
        """Record a recovered firearm of ``agency``; returns it (``firearm_id`` generated
        ``F-`` + 12 hex digits when not given)."""
        agency_ = _text(agency, "agency", required=True)
        user_ = _text(user, "user", required=True)
        if status not in FIREARM_STATUSES:
            raise IntelError(f"status must be one of {FIREARM_STATUSES}; got {status!r}")
        fid = _text(firearm_id, "firearm id", limit=128) or "F-" + uuid.uuid4().hex[:12]
        la, lo = _coords(lat, lon)
        values = (
            fid,
            agency_,
            _text(make, "make"),
            _text(model, "model"),
            _text(caliber, "calibre"),
            _text(serial_number, "serial number"),
            _date(recovered_on, "recovery date"),
            _text(place, "place"),
            la,
            lo,
            status,
            _now(),
            user_,
        )
        with self.store._tx() as con:
            if con.execute("SELECT 1 FROM firearms WHERE firearm_id = ?", (fid,)).fetchone():
                raise IntelError(f"firearm id {fid!r} already exists; choose another id")
            con.execute(
                f"INSERT INTO firearms({_FIREARM_COLS}) VALUES ({','.join('?' * 13)})", values
            )
        return self.get_firearm(fid)

    def get_firearm(self, firearm_id: str) -> Firearm:
        """The firearm with its test fires and trace requests; NotFoundError when unknown."""
        con = self.store._conn()
        row = con.execute(
            f"SELECT {_FIREARM_COLS} FROM firearms WHERE firearm_id = ?", (firearm_id,)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"no firearm with id {firearm_id}")
        fires = [
            str(r[0])
            for r in con.execute(
                "SELECT c.casing_id FROM test_fires t JOIN casings c ON c.id = t.casing "
                "WHERE t.firearm_id = ? AND c.deleted = 0 ORDER BY c.id",
                (firearm_id,),
            )
        ]
        traces = [
            TraceRequest(*r)
            for r in con.execute(
                f"SELECT {_TRACE_COLS} FROM trace_requests WHERE firearm_id = ? "
                "ORDER BY requested_at, trace_id",
                (firearm_id,),
            )
        ]
        changes = [
            StatusChange(*r)
            for r in con.execute(
                "SELECT status, previous, comment, changed_at, changed_by "
                "FROM firearm_status_changes WHERE firearm_id = ? ORDER BY seq",
                (firearm_id,),
            )
        ]
        return Firearm(
            firearm_id=str(row[0]),
            agency=str(row[1]),
            make=row[2],
            model=row[3],
            caliber=row[4],
            serial_number=row[5],
            recovered_on=row[6],
            place=row[7],
            lat=row[8],
            lon=row[9],
            status=str(row[10]),
            created_at=str(row[11]),
            created_by=str(row[12]),
            test_fires=fires,
            traces=traces,
            status_changes=changes,
        )

    def set_status(self, firearm_id: str, status: str, *, comment: str, user: str) -> Firearm:
        """Change the firearm's status (e.g. ``returned``, ``destroyed``), recording who, when,
        the previous status and why (``comment``, required). Setting the status it already
        has changes nothing and records nothing."""
        if status not in FIREARM_STATUSES:
            raise IntelError(f"status must be one of {FIREARM_STATUSES}; got {status!r}")
        why = _text(comment, "comment", required=True, limit=_MAX_TEXT)
        user_ = _text(user, "user", required=True)
        with self.store._tx() as con:
            row = con.execute(
                "SELECT status FROM firearms WHERE firearm_id = ?", (firearm_id,)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"no firearm with id {firearm_id}")
            if str(row[0]) != status:
                seq = con.execute(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM firearm_status_changes "
                    "WHERE firearm_id = ?",
                    (firearm_id,),
                ).fetchone()[0]
                con.execute(
                    "INSERT INTO firearm_status_changes(firearm_id, seq, status, previous, "
                    "comment, changed_at, changed_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (firearm_id, int(seq), status, str(row[0]), why, _now(), user_),
                )
                con.execute(
                    "UPDATE firearms SET status = ? WHERE firearm_id = ?", (status, firearm_id)
                )
        return self.get_firearm(firearm_id)

    def list_firearms(self, visible: Iterable[str] | None = None) -> list[Firearm]:
        ids = [
            str(r[0])
            for r in self.store._conn().execute(
                "SELECT firearm_id, agency FROM firearms ORDER BY created_at, firearm_id"
            )
            if visible is None or r[1] in set(visible)
        ]
        return [self.get_firearm(i) for i in ids]

    def add_test_fire(self, firearm_id: str, casing_id: str, *, user: str) -> Firearm:
        """Mark a stored casing as a test fire of the firearm (its status becomes
        ``test_fired`` if it was ``recovered`` or ``seized``). A casing is a test fire of at
        most one firearm."""
        fa = self.get_firearm(firearm_id)
        rec = self.store.get_casing(casing_id)
        with self.store._tx() as con:
            row = con.execute(
                "SELECT firearm_id FROM test_fires WHERE casing = ?", (rec.id,)
            ).fetchone()
            if row is not None:
                if str(row[0]) == fa.firearm_id:
                    return self.get_firearm(fa.firearm_id)
                raise IntelError(f"casing {casing_id} is already a test fire of firearm {row[0]}")
            con.execute(
                "INSERT INTO test_fires(casing, firearm_id, created_at, created_by) "
                "VALUES (?, ?, ?, ?)",
                (rec.id, fa.firearm_id, _now(), user),
            )
            con.execute(
                "UPDATE firearms SET status = 'test_fired' WHERE firearm_id = ? "
                "AND status IN ('recovered', 'seized')",
                (fa.firearm_id,),
            )
        return self.get_firearm(fa.firearm_id)

    def firearm_of_casing(self, casing_id: str) -> str | None:
        row = (
            self.store._conn()
            .execute(
                "SELECT t.firearm_id FROM test_fires t JOIN casings c ON c.id = t.casing "
                "WHERE c.casing_id = ?",
                (casing_id,),
            )
            .fetchone()
        )
        return None if row is None else str(row[0])

    def add_trace(
        self, firearm_id: str, *, requested_of: str, user: str, requested_at: str | None = None
    ) -> TraceRequest:
        """Record a trace request (``requested_at``: a date, default today UTC)."""
        fa = self.get_firearm(firearm_id)
        who = _text(requested_of, "requested of", required=True)
        when = _date(requested_at, "request date") or _dt.datetime.now(_dt.UTC).date().isoformat()
        tid = "T-" + uuid.uuid4().hex[:12]
        now = _now()
        with self.store._tx() as con:
            con.execute(
                f"INSERT INTO trace_requests({_TRACE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (tid, fa.firearm_id, who, when, "requested", "", now, user),
            )
        return self._trace(tid)

    def _trace(self, trace_id: str) -> TraceRequest:
        row = (
            self.store._conn()
            .execute(f"SELECT {_TRACE_COLS} FROM trace_requests WHERE trace_id = ?", (trace_id,))
            .fetchone()
        )
        if row is None:
            raise NotFoundError(f"no trace request with id {trace_id}")
        return TraceRequest(*row)

    def trace_firearm(self, trace_id: str) -> str:
        return self._trace(trace_id).firearm_id

    def update_trace(self, trace_id: str, *, status: str, outcome: str, user: str) -> TraceRequest:
        """Record a trace's result; a ``completed`` trace marks the firearm ``traced``."""
        if status not in TRACE_STATUSES:
            raise IntelError(f"trace status must be one of {TRACE_STATUSES}; got {status!r}")
        text = _text(outcome, "outcome", limit=_MAX_TEXT) or ""
        tr = self._trace(trace_id)
        with self.store._tx() as con:
            con.execute(
                "UPDATE trace_requests SET status = ?, outcome = ?, updated_at = ?, "
                "updated_by = ? WHERE trace_id = ?",
                (status, text, _now(), user, trace_id),
            )
            if status == "completed":
                con.execute(
                    "UPDATE firearms SET status = 'traced' WHERE firearm_id = ? AND status IN "
                    "('recovered', 'seized', 'test_fired')",
                    (tr.firearm_id,),
                )
        return self._trace(trace_id)

    def set_incident_location(self, agency: str, incident: str, lat: float, lon: float) -> None:
        """Coordinates of ``agency``'s incident (must exist), replacing earlier ones."""
        la, lo = _coords(lat, lon)
        con = self.store._conn()
        if not con.execute(
            "SELECT 1 FROM incidents WHERE agency = ? AND id = ?", (agency, incident)
        ).fetchone():
            raise NotFoundError(f"no incident with id {incident}")
        with self.store._tx() as tx:
            tx.execute(
                "DELETE FROM incident_locations WHERE agency = ? AND incident = ?",
                (agency, incident),
            )
            tx.execute(
                "INSERT INTO incident_locations(agency, incident, lat, lon) VALUES (?, ?, ?, ?)",
                (agency, incident, la, lo),
            )

    # -- the graph -----------------------------------------------------------------------
    def _casing_nodes(self) -> dict[int, tuple[tuple[str, str], str, str, str | None]]:
        """Live casing row id -> (node, casing_id, agency, firearm agency or None)."""
        con = self.store._conn()
        fires = {
            int(r[0]): (str(r[1]), str(r[2]))
            for r in con.execute(
                "SELECT t.casing, t.firearm_id, f.agency FROM test_fires t "
                "JOIN firearms f ON f.firearm_id = t.firearm_id"
            )
        }
        out: dict[int, tuple[tuple[str, str], str, str, str | None]] = {}
        for rid, cid, agency, incident in con.execute(
            "SELECT id, casing_id, agency, incident FROM casings WHERE deleted = 0"
        ):
            rid = int(rid)
            if rid in fires:
                fid, fag = fires[rid]
                out[rid] = (("firearm", fid), str(cid), str(agency), fag)
            else:
                node = (str(agency), str(incident) if incident else f"casing:{cid}")
                out[rid] = (node, str(cid), str(agency), None)
        return out

    def _latest_decisions(self) -> list[tuple[int, int, int, str, str, str, str]]:
        """(decision id, casing a, casing b, verdict, time, examiner, deciding agency) of the
        latest decision of every pair."""
        rows = self.store._conn().execute(
            "SELECT d.id, d.casing, d.candidate, d.verdict, d.time, d.examiner, d.agency "
            "FROM decisions d WHERE d.id IN (SELECT MAX(id) FROM decisions "
            "GROUP BY CASE WHEN casing < candidate THEN casing ELSE candidate END, "
            "CASE WHEN casing < candidate THEN candidate ELSE casing END)"
        )
        return [
            (int(r[0]), int(r[1]), int(r[2]), str(r[3]), str(r[4]), str(r[5]), str(r[6] or ""))
            for r in rows
        ]

    def _edges(self) -> tuple[list[_Edge], dict[tuple[str, str], str]]:
        """Current hits between live casings, and each node's owning agency."""
        nodes = self._casing_nodes()
        owner: dict[tuple[str, str], str] = {}
        for node, _cid, agency, fag in nodes.values():
            owner[node] = fag if fag is not None else agency
        edges = []
        for did, a, b, verdict, t, examiner, decided_by in self._latest_decisions():
            if verdict != "hit" or a not in nodes or b not in nodes:
                continue
            na, ca, aa, _ = nodes[a]
            nb, cb, ab, _ = nodes[b]
            edges.append(_Edge(did, ca, cb, aa, ab, na, nb, t, examiner, decided_by))
        return edges, owner

    def components(self) -> list[list[tuple[str, str]]]:
        """Every series (all agencies): its nodes, sorted; series sorted by id."""
        edges, _ = self._edges()
        return _components(edges)

    # -- series --------------------------------------------------------------------------
    def list_series(self, visible: Iterable[str]) -> list[dict[str, Any]]:
        """Series with at least one node the viewer may see: id, counts and dates."""
        vis = frozenset(visible)
        edges, owner = self._edges()
        comps = _components(edges)
        by_comp = _edges_by_component(comps, edges)
        con = self.store._conn()
        # the summaries' dates, read once (not per node)
        inc_dates = {
            (str(a), str(i)): d
            for a, i, d in con.execute("SELECT agency, id, date FROM incidents")
            if d
        }
        acq: dict[tuple[str, str], str] = {}
        for a, i, d in con.execute(
            "SELECT agency, incident, MIN(acquisition_date) FROM casings WHERE deleted = 0 "
            "AND incident IS NOT NULL AND acquisition_date IS NOT NULL GROUP BY agency, incident"
        ):
            acq[(str(a), str(i))] = str(d)
        fa_dates = {
            ("firearm", str(f)): d
            for f, d in con.execute("SELECT firearm_id, recovered_on FROM firearms")
            if d
        }
        dates = {**acq, **inc_dates, **fa_dates}
        out = []
        for k, comp in enumerate(comps):
            if not any(owner.get(n) in vis for n in comp):
                continue
            view = self._series_view(comp, by_comp.get(k, []), owner, vis, dates=dates)
            out.append(view)
        return out

    def find_series(
        self,
        visible: Iterable[str],
        *,
        series_id: str | None = None,
        incident: tuple[str, str] | None = None,
        casing_id: str | None = None,
        firearm_id: str | None = None,
    ) -> dict[str, Any]:
        """One series as the viewer may see it (give exactly one way to name it). A series
        with nothing visible, or a start the viewer may not see, is NotFoundError like an
        unknown one."""
        given = [x is not None for x in (series_id, incident, casing_id, firearm_id)]
        if sum(given) != 1:
            raise IntelError("name the series one way: series id, incident, casing or firearm")
        vis = frozenset(visible)
        edges, owner = self._edges()
        start: tuple[str, str] | None = None
        if incident is not None:
            start = incident
        elif casing_id is not None:
            for node, cid, agency, _f in self._casing_nodes().values():
                if cid == casing_id and agency in vis:
                    start = node
            if start is None:
                raise NotFoundError(f"no series with {casing_id} (or none you may see)")
        elif firearm_id is not None:
            start = ("firearm", firearm_id)
        comps = _components(edges)
        by_comp = _edges_by_component(comps, edges)
        for k, comp in enumerate(comps):
            if not any(owner.get(n) in vis for n in comp):
                continue
            if series_id is not None and series_id_of(comp) != series_id:
                continue
            if start is not None and (start not in comp or owner.get(start) not in vis):
                continue
            return self._series_view(comp, by_comp.get(k, []), owner, vis)
        what = series_id or casing_id or firearm_id or (incident[1] if incident else "")
        raise NotFoundError(f"no series with {what} (or none you may see)")

    def _series_view(
        self,
        comp: list[tuple[str, str]],
        comp_edges: list[_Edge],
        owner: dict[tuple[str, str], str],
        vis: frozenset[str],
        *,
        dates: Mapping[tuple[str, str], str] | None = None,
    ) -> dict[str, Any]:
        """The series as ``vis`` may see it: the summary when ``dates`` (node -> date) is
        given, else the full view (incidents, firearms, hits, leads, evidence, timeline)."""
        shown_nodes = [n for n in comp if owner.get(n) in vis]
        shown = [
            e
            for e in comp_edges
            if {e.agency_a, e.agency_b, owner[e.node_a], owner[e.node_b]} <= vis
        ]
        summary = {
            "series_id": series_id_of(comp),
            "incidents": len([n for n in shown_nodes if n[0] != "firearm"]),
            "firearms": len([n for n in shown_nodes if n[0] == "firearm"]),
            "links": len(shown),
            "hidden_links": len(comp_edges) - len(shown),
            "hidden_nodes": len(comp) - len(shown_nodes),
            "agencies": sorted({owner[n] for n in shown_nodes}),
        }
        if dates is not None:
            known = [dates[n] for n in shown_nodes if n in dates]
            return {
                **summary,
                "first_date": min(known, default=None),
                "last_date": max(known, default=None),
            }
        con = self.store._conn()
        incidents: list[dict[str, Any]] = []
        firearms: list[dict[str, Any]] = []
        node_dates: list[str] = []
        for n in shown_nodes:
            if n[0] == "firearm":
                fa = self.get_firearm(n[1]).as_dict()
                firearms.append(fa)
                if fa["recovered_on"]:
                    node_dates.append(fa["recovered_on"])
                continue
            agency, inc = n
            row = con.execute(
                "SELECT case_number, date, place FROM incidents WHERE agency = ? AND id = ?",
                (agency, inc),
            ).fetchone()
            loc = con.execute(
                "SELECT lat, lon FROM incident_locations WHERE agency = ? AND incident = ?",
                (agency, inc),
            ).fetchone()
            casings = [
                {
                    "casing_id": str(r[0]),
                    "exhibit_id": r[1],
                    "caliber": r[2],
                    "acquisition_date": r[3],
                    "created_at": str(r[4]),
                }
                for r in con.execute(
                    "SELECT casing_id, exhibit_id, caliber, acquisition_date, created_at "
                    "FROM casings WHERE agency = ? AND deleted = 0 AND "
                    + ("casing_id = ?" if inc.startswith("casing:") else "incident = ?")
                    + " ORDER BY id",
                    (agency, inc[len("casing:") :] if inc.startswith("casing:") else inc),
                )
            ]
            date = (row[1] if row else None) or min(
                (c["acquisition_date"] for c in casings if c["acquisition_date"]), default=None
            )
            if date:
                node_dates.append(date)
            incidents.append(
                {
                    "incident": inc,
                    "agency": agency,
                    "case_number": row[0] if row else None,
                    "date": date,
                    "place": row[2] if row else None,
                    "lat": None if loc is None else float(loc[0]),
                    "lon": None if loc is None else float(loc[1]),
                    "casings": casings,
                }
            )
        view: dict[str, Any] = {
            **summary,
            "first_date": min(node_dates, default=None),
            "last_date": max(node_dates, default=None),
        }
        view["incident_list"] = sorted(incidents, key=lambda i: (i["date"] or "", i["incident"]))
        view["firearm_list"] = firearms
        view["hits"] = [
            {
                "decision_id": e.decision_id,
                "casing_a": e.casing_a,
                "casing_b": e.casing_b,
                "node_a": _node_key(e.node_a),
                "node_b": _node_key(e.node_b),
                "agency_a": e.agency_a,
                "agency_b": e.agency_b,
                "time": e.time,
                # who decided is shown only when the deciding agency is visible
                "examiner": e.examiner if e.decided_by in vis else None,
                "decided_by": e.decided_by if e.decided_by in vis else None,
            }
            for e in sorted(shown, key=lambda e: (e.time, e.decision_id))
        ]
        series_casings = {c["casing_id"] for i in incidents for c in i["casings"]}
        series_casings |= {c for f in firearms for c in f["test_fires"]}
        view["open_leads"] = [
            {
                "lead_id": ld.lead_id,
                "casing_a": ld.casing_a,
                "casing_b": ld.casing_b,
                "state": ld.state,
                "score": ld.score,
                "non_match_frequency": ld.non_match_frequency,
                "created_at": ld.created_at,
            }
            for ld in self.store.list_leads(agencies=vis, limit=100000)
            if ld.state in ("new", "reviewed")
            and (ld.casing_a in series_casings or ld.casing_b in series_casings)
        ]
        view["evidence"] = [
            {
                "casing_id": c["casing_id"],
                "agency": i["agency"],
                "incident": i["incident"],
                "exhibit_id": c["exhibit_id"],
                "caliber": c["caliber"],
                "acquisition_date": c["acquisition_date"],
                "test_fire_of": None,
            }
            for i in view["incident_list"]
            for c in i["casings"]
        ] + [
            {
                "casing_id": cid,
                "agency": f["agency"],
                "incident": None,
                "exhibit_id": None,
                "caliber": f["caliber"],
                "acquisition_date": None,
                "test_fire_of": f["firearm_id"],
            }
            for f in firearms
            for cid in f["test_fires"]
        ]
        view["timeline"] = _timeline(view)
        return view

    # -- the hub's report ----------------------------------------------------------------
    def report(
        self,
        visible: Iterable[str],
        jurisdiction_of: Callable[[str], str],
        *,
        date_from: str | None = None,
        date_to: str | None = None,
        jurisdictions: Iterable[str] | None = None,
        border_hits: Iterable[tuple[str, str, str]] = (),
    ) -> dict[str, Any]:
        """The hub's figures per jurisdiction over [date_from, date_to] (dates, inclusive),
        counting only records whose every agency is in ``visible``.

        Per jurisdiction (a lead or hit between two jurisdictions counts in each; the total
        counts it once): scene casings and test fires entered, leads found, hits confirmed,
        hours from incident to lead and from lead to hit (median, 90th percentile, share
        within the 48-hour goal), hits across agencies and jurisdictions, hits across
        national borders (``border_hits``: (local casing id, peer server, confirmed at) of the
        federation's hits, ``server.federation_store``), firearms recovered, trace requests
        made and firearms traced.
        """
        vis = frozenset(visible)
        dfrom = _date(date_from, "date_from")
        dto = _date(date_to, "date_to")
        if dfrom and dto and dfrom > dto:
            raise IntelError(f"date_from {dfrom} is after date_to {dto}")
        jur_of = {a: jurisdiction_of(a) for a in vis}
        wanted = None if jurisdictions is None else frozenset(jurisdictions)
        if wanted is not None:
            unknown = sorted(wanted - set(jur_of.values()))
            if unknown:
                raise NotFoundError(f"no jurisdiction {', '.join(unknown)} among those you may see")
        con = self.store._conn()
        casings: dict[int, dict[str, Any]] = {}
        for rid, cid, agency, incident, acq, created in con.execute(
            "SELECT id, casing_id, agency, incident, acquisition_date, created_at FROM casings "
            "WHERE deleted = 0"
        ):
            if agency in vis:
                casings[int(rid)] = {
                    "casing_id": cid,
                    "agency": agency,
                    "incident": incident,
                    "acquisition_date": acq,
                    "created_at": created,
                }
        inc_dates = {
            (str(a), str(i)): d
            for a, i, d in con.execute("SELECT agency, id, date FROM incidents")
            if d
        }
        fires = {int(r[0]) for r in con.execute("SELECT casing FROM test_fires")}
        rows: dict[str, dict[str, Any]] = {}
        total = _empty_row("total")

        def row(j: str) -> dict[str, Any]:
            if j not in rows:
                rows[j] = _empty_row(j)
            return rows[j]

        for j in sorted(set(jur_of.values())):
            if wanted is None or j in wanted:
                row(j)

        def keep(js: Iterable[str]) -> list[dict[str, Any]]:
            return [row(j) for j in sorted(set(js)) if wanted is None or j in wanted]

        def counted(js: Iterable[str]) -> bool:
            return wanted is None or bool(set(js) & wanted)

        for rid, c in casings.items():
            if not _in_period(c["created_at"], dfrom, dto):
                continue
            key = "test_fires" if rid in fires else "scene_casings"
            js = [jur_of[c["agency"]]]
            for r in keep(js):
                r[key] += 1
            if counted(js):
                total[key] += 1
        # leads: both casings visible
        lead_created: dict[tuple[int, int], str] = {}
        lead_hours: dict[str, list[float]] = {}
        for a, b, created in con.execute("SELECT casing_a, casing_b, created_at FROM leads"):
            a, b = int(a), int(b)
            if a not in casings or b not in casings:
                continue
            lead_created[(a, b)] = str(created)
            if not _in_period(created, dfrom, dto):
                continue
            js = [jur_of[casings[a]["agency"]], jur_of[casings[b]["agency"]]]
            newer = casings[max(a, b)]
            start = (
                inc_dates.get((newer["agency"], newer["incident"] or ""))
                or newer["acquisition_date"]
            )
            h = None if not start else _hours_between(start, str(created))
            for r in keep(js):
                r["leads"] += 1
                if h is not None:
                    lead_hours.setdefault(r["jurisdiction"], []).append(h)
            if counted(js):
                total["leads"] += 1
                if h is not None:
                    lead_hours.setdefault("total", []).append(h)
        hit_hours: dict[str, list[float]] = {}
        for _did, a, b, verdict, t, _ex, _by in self._latest_decisions():
            if verdict != "hit" or a not in casings or b not in casings:
                continue
            if not _in_period(t, dfrom, dto):
                continue
            ca, cb = casings[a], casings[b]
            js = [jur_of[ca["agency"]], jur_of[cb["agency"]]]
            lc = lead_created.get((min(a, b), max(a, b)))
            if lc is not None and lc > t:
                lc = None  # the examiner found it first: the lead came after the hit
            h = None if lc is None else _hours_between(lc, t)
            cross_j = js[0] != js[1]
            cross_a = ca["agency"] != cb["agency"]
            firearm_link = (a in fires) != (b in fires)
            targets = keep(js) + ([total] if counted(js) else [])
            for r in targets:
                r["hits"] += 1
                r["hits_cross_agency"] += int(cross_a)
                r["hits_cross_jurisdiction"] += int(cross_j)
                r["hits_firearm_to_scene"] += int(firearm_link)
                if lc is None:
                    r["hits_without_lead"] += 1
                elif h is not None:
                    hit_hours.setdefault(r["jurisdiction"], []).append(h)
                if cross_j:
                    pair = " / ".join(sorted(js))
                    r["cross_jurisdiction_pairs"][pair] = (
                        r["cross_jurisdiction_pairs"].get(pair, 0) + 1
                    )
        by_id = {c["casing_id"]: c for c in casings.values()}
        for local_id, peer, confirmed in border_hits:
            local = by_id.get(local_id)
            if local is None or not _in_period(confirmed, dfrom, dto):
                continue
            js = [jur_of[local["agency"]]]
            for r in keep(js) + ([total] if counted(js) else []):
                r["hits_cross_border"] += 1
                r["cross_border_peers"][peer] = r["cross_border_peers"].get(peer, 0) + 1
        for fid, agency, recovered_on in con.execute(
            "SELECT firearm_id, agency, recovered_on FROM firearms"
        ):
            if agency not in vis:
                continue
            js = [jur_of[agency]]
            traces = con.execute(
                "SELECT requested_at, status, updated_at FROM trace_requests WHERE firearm_id = ?",
                (fid,),
            ).fetchall()
            targets = keep(js) + ([total] if counted(js) else [])
            for r in targets:
                r["firearms_recovered"] += int(_in_period(recovered_on, dfrom, dto))
                r["trace_requests"] += sum(1 for t in traces if _in_period(t[0], dfrom, dto))
                r["firearms_traced"] += int(
                    any(t[1] == "completed" and _in_period(t[2], dfrom, dto) for t in traces)
                )
        out_rows = [rows[j] for j in sorted(rows)]
        for r in [*out_rows, total]:
            r["incident_to_lead"] = duration_stats(lead_hours.get(r["jurisdiction"], []))
            r["lead_to_hit"] = duration_stats(hit_hours.get(r["jurisdiction"], []))
        return {
            "period": {"from": dfrom, "to": dto},
            "goal_hours": GOAL_HOURS,
            "jurisdictions": out_rows,
            "total": total,
            "notes": [
                "counts only records whose every agency you may see",
                "a lead or hit between two jurisdictions counts in each; the total counts it once",
                "incident to lead: from the newer casing's incident date (00:00 UTC; else its "
                "acquisition date) to the lead; lead to hit: from the lead to the latest hit "
                "decision on the pair (a hit decided before any lead counts as without lead)",
            ],
        }


REPORT_COUNTS = (
    "scene_casings",
    "test_fires",
    "leads",
    "hits",
    "hits_cross_agency",
    "hits_cross_jurisdiction",
    "hits_firearm_to_scene",
    "hits_without_lead",
    "hits_cross_border",
    "firearms_recovered",
    "trace_requests",
    "firearms_traced",
)


def _empty_row(jurisdiction: str) -> dict[str, Any]:
    r: dict[str, Any] = {"jurisdiction": jurisdiction}
    r.update({k: 0 for k in REPORT_COUNTS})
    r["cross_jurisdiction_pairs"] = {}
    r["cross_border_peers"] = {}
    return r


def _edges_by_component(
    comps: list[list[tuple[str, str]]], edges: list[_Edge]
) -> dict[int, list[_Edge]]:
    """Each series' edges (between two of its nodes; a hit inside one node is no link)."""
    where = {n: k for k, comp in enumerate(comps) for n in comp}
    out: dict[int, list[_Edge]] = {}
    for e in edges:
        k = where.get(e.node_a)
        if k is not None and e.node_a != e.node_b:
            out.setdefault(k, []).append(e)
    return out


def _components(edges: list[_Edge]) -> list[list[tuple[str, str]]]:
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(x: tuple[str, str]) -> tuple[str, str]:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for e in edges:
        if e.node_a == e.node_b:
            continue
        ra, rb = find(e.node_a), find(e.node_b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for n in list(parent):
        groups.setdefault(find(n), []).append(n)
    comps = [sorted(g, key=_node_key) for g in groups.values() if len(g) > 1]
    return sorted(comps, key=series_id_of)


def _timeline(view: Mapping[str, Any]) -> list[dict[str, Any]]:
    ev: list[dict[str, Any]] = []
    for i in view["incident_list"]:
        ev.append(
            {
                "time": i["date"] or "",
                "event": "incident",
                "what": f"incident {i['incident']} ({i['agency']})"
                + (f" at {i['place']}" if i["place"] else ""),
            }
        )
    for f in view["firearm_list"]:
        name = " ".join(x for x in (f["make"], f["model"], f["caliber"]) if x) or "firearm"
        ev.append(
            {
                "time": f["recovered_on"] or f["created_at"],
                "event": "firearm recovered",
                "what": f"{name} {f['firearm_id']} recovered by {f['agency']}"
                + (f" at {f['place']}" if f["place"] else ""),
            }
        )
        for t in f["traces"]:
            ev.append(
                {
                    "time": t["requested_at"],
                    "event": "trace requested",
                    "what": f"trace {t['trace_id']} of {f['firearm_id']} asked of "
                    f"{t['requested_of']}: {t['status']}",
                }
            )
        for c in f["status_changes"]:
            ev.append(
                {
                    "time": c["changed_at"],
                    "event": "firearm status",
                    "what": f"{f['firearm_id']} {c['previous']} -> {c['status']}: {c['comment']}",
                }
            )
    for h in view["hits"]:
        ev.append(
            {
                "time": h["time"],
                "event": "hit",
                "what": f"hit {h['casing_a']} ({h['node_a']}) = {h['casing_b']} ({h['node_b']})",
            }
        )
    return sorted(ev, key=lambda e: (e["time"], e["event"]))
