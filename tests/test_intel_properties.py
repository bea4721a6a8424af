"""Property tests of the intelligence views over random worlds and random sharing policies
(seeded): a report never includes what the requester may not see, and its figures equal an
independent recount from the raw records; series show nothing hidden."""

from __future__ import annotations

import datetime as dt
import json
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from index.intel import Intel, series_id_of
from index.store import Store
from server.policy import SharingPolicy

AGENCIES = ("PD-A1", "PD-A2", "SO-B", "LAB-C", "PD-D")
JURS = ("north", "south", "east")
TODAY = dt.datetime.now(dt.UTC).date().isoformat()


def build_world(store: Store, intel: Intel, rng: random.Random) -> None:
    """Random casings, incidents, firearms with test fires and traces, leads and a history
    of decisions (hits superseded by exclusions and back)."""
    ids: list[str] = []
    for i in range(rng.randint(4, 14)):
        agency = rng.choice(AGENCIES)
        incident = f"I-{rng.randint(1, 4)}" if rng.random() < 0.85 else None
        rec, _ = store.add_casing(
            original=f"w-{i}-{rng.random()}".encode(),
            agency=agency,
            descriptors={"breech_face": np.ones(4, np.float32)},
            extractor_version="t",
            incident=incident,
            acquisition_date=f"2025-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
        )
        ids.append(rec.casing_id)
    for j in range(rng.randint(0, 3)):
        agency = rng.choice(AGENCIES)
        fa = intel.add_firearm(
            agency=agency,
            user="u",
            recovered_on=rng.choice([None, "2025-03-03", TODAY]),
            serial_number=f"SN-{j}",
        )
        own = [c for c in ids if store.get_casing(c).agency == agency]
        for c in rng.sample(own, k=min(len(own), rng.randint(0, 2))):
            if intel.firearm_of_casing(c) is None:
                intel.add_test_fire(fa.firearm_id, c, user="u")
        if rng.random() < 0.6:
            tr = intel.add_trace(fa.firearm_id, requested_of="centre", user="u")
            if rng.random() < 0.6:
                intel.update_trace(tr.trace_id, status="completed", outcome="owner X", user="u")
    con = store._conn()
    for _ in range(rng.randint(0, 6)):
        a, b = rng.sample(ids, 2)
        ra, rb = sorted((store.get_casing(a).id, store.get_casing(b).id))
        con.execute(
            "INSERT OR IGNORE INTO leads(casing_a, casing_b, job, created_at) VALUES (?, ?, ?, ?)",
            (ra, rb, rb, f"{rng.choice(['2025-02-01', TODAY])}T0{rng.randint(0, 9)}:00:00+00:00"),
        )
    for _ in range(rng.randint(0, 12)):
        a, b = rng.sample(ids, 2)
        verdict = rng.choice(["hit", "hit", "hit", "excluded", "inconclusive"])
        store.record_decision(a, b, verdict, examiner="e", agency=rng.choice(AGENCIES))
    if ids and rng.random() < 0.3:
        store.delete_casing(rng.choice(ids), "test")


def random_policy(rng: random.Random) -> SharingPolicy:
    agencies = {a: rng.choice(JURS) for a in AGENCIES if rng.random() < 0.9}
    jurisdictions = {j: [k for k in JURS if k != j and rng.random() < 0.4] for j in JURS}
    return SharingPolicy(agencies, jurisdictions)


