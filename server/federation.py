"""Sovereign servers that search each other under agreements (``ballistics.v1.Federation``).

One :class:`FederationNode` per server, built from a :class:`FederationConfig`
(``serve --federation FILE``). It runs the Federation service on its own port, mutual TLS
only, and talks to its peers over mutual TLS with the client certificate configured for each.

Receiving side (:class:`FederationService`): the caller is the peer whose configured
``identity`` equals its certificate's CN *and* whose configured CA issued that certificate (a
certificate from another peer's CA with the same CN is refused: UNAUTHENTICATED). The request
names an agreement; this server's own copy of it (same id, with that peer, accepting requests)
must exist, else PERMISSION_DENIED naming the agreement. The search runs as this server's
national contact point (the sharing policy decides which agencies' casings it may see,
narrowed by the agreement's ``shared_agencies``), inside the agreement's calibres and dates,
and returns at the agreement's level (scores < case_refs < pictures < surface). Casing ids
never leave: candidates are opaque references (:mod:`server.federation_store`).

Requesting side (:class:`FederatedMatchingService`, the Matching service of a federated
server): ``Search`` with a scope asks the peers in parallel with the local search and merges
one ranked list; a peer that is down or slow is named in ``SearchResponse.peers`` and makes the
result ``partial``, never a failed search. ``Decide`` on a foreign candidate records a hit and
notifies its peer; ``Compare`` with ``server_b`` fetches the picture or surface if allowed.

Every cross-border call is audited on both ends (``server.audit.AuditLog``) with the
agreement id and the request or hit id: ``Federation.<Method>`` on the receiving side,
``Federation.<Method>:out`` on the requesting side.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import numpy as np

from .audit import AuditLog, peer_of
from .auth import AuthError, Permission
from .federation_config import Agreement, FederationConfig, Peer, level_rank
from .federation_store import FederationStore, ForeignCandidateRec, Hit, now
from .policy import SharingPolicy
from .proto_gen import federation_pb2 as fpb
from .proto_gen import federation_pb2_grpc as fpb_grpc
from .proto_gen import matching_pb2 as pb
from .service import Call, MatchingService, ServiceError, _rpc, status_for
from .validation import InvalidRequest, check_date, check_text, verdict_name

if TYPE_CHECKING:
    from index.service import Catalog

log = logging.getLogger("ballistics.federation")

MAX_MESSAGE = 64 * 1024 * 1024  # a comparison surface is a few MB; a scan up to the upload cap
MAX_FOREIGN_RESULTS = 50
_ID_FIELDS = ("agreement_id", "request_id", "ref", "hit_id", "requester_casing_ref")
_TEXT_FIELDS = ("requesting_agency", "calibre", "scan_name", "examiner", "comment")


class FederationError(RuntimeError):
    """The federation cannot start (bad certificates, port taken); the message says why."""


def refused(ag: Agreement | None, what: str, agreement_id: str = "") -> ServiceError:
    """PERMISSION_DENIED naming the agreement (or its absence)."""
    name = ag.id if ag is not None else agreement_id
    return ServiceError(grpc.StatusCode.PERMISSION_DENIED, f"agreement {name!r}: {what}")


# ------------------------------------------------------------------------- peer identity


def certificate_issued_by(cert_pem: bytes, ca_file: Path) -> bool:
    """True when ``cert_pem`` is signed by a certificate of ``ca_file`` (PEM)."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        cas = x509.load_pem_x509_certificates(ca_file.read_bytes())
    except ValueError:
        return False
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def identify_peer(context: grpc.ServicerContext, config: FederationConfig) -> Peer:
    """The peer calling, from its verified client certificate; AuthError (UNAUTHENTICATED)."""
    try:
        auth = context.auth_context() or {}
    except Exception:
        auth = {}
    cns = auth.get("x509_common_name") or []
    pems = auth.get("x509_pem_cert") or []
    if not cns or not pems:
        raise AuthError(
            grpc.StatusCode.UNAUTHENTICATED,
            "the federation port needs a client certificate issued by a configured peer's CA",
        )
    cn = cns[0].decode("utf-8", "replace")
    peer = config.peer_by_identity(cn)
    if peer is None:
        raise AuthError(
            grpc.StatusCode.UNAUTHENTICATED,
            f"certificate CN={cn!r} is not the identity of any configured peer",
        )
    if not certificate_issued_by(pems[0], peer.ca):
        raise AuthError(
            grpc.StatusCode.UNAUTHENTICATED,
            f"certificate CN={cn!r} was not issued by the CA configured for peer {peer.name!r}",
        )
    return peer


def _check_fields(request: Any) -> None:
    for name in _ID_FIELDS:
        if name in request.DESCRIPTOR.fields_by_name:
            check_text(name, getattr(request, name), 128)
    for name in _TEXT_FIELDS:
        if name in request.DESCRIPTOR.fields_by_name:
            check_text(name, getattr(request, name), 4096 if name == "comment" else 256)


# ------------------------------------------------------------------------- receiving side


