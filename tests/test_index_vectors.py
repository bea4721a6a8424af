"""Vector index: filtered search equals exact filtered brute force; snapshots; errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from index.vectors import FaissIndex, SnapshotError, choose_factory, sidecar_path


def _data(n=3000, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((30, d))
    x = centres[rng.integers(0, 30, n)] + 0.3 * rng.standard_normal((n, d))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    ids = (np.arange(n) * 3 + 7).astype(np.int64)  # sparse, not 0..n-1
    return x, ids, rng


def _brute(q, x, ids, allowed, k):
    m = np.isin(ids, allowed) if allowed is not None else np.ones(len(ids), bool)
    s = q @ x[m].T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, axis=1), ids[m][order]


def _same_up_to_ties(got_s, got_i, exp_s, exp_i):
    valid = exp_i >= 0
    n_exp = exp_s.shape[1]
    assert np.all(got_i[:, n_exp:] == -1) and np.all(np.isneginf(got_s[:, n_exp:]))
    np.testing.assert_allclose(got_s[:, :n_exp], exp_s, atol=1e-5)
    for gi, ei, gs, es in zip(got_i, exp_i, got_s, exp_s, strict=True):
        # ids may differ only where scores tie at the cut
        cut = es[-1] if len(es) else np.inf
        assert set(gi[: len(ei)][gs[: len(ei)] > cut + 1e-5]) == set(ei[es > cut + 1e-5])
    assert valid.all()


@pytest.mark.parametrize("factory", ["Flat", "HNSW32,Flat"])
@pytest.mark.parametrize("selectivity", [1.0, 0.3, 0.05, 0.01, 0.001, 0.0001])
def test_filtered_equals_brute_force(factory, selectivity):
    x, ids, rng = _data()
    # exact_max_rows small so the selector path is exercised too, not only the planner
    idx = FaissIndex.build(
        x.shape[1], [(ids, x)], factory=factory, exact_max_rows=200, ef_search=256
    )
    q = x[rng.choice(len(x), 8)] + 0.01
    k = 20
    for _trial in range(3):
        m = max(1, round(selectivity * len(ids)))
        allowed = rng.choice(ids, size=m, replace=False) if selectivity < 1 else None
        got_s, got_i = idx.search(q, k, allowed)
        exp_s, exp_i = _brute(q.astype(np.float32), x, ids, allowed, k)
        plan = idx.plan(None if allowed is None else m)
        if factory == "Flat" or plan == "exact-subset":
            _same_up_to_ties(got_s, got_i, exp_s, exp_i)
        else:  # HNSW on a wide filter: approximate, but recall must stay high
            rec = np.mean(
                [len(set(a) & set(b)) / len(b) for a, b in zip(got_i, exp_i, strict=True)]
            )
            assert rec >= 0.9, (plan, rec)
        if allowed is not None:
            assert np.isin(got_i[got_i >= 0], allowed).all()


def test_padding_errors_and_remove():
    x, ids, _ = _data(50)
    idx = FaissIndex.build(16, [(ids, x)])
    s, i = idx.search(x[0], 80)
    assert (i[0, 50:] == -1).all() and np.isneginf(s[0, 50:]).all() and i[0, 0] == ids[0]
    with pytest.raises(ValueError, match=r"shape \(n, 16\)"):
        idx.search(np.zeros((1, 8)), 3)
    with pytest.raises(ValueError, match="already"):
        idx.add(ids[:1], x[:1])
    assert idx.remove([ids[0], 10**9]) == 1 and idx.count() == 49
    assert ids[0] not in idx.search(x[0], 5)[1]
    s, i = idx.search(x[0], 5, allowed_ids=[ids[0]])
    assert (i == -1).all()


def test_hnsw_tombstones_and_compaction():
    x, ids, _ = _data(400)
    idx = FaissIndex.build(16, [(ids, x)], factory="HNSW32,Flat")
    idx.remove(ids[:50])
    assert idx.count() == 350 and ids[0] not in idx.search(x[0], 10)[1]
    idx.remove(ids[50:120])  # > 20 % tombstones: compacted
    assert idx.count() == 280 and idx._tombstones == set()
    assert idx.search(x[200], 1)[1][0, 0] == ids[200]


def test_choose_factory_rule():
    assert choose_factory(1000, 256) == "IDMap2,Flat"
    assert choose_factory(1_000_000, 256) == "IDMap2,Flat"  # exact up to 5 M rows
    assert choose_factory(4_999_999, 144) == "IDMap2,Flat"
    assert choose_factory(5_000_000, 144) == "IVF4096,SQfp16"
    assert choose_factory(10_000_000, 144) == "IVF4096,SQfp16"
    assert choose_factory(20_000_000, 144) == "IVF16384,SQfp16"


@pytest.mark.parametrize("factory", ["IVF64,SQ8,Refine(SQfp16)", "IVF64,SQ8,RFlat"])
def test_refine_factories_are_refused(factory):
    with pytest.raises(ValueError, match="refine"):
        FaissIndex(16, factory)


def _ivf_index(n=6000, nlist=16, **kwargs):
    x, ids, rng = _data(n)
    idx = FaissIndex.build(16, [(ids, x)], factory=f"IVF{nlist},SQfp16", **kwargs)
    assert idx.kind == "ivf"
    return idx, ids, rng


@pytest.mark.parametrize("plan", ["exact-subset", "selector"])
@pytest.mark.parametrize("selectivity", [0.5, 0.05, 0.003])
def test_ivf_filtered_equals_brute_force_over_own_vectors(plan, selectivity):
    # nprobe = nlist: the selector scan is exhaustive too, so both plans must be exact
    idx, ids, rng = _ivf_index(nprobe=16)
    own = idx.reconstruct(ids)  # the index's own (decoded) vectors
    q = own[rng.choice(len(ids), 6)] + 0.01
    k = 20
    m = max(1, round(selectivity * len(ids)))
    allowed = rng.choice(ids, size=m, replace=False)
    got_s, got_i = idx._search(q, k, allowed, force_plan=plan)
    exp_s, exp_i = _brute(q.astype(np.float32), own, ids, allowed, k)
    _same_up_to_ties(got_s, got_i, exp_s, exp_i)
    assert np.isin(got_i[got_i >= 0], allowed).all()


def test_ivf_plan_threshold_and_nprobe_boost():
    idx, ids, rng = _ivf_index(nlist=64, nprobe=2, ivf_exact_max_rows=300, ivf_scan_factor=4)
    assert idx.plan(None) == "full"
    assert idx.plan(300) == "exact-subset" and idx.plan(301) == "selector"
    # no boost while nprobe/nlist x n_allowed >= scan_factor x k; then ceil(4 k nlist / n)
    assert idx.ivf_nprobe(None, 20) == 2 and idx.ivf_nprobe(6000, 20) == 2
    assert idx.ivf_nprobe(1000, 20) == 6  # ceil(4 * 20 * 64 / 1000) = ceil(5.12)
    assert idx.ivf_nprobe(10, 20) == 64  # capped at nlist
    # without a filter the same rule holds over every live row: a large k probes more lists
    assert idx.ivf_nprobe(None, 10 * len(ids) // 64) > 2
    # the boosted selector search keeps recall on a narrow filter; exact-subset is exact
    own = idx.reconstruct(ids)
    q = own[rng.choice(len(ids), 8)] + 0.01
    for m in (1000, 300):
        allowed = rng.choice(ids, size=m, replace=False)
        _, got_i = idx.search(q, 20, allowed)
        _, exp_i = _brute(q.astype(np.float32), own, ids, allowed, 20)
        rec = np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got_i, exp_i, strict=True)])
        assert rec >= (1.0 if idx.plan(m) == "exact-subset" else 0.9), (m, rec)


@pytest.mark.parametrize("factory", ["Flat", "HNSW32,Flat", "IVF16,SQfp16"])
@pytest.mark.parametrize("m", [40, 2500])  # sparse path (sort + live lookup) / dense (mask)
def test_filter_input_forms_agree(factory, m):
    x, ids, rng = _data()
    idx = FaissIndex.build(16, [(ids, x)], factory=factory, ef_search=256, nprobe=16)
    idx.remove(ids[:100])  # HNSW: tombstones; Flat/IVF: physical removal
    live = ids[100:]
    own = idx.reconstruct(live)
    q = own[rng.choice(len(live), 5)] + 0.01
    allowed = np.sort(rng.choice(ids, size=m, replace=False))  # may include removed ids
    messy = np.concatenate([allowed[::-1], allowed[:7], [-5, 10**7, ids[0]]])
    for plan in ("exact-subset", "selector"):
        a_s, a_i = idx._search(q, 15, allowed, force_plan=plan)
        b_s, b_i = idx._search(q, 15, messy, force_plan=plan)
        np.testing.assert_array_equal(a_i, b_i)
        np.testing.assert_array_equal(a_s, b_s)
        assert not np.isin(a_i, ids[:100]).any()
    exp_s, exp_i = _brute(q, own, live, allowed, 15)
    got_s, got_i = idx._search(q, 15, allowed, force_plan="exact-subset")
    _same_up_to_ties(got_s, got_i, exp_s, exp_i)


def test_exact_subset_after_remove_compaction_and_load(tmp_path):
    x, ids, rng = _data(600)
    for factory in ("Flat", "HNSW32,Flat"):
        idx = FaissIndex.build(16, [(ids, x)], factory=factory)
        idx.remove(ids[10:40])
        if factory == "HNSW32,Flat":
            idx.remove(ids[40:200])  # > 20 % tombstones: compacted, storage rows renumbered
            assert idx._tombstones == set()
        p = tmp_path / f"{factory}.faiss"
        idx.snapshot(p)
        loaded, _ = FaissIndex.load(p)
        for j in (idx, loaded):
            live = j.ids()
            allowed = live[rng.choice(len(live), 50, replace=False)]
            q = x[:3] + 0.01
            got_s, got_i = j.search(q, 10, allowed)
            assert j.plan(len(allowed)) == "exact-subset"
            exp_s, exp_i = _brute(q, x, ids, allowed, 10)
            _same_up_to_ties(got_s, got_i, exp_s, exp_i)


@pytest.mark.parametrize("damage", ["truncate", "flip", "sidecar", "missing"])
def test_damaged_snapshot_is_refused(tmp_path, damage):
    x, ids, _ = _data(300)
    idx = FaissIndex.build(16, [(ids, x)], factory="HNSW32,Flat")
    idx.remove(ids[:3])
    p = tmp_path / "bf.faiss"
    idx.snapshot(p, {"seq": 9})
    j, side = FaissIndex.load(p)
    assert side["seq"] == 9 and j.count() == 297 and j.search(x[5], 1)[1][0, 0] == ids[5]
    raw = p.read_bytes()
    if damage == "truncate":
        p.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        p.write_bytes(raw[:1000] + bytes([raw[1000] ^ 0xFF]) + raw[1001:])
    elif damage == "sidecar":
        sidecar_path(p).write_text(json.dumps({"format": 1})[:5])
    else:
        p.unlink()
    with pytest.raises(SnapshotError):
        FaissIndex.load(p)


def test_ivf_snapshot_round_trip_keeps_planner_results(tmp_path):
    idx, ids, rng = _ivf_index(nprobe=16)
    idx.remove(ids[:20])
    p = tmp_path / "ivf.faiss"
    idx.snapshot(p)
    loaded, _ = FaissIndex.load(p)
    assert loaded.factory == "IVF16,SQfp16" and loaded.count() == len(ids) - 20
    assert loaded._pos.size == 0  # IVF keeps no id -> row table
    q = idx.reconstruct(ids[100:103])
    for m in (50, 3000):
        allowed = rng.choice(ids, size=m, replace=False)
        a_s, a_i = idx.search(q, 10, allowed)
        b_s, b_i = loaded.search(q, 10, allowed)
        np.testing.assert_array_equal(a_i, b_i)
        np.testing.assert_allclose(a_s, b_s, atol=1e-6)
        assert not np.isin(b_i, ids[:20]).any()
