"""The Intelligence servicer (``proto/ballistics/v1/intelligence.proto``) over ``index.intel``.

Each call runs inside :func:`server.service._rpc` like the Matching calls: the caller is
authenticated, the role checked, every request field validated, and one audit record written
per call, allowed or refused. The sharing policy decides what the caller sees: a firearm of
an agency the caller may not see answers NOT_FOUND like an unknown id; series and reports are
built from the agencies ``policy.allowed_agencies(caller)`` only. Only the recovering agency
changes its firearm (test fires, traces).

Permissions: recording firearms, test fires, traces and incident coordinates needs
``record firearms`` (every role); reading a firearm ``read``; series and reports ``read
series and reports`` (examiners and admins).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from index.errors import NotFoundError
from index.intel import Firearm, Intel, IntelError

from . import intel_output as out
from .audit import AuditLog
from .auth import Authenticator, Permission
from .policy import SharingPolicy
from .proto_gen import intelligence_pb2 as ipb
from .proto_gen import intelligence_pb2_grpc as ipb_grpc
from .service import Call, ServiceError, _rpc, audit_call
from .validation import InvalidRequest


@contextmanager
def _input_errors() -> Iterator[None]:
    """IntelError (bad input) -> INVALID_ARGUMENT with its message."""
    try:
        yield
    except IntelError as e:
        raise InvalidRequest(str(e)) from None


def firearm_to_proto(fa: Firearm, casings: list[str] | None = None) -> ipb.Firearm:
    msg = ipb.Firearm(
        firearm_id=fa.firearm_id,
        agency=fa.agency,
        make=fa.make or "",
        model=fa.model or "",
        calibre=fa.caliber or "",
        serial_number=fa.serial_number or "",
        recovered_on=fa.recovered_on or "",
        place=fa.place or "",
        status=fa.status,
        created_at=fa.created_at,
        created_by=fa.created_by,
        test_fire_casing_ids=fa.test_fires if casings is None else casings,
        traces=[ipb.TraceRequest(**t.as_dict()) for t in fa.traces],
        status_changes=[ipb.StatusChange(**c.as_dict()) for c in fa.status_changes],
    )
    if fa.lat is not None and fa.lon is not None:
        msg.lat, msg.lon = fa.lat, fa.lon
    return msg


def firearm_from_proto(m: ipb.Firearm) -> dict[str, Any]:
    """The documented JSON form of a firearm (same keys as ``index.intel.Firearm.as_dict``)."""
    return {
        "firearm_id": m.firearm_id,
        "agency": m.agency,
        "make": m.make or None,
        "model": m.model or None,
        "caliber": m.calibre or None,
        "serial_number": m.serial_number or None,
        "recovered_on": m.recovered_on or None,
        "place": m.place or None,
        "lat": m.lat if m.HasField("lat") else None,
        "lon": m.lon if m.HasField("lon") else None,
        "status": m.status,
        "created_at": m.created_at,
        "created_by": m.created_by,
        "test_fires": list(m.test_fire_casing_ids),
        "traces": [
            {
                "trace_id": t.trace_id,
                "firearm_id": t.firearm_id,
                "requested_of": t.requested_of,
                "requested_at": t.requested_at,
                "status": t.status,
                "outcome": t.outcome,
                "updated_at": t.updated_at,
                "updated_by": t.updated_by,
            }
            for t in m.traces
        ],
        "status_changes": [
            {
                "status": c.status,
                "previous": c.previous,
                "comment": c.comment,
                "changed_at": c.changed_at,
                "changed_by": c.changed_by,
            }
            for c in m.status_changes
        ],
    }


def federation_hits(store: Any) -> list[tuple[str, str, str]]:
    """(local casing id, peer, confirmed at) of a ``server.federation_store`` store's hits."""
    return [(h.local_casing_id, h.peer, h.confirmed_at) for h in store.hits()]


def add_jurisdictions(view: dict[str, Any], policy: SharingPolicy) -> dict[str, Any]:
    view["jurisdictions"] = sorted({policy.jurisdiction_of(a) for a in view["agencies"]})
    return view