@dataclass
class Incoming:
    method: str
    address: str
    peer: Peer | None = None
    agreement: Agreement | None = None
    agency: str = ""
    targets: list[str] = field(default_factory=list)
    detail: str = ""


_R = TypeVar("_R")


def _incoming(
    method: str,
) -> Callable[[Callable[..., _R]], Callable[[FederationService, Any, grpc.ServicerContext], _R]]:
    """Identify the peer, check the agreement, map errors to statuses, audit exactly once."""

    def deco(
        fn: Callable[..., _R],
    ) -> Callable[[FederationService, Any, grpc.ServicerContext], _R]:
        @functools.wraps(fn)
        def wrapper(self: FederationService, request: Any, context: grpc.ServicerContext) -> _R:
            inc = Incoming(method, peer_of(context))
            try:
                _check_fields(request)
                inc.agency = request.requesting_agency
                inc.targets.append(f"agreement:{request.agreement_id}")
                inc.peer = identify_peer(context, self.node.config)
                inc.agreement = self.node.config.incoming(inc.peer.name, request.agreement_id)
                if inc.agreement is None:
                    raise refused(
                        None,
                        f"this server ({self.node.config.name}) has no agreement of that id with"
                        f" peer {inc.peer.name!r} that accepts its requests",
                        request.agreement_id,
                    )
                result = fn(self, request, context, inc)
            except Exception as exc:
                code, message = status_for(exc)
                if code is grpc.StatusCode.INTERNAL:
                    log.exception("Federation.%s failed", method)
                self.node.audit_incoming(inc, code.name, message)
                context.abort(code, message)
            self.node.audit_incoming(inc, "OK", inc.detail)
            return result

        return wrapper

    return deco


class FederationService(fpb_grpc.FederationServicer):
    def __init__(self, node: FederationNode) -> None:
        self.node = node

    @_incoming("Correlate")
    def Correlate(
        self, request: fpb.CorrelateRequest, context: grpc.ServicerContext, inc: Incoming
    ) -> fpb.CorrelateResponse:
        assert inc.peer is not None and inc.agreement is not None
        return self.node.answer_correlate(request, context, inc.peer, inc.agreement, inc)

    @_incoming("RequestDetail")
    def RequestDetail(
        self, request: fpb.DetailRequest, context: grpc.ServicerContext, inc: Incoming
    ) -> fpb.DetailResponse:
        assert inc.peer is not None and inc.agreement is not None
        return self.node.answer_detail(request, inc.peer, inc.agreement, inc)

    @_incoming("NotifyHit")
    def NotifyHit(
        self, request: fpb.HitNotice, context: grpc.ServicerContext, inc: Incoming
    ) -> fpb.HitReceipt:
        assert inc.peer is not None and inc.agreement is not None
        return self.node.answer_hit(request, inc.peer, inc.agreement, inc)


# ------------------------------------------------------------------------- the node


@dataclass
class QueryPayload:
    """What a federated search sends, computed once per search."""

    calibre: str
    date: str
    casing_id: str
    prepared: fpb.PreparedQuery | None
    scan: bytes | None
    scan_name: str = ""
    pixel_spacing_m: float = 0.0
    length_unit: str = ""


@dataclass
class PeerAnswer:
    outcome: pb.PeerOutcome
    candidates: list[fpb.ForeignCandidate] = field(default_factory=list)
    release: str = ""


