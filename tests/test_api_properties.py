"""Property test over the gRPC API (issue 10, "Done when"): random metadata, ids, upload chunk
patterns and roles against the real server on the real store (index.Catalog with the fake
pipeline, so every call is fast). For every call:

- a refusal is never ``UNKNOWN`` or ``INTERNAL`` (all input here is client-caused) and its
  message is bounded (no unbounded echo of the input);
- nothing in a reply names a casing or incident of an agency outside the caller's sharing
  policy;

and after all examples the server is healthy: health SERVING, a normal call answered, the audit
chain intact.

Bounded for CI: a fixed number of derandomized examples, one server for the whole module.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from index.service import Catalog
from index.testing import FakeEngine
from server.app import CatalogBackend
from server.audit import verify
from server.proto_gen import matching_pb2 as pb
from server.service import ServiceLimits
from tests.test_server_support import POLICY, USERS, Running, running_server

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
MAX_DETAILS = 1000


def visible_agencies(agency: str) -> set[str]:
    """Agencies whose casings ``agency`` may see under tests.test_server_support.POLICY."""
    by_agency = POLICY["agencies"]
    mine = by_agency[agency]
    shared = set(POLICY["jurisdictions"][mine]) | {mine}
    return {a for a, j in by_agency.items() if j in shared}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, Catalog, dict]]:
    """A running server over a catalog seeded with one casing per agency."""
    tmp = tmp_path_factory.mktemp("api_props")
    catalog = Catalog.open(tmp / "data", engine=FakeEngine())
    limits = ServiceLimits(spool_dir=str(tmp), upload_idle_timeout_s=5.0)
    owners: dict[str, str] = {}
    incidents: dict[str, str] = {}
    try:
        with running_server(CatalogBackend(catalog), tmp / "data", limits=limits) as srv:
            for user in ("north_exam", "south_exam", "east_exam"):
                with srv.client(user) as c:
                    r = c.submit(PNG_MAGIC + user.encode(), incident_id=f"INC-{user}")
                owners[r.casing_id] = USERS[user][0]
                incidents[f"INC-{user}"] = USERS[user][0]
            yield srv, catalog, {"owners": owners, "incidents": incidents}
    finally:
        catalog.close()


# ------------------------------------------------------------------------- strategies

# Text that includes what attackers send: controls, NUL, bidi overrides, long runs.
NASTY = st.sampled_from(["\x00", "\u202e", "\u2066", "\x1b[31m", "\n", "\r", "\ud7ff", "é"])
text = st.one_of(
    st.just(""),
    st.text(alphabet=string.ascii_letters + string.digits + "-_ .", max_size=30),
    st.text(alphabet=string.printable, max_size=40),
    st.text(max_size=40),
    st.lists(st.one_of(NASTY, st.text(max_size=5)), max_size=6).map("".join),
    st.integers(min_value=200, max_value=20_000).map(lambda n: "A" * n),
)
dates = st.one_of(
    st.just(""),
    st.dates().map(lambda d: d.isoformat()),
    st.sampled_from(["2024-02-30", "2024-13-01", "yesterday", "0000-00-00", "2024-1-1"]),
)
spacings = st.one_of(
    st.just(0.0),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e-300, 3.125e-6, 1e-4, 1e-7, -6.25e-6]),
)
ints = st.integers(min_value=-(2**31), max_value=2**31 - 1)


class Known(int):
    """The i-th known id (casing or incident), resolved when the call runs: the known ids
    grow as examples submit, and hypothesis needs draws that do not depend on that state."""


ids = st.one_of(st.integers(min_value=0, max_value=999).map(Known), text)


@st.composite
def upload(draw: st.DrawFn) -> list[pb.SubmitRequest]:
    """A SubmitCasing stream: usually metadata then chunks, sometimes out of protocol."""
    meta = pb.SubmitMetadata(
        agency_case_number=draw(text),
        incident_id=draw(text),
        calibre=draw(text),
        firing_pin_class=draw(st.sampled_from(["", "round", "elongated", "oval"])),
        acquisition_date=draw(dates),
        place=draw(text),
        file_name=draw(st.one_of(text, st.just("../../etc/passwd"))),
        format=draw(st.sampled_from(["", "x3p", "png", "exe"])),
        pixel_spacing_m=draw(spacings),
        search_after_submit=draw(st.booleans()),
        max_results=draw(ints),
    )
    head = draw(st.sampled_from([PNG_MAGIC, b"BAD", b"PK\x03\x04", b""]))
    body = draw(st.lists(st.binary(max_size=300), max_size=4))
    chunks = [head + body[0], *body[1:]] if body else ([head] if head else [])
    msgs = [pb.SubmitRequest(chunk=c) for c in chunks]
    pattern = draw(st.sampled_from(["normal", "normal", "no-metadata", "metadata-twice"]))
    if pattern == "normal":
        return [pb.SubmitRequest(metadata=meta), *msgs]
    if pattern == "no-metadata":
        return msgs
    return [pb.SubmitRequest(metadata=meta), *msgs[:1], pb.SubmitRequest(metadata=meta)]


def call_strategy() -> st.SearchStrategy[tuple]:
    cid = ids
    return st.one_of(
        st.tuples(st.just("submit"), upload()),
        st.tuples(st.just("get"), cid),
        st.tuples(st.just("list"), text, text, ints, ints),
        st.tuples(st.just("search_id"), cid, text, dates, dates, st.lists(text, max_size=3), ints),
        st.tuples(st.just("search_file"), st.binary(max_size=200), text, spacings),
        st.tuples(st.just("compare"), cid, cid),
        st.tuples(st.just("decide"), cid, cid, st.sampled_from([0, 1, 2, 3, 9]), text),
        st.tuples(st.just("links_casing"), cid),
        st.tuples(st.just("links_incident"), ids),
        st.tuples(st.just("delete"), cid, text),
    )


# ------------------------------------------------------------------------- the property


def resolve(call: tuple, casings: list[str], incidents: list[str]) -> tuple:
    known = (incidents if call[0] == "links_incident" else casings) or ["none"]
    return tuple(known[v % len(known)] if isinstance(v, Known) else v for v in call)


def run(c: Any, call: tuple) -> Any:
    kind, *a = call
    if kind == "submit":
        return c.stub.SubmitCasing(iter(a[0]), metadata=c.metadata, timeout=20)
    if kind == "get":
        return c.get(a[0], timeout=20)
    if kind == "list":
        req = pb.ListCasingsRequest(incident_id=a[0], calibre=a[1], limit=a[2], offset=a[3])
        return c.stub.ListCasings(req, metadata=c.metadata, timeout=20)
    if kind == "search_id":
        f = pb.SearchFilters(
            calibre=a[1], date_from=a[2], date_to=a[3], jurisdictions=a[4], max_results=a[5]
        )
        req = pb.SearchRequest(casing_id=a[0], filters=f)
        return c.stub.Search(req, metadata=c.metadata, timeout=20)
    if kind == "search_file":
        req = pb.SearchRequest(file=PNG_MAGIC + a[0], file_name=a[1], pixel_spacing_m=a[2])
        return c.stub.Search(req, metadata=c.metadata, timeout=20)
    if kind == "compare":
        return c.compare(a[0], a[1], picture=False, timeout=20)
    if kind == "decide":
        req = pb.DecideRequest(casing_id=a[0], candidate_id=a[1], verdict=a[2], comment=a[3])
        return c.stub.Decide(req, metadata=c.metadata, timeout=20)
    if kind == "links_casing":
        return c.links(casing_id=a[0], timeout=20)
    if kind == "links_incident":
        return c.links(incident_id=a[0], timeout=20)
    if kind == "delete":
        return c.delete(a[0], a[1], timeout=20)
    raise AssertionError(kind)


def names_in(reply: Any) -> tuple[set[str], set[str], set[str]]:
    """(casing ids, incident ids, agencies) anywhere in a reply."""
    casings: set[str] = set()
    incidents: set[str] = set()
    agencies: set[str] = set()

    def walk(msg: Any) -> None:
        for field, value in msg.ListFields():
            values = value if field.is_repeated else [value]
            for v in values:
                if field.message_type is not None:
                    if not field.message_type.GetOptions().map_entry:
                        walk(v)
                    continue
                if field.name in ("casing_id", "casing_a", "casing_b", "candidate_id"):
                    casings.add(v)
                elif field.name == "casing_ids":
                    casings.add(v)
                elif field.name in ("incident_id", "incident_a", "incident_b"):
                    incidents.add(v)
                elif field.name == "agency":
                    agencies.add(v)

    walk(reply)
    return casings, incidents, agencies


def test_api_property_no_internal_errors_no_leaks(world) -> None:
    srv, _catalog, truth = world
    owners: dict[str, str] = truth["owners"]
    users = sorted(USERS)
    outcomes: dict[str, int] = {}

    # A fixed seed, not derandomize: derandomize seeds from the test's digest, which includes
    # the world's random casing ids, so the draws (and how many calls succeed) changed per run.
    @seed(20261205)
    @settings(
        max_examples=50,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def prop(data: st.DataObject) -> None:
        user = data.draw(st.sampled_from(users), label="user")
        agency = USERS[user][0]
        allowed = visible_agencies(agency)
        calls = data.draw(
            st.lists(call_strategy(), max_size=4),
            label="calls",
        )
        with srv.client(user) as c:
            for drawn in calls:
                call = resolve(drawn, sorted(owners), sorted(truth["incidents"]))
                try:
                    reply = run(c, call)
                except grpc.RpcError as e:
                    outcomes[e.code().name] = outcomes.get(e.code().name, 0) + 1
                    assert e.code() not in FORBIDDEN, (call[0], e.code(), e.details())
                    assert len(e.details() or "") < MAX_DETAILS, (call[0], len(e.details()))
                    continue
                outcomes["OK"] = outcomes.get("OK", 0) + 1
                if call[0] == "submit":
                    owners[reply.casing_id] = agency
                    truth["incidents"].setdefault(call[1][0].metadata.incident_id, agency)
                if call[0] == "delete":
                    owners.pop(reply.casing_id, None)
                casings, _, agencies = names_in(reply)
                assert agencies <= allowed, (call[0], agencies, allowed)
                for cid in casings:
                    if cid in owners:
                        assert owners[cid] in allowed, (call[0], cid, owners[cid])

    prop()
    # the examples reached the service both ways (not only refusals, not only successes)
    assert outcomes.get("OK", 0) >= 5 and outcomes.get("INVALID_ARGUMENT", 0) >= 5, outcomes
    print(outcomes)

    # healthy afterwards
    with srv.client("north_exam") as c:
        assert c.health(timeout=5) == "SERVING"
        assert c.list(timeout=5) is not None
    assert srv.server.budget.used == 0
    v = verify(Path(srv.audit.path), srv.audit._key)
    assert v.ok, v.message
    for line in Path(srv.audit.path).read_text().splitlines():
        assert json.loads(line)["outcome"] not in ("UNKNOWN", "INTERNAL")
