"""A small client for the Matching service: one method per RPC, bearer token on every call.

    with Client("127.0.0.1:50051", token) as c:
        resp = c.submit("scan.x3p", incident_id="INC-1", calibre="9mm")
        for cand in resp.search.combined.candidates: ...

Uploads stream in 64 KiB chunks, read lazily from the file, so a client never holds the
whole file in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .proto_gen import intelligence_pb2 as ipb
from .proto_gen import intelligence_pb2_grpc as ipb_grpc
from .proto_gen import matching_pb2 as pb
from .proto_gen import matching_pb2_grpc as pb_grpc

DEFAULT_PORT = 50051
CHUNK_BYTES = 64 * 1024
MAX_MESSAGE = 512 * 1024 * 1024
VERDICT_NAMES = {"hit": pb.HIT, "excluded": pb.EXCLUDED, "inconclusive": pb.INCONCLUSIVE}


def normalize_address(address: str) -> str:
    """``host[:port]`` with the service's port (50051) when none is given.

    gRPC itself would pick 443 for a bare host name. ``[v6]`` and bare IPv6 literals
    (``::1``) get the port too; a target with a scheme (``dns:///h:p``, ``unix:/path``) is
    left as it is.
    """
    a = address.strip()
    if not a:
        raise ValueError("--server needs an address: HOST or HOST:PORT (e.g. 127.0.0.1:50051)")
    if "://" in a or a.startswith(("unix:", "unix-abstract:", "dns:", "ipv4:", "ipv6:")):
        return a
    if a.startswith("["):  # [v6] or [v6]:port
        host, sep, rest = a.partition("]")
        return a if rest.startswith(":") else f"{host}]:{DEFAULT_PORT}"
    if a.count(":") > 1:  # a bare IPv6 literal cannot carry a port
        return f"[{a}]:{DEFAULT_PORT}"
    host, sep, port = a.rpartition(":")
    if not sep:
        return f"{a}:{DEFAULT_PORT}"
    if not port.isdigit() or not host:
        raise ValueError(f"--server {address!r}: expected HOST or HOST:PORT (port a number)")
    return a


def channel_for(
    address: str,
    *,
    tls_ca: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> grpc.Channel:
    """Plaintext channel, or TLS when a CA is given (mutual TLS with a client cert + key).
    ``address``: ``host[:port]``, port 50051 when not given (:func:`normalize_address`)."""
    address = normalize_address(address)
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
    ]
    if tls_ca is None and tls_cert is None:
        return grpc.insecure_channel(address, options=options)
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("mutual TLS needs both --tls-cert and --tls-key")
    creds = grpc.ssl_channel_credentials(
        root_certificates=Path(tls_ca).read_bytes() if tls_ca else None,
        private_key=Path(tls_key).read_bytes() if tls_key else None,
        certificate_chain=Path(tls_cert).read_bytes() if tls_cert else None,
    )
    return grpc.secure_channel(address, creds, options=options)


def upload_messages(
    source: str | Path | bytes,
    metadata: pb.SubmitMetadata,
    *,
    chunk_bytes: int = CHUNK_BYTES,
    on_chunk: Callable[[int], None] | None = None,
) -> Iterator[pb.SubmitRequest]:
    """The SubmitCasing request stream: metadata first, then the content in chunks."""
    yield pb.SubmitRequest(metadata=metadata)
    if isinstance(source, bytes):
        for i in range(0, len(source), chunk_bytes):
            block = source[i : i + chunk_bytes]
            if on_chunk:
                on_chunk(len(block))
            yield pb.SubmitRequest(chunk=block)
        return
    with open(source, "rb") as fh:
        while block := fh.read(chunk_bytes):
            if on_chunk:
                on_chunk(len(block))
            yield pb.SubmitRequest(chunk=block)


class Client:
    def __init__(
        self,
        address: str,
        token: str | None,
        *,
        timeout: float | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> None:
        self.channel = channel_for(address, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key)
        self.stub = pb_grpc.MatchingStub(self.channel)
        self.intel = ipb_grpc.IntelligenceStub(self.channel)
        self.timeout = timeout
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def _kw(self, timeout: float | None) -> dict[str, Any]:
        t = timeout if timeout is not None else self.timeout
        return {"metadata": self.metadata, "timeout": t}

    # ------------------------------------------------------------------ RPCs

    def submit(
        self,
        source: str | Path | bytes,
        *,
        timeout: float | None = None,
        on_chunk: Callable[[int], None] | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        search: bool = True,
        **meta: Any,
    ) -> pb.SubmitResponse:
        """Upload a file (path or bytes). ``meta``: fields of :class:`SubmitMetadata`."""
        if "file_name" not in meta and not isinstance(source, bytes):
            meta["file_name"] = Path(source).name
        md = pb.SubmitMetadata(search_after_submit=search, **meta)
        msgs = upload_messages(source, md, chunk_bytes=chunk_bytes, on_chunk=on_chunk)
        return self.stub.SubmitCasing(msgs, **self._kw(timeout))

    def search(
        self,
        casing_id: str | None = None,
        *,
        file: str | Path | bytes | None = None,
        file_name: str = "",
        pixel_spacing_m: float = 0.0,
        length_unit: str = "",
        light: str = "",
        light_azimuth_deg: float | None = None,
        calibre: str = "",
        date_from: str = "",
        date_to: str = "",
        jurisdictions: tuple[str, ...] | list[str] = (),
        max_results: int = 0,
        timeout: float | None = None,
        scope: str = "local",
    ) -> pb.SearchResponse:
        filters = pb.SearchFilters(
            calibre=calibre,
            date_from=date_from,
            date_to=date_to,
            jurisdictions=list(jurisdictions),
            max_results=max_results,
        )
        req = pb.SearchRequest(
            filters=filters, pixel_spacing_m=pixel_spacing_m, length_unit=length_unit, light=light
        )
        if light_azimuth_deg is not None:
            req.light_azimuth_deg = light_azimuth_deg
        if scope == "all":  # "local" (default), "all" peers, or "peer1,peer2"
            req.scope = pb.SCOPE_ALL
        elif scope and scope != "local":
            req.scope = pb.SCOPE_PEERS
            req.peers.extend(p.strip() for p in scope.split(",") if p.strip())
        if file is not None:
            if isinstance(file, bytes):
                req.file = file
            else:
                req.file = Path(file).read_bytes()
                file_name = file_name or Path(file).name
            req.file_name = file_name
        elif casing_id is not None:
            req.casing_id = casing_id
        return self.stub.Search(req, **self._kw(timeout))

    def compare(
        self,
        a: str,
        b: str,
        *,
        picture: bool = True,
        timeout: float | None = None,
        server_b: str = "",
    ) -> pb.CompareResponse:
        req = pb.CompareRequest(casing_a=a, casing_b=b, omit_picture=not picture, server_b=server_b)
        return self.stub.Compare(req, **self._kw(timeout))

    def decide(
        self,
        casing_id: str,
        candidate_id: str,
        verdict: str,
        comment: str = "",
        *,
        timeout: float | None = None,
        candidate_server: str = "",
    ) -> pb.Decision:
        req = pb.DecideRequest(
            casing_id=casing_id,
            candidate_id=candidate_id,
            verdict=VERDICT_NAMES.get(verdict.lower(), pb.VERDICT_UNSPECIFIED),
            comment=comment,
            candidate_server=candidate_server,
        )
        return self.stub.Decide(req, **self._kw(timeout))

    def links(
        self,
        *,
        casing_id: str | None = None,
        incident_id: str | None = None,
        timeout: float | None = None,
    ) -> pb.LinkGraph:
        req = (
            pb.LinksRequest(casing_id=casing_id)
            if casing_id is not None
            else pb.LinksRequest(incident_id=incident_id or "")
        )
        return self.stub.Links(req, **self._kw(timeout))

    def get(self, casing_id: str, *, timeout: float | None = None) -> pb.Casing:
        req = pb.GetCasingRequest(casing_id=casing_id)
        return self.stub.GetCasing(req, **self._kw(timeout))

    def list(
        self,
        *,
        incident_id: str = "",
        calibre: str = "",
        limit: int = 0,
        offset: int = 0,
        timeout: float | None = None,
    ) -> pb.ListCasingsResponse:
        req = pb.ListCasingsRequest(
            incident_id=incident_id, calibre=calibre, limit=limit, offset=offset
        )
        return self.stub.ListCasings(req, **self._kw(timeout))

    def delete(
        self, casing_id: str, reason: str, *, timeout: float | None = None
    ) -> pb.DeleteCasingResponse:
        req = pb.DeleteCasingRequest(casing_id=casing_id, reason=reason)
        return self.stub.DeleteCasing(req, **self._kw(timeout))

    def leads(
        self,
        *,
        state: str = "",
        limit: int = 0,
        offset: int = 0,
        casing_id: str = "",
        timeout: float | None = None,
    ) -> pb.ListLeadsResponse:
        """Leads the caller may see (``state``: "", new, reviewed, confirmed, excluded;
        ``casing_id``: only that casing's) and the correlation queue's progress."""
        req = pb.ListLeadsRequest(state=state, limit=limit, offset=offset, casing_id=casing_id)
        return self.stub.ListLeads(req, **self._kw(timeout))

    # ------------------------------------------------------------------ intelligence

    def add_firearm(self, *, timeout: float | None = None, **fields: Any) -> ipb.Firearm:
        """Record a firearm (fields of ``AddFirearmRequest``: make, model, calibre, ...)."""
        return self.intel.AddFirearm(ipb.AddFirearmRequest(**fields), **self._kw(timeout))

    def get_firearm(self, firearm_id: str, *, timeout: float | None = None) -> ipb.Firearm:
        req = ipb.GetFirearmRequest(firearm_id=firearm_id)
        return self.intel.GetFirearm(req, **self._kw(timeout))

    def set_firearm_status(
        self, firearm_id: str, status: str, comment: str, *, timeout: float | None = None
    ) -> ipb.Firearm:
        req = ipb.SetFirearmStatusRequest(firearm_id=firearm_id, status=status, comment=comment)
        return self.intel.SetFirearmStatus(req, **self._kw(timeout))

    def add_test_fire(
        self, firearm_id: str, casing_id: str, *, timeout: float | None = None
    ) -> ipb.Firearm:
        req = ipb.AddTestFireRequest(firearm_id=firearm_id, casing_id=casing_id)
        return self.intel.AddTestFire(req, **self._kw(timeout))

    def add_trace(
        self,
        firearm_id: str,
        requested_of: str,
        requested_at: str = "",
        *,
        timeout: float | None = None,
    ) -> ipb.Firearm:
        req = ipb.AddTraceRequest(
            firearm_id=firearm_id, requested_of=requested_of, requested_at=requested_at
        )
        return self.intel.AddTrace(req, **self._kw(timeout))

    def update_trace(
        self, trace_id: str, status: str, outcome: str = "", *, timeout: float | None = None
    ) -> ipb.Firearm:
        req = ipb.UpdateTraceRequest(trace_id=trace_id, status=status, outcome=outcome)
        return self.intel.UpdateTrace(req, **self._kw(timeout))

    def set_incident_location(
        self, incident_id: str, lat: float, lon: float, *, timeout: float | None = None
    ) -> None:
        req = ipb.SetIncidentLocationRequest(incident_id=incident_id, lat=lat, lon=lon)
        self.intel.SetIncidentLocation(req, **self._kw(timeout))

    def list_series(self, *, timeout: float | None = None) -> ipb.ListSeriesResponse:
        return self.intel.ListSeries(ipb.ListSeriesRequest(), **self._kw(timeout))

    def get_series(self, *, timeout: float | None = None, **fields: Any) -> ipb.SeriesReport:
        """One series (``series_id``, ``incident_id``, ``casing_id`` or ``firearm_id``;
        ``with_html``, ``with_png``)."""
        return self.intel.GetSeries(ipb.GetSeriesRequest(**fields), **self._kw(timeout))

    def report(self, *, timeout: float | None = None, **fields: Any) -> ipb.HubReport:
        """The hub report (``date_from``, ``date_to``, ``jurisdictions``, ``with_png``)."""
        return self.intel.GetReport(ipb.ReportRequest(**fields), **self._kw(timeout))

    def health(self, service: str = "", *, timeout: float | None = 5.0) -> str:
        """Health status name: "SERVING", "NOT_SERVING", ..."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))
