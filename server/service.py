"""The Matching servicer: each RPC is proto -> domain, one backend call, domain -> proto.

Every handler runs inside :func:`_rpc`, which authenticates the caller, checks the role,
maps every exception to a gRPC status (never ``UNKNOWN``) and writes exactly one audit record
per call, allowed or refused. The sharing policy is applied here *before* the backend is asked
(``allowed_agencies`` goes into the index filter), so nothing outside the policy is scored.

The backend is anything that satisfies :class:`Backend`; ``server.app.CatalogBackend`` adapts
the embedded ``index.Catalog``, and the tests use a small in-memory fake for the machinery.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.message import Message

from ballistics.errors import BallisticsError, ScanTooLargeError

from .audit import AuditLog, peer_of
from .auth import Authenticator, AuthError, Identity, Permission
from .policy import SharingPolicy
from .proto_gen import matching_pb2 as pb
from .proto_gen import matching_pb2_grpc as pb_grpc
from .validation import (
    VERDICTS,
    InvalidRequest,
    check_date,
    check_decodable,
    check_firing_pin_class,
    check_ids,
    check_non_negative,
    length_unit,
    light_fields,
    spacing_or_none,
    truncate_detail,
    validate_message,
    verdict_name,
)

log = logging.getLogger("ballistics.server")

MiB = 1024 * 1024
VERDICT_CODES = {v: k for k, v in VERDICTS.items()}


# ------------------------------------------------------------------------- domain types


@dataclass
class SubmitMeta:
    agency_case_number: str = ""
    incident_id: str = ""
    calibre: str = ""
    firing_pin_class: str = ""
    acquisition_date: str = ""
    place: str = ""
    file_name: str = ""
    format: str = ""
    pixel_spacing_m: float | None = None
    search_after_submit: bool = True
    max_results: int = 0
    length_unit: str = "m"
    light: str = "auto"
    """Light of a 2-D image: auto (detected), ring, side, coaxial (ignored for 3-D scans)."""
    light_azimuth_deg: float | None = None
    """A side light's image-frame azimuth (degrees); None: not given."""


@dataclass
class CasingRecord:
    casing_id: str
    agency: str
    sha256: str = ""
    incident_id: str = ""
    agency_case_number: str = ""
    calibre: str = ""
    firing_pin_class: str = ""
    acquisition_date: str = ""
    place: str = ""
    file_name: str = ""
    submitted_by: str = ""
    submitted_at: str = ""
    size_bytes: int = 0
    segmentation: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] | None = None


@dataclass
class CandidateRec:
    """None: not known (not compared, not screened, no calibration); sent unset, never 0."""

    casing_id: str
    region: str
    score: float | None
    coarse_score: float = 0.0
    cmc: int | None = None
    non_match_frequency: float | None = None
    incident_id: str = ""
    agency: str = ""
    screen_score: float | None = None
    rescored: bool = True
    identical_file: bool = False
    quality: dict[str, Any] | None = None
    low_confidence: bool = False
    low_confidence_reasons: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)


@dataclass
class SearchResult:
    query_casing_id: str = ""
    regions: dict[str, list[CandidateRec]] = field(default_factory=dict)
    combined: list[CandidateRec] = field(default_factory=list)
    partial: bool = False
    scored: int = 0
    screened_out: int = 0
    identical: list[CandidateRec] = field(default_factory=list)
    """Visible casings with the query's very file (same SHA-256): not ranked."""
    query_quality: dict[str, Any] | None = None


@dataclass
class ComparisonResult:
    score: float
    cmc: int = 0
    rotation_deg: float = 0.0
    dx_m: float = 0.0
    dy_m: float = 0.0
    regions: dict[str, float] = field(default_factory=dict)
    cells: list[dict[str, Any]] = field(default_factory=list)
    non_match_frequency: float | None = None  # None: no calibration for this kind of scan
    png: bytes = b""
    detail: dict[str, Any] = field(default_factory=dict)
    quality_a: dict[str, Any] | None = None
    quality_b: dict[str, Any] | None = None
    low_confidence: bool = False
    low_confidence_reasons: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)


