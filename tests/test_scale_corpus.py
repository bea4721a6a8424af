"""The scale benchmark's distractor generator (benchmarks/scale_corpus.py) and its helpers."""

from __future__ import annotations

import numpy as np
import pytest

from ballistics.descriptors import DESCRIPTOR_DIMS
from ballistics.screen import SIGNATURE_SHAPE, screen
from benchmarks import scale_corpus as sc
from benchmarks.scale import screen_all, spectra, survival, tail_p


def test_deterministic_per_seed() -> None:
    a, b = sc.draw(7, 4), sc.draw(7, 4)
    assert np.array_equal(a.data, b.data) and np.array_equal(a.mask, b.mask)
    assert a.meta == b.meta
    da, sa = sc.features(sc.prepared(7, 4))
    db, sb = sc.features(sc.prepared(7, 4))
    assert np.array_equal(da, db) and np.array_equal(sa, sb)


def test_shapes_dtypes_and_normalisation() -> None:
    for i in range(len(sc.FLAVOUR_NAMES)):
        d = sc.draw(3, i)
        assert d.meta["flavour"] == sc.FLAVOUR_NAMES[i]
        assert d.data.shape == d.mask.shape == (sc.CANVAS, sc.CANVAS)
        assert d.data.dtype == np.float32 and d.mask.dtype == bool
        assert np.isfinite(d.data).all() and not d.data[~d.mask].any()
        # an annulus: roughly half the canvas valid, the centre (pin hole) invalid
        assert 0.35 < d.mask.mean() < 0.7 and not d.mask[sc.CANVAS // 2, sc.CANVAS // 2]
        desc, sig = sc.features(sc.prepared(3, i))
        assert desc.shape == (DESCRIPTOR_DIMS["breech_face"],) and desc.dtype == np.float32
        assert sig.shape == SIGNATURE_SHAPE and sig.dtype == np.float32
        assert np.linalg.norm(desc) == pytest.approx(1.0, abs=1e-5)
        assert np.linalg.norm(sig) == pytest.approx(1.0, abs=1e-5)


def test_distractors_differ() -> None:
    feats = [sc.features(sc.prepared(s, i)) for s, i in ((7, 0), (7, 1), (7, 3), (8, 0))]
    for a in range(len(feats)):
        for b in range(a + 1, len(feats)):
            assert not np.array_equal(feats[a][0], feats[b][0])
            # not near-duplicates either: a duplicate would screen at ~1
            assert screen(feats[a][1], feats[b][1][None])[0][0] < 0.9


def test_screen_all_is_the_screen() -> None:
    rng = np.random.default_rng(0)
    sigs = rng.standard_normal((9, *SIGNATURE_SHAPE)).astype(np.float32)
    got = screen_all(sigs[0], spectra(sigs), chunk=4)
    assert np.allclose(got, screen(sigs[0], sigs)[0], atol=1e-4)


def test_tail_fit_and_survival() -> None:
    x = np.random.default_rng(1).standard_normal(10_000)
    assert tail_p(x, 2.0, 100) == pytest.approx((x > 2.0).mean())  # empirical where data exist
    far = tail_p(x, 5.0, 100)  # beyond every sample: extrapolated, small but positive
    assert 0 < far < 1e-4
    assert survival([0.0], 10**6, 200) == 1.0
    assert survival([1e-3], 10**6, 200) < 1e-6