def recount(store: Store, visible: set[str], jur_of: Any, dfrom: str | None, dto: str | None):
    """The report's totals and per-jurisdiction counts, from raw rows, without index.intel."""
    con = store._conn()

    def period(t: str | None) -> bool:
        return bool(t) and (dfrom is None or t[:10] >= dfrom) and (dto is None or t[:10] <= dto)

    casings = {
        r[0]: (r[1], r[2])
        for r in con.execute("SELECT id, agency, created_at FROM casings WHERE deleted = 0")
        if r[1] in visible
    }
    fires = {r[0] for r in con.execute("SELECT casing FROM test_fires")}
    counts: dict[str, dict[str, int]] = {}

    def bump(js: set[str], key: str) -> None:
        for j in [*js, "total"]:
            counts.setdefault(j, {}).setdefault(key, 0)
            counts[j][key] += 1

    for rid, (agency, created) in casings.items():
        if period(created):
            bump({jur_of(agency)}, "test_fires" if rid in fires else "scene_casings")
    for a, b, created in con.execute("SELECT casing_a, casing_b, created_at FROM leads"):
        if a in casings and b in casings and period(created):
            bump({jur_of(casings[a][0]), jur_of(casings[b][0])}, "leads")
    latest: dict[tuple[int, int], tuple[str, str]] = {}
    for a, b, verdict, t in con.execute(
        "SELECT casing, candidate, verdict, time FROM decisions ORDER BY id"
    ):
        latest[(min(a, b), max(a, b))] = (verdict, t)
    for (a, b), (verdict, t) in latest.items():
        if verdict == "hit" and a in casings and b in casings and period(t):
            js = {jur_of(casings[a][0]), jur_of(casings[b][0])}
            bump(js, "hits")
            if len(js) == 2:
                bump(js, "hits_cross_jurisdiction")
            if casings[a][0] != casings[b][0]:
                bump(js, "hits_cross_agency")
            if (a in fires) != (b in fires):
                bump(js, "hits_firearm_to_scene")
    for fid, agency, rec_on in con.execute("SELECT firearm_id, agency, recovered_on FROM firearms"):
        if agency not in visible:
            continue
        if period(rec_on):
            bump({jur_of(agency)}, "firearms_recovered")
        for (req_at,) in con.execute(
            "SELECT requested_at FROM trace_requests WHERE firearm_id = ?", (fid,)
        ):
            if period(req_at):
                bump({jur_of(agency)}, "trace_requests")
        if any(
            s == "completed" and period(u)
            for s, u in con.execute(
                "SELECT status, updated_at FROM trace_requests WHERE firearm_id = ?", (fid,)
            )
        ):
            bump({jur_of(agency)}, "firearms_traced")
    return counts


KEYS = (
    "scene_casings",
    "test_fires",
    "leads",
    "hits",
    "hits_cross_jurisdiction",
    "hits_cross_agency",
    "hits_firearm_to_scene",
    "firearms_recovered",
    "trace_requests",
    "firearms_traced",
)


@seed(20261205)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    world_seed=st.integers(0, 10**6),
    policy_seed=st.integers(0, 10**6),
    dfrom=st.sampled_from([None, "2025-01-01", TODAY]),
    dto=st.sampled_from([None, "2025-12-31", TODAY]),
)
def test_reports_and_series_show_only_what_the_requester_may_see(
    world_seed: int, policy_seed: int, dfrom: str | None, dto: str | None
) -> None:
    if dfrom and dto and dfrom > dto:
        dfrom, dto = dto, dfrom
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "d")
        try:
            intel = Intel(store)
            build_world(store, intel, random.Random(world_seed))
            prng = random.Random(policy_seed)
            policy = random_policy(prng)
            all_ids = {
                r[0]: r[1] for r in store._conn().execute("SELECT casing_id, agency FROM casings")
            }
            for viewer in AGENCIES:
                visible = policy.allowed_agencies(viewer)
                hidden_agencies = set(AGENCIES) - visible
                hidden_ids = {c for c, a in all_ids.items() if a not in visible}
                rep = intel.report(visible, policy.jurisdiction_of, date_from=dfrom, date_to=dto)
                text = json.dumps(rep)
                # nothing of another jurisdiction or agency appears
                seen_jurs = {policy.jurisdiction_of(a) for a in visible}
                assert {r["jurisdiction"] for r in rep["jurisdictions"]} == seen_jurs
                for pair in rep["total"]["cross_jurisdiction_pairs"]:
                    assert set(pair.split(" / ")) <= seen_jurs
                assert not any(a in text for a in hidden_agencies)
                # the figures equal a recount of the raw records the viewer may see
                expect = recount(store, visible, policy.jurisdiction_of, dfrom, dto)
                for row in [*rep["jurisdictions"], rep["total"]]:
                    want = expect.get(row["jurisdiction"], {})
                    for k in KEYS:
                        assert row[k] == want.get(k, 0), (viewer, row["jurisdiction"], k)
                # series: only visible records, hidden parts only counted
                for s in intel.list_series(visible):
                    full = intel.find_series(visible, series_id=s["series_id"])
                    body = json.dumps(full)
                    assert not any(c in body for c in hidden_ids)
                    assert not any(f'"{a}"' in body for a in hidden_agencies)
                    assert set(full["agencies"]) <= visible
                    assert full["links"] == len(full["hits"])
                    assert full["hidden_nodes"] >= 0 and full["hidden_links"] >= 0
                # the whole picture, seen by one who sees everything, hides nothing
            every = intel.list_series(set(AGENCIES))
            assert all(s["hidden_links"] == 0 and s["hidden_nodes"] == 0 for s in every)
            assert len(every) == len(intel.components())
        finally:
            store.close()