@dataclass
class DecisionRec:
    decision_id: str
    casing_id: str
    candidate_id: str
    verdict: str  # "hit" | "excluded" | "inconclusive"
    comment: str = ""
    examiner: str = ""
    agency: str = ""
    time: str = ""
    supersedes: str = ""


@dataclass
class IncidentNodeRec:
    incident_id: str
    agency: str = ""
    casing_ids: list[str] = field(default_factory=list)


@dataclass
class HitEdgeRec:
    incident_a: str
    incident_b: str
    casing_a: str = ""
    casing_b: str = ""
    examiner: str = ""
    agency: str = ""
    time: str = ""
    decision_id: str = ""


@dataclass
class LinkGraphRec:
    nodes: list[IncidentNodeRec] = field(default_factory=list)
    edges: list[HitEdgeRec] = field(default_factory=list)


@dataclass
class LeadRec:
    """A lead (``index.store.Lead``); None: not known, sent unset."""

    lead_id: str
    casing_a: str
    casing_b: str
    agency_a: str = ""
    agency_b: str = ""
    incident_a: str = ""
    incident_b: str = ""
    score: float | None = None
    cmc: int | None = None
    non_match_frequency: float | None = None
    screen_score: float | None = None
    quality_a: dict[str, Any] | None = None
    quality_b: dict[str, Any] | None = None
    low_confidence: bool = False
    low_confidence_reasons: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    created_at: str = ""
    state: str = "new"
    decision_id: str = ""
    decided_at: str = ""
    decided_by_agency: str = ""


@dataclass
class LeadsResult:
    leads: list[LeadRec] = field(default_factory=list)
    jobs: dict[str, int] = field(default_factory=dict)
    """Correlation jobs by state: pending, running, done, failed."""


#: Lead states a ListLeads request may filter on (index.store.LEAD_STATES).
LEAD_STATES = ("new", "reviewed", "confirmed", "excluded")


@dataclass(frozen=True)
class SearchQuery:
    casing_id: str | None = None
    file: bytes | None = None
    file_name: str = ""
    pixel_spacing_m: float | None = None
    calibre: str = ""
    date_from: str = ""
    date_to: str = ""
    top: int = 10
    length_unit: str = "m"
    light: str = "auto"
    """Light of a 2-D image: auto (detected), ring, side, coaxial (ignored for 3-D scans)."""
    light_azimuth_deg: float | None = None
    """A side light's image-frame azimuth (degrees); None: not given."""


class Backend(Protocol):
    """What the service needs from the store. Unknown ids raise :class:`LookupError`;
    bad input raises :class:`ballistics.errors.BallisticsError`."""

    def submit(
        self, upload: Path, meta: SubmitMeta, *, agency: str, user: str, size: int, sha256: str
    ) -> CasingRecord: ...

    def search(
        self, query: SearchQuery, *, allowed_agencies: set[str], deadline: float | None
    ) -> SearchResult: ...

    def get(self, casing_id: str) -> CasingRecord: ...

    def list(
        self, *, agencies: set[str], incident_id: str, calibre: str, limit: int, offset: int
    ) -> list[CasingRecord]: ...

    def compare(
        self, casing_a: str, casing_b: str, *, picture: bool, deadline: float | None
    ) -> ComparisonResult: ...

    def decide(
        self,
        casing_id: str,
        candidate_id: str,
        verdict: str,
        comment: str,
        *,
        examiner: str,
        agency: str,
    ) -> DecisionRec: ...

    def links(
        self,
        *,
        casing_id: str | None,
        incident_id: str | None,
        viewer: str = "",
        visible: set[str] | None = None,
    ) -> LinkGraphRec:
        """Hit graph from a casing or the viewer's incident, through ``visible`` agencies only.

        Incidents are scoped per agency: ``incident_id`` means the viewer's own incident of that
        name, else the visible agencies' ones; none of those raises :class:`LookupError`.
        """
        ...

    def delete(self, casing_id: str, *, reason: str, user: str) -> bool: ...

    def leads(
        self,
        *,
        visible: set[str],
        state: str | None,
        limit: int,
        offset: int,
        casing_id: str | None = None,
    ) -> LeadsResult:
        """Leads whose two casings both belong to ``visible`` agencies (``casing_id``: only
        that casing's; :class:`LookupError` when it is absent or not of a visible agency),
        and the correlation jobs of those agencies' casings by state."""
        ...