class IntelligenceService(ipb_grpc.IntelligenceServicer):
    def __init__(
        self,
        intel: Intel,
        *,
        auth: Authenticator,
        policy: SharingPolicy,
        audit: AuditLog,
        border_hits: Callable[[], list[tuple[str, str, str]]] | None = None,
    ) -> None:
        self.intel = intel
        self.border_hits = border_hits
        """(local casing id, peer, confirmed at) of the federation's hits, when federated."""
        self.auth = auth
        self.policy = policy
        self.audit = audit

    def _audit(self, call: Call, outcome: str, detail: str) -> None:
        audit_call(self.audit, call, outcome, detail)

    # ------------------------------------------------------------------ helpers
    def _firearm(self, call: Call, firearm_id: str, *, own: bool = False) -> Firearm:
        """The firearm if the caller may see it (NOT_FOUND alike otherwise); ``own``: the
        caller's agency must be the recovering one (PERMISSION_DENIED otherwise)."""
        if not firearm_id:
            raise InvalidRequest("firearm_id is required")
        call.targets.append(f"firearm:{firearm_id}")
        try:
            fa = self.intel.get_firearm(firearm_id)
        except NotFoundError:
            fa = None
        if fa is None or not self.policy.may_see(call.who.agency, fa.agency):
            raise ServiceError(grpc.StatusCode.NOT_FOUND, f"no firearm with id {firearm_id}")
        if own and fa.agency != call.who.agency:
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"firearm {firearm_id} belongs to {fa.agency}; only that agency changes it",
            )
        return fa

    def _firearm_proto(self, call: Call, fa: Firearm) -> ipb.Firearm:
        visible = self.policy.allowed_agencies(call.who.agency)
        store = self.intel.store
        casings = [c for c in fa.test_fires if store.get_casing(c).agency in visible]
        return firearm_to_proto(fa, casings)

    # ------------------------------------------------------------------ firearms
    @_rpc("AddFirearm", Permission.FIREARMS)
    def AddFirearm(
        self, request: ipb.AddFirearmRequest, context: grpc.ServicerContext, call: Call
    ) -> ipb.Firearm:
        with _input_errors():
            fa = self.intel.add_firearm(
                agency=call.who.agency,
                user=call.who.user,
                firearm_id=request.firearm_id or None,
                make=request.make or None,
                model=request.model or None,
                caliber=request.calibre or None,
                serial_number=request.serial_number or None,
                recovered_on=request.recovered_on or None,
                place=request.place or None,
                lat=request.lat if request.HasField("lat") else None,
                lon=request.lon if request.HasField("lon") else None,
                status=request.status or "recovered",
            )
        call.targets.append(f"firearm:{fa.firearm_id}")
        return self._firearm_proto(call, fa)

    @_rpc("GetFirearm", Permission.READ)
    def GetFirearm(
        self, request: ipb.GetFirearmRequest, context: grpc.ServicerContext, call: Call
    ) -> ipb.Firearm:
        return self._firearm_proto(call, self._firearm(call, request.firearm_id))

    @_rpc("SetFirearmStatus", Permission.FIREARMS)
    def SetFirearmStatus(
        self, request: ipb.SetFirearmStatusRequest, context: grpc.ServicerContext, call: Call
    ) -> ipb.Firearm:
        fa = self._firearm(call, request.firearm_id, own=True)
        with _input_errors():
            fa = self.intel.set_status(
                fa.firearm_id, request.status, comment=request.comment, user=call.who.user
            )
        return self._firearm_proto(call, fa)

    @_rpc("AddTestFire", Permission.FIREARMS)
    def AddTestFire(
        self, request: ipb.AddTestFireRequest, context: grpc.ServicerContext, call: Call
    ) -> ipb.Firearm:
        fa = self._firearm(call, request.firearm_id, own=True)
        if not request.casing_id:
            raise InvalidRequest("casing_id is required")
        call.targets.append(request.casing_id)
        try:
            rec = self.intel.store.get_casing(request.casing_id)
        except NotFoundError:
            rec = None
        if rec is None or not self.policy.may_see(call.who.agency, rec.agency):
            raise ServiceError(grpc.StatusCode.NOT_FOUND, f"no casing with id {request.casing_id}")
        if rec.agency != call.who.agency:
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"casing {request.casing_id} belongs to {rec.agency}; a test fire is a casing"
                " the firearm's own agency submitted",
            )
        with _input_errors():
            fa = self.intel.add_test_fire(fa.firearm_id, request.casing_id, user=call.who.user)
        return self._firearm_proto(call, fa)

    @_rpc("AddTrace", Permission.FIREARMS)
    def AddTrace(
        self, request: ipb.AddTraceRequest, context: grpc.ServicerContext, call: Call
    ) -> ipb.Firearm:
        fa = self._firearm(call, request.firearm_id, own=True)
        with _input_errors():
            tr = self.intel.add_trace(
                fa.firearm_id,
                requested_of=request.requested_of,
                requested_at=request.requested_at or None,
                user=call.who.user,
            )
        call.targets.append(f"trace:{tr.trace_id}")
        return self._firearm_proto(call, self.intel.get_firearm(fa.firearm_id))

    @_rpc("UpdateTrace", Permission.FIREARMS)
    def UpdateTrace(
        self, request: ipb.UpdateTraceRequest, context: grpc.ServicerContext, call: Call
    ) -> ipb.Firearm:
        if not request.trace_id:
            raise InvalidRequest("trace_id is required")
        call.targets.append(f"trace:{request.trace_id}")
        try:
            fid = self.intel.trace_firearm(request.trace_id)
        except NotFoundError:
            raise ServiceError(
                grpc.StatusCode.NOT_FOUND, f"no trace request with id {request.trace_id}"
            ) from None
        try:
            fa = self._firearm(call, fid, own=True)
        except ServiceError as e:  # do not reveal the firearm of a trace the caller may not see
            if e.code is grpc.StatusCode.NOT_FOUND:
                raise ServiceError(
                    grpc.StatusCode.NOT_FOUND, f"no trace request with id {request.trace_id}"
                ) from None
            raise
        with _input_errors():
            self.intel.update_trace(
                request.trace_id, status=request.status, outcome=request.outcome, user=call.who.user
            )
        return self._firearm_proto(call, self.intel.get_firearm(fa.firearm_id))

    @_rpc("SetIncidentLocation", Permission.FIREARMS)
    def SetIncidentLocation(
        self, request: ipb.SetIncidentLocationRequest, context: grpc.ServicerContext, call: Call
    ) -> ipb.SetIncidentLocationResponse:
        if not request.incident_id:
            raise InvalidRequest("incident_id is required")
        call.targets.append(f"incident:{request.incident_id}")
        with _input_errors():
            self.intel.set_incident_location(
                call.who.agency, request.incident_id, request.lat, request.lon
            )
        return ipb.SetIncidentLocationResponse()

    # ------------------------------------------------------------------ series and reports
    @_rpc("ListSeries", Permission.INTEL)
    def ListSeries(
        self, request: ipb.ListSeriesRequest, context: grpc.ServicerContext, call: Call
    ) -> ipb.ListSeriesResponse:
        visible = self.policy.allowed_agencies(call.who.agency)
        views = [add_jurisdictions(v, self.policy) for v in self.intel.list_series(visible)]
        return ipb.ListSeriesResponse(series_json=json.dumps(views, sort_keys=True))

    @_rpc("GetSeries", Permission.INTEL)
    def GetSeries(
        self, request: ipb.GetSeriesRequest, context: grpc.ServicerContext, call: Call
    ) -> ipb.SeriesReport:
        viewer = call.who.agency
        visible = self.policy.allowed_agencies(viewer)
        for name in ("series_id", "incident_id", "casing_id", "firearm_id"):
            if getattr(request, name):
                call.targets.append(f"{name.removesuffix('_id')}:{getattr(request, name)}")
        with _input_errors():
            view = find_series_for(
                self.intel,
                visible,
                viewer,
                series_id=request.series_id,
                incident_id=request.incident_id,
                casing_id=request.casing_id,
                firearm_id=request.firearm_id,
            )
        add_jurisdictions(view, self.policy)
        call.targets.append(f"series:{view['series_id']}")
        return ipb.SeriesReport(
            series_json=json.dumps(view, sort_keys=True),
            csv=out.series_csv(view),
            html=out.series_html(view) if request.with_html else "",
            png=out.series_png(view) if request.with_png else b"",
        )

    @_rpc("GetReport", Permission.INTEL)
    def GetReport(
        self, request: ipb.ReportRequest, context: grpc.ServicerContext, call: Call
    ) -> ipb.HubReport:
        visible = self.policy.allowed_agencies(call.who.agency)
        call.targets.append(f"period:{request.date_from or '-'}..{request.date_to or '-'}")
        with _input_errors():
            rep = self.intel.report(
                visible,
                self.policy.jurisdiction_of,
                date_from=request.date_from or None,
                date_to=request.date_to or None,
                jurisdictions=list(request.jurisdictions) or None,
                border_hits=self.border_hits() if self.border_hits else (),
            )
        return ipb.HubReport(
            report_json=json.dumps(rep, sort_keys=True),
            csv=out.report_csv(rep),
            png=out.report_png(rep) if request.with_png else b"",
        )


def find_series_for(
    intel: Intel,
    visible: set[str] | frozenset[str],
    viewer: str,
    *,
    series_id: str = "",
    incident_id: str = "",
    casing_id: str = "",
    firearm_id: str = "",
) -> dict[str, Any]:
    """The series named one way, as ``viewer`` (seeing ``visible``) may see it; an incident
    id is the viewer's own incident of that name, else a visible agency's."""
    given = [bool(x) for x in (series_id, incident_id, casing_id, firearm_id)]
    if sum(given) != 1:
        raise IntelError(
            "name the series one way: a series id, --incident-id, --casing-id or --firearm-id"
        )
    if incident_id:
        owners = [a for a in intel.store.incident_owners(incident_id) if a in visible]
        if viewer in owners:
            owners = [viewer]
        for owner in owners:
            try:
                return intel.find_series(visible, incident=(owner, incident_id))
            except NotFoundError:
                continue
        raise NotFoundError(f"no series with incident {incident_id} (or none you may see)")
    return intel.find_series(
        visible,
        series_id=series_id or None,
        casing_id=casing_id or None,
        firearm_id=firearm_id or None,
    )