class FederationNode:
    """This server's side of the federation: config, store, peers, audit."""

    def __init__(
        self,
        config: FederationConfig,
        catalog: Catalog,
        *,
        policy: SharingPolicy,
        audit: AuditLog,
        data_dir: str | Path,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.policy = policy
        self.audit = audit
        self.store = FederationStore(data_dir)
        self._channels: dict[str, grpc.Channel] = {}
        self._pool = cf.ThreadPoolExecutor(max_workers=8, thread_name_prefix="fed-out")
        self.grpc_server: grpc.Server | None = None
        self.port = 0

    # -- life cycle -------------------------------------------------------------------------
    def build_server(self) -> int:
        """Bind the federation port (mutual TLS, client certificate required); returns it."""
        cfg = self.config
        if not cfg.peers:
            raise FederationError("the federation config lists no peers: nothing to listen for")
        server = grpc.server(
            cf.ThreadPoolExecutor(max_workers=8, thread_name_prefix="fed-in"),
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.max_send_message_length", MAX_MESSAGE),
            ],
        )
        fpb_grpc.add_FederationServicer_to_server(FederationService(self), server)
        creds = grpc.ssl_server_credentials(
            [(cfg.key.read_bytes(), cfg.cert.read_bytes())],
            root_certificates=cfg.client_cas,
            require_client_auth=True,
        )
        address = f"{cfg.listen_host}:{cfg.listen_port}"
        try:
            port = server.add_secure_port(address, creds)
        except RuntimeError as e:
            raise FederationError(f"cannot listen on {address} for peers: {e}") from e
        if not port:
            raise FederationError(f"cannot listen on {address} for peers: the port is in use")
        self.grpc_server, self.port = server, port
        return port

    def start(self) -> None:
        if self.grpc_server is None:
            self.build_server()
        assert self.grpc_server is not None
        self.grpc_server.start()

    def stop(self, grace: float | None = 5.0) -> None:
        if self.grpc_server is not None:
            self.grpc_server.stop(grace).wait()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()

    def close(self) -> None:
        self.stop(0)
        self.store.close()

    # -- audit ------------------------------------------------------------------------------
    def audit_incoming(self, inc: Incoming, outcome: str, detail: str) -> None:
        who = f"peer:{inc.peer.name}" if inc.peer else "peer:?"
        try:
            self.audit.append(
                user=who,
                agency=f"{inc.peer.name if inc.peer else '?'}/{inc.agency}",
                method=f"Federation.{inc.method}",
                targets=inc.targets,
                outcome=outcome,
                detail=detail,
                peer=inc.address,
            )
        except Exception:
            log.exception("audit write failed for an incoming federation call")

    def audit_outgoing(
        self,
        method: str,
        *,
        user: str,
        agency: str,
        peer: Peer,
        agreement: Agreement,
        targets: list[str],
        outcome: str,
        detail: str,
    ) -> None:
        self.audit.append(
            user=user,
            agency=agency,
            method=f"Federation.{method}:out",
            targets=[f"peer:{peer.name}", f"agreement:{agreement.id}", *targets],
            outcome=outcome,
            detail=detail,
            peer=peer.address,
        )

    # -- receiving: Correlate ---------------------------------------------------------------
    def visible_to(self, ag: Agreement) -> set[str]:
        """Agencies whose casings a peer may search under ``ag``: what the national contact
        point may see under the sharing policy, narrowed by the agreement."""
        visible = self.policy.allowed_agencies(self.config.contact_agency)
        if ag.shared_agencies is not None:
            visible &= set(ag.shared_agencies)
        return visible

    def _query_of(self, request: fpb.CorrelateRequest) -> Any:
        from index.search import Query

        kind = request.WhichOneof("query")
        if kind == "prepared":
            p = request.prepared
            if p.extractor_version != self.catalog.extractor_version:
                raise ServiceError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"descriptor version {p.extractor_version!r} differs from this server's"
                    f" ({self.catalog.extractor_version!r}); send the scan instead (agreement"
                    " 'send': 'scan') or align the software versions",
                )
            try:
                descs = {k: np.frombuffer(v, np.float32).copy() for k, v in p.descriptors.items()}
                prepared = self.catalog.engine.load(p.surface)
            except (ValueError, TypeError) as e:
                raise InvalidRequest(f"the prepared query is unreadable: {e}") from None
            if not descs:
                raise InvalidRequest("the prepared query has no descriptors")
            return Query(descs, prepared)
        if kind == "scan":
            if not request.scan:
                raise InvalidRequest("the scan is empty")
            spacing_um = request.pixel_spacing_m * 1e6 if request.pixel_spacing_m else None
            return self.catalog.make_query(
                bytes(request.scan),
                spacing_um=spacing_um,
                length_unit=request.length_unit or "m",
            )
        raise InvalidRequest("send a prepared query or the scan")

    def answer_correlate(
        self,
        request: fpb.CorrelateRequest,
        context: grpc.ServicerContext,
        peer: Peer,
        ag: Agreement,
        inc: Incoming,
    ) -> fpb.CorrelateResponse:
        from index.store import Filters

        inc.targets.append(f"request:{request.request_id}")
        if not request.request_id:
            raise InvalidRequest("request_id is required (it names the call in both audit logs)")
        for name in ("query_date", "date_from", "date_to"):
            check_date(name, getattr(request, name))
        if not ag.covers_calibre(request.calibre):
            raise refused(
                ag,
                f"calibre {request.calibre or '(unknown)'} is not covered ({ag.scope_text()})",
            )
        if not ag.covers_date(request.query_date):
            raise refused(
                ag,
                f"incident date {request.query_date or '(unknown)'} is not covered"
                f" ({ag.scope_text()})",
            )
        lows = [d for d in (ag.date_from, request.date_from or None) if d]
        highs = [d for d in (ag.date_to, request.date_to or None) if d]
        visible = self.visible_to(ag)
        filters = Filters(
            caliber=request.calibre or None,
            date_from=max(lows) if lows else None,
            date_to=min(highs) if highs else None,
            agencies=frozenset(visible),
        )
        top = min(request.max_results or 10, MAX_FOREIGN_RESULTS)
        remaining = context.time_remaining()
        budget = None if remaining is None else max(0.05, remaining - 0.2)
        query = self._query_of(request)
        res = self.catalog.search(query, top=top, filters=filters, deadline_s=budget)
        # the filter already did this; a second check costs nothing and keeps the promise
        cands = [c for c in res.combined if c.agency in visible][:top]
        refs = self.store.release_refs(peer.name, ag.id, [c.casing_id for c in cands])
        case_refs = ag.allows("case_refs")
        out = fpb.CorrelateResponse(
            server=self.config.name,
            agreement_id=ag.id,
            request_id=request.request_id,
            release=ag.release,
            partial=bool(res.partial),
            scored=int(res.n_rescored),
        )
        queue = []
        for i, (c, ref) in enumerate(zip(cands, refs, strict=True), start=1):
            fc = out.candidates.add(
                rank=i,
                ref=ref,
                coarse_score=float(c.coarse_score),
                rescored=bool(c.rescored),
            )
            if c.score is not None:
                fc.score = float(c.score)
            if c.cmc is not None:
                fc.cmc = int(c.cmc)
            if c.non_match_frequency is not None:
                fc.non_match_frequency = float(c.non_match_frequency)
            if c.screen_score is not None:
                fc.screen_score = float(c.screen_score)
            if case_refs:
                rec = self.catalog.get(c.casing_id)
                fc.incident_id = rec.incident or ""
                fc.agency = rec.agency
                fc.calibre = rec.caliber or ""
                fc.acquisition_date = rec.acquisition_date or ""
            queue.append(
                {"casing_id": c.casing_id, "ref": ref, "score": c.score, "agency": c.agency}
            )
        self.store.record_incoming(
            peer=peer.name,
            request_id=request.request_id,
            agreement_id=ag.id,
            requesting_agency=request.requesting_agency,
            contact_agency=self.config.contact_agency,
            calibre=request.calibre,
            candidates=queue,
        )
        inc.targets += [c.casing_id for c in cands]
        inc.detail = f"{len(cands)} candidates released at level {ag.release}"
        return out

    # -- receiving: RequestDetail -----------------------------------------------------------
    def answer_detail(
        self, request: fpb.DetailRequest, peer: Peer, ag: Agreement, inc: Incoming
    ) -> fpb.DetailResponse:
        inc.targets += [f"ref:{request.ref}", f"request:{request.request_id}"]
        if request.kind == fpb.PICTURE:
            need = "pictures"
        elif request.kind == fpb.SURFACE:
            need = "surface"
        else:
            raise InvalidRequest("kind must be PICTURE or SURFACE")
        if not ag.allows(need):
            raise refused(ag, f"releases {ag.release} only; a {need} needs '{need}' or more")
        casing_id = self.store.casing_of_ref(request.ref, peer.name)
        if casing_id is None:
            raise ServiceError(grpc.StatusCode.NOT_FOUND, f"no candidate {request.ref}")
        try:
            rec = self.catalog.get(casing_id)
        except LookupError:
            raise ServiceError(grpc.StatusCode.NOT_FOUND, f"no candidate {request.ref}") from None
        if rec.agency not in self.visible_to(ag):  # policy or agreement changed since release
            raise refused(ag, f"candidate {request.ref} is no longer shared with {peer.name}")
        inc.targets.append(casing_id)
        out = fpb.DetailResponse(ref=request.ref, agreement_id=ag.id)
        if request.kind == fpb.SURFACE:
            surface = self.catalog.store.load_surface(rec.id)
            if surface is None:
                raise ServiceError(grpc.StatusCode.NOT_FOUND, f"no surface for {request.ref}")
            out.surface = surface
            inc.detail = f"surface released ({len(surface)} bytes)"
            return out
        if not request.query_surface:
            raise InvalidRequest("a picture compares with your query: send query_surface")
        try:
            q = self.catalog.engine.load(request.query_surface)
        except (ValueError, TypeError) as e:
            raise InvalidRequest(f"query_surface is unreadable: {e}") from None
        c = self.catalog.prepared(casing_id)
        comp = self.catalog.engine.score(q, c)
        out.png = self.catalog.engine.picture(q, c, comp)
        out.score = float(comp.score)
        out.cmc = int(comp.cmc)
        inc.detail = f"picture released ({len(out.png)} bytes)"
        return out

    # -- receiving: NotifyHit ---------------------------------------------------------------
    def answer_hit(
        self, request: fpb.HitNotice, peer: Peer, ag: Agreement, inc: Incoming
    ) -> fpb.HitReceipt:
        inc.targets += [f"hit:{request.hit_id}", f"ref:{request.ref}"]
        if not request.hit_id or not request.ref:
            raise InvalidRequest("hit_id and ref are required")
        casing_id = self.store.casing_of_ref(request.ref, peer.name)
        if casing_id is None:
            raise ServiceError(grpc.StatusCode.NOT_FOUND, f"no candidate {request.ref}")
        hit, new = self.store.record_hit(
            Hit(
                hit_id=request.hit_id,
                side="holder",
                peer=peer.name,
                agreement_id=ag.id,
                local_casing_id=casing_id,
                foreign_ref=request.requester_casing_ref,
                requesting_agency=request.requesting_agency,
                examiner=request.examiner,
                comment=request.comment,
                confirmed_at=request.confirmed_at,
                recorded_at=now(),
                notified_at=None,
            )
        )
        if new:
            self.store.mark_incoming_hit(peer.name, casing_id)
        inc.targets.append(casing_id)
        inc.detail = "hit recorded" if new else "hit already recorded (no change)"
        return fpb.HitReceipt(
            hit_id=hit.hit_id,
            server=self.config.name,
            newly_recorded=new,
            recorded_at=hit.recorded_at,
        )

    # -- requesting -------------------------------------------------------------------------
    def stub(self, peer: Peer) -> fpb_grpc.FederationStub:
        ch = self._channels.get(peer.name)
        if ch is None:
            creds = grpc.ssl_channel_credentials(
                root_certificates=peer.ca.read_bytes(),
                private_key=peer.key.read_bytes(),
                certificate_chain=peer.cert.read_bytes(),
            )
            ch = grpc.secure_channel(
                peer.address,
                creds,
                options=[
                    # the peer's server certificate must name its identity (SAN DNS)
                    ("grpc.ssl_target_name_override", peer.identity),
                    ("grpc.max_receive_message_length", MAX_MESSAGE),
                    ("grpc.max_send_message_length", MAX_MESSAGE),
                ],
            )
            self._channels[peer.name] = ch
        return fpb_grpc.FederationStub(ch)

    def choose_agreement(
        self, peer: str, agency: str, calibre: str, day: str
    ) -> tuple[Agreement | None, str]:
        """The agreement a request from ``agency`` to ``peer`` goes under (the most generous
        that covers the query), or None and why not."""
        ags = self.config.outgoing(peer, agency)
        if not ags:
            return None, f"no agreement lets {agency} send requests to {peer}"
        fits = [a for a in ags if a.covers_calibre(calibre) and a.covers_date(day)]
        if not fits:
            scopes = "; ".join(f"{a.id}: {a.scope_text()}" for a in ags)
            return None, (
                f"the query (calibre {calibre or 'unknown'}, date {day or 'unknown'}) is outside"
                f" every agreement with {peer} ({scopes})"
            )
        return max(fits, key=lambda a: level_rank(a.release)), ""

    def payload_for_casing(self, casing_id: str, calibre: str) -> QueryPayload:
        cat = self.catalog
        rec = cat.get(casing_id)
        descs = cat.store.descriptors_of(rec.id, cat.extractor_version)
        surface = cat.store.load_surface(rec.id) or b""
        return QueryPayload(
            calibre=calibre or (rec.caliber or ""),
            date=rec.acquisition_date or "",
            casing_id=casing_id,
            prepared=_prepared(descs, surface, cat.extractor_version),
            scan=None,
            scan_name=rec.filename or "",
        )

    def payload_for_file(
        self,
        data: bytes,
        *,
        name: str,
        calibre: str,
        pixel_spacing_m: float | None,
        length_unit: str,
        light: Any = None,
    ) -> QueryPayload:
        kw: dict[str, Any] = {}
        if length_unit and length_unit != "m":
            kw["length_unit"] = length_unit
        if light is not None and not getattr(light, "is_auto", False):
            kw["light"] = light
        proc = self.catalog.engine.process(data, name or None, pixel_spacing_m, **kw)
        return QueryPayload(
            calibre=calibre,
            date="",
            casing_id="",
            prepared=_prepared(proc.descriptors, proc.surface, self.catalog.extractor_version),
            scan=data,
            scan_name=name,
            pixel_spacing_m=pixel_spacing_m or 0.0,
            length_unit=length_unit if length_unit != "m" else "",
        )

    def correlate_peer(
        self,
        peer: Peer,
        ag: Agreement,
        payload: QueryPayload,
        *,
        user: str,
        agency: str,
        top: int,
        date_from: str,
        date_to: str,
        timeout_s: float,
    ) -> PeerAnswer:
        """One Correlate call, audited here; never raises (the outcome says what happened)."""
        rid = uuid.uuid4().hex
        req = fpb.CorrelateRequest(
            agreement_id=ag.id,
            request_id=rid,
            requesting_agency=agency,
            calibre=payload.calibre,
            query_date=payload.date,
            max_results=top,
            date_from=date_from,
            date_to=date_to,
        )
        if ag.send == "scan":
            if payload.scan is None:
                if not payload.casing_id:
                    raise InvalidRequest("no scan to send")
                rec = self.catalog.get(payload.casing_id)
                payload.scan = self.catalog.store.read_object(rec.sha256)
            req.scan = payload.scan
            req.scan_name = payload.scan_name
            req.pixel_spacing_m = payload.pixel_spacing_m
            req.length_unit = payload.length_unit
        else:
            assert payload.prepared is not None
            req.prepared.CopyFrom(payload.prepared)
        t0 = time.monotonic()
        outcome = pb.PeerOutcome(server=peer.name, agreement_id=ag.id)
        answer = PeerAnswer(outcome)
        try:
            resp = self.stub(peer).Correlate(req, timeout=timeout_s)
        except grpc.RpcError as e:
            code = e.code()
            outcome.state = {
                grpc.StatusCode.UNAVAILABLE: "unavailable",
                grpc.StatusCode.DEADLINE_EXCEEDED: "deadline_exceeded",
                grpc.StatusCode.PERMISSION_DENIED: "refused",
                grpc.StatusCode.UNAUTHENTICATED: "refused",
            }.get(code, "error")
            outcome.detail = f"{code.name}: {e.details()}"[:500]
            status = code.name
        else:
            outcome.state = "ok"
            answer.candidates = list(resp.candidates)
            answer.release = resp.release
            outcome.candidates = len(resp.candidates)
            outcome.detail = f"release {resp.release}" + (" (partial)" if resp.partial else "")
            status = "OK"
            self.store.remember_foreign(
                [
                    ForeignCandidateRec(
                        peer.name,
                        c.ref,
                        agency,
                        ag.id,
                        resp.release,
                        rid,
                        c.score if c.HasField("score") else None,
                    )
                    for c in resp.candidates
                ]
            )
        outcome.elapsed_s = time.monotonic() - t0
        self.audit_outgoing(
            "Correlate",
            user=user,
            agency=agency,
            peer=peer,
            agreement=ag,
            targets=[f"request:{rid}", payload.casing_id],
            outcome=status,
            detail=f"{outcome.state}: {outcome.detail}",
        )
        return answer

    def federated_search(
        self,
        service: MatchingService,
        request: pb.SearchRequest,
        context: grpc.ServicerContext,
        call: Call,
        local: Callable[[], pb.SearchResponse],
    ) -> pb.SearchResponse:
        """The local search and the peers' answers merged into one ranked list."""
        if request.scope == pb.SCOPE_ALL:
            names = sorted(self.config.peers)
        else:
            unknown = [p for p in request.peers if p not in self.config.peers]
            if unknown or not request.peers:
                raise InvalidRequest(
                    f"unknown peer(s) {unknown}; this server's peers are"
                    f" {', '.join(sorted(self.config.peers)) or '(none)'}"
                    if unknown
                    else "scope SCOPE_PEERS needs the peers' names"
                )
            names = list(dict.fromkeys(request.peers))
        agency, user = call.who.agency, call.who.user
        f = request.filters
        top = service._top(f.max_results)
        kind = request.WhichOneof("query")
        plans: list[tuple[Peer, Agreement]] = []
        outcomes: list[pb.PeerOutcome] = []
        payload: QueryPayload | None = None
        calibre, day = f.calibre, ""
        if kind == "casing_id":
            rec = self.catalog.get(request.casing_id)
            calibre, day = f.calibre or (rec.caliber or ""), rec.acquisition_date or ""
        for name in names:
            ag, why = self.choose_agreement(name, agency, calibre, day)
            if ag is None:
                outcomes.append(pb.PeerOutcome(server=name, state="not_asked", detail=why))
            else:
                plans.append((self.config.peers[name], ag))
        if plans:
            if kind == "casing_id":
                payload = self.payload_for_casing(request.casing_id, calibre)
            else:
                from ballistics.light import LightRequest

                az = request.light_azimuth_deg if request.HasField("light_azimuth_deg") else None
                payload = self.payload_for_file(
                    request.file,
                    name=request.file_name,
                    calibre=calibre,
                    pixel_spacing_m=request.pixel_spacing_m or None,
                    length_unit=request.length_unit or "m",
                    light=LightRequest(request.light or "auto", az),
                )
        remaining = context.time_remaining()
        timeout = self.config.peer_timeout_s
        if remaining is not None:
            timeout = max(0.05, min(timeout, remaining - 0.3))
        futures = [
            (
                peer,
                self._pool.submit(
                    self.correlate_peer,
                    peer,
                    ag,
                    payload,  # type: ignore[arg-type]  # set whenever plans is not empty
                    user=user,
                    agency=agency,
                    top=top,
                    date_from=f.date_from,
                    date_to=f.date_to,
                    timeout_s=timeout,
                ),
            )
            for peer, ag in plans
        ]
        resp = local()  # in parallel with the peers
        merged: list[pb.Candidate] = []
        for c in resp.combined.candidates:
            merged.append(c)
        for peer, fut in futures:
            try:
                ans = fut.result(timeout=timeout + 1.0)
            except Exception as e:  # the call itself never raises; a stuck thread might
                ans = PeerAnswer(
                    pb.PeerOutcome(server=peer.name, state="error", detail=str(e)[:300])
                )
            outcomes.append(ans.outcome)
            for fc in ans.candidates:
                merged.append(_foreign_to_candidate(fc, peer.name, ans.outcome.agreement_id))
        merged.sort(key=_rank_key)
        del resp.combined.candidates[:]
        for i, c in enumerate(merged[:top], start=1):
            c.rank = i
            resp.combined.candidates.append(c)
        resp.peers.extend(sorted(outcomes, key=lambda o: o.server))
        if any(o.state not in ("ok", "not_asked") for o in outcomes):
            resp.partial = True
        call.targets += [f"peer:{o.server}:{o.state}" for o in outcomes]
        return resp

    def _foreign(self, call: Call, peer_name: str, ref: str) -> tuple[Peer, Agreement, str]:
        """A foreign candidate released to the caller's agencies, its agreement (this
        server's copy, still letting the caller's agency send) and the level in force."""
        peer = self.config.peers.get(peer_name)
        visible = self.policy.allowed_agencies(call.who.agency)
        fc = None if peer is None else self.store.foreign(peer_name, ref, visible)
        if peer is None or fc is None:
            raise ServiceError(
                grpc.StatusCode.NOT_FOUND,
                f"no candidate {ref} from peer {peer_name} was released to your agency",
            )
        ag = self.config.agreements.get(fc.agreement_id)
        if ag is None or ag.peer != peer_name or call.who.agency not in ag.send_agencies:
            raise refused(
                ag,
                f"no longer lets {call.who.agency} deal with {peer_name}",
                fc.agreement_id,
            )
        level = min(level_rank(ag.release), level_rank(fc.release or "scores"))
        return peer, ag, ("scores", "case_refs", "pictures", "surface")[level]

    def detail(
        self, call: Call, peer: Peer, ag: Agreement, ref: str, kind: int, query_surface: bytes
    ) -> fpb.DetailResponse:
        req = fpb.DetailRequest(
            agreement_id=ag.id,
            ref=ref,
            kind=kind,  # type: ignore[arg-type]
            query_surface=query_surface,
            request_id=uuid.uuid4().hex,
            requesting_agency=call.who.agency,
        )
        status, detail = "OK", ""
        try:
            return self.stub(peer).RequestDetail(req, timeout=self.config.peer_timeout_s)
        except grpc.RpcError as e:
            status, detail = e.code().name, str(e.details())
            raise ServiceError(
                e.code() if e.code() is not grpc.StatusCode.UNKNOWN else grpc.StatusCode.INTERNAL,
                f"peer {peer.name}: {e.details()}",
            ) from None
        finally:
            self.audit_outgoing(
                "RequestDetail",
                user=call.who.user,
                agency=call.who.agency,
                peer=peer,
                agreement=ag,
                targets=[f"request:{req.request_id}", f"ref:{ref}"],
                outcome=status,
                detail=detail or fpb.DetailKind.Name(kind),
            )

    def confirm_hit(
        self, call: Call, casing_id: str, peer: Peer, ag: Agreement, ref: str, comment: str
    ) -> Hit:
        """Record a hit with a foreign candidate here, then notify the peer (idempotent: the
        hit id is derived from the pair, so a retry records and notifies nothing twice)."""
        hit_id = hashlib.sha256(
            f"{self.config.name}\0{casing_id}\0{peer.name}\0{ref}".encode()
        ).hexdigest()[:32]
        hit, _ = self.store.record_hit(
            Hit(
                hit_id=hit_id,
                side="requester",
                peer=peer.name,
                agreement_id=ag.id,
                local_casing_id=casing_id,
                foreign_ref=ref,
                requesting_agency=call.who.agency,
                examiner=call.who.user,
                comment=comment,
                confirmed_at=now(),
                recorded_at=now(),
                notified_at=None,
            )
        )
        notice = fpb.HitNotice(
            hit_id=hit.hit_id,
            agreement_id=ag.id,
            ref=ref,
            requesting_agency=hit.requesting_agency,
            requester_casing_ref=self.store.ref_for(casing_id, peer.name),
            examiner=hit.examiner,
            comment=hit.comment,
            confirmed_at=hit.confirmed_at,
        )
        status, detail = "OK", ""
        try:
            receipt = self.stub(peer).NotifyHit(notice, timeout=self.config.peer_timeout_s)
            detail = "newly recorded" if receipt.newly_recorded else "already recorded"
        except grpc.RpcError as e:
            status, detail = e.code().name, str(e.details())
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE,
                f"hit {hit.hit_id} is recorded here but peer {peer.name} was not notified"
                f" ({e.code().name}: {e.details()}); repeat the same decide to retry",
            ) from None
        finally:
            self.audit_outgoing(
                "NotifyHit",
                user=call.who.user,
                agency=call.who.agency,
                peer=peer,
                agreement=ag,
                targets=[f"hit:{hit.hit_id}", f"ref:{ref}", casing_id],
                outcome=status,
                detail=detail,
            )
        self.store.mark_notified(hit.hit_id)
        return hit