@dataclass(frozen=True)
class ServiceLimits:
    """Caps the service enforces before the pipeline sees anything.

    ``max_pixels``: largest scan decoded per request (default 16 million, 4000 x 4000, about
    1.2 GB of working memory at ``ballistics.limits.Limits.working_bytes_per_pixel``).
    ``memory_budget_bytes``: working memory shared by all concurrent requests; each reserves
    its scan's declared size before decoding (server.interceptors). ``upload_idle_timeout_s``,
    ``upload_min_rate_bytes_s`` (average, checked after ``upload_rate_grace_s``) and
    ``max_concurrent_uploads`` keep slow or stalled uploads from holding the workers.
    """

    max_upload_bytes: int = 256 * MiB
    max_pixels: int = 16_000_000
    memory_budget_bytes: int = 2048 * MiB
    upload_idle_timeout_s: float = 30.0
    upload_min_rate_bytes_s: float = 16 * 1024
    upload_rate_grace_s: float = 10.0
    max_concurrent_uploads: int = 4
    default_results: int = 10
    max_results: int = 200
    max_list: int = 1000
    default_deadline_s: float = 120.0  # re-ranking budget when the client sets no deadline
    spool_dir: str | None = None  # where uploads are spooled (default: the system temp dir)


class ServiceError(Exception):
    """A refusal decided in the service layer, with its status (not for bad input: that is
    :class:`server.validation.InvalidRequest`, ``INVALID_ARGUMENT``)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status for an exception raised while handling a call (never UNKNOWN), with a
    bounded message.

    Only input errors (:class:`BallisticsError`, including
    :class:`server.validation.InvalidRequest`) are ``INVALID_ARGUMENT``; a built-in
    ``ValueError`` from elsewhere is a bug: ``INTERNAL``.
    """
    code, message = _status_for(exc)
    return code, truncate_detail(message)


