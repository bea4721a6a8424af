"""Catalog: repair on start-up, delete without rebuild, re-extraction, concurrency, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from index.ingest import ingest_paths
from index.service import Catalog, CatalogConfig, reextract
from index.store import Filters
from index.testing import FakeEngine

# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py: store_engine).
pytestmark = pytest.mark.usefixtures("store_engine")

ROOT = Path(__file__).resolve().parents[1]


def _fill(cat: Catalog, guns=10, shots=3, start=0, **md):
    return [
        cat.ingest_bytes(
            f"FAKE:{g}:{s}".encode(),
            f"g{g}s{s}.x3p",
            {"caliber": "9mm" if g % 2 else "45", "incident": f"I{g}.{s}", **md},
        )
        for g in range(start, start + guns)
        for s in range(shots)
    ]


def _siblings_first(cat, recs, shots=3):
    for j, r in enumerate(recs):
        g = j // shots
        sib = {recs[g * shots + s].casing_id for s in range(shots)} - {r.casing_id}
        res = cat.search(r.casing_id, top=shots - 1)
        assert {c.casing_id for c in res.combined} == sib
        assert r.casing_id not in {c.casing_id for c in res.combined}


@pytest.mark.parametrize("damage", ["truncate", "garbage", "stale", "version"])
def test_damaged_or_stale_snapshot_is_rebuilt(tmp_path, damage):
    eng = FakeEngine()
    with Catalog.open(tmp_path, engine=eng) as cat:
        recs = _fill(cat)
    snap = tmp_path / "index" / "breech_face.faiss"
    if damage == "truncate":
        snap.write_bytes(snap.read_bytes()[:-100])
    elif damage == "garbage":
        snap.write_bytes(os.urandom(snap.stat().st_size))
    elif damage == "stale":  # more casings committed after the snapshot, snapshot not rewritten
        with Catalog.open(tmp_path, CatalogConfig(snapshot_every=10**9), engine=eng) as cat:
            recs += _fill(cat, guns=2, shots=3, start=100, agency="other")
            cat.close(snapshot=False)
    elif damage == "version":
        eng = FakeEngine(extractor_version="fake-2")
    with Catalog.open(tmp_path, engine=eng) as cat:
        assert cat.repairs["breech_face"] != "loaded"
        assert cat.check()
        assert cat.indexes["breech_face"].count() == cat.store.count_live() == len(recs)
        _siblings_first(cat, recs)


def test_snapshot_of_another_structure_is_rebuilt_as_the_rule_says(tmp_path):
    """An HNSW snapshot (the rule's choice from 50k rows until 2026-12-05, or configured) is
    rebuilt as the exact Flat index when the catalog is opened without a configured factory."""
    eng = FakeEngine()
    with Catalog.open(tmp_path, CatalogConfig(factory="HNSW32,Flat"), engine=eng) as cat:
        recs = _fill(cat)
        assert "HNSW" in cat.indexes["breech_face"].factory
    with Catalog.open(tmp_path, engine=eng) as cat:
        assert cat.repairs["breech_face"].startswith("rebuilt: factory differs")
        assert cat.indexes["breech_face"].factory == "IDMap2,Flat"
        _siblings_first(cat, recs)
    with Catalog.open(tmp_path, engine=eng) as cat:
        assert cat.repairs["breech_face"] == "loaded"


def test_delete_without_rebuild_and_filters(tmp_path):
    with Catalog.open(tmp_path, engine=FakeEngine()) as cat:
        recs = _fill(cat)
        idx = cat.indexes["breech_face"]
        gone = recs[1]
        cat.delete(gone.casing_id, "duplicate submission")
        assert cat.indexes["breech_face"] is idx and idx.count() == len(recs) - 1
        res = cat.search(recs[0].casing_id, top=5)
        assert gone.casing_id not in [c.casing_id for c in res.combined]
        res = cat.search(recs[3].casing_id, top=50, filters=Filters(caliber="9mm"))
        assert res.combined and all(c.caliber == "9mm" for c in res.combined)
        assert res.plans["breech_face"] == "exact-subset"
        c0 = res.combined[0]
        assert c0.non_match_frequency is not None and c0.cmc is not None and c0.rank == 1
    with Catalog.open(tmp_path, engine=FakeEngine()) as cat:
        assert cat.repairs["breech_face"] == "loaded" and cat.check()


def test_deadline_returns_partial(tmp_path):
    import time

    class Slow(FakeEngine):
        def score(self, a, b):
            time.sleep(0.05)
            return super().score(a, b)

    with Catalog.open(tmp_path, CatalogConfig(workers=2), engine=Slow()) as cat:
        recs = _fill(cat, guns=20)
        res = cat.search(recs[0].casing_id, top=10, deadline_s=0.12)
        assert res.partial and 0 < res.n_rescored < res.n_candidates
        assert any(not c.rescored and c.score is None for c in res.combined)
        # the stages' times: the comparisons stopped at the deadline, and they add up
        st = res.stage_s
        assert set(st) == {"candidates", "screen", "compare", "rank"}
        assert 0.05 <= st["compare"] < 0.5 and all(v >= 0 for v in st.values())
        assert sum(st.values()) <= res.elapsed_s + 1e-6
        assert res.as_dict()["stage_s"] == st


def test_reextract_after_version_change(tmp_path):
    with Catalog.open(tmp_path, engine=FakeEngine()) as cat:
        recs = _fill(cat, guns=4)
        before = cat.store.descriptors_of(recs[0].id, "fake-1")["breech_face"]
    eng2 = FakeEngine(extractor_version="fake-2")
    with Catalog.open(tmp_path, engine=eng2) as cat:  # auto re-extraction at start-up
        after = cat.store.descriptors_of(recs[0].id, "fake-2")["breech_face"]
        np.testing.assert_allclose(after, -before)
        assert cat.store.descriptors_of(recs[0].id, "fake-1") == {}
        assert cat.check() and cat.indexes["breech_face"].count() == len(recs)
        assert reextract(cat) == 0


def test_concurrent_searches_during_ingest(tmp_path):
    with Catalog.open(tmp_path, engine=FakeEngine()) as cat:
        base = _fill(cat, guns=10)
        errors: list[BaseException] = []
        stop = threading.Event()

        def searcher():
            try:
                while not stop.is_set():
                    r = cat.search(base[0].casing_id, top=2)
                    assert {c.casing_id for c in r.combined} == {
                        base[1].casing_id,
                        base[2].casing_id,
                    }
                    ids = [c.casing_id for c in r.combined]
                    assert len(ids) == len(set(ids))
            except BaseException as e:
                errors.append(e)

        ts = [threading.Thread(target=searcher) for _ in range(3)]
        for t in ts:
            t.start()
        _fill(cat, guns=40, shots=2, start=100, agency="B")
        stop.set()
        for t in ts:
            t.join()
        assert not errors, errors[0]
        assert cat.check() and cat.indexes["breech_face"].count() == 30 + 80


def test_ingest_paths_resume_bad_files_and_manifest(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for g in range(3):
        for s in range(2):
            (src / f"g{g}s{s}.x3p").write_bytes(f"FAKE:{g}:{s}".encode())
    (src / "broken.x3p").write_bytes(b"BAD bytes")
    (src / "notes.txt").write_text("ignored: not a scan suffix")
    man = tmp_path / "m.csv"
    man.write_text(
        "file,casing_id,incident_id,caliber,agency,date\n"
        "src/g0s0.x3p,EX-1,INC-9,9mm,PD1,2024-05-01\n"
    )
    data = tmp_path / "data"
    import io

    err = io.StringIO()
    with Catalog.open(data, engine=FakeEngine()) as cat:
        rep = ingest_paths(cat, [src], manifest=man, caliber="45", stream=err)
        assert len(rep.added) == 6 and len(rep.failed) == 1
        assert "broken.x3p" in err.getvalue() and err.getvalue().count("skipped") == 1
        r = cat.get("EX-1")
        assert (r.incident, r.caliber, r.agency, r.acquisition_date) == (
            "INC-9",
            "9mm",
            "PD1",
            "2024-05-01",
        )
        assert cat.get(rep.added[1]).caliber == "45"
        rep2 = ingest_paths(cat, [src], progress=False, stream=err)
        assert rep2.skipped_done == 6 and not rep2.added and len(rep2.failed) == 1
        assert cat.store.count_live() == 6


def _cli(args, env_extra=None):
    env = {
        **os.environ,
        "BALLISTICS_INDEX_ENGINE": "index.testing:FakeEngine",
        "PYTHONPATH": str(ROOT),
        **(env_extra or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _fake_sources(tmp_path: Path) -> Path:
    """Six fake scans, two shots from each of three guns."""
    src = tmp_path / "src"
    src.mkdir()
    for g in range(3):
        for s in range(2):
            (src / f"g{g}s{s}.x3p").write_bytes(f"FAKE:{g}:{s}".encode())
    return src


def test_cli_ingest_and_search(tmp_path):
    src = _fake_sources(tmp_path)
    d = str(tmp_path / "data")
    p = _cli(["ingest", str(src), "--data-dir", d, "--caliber", "9mm", "--json"])
    assert p.returncode == 0, p.stderr
    added = json.loads(p.stdout)["added"]
    p = _cli(["search", "--file", str(src / "g1s0.x3p"), "--data-dir", d, "--json", "--top", "3"])
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines()]  # one object per line
    assert {
        "casing_id",
        "score",
        "coarse_score",
        "cmc",
        "region",
        "rank",
        "non_match_frequency",
        "identical_file",
    } <= set(rows[0])
    # the same file is stored: listed apart (identical_file, no rank), not ranked first
    (same,) = [r for r in rows if r["identical_file"]]
    assert same["rank"] is None and same["score"] is None
    assert [r["rank"] for r in rows if not r["identical_file"]] == [1, 2, 3]
    p = _cli(["search", "--casing-id", added[0], "--data-dir", d])
    assert p.returncode == 0 and "rank" in p.stdout
    p = _cli(["search", "--casing-id", "nope", "--data-dir", d])
    assert p.returncode == 2 and "no casing with id nope" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    p = _cli(["ingest", str(tmp_path / "missing"), "--data-dir", d])
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1


def test_cli_search_after_a_descriptor_change_re_describes_once(tmp_path):
    src = _fake_sources(tmp_path)
    d = str(tmp_path / "data")
    assert _cli(["ingest", str(src), "--data-dir", d]).returncode == 0
    v2 = {"BALLISTICS_INDEX_ENGINE": "index.testing:FakeEngineV2"}
    args = ["search", "--file", str(src / "g1s0.x3p"), "--data-dir", d, "--json", "--top", "3"]
    with Catalog.open(d, engine=FakeEngine()):  # someone holds the store: a clear refusal
        p = _cli(args, v2)
    assert p.returncode == 2 and "older extractor" in p.stderr, p.stderr
    p = _cli(args, v2)
    assert p.returncode == 0, p.stderr
    assert "re-describing 6 stored casings" in p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(rows) == 4 and rows[0]["rank"] == 1 and rows[-1]["identical_file"]
    p = _cli(args, v2)  # once only
    assert p.returncode == 0 and "re-describing" not in p.stderr


def test_ingest_resume_is_per_agency(tmp_path):
    """A second agency ingesting the same folder into the same store gets its own casings: the
    resume list of the first agency's run must not make it skip the files."""
    src = tmp_path / "src"
    src.mkdir()
    for s in range(3):
        (src / f"g0s{s}.x3p").write_bytes(f"FAKE:0:{s}".encode())
    with Catalog.open(tmp_path / "data", engine=FakeEngine()) as cat:
        first = ingest_paths(cat, [src], agency="PD1", progress=False)
        second = ingest_paths(cat, [src], agency="PD2", progress=False)
        again = ingest_paths(cat, [src], agency="PD2", progress=False)
        assert len(first.added) == 3
        assert len(second.added) == 3 and second.skipped_done == 0
        assert again.skipped_done == 3 and not again.added
        agencies = sorted(r.agency for r in cat.list(limit=10))
        assert agencies == ["PD1"] * 3 + ["PD2"] * 3