def _prepared(descs: dict[str, Any], surface: bytes, version: str) -> fpb.PreparedQuery:
    return fpb.PreparedQuery(
        descriptors={k: np.asarray(v, np.float32).tobytes() for k, v in descs.items()},
        surface=surface,
        extractor_version=version,
    )


def _rank_key(c: pb.Candidate) -> tuple[int, float, float]:
    """Compared candidates first, by score; then the others by coarse score."""
    if c.HasField("score"):
        return (0, -c.score, -c.coarse_score)
    return (1, 0.0, -c.coarse_score)


def _foreign_to_candidate(fc: fpb.ForeignCandidate, server: str, agreement_id: str) -> pb.Candidate:
    c = pb.Candidate(
        casing_id=fc.ref,
        region="combined",
        coarse_score=fc.coarse_score,
        rescored=fc.rescored,
        incident_id=fc.incident_id,
        agency=fc.agency,
        server=server,
        agreement_id=agreement_id,
    )
    for name in ("score", "cmc", "non_match_frequency", "screen_score"):
        if fc.HasField(name):
            setattr(c, name, getattr(fc, name))
    return c


# ------------------------------------------------------------------------- requesting side


def _plain(method: Any) -> Callable[..., Any]:
    """The handler under :func:`server.service._rpc` (no second auth or audit record)."""
    return getattr(method, "__wrapped__")  # noqa: B009 - set by functools.wraps


