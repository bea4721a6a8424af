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
    assert "HNSW32" in choose_factory(1_000_000, 256)
    assert choose_factory(20_000_000, 256).startswith("IVF")


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
