"""Crime-gun intelligence on the store (index/intel.py): firearms, series, reports."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from index.errors import NotFoundError
from index.intel import Intel, IntelError, series_id_of
from index.store import Store, open_store
from server import intel_output as out

_n = itertools.count()


def add(store: Store, agency: str, incident: str | None, date: str | None = "2025-01-02") -> str:
    rec, _ = store.add_casing(
        original=f"casing-{next(_n)}".encode(),
        agency=agency,
        descriptors={"breech_face": np.ones(4, np.float32)},
        extractor_version="t",
        incident=incident,
        acquisition_date=date,
    )
    return rec.casing_id


def hit(store: Store, a: str, b: str, verdict: str = "hit") -> None:
    store.record_decision(a, b, verdict, examiner="ex", agency="PD-A")


def add_lead(store: Store, a: str, b: str, created_at: str | None = None) -> None:
    ra, rb = sorted((store.get_casing(a).id, store.get_casing(b).id))
    con = store._conn()
    con.execute(
        "INSERT INTO leads(casing_a, casing_b, job, score, created_at) VALUES (?, ?, ?, ?, ?)",
        (ra, rb, rb, 0.9, created_at or "2025-01-02T12:00:00.000+00:00"),
    )


@pytest.fixture
def world(tmp_path: Path, store_engine: str):
    """A store on each engine (SQLite; PostgreSQL where installed) with its intelligence."""
    store = open_store(tmp_path / "d")
    intel = Intel(store)
    yield store, intel
    store.close()


def _series_nodes(intel: Intel) -> list[set[str]]:
    return [{f"{a}/{i}" for a, i in c} for c in intel.components()]


def test_series_from_hits_only_not_leads(world) -> None:
    store, intel = world
    a1 = add(store, "PD-A", "A-1")
    a2 = add(store, "PD-A", "A-2")
    b1 = add(store, "PD-B", "B-1")
    c1 = add(store, "PD-B", "B-2")
    hit(store, a1, b1)
    add_lead(store, a2, c1)  # a lead, never a link
    add_lead(store, a1, a2)
    assert _series_nodes(intel) == [{"PD-A/A-1", "PD-B/B-1"}]
    s = intel.find_series({"PD-A", "PD-B"}, incident=("PD-A", "A-1"))
    assert s["links"] == 1 and s["incidents"] == 2
    assert {ld["casing_b"] for ld in s["open_leads"]} | {
        ld["casing_a"] for ld in s["open_leads"]
    } >= {a1, a2}
    with pytest.raises(NotFoundError):
        intel.find_series({"PD-A", "PD-B"}, incident=("PD-A", "A-2"))


def test_series_stable_under_new_hits_and_superseded_decisions(world) -> None:
    store, intel = world
    a1, a2 = add(store, "PD-A", "A-1"), add(store, "PD-A", "A-2")
    b1, b2 = add(store, "PD-B", "B-1"), add(store, "PD-B", "B-2")
    hit(store, a1, b1)
    hit(store, b1, a2)
    before = intel.components()
    sid = series_id_of(before[0])
    # a second hit inside the series changes nothing
    hit(store, a2, a1)
    assert intel.components() == before
    # a new incident joins; the id stays (its smallest node is still in it)
    hit(store, b2, a2)
    comps = intel.components()
    assert len(comps) == 1 and len(comps[0]) == 4 and series_id_of(comps[0]) == sid
    # the pair's latest decision wins: hit b2-a2 superseded by an exclusion -> B-2 leaves
    hit(store, a2, b2, "excluded")
    assert intel.components() == before
    # the same again: a superseded exclusion re-links
    hit(store, b2, a2, "hit")
    assert len(intel.components()[0]) == 4
    # inconclusive supersedes a hit too; the duplicate hit a2-a1 keeps linked anyway
    hit(store, b1, a2, "inconclusive")
    assert {frozenset(c) for c in _series_nodes(intel)} == {
        frozenset({"PD-A/A-1", "PD-A/A-2", "PD-B/B-1", "PD-B/B-2"})
    }
    hit(store, a1, a2, "excluded")
    assert sorted(map(sorted, _series_nodes(intel))) == [
        ["PD-A/A-1", "PD-B/B-1"],
        ["PD-A/A-2", "PD-B/B-2"],
    ]


def test_firearm_test_fire_links_series_and_hidden_parts_are_counted(world) -> None:
    store, intel = world
    a1, b1 = add(store, "PD-A", "A-1"), add(store, "PD-B", "B-1")
    x1 = add(store, "LAB-X", "X-1")
    hit(store, a1, b1)
    hit(store, b1, x1)  # LAB-X's incident: hidden from PD-A below
    fa = intel.add_firearm(
        agency="PD-A",
        user="u",
        make="Glock",
        model="17",
        caliber="9mm",
        serial_number="ABC",
        recovered_on="2025-02-01",
        lat=40.0,
        lon=-75.0,
    )
    t1 = add(store, "PD-A", "TF-1")
    intel.add_test_fire(fa.firearm_id, t1, user="u")
    hit(store, t1, a1)
    s = intel.find_series({"PD-A", "PD-B"}, firearm_id=fa.firearm_id)
    assert s["firearms"] == 1 and s["incidents"] == 2
    assert s["hidden_links"] == 1 and s["hidden_nodes"] == 1
    text = json.dumps(s)
    assert "LAB-X" not in text and x1 not in text and "X-1" not in text
    assert s["firearm_list"][0]["status"] == "test_fired"
    assert any(e["test_fire_of"] == fa.firearm_id for e in s["evidence"])
    # renderings never crash and carry the hidden note
    assert "may not see" in out.series_text(s)
    assert out.series_png(s)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<table>" in out.series_html(s) and "LAB-X" not in out.series_html(s)
    assert out.series_csv(s).count("\n") == 1 + len(s["evidence"])
    # a later status change is on the series timeline
    intel.set_status(fa.firearm_id, "destroyed", comment="court order 118", user="u")
    s = intel.find_series({"PD-A", "PD-B"}, firearm_id=fa.firearm_id)
    (ev,) = [e for e in s["timeline"] if e["event"] == "firearm status"]
    assert "test_fired -> destroyed: court order 118" in ev["what"]
    assert "court order 118" in out.series_text(s)
    # an agency seeing nothing of it gets NOT_FOUND, like an unknown series
    with pytest.raises(NotFoundError):
        intel.find_series({"PD-Z"}, series_id=s["series_id"])
    # a start the viewer may not see is not found either
    with pytest.raises(NotFoundError):
        intel.find_series({"PD-A"}, casing_id=x1)


def test_trace_requests_and_bad_input(world) -> None:
    store, intel = world
    fa = intel.add_firearm(agency="PD-A", user="u", serial_number="S1")
    tr = intel.add_trace(fa.firearm_id, requested_of="tracing centre", user="u")
    intel.update_trace(tr.trace_id, status="completed", outcome="first buyer: J. Doe", user="u")
    got = intel.get_firearm(fa.firearm_id)
    assert got.status == "traced" and got.traces[0].outcome == "first buyer: J. Doe"
    assert json.loads(json.dumps(got.as_dict()))["traces"][0]["status"] == "completed"
    with pytest.raises(NotFoundError, match="no firearm"):
        intel.get_firearm("F-nope")
    with pytest.raises(IntelError, match="YYYY-MM-DD"):
        intel.add_firearm(agency="PD-A", user="u", recovered_on="2025-13-01")
    with pytest.raises(IntelError, match="date"):
        intel.add_firearm(agency="PD-A", user="u", recovered_on=20250101)  # type: ignore[arg-type]
    with pytest.raises(IntelError, match="latitude"):
        intel.add_firearm(agency="PD-A", user="u", lat=91.0, lon=0.0)
    with pytest.raises(IntelError, match="both"):
        intel.add_firearm(agency="PD-A", user="u", lat=1.0)
    with pytest.raises(IntelError, match="status"):
        intel.add_firearm(agency="PD-A", user="u", status="lost")
    with pytest.raises(IntelError, match="already exists"):
        intel.add_firearm(agency="PD-A", user="u", firearm_id=fa.firearm_id)
    with pytest.raises(IntelError, match="trace status"):
        intel.update_trace(tr.trace_id, status="done", outcome="", user="u")
    with pytest.raises(NotFoundError):
        intel.add_test_fire(fa.firearm_id, "no-such-casing", user="u")
    with pytest.raises(IntelError, match="after"):
        intel.report({"PD-A"}, str, date_from="2025-02-01", date_to="2025-01-01")
    with pytest.raises(IntelError, match="date"):
        intel.report({"PD-A"}, str, date_from="yesterday")
    with pytest.raises(NotFoundError, match="jurisdiction"):
        intel.report({"PD-A"}, str, jurisdictions=["nowhere"])
    c = add(store, "PD-A", "I-1")
    fb = intel.add_firearm(agency="PD-A", user="u")
    intel.add_test_fire(fa.firearm_id, c, user="u")
    with pytest.raises(IntelError, match="already a test fire"):
        intel.add_test_fire(fb.firearm_id, c, user="u")


def test_status_changes_are_kept_with_who_when_and_why(world) -> None:
    _, intel = world
    fa = intel.add_firearm(agency="PD-A", user="u", serial_number="S9")
    assert fa.status == "recovered" and fa.status_changes == []
    got = intel.set_status(fa.firearm_id, "returned", comment="owner's receipt 17", user="clerk")
    assert got.status == "returned"
    (ch,) = got.status_changes
    assert (ch.previous, ch.status, ch.comment, ch.changed_by) == (
        "recovered",
        "returned",
        "owner's receipt 17",
        "clerk",
    )
    # the same status again records nothing; a further change is appended, oldest first
    assert intel.set_status(
        fa.firearm_id, "returned", comment="again", user="u"
    ).status_changes == [ch]
    got = intel.set_status(fa.firearm_id, "destroyed", comment="court order 2026/118", user="u")
    assert [(c.previous, c.status) for c in got.status_changes] == [
        ("recovered", "returned"),
        ("returned", "destroyed"),
    ]
    assert (
        json.loads(json.dumps(got.as_dict()))["status_changes"][1]["comment"]
        == "court order 2026/118"
    )
    with pytest.raises(IntelError, match="status must be one of"):
        intel.set_status(fa.firearm_id, "lost", comment="x", user="u")
    with pytest.raises(IntelError, match="comment is required"):
        intel.set_status(fa.firearm_id, "seized", comment="", user="u")
    with pytest.raises(NotFoundError, match="no firearm"):
        intel.set_status("F-nope", "seized", comment="x", user="u")
    assert intel.get_firearm(fa.firearm_id).status == "destroyed"  # refusals changed nothing


def test_report_durations_and_cross_jurisdiction(world) -> None:
    store, intel = world
    a1 = add(store, "PD-A", "A-1", "2025-01-01")
    b1 = add(store, "PD-B", "B-1", "2025-01-01")
    add_lead(store, a1, b1, "2025-01-02T12:00:00.000+00:00")  # 36 h after the incident day
    hit(store, a1, b1)
    jur = {"PD-A": "north", "PD-B": "south"}
    rep = intel.report({"PD-A", "PD-B"}, jur.__getitem__)
    t = rep["total"]
    assert t["scene_casings"] == 2 and t["leads"] == 1 and t["hits"] == 1
    assert t["hits_cross_jurisdiction"] == 1 and t["cross_jurisdiction_pairs"] == {
        "north / south": 1
    }
    assert t["incident_to_lead"]["n"] == 1 and t["incident_to_lead"]["median_h"] == 36.0
    assert t["incident_to_lead"]["within_goal"] == 1
    assert t["lead_to_hit"]["n"] == 1  # decided now: far beyond the lead (2025) but counted
    rows = {r["jurisdiction"]: r for r in rep["jurisdictions"]}
    assert rows["north"]["hits"] == rows["south"]["hits"] == 1
    only_north = intel.report({"PD-A", "PD-B"}, jur.__getitem__, jurisdictions=["north"])
    assert [r["jurisdiction"] for r in only_north["jurisdictions"]] == ["north"]
    assert only_north["total"]["scene_casings"] == 1
    assert out.report_png(rep)[:4] == b"\x89PNG"
    assert out.report_csv(rep).splitlines()[0].startswith("jurisdiction,scene_casings")
    assert "north" in out.report_text(rep)
    # a period before everything: zero, not an error
    empty = intel.report({"PD-A"}, jur.__getitem__, date_to="2000-01-01")
    assert empty["total"]["scene_casings"] == 0 and empty["total"]["leads"] == 0


def test_report_counts_federation_hits_of_visible_casings(world) -> None:
    store, intel = world
    a1 = add(store, "PD-A", "A-1")
    x1 = add(store, "LAB-X", "X-1")
    border = [
        (a1, "server-B", "2026-01-02T10:00:00+00:00"),
        (x1, "server-C", "2026-01-02T10:00:00+00:00"),  # a casing the viewer may not see
        ("no-such-casing", "server-B", "2026-01-02T10:00:00+00:00"),
        (a1, "server-B", "2020-01-01T00:00:00+00:00"),  # outside the period
    ]
    jur = {"PD-A": "north", "LAB-X": "lab"}
    rep = intel.report({"PD-A"}, jur.__getitem__, date_from="2026-01-01", border_hits=border)
    assert rep["total"]["hits_cross_border"] == 1
    assert rep["total"]["cross_border_peers"] == {"server-B": 1}
    assert "server-C" not in json.dumps(rep)
    assert "hits across borders (federation): server-B: 1" in out.report_text(rep)