def _node_of(service: MatchingService) -> FederationNode:
    node: FederationNode = getattr(service, "node")  # noqa: B009 - set by the subclass below
    return node


class FederatedMatchingService(MatchingService):
    """The Matching service of a federated server: Search with a scope, Decide and Compare on
    foreign candidates. Everything else, and every call without those fields, is unchanged."""

    def __init__(self, *args: Any, node: FederationNode, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.node = node

    @_rpc("Search", Permission.SEARCH)
    def Search(  # self typed as the base class, as _rpc's handlers are
        self: MatchingService, request: pb.SearchRequest, context: grpc.ServicerContext, call: Call
    ) -> pb.SearchResponse:
        node = _node_of(self)

        def local() -> pb.SearchResponse:
            resp: pb.SearchResponse = _plain(MatchingService.Search)(self, request, context, call)
            return resp

        if request.scope == pb.SCOPE_LOCAL:
            if request.peers:
                raise InvalidRequest("peers are named with scope SCOPE_PEERS")
            return local()
        if request.WhichOneof("query") == "casing_id":
            self._visible(call, request.casing_id)
        return node.federated_search(self, request, context, call, local)

    @_rpc("Decide", Permission.DECIDE)
    def Decide(  # self typed as the base class, as _rpc's handlers are
        self: MatchingService, request: pb.DecideRequest, context: grpc.ServicerContext, call: Call
    ) -> pb.Decision:
        node = _node_of(self)
        if not request.candidate_server:
            d: pb.Decision = _plain(MatchingService.Decide)(self, request, context, call)
            return d
        call.targets += [request.casing_id, f"{request.candidate_server}:{request.candidate_id}"]
        if verdict_name(request.verdict) != "hit":
            raise InvalidRequest(
                "only a confirmed hit is recorded for a peer's candidate (NotifyHit); keep"
                " exclusions and inconclusive results in your case notes"
            )
        self._visible(call, request.casing_id)
        peer, ag, _ = node._foreign(call, request.candidate_server, request.candidate_id)
        self._begin(call)
        hit = node.confirm_hit(
            call, request.casing_id, peer, ag, request.candidate_id, request.comment
        )
        call.targets.append(f"hit:{hit.hit_id}")
        return pb.Decision(
            decision_id=hit.hit_id,
            casing_id=request.casing_id,
            candidate_id=f"{peer.name}:{request.candidate_id}",
            verdict=pb.HIT,
            comment=hit.comment,
            examiner=hit.examiner,
            agency=hit.requesting_agency,
            time=hit.confirmed_at,
        )

    @_rpc("Compare", Permission.COMPARE)
    def Compare(  # self typed as the base class, as _rpc's handlers are
        self: MatchingService, request: pb.CompareRequest, context: grpc.ServicerContext, call: Call
    ) -> pb.CompareResponse:
        node = _node_of(self)
        if not request.server_b:
            r: pb.CompareResponse = _plain(MatchingService.Compare)(self, request, context, call)
            return r
        call.targets += [request.casing_a, f"{request.server_b}:{request.casing_b}"]
        self._visible(call, request.casing_a)
        peer, ag, level = node._foreign(call, request.server_b, request.casing_b)
        cat = node.catalog
        a = cat.prepared(request.casing_a)
        out = pb.CompareResponse(casing_a=request.casing_a, casing_b=request.casing_b)
        if level_rank(level) >= level_rank("surface"):
            got = node.detail(call, peer, ag, request.casing_b, fpb.SURFACE, b"")
            b = cat.engine.load(got.surface)
            comp = cat.engine.score(a, b)
            out.score, out.cmc = float(comp.score), int(comp.cmc)
            out.rotation_deg = float(getattr(comp, "rotation_deg", 0.0) or 0.0)
            out.dx_m = float(getattr(comp, "dx_m", 0.0) or 0.0)
            out.dy_m = float(getattr(comp, "dy_m", 0.0) or 0.0)
            out.region_scores.update({k: float(v) for k, v in comp.regions.items()})
            if not request.omit_picture:
                out.png = cat.engine.picture(a, b, comp)
            return out
        if level_rank(level) >= level_rank("pictures"):
            rec = cat.get(request.casing_a)
            surface = cat.store.load_surface(rec.id) or b""
            got = node.detail(call, peer, ag, request.casing_b, fpb.PICTURE, surface)
            out.png = got.png
            if got.HasField("score"):
                out.score = got.score
            if got.HasField("cmc"):
                out.cmc = got.cmc
            return out
        raise refused(ag, f"releases {level} only: no picture or surface of {peer.name}'s casings")
