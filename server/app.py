"""Build and run the gRPC server: servicer, health, limits, TLS, graceful shutdown.

``create_server(backend, "127.0.0.1:0", auth=..., policy=..., audit=..., limits=...)``
returns ``(server, port)``; ``server.start()``, then ``server.stop(grace)`` turns health to
NOT_SERVING, stops accepting calls and lets in-flight calls (submissions included) finish.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ballistics.limits import MemoryBudget

from .audit import AuditLog, load_key, reconcile_stored
from .auth import AuthConfigError, Authenticator, TlsConfig, check_tls_auth
from .interceptors import HEALTH_THREADS, RefusalAuditor, ServerGuard
from .policy import SharingPolicy
from .proto_gen import matching_pb2, matching_pb2_grpc
from .service import (
    Backend,
    CandidateRec,
    CasingRecord,
    ComparisonResult,
    DecisionRec,
    HitEdgeRec,
    IncidentNodeRec,
    LeadRec,
    LeadsResult,
    LinkGraphRec,
    MatchingService,
    SearchQuery,
    SearchResult,
    ServiceLimits,
    SubmitMeta,
)

if TYPE_CHECKING:  # the index (FAISS, the pipeline) is imported when a backend is opened
    from index.engine import Engine
    from index.service import Catalog

    from .federation import FederationNode

log = logging.getLogger("ballistics.server")

SERVICE_NAME = matching_pb2.DESCRIPTOR.services_by_name["Matching"].full_name
MESSAGE_OVERHEAD = 1024 * 1024


class ServerStartError(RuntimeError):
    """The server cannot start (port taken, bad TLS material...); the message says why."""


@dataclass
class Server:
    """A started-or-not gRPC server with its health servicer."""

    grpc_server: grpc.Server
    health: health.HealthServicer
    port: int
    address: str
    budget: MemoryBudget | None = None  # the server-wide working-memory budget
    refusals: RefusalAuditor | None = None
    guard: ServerGuard | None = None  # the limits (server.interceptors)
    federation: FederationNode | None = None  # peers' port (server.federation), if federated
    service: MatchingService | None = None  # the servicer (the review page calls it in-process)
    intel: Any = None  # the Intelligence servicer (server.intel_service), when there is a store

    def start(self) -> None:
        self.grpc_server.start()
        if self.federation is not None:
            self.federation.start()
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float | None = 10.0) -> None:
        """Health -> NOT_SERVING, refuse new calls, wait up to ``grace`` s for in-flight ones."""
        self.health.enter_graceful_shutdown()
        if self.federation is not None:
            self.federation.stop(grace)
        self.grpc_server.stop(grace).wait()
        if self.refusals is not None:
            self.refusals.close()  # queued refusal records are written before the log closes

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return bool(self.grpc_server.wait_for_termination(timeout))


def create_server(
    backend: Backend,
    address: str,
    *,
    auth: Authenticator,
    policy: SharingPolicy,
    audit: AuditLog,
    limits: ServiceLimits | None = None,
    tls: TlsConfig | None = None,
    max_workers: int = 8,
    maximum_concurrent_rpcs: int = 32,
    reflection: bool = False,
    federation: FederationNode | None = None,
) -> tuple[Server, int]:
    """Build the server and bind ``address`` (``host:0`` picks a free port).

    Raises :class:`ServerStartError` if the address is taken (SO_REUSEPORT is off, so a second
    server on the same port fails instead of silently sharing it) or TLS material is bad.
    """
    limits = limits or ServiceLimits()
    # Matching calls hold at most max_workers threads (as many again may wait briefly); the
    # executor keeps HEALTH_THREADS more so health checks answer when every worker is busy.
    refusals = RefusalAuditor(audit)  # audits refusals made before or outside a handler
    guard = ServerGuard(limits, workers=max_workers, max_waiting=max_workers, refusals=refusals)
    try:
        check_tls_auth(tls, auth)
    except AuthConfigError as e:
        raise ServerStartError(str(e)) from e
    # A unary Search carries the file itself: allow messages up to the upload cap (+ slack).
    max_msg = min(limits.max_upload_bytes + MESSAGE_OVERHEAD, 2**31 - 1)
    options: Sequence[tuple[str, Any]] = [
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", max_msg),
        ("grpc.max_send_message_length", max_msg),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=2 * max_workers + HEALTH_THREADS, thread_name_prefix="rpc"
        ),
        interceptors=[refusals, guard],
        options=options,
        maximum_concurrent_rpcs=maximum_concurrent_rpcs,
    )
    refusals.attach(server)
    kw: dict[str, Any] = {"auth": auth, "policy": policy, "audit": audit, "limits": limits}
    if federation is None:
        servicer = MatchingService(backend, **kw)
    else:  # Search with a scope, Decide/Compare on peers' candidates (server.federation)
        from .federation import FederatedMatchingService, FederationError

        servicer = FederatedMatchingService(backend, node=federation, **kw)
        try:
            federation.build_server()
        except FederationError as e:
            raise ServerStartError(str(e)) from e
    matching_pb2_grpc.add_MatchingServicer_to_server(servicer, server)
    catalog = getattr(backend, "catalog", None)
    intel_servicer = None
    if catalog is not None:  # firearms, series and reports live in the store (index.intel)
        from index.intel import Intel

        from .intel_service import IntelligenceService, federation_hits
        from .proto_gen import intelligence_pb2_grpc

        node = federation
        intel_servicer = IntelligenceService(
            Intel(catalog.store),
            auth=auth,
            policy=policy,
            audit=audit,
            border_hits=None if node is None else (lambda: federation_hits(node.store)),
        )
        intelligence_pb2_grpc.add_IntelligenceServicer_to_server(intel_servicer, server)
    health_servicer = health.HealthServicer(
        experimental_non_blocking=True,
        experimental_thread_pool=futures.ThreadPoolExecutor(max_workers=1),
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
    if reflection:
        try:
            from grpc_reflection.v1alpha import reflection as refl
        except ImportError as e:
            raise ServerStartError(
                "reflection requested but grpcio-reflection is not installed"
            ) from e
        refl.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, refl.SERVICE_NAME), server
        )
    try:
        if tls is not None:
            port = server.add_secure_port(address, tls.server_credentials())
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as e:
        raise ServerStartError(
            f"cannot listen on {address}: the port is in use or the address is not available ({e})"
        ) from e
    if not port:
        raise ServerStartError(
            f"cannot listen on {address}: the port is in use or the address is not available"
        )
    host = address.rsplit(":", 1)[0]
    return (
        Server(
            server,
            health_servicer,
            port,
            f"{host}:{port}",
            guard.budget,
            refusals,
            guard,
            federation,
            servicer,
            intel_servicer,
        ),
        port,
    )


def serve_until_signalled(server: Server, *, grace: float = 30.0) -> None:
    """Start, then block until SIGTERM/SIGINT; shut down gracefully (in-flight calls finish)."""
    stopping = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: shutting down (grace %.0f s)", signum, grace)
        stopping.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        while not stopping.wait(0.5):
            pass
        server.stop(grace)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# ------------------------------------------------------------------------- the real store


def limited_engine(limits: ServiceLimits) -> Engine:
    """The index's pipeline engine, reading every scan with the service's byte and pixel caps."""
    from ballistics.limits import Limits
    from index.engine import BallisticsEngine

    return BallisticsEngine(
        Limits(
            max_file_bytes=limits.max_upload_bytes,
            max_pixels=limits.max_pixels,
            hint="ServiceLimits.max_pixels; serve --max-pixels",
        )
    )


def _opt(v: Any) -> str:
    return "" if v is None else str(v)


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    for name in ("as_dict", "_asdict"):
        fn = getattr(obj, name, None)
        if callable(fn):
            return dict(fn())
    return dict(getattr(obj, "__dict__", {}))


def _light_request(kind: str, azimuth_deg: float | None) -> Any:
    """A ``ballistics.light.LightRequest`` from checked request fields."""
    from ballistics.light import LightRequest

    return LightRequest(kind or "auto", azimuth_deg)


def _check_format(head: bytes, name: str) -> None:
    """Refuse content no reader accepts, from its first bytes (cheap, before any decoding)."""
    from ballistics.errors import ScanFormatError
    from ballistics.io import SUPPORTED_FORMATS, sniff_format

    if not head:
        raise ScanFormatError(f"{name or 'upload'}: empty file; expected {SUPPORTED_FORMATS}")
    if sniff_format(head) is None:
        raise ScanFormatError(
            f"{name or 'upload'}: unrecognised file content (first bytes {head[:8]!r});"
            f" supported formats are {SUPPORTED_FORMATS}"
        )


class CatalogBackend:
    """:class:`server.service.Backend` over the embedded ``index.Catalog``."""

    #: Comparisons kept for the review page's pictures (``server.web``): each holds two
    #: prepared surfaces (a few MB), so only the last few pairs.
    VIEW_CACHE = 6

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._views: OrderedDict[tuple[str, str], tuple[Any, Any, Any]] = OrderedDict()
        self._views_lock = threading.Lock()

    # -- conversions ----------------------------------------------------------------------
    @staticmethod
    def _casing(
        rec: Any,
        segmentation: dict[str, Any] | None = None,
        quality: dict[str, Any] | None = None,
    ) -> CasingRecord:
        return CasingRecord(
            casing_id=rec.casing_id,
            agency=rec.agency,
            sha256=rec.sha256,
            incident_id=_opt(rec.incident),
            calibre=_opt(rec.caliber),
            firing_pin_class=_opt(rec.firing_pin_shape),
            acquisition_date=_opt(rec.acquisition_date),
            file_name=_opt(rec.filename),
            submitted_at=_opt(rec.created_at),
            segmentation=segmentation or {},
            quality=quality,
        )

    def _quality(self, rowid: int) -> dict[str, Any] | None:
        """The stored quality record of a casing; None for casings stored before them."""
        return self.catalog.store.qualities_of([rowid]).get(rowid)

    def _segmentation(self, casing_id: str) -> dict[str, Any]:
        prepared = self.catalog.prepared(casing_id)
        seg = getattr(prepared, "segmentation", None)
        return _as_dict(seg) if seg is not None else {}

    @staticmethod
    def _candidates(cands: list[Any]) -> list[CandidateRec]:
        return [
            CandidateRec(
                casing_id=c.casing_id,
                region=c.region,
                score=float(c.score) if c.score is not None else None,  # None: unknown
                coarse_score=float(c.coarse_score),
                cmc=int(c.cmc) if c.cmc is not None else None,
                non_match_frequency=(
                    float(c.non_match_frequency) if c.non_match_frequency is not None else None
                ),
                incident_id=_opt(c.incident),
                agency=_opt(c.agency),
                screen_score=float(c.screen_score) if c.screen_score is not None else None,
                rescored=bool(c.rescored),
                identical_file=bool(getattr(c, "identical_file", False)),
                quality=getattr(c, "quality", None),
                low_confidence=bool(getattr(c, "low_confidence", False)),
                low_confidence_reasons=list(getattr(c, "low_confidence_reasons", None) or []),
                flags=list(getattr(c, "flags", None) or []),
            )
            for c in cands
        ]

    # -- Backend --------------------------------------------------------------------------
    def submit(
        self, upload: Path, meta: SubmitMeta, *, agency: str, user: str, size: int, sha256: str
    ) -> CasingRecord:
        with open(upload, "rb") as fh:
            _check_format(fh.read(16), meta.file_name)  # before reading it all into memory
        md: dict[str, Any] = {
            "agency": agency,
            "incident": meta.incident_id,
            "case_number": meta.agency_case_number,
            "place": meta.place,
            "caliber": meta.calibre,
            "date": meta.acquisition_date,
        }
        if meta.pixel_spacing_m is not None:
            md["spacing_um"] = meta.pixel_spacing_m * 1e6
        if meta.length_unit != "m":
            md["length_unit"] = meta.length_unit
        md["light"] = _light_request(meta.light, meta.light_azimuth_deg)
        # the spooled file as it is: hashed once while spooled, read by the scan reader.
        # acting_for: on PostgreSQL the database itself refuses a row of another agency.
        with self.catalog.store.acting_for(agency):
            done = self.catalog.ingest_file(upload, meta.file_name or None, md, sha256=sha256)
        rec = done.record
        if done.processed is not None:  # what this ingest computed, not decoded again
            out = self._casing(rec, done.segmentation, done.quality)
        else:  # the same file stored before by this agency: nothing was computed now
            out = self._casing(rec, self._segmentation(rec.casing_id), self._quality(rec.id))
        out.size_bytes = size
        out.submitted_by = user
        return out

    def search(
        self, query: SearchQuery, *, allowed_agencies: set[str], deadline: float | None
    ) -> SearchResult:
        from index.store import Filters

        filters = Filters(
            caliber=query.calibre or None,
            date_from=query.date_from or None,
            date_to=query.date_to or None,
            agencies=frozenset(allowed_agencies),  # the sharing policy, inside the index filter
        )
        q: str | bytes
        if query.casing_id is not None:
            q = query.casing_id
        else:
            q = query.file or b""
            _check_format(q[:16], query.file_name)
        budget = None if deadline is None else max(0.01, deadline - time.monotonic())
        spacing_um = None if query.pixel_spacing_m is None else query.pixel_spacing_m * 1e6
        r = self.catalog.search(
            q,
            top=query.top,
            filters=filters,
            deadline_s=budget,
            spacing_um=spacing_um,
            length_unit=query.length_unit,
            light=_light_request(query.light, query.light_azimuth_deg),
        )
        return SearchResult(
            query_casing_id=_opt(r.query_casing_id),
            regions={k: self._candidates(v) for k, v in r.regions.items()},
            combined=self._candidates(r.combined),
            partial=bool(r.partial),
            scored=int(r.n_rescored),
            screened_out=int(r.n_screened_out),
            identical=self._candidates(getattr(r, "identical", [])),
            query_quality=getattr(r, "query_quality", None),
        )

    def get(self, casing_id: str) -> CasingRecord:
        rec = self.catalog.get(casing_id)
        out = self._casing(rec, quality=self._quality(rec.id))
        out.agency_case_number = self._case_number(rec.agency, rec.incident)
        return out

    def _case_number(self, agency: str, incident: str | None) -> str:
        """The agency's case number of the casing's incident ('' when none was given)."""
        if not incident:
            return ""
        row = (
            self.catalog.store._conn()
            .execute(
                "SELECT case_number FROM incidents WHERE agency = ? AND id = ?", (agency, incident)
            )
            .fetchone()
        )
        return _opt(row[0]) if row else ""

    def comparison_view(self, casing_a: str, casing_b: str) -> tuple[Any, Any, Any]:
        """(prepared A, prepared B, Comparison) of a pair, from the cache of recent compares
        or computed now. For the review page's pictures only, after the caller's Compare call
        passed the service's checks: this method checks nothing itself."""
        key = (casing_a, casing_b)
        with self._views_lock:
            hit = self._views.get(key)
            if hit is not None:
                self._views.move_to_end(key)
                return hit
        a, b = self.catalog.prepared(casing_a), self.catalog.prepared(casing_b)
        view = (a, b, self.catalog.engine.score(a, b))
        with self._views_lock:
            self._views[key] = view
            while len(self._views) > self.VIEW_CACHE:
                self._views.popitem(last=False)
        return view

    def _label(self, casing_id: str) -> str:
        rec = self.get(casing_id)
        parts = [f"casing {casing_id}", rec.agency]
        if rec.incident_id:
            parts.append(f"incident {rec.incident_id}")
        if rec.agency_case_number:
            parts.append(f"case {rec.agency_case_number}")
        if rec.file_name:
            parts.append(f"file {rec.file_name}")
        return ", ".join(parts)

    def list(
        self, *, agencies: set[str], incident_id: str, calibre: str, limit: int, offset: int
    ) -> list[CasingRecord]:
        from index.store import Filters

        filters = Filters(
            agencies=frozenset(agencies), incident=incident_id or None, caliber=calibre or None
        )
        return [self._casing(r) for r in self.catalog.list(filters, limit=limit, offset=offset)]

    def compare(
        self, casing_a: str, casing_b: str, *, picture: bool, deadline: float | None
    ) -> ComparisonResult:
        a, b, comp = self.comparison_view(casing_a, casing_b)
        nmf = self.catalog.engine.non_match_frequency(
            float(comp.score), "combined", getattr(a, "kind", "topography")
        )
        from ballistics.quality import combine

        detail = _as_dict(comp)
        cells = [_as_dict(c) for c in (getattr(comp, "cells", None) or [])]
        qa, qb = getattr(a, "quality", None), getattr(b, "quality", None)
        flags = [str(f) for f in (getattr(comp, "flags", None) or ())]
        low, reasons = combine({"a": qa, "b": qb}, flags)
        return ComparisonResult(
            score=float(comp.score),
            cmc=int(getattr(comp, "cmc", 0) or 0),
            rotation_deg=float(getattr(comp, "rotation_deg", 0.0) or 0.0),
            dx_m=float(getattr(comp, "dx_m", 0.0) or 0.0),
            dy_m=float(getattr(comp, "dy_m", 0.0) or 0.0),
            regions={k: float(v) for k, v in (getattr(comp, "regions", None) or {}).items()},
            cells=cells,
            non_match_frequency=float(nmf) if nmf is not None else None,
            png=(
                self.catalog.engine.picture(
                    a, b, comp, labels=(self._label(casing_a), self._label(casing_b))
                )
                if picture
                else b""
            ),
            detail={k: v for k, v in detail.items() if k != "cells"},
            quality_a=qa,
            quality_b=qb,
            low_confidence=low,
            low_confidence_reasons=reasons,
            flags=flags,
        )

    def decide(
        self,
        casing_id: str,
        candidate_id: str,
        verdict: str,
        comment: str,
        *,
        examiner: str,
        agency: str,
    ) -> DecisionRec:
        with self.catalog.store.acting_for(agency):  # PostgreSQL: the database checks it too
            d = self.catalog.record_decision(
                casing_id, candidate_id, verdict, examiner=examiner, comment=comment, agency=agency
            )
        return DecisionRec(
            decision_id=str(d.id),
            casing_id=d.casing_id,
            candidate_id=d.candidate_id,
            verdict=d.verdict,
            comment=d.comment,
            examiner=d.examiner,
            agency=_opt(d.agency),
            time=d.time,
            supersedes=_opt(d.supersedes),
        )

    def links(
        self,
        *,
        casing_id: str | None,
        incident_id: str | None,
        viewer: str = "",
        visible: set[str] | None = None,
    ) -> LinkGraphRec:
        g = self.catalog.links(
            casing_id=casing_id, incident_id=incident_id, agency=viewer or None, agencies=visible
        )
        nodes = [
            IncidentNodeRec(
                str(n["incident"]), str(n.get("agency", "")), [str(c) for c in n["casings"]]
            )
            for n in g.get("nodes", [])
        ]
        edges = [
            HitEdgeRec(
                incident_a=str(e["a"]),
                incident_b=str(e["b"]),
                casing_a=_opt(e.get("casing_a")),
                casing_b=_opt(e.get("casing_b")),
                examiner=_opt(e.get("examiner")),
                agency=_opt(e.get("agency")),
                time=_opt(e.get("time")),
                decision_id=_opt(e.get("decision_id")),
            )
            for e in g.get("edges", [])
        ]
        return LinkGraphRec(nodes, edges)

    def delete(self, casing_id: str, *, reason: str, user: str) -> bool:
        self.catalog.delete(casing_id, reason)
        return True

    def leads(
        self,
        *,
        visible: set[str],
        state: str | None,
        limit: int,
        offset: int,
        casing_id: str | None = None,
    ) -> LeadsResult:
        store = self.catalog.store
        if casing_id is not None and store.get_casing(casing_id).agency not in visible:
            raise LookupError(f"no casing with id {casing_id}")  # its existence stays hidden
        leads = store.list_leads(
            state=state, agencies=visible, limit=limit, offset=offset, casing=casing_id
        )
        return LeadsResult(
            leads=[lead_rec(ld) for ld in leads], jobs=store.job_counts(agencies=visible)
        )

    def stored_casings(self) -> Iterator[tuple[str, str, str]]:
        """(casing_id, agency, sha256) of every stored casing, deleted ones too (for the audit
        reconciliation at start-up)."""
        rows = self.catalog.store._conn().execute(
            "SELECT casing_id, agency, sha256 FROM casings ORDER BY id"
        )
        for cid, agency, sha in rows:
            yield str(cid), str(agency), str(sha)


