"""Issue 10, security and audit: each test here failed on main before the fix.

1. incidents are scoped per agency (a foreign incident id never joins, leaks or hides a hit);
2. no existence oracle: another agency's id answers exactly like an unknown id;
4. ids are bounded (a 70 KB id is refused without echo, and the server still restarts);
7. audit gaps: writes before side effects (UNAVAILABLE when the log fails), refusals inside
   gRPC, failed logins with the peer address, casings stored by a call that never finished.

Items 3 (keyed log) and 6 (TLS) are in tests/test_audit.py and tests/test_server_tls.py.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from index.service import Catalog
from index.store import Store
from index.testing import FakeEngine
from server.app import SERVICE_NAME, CatalogBackend, open_audit
from server.audit import load_key, verify
from server.client import Client
from server.service import ServiceLimits
from tests.test_server_machinery import FakeBackend
from tests.test_server_support import Running, running_server

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def scan(i: int) -> bytes:
    """Passes the format sniff; FakeEngine turns it into a random descriptor."""
    return PNG_MAGIC + f"security casing {i}".encode() + b"\x00" * 64


def _records(srv: Running) -> list[dict[str, Any]]:
    return [json.loads(x) for x in srv.audit.path.read_text().splitlines()]


@pytest.fixture
def real(tmp_path: Path) -> Iterator[tuple[Running, Catalog]]:
    """The server over the real store (SQLite + FAISS) with FakeEngine (no image processing)."""
    data = tmp_path / "data"
    catalog = Catalog.open(data, engine=FakeEngine())
    try:
        with running_server(
            CatalogBackend(catalog), data, limits=ServiceLimits(spool_dir=str(tmp_path))
        ) as srv:
            yield srv, catalog
    finally:
        catalog.close()


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Running]:
    with running_server(FakeBackend(), tmp_path / "data") as srv:
        yield srv


def _submit(srv: Running, user: str, i: int, incident: str = "") -> str:
    with srv.client(user) as c:
        return str(c.submit(scan(i), incident_id=incident, search=False).casing_id)


# ------------------------------------------------------------- 1. incidents cross agencies


@pytest.mark.parametrize("first", ["east_exam", "north_exam"])
def test_foreign_incident_id_never_joins_the_incident(
    real: tuple[Running, Catalog], first: str
) -> None:
    """East reuses North's incident id (before or after North): two separate incidents."""
    srv, _ = real
    second = "north_exam" if first == "east_exam" else "east_exam"
    ids = {first: _submit(srv, first, 1, "INC-7"), second: _submit(srv, second, 2, "INC-7")}
    north, east = ids["north_exam"], ids["east_exam"]
    with srv.client("east_exam") as c:
        for graph in (c.links(incident_id="INC-7"), c.links(casing_id=east)):
            assert [list(n.casing_ids) for n in graph.nodes] == [[east]]
            assert {n.agency for n in graph.nodes} == {"SO-East"}
            assert north not in str(graph)
        assert [x.casing_id for x in c.list(incident_id="INC-7").casings] == [east]
        assert c.get(east).incident_id == "INC-7"  # east's own incident keeps its name
    with srv.client("north_exam") as c:
        graph = c.links(incident_id="INC-7")
        assert [list(n.casing_ids) for n in graph.nodes] == [[north]]
        assert east not in str(graph)
        assert [x.casing_id for x in c.list(incident_id="INC-7").casings] == [north]


def test_hit_between_preclaimed_incidents_stays_in_the_owners_graph(
    real: tuple[Running, Catalog],
) -> None:
    """East claims North's next incident ids first; North's own hit must still show."""
    srv, _ = real
    _submit(srv, "east_exam", 1, "N-A")
    _submit(srv, "east_exam", 2, "N-B")
    a = _submit(srv, "north_exam", 3, "N-A")
    b = _submit(srv, "north_exam", 4, "N-B")
    with srv.client("north_exam") as c:
        d = c.decide(a, b, "hit")
        graph = c.links(incident_id="N-A")
    assert sorted(n.incident_id for n in graph.nodes) == ["N-A", "N-B"]
    assert {n.agency for n in graph.nodes} == {"PD-North"}
    assert [(e.casing_a, e.casing_b, e.decision_id) for e in graph.edges] == [(a, b, d.decision_id)]
    with srv.client("east_exam") as c:  # and East learns nothing about it
        for inc in ("N-A", "N-B"):
            g = c.links(incident_id=inc)
            assert not g.edges and a not in str(g) and b not in str(g)