def brute_components(store: Store, intel: Intel) -> set[frozenset[tuple[str, str]]]:
    """Series recomputed naively: replay every decision in order (the last per pair wins),
    keep hits between live casings, flood-fill from each node."""
    con = store._conn()
    node: dict[int, tuple[str, str]] = {}
    fires = dict(con.execute("SELECT casing, firearm_id FROM test_fires").fetchall())
    for rid, cid, agency, inc, deleted in con.execute(
        "SELECT id, casing_id, agency, incident, deleted FROM casings"
    ):
        if deleted:
            continue
        node[rid] = ("firearm", fires[rid]) if rid in fires else (agency, inc or f"casing:{cid}")
    state: dict[frozenset[int], str] = {}
    for a, b, v in con.execute("SELECT casing, candidate, verdict FROM decisions ORDER BY id"):
        state[frozenset((a, b))] = v
    adj: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for pair, v in state.items():
        a, b = tuple(pair)
        if v == "hit" and a in node and b in node and node[a] != node[b]:
            adj.setdefault(node[a], set()).add(node[b])
            adj.setdefault(node[b], set()).add(node[a])
    comps, seen = set(), set()
    for start in adj:
        if start in seen:
            continue
        comp, stack = {start}, [start]
        while stack:
            for m in adj[stack.pop()]:
                if m not in comp:
                    comp.add(m)
                    stack.append(m)
        seen |= comp
        comps.add(frozenset(comp))
    return comps


@seed(20261206)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world_seed=st.integers(0, 10**6), more=st.integers(1, 6))
def test_series_are_the_components_of_current_hits_and_stable(world_seed: int, more: int) -> None:
    rng = random.Random(world_seed)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "d")
        try:
            intel = Intel(store)
            build_world(store, intel, rng)
            assert {frozenset(c) for c in intel.components()} == brute_components(store, intel)
            before = {series_id_of(c): frozenset(c) for c in intel.components()}
            # leads never change a series
            live = [r[0] for r in store._conn().execute("SELECT id FROM casings WHERE deleted = 0")]
            if len(live) >= 2:
                a, b = sorted(rng.sample(live, 2))
                store._conn().execute(
                    "INSERT OR IGNORE INTO leads(casing_a, casing_b, job, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (a, b, b, "2025-01-01T00:00:00+00:00"),
                )
            assert {series_id_of(c): frozenset(c) for c in intel.components()} == before
            # new decisions: still the brute-force components; a series that only grew (no
            # split, merged with nothing holding a smaller key) keeps its id
            ids = [
                r[0]
                for r in store._conn().execute("SELECT casing_id FROM casings WHERE deleted = 0")
            ]
            for _ in range(more):
                if len(ids) < 2:
                    break
                a, b = rng.sample(ids, 2)
                store.record_decision(
                    a, b, rng.choice(["hit", "hit", "excluded", "inconclusive"]), examiner="e"
                )
                now = {series_id_of(c): frozenset(c) for c in intel.components()}
                assert set(now.values()) == brute_components(store, intel)
                for sid, comp in before.items():
                    grown = [c for c in now.values() if comp <= c]
                    if grown and min(map(_key, grown[0])) == min(map(_key, comp)):
                        assert series_id_of(grown[0]) == sid
                before = now
        finally:
            store.close()


def _key(n: tuple[str, str]) -> str:
    return f"{n[0]}/{n[1]}"