def _status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, AuthError | ServiceError):
        return exc.code, str(exc)
    if isinstance(exc, ScanTooLargeError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    if isinstance(exc, BallisticsError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, LookupError):
        msg = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
        return grpc.StatusCode.NOT_FOUND, msg
    if isinstance(exc, PermissionError):
        return grpc.StatusCode.PERMISSION_DENIED, str(exc)
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(exc) or "deadline exceeded"
    if isinstance(exc, MemoryError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, "out of memory for this request"
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the server log"


@dataclass
class Call:
    """Per-call state the wrapper audits: who, and which ids the call touched."""

    method: str
    identity: Identity | None = None
    targets: list[str] = field(default_factory=list)
    peer: str = ""

    @property
    def who(self) -> Identity:
        assert self.identity is not None  # set by _rpc before the handler runs
        return self.identity


def audit_call(audit: AuditLog, call: Call, outcome: str, detail: str) -> None:
    """Append one record of ``call`` to the audit log; a log that cannot be written refuses
    the call (UNAVAILABLE): no record, no answer."""
    ident = call.identity
    try:
        audit.append(
            user=ident.user if ident else "",
            agency=ident.agency if ident else "",
            method=call.method,
            targets=call.targets,
            outcome=outcome,
            detail=detail,
            peer=call.peer,
        )
    except Exception as exc:
        log.exception("audit write failed")
        raise ServiceError(
            grpc.StatusCode.UNAVAILABLE, "audit log unavailable; call refused"
        ) from exc


_R = TypeVar("_R")


class Audited(Protocol):
    """What :func:`_rpc` needs of a servicer: the authenticator and the audit writer."""

    auth: Authenticator

    def _audit(self, call: Call, outcome: str, detail: str) -> None: ...


_S = TypeVar("_S", bound=Audited)
_Handler = Callable[[_S, Any, grpc.ServicerContext, Call], _R]


def _rpc(
    method: str, permission: Permission
) -> Callable[[_Handler[_S, _R]], Callable[[_S, Any, grpc.ServicerContext], _R]]:
    def deco(fn: _Handler[_S, _R]) -> Callable[[_S, Any, grpc.ServicerContext], _R]:
        @functools.wraps(fn)
        def wrapper(self: _S, request: Any, context: grpc.ServicerContext) -> _R:
            call = Call(method, peer=peer_of(context))
            try:
                check_ids(request)  # before anything else: a 70 KB id is never audited
                call.identity = self.auth.authenticate(context)
                if not call.identity.can(permission):
                    raise AuthError(
                        grpc.StatusCode.PERMISSION_DENIED,
                        f"role {call.identity.role!r} may not {permission.value}",
                    )
                check_decodable(request)  # streams: per message by server.interceptors
                if isinstance(request, Message):
                    validate_message(request)
                result = fn(self, request, context, call)
            except Exception as exc:
                code, message = status_for(exc)
                if code is grpc.StatusCode.INTERNAL:
                    log.exception("%s failed", method)
                try:
                    self._audit(call, code.name, message)
                except ServiceError as audit_exc:  # the refusal stands; say the log failed too
                    code, message = audit_exc.code, f"{message} ({audit_exc})"
                context.abort(code, message)
            try:  # nothing is returned unless its audit record is written
                self._audit(call, "OK", "")
            except ServiceError as audit_exc:
                context.abort(audit_exc.code, str(audit_exc))
            return result

        return wrapper

    return deco


class MatchingService(pb_grpc.MatchingServicer):
    def __init__(
        self,
        backend: Backend,
        *,
        auth: Authenticator,
        policy: SharingPolicy,
        audit: AuditLog,
        limits: ServiceLimits | None = None,
    ) -> None:
        self.backend = backend
        self.auth = auth
        self.policy = policy
        self.audit = audit
        self.limits = limits or ServiceLimits()

    # ------------------------------------------------------------------ helpers

    def _audit(self, call: Call, outcome: str, detail: str) -> None:
        audit_call(self.audit, call, outcome, detail)

    def _begin(self, call: Call) -> None:
        """Audit a STARTED record before a side effect: no record, no side effect (UNAVAILABLE)."""
        self._audit(call, "STARTED", "")

    def _visible(self, call: Call, casing_id: str) -> CasingRecord:
        """The stored casing, if the caller's agency may see it.

        Unknown and not-visible answer alike (NOT_FOUND, same message): no existence oracle.
        """
        if not casing_id:
            raise InvalidRequest("casing id is required")
        try:
            rec: CasingRecord | None = self.backend.get(casing_id)
        except LookupError:
            rec = None
        if rec is None or not self.policy.may_see(call.who.agency, rec.agency):
            raise ServiceError(grpc.StatusCode.NOT_FOUND, f"no casing with id {casing_id}")
        return rec

    def _deadline(self, context: grpc.ServicerContext) -> float:
        remaining = context.time_remaining()
        budget = self.limits.default_deadline_s
        if remaining is not None:
            budget = min(budget, max(0.0, remaining - 0.05))  # leave time to send the reply
        return time.monotonic() + budget

    def _top(self, requested: int) -> int:
        check_non_negative("max_results", requested)
        return min(requested or self.limits.default_results, self.limits.max_results)

    def _spool(self, chunks: Iterator[pb.SubmitRequest]) -> tuple[Path, int, str]:
        """Stream chunks into a size-capped temp file; return (path, size, sha256).

        Memory stays at one chunk whatever the upload size; the file is removed if the
        upload fails or exceeds the cap.
        """
        cap = self.limits.max_upload_bytes
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=self.limits.spool_dir)
        path = Path(name)
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for msg in chunks:
                    if msg.WhichOneof("part") != "chunk":
                        raise InvalidRequest("metadata may only be sent once, as the first message")
                    size += len(msg.chunk)
                    if size > cap:
                        raise ServiceError(
                            grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"upload exceeds the limit of {cap:,} bytes; nothing was stored",
                        )
                    digest.update(msg.chunk)
                    out.write(msg.chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path, size, digest.hexdigest()

    # ------------------------------------------------------------------ RPCs

    @_rpc("SubmitCasing", Permission.SUBMIT)
    def SubmitCasing(
        self,
        request_iterator: Iterator[pb.SubmitRequest],
        context: grpc.ServicerContext,
        call: Call,
    ) -> pb.SubmitResponse:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "metadata":
            raise InvalidRequest("the first message must carry the metadata")
        check_ids(first.metadata)
        meta = submit_meta_from_proto(first.metadata)
        call.targets.append(f"incident:{meta.incident_id}" if meta.incident_id else "")
        path, size, sha = self._spool(request_iterator)
        try:
            if size == 0:
                raise InvalidRequest("the upload is empty")
            call.targets.append(f"sha256:{sha}")
            self._begin(call)  # a casing killed in flight is still named (by sha256) in the log
            rec = self.backend.submit(
                path, meta, agency=call.who.agency, user=call.who.user, size=size, sha256=sha
            )
        finally:
            path.unlink(missing_ok=True)
        call.targets.append(rec.casing_id)
        resp = pb.SubmitResponse(
            casing_id=rec.casing_id,
            sha256=rec.sha256 or sha,
            size_bytes=rec.size_bytes or size,
            segmentation=segmentation_to_proto(rec.segmentation),
        )
        if meta.search_after_submit:
            result = self.backend.search(
                SearchQuery(casing_id=rec.casing_id, top=self._top(meta.max_results)),
                allowed_agencies=self.policy.allowed_agencies(call.who.agency),
                deadline=self._deadline(context),
            )
            resp.search.CopyFrom(search_to_proto(result))
        return resp

    @_rpc("Search", Permission.SEARCH)
    def Search(
        self, request: pb.SearchRequest, context: grpc.ServicerContext, call: Call
    ) -> pb.SearchResponse:
        f = request.filters
        check_date("date_from", f.date_from)
        check_date("date_to", f.date_to)
        kind = request.WhichOneof("query")
        if kind == "casing_id":
            call.targets.append(request.casing_id)
            self._visible(call, request.casing_id)
        elif kind == "file":
            if len(request.file) > self.limits.max_upload_bytes:
                raise ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, "search file too large")
        else:
            raise InvalidRequest("give a casing_id or the file to search with")
        query = SearchQuery(
            casing_id=request.casing_id if kind == "casing_id" else None,
            file=request.file if kind == "file" else None,
            file_name=request.file_name,
            pixel_spacing_m=spacing_or_none("pixel_spacing_m", request.pixel_spacing_m),
            length_unit=length_unit("length_unit", request.length_unit),
            **light_fields(request),
            calibre=f.calibre,
            date_from=f.date_from,
            date_to=f.date_to,
            top=self._top(f.max_results),
        )
        allowed = self.policy.allowed_agencies(
            call.who.agency, jurisdictions=list(f.jurisdictions) or None
        )
        result = self.backend.search(
            query, allowed_agencies=allowed, deadline=self._deadline(context)
        )
        return search_to_proto(result)

    @_rpc("Compare", Permission.COMPARE)
    def Compare(
        self, request: pb.CompareRequest, context: grpc.ServicerContext, call: Call
    ) -> pb.CompareResponse:
        call.targets += [request.casing_a, request.casing_b]
        self._visible(call, request.casing_a)
        self._visible(call, request.casing_b)
        c = self.backend.compare(
            request.casing_a,
            request.casing_b,
            picture=not request.omit_picture,
            deadline=self._deadline(context),
        )
        return comparison_to_proto(request.casing_a, request.casing_b, c)

    @_rpc("Decide", Permission.DECIDE)
    def Decide(
        self, request: pb.DecideRequest, context: grpc.ServicerContext, call: Call
    ) -> pb.Decision:
        call.targets += [request.casing_id, request.candidate_id]
        verdict = verdict_name(request.verdict)
        if request.casing_id == request.candidate_id:
            raise InvalidRequest("a casing cannot be compared with itself")
        self._visible(call, request.casing_id)
        self._visible(call, request.candidate_id)
        self._begin(call)
        d = self.backend.decide(
            request.casing_id,
            request.candidate_id,
            verdict,
            request.comment,
            examiner=call.who.user,
            agency=call.who.agency,
        )
        call.targets.append(d.decision_id)
        return decision_to_proto(d)

    @_rpc("Links", Permission.LINKS)
    def Links(
        self, request: pb.LinksRequest, context: grpc.ServicerContext, call: Call
    ) -> pb.LinkGraph:
        kind = request.WhichOneof("subject")
        viewer, visible = call.who.agency, self.policy.allowed_agencies(call.who.agency)
        if kind == "casing_id":
            call.targets.append(request.casing_id)
            self._visible(call, request.casing_id)
            graph = self.backend.links(
                casing_id=request.casing_id, incident_id=None, viewer=viewer, visible=visible
            )
        elif kind == "incident_id" and request.incident_id:
            # the caller's own incident of that name, else a visible agency's (never another's)
            call.targets.append(f"incident:{request.incident_id}")
            graph = self.backend.links(
                casing_id=None, incident_id=request.incident_id, viewer=viewer, visible=visible
            )
        else:
            raise InvalidRequest("give a casing_id or incident_id")
        return self._graph_to_proto(call, graph)

    @_rpc("GetCasing", Permission.READ)
    def GetCasing(
        self, request: pb.GetCasingRequest, context: grpc.ServicerContext, call: Call
    ) -> pb.Casing:
        call.targets.append(request.casing_id)
        return casing_to_proto(self._visible(call, request.casing_id))

    @_rpc("ListCasings", Permission.READ)
    def ListCasings(
        self, request: pb.ListCasingsRequest, context: grpc.ServicerContext, call: Call
    ) -> pb.ListCasingsResponse:
        check_non_negative("limit", request.limit)
        check_non_negative("offset", request.offset)
        recs = self.backend.list(
            agencies=self.policy.allowed_agencies(call.who.agency),
            incident_id=request.incident_id,
            calibre=request.calibre,
            limit=min(request.limit or 100, self.limits.max_list),
            offset=request.offset,
        )
        return pb.ListCasingsResponse(casings=[casing_to_proto(r) for r in recs])

    @_rpc("DeleteCasing", Permission.DELETE)
    def DeleteCasing(
        self, request: pb.DeleteCasingRequest, context: grpc.ServicerContext, call: Call
    ) -> pb.DeleteCasingResponse:
        call.targets.append(request.casing_id)
        if not request.reason.strip():
            raise InvalidRequest("a reason is required to delete")
        rec = self._visible(call, request.casing_id)
        if rec.agency != call.who.agency:
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"casing {request.casing_id} was submitted by {rec.agency}; only its own"
                " agency's administrator may delete it",
            )
        self._begin(call)
        deleted = self.backend.delete(request.casing_id, reason=request.reason, user=call.who.user)
        return pb.DeleteCasingResponse(casing_id=request.casing_id, deleted=deleted)

    @_rpc("ListLeads", Permission.LEADS)
    def ListLeads(
        self, request: pb.ListLeadsRequest, context: grpc.ServicerContext, call: Call
    ) -> pb.ListLeadsResponse:
        check_non_negative("limit", request.limit)
        check_non_negative("offset", request.offset)
        if request.state and request.state not in LEAD_STATES:
            raise InvalidRequest(f"state must be one of {', '.join(LEAD_STATES)} (or empty)")
        visible = self.policy.allowed_agencies(call.who.agency)
        res = self.backend.leads(
            visible=visible,
            state=request.state or None,
            limit=min(request.limit or 100, self.limits.max_list),
            offset=request.offset,
            casing_id=request.casing_id or None,
        )
        out = pb.ListLeadsResponse(
            jobs=pb.CorrelationProgress(**{k: int(res.jobs.get(k, 0)) for k in _JOB_STATES})
        )
        for ld in res.leads:
            # the backend filtered already; a lead is never shown unless both casings are
            if ld.agency_a not in visible or ld.agency_b not in visible:
                continue
            if ld.decided_by_agency and ld.decided_by_agency not in visible:
                ld.decision_id = ld.decided_at = ""  # the state shows; who decided does not
            out.leads.append(lead_to_proto(ld))
        return out

    def _graph_to_proto(self, call: Call, graph: LinkGraphRec) -> pb.LinkGraph:
        """Only incidents of agencies the caller may see, and hits between them.

        A hit decided by an examiner of an agency the caller may not see keeps its link (both
        casings are visible) but not who decided it.
        """
        allowed = self.policy.allowed_agencies(call.who.agency)
        nodes = [n for n in graph.nodes if n.agency in allowed]
        seen = {n.incident_id for n in nodes}
        visible_casings = {c for n in nodes for c in n.casing_ids}
        out = pb.LinkGraph()
        for n in nodes:
            out.nodes.add(
                incident_id=n.incident_id,
                agency=n.agency,
                jurisdiction=self.policy.jurisdiction_of(n.agency),
                casing_ids=n.casing_ids,
            )
        for e in graph.edges:
            if e.incident_a not in seen or e.incident_b not in seen:
                continue
            if e.casing_a and e.casing_b and not {e.casing_a, e.casing_b} <= visible_casings:
                continue
            fields = _fields(e)
            if e.agency not in allowed:
                fields.update(examiner="", agency="", decision_id="")
            out.edges.add(**fields)
        return out


