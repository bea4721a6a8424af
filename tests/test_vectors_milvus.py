"""Milvus as the vector engine (index/vectors_milvus.py), on milvus-lite: the VectorIndex
contract, filtered search equal to exact filtered search, restart persistence through the
catalog, URIs; and FAISS replicas kept current from the store's sequence numbers."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from index.service import Catalog, CatalogConfig
from index.store import Filters
from index.testing import FakeEngine
from index.vectors_milvus import VectorsURIError, parse_vectors_uri
from tests.test_index_vectors import _brute, _data, _same_up_to_ties

ROOT = Path(__file__).resolve().parents[1]

try:  # the Milvus tests need both; `make .venv/.installed` installs them (the dev extra)
    import milvus_lite  # noqa: F401
    import pymilvus  # noqa: F401

    HAVE_MILVUS = True
except ImportError:
    HAVE_MILVUS = False
needs_milvus = pytest.mark.skipif(
    not HAVE_MILVUS,
    reason="needs the pymilvus and milvus-lite packages (pip install -e '.[dev]' or '.[milvus]')",
)


def _lite(tmp_path: Path, name: str = "vectors") -> str:
    return f"milvus-lite://{tmp_path / 'milvus' / name}.db"


@pytest.fixture
def milvus(tmp_path):
    if not HAVE_MILVUS:
        pytest.skip("needs the pymilvus and milvus-lite packages")
    from index.vectors_milvus import MilvusVectors

    mv = MilvusVectors(parse_vectors_uri(_lite(tmp_path)))
    yield mv
    mv.close()


# -- URIs ----------------------------------------------------------------------------------------
def test_uri_forms():
    assert parse_vectors_uri(None).engine == "faiss"
    assert parse_vectors_uri("faiss").engine == "faiss"
    u = parse_vectors_uri("milvus://db.example:19531/hub?prefix=bal")
    assert (u.engine, u.uri, u.db_name, u.prefix, u.lite) == (
        "milvus",
        "http://db.example:19531",
        "hub",
        "bal",
        False,
    )
    assert parse_vectors_uri("milvus+https://h").uri == "https://h:19530"
    lite = parse_vectors_uri("milvus-lite:///var/x/v.db")
    assert lite.lite and lite.uri == "/var/x/v.db"


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("redis://h:6379", "unknown vector engine"),
        ("milvus://", "no host"),
        ("milvus-lite:///tmp/x.sqlite", "must end in .db"),
        ("milvus://h?prefix=a-b", "bad collection prefix"),
        ("milvus://h?consistency=Bounded", "unknown option"),
    ],
)
def test_bad_uri_is_a_clear_error(tmp_path, uri, words):
    with pytest.raises(VectorsURIError, match=words) as e:
        parse_vectors_uri(uri)
    assert "milvus-lite:///path/vectors.db" in str(e.value)  # names the accepted forms
    with pytest.raises(VectorsURIError, match=words):
        Catalog.open(tmp_path / "d", CatalogConfig(vectors=uri), engine=FakeEngine())


def test_serve_refuses_a_bad_vectors_uri(tmp_path):
    auth = tmp_path / "auth.json"
    auth.write_text('{"tokens": {}}')
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            "--data-dir",
            str(tmp_path / "d"),
            "--auth",
            str(auth),
            "--port",
            "0",
            "--vectors",
            "mongodb://x",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert "--vectors" in r.stderr and "unknown vector engine" in r.stderr


# -- the VectorIndex contract ----------------------------------------------------------------------
@needs_milvus
def test_add_remove_search(milvus):
    x, ids, _rng = _data(n=500)
    idx = milvus.create("breech_face", x.shape[1])
    assert idx.count() == 0
    s, i = idx.search(x[:2], 5)
    assert (i == -1).all() and np.isneginf(s).all()
    idx.add(ids, x)
    assert idx.count() == 500 and idx.contains(int(ids[3])) and not idx.contains(int(ids[3]) + 1)
    np.testing.assert_array_equal(idx.ids(), np.sort(ids))
    with pytest.raises(ValueError, match="already in the index"):
        idx.add(ids[:1], x[:1])
    with pytest.raises(ValueError, match="shape"):
        idx.add(np.array([10**6]), np.zeros((1, 3), np.float32))
    s, i = idx.search(x[:4], 1)
    np.testing.assert_array_equal(i[:, 0], ids[:4])  # each vector is its own nearest
    np.testing.assert_allclose(s[:, 0], 1.0, atol=1e-5)
    assert idx.remove([int(ids[0]), int(ids[1]), 99_999_999]) == 2
    assert idx.count() == 498
    s, i = idx.search(x[:2], 10)
    assert not set(i.ravel()) & {int(ids[0]), int(ids[1])}
    # k above the rows: padded with -1 / -inf
    s, i = idx.search(x[5], 20, allowed_ids=ids[5:8])
    assert set(i[0, :3]) == set(ids[5:8].tolist()) and (i[0, 3:] == -1).all()
    assert np.isneginf(s[0, 3:]).all()


@needs_milvus
@pytest.mark.parametrize("index_type", ["FLAT", "HNSW"])
@pytest.mark.parametrize("selectivity", [1.0, 0.7, 0.3, 0.05, 0.01, 0.001, 0.0001])
def test_filtered_equals_exact(tmp_path, selectivity, index_type):
    """FaissIndex's test data and check: top-k inside the filter, exact for FLAT (the default)
    and for the 'exact-fetch' plan (narrow filters), recall >= 0.9 for HNSW's 'filter' and
    'full' plans (0.7 takes the 'id not in' path). The rows are flushed first, so the search
    runs on sealed segments with their index (milvus-lite searches unflushed rows by brute
    force, which is always exact and would prove nothing)."""
    from index.vectors_milvus import MilvusVectors

    x, ids, rng = _data()
    milvus = MilvusVectors(parse_vectors_uri(_lite(tmp_path)), index_type=index_type)
    idx = milvus.create("breech_face", x.shape[1])
    assert idx.factory == f"milvus:{index_type}"
    idx.exact_max_rows = 200  # so the "filter" plan (ef raised by 1/selectivity) runs too
    idx.add(ids, x)
    idx.snapshot(None, {"seq": 1})  # flush: seal the rows into an indexed segment
    if index_type == "HNSW":
        deadline = time.monotonic() + 60  # milvus-lite indexes a sealed segment in background
        while not list((tmp_path / "milvus").rglob("*.hnsw.idx")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list((tmp_path / "milvus").rglob("*.hnsw.idx")), "no HNSW index was built"
    q = (x[rng.choice(len(x), 8)] + 0.01).astype(np.float32)
    k = 20
    for _trial in range(2):
        m = max(1, round(selectivity * len(ids)))
        allowed = rng.choice(ids, size=m, replace=False) if selectivity < 1 else None
        got_s, got_i = idx.search(q, k, allowed)
        exp_s, exp_i = _brute(q, x, ids, allowed, k)
        plan = idx.plan(None if allowed is None else m)
        if plan == "exact-fetch" or index_type == "FLAT":
            _same_up_to_ties(got_s, got_i, exp_s, exp_i)
        else:
            rec = np.mean(
                [len(set(a) & set(b)) / len(b) for a, b in zip(got_i, exp_i, strict=True)]
            )
            assert rec >= 0.9, (plan, rec)
        if allowed is not None:
            assert np.isin(got_i[got_i >= 0], allowed).all()
    # ids the index does not hold (deleted, never added) are ignored, not matched
    _s, i = idx.search(q[:1], 5, np.array([-3, 1, 2, int(ids[10])]))
    assert i[0, 0] == ids[10] and (i[0, 1:] == -1).all()
    milvus.close()


@needs_milvus
def test_catalog_rebuilds_a_collection_of_another_index_type(tmp_path, monkeypatch):
    """A collection made with HNSW (the default until 2026-12-05) is rebuilt as FLAT."""
    import index.vectors_milvus as vm

    eng = FakeEngine()
    cfg = CatalogConfig(vectors=_lite(tmp_path))
    monkeypatch.setattr(vm, "DEFAULT_INDEX_TYPE", "HNSW")
    with Catalog.open(tmp_path / "d", cfg, engine=eng) as cat:
        recs = _fill(cat)
        assert cat.stats()["indexes"]["breech_face"]["factory"] == "milvus:HNSW"
    monkeypatch.setattr(vm, "DEFAULT_INDEX_TYPE", "FLAT")
    with Catalog.open(tmp_path / "d", cfg, engine=eng) as cat:
        assert cat.repairs["breech_face"] == "rebuilt: index type HNSW, FLAT wanted"
        assert cat.stats()["indexes"]["breech_face"]["factory"] == "milvus:FLAT"
        assert cat.check(verify_surfaces=False)
        assert len(_lists(cat, recs)) == len(recs)
    with Catalog.open(tmp_path / "d", cfg, engine=eng) as cat:
        assert cat.repairs["breech_face"] == "loaded"


# -- through the catalog ---------------------------------------------------------------------------
def _fill(cat: Catalog, guns=8, shots=3, start=0):
    return [
        cat.ingest_bytes(
            f"FAKE:{g}:{s}".encode(),
            f"g{g}s{s}.x3p",
            {"caliber": "9mm" if g % 2 else "45", "agency": f"ag{g % 3}"},
        )
        for g in range(start, start + guns)
        for s in range(shots)
    ]


def _lists(cat: Catalog, recs, filters=None):
    return {
        r.casing_id: [c.casing_id for c in cat.search(r.casing_id, top=5, filters=filters).combined]
        for r in recs
    }


@needs_milvus
def test_catalog_on_milvus_persists_and_replays(tmp_path):
    eng = FakeEngine()
    cfg = CatalogConfig(vectors=_lite(tmp_path), snapshot_every=10**9)
    with Catalog.open(tmp_path / "d", cfg, engine=eng) as cat:
        recs = _fill(cat)
        assert cat.stats()["indexes"]["breech_face"]["factory"].startswith("milvus:")
        before = _lists(cat, recs)
        nine = _lists(cat, recs, Filters(caliber="9mm"))
        for j, r in enumerate(recs):  # the two casings of the same gun come first
            sib = {recs[j // 3 * 3 + s].casing_id for s in range(3)} - {r.casing_id}
            assert set(before[r.casing_id][:2]) == sib
            assert set(nine[r.casing_id][:2]) == sib or r.caliber != "9mm"
    # restart: the collection's recorded seq is current -> loaded, same answers
    with Catalog.open(tmp_path / "d", cfg, engine=eng) as cat:
        assert cat.repairs == {"breech_face": "loaded"}
        assert _lists(cat, recs) == before
        assert _lists(cat, recs, Filters(caliber="9mm")) == nine
        # changes after the last recorded seq (a crash before the close)
        extra = _fill(cat, guns=2, start=50)
        cat.delete(recs[0].casing_id, "test")
        cat.close(snapshot=False)
    with Catalog.open(tmp_path / "d", cfg, engine=eng) as cat:
        assert cat.repairs["breech_face"] == "replayed 7"
        assert cat.check(verify_surfaces=False)
        idx = cat.indexes["breech_face"]
        assert idx.count() == len(recs) + len(extra) - 1
        res = cat.search(extra[0].casing_id, top=2)
        assert {c.casing_id for c in res.combined} == {e.casing_id for e in extra[1:3]}
        # rows removed behind our back -> detected and rebuilt from the store
        idx.client.delete(idx.collection, ids=[extra[1].id])
    with Catalog.open(tmp_path / "d", cfg, engine=eng) as cat:
        assert cat.repairs["breech_face"].startswith("rebuilt: collection holds")
        assert cat.check(verify_surfaces=False)


@needs_milvus
def test_catalog_milvus_equals_faiss(tmp_path):
    """The same casings, searched through FAISS and through Milvus: the same candidates."""
    eng = FakeEngine()
    out = {}
    for name, vectors in (("faiss", None), ("milvus", _lite(tmp_path))):
        with Catalog.open(tmp_path / name, CatalogConfig(vectors=vectors), engine=eng) as cat:
            recs = _fill(cat, guns=10)
            pos = {r.casing_id: j for j, r in enumerate(recs)}  # casing ids are random
            out[name] = [
                [[pos[c] for c in found] for found in _lists(cat, recs, f).values()]
                for f in (None, Filters(agencies={"ag1"}), Filters(caliber="45", agencies={"ag0"}))
            ]
    assert out["faiss"] == out["milvus"]


# -- FAISS replicas follow the store's sequence numbers -------------------------------------------
def test_read_only_faiss_replica_follows_the_store(tmp_path):
    eng = FakeEngine()
    writer = Catalog.open(tmp_path, engine=eng)
    try:
        recs = _fill(writer, guns=4)
        with Catalog.open(tmp_path, CatalogConfig(read_only=True), engine=eng) as replica:
            assert replica.applied_seq == writer.applied_seq
            new = _fill(writer, guns=2, start=20)
            writer.delete(recs[0].casing_id, "test")
            assert replica.applied_seq < writer.applied_seq
            res = replica.search(new[0].casing_id, top=2)  # syncs first
            assert replica.applied_seq == writer.applied_seq
            assert {c.casing_id for c in res.combined} == {n.casing_id for n in new[1:3]}
            assert replica.indexes["breech_face"].count() == len(recs) + len(new) - 1
            assert replica.check(verify_surfaces=False)
            assert replica.sync() == 0
            assert _lists(replica, recs[1:]) == _lists(writer, recs[1:])
    finally:
        writer.close()
