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