# ------------------------------------------------------------------------- conversions


def _fields(obj: Any) -> dict[str, Any]:
    return dict(obj.__dict__)


def submit_meta_from_proto(m: pb.SubmitMetadata) -> SubmitMeta:
    check_date("acquisition_date", m.acquisition_date)
    check_firing_pin_class(m.firing_pin_class)
    check_non_negative("max_results", m.max_results)
    return SubmitMeta(
        agency_case_number=m.agency_case_number,
        incident_id=m.incident_id,
        calibre=m.calibre,
        firing_pin_class=m.firing_pin_class,
        acquisition_date=m.acquisition_date,
        place=m.place,
        file_name=Path(m.file_name).name if m.file_name else "",
        format=m.format.lower(),
        pixel_spacing_m=spacing_or_none("pixel_spacing_m", m.pixel_spacing_m),
        search_after_submit=m.search_after_submit if m.HasField("search_after_submit") else True,
        max_results=m.max_results,
        length_unit=length_unit("length_unit", m.length_unit),
        **light_fields(m),
    )


def _num(d: dict[str, Any], key: str, index: int | None = None) -> float:
    v = d.get(key)
    if index is not None and isinstance(v, list | tuple) and len(v) > index:
        v = v[index]
    try:
        return float(v) if v is not None else 0.0
    except (TypeError, ValueError):
        return 0.0


