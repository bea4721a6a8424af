"""Conditioning steps: each is pure, NaN-aware, records itself, and its parameters matter."""

from __future__ import annotations

import numpy as np
import pytest

from ballistics import BallisticsError, Scan
from ballistics import condition as C

SP = 6.25e-6


def _scan(seed: int = 0, n: int = 128, holes: bool = True) -> Scan:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n] * SP
    z = 2e-7 * rng.standard_normal((n, n)) + 3e-3 * xx - 1e-3 * yy + 5e-6
    mask = np.ones((n, n), bool)
    if holes:
        mask[40:60, 40:60] = False
    return Scan(np.where(mask, z, np.nan), mask, (SP, SP), "topography")


def test_level_removes_plane_robustly() -> None:
    s = _scan()
    s.data[10, 10] = 1e-3  # a spike must not tilt the fit
    out = C.level(s)
    assert out.provenance[-1].name == "level"
    coef = out.provenance[-1].stats["coefficients"]
    assert coef[1] == pytest.approx(3e-3, rel=0.02)
    assert coef[2] == pytest.approx(-1e-3, rel=0.05)
    assert np.all(np.isnan(out.data[~out.mask]))


def test_sphere_differs_from_plane_on_a_dome() -> None:
    n = 96
    yy, xx = (np.mgrid[0:n, 0:n] - n / 2) * SP
    z = -(xx**2 + yy**2) * 20.0
    s = Scan(z, np.ones_like(z, bool), (SP, SP), "topography")
    plane = np.nanstd(C.level(s, method="plane").data)
    sphere = np.nanstd(C.level(s, method="sphere").data)
    assert sphere < 0.05 * plane


def test_remove_outliers_masks_spikes_only() -> None:
    s = _scan(holes=False)
    s.data[5, 5] = 1e-3
    s.data[70, 90] = -1e-3
    out = C.remove_outliers(C.level(s))
    assert not out.mask[5, 5] and not out.mask[70, 90]
    assert out.provenance[-1].stats["removed_points"] < 20


def test_bandpass_cutoffs_change_output_and_respect_mask() -> None:
    s = C.level(_scan())
    a = C.bandpass(s, short_cutoff_um=16, long_cutoff_um=250)
    b = C.bandpass(s, short_cutoff_um=40, long_cutoff_um=250)
    c = C.bandpass(s, short_cutoff_um=16, long_cutoff_um=100)
    both = a.mask & b.mask & c.mask
    assert not np.allclose(a.data[both], b.data[both])
    assert not np.allclose(a.data[both], c.data[both])
    assert not a.mask[50, 50]  # the hole stays invalid
    assert np.std(b.data[both]) < np.std(a.data[both])  # a longer short cut-off smooths more
    with pytest.raises(BallisticsError, match="short_cutoff_um < long_cutoff_um"):
        C.bandpass(s, short_cutoff_um=300, long_cutoff_um=100)


def test_bandpass_is_nan_aware() -> None:
    s = C.level(_scan())
    poisoned = s.data.copy()
    poisoned[~s.mask] = 1.0  # garbage under the mask must not leak into valid points
    s2 = Scan(poisoned, s.mask, s.spacing_m, s.kind)
    a, b = C.bandpass(s), C.bandpass(s2)
    np.testing.assert_allclose(a.data[a.mask], b.data[b.mask])


def test_resample_to_common_spacing() -> None:
    s = Scan(np.ones((200, 200)), np.ones((200, 200), bool), (3.125e-6, 3.125e-6), "topography")
    out = C.resample(s, spacing_m=6.25e-6)
    assert out.shape == (100, 100)
    assert out.spacing_m == (6.25e-6, 6.25e-6)
    with pytest.raises(BallisticsError, match="metres"):
        C.resample(s, spacing_m=6.25)


def test_flatten_illumination_removes_shading() -> None:
    n = 128
    rng = np.random.default_rng(1)
    shade = np.linspace(0.2, 0.9, n)[None, :] * np.ones((n, 1))
    img = shade * (1 + 0.1 * rng.standard_normal((n, n)))
    s = Scan(img, np.ones_like(img, bool), (SP, SP), "image")
    out = C.flatten_illumination(s)
    left, right = out.data[:, 20:40][out.mask[:, 20:40]], out.data[:, 90:110][out.mask[:, 90:110]]
    assert abs(left.mean() - right.mean()) < 0.2
    with pytest.raises(BallisticsError, match="2-D images"):
        C.flatten_illumination(_scan())


def test_steps_are_pure() -> None:
    s = _scan()
    before = s.data.copy()
    C.bandpass(C.level(s))
    np.testing.assert_array_equal(np.isnan(before), np.isnan(s.data))
    np.testing.assert_array_equal(before[s.mask], s.data[s.mask])
    assert s.provenance == ()