def test_hit_decided_by_a_sharing_agency_shows_who_decided(
    real: tuple[Running, Catalog],
) -> None:
    """South (shares with North) confirms a hit between two North casings: North's graph
    shows the hit and who decided it (only deciders the caller may not see are blanked)."""
    srv, _ = real
    a = _submit(srv, "north_exam", 1, "N-1")
    b = _submit(srv, "north_exam", 2, "N-2")
    with srv.client("south_exam") as c:
        c.decide(a, b, "hit")
    with srv.client("north_exam") as c:
        (edge,) = c.links(casing_id=a).edges
    assert edge.agency == "PD-South" and edge.examiner == "south_exam"


def _store_with(tmp_path: Path, rows: list[tuple[str, str, str]]) -> tuple[Store, dict[str, str]]:
    store = Store(tmp_path / "store")
    ids = {}
    for i, (name, agency, incident) in enumerate(rows):
        rec, _ = store.add_casing(
            original=f"casing {name}".encode(),
            agency=agency,
            incident=incident or None,
            descriptors={"breech_face": np.full(4, i + 1.0)},
            extractor_version="t",
        )
        ids[name] = rec.casing_id
    return store, ids


def test_link_walk_never_passes_through_an_unseen_agency(tmp_path: Path) -> None:
    store, ids = _store_with(tmp_path, [("a", "A", "IA"), ("b", "B", "IB"), ("c", "C", "IC")])
    store.record_decision(ids["a"], ids["b"], "hit", examiner="x", agency="B")
    store.record_decision(ids["b"], ids["c"], "hit", examiner="y", agency="B")
    full = store.links(casing_id=ids["a"])
    assert sorted(n["incident"] for n in full["nodes"]) == ["IA", "IB", "IC"]
    scoped = store.links(casing_id=ids["a"], agencies={"A", "C"})
    assert [n["incident"] for n in scoped["nodes"]] == ["IA"] and scoped["edges"] == []
    with pytest.raises(LookupError, match="no incident with id IB"):
        store.links(incident_id="IB", agency="A", agencies={"A", "C"})
    store.close()


OLD_SCHEMA = """
CREATE TABLE agencies(id TEXT PRIMARY KEY, name TEXT, jurisdiction TEXT);
CREATE TABLE incidents(
    id TEXT PRIMARY KEY, agency TEXT REFERENCES agencies(id), case_number TEXT,
    date TEXT, place TEXT);
CREATE TABLE casings(
    id INTEGER PRIMARY KEY AUTOINCREMENT, casing_id TEXT NOT NULL UNIQUE, exhibit_id TEXT,
    incident TEXT REFERENCES incidents(id), caliber TEXT, firing_pin_shape TEXT,
    acquisition_date TEXT, agency TEXT NOT NULL REFERENCES agencies(id), sha256 TEXT NOT NULL,
    filename TEXT, format TEXT, spacing_m REAL, created_at TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0, deleted_reason TEXT, deleted_at TEXT,
    superseded_by INTEGER REFERENCES casings(id));
"""


def test_store_with_global_incidents_is_migrated(tmp_path: Path) -> None:
    """A data dir from before scoping opens; B's casing that had joined A's incident now has
    an incident of its own; row ids (FAISS ids) and the id sequence are kept."""
    d = tmp_path / "store"
    d.mkdir()
    con = sqlite3.connect(d / "store.sqlite")
    con.executescript(OLD_SCHEMA)
    con.executescript(
        "INSERT INTO agencies(id) VALUES ('A'), ('B');"
        "INSERT INTO incidents VALUES ('X', 'A', 'A-case', NULL, 'Main St');"
        "INSERT INTO casings(id, casing_id, incident, agency, sha256, created_at) VALUES"
        " (3, 'a1', 'X', 'A', 's1', 't'), (5, 'b1', 'X', 'B', 's2', 't'),"
        " (7, 'a2', NULL, 'A', 's3', 't');"
        "UPDATE sqlite_sequence SET seq = 9 WHERE name = 'casings';"
    )
    con.commit()
    con.close()
    store = Store(d)
    rows = store._conn().execute("SELECT agency, id, case_number FROM incidents ORDER BY 1")
    assert rows.fetchall() == [("A", "X", "A-case"), ("B", "X", None)]
    assert [(r.id, r.casing_id) for r in store.list_casings()] == [(3, "a1"), (5, "b1"), (7, "a2")]
    g = store.links(incident_id="X", agency="B", agencies={"B"})
    assert [(n["agency"], n["casings"]) for n in g["nodes"]] == [("B", ["b1"])]
    rec, _ = store.add_casing(
        original=b"new",
        agency="B",
        incident="X",
        descriptors={"r": np.ones(2)},
        extractor_version="t",
    )
    assert rec.id == 10  # the AUTOINCREMENT sequence survived the table rebuild
    store.close()
    store = Store(d)  # a second open does not migrate again
    assert store.get_casing("b1").incident == "X"
    assert store._conn().execute("PRAGMA foreign_key_check").fetchall() == []
    store.close()