def segmentation_to_proto(seg: dict[str, Any]) -> pb.Segmentation:
    if not seg:
        return pb.Segmentation()
    return pb.Segmentation(
        primer_center_row=_num(seg, "primer_center", 0),
        primer_center_col=_num(seg, "primer_center", 1),
        primer_radius_px=_num(seg, "primer_radius"),
        firing_pin_shape=str(seg.get("firing_pin_shape") or ""),
        firing_pin_center_row=_num(seg, "firing_pin_center", 0),
        firing_pin_center_col=_num(seg, "firing_pin_center", 1),
        firing_pin_radius_px=_num(seg, "firing_pin_radius"),
        precropped=bool(seg.get("precropped", False)),
        summary_json=json.dumps(seg, sort_keys=True, default=str),
    )


def quality_to_proto(q: dict[str, Any] | None) -> pb.Quality | None:
    """The proto of a quality record (``ballistics.quality``); None when there is none."""
    if not q:
        return None
    out = pb.Quality(
        valid_fraction=_num(q, "valid_fraction"),
        texture_rms=_num(q, "texture_rms"),
        texture_unit=str(q.get("texture_unit") or ""),
        noise_rms=_num(q, "noise_rms"),
        contact_coverage=_num(q, "contact_coverage"),
        low_confidence=bool(q.get("low_confidence", False)),
        reasons=[str(r) for r in q.get("reasons") or []],
        detail_json=json.dumps(q, sort_keys=True, default=str),
    )
    if q.get("segmentation_confidence") is not None:
        out.segmentation_confidence = _num(q, "segmentation_confidence")
    return out


