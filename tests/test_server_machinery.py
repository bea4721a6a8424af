"""Service machinery against an in-memory fake backend: auth, roles, sharing, status codes,
limits, deadlines, audit, health, shutdown. (The real index is exercised in
test_server_integration.py.)"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from ballistics.errors import ScanFormatError, ScanTooLargeError
from server.app import ServerStartError, create_server
from server.audit import load_key, verify
from server.auth import Authenticator
from server.policy import SharingPolicy
from server.service import (
    CandidateRec,
    CasingRecord,
    ComparisonResult,
    DecisionRec,
    HitEdgeRec,
    IncidentNodeRec,
    LinkGraphRec,
    SearchQuery,
    SearchResult,
    ServiceLimits,
    SubmitMeta,
)
from tests.test_server_support import running_server, scratch_audit


class FakeBackend:
    """Casings are any upload starting with b"SCAN"; b"HUGE" -> too large; b"BOOM" -> bug."""

    def __init__(self) -> None:
        self.casings: dict[str, CasingRecord] = {}
        self.decisions: list[DecisionRec] = []
        self.submit_delay = 0.0
        self.submitting = threading.Event()
        self.searched_agencies: list[set[str]] = []

    def submit(
        self, upload: Path, meta: SubmitMeta, *, agency: str, user: str, size: int, sha256: str
    ) -> CasingRecord:
        head = upload.read_bytes()[:4]
        assert hashlib.sha256(upload.read_bytes()).hexdigest() == sha256
        self.submitting.set()
        if self.submit_delay:
            time.sleep(self.submit_delay)
        if head == b"HUGE":
            raise ScanTooLargeError("scan claims 100000 x 100000 pixels")
        if head == b"BOOM":
            raise RuntimeError("a bug")
        if head != b"SCAN":
            raise ScanFormatError("not a scan: unknown magic bytes")
        cid = f"C{len(self.casings) + 1:04d}"
        rec = CasingRecord(
            casing_id=cid,
            agency=agency,
            sha256=sha256,
            incident_id=meta.incident_id,
            calibre=meta.calibre,
            submitted_by=user,
            size_bytes=size,
            segmentation={"primer_center": [10, 12], "primer_radius": 5.0},
        )
        self.casings[cid] = rec
        return rec

    def search(
        self, query: SearchQuery, *, allowed_agencies: set[str], deadline: float | None
    ) -> SearchResult:
        self.searched_agencies.append(set(allowed_agencies))
        if query.file is not None and query.file.startswith(b"SLOW"):
            while deadline is not None and time.monotonic() < deadline:
                time.sleep(0.01)
            raise TimeoutError("re-ranking stopped at the deadline")
        if query.file is not None and not query.file.startswith(b"SCAN"):
            raise ScanFormatError("not a scan")
        cands = [
            CandidateRec(c.casing_id, "combined", score=1.0 / (i + 1), agency=c.agency)
            for i, c in enumerate(self.casings.values())
            if c.agency in allowed_agencies
            and c.casing_id != query.casing_id
            and (not query.calibre or c.calibre == query.calibre)
        ][: query.top]
        return SearchResult(
            query_casing_id=query.casing_id or "",
            regions={"breech_face": cands},
            combined=cands,
            scored=len(cands),
        )

    def get(self, casing_id: str) -> CasingRecord:
        if casing_id not in self.casings:
            raise LookupError(f"no casing with id {casing_id}")
        return self.casings[casing_id]

    def list(
        self, *, agencies: set[str], incident_id: str, calibre: str, limit: int, offset: int
    ) -> list[CasingRecord]:
        recs = [c for c in self.casings.values() if c.agency in agencies]
        return recs[offset : offset + limit]

    def compare(
        self, casing_a: str, casing_b: str, *, picture: bool, deadline: float | None
    ) -> ComparisonResult:
        return ComparisonResult(
            score=0.9,
            cmc=12,
            rotation_deg=3.0,
            regions={"breech_face": 0.9},
            cells=[{"row": 0, "col": 1, "ccf": 0.7, "congruent": True}],
            non_match_frequency=1e-4,
            png=b"\x89PNG fake" if picture else b"",
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
        prev = [
            d for d in self.decisions if {d.casing_id, d.candidate_id} == {casing_id, candidate_id}
        ]
        d = DecisionRec(
            str(len(self.decisions) + 1),
            casing_id,
            candidate_id,
            verdict,
            comment,
            examiner,
            agency,
            "2024-01-01T00:00:00Z",
            prev[-1].decision_id if prev else "",
        )
        self.decisions.append(d)
        return d

    def links(
        self, *, casing_id: str | None, incident_id: str | None, **scope: object
    ) -> LinkGraphRec:
        nodes = {
            c.incident_id: IncidentNodeRec(c.incident_id, c.agency, [c.casing_id])
            for c in self.casings.values()
        }
        edges = [
            HitEdgeRec(
                self.casings[d.casing_id].incident_id,
                self.casings[d.candidate_id].incident_id,
                d.casing_id,
                d.candidate_id,
                d.examiner,
                d.agency,
                d.time,
                d.decision_id,
            )
            for d in self.decisions
            if d.verdict == "hit"
        ]
        return LinkGraphRec(list(nodes.values()), edges)

    def delete(self, casing_id: str, *, reason: str, user: str) -> bool:
        self.get(casing_id)
        del self.casings[casing_id]
        return True


def _code(excinfo: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    return excinfo.value.code()


@pytest.fixture
def srv(tmp_path: Path):
    with running_server(FakeBackend(), tmp_path / "data") as r:
        yield r


def _submit(srv, user: str, content: bytes = b"SCAN" + b"x" * 1000, **meta):
    with srv.client(user) as c:
        return c.submit(content, file_name="a.x3p", **meta)


def test_submit_get_list_search(srv) -> None:
    r1 = _submit(srv, "north_sub", incident_id="N-1", calibre="9mm")
    assert r1.casing_id and r1.sha256 == hashlib.sha256(b"SCAN" + b"x" * 1000).hexdigest()
    assert r1.size_bytes == 1004
    assert r1.segmentation.primer_radius_px == 5.0
    r2 = _submit(srv, "south_exam", incident_id="S-1", calibre="9mm")
    # the submit's own search found the north casing (north and south share)
    assert [c.casing_id for c in r2.search.combined.candidates] == [r1.casing_id]
    with srv.client("north_sub") as c:
        got = c.get(r1.casing_id)
        assert got.agency == "PD-North" and got.incident_id == "N-1"
        assert {x.casing_id for x in c.list().casings} == {r1.casing_id, r2.casing_id}
        res = c.search(r1.casing_id, max_results=5)
        assert [x.casing_id for x in res.combined.candidates] == [r2.casing_id]
        assert res.combined.candidates[0].rank == 1
        assert [x.region for x in res.regions] == ["breech_face"]
        by_file = c.search(file=b"SCAN" + b"y" * 10)
        assert by_file.query_casing_id == ""
    assert len(srv.backend.casings) == 2  # search by file stored nothing


def test_no_search_after_submit(srv) -> None:
    with srv.client("north_sub") as c:
        r = c.submit(b"SCAN1", search=False)
    assert not r.HasField("search")


def test_unauthenticated(srv) -> None:
    for client_kw in ({}, {"bad": "nope"}):
        with srv.client(None) as c:
            if client_kw:
                c.metadata = (("authorization", "Bearer nope"),)
            with pytest.raises(grpc.RpcError) as e:
                c.list()
            assert _code(e) is grpc.StatusCode.UNAUTHENTICATED
    with srv.client(None) as c:
        c.metadata = (("authorization", "Basic " + srv.tokens["north_sub"]),)
        with pytest.raises(grpc.RpcError) as e:
            c.list()
        assert _code(e) is grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as e:
            c.submit(b"SCAN")
        assert _code(e) is grpc.StatusCode.UNAUTHENTICATED
    assert srv.backend.casings == {}


def test_roles(srv) -> None:
    a = _submit(srv, "north_sub").casing_id
    b = _submit(srv, "north_sub").casing_id
    with srv.client("north_sub") as c:
        for call in (
            lambda: c.compare(a, b),
            lambda: c.decide(a, b, "hit"),
            lambda: c.links(casing_id=a),
            lambda: c.delete(a, "oops"),
        ):
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert _code(e) is grpc.StatusCode.PERMISSION_DENIED
    with srv.client("north_exam") as c:
        assert c.compare(a, b).cmc == 12
        with pytest.raises(grpc.RpcError) as e:
            c.delete(a, "oops")
        assert _code(e) is grpc.StatusCode.PERMISSION_DENIED
    with srv.client("north_admin") as c:
        assert c.delete(a, "wrong file").deleted


def test_cross_tenant_refusals(srv) -> None:
    north = _submit(srv, "north_exam", incident_id="N-1").casing_id
    east = _submit(srv, "east_exam", incident_id="E-1").casing_id
    with srv.client("east_exam") as c:
        for call in (
            lambda: c.get(north),
            lambda: c.search(north),
            lambda: c.compare(east, north),
            lambda: c.decide(east, north, "hit"),
            lambda: c.links(casing_id=north),
        ):
            with pytest.raises(grpc.RpcError) as e:
                call()
            # the same answer as for an id that does not exist: no existence oracle
            assert _code(e) is grpc.StatusCode.NOT_FOUND
            assert e.value.details() == f"no casing with id {north}"
        assert [x.casing_id for x in c.list().casings] == [east]
        assert len(c.search(east).combined.candidates) == 0
    # the policy went into the backend's filter: east's searches only ever asked for east
    assert srv.backend.searched_agencies[-1] == {"SO-East"}
    with srv.client("south_admin") as c:  # south may see north's casing but not delete it
        assert c.get(north).agency == "PD-North"
        with pytest.raises(grpc.RpcError) as e:
            c.delete(north, "not ours")
        assert _code(e) is grpc.StatusCode.PERMISSION_DENIED
    # a jurisdiction filter can narrow but never widen
    with srv.client("north_exam") as c:
        c.search(north, jurisdictions=["east", "south"])
    assert srv.backend.searched_agencies[-1] == {"PD-South"}


def test_status_codes(srv) -> None:
    with srv.client("north_admin") as c:
        cases = [
            (lambda: c.get("nope"), grpc.StatusCode.NOT_FOUND),
            (lambda: c.search("nope"), grpc.StatusCode.NOT_FOUND),
            (lambda: c.delete("nope", "x"), grpc.StatusCode.NOT_FOUND),
            (lambda: c.search(file=b"garbage"), grpc.StatusCode.INVALID_ARGUMENT),
            (lambda: c.search(), grpc.StatusCode.INVALID_ARGUMENT),
            (lambda: c.search("x", date_from="01/02/2024"), grpc.StatusCode.INVALID_ARGUMENT),
            (lambda: c.submit(b"garbage"), grpc.StatusCode.INVALID_ARGUMENT),
            (lambda: c.submit(b""), grpc.StatusCode.INVALID_ARGUMENT),
            (lambda: c.submit(b"HUGE"), grpc.StatusCode.RESOURCE_EXHAUSTED),
            (lambda: c.submit(b"SCAN", pixel_spacing_m=6.25), grpc.StatusCode.INVALID_ARGUMENT),
            (
                lambda: c.submit(b"SCAN", acquisition_date="yesterday"),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            (lambda: c.submit(b"BOOM"), grpc.StatusCode.INTERNAL),
            (lambda: c.decide("a", "b", "maybe"), grpc.StatusCode.INVALID_ARGUMENT),
            (lambda: c.links(), grpc.StatusCode.INVALID_ARGUMENT),
            (lambda: c.delete("x", " "), grpc.StatusCode.INVALID_ARGUMENT),
        ]
        for call, code in cases:
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert _code(e) is code, e.value
            assert _code(e) is not grpc.StatusCode.UNKNOWN
    assert srv.backend.casings == {}
    assert list(srv.data_dir.glob("upload-*")) == []  # spooled uploads removed


def test_metadata_must_come_first(srv) -> None:
    from server.proto_gen import matching_pb2 as pb

    with srv.client("north_sub") as c:
        msgs = iter([pb.SubmitRequest(chunk=b"SCAN")])
        with pytest.raises(grpc.RpcError) as e:
            c.stub.SubmitCasing(msgs, metadata=c.metadata)
        assert _code(e) is grpc.StatusCode.INVALID_ARGUMENT
        two = iter([pb.SubmitRequest(metadata=pb.SubmitMetadata())] * 2)
        with pytest.raises(grpc.RpcError) as e:
            c.stub.SubmitCasing(two, metadata=c.metadata)
        assert _code(e) is grpc.StatusCode.INVALID_ARGUMENT


def test_upload_limit(tmp_path: Path) -> None:
    backend = FakeBackend()
    limits = ServiceLimits(max_upload_bytes=100_000, spool_dir=str(tmp_path / "data"))
    with running_server(backend, tmp_path / "data", limits=limits) as srv:
        with srv.client("north_sub") as c:
            c.submit(b"SCAN" + b"x" * 99_000)
            with pytest.raises(grpc.RpcError) as e:
                c.submit(b"SCAN" + b"x" * 100_000)
            assert _code(e) is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "100,000" in e.value.details()
    assert len(backend.casings) == 1
    assert list((tmp_path / "data").glob("upload-*")) == []


def test_deadline_exceeded(srv) -> None:
    with srv.client("north_sub") as c:
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            c.search(file=b"SLOW", timeout=0.5)
        assert _code(e) is grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - t0 < 3
    # the server's handler also stopped near the deadline (it was passed in)
    time.sleep(0.3)
    recs = srv.audit.path.read_text().splitlines()
    assert '"DEADLINE_EXCEEDED"' in recs[-1]


def test_decide_supersedes_and_links(srv) -> None:
    n = _submit(srv, "north_exam", incident_id="N-1").casing_id
    s = _submit(srv, "south_exam", incident_id="S-1").casing_id
    e = _submit(srv, "east_exam", incident_id="E-1").casing_id
    with srv.client("north_exam") as c:
        d1 = c.decide(n, s, "inconclusive", "needs another look")
        d2 = c.decide(n, s, "hit", "confirmed on the microscope")
        assert d2.supersedes == d1.decision_id and d2.examiner == "north_exam"
        g = c.links(casing_id=n)
        assert {x.incident_id for x in g.nodes} == {"N-1", "S-1"}  # E-1 is not visible
        assert {x.jurisdiction for x in g.nodes} == {"north", "south"}
        assert len(g.edges) == 1 and g.edges[0].examiner == "north_exam"
    with srv.client("east_exam") as c:
        g = c.links(casing_id=e)
        assert [x.incident_id for x in g.nodes] == ["E-1"] and len(g.edges) == 0


def test_compare_picture(srv) -> None:
    a = _submit(srv, "north_exam").casing_id
    b = _submit(srv, "north_exam").casing_id
    with srv.client("north_exam") as c:
        r = c.compare(a, b)
        assert r.png.startswith(b"\x89PNG") and r.region_scores["breech_face"] == 0.9
        assert r.cells[0].congruent and r.non_match_frequency == 1e-4
        assert c.compare(a, b, picture=False).png == b""


def test_every_call_audited(srv) -> None:
    a = _submit(srv, "north_sub").casing_id
    with srv.client("north_sub") as c:
        c.get(a)
        with pytest.raises(grpc.RpcError):
            c.get("missing")
        with pytest.raises(grpc.RpcError):
            c.compare(a, a)
    with srv.client(None) as c, pytest.raises(grpc.RpcError):
        c.list()
    lines = srv.audit.path.read_text().splitlines()
    assert len(lines) == 6
    outcomes = [__import__("json").loads(x)["outcome"] for x in lines]
    # the submission is audited before it stores anything (STARTED), then with its outcome
    assert outcomes == ["STARTED", "OK", "OK", "NOT_FOUND", "PERMISSION_DENIED", "UNAUTHENTICATED"]
    assert '"targets":["' + a in lines[2]
    assert verify(srv.audit.path, load_key(srv.key_file)).ok


def test_health_and_graceful_shutdown(tmp_path: Path) -> None:
    backend = FakeBackend()
    backend.submit_delay = 1.0
    with running_server(backend, tmp_path / "data") as srv:
        with srv.client("north_sub") as c:
            assert c.health() == "SERVING"
            assert c.health("ballistics.v1.Matching") == "SERVING"
        result: dict[str, object] = {}

        def submit() -> None:
            with srv.client("north_sub") as c:
                result["r"] = c.submit(b"SCAN in flight", search=False)

        t = threading.Thread(target=submit)
        t.start()
        assert backend.submitting.wait(5)
        srv.server.stop(grace=10)  # returns once the in-flight submission finished
        t.join(5)
        status = srv.server.health._server_status
        assert status[""] == health_pb2.HealthCheckResponse.NOT_SERVING
    assert result["r"].casing_id in backend.casings  # type: ignore[attr-defined]


def test_second_server_on_same_port_fails(srv, tmp_path: Path) -> None:
    audit = scratch_audit(tmp_path)
    with pytest.raises(ServerStartError, match="in use"):
        create_server(
            FakeBackend(),
            f"127.0.0.1:{srv.port}",
            auth=Authenticator([]),
            policy=SharingPolicy(),
            audit=audit,
        )
    audit.close()


# ---------------------------------------------------------------- issue 10, items 5 and 8


def _stalled_upload(c, release: threading.Event, content: bytes = b"SCAN" + b"x" * 100):
    """Start an upload that sends its metadata and one chunk, then stalls until ``release``."""
    from server.proto_gen import matching_pb2 as pb

    def gen():
        yield pb.SubmitRequest(metadata=pb.SubmitMetadata(file_name="stall.x3p"))
        yield pb.SubmitRequest(chunk=content)
        release.wait(30)

    return c.stub.SubmitCasing.future(gen(), metadata=c.metadata, timeout=30)


def test_stalled_uploads_do_not_starve_health_or_other_calls(tmp_path: Path) -> None:
    backend = FakeBackend()
    with running_server(backend, tmp_path / "data") as srv:  # default idle timeout (30 s)
        release = threading.Event()
        clients = [srv.client("north_sub") for _ in range(8)]
        try:
            stalled = [_stalled_upload(c, release) for c in clients]
            time.sleep(0.5)  # all eight are in the server now
            with srv.client("north_exam") as c:
                t0 = time.monotonic()
                assert c.health(timeout=3) == "SERVING"
                assert c.health("ballistics.v1.Matching", timeout=3) == "SERVING"
                assert list(c.list(timeout=3).casings) == []
                assert time.monotonic() - t0 < 3
            # uploads over the concurrent-upload cap were refused at once, with a reason
            refused = [f for f in stalled if f.done()]
            assert refused, "no upload was refused: stalled uploads can hold every worker"
            for f in refused:
                assert f.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "uploads" in f.details()
        finally:
            for f in stalled:
                f.cancel()
            release.set()
            for c in clients:
                c.close()
    assert backend.casings == {}


def test_idle_upload_is_dropped_and_nothing_stored(tmp_path: Path) -> None:
    backend = FakeBackend()
    data = tmp_path / "data"
    limits = ServiceLimits(spool_dir=str(data), upload_idle_timeout_s=0.5)
    with running_server(backend, data, limits=limits) as srv, srv.client("north_sub") as c:
        release = threading.Event()
        t0 = time.monotonic()
        fut = _stalled_upload(c, release)
        with pytest.raises(grpc.RpcError) as e:
            fut.result(timeout=10)
        release.set()
        assert time.monotonic() - t0 < 5
        assert _code(e) is grpc.StatusCode.DEADLINE_EXCEEDED
        assert "no data" in e.value.details() and "0.5 s" in e.value.details()
        assert c.health() == "SERVING"
    assert backend.casings == {}
    assert list(data.glob("upload-*")) == []


def test_upload_below_the_minimum_rate_is_dropped(tmp_path: Path) -> None:
    from server.proto_gen import matching_pb2 as pb

    backend = FakeBackend()
    data = tmp_path / "data"
    limits = ServiceLimits(
        spool_dir=str(data),
        upload_idle_timeout_s=5.0,
        upload_min_rate_bytes_s=10_000,
        upload_rate_grace_s=0.3,
    )

    def trickle():
        yield pb.SubmitRequest(metadata=pb.SubmitMetadata(file_name="slow.x3p"))
        yield pb.SubmitRequest(chunk=b"SCAN")
        for _ in range(100):  # 100 bytes every 0.1 s: 1 kB/s, a tenth of the minimum
            time.sleep(0.1)
            yield pb.SubmitRequest(chunk=b"x" * 100)

    with running_server(backend, data, limits=limits) as srv, srv.client("north_sub") as c:
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            c.stub.SubmitCasing(trickle(), metadata=c.metadata, timeout=20)
        assert time.monotonic() - t0 < 5
        assert _code(e) is grpc.StatusCode.DEADLINE_EXCEEDED
        assert "rate" in e.value.details()
    assert backend.casings == {}


def test_cancelled_upload_is_not_stored_and_audited_as_cancelled(tmp_path: Path) -> None:
    backend = FakeBackend()
    with running_server(backend, tmp_path / "data") as srv, srv.client("north_sub") as c:
        release = threading.Event()
        fut = _stalled_upload(c, release)
        time.sleep(0.3)
        fut.cancel()
        release.set()
        time.sleep(0.5)
        last = __import__("json").loads(srv.audit.path.read_text().splitlines()[-1])
        assert last["method"] == "SubmitCasing"
        assert last["outcome"] == "CANCELLED"
    assert backend.casings == {}


def test_stream_that_ends_on_a_cancelled_call_is_not_treated_as_complete() -> None:
    """The race of issue 10 item 8: the request stream ends (no more messages) but the call was
    cancelled, not half-closed; the upload must be refused, not parsed as complete."""
    from server.interceptors import guarded_upload
    from server.proto_gen import matching_pb2 as pb
    from server.service import ServiceError

    class CancelledContext:
        def is_active(self) -> bool:
            return False

        def add_callback(self, fn) -> bool:
            return False

    msgs = iter([pb.SubmitRequest(metadata=pb.SubmitMetadata()), pb.SubmitRequest(chunk=b"SC")])
    stream = guarded_upload(msgs, CancelledContext(), ServiceLimits())
    assert next(stream).WhichOneof("part") == "metadata"
    assert next(stream).chunk == b"SC"
    with pytest.raises(ServiceError) as e:
        next(stream)
    assert e.value.code is grpc.StatusCode.CANCELLED


def test_memory_budget_is_shared_by_concurrent_requests(tmp_path: Path) -> None:
    """Each request reserves its declared decoded size before decoding; over the server-wide
    budget -> RESOURCE_EXHAUSTED; reservations are released when the call ends."""
    from ballistics.limits import Limits

    class PixelBackend(FakeBackend):
        def submit(self, upload: Path, meta: SubmitMeta, **kw):
            # "PIXL <rows> <cols>": a header the reader checks before decoding
            rows, cols = (int(x) for x in upload.read_bytes().split()[1:3])
            Limits(max_pixels=10**9).check_pixels(rows, cols, "fake header")
            self.submitting.set()
            time.sleep(self.submit_delay)
            cid = f"C{len(self.casings) + 1:04d}"
            self.casings[cid] = CasingRecord(casing_id=cid, agency=kw["agency"])
            return self.casings[cid]

    backend = PixelBackend()
    backend.submit_delay = 1.0
    need = 1000 * 1000 * Limits().working_bytes_per_pixel
    data = tmp_path / "data"
    limits = ServiceLimits(spool_dir=str(data), memory_budget_bytes=int(need * 1.5))
    with running_server(backend, data, limits=limits) as srv:
        result: dict[str, object] = {}

        def first() -> None:
            with srv.client("north_sub") as c:
                result["r"] = c.submit(b"PIXL 1000 1000", search=False)

        t = threading.Thread(target=first)
        t.start()
        assert backend.submitting.wait(5)
        with srv.client("north_sub") as c:
            with pytest.raises(grpc.RpcError) as e:
                c.submit(b"PIXL 1000 1000", search=False)
            assert _code(e) is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "memory budget" in e.value.details()
            t.join(10)
            assert result["r"].casing_id  # type: ignore[attr-defined]
            # released: the same request now fits
            backend.submit_delay = 0.0
            assert c.submit(b"PIXL 1000 1000", search=False).casing_id
            with pytest.raises(grpc.RpcError) as e:  # larger than the whole budget
                c.submit(b"PIXL 2000 2000", search=False)
            assert _code(e) is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert srv.server.budget.used == 0


def test_spacing_out_of_range_is_refused_up_front(srv) -> None:
    with srv.client("north_exam") as c:
        for spacing in (1e-300, 1e-9, 5e-3, float("inf"), float("nan"), -1e-6):
            for call in (
                lambda s=spacing: c.submit(b"SCAN", pixel_spacing_m=s),
                lambda s=spacing: c.search(file=b"SCAN", pixel_spacing_m=s),
            ):
                with pytest.raises(grpc.RpcError) as e:
                    call()
                assert _code(e) is grpc.StatusCode.INVALID_ARGUMENT, spacing
                assert "um" in e.value.details()
        assert c.submit(b"SCAN", pixel_spacing_m=3.125e-6).casing_id  # inside 0.1-100 um
    assert len(srv.backend.casings) == 1


def test_undecodable_requests_are_invalid_argument_and_audited(srv) -> None:
    from server.proto_gen import matching_pb2 as pb

    with srv.client("north_exam") as c:
        raw = c.channel.unary_unary(
            "/ballistics.v1.Matching/GetCasing",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        for body in (b"\x0a\x02\xff\xfe", b"\x0a\xff\xff\xff\xff\x0f", b"\xff"):
            with pytest.raises(grpc.RpcError) as e:
                raw(body, metadata=c.metadata)
            assert _code(e) is grpc.StatusCode.INVALID_ARGUMENT, body
        stream = c.channel.stream_unary(
            "/ballistics.v1.Matching/SubmitCasing",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        first = pb.SubmitRequest(metadata=pb.SubmitMetadata()).SerializeToString()
        with pytest.raises(grpc.RpcError) as e:
            stream(iter([first, b"\x12\x05SC"]), metadata=c.metadata)
        assert _code(e) is grpc.StatusCode.INVALID_ARGUMENT
    outcomes = [
        __import__("json").loads(x)["outcome"] for x in srv.audit.path.read_text().splitlines()
    ]
    assert outcomes.count("INVALID_ARGUMENT") == 4
    assert srv.backend.casings == {}


def test_long_ids_are_not_echoed_back(srv) -> None:
    with srv.client("north_exam") as c:
        for call in (
            lambda: c.get("A" * 16384),
            lambda: c.search("A" * 16384),
            lambda: c.compare("A" * 16384, "B"),
            lambda: c.links(incident_id="I" * 16384),
        ):
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert _code(e) is grpc.StatusCode.INVALID_ARGUMENT
            assert len(e.value.details()) < 400
            assert "16,384" in e.value.details() or "16384" in e.value.details()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("agency_case_number", "C" * 100_000),
        ("place", "P" * 100_000),
        ("file_name", "f" * 100_000 + ".x3p"),
        ("calibre", "9mm\x00"),
        ("incident_id", "INC-\u202e1"),
        ("place", "line\nbreak"),
        ("acquisition_date", "2024-02-30"),
    ],
)
def test_metadata_limits_and_control_characters(srv, field: str, value: str) -> None:
    with srv.client("north_sub") as c:
        with pytest.raises(grpc.RpcError) as e:
            c.submit(b"SCAN", **{field: value})
        assert _code(e) is grpc.StatusCode.INVALID_ARGUMENT
        assert field in e.value.details() and len(e.value.details()) < 400
        assert list(c.list().casings) == []  # nothing stored, listing still works


def test_comment_and_reason_limits(srv) -> None:
    a = _submit(srv, "north_admin").casing_id
    b = _submit(srv, "north_admin").casing_id
    with srv.client("north_admin") as c:
        assert c.decide(a, b, "hit", "two lines\nof comment\twith a tab").decision_id
        for call in (
            lambda: c.decide(a, b, "hit", "x" * 1_000_000),
            lambda: c.decide(a, b, "hit", "bidi \u2066trick"),
            lambda: c.delete(a, "r" * 100_000),
            lambda: c.search(a, jurisdictions=["j" * 10_000]),
            lambda: c.search(a, calibre="9mm\x1b[31m"),
        ):
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert _code(e) is grpc.StatusCode.INVALID_ARGUMENT
    assert len(srv.backend.decisions) == 1 and a in srv.backend.casings


def test_builtin_value_error_from_the_backend_is_internal_not_invalid_argument(srv) -> None:
    """Only input errors (BallisticsError, the service's own checks) are INVALID_ARGUMENT; a
    ValueError from a bug deep in the store is an internal error."""

    def broken_get(casing_id: str) -> CasingRecord:
        raise ValueError("could not convert string to float: 'abc'")

    srv.backend.get = broken_get  # type: ignore[method-assign]
    with srv.client("north_exam") as c:
        with pytest.raises(grpc.RpcError) as e:
            c.get("C0001")
        assert _code(e) is grpc.StatusCode.INTERNAL
        assert "abc" not in e.value.details()


# ---------------------------------------------------------------- issue 10, item 9


def test_unknown_scores_are_absent_not_zero() -> None:
    """A score, CMC or non-match frequency that was not computed is unset on the wire and
    printed as "-" / absent from JSON, never as 0."""
    import json

    from google.protobuf.json_format import MessageToDict

    from server.commands_remote import _fmt_candidates
    from server.service import comparison_to_proto, search_to_proto

    r = SearchResult(
        combined=[
            # compared, but no calibration for its non-match frequency
            CandidateRec("a", "combined", score=0.7, cmc=9, non_match_frequency=None),
            # compared; a genuine zero is kept as zero
            CandidateRec("z", "combined", score=0.0, cmc=0, non_match_frequency=0.0),
            # screened out: nothing known beyond the coarse score
            CandidateRec(
                "b", "combined", score=None, cmc=None, non_match_frequency=None, rescored=False
            ),
        ],
    )
    pb = search_to_proto(r)
    a, z, b = pb.combined.candidates
    assert a.HasField("score") and a.cmc == 9 and not a.HasField("non_match_frequency")
    assert z.HasField("score") and z.HasField("cmc") and z.HasField("non_match_frequency")
    assert not b.HasField("score") and not b.HasField("cmc")
    assert not b.HasField("non_match_frequency") and not b.HasField("screen_score")
    as_json = MessageToDict(b, preserving_proto_field_name=True)
    assert "score" not in as_json and "non_match_frequency" not in as_json
    text = "\n".join(_fmt_candidates(pb))
    a_line = next(line for line in text.splitlines() if " a " in line)
    assert "0.7" in a_line and a_line.rstrip().split()[4] == "-"  # non-match freq unknown
    b_line = next(line for line in text.splitlines() if " b " in line)
    assert "0.000" not in b_line and " 0 " not in b_line

    c = comparison_to_proto("a", "b", ComparisonResult(score=0.5, cmc=3, non_match_frequency=None))
    assert c.score == 0.5 and not c.HasField("non_match_frequency")
    assert "non_match_frequency" not in json.loads(json.dumps(MessageToDict(c)))


def test_remote_compare_prints_unknown_non_match_frequency_as_dash(srv, capsys) -> None:
    import argparse

    from server.commands_remote import cmd_compare

    srv.backend.compare = lambda a, b, **kw: ComparisonResult(  # type: ignore[method-assign]
        score=0.4, cmc=2, non_match_frequency=None
    )
    a = _submit(srv, "north_exam").casing_id
    b = _submit(srv, "north_exam").casing_id
    args = argparse.Namespace(
        server=srv.address, token=srv.tokens["north_exam"], a=a, b=b, pairs=None, png=None,
        json=False, tls_ca=None, tls_cert=None, tls_key=None,
    )  # fmt: skip
    assert cmd_compare(args) == 0
    out = capsys.readouterr().out
    assert "non-match frequency -" in out and "non-match frequency 0" not in out
    args.json = True
    assert cmd_compare(args) == 0
    d = __import__("json").loads(capsys.readouterr().out)
    assert "non_match_frequency" not in d or d["non_match_frequency"] is None
    assert d["score"] == 0.4


def test_serve_limit_flags_reach_the_service(tmp_path: Path) -> None:
    """Each documented `serve` limit flag changes the ServiceLimits the server runs with, and
    --max-pixels changes what the engine accepts."""
    import io
    import zipfile

    from ballistics.errors import ScanTooLargeError as TooLarge
    from ballistics.limits import MiB
    from server.app import limited_engine
    from server.cli import build_parser
    from server.interceptors import limits_from_args

    default = limits_from_args(build_parser().parse_args(["serve", "--data-dir", "d"]))
    assert default == ServiceLimits()
    args = build_parser().parse_args(
        ["serve", "--data-dir", "d", "--max-pixels", "1000", "--memory-budget-mb", "64",
         "--upload-idle-timeout", "2.5", "--upload-min-rate-kbs", "1", "--max-uploads", "2"]
    )  # fmt: skip
    lim = limits_from_args(args)
    assert (lim.max_pixels, lim.memory_budget_bytes, lim.max_concurrent_uploads) == (
        1000,
        64 * MiB,
        2,
    )
    assert (lim.upload_idle_timeout_s, lim.upload_min_rate_bytes_s) == (2.5, 1024.0)
    with pytest.raises(ValueError, match="max-pixels"):
        limits_from_args(
            build_parser().parse_args(["serve", "--data-dir", "d", "--max-pixels", "0"])
        )

    from tests.test_x3p import main_xml

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("main.xml", main_xml(size_x=56, size_y=40))
        zf.writestr("bindata/data.bin", bytes(56 * 40 * 8))
    with pytest.raises(TooLarge, match="2,240 pixels"):
        limited_engine(lim).process(buf.getvalue(), "small.x3p", None)