# ------------------------------------------------------------- 2. no existence oracle

ID_CALLS: dict[str, Callable[[Client, str, str], Any]] = {
    "GetCasing": lambda c, x, own: c.get(x),
    "Search": lambda c, x, own: c.search(x),
    "Compare(a)": lambda c, x, own: c.compare(x, own),
    "Compare(b)": lambda c, x, own: c.compare(own, x),
    "Decide(casing)": lambda c, x, own: c.decide(x, own, "hit"),
    "Decide(candidate)": lambda c, x, own: c.decide(own, x, "hit"),
    "Links(casing)": lambda c, x, own: c.links(casing_id=x),
    "DeleteCasing": lambda c, x, own: c.delete(x, "cleanup"),
}


def _answer(fn: Callable[[], Any], secret: str) -> tuple[str, str]:
    try:
        result = fn()
    except grpc.RpcError as e:
        return e.code().name, (e.details() or "").replace(secret, "<ID>")
    return "OK", str(result).replace(secret, "<ID>")


def test_foreign_and_unknown_ids_answer_alike(real: tuple[Running, Catalog]) -> None:
    srv, _ = real
    foreign = _submit(srv, "east_exam", 1, "E-1")  # East shares with nobody
    own = _submit(srv, "north_exam", 2, "N-1")
    unknown = "0123456789abcdef"
    assert len(unknown) == len(foreign)
    seen = set()
    for name, call in ID_CALLS.items():
        user = "north_admin" if name == "DeleteCasing" else "north_exam"
        with srv.client(user) as c:
            a = _answer(functools.partial(call, c, foreign, own), foreign)
            b = _answer(functools.partial(call, c, unknown, own), unknown)
        assert a == b, name
        assert a[0] == "NOT_FOUND", (name, a)
        seen.add(a[1])
    assert seen == {"no casing with id <ID>"}
    with srv.client("north_exam") as c:  # incident ids: Links answers alike, lists stay empty
        a = _answer(lambda: c.links(incident_id="E-1"), "E-1")
        b = _answer(lambda: c.links(incident_id="E-9"), "E-9")
        assert a == b == ("NOT_FOUND", "no incident with id <ID>")
        assert len(c.list(incident_id="E-1").casings) == len(c.list(incident_id="E-9").casings)


# ------------------------------------------------------------- 4. bounded ids and records

LONG = "A" * 70_000


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.get(LONG),
        lambda c: c.search(LONG),
        lambda c: c.compare(LONG, "x"),
        lambda c: c.compare("x", LONG),
        lambda c: c.decide("x", LONG, "hit"),
        lambda c: c.links(casing_id=LONG),
        lambda c: c.links(incident_id=LONG),
        lambda c: c.list(incident_id=LONG),
        lambda c: c.delete(LONG, "r"),
        lambda c: c.submit(b"SCAN x", incident_id=LONG, search=False),
    ],
    ids=[
        "get",
        "search",
        "compare-a",
        "compare-b",
        "decide",
        "links-casing",
        "links-incident",
        "list",
        "delete",
        "submit",
    ],
)
def test_long_ids_refused_without_echo(fake: Running, call: Callable[[Client], Any]) -> None:
    with fake.client("north_admin") as c, pytest.raises(grpc.RpcError) as e:
        call(c)
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "70,000 characters" in (e.value.details() or "")
    assert len(e.value.details() or "") < 200
    assert not fake.backend.casings  # type: ignore[attr-defined]


def test_long_id_then_restart(real: tuple[Running, Catalog]) -> None:
    srv, catalog = real
    with srv.client("north_exam") as c, pytest.raises(grpc.RpcError):
        c.get(LONG)
    srv.audit.close()
    assert max(len(x) for x in srv.audit.path.read_text().splitlines()) < 4000
    assert srv.key_file is not None
    audit = open_audit(srv.data_dir, str(srv.key_file), CatalogBackend(catalog))  # a restart
    audit.close()
    assert verify(srv.data_dir, load_key(srv.key_file)).ok


# ------------------------------------------------------------- 7. audit gaps