def _known(value: float | None) -> float | None:
    """A float for an optional proto field: None (unknown) leaves the field unset."""
    return None if value is None else float(value)


def _candidates(region: str, cands: list[CandidateRec], ranked: bool = True) -> pb.CandidateList:
    out = pb.CandidateList(region=region)
    for i, c in enumerate(cands, start=1):
        out.candidates.add(
            rank=i if ranked else 0,
            quality=quality_to_proto(c.quality),
            low_confidence=bool(c.low_confidence),
            low_confidence_reasons=list(c.low_confidence_reasons),
            flags=list(c.flags),
            casing_id=c.casing_id,
            region=c.region or region,
            coarse_score=float(c.coarse_score),
            score=_known(c.score),
            cmc=None if c.cmc is None else int(c.cmc),
            non_match_frequency=_known(c.non_match_frequency),
            incident_id=c.incident_id,
            agency=c.agency,
            screen_score=_known(c.screen_score),
            rescored=bool(c.rescored),
            identical_file=bool(c.identical_file),
        )
    return out


def search_to_proto(r: SearchResult) -> pb.SearchResponse:
    return pb.SearchResponse(
        query_casing_id=r.query_casing_id,
        regions=[_candidates(region, c) for region, c in sorted(r.regions.items())],
        combined=_candidates("combined", r.combined),
        partial=r.partial,
        scored=r.scored,
        screened_out=r.screened_out,
        identical=_candidates("combined", r.identical, ranked=False).candidates,
        query_quality=quality_to_proto(r.query_quality),
    )