def lead_rec(ld: Any) -> LeadRec:
    """An ``index.store.Lead`` as the service's :class:`LeadRec`."""
    return LeadRec(
        lead_id=str(ld.lead_id),
        casing_a=ld.casing_a,
        casing_b=ld.casing_b,
        agency_a=ld.agency_a,
        agency_b=ld.agency_b,
        incident_a=_opt(ld.incident_a),
        incident_b=_opt(ld.incident_b),
        score=ld.score,
        cmc=ld.cmc,
        non_match_frequency=ld.non_match_frequency,
        screen_score=ld.screen_score,
        quality_a=ld.quality_a,
        quality_b=ld.quality_b,
        low_confidence=ld.low_confidence,
        low_confidence_reasons=list(ld.low_confidence_reasons),
        flags=list(ld.flags),
        created_at=ld.created_at,
        state=ld.state,
        decision_id=_opt(ld.decision_id),
        decided_at=_opt(ld.decided_at),
        decided_by_agency=_opt(ld.decided_by_agency),
    )


def open_audit(
    data_dir: Path, key_file: str | None, backend: Any = None, *, accept_unkeyed: bool = False
) -> AuditLog:
    """Open the data dir's audit log with its key, ready to serve.

    Verifies the whole chain and signed head first (:class:`AuditIntegrityError` on a broken
    log: refuse to serve), then gives every stored casing without a record a ``Reconcile``
    record (a submission killed between the store commit and its final audit record).
    Raises :class:`AuditKeyError` when the key is missing or inside ``data_dir``.
    """
    key = load_key(key_file, data_dir=data_dir)
    audit = AuditLog.in_dir(data_dir, key, accept_unkeyed=accept_unkeyed)
    stored = getattr(backend, "stored_casings", None)
    if stored is not None:
        try:
            missing = reconcile_stored(audit, stored())
        except BaseException:
            audit.close()
            raise
        if missing:
            log.warning(
                "audit: %d stored casing(s) had no audit record; reconciled: %s",
                len(missing),
                ", ".join(missing[:10]),
            )
    return audit


def open_backend(
    data_dir: Path, limits: ServiceLimits | None = None, config: dict[str, Any] | None = None
) -> tuple[CatalogBackend, Callable[[], None]]:
    """Open the embedded catalog in ``data_dir``; returns (backend, close)."""
    from index.service import Catalog

    from .commands_index import _engine

    # BALLISTICS_INDEX_ENGINE swaps the pipeline for a test engine, as for ingest and search
    engine = _engine() or limited_engine(limits or ServiceLimits())
    catalog = Catalog.open(data_dir, config, engine=engine)
    return CatalogBackend(catalog), catalog.close