def test_audit_failure_is_unavailable_before_the_side_effect(fake: Running) -> None:
    backend: FakeBackend = fake.backend  # type: ignore[assignment]
    with fake.client("north_admin") as c:
        a = c.submit(b"SCAN a", search=False).casing_id
        b = c.submit(b"SCAN b", search=False).casing_id
    fake.audit.close()  # every write now fails
    calls: list[Callable[[Client], Any]] = [
        lambda c: c.submit(b"SCAN c", search=False),
        lambda c: c.decide(a, b, "hit"),
        lambda c: c.delete(a, "wrong exhibit"),
        lambda c: c.get(a),  # a read is not answered without its record either
    ]
    for call in calls:
        with fake.client("north_admin") as c, pytest.raises(grpc.RpcError) as e:
            call(c)
        assert e.value.code() is grpc.StatusCode.UNAVAILABLE, e.value.details()
        assert "audit" in (e.value.details() or "")
    assert sorted(backend.casings) == sorted([a, b])
    assert backend.decisions == []


def test_submission_is_audited_before_it_is_stored(fake: Running) -> None:
    backend: FakeBackend = fake.backend  # type: ignore[assignment]
    seen: list[dict[str, Any]] = []
    real_submit = backend.submit

    def submit(upload: Path, meta: Any, **kw: Any) -> Any:
        seen.extend(_records(fake))  # what the log held when the store was asked
        return real_submit(upload, meta, **kw)

    backend.submit = submit  # type: ignore[method-assign]
    with fake.client("north_sub") as c:
        r = c.submit(b"SCAN 1", search=False)
    (started,) = [x for x in seen if x["method"] == "SubmitCasing"]
    assert started["outcome"] == "STARTED" and started["user"] == "north_sub"
    assert f"sha256:{r.sha256}" in started["targets"]


def test_failed_login_recorded_with_peer(fake: Running) -> None:
    with Client(fake.address, "not-a-token") as c, pytest.raises(grpc.RpcError):
        c.list()
    last = _records(fake)[-1]
    assert last["outcome"] == "UNAUTHENTICATED" and last["method"] == "ListCasings"
    assert last["peer"].startswith(("ipv4:127.0.0.1:", "ipv6:"))


def test_concurrency_refusal_is_audited(tmp_path: Path) -> None:
    backend = FakeBackend()
    backend.submit_delay = 1.5
    with running_server(backend, tmp_path / "data", maximum_concurrent_rpcs=1) as srv:
        t = threading.Thread(
            target=lambda: srv.client("north_sub").submit(b"SCAN slow", search=False)
        )
        t.start()
        assert backend.submitting.wait(5)
        with srv.client("north_sub") as c, pytest.raises(grpc.RpcError) as e:
            c.list()
        assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        t.join(10)
        assert srv.server.refusals is not None
        srv.server.refusals.flush()
        recs = _records(srv)
    refused = [r for r in recs if r["outcome"] == "RESOURCE_EXHAUSTED"]
    assert [r["method"] for r in refused] == ["ListCasings"]
    assert "concurrent" in refused[0]["detail"]


def test_undecodable_request_is_audited(fake: Running) -> None:
    with grpc.insecure_channel(fake.address) as ch:
        raw = ch.unary_unary(f"/{SERVICE_NAME}/GetCasing")
        with pytest.raises(grpc.RpcError):
            raw(b"\x0a\xff\xff\xff", timeout=5)  # a length-delimited field longer than the data
    assert fake.server.refusals is not None
    fake.server.refusals.flush()
    last = _records(fake)[-1]
    # Recorded either by the gRPC-layer gate or by the handler, which refuses an undecodable
    # request (here without a token, so the refusal is the login's).
    assert last["method"] == "GetCasing"
    assert last["outcome"] in ("UNDECODABLE", "UNAUTHENTICATED", "INVALID_ARGUMENT")


def test_stored_casing_without_a_record_is_reconciled_at_start_up(
    real: tuple[Running, Catalog],
) -> None:
    srv, catalog = real
    acked = _submit(srv, "north_exam", 1)
    # stored behind the service's back (a call killed between commit and its final record)
    silent = catalog.ingest_bytes(scan(2), "b.png", {"agency": "PD-South"}).casing_id
    assert srv.key_file is not None
    srv.audit.close()
    audit = open_audit(srv.data_dir, str(srv.key_file), CatalogBackend(catalog))
    audit.close()
    recs = _records(srv)
    (rec,) = [r for r in recs if r["method"] == "Reconcile"]
    assert rec["targets"][0] == silent and rec["outcome"] == "STORED_UNACKNOWLEDGED"
    assert rec["agency"] == "PD-South"
    assert any(acked in r["targets"] for r in recs if r["method"] == "SubmitCasing")
    n = len(recs)
    open_audit(srv.data_dir, str(srv.key_file), CatalogBackend(catalog)).close()
    assert len(_records(srv)) == n  # reconciled once