def comparison_to_proto(a: str, b: str, c: ComparisonResult) -> pb.CompareResponse:
    resp = pb.CompareResponse(
        casing_a=a,
        casing_b=b,
        score=float(c.score),
        cmc=int(c.cmc),
        rotation_deg=float(c.rotation_deg),
        dx_m=float(c.dx_m),
        dy_m=float(c.dy_m),
        region_scores={k: float(v) for k, v in c.regions.items()},
        non_match_frequency=_known(c.non_match_frequency),
        png=c.png,
        detail_json=json.dumps(c.detail, sort_keys=True, default=str) if c.detail else "",
        quality_a=quality_to_proto(c.quality_a),
        quality_b=quality_to_proto(c.quality_b),
        low_confidence=bool(c.low_confidence),
        low_confidence_reasons=list(c.low_confidence_reasons),
        flags=list(c.flags),
        light_json=json.dumps(c.detail["light"], sort_keys=True) if c.detail.get("light") else "",
    )
    for cell in c.cells:
        resp.cells.add(
            row=int(cell.get("row", 0)),
            col=int(cell.get("col", 0)),
            ccf=float(cell.get("ccf", 0.0)),
            rotation_deg=float(cell.get("rotation_deg", cell.get("theta_deg", 0.0))),
            dx_m=float(cell.get("dx_m", 0.0)),
            dy_m=float(cell.get("dy_m", 0.0)),
            congruent=bool(cell.get("congruent", False)),
        )
    return resp


_JOB_STATES = ("pending", "running", "done", "failed")


def lead_to_proto(ld: LeadRec) -> pb.Lead:
    return pb.Lead(
        lead_id=ld.lead_id,
        casing_a=ld.casing_a,
        casing_b=ld.casing_b,
        agency_a=ld.agency_a,
        agency_b=ld.agency_b,
        incident_a=ld.incident_a,
        incident_b=ld.incident_b,
        score=_known(ld.score),
        cmc=None if ld.cmc is None else int(ld.cmc),
        non_match_frequency=_known(ld.non_match_frequency),
        screen_score=_known(ld.screen_score),
        quality_a=quality_to_proto(ld.quality_a),
        quality_b=quality_to_proto(ld.quality_b),
        low_confidence=bool(ld.low_confidence),
        low_confidence_reasons=list(ld.low_confidence_reasons),
        flags=list(ld.flags),
        created_at=ld.created_at,
        state=ld.state,
        decision_id=ld.decision_id,
        decided_at=ld.decided_at,
    )


def decision_to_proto(d: DecisionRec) -> pb.Decision:
    fields = _fields(d)
    fields["verdict"] = VERDICT_CODES.get(d.verdict, pb.VERDICT_UNSPECIFIED)
    return pb.Decision(**fields)


def casing_to_proto(r: CasingRecord) -> pb.Casing:
    fields = _fields(r)
    fields.pop("size_bytes", None)
    fields["segmentation"] = segmentation_to_proto(r.segmentation)
    fields["quality"] = quality_to_proto(r.quality)
    return pb.Casing(**fields)
