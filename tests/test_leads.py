"""Background correlation and the lead queue (issue 11, item 4; index/correlate.py).

Synthetic casings from ``index.testing.FakeScreenEngine``: ``FAKE:<gun>:<shot>`` content gives
descriptors near a per-gun centre, so same-gun pairs score about 0.75-0.95 and different-gun
pairs about 0 +- 0.2. The lead threshold used here (non-match frequency <= 0.3, i.e. score >=
0.7 with the fake's ``nmf = 1 - score``) separates them; the default 0.01 is for the real
calibration.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from index.correlate import CorrelationConfig, CorrelationWorker, partition_agencies
from index.search import SCREEN_KEY
from index.service import Catalog, CatalogConfig
from index.store import LEAD_STATES, Store, open_store
from index.testing import PNG_MAGIC, FakeScreenEngine
from server.app import CatalogBackend
from server.cli import main as cli_main
from server.output import JOB_KEYS, LEAD_KEYS
from server.policy import SharingPolicy
from tests.test_server_support import POLICY, running_server

# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py: store_engine).
pytestmark = pytest.mark.usefixtures("store_engine")

ROOT = Path(__file__).resolve().parents[1]
CFG = CorrelationConfig(lead_max_nmf=0.3, poll_s=0.05)

#: north and south share both ways; east shares with nobody; "fed" sees north, north does not
#: see fed (sharing is not symmetric).
FED_POLICY = SharingPolicy.from_dict(
    {
        "agencies": {"PD-North": "north", "PD-South": "south", "SO-East": "east", "Fed": "fed"},
        "jurisdictions": {"north": ["south"], "south": ["north"], "east": [], "fed": ["north"]},
    }
)


def _add(cat: Catalog, gun: int, shot: int, agency: str = "local", caliber: str | None = "9mm"):
    md = {"agency": agency, "casing_id": f"{agency}-g{gun}s{shot}"}
    if caliber:
        md["caliber"] = caliber
    return cat.ingest_bytes(f"FAKE:{gun}:{shot}".encode(), f"g{gun}s{shot}.x3p", md)


def _pairs(store: Store, agencies=None) -> set[frozenset[str]]:
    return {frozenset((ld.casing_a, ld.casing_b)) for ld in store.list_leads(agencies=agencies)}


@pytest.fixture
def cat(tmp_path: Path):
    c = Catalog.open(tmp_path / "data", engine=FakeScreenEngine())
    try:
        yield c
    finally:
        c.close()


def _drain(cat: Catalog, policy=None, config: CorrelationConfig = CFG) -> list:
    w = CorrelationWorker(cat, policy=policy, config=config)
    try:
        return w.drain()
    finally:
        w.stop()


def test_every_casing_gets_a_job_and_same_gun_pairs_become_leads(cat: Catalog) -> None:
    for g in range(4):
        for s in range(3):
            _add(cat, g, s)
    _add(cat, 0, 0)  # the same file again: the existing casing, no second job
    assert cat.store.job_counts() == {"pending": 12, "running": 0, "done": 0, "failed": 0}
    outs = _drain(cat)
    assert len(outs) == 12
    assert cat.store.job_counts()["done"] == 12
    expected = {
        frozenset((f"local-g{g}s{a}", f"local-g{g}s{b}"))
        for g in range(4)
        for a in range(3)
        for b in range(a + 1, 3)
    }
    assert _pairs(cat.store) == expected
    leads = cat.store.list_leads()
    assert all(ld.state == "new" and ld.cmc is not None and ld.cmc >= 10 for ld in leads)
    assert all(ld.non_match_frequency is not None and ld.non_match_frequency <= 0.3 for ld in leads)
    # a lead's older casing is casing_a
    ids = {r.casing_id: r.id for r in cat.store.list_casings()}
    assert all(ids[ld.casing_a] < ids[ld.casing_b] for ld in leads)
    assert _drain(cat) == []  # nothing left: draining again does nothing


def test_newer_casing_is_found_from_the_older_one(cat: Catalog) -> None:
    old = _add(cat, 7, 0, agency="PD-North")
    for g in range(5):
        _add(cat, 100 + g, 0, agency="PD-South")  # other guns
    _drain(cat, FED_POLICY)
    assert cat.store.list_leads() == []  # nothing to find yet
    new = _add(cat, 7, 1, agency="PD-South")  # the same gun, months later, another agency
    (out,) = _drain(cat, FED_POLICY)
    assert out.casing == new.id and out.n_partition == 6
    north = FED_POLICY.allowed_agencies("PD-North")
    (lead,) = cat.store.list_leads(agencies=north)  # the older casing's owner sees it
    assert (lead.casing_a, lead.casing_b) == (old.casing_id, new.casing_id)
    assert (lead.agency_a, lead.agency_b) == ("PD-North", "PD-South")


class BlindScreenEngine(FakeScreenEngine):
    """A screen that knows nothing: each casing's signature is noise drawn from its own
    descriptor bytes (so it stays the same when re-described), unrelated to its gun."""

    def _with_signature(self, descs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seed = int.from_bytes(descs[self.regions[0]].tobytes()[:8], "little")
        noise = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
        return {**descs, SCREEN_KEY: noise / np.linalg.norm(noise)}


@pytest.mark.parametrize("use_descriptor", [True, False])
def test_a_mate_the_screen_misses_is_compared_from_the_descriptor_order(
    tmp_path: Path, use_descriptor: bool
) -> None:
    """Two of 31 older casings are compared; the screen ranks at random, the descriptor puts
    the mate first. Alternating the two orders compares the mate; the screen alone did not."""
    cfg = CorrelationConfig(
        lead_max_nmf=0.3,
        compare_fraction=0.0,
        compare_min=2,
        use_descriptor=use_descriptor,
        rescue_factor=0.0,
    )
    with Catalog.open(tmp_path / "data", engine=BlindScreenEngine()) as cat:
        old = _add(cat, 7, 0)
        for g in range(30):
            _add(cat, 100 + g, 0)
        new = _add(cat, 7, 1)
        outs = _drain(cat, config=cfg)
        last = next(o for o in outs if o.casing == new.id)
        assert last.n_partition == 31 and last.n_compared == 2
        found = frozenset((old.casing_id, new.casing_id)) in _pairs(cat.store)
        assert found is use_descriptor
        if use_descriptor:
            (lead,) = cat.store.list_leads()
            assert lead.screen_score is not None  # the descriptor's pick was screened too


@pytest.mark.parametrize("rescue_factor", [20.0, 0.0])
def test_rescue_finds_a_mate_both_orders_set_aside(tmp_path: Path, rescue_factor: float) -> None:
    """The screen knows nothing and the descriptor is not used: the mate is set aside. The
    rescue scores every set-aside casing by the engine's coarse similarity and compares its
    best one: the mate; without a rescue it is not compared."""
    cfg = CorrelationConfig(
        lead_max_nmf=0.3,
        compare_fraction=0.0,
        compare_min=2,
        use_descriptor=False,
        rescue_factor=rescue_factor,
        rescue_k=1,
    )
    with Catalog.open(tmp_path / "data", engine=BlindScreenEngine()) as cat:
        old = _add(cat, 7, 0)
        for g in range(30):
            _add(cat, 100 + g, 0)
        new = _add(cat, 7, 1)
        last = next(o for o in _drain(cat, config=cfg) if o.casing == new.id)
        pair = frozenset((old.casing_id, new.casing_id))
        if rescue_factor:
            assert (last.n_compared, last.n_rescued) == (3, 1)
            assert pair in _pairs(cat.store)
        else:
            assert (last.n_compared, last.n_rescued) == (2, 0)
            assert pair not in _pairs(cat.store)


def test_leads_never_cross_the_sharing_policy(cat: Catalog) -> None:
    # one gun fired by four agencies, oldest first: fed, north, east, south
    fed = _add(cat, 1, 0, agency="Fed")
    north = _add(cat, 1, 1, agency="PD-North")
    _add(cat, 1, 2, agency="SO-East")
    south = _add(cat, 1, 3, agency="PD-South")
    assert partition_agencies("PD-North", cat.store.agencies(), FED_POLICY) == {
        "PD-North",
        "PD-South",
        "Fed",
    }
    assert partition_agencies("SO-East", cat.store.agencies(), FED_POLICY) == {"SO-East"}
    _drain(cat, FED_POLICY)
    # only pairs some agency may see together are compared at all: fed-north (north's job:
    # fed may see north, though north may not see fed) and north-south; never east, never
    # fed-south (no agency sees both)
    assert _pairs(cat.store) == {
        frozenset((fed.casing_id, north.casing_id)),
        frozenset((north.casing_id, south.casing_id)),
    }
    view = {a: _pairs(cat.store, FED_POLICY.allowed_agencies(a)) for a in FED_POLICY.agencies}
    assert view["Fed"] == {frozenset((fed.casing_id, north.casing_id))}
    assert view["PD-North"] == view["PD-South"] == {frozenset((north.casing_id, south.casing_id))}
    assert view["SO-East"] == set()
    for agency in view:  # each lead shown only with both casings visible
        seen = FED_POLICY.allowed_agencies(agency)
        for ld in cat.store.list_leads(agencies=seen):
            assert {ld.agency_a, ld.agency_b} <= seen, agency
    # progress is counted over the viewer's casings only
    assert cat.store.job_counts(FED_POLICY.allowed_agencies("SO-East"))["done"] == 1


def test_calibre_partition(cat: Catalog) -> None:
    a = _add(cat, 3, 0, agency="L", caliber="9mm")
    b = _add(cat, 3, 1, agency="L", caliber=".45 ACP")  # same virtual gun, another calibre
    c = _add(cat, 3, 2, agency="L", caliber=None)  # calibre not recorded: may be either
    d = _add(cat, 3, 3, agency="L", caliber="9mm")
    _drain(cat)

    def pair(x, y):
        return frozenset((x.casing_id, y.casing_id))

    # the unknown calibre pairs with both calibres; 9 mm and .45 never pair
    assert _pairs(cat.store) == {pair(a, c), pair(b, c), pair(a, d), pair(c, d)}


def test_lead_state_follows_decide_and_filters(cat: Catalog) -> None:
    for s in range(3):
        _add(cat, 5, s)
    _drain(cat)
    leads = cat.store.list_leads()
    assert len(leads) == 3 and {ld.state for ld in leads} == {"new"}
    first = leads[0]
    for verdict, state in (
        ("inconclusive", "reviewed"),
        ("hit", "confirmed"),
        ("excluded", "excluded"),
    ):
        # either direction of the pair: a decision is on the pair
        d = cat.record_decision(
            first.casing_b, first.casing_a, verdict, examiner="ex", agency="local"
        )
        (got,) = cat.store.list_leads(state=state)
        assert got.lead_id == first.lead_id and got.decision_id == d.id
        assert {ld.lead_id for ld in cat.store.list_leads(state="new")} == {
            ld.lead_id for ld in leads[1:]
        }
    assert set(LEAD_STATES) == {"new", "reviewed", "confirmed", "excluded"}
    with pytest.raises(ValueError):
        cat.store.list_leads(state="hit")
    # the decisions stay append-only: three rows for the pair
    assert len(cat.decisions(first.casing_a)) == 3


def test_job_taken_but_not_finished_is_retaken(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Catalog.open(data, engine=FakeScreenEngine()) as cat:
        for s in range(3):
            _add(cat, 2, s)
        assert cat.store.take_job("dead-worker") == 1  # then the process "dies"
    with Catalog.open(data, engine=FakeScreenEngine()) as cat:
        assert cat.store.job_counts()["running"] == 1
        _drain(cat)
        assert cat.store.job_counts() == {"pending": 0, "running": 0, "done": 3, "failed": 0}
        assert cat.store.job_of(1)["attempts"] == 2
        with pytest.raises(RuntimeError):  # finishing a job that is not running records nothing
            cat.store.finish_job(1, [{"a": 1, "b": 2}], n_screened=0, n_compared=0)
        assert len(cat.store.list_leads()) == 3


def test_backfill_queues_casings_stored_before_jobs(cat: Catalog) -> None:
    for s in range(3):
        _add(cat, 4, s)
    with cat.store._tx() as con:  # a store from before correlation jobs existed
        con.execute("DELETE FROM correlation_jobs")
    assert cat.store.enqueue_missing_jobs() == 3
    assert cat.store.enqueue_missing_jobs() == 0
    _drain(cat)
    assert len(cat.store.list_leads()) == 3


def test_worker_yields_to_interactive_search(cat: Catalog) -> None:
    for s in range(2):
        _add(cat, 6, s)
    w = CorrelationWorker(cat, config=CorrelationConfig(lead_max_nmf=0.3, yield_s=30.0))
    calls = cat.engine.calls
    try:
        with cat._interactive():  # a search in progress
            t = threading.Thread(target=w.drain)
            t.start()
            time.sleep(0.5)
            assert cat.engine.calls == calls  # no comparison while the search runs
            assert cat.store.job_counts()["done"] == 1  # (job 1 had nothing to compare)
        t.join(10)
        assert not t.is_alive() and cat.engine.calls == calls + 1
    finally:
        w.stop()
    assert len(cat.store.list_leads()) == 1


def test_background_thread_wakes_on_ingest(cat: Catalog) -> None:
    w = CorrelationWorker(cat, config=CorrelationConfig(lead_max_nmf=0.3, poll_s=30.0))
    w.start()
    try:
        _add(cat, 8, 0)
        _add(cat, 8, 1)
        deadline = time.monotonic() + 10
        while cat.store.job_counts()["done"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cat.store.job_counts()["done"] == 2  # woken by the ingests, not the 30-s poll
    finally:
        w.stop()
    assert len(cat.store.list_leads()) == 1


def test_stop_mid_job_puts_it_back_uncounted(cat: Catalog) -> None:
    for s in range(6):
        _add(cat, 11, s)
    cat.engine.score_delay_s = 0.2  # type: ignore[attr-defined]
    w = CorrelationWorker(cat, config=CorrelationConfig(lead_max_nmf=0.3, poll_s=0.05))
    w.start()
    deadline = time.monotonic() + 20
    while cat.engine.calls < 4 and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.02)
    t0 = time.monotonic()
    w.stop()  # e.g. the server shutting down
    assert time.monotonic() - t0 < 2.0  # the job in hand does not run to its end
    counts = cat.store.job_counts()
    assert counts["running"] == 0 and counts["pending"] >= 1 and counts["failed"] == 0
    first_pending = cat.store.take_job("probe")
    assert first_pending is not None and cat.store.job_of(first_pending)["attempts"] == 1
    cat.store.release_job(first_pending)
    cat.engine.score_delay_s = 0.0  # type: ignore[attr-defined]
    _drain(cat)
    assert cat.store.job_counts()["done"] == 6 and len(cat.store.list_leads()) == 15


# --- the command line and the RPC ----------------------------------------------------------


def test_cli_correlate_and_leads_local(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BALLISTICS_INDEX_ENGINE", "index.testing:FakeScreenEngine")
    data = tmp_path / "data"
    with Catalog.open(data, engine=FakeScreenEngine()) as cat:
        for g in range(2):
            for s in range(3):
                _add(cat, g, s)
    d = str(data)
    assert cli_main(["leads", "--data-dir", d, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == {"jobs": {"pending": 6, "running": 0, "done": 0, "failed": 0}, "leads": []}
    assert (
        cli_main(["correlate", "--data-dir", d, "--once", "--json", "--lead-max-nmf", "0.3"]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["casing_id"] == "local-g0s0"
    assert cli_main(["correlate", "--data-dir", d, "--lead-max-nmf", "0.3"]) == 0
    assert "0 pending" in capsys.readouterr().err
    assert cli_main(["leads", "--data-dir", d, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc) == ["jobs", "leads"] and tuple(doc["jobs"]) == JOB_KEYS
    assert doc["jobs"]["done"] == 6 and len(doc["leads"]) == 6
    for ld in doc["leads"]:
        assert tuple(ld) == LEAD_KEYS
        assert ld["state"] == "new" and isinstance(ld["lead_id"], str)
        assert ld["score"] > 0.7 and isinstance(ld["cmc"], int)
    assert cli_main(["leads", "--data-dir", d, "--state", "confirmed", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["leads"] == []
    assert cli_main(["leads", "--data-dir", d, "--agency", "elsewhere", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["leads"] == []  # isolated: not its casings
    assert cli_main(["leads", "--data-dir", d]) == 0
    out = capsys.readouterr().out
    assert "6 done" in out and "local-g0s0" in out
    if os.environ.get("BALLISTICS_STORE") is None:  # a server store exists wherever the dir
        assert cli_main(["leads", "--data-dir", str(tmp_path / "none")]) == 2
        assert "no store" in capsys.readouterr().err


def test_rpc_and_cli_list_leads_through_the_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = SharingPolicy.from_dict(POLICY)  # north <-> south; east alone
    data = tmp_path / "data"
    catalog = Catalog.open(data, engine=FakeScreenEngine())
    worker = CorrelationWorker(catalog, policy=policy, config=CFG)
    worker.start()
    try:
        with running_server(CatalogBackend(catalog), data) as srv:
            with (
                srv.client("north_exam") as n,
                srv.client("south_exam") as s,
                srv.client("east_exam") as e,
            ):
                a = n.submit(
                    PNG_MAGIC + b"FAKE:9:0", incident_id="N-1", calibre="9mm", search=False
                )
                x = e.submit(
                    PNG_MAGIC + b"FAKE:9:1", incident_id="E-1", calibre="9mm", search=False
                )
                b = s.submit(
                    PNG_MAGIC + b"FAKE:9:2", incident_id="S-1", calibre="9mm", search=False
                )
                deadline = time.monotonic() + 15
                while (
                    n.leads().jobs.pending + n.leads().jobs.running and time.monotonic() < deadline
                ):
                    time.sleep(0.05)
                got = n.leads()
                assert (got.jobs.pending, got.jobs.running, got.jobs.done) == (0, 0, 2)
                (lead,) = got.leads
                assert (lead.casing_a, lead.casing_b) == (a.casing_id, b.casing_id)
                assert lead.state == "new" and lead.HasField("score") and lead.HasField("cmc")
                assert lead.incident_a == "N-1" and lead.incident_b == "S-1"
                assert [ld.lead_id for ld in s.leads().leads] == [lead.lead_id]
                east = e.leads()
                assert list(east.leads) == [] and east.jobs.done == 1  # only its own casing
                assert x.casing_id not in {
                    c for ld in n.leads().leads for c in (ld.casing_a, ld.casing_b)
                }
                # state through Decide (examiner role, audited), on either order of the pair
                d = s.decide(b.casing_id, a.casing_id, "hit", "confirmed by comparison")
                (conf,) = n.leads(state="confirmed").leads
                assert conf.state == "confirmed" and conf.decision_id == d.decision_id
                assert list(n.leads(state="new").leads) == []
                with pytest.raises(grpc.RpcError) as err:
                    n.leads(state="hit")
                assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
                # one casing's leads: north's casing has the lead; east's casing has none, and
                # north may not even learn that it exists (as for an unknown id)
                assert [ld.lead_id for ld in n.leads(casing_id=a.casing_id).leads] == [lead.lead_id]
                assert list(e.leads(casing_id=x.casing_id).leads) == []
                for hidden in (x.casing_id, "no-such-casing"):
                    with pytest.raises(grpc.RpcError) as err:
                        n.leads(casing_id=hidden)
                    assert err.value.code() is grpc.StatusCode.NOT_FOUND
                    assert hidden in (err.value.details() or "")
            with srv.client("north_sub") as sub, pytest.raises(grpc.RpcError) as err:
                sub.leads()  # a submitter has no lead queue
            assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
            base = ["--server", srv.address, f"--token={srv.tokens['north_exam']}"]
            assert cli_main(["leads", "--json", *base]) == 0
            remote = json.loads(capsys.readouterr().out)
    finally:
        worker.stop()
        catalog.close()
    assert tuple(remote["jobs"]) == JOB_KEYS and len(remote["leads"]) == 1
    (r,) = remote["leads"]
    assert tuple(r) == LEAD_KEYS and r["state"] == "confirmed"
    # the same lead, the same keys and values locally (north's view under the same policy)
    pol = tmp_path / "policy.json"
    pol.write_text(json.dumps(POLICY))
    assert (
        cli_main(
            [
                "leads",
                "--data-dir",
                str(data),
                "--agency",
                "PD-North",
                "--policy",
                str(pol),
                "--json",
            ]
        )
        == 0
    )
    local = json.loads(capsys.readouterr().out)
    assert local == remote
    # --casing-id locally: the same lead for north's casing; east's is refused for north
    north = ["leads", "--data-dir", str(data), "--agency", "PD-North", "--policy", str(pol)]
    assert cli_main([*north, "--casing-id", a.casing_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["leads"] == remote["leads"]
    assert cli_main([*north, "--casing-id", x.casing_id, "--json"]) == 2
    assert f"no casing {x.casing_id}" in capsys.readouterr().err


# --- durability: SIGKILL mid-queue ---------------------------------------------------------

CHILD = r"""
import sys
from index.correlate import CorrelationConfig, CorrelationWorker
from index.service import Catalog
from index.search import SCREEN_KEY
from index.testing import PNG_MAGIC, FakeScreenEngine
eng = FakeScreenEngine()
eng.score_delay_s = 0.02  # a comparison that takes time, so kills land mid-job
cat = Catalog.open(sys.argv[1], engine=eng)
cfg = CorrelationConfig(lead_max_nmf=0.3, max_attempts=1000)
w = CorrelationWorker(cat, config=cfg, on_done=lambda o: print(o.casing, flush=True))
print("ready", flush=True)
w.drain()
print("drained", flush=True)
w.stop()
cat.close()
"""


def _child(data: Path) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ready"
    return p


def test_sigkill_mid_queue_no_job_lost_no_lead_doubled(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    rng = random.Random(20240611)
    data, reference = tmp_path / "data", tmp_path / "reference"
    with Catalog.open(data, CatalogConfig(snapshot_every=5), engine=FakeScreenEngine()) as cat:
        for g in range(8):
            for s in range(4):
                _add(cat, g, s)
    ref_cfg = CatalogConfig()
    if os.environ.get("BALLISTICS_STORE"):  # PostgreSQL: the reference in its own database
        ref_cfg = CatalogConfig(store=request.getfixturevalue("pg_url_2"))
        with Catalog.open(reference, ref_cfg, engine=FakeScreenEngine()) as cat:
            for g in range(8):
                for s in range(4):
                    _add(cat, g, s)
    else:
        shutil.copytree(data, reference)
    with Catalog.open(reference, ref_cfg, engine=FakeScreenEngine()) as cat:  # same queue
        _drain(cat, config=CorrelationConfig(lead_max_nmf=0.3))
        expected = _pairs(cat.store)
    assert len(expected) == 8 * 6

    finished: list[str] = []  # jobs the child acknowledged (printed after the commit)
    kills = 0
    for _ in range(15):
        p = _child(data)
        time.sleep(rng.uniform(0.05, 0.5))
        p.send_signal(signal.SIGKILL)
        out, _ = p.communicate()
        lines = out.split("\n")
        if "drained" in lines:
            finished += [ln for ln in lines if ln.isdigit()]
            break
        kills += 1
        finished += [ln for ln in lines[:-1] if ln.isdigit()]  # a torn last line: not acked
        store = open_store(data)
        try:
            counts = store.job_counts()
            assert sum(counts.values()) == 32 and counts["failed"] == 0
            pairs = store.list_leads()
            assert len(pairs) == len(_pairs(store))  # never a doubled pair
        finally:
            store.close()
    else:
        p = _child(data)  # finish without a kill
        out, _ = p.communicate(timeout=120)
        finished += [ln for ln in out.split("\n") if ln.isdigit()]
    assert kills >= 5
    assert len(finished) == len(set(finished))  # no acknowledged job was done again
    store = open_store(data)
    try:
        assert store.job_counts() == {"pending": 0, "running": 0, "done": 32, "failed": 0}
        assert _pairs(store) == expected  # no lead lost
        n_rows = store._conn().execute("SELECT COUNT(*) FROM leads").fetchone()[0]
        assert n_rows == len(expected)  # none doubled
        n_leads = store._conn().execute("SELECT SUM(n_leads) FROM correlation_jobs").fetchone()[0]
        assert n_leads == len(expected)  # each job's leads were recorded by one finish
        retaken = (
            store._conn()
            .execute("SELECT COUNT(*) FROM correlation_jobs WHERE attempts > 1")
            .fetchone()[0]
        )
        assert retaken >= 1  # some kill did land mid-job
    finally:
        store.close()


def test_correlation_options_reach_the_config() -> None:
    import argparse

    from server.commands_leads import correlation_config

    cfg = correlation_config(argparse.Namespace(rescue_factor=0.0, compare_fraction=0.1))
    assert (cfg.rescue_factor, cfg.compare_fraction) == (0.0, 0.1)
    assert cfg.reach(1000) == cfg.keep(1000) == 100  # no rescue: the list ends at keep
    assert CorrelationConfig().reach(1000) == 100  # default rescue: as many again
    with pytest.raises(ValueError, match="--rescue-factor"):
        correlation_config(argparse.Namespace(rescue_factor=-1.0))
    assert cli_main(["correlate", "--data-dir", "/nonexistent", "--rescue-factor", "-2"]) == 2


def test_local_search_names_the_casings_leads(
    cat: Catalog, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A search for a stored casing says what background correlation found for it, and which
    of those leads the list above does not show."""
    monkeypatch.setenv("BALLISTICS_INDEX_ENGINE", "index.testing:FakeScreenEngine")
    recs = [_add(cat, 7, s) for s in range(3)] + [_add(cat, 100 + g, 0) for g in range(5)]
    _drain(cat)
    q = recs[2].casing_id
    argv = ["search", "--casing-id", q, "--data-dir", str(cat.data_dir), "--top", "1"]
    capsys.readouterr()
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "background correlation: 2 lead(s) for this casing, 1 not in the list above" in out
    assert f"ballistics leads --casing-id {q}" in out
