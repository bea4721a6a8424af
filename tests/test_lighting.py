"""Light-aware 2-D comparison (ballistics.lighting) on seeded synthetic casings: light
detection, the pseudo-height's independence of the light side, side-lit pairs at 180 and 90
degrees, flags, and every documented parameter has an effect."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ballistics import BallisticsError, Scan, lighting
from ballistics.compare import compare
from ballistics.pipeline import PreparedCasing, prepare
from ballistics.render import render_ring_light
from ballistics.synth import Truth, fire, make_firearms


def _gun(pattern: str, seed: int = 5):
    return next(g for g in make_firearms(12, seed=seed) if g.breech_pattern == pattern)


@pytest.fixture(scope="module")
def pair() -> tuple[tuple[Scan, Truth], tuple[Scan, Truth]]:
    """Two shots of one gun with crosshatch marks (texture in two directions)."""
    g = _gun("crosshatch")
    return fire(g, shot_seed=1), fire(g, shot_seed=2)


@pytest.fixture(scope="module")
def parallel_pair() -> tuple[tuple[Scan, Truth], tuple[Scan, Truth]]:
    """Two shots of one gun with parallel (single-direction) marks."""
    g = _gun("parallel")
    return fire(g, shot_seed=1), fire(g, shot_seed=2)


def _corr(a: PreparedCasing, b: PreparedCasing, shift: tuple[int, int] = (0, 0)) -> float:
    """Correlation of two canvases, b shifted by ``shift`` (rows, cols) pixels."""
    n = min(a.surface.shape[0], b.surface.shape[0])
    db = np.roll(np.where(b.surface.mask, b.surface.data, 0.0)[:n, :n], shift, axis=(0, 1))
    mb = np.roll(b.surface.mask[:n, :n], shift, axis=(0, 1))
    m = a.surface.mask[:n, :n] & mb
    return float(np.corrcoef(a.surface.data[:n, :n][m], db[m])[0, 1])


def _aligned(a: PreparedCasing, b: PreparedCasing) -> tuple[int, int]:
    """The shift (within +-3 px) that best aligns b on a: two segmentations of one casing
    may centre their canvases a pixel or two apart."""
    shifts = [(i, j) for i in range(-3, 4) for j in range(-3, 4)]
    return max(shifts, key=lambda s: abs(_corr(a, b, s)))


# --- detection -------------------------------------------------------------------------


@pytest.mark.parametrize("azimuth", [20.0, 137.0, 250.0])
def test_detects_side_light_and_its_azimuth(pair, azimuth: float) -> None:
    scan, _ = pair[0]
    img = lighting.render_side_light(scan, azimuth, 30.0, noise=0.02, seed=3)
    est = lighting.detect_light(img)
    assert est.kind == "side"
    assert est.source == "detected"
    err = abs((est.azimuth_deg - azimuth + 180.0) % 360.0 - 180.0)
    assert err < 5.0, (est.azimuth_deg, azimuth)


@pytest.mark.parametrize(
    "render",
    [
        lambda s: render_ring_light(s),
        lambda s: lighting.render_ring(s, 40.0, azimuths=8, specular=0.4, noise=0.02),
    ],
)
def test_detects_ring_light_as_ring(pair, render) -> None:
    scan, _ = pair[0]
    est = lighting.detect_light(render(scan))
    assert est.kind == "ring"
    assert est.azimuth_deg is None


def test_detection_threshold_changes_the_kind(pair) -> None:
    img = lighting.render_side_light(pair[0][0], 60.0)
    est = lighting.detect_light(img)
    assert est.kind == "side"
    assert lighting.detect_light(img, threshold=est.strength + 0.01).kind == "ring"


def test_metadata_overrides_detection(pair) -> None:
    img = render_ring_light(pair[0][0])
    side = lighting.prepare_image(img, light=123.0)
    assert side.light.kind == "side"
    assert side.light.azimuth_deg == pytest.approx(123.0)
    assert side.light.source == "metadata"
    assert side.height is not None
    assert lighting.prepare_image(img, light="ring").light.kind == "ring"
    assert lighting.prepare_image(img, light="-90").light.azimuth_deg == pytest.approx(270.0)


def test_bad_light_metadata_and_kinds_are_refused(pair) -> None:
    scan, _ = pair[0]
    with pytest.raises(BallisticsError, match="azimuth in degrees"):
        lighting.prepare_image(render_ring_light(scan), light="north")
    with pytest.raises(BallisticsError, match="2-D image"):
        lighting.detect_light(scan)
    with pytest.raises(BallisticsError, match="2-D image"):
        lighting.prepare_image(scan)
    with pytest.raises(BallisticsError, match="azimuth"):
        lighting.LightEstimate("side")


# --- pseudo-height -----------------------------------------------------------------------


def test_pseudo_height_does_not_invert_with_the_light(pair) -> None:
    """The same casing lit from opposite sides: the flattened shading inverts, the
    pseudo-heights agree."""
    scan, _ = pair[0]
    a = prepare(lighting.render_side_light(scan, 30.0))
    b = prepare(lighting.render_side_light(scan, 210.0))
    ha, hb = lighting.pseudo_height(a, 30.0), lighting.pseudo_height(b, 210.0)
    at = _aligned(ha, hb)
    assert _corr(a, b, at) < -0.3
    assert _corr(ha, hb, at) > 0.6
    # With the wrong light side the recovered height is inverted.
    assert _corr(ha, lighting.pseudo_height(b, 30.0), at) < -0.6


def test_integration_cutoff_changes_the_pseudo_height(pair) -> None:
    p = prepare(lighting.render_side_light(pair[0][0], 30.0))
    short = lighting.pseudo_height(p, 30.0, integration_cutoff_um=60.0).surface
    long = lighting.pseudo_height(p, 30.0, integration_cutoff_um=500.0).surface
    assert not np.allclose(short.data[short.mask], long.data[long.mask])
    with pytest.raises(BallisticsError, match="integration_cutoff_um"):
        lighting.pseudo_height(p, 30.0, integration_cutoff_um=0.0)


def test_texture_directions_find_parallel_marks(parallel_pair) -> None:
    """Parallel marks put their energy in a few 5-degree bins; the band changes the result."""
    p = prepare(parallel_pair[0][0])
    d = lighting.texture_directions(p)
    assert d.shape == (36,)
    assert d.sum() == pytest.approx(1.0)
    assert np.sort(d)[-3:].sum() > 0.3
    assert not np.allclose(d, lighting.texture_directions(p, band_um=(100.0, 250.0)))


def test_common_texture_of_isotropic_texture() -> None:
    flat = np.full(36, 1.0 / 36)
    c = lighting.common_texture(flat, 0.0, flat, 0.0, np.array([0.0, 90.0, 180.0]))
    np.testing.assert_allclose(c, [0.75, 0.25, 0.75], atol=0.01)
    assert lighting.comparable_fraction(flat, 0.0, flat, 70.0) == 1.0


# --- comparison --------------------------------------------------------------------------


def _lights_for(ta: Truth, tb: Truth, light_a: float, relative_deg: float) -> tuple[float, float]:
    """Image-frame azimuths putting b's light ``relative_deg`` from a's in the casing frame."""
    return light_a, light_a + relative_deg + (tb.rotation_deg - ta.rotation_deg)


def test_opposite_lights_match_where_the_plain_comparison_fails(pair) -> None:
    (sa, ta), (sb, tb) = pair
    la, lb = _lights_for(ta, tb, 40.0, 180.0)
    ia, ib = lighting.render_side_light(sa, la), lighting.render_side_light(sb, lb)
    plain = compare(prepare(ia), prepare(ib))
    assert plain.score < lighting.DECISIVE_SCORE  # today: scored as a non-match
    res = lighting.compare_images(ia, ib)
    assert res.method == "pseudo_height"
    assert res.score >= lighting.DECISIVE_SCORE + 0.5
    assert res.comparison.cmc >= 20
    assert res.flags == ()
    assert res.relative_light_deg == pytest.approx(180.0, abs=5.0)
    # Same result with the light given as metadata.
    meta = lighting.compare_images(ia, ib, light_a=la, light_b=lb)
    assert meta.score >= lighting.DECISIVE_SCORE + 0.5
    assert meta.light_a.source == "metadata"


def test_lights_at_right_angles_to_parallel_marks_are_flagged(parallel_pair) -> None:
    """a lit along the marks' wavevector, b (in the casing frame) along the marks: b shows
    next to nothing, so the low score is flagged rather than reported as a non-match."""
    (sa, ta), (sb, tb) = parallel_pair
    d = lighting.texture_directions(prepare(sa))
    along = (float(np.argmax(d)) + 0.5) * 5.0
    la, lb = _lights_for(ta, tb, along, 90.0)
    res = lighting.compare_images(
        lighting.render_side_light(sa, la), lighting.render_side_light(sb, lb)
    )
    assert res.score < lighting.DECISIVE_SCORE
    assert lighting.FLAG_INCOMPATIBLE in res.flags
    assert res.comparable_fraction is not None
    assert res.comparable_fraction < lighting.MIN_COMPARABLE_FRACTION
    # The flag's parameters work: a lower bar on the comparable fraction lifts it.
    a = lighting.prepare_image(lighting.render_side_light(sa, la))
    b = lighting.prepare_image(lighting.render_side_light(sb, lb))
    assert lighting.compare_lit(a, b, min_comparable_fraction=0.0).flags == ()
    assert lighting.compare_lit(a, b, min_common=0.0).flags == ()
    assert lighting.compare_lit(a, b, decisive_score=0.0).flags == ()


def test_different_guns_with_compatible_lights_are_not_flagged(pair) -> None:
    (sa, _), _ = pair
    other = _gun("granular", seed=7)
    sb, _ = fire(other, shot_seed=4)
    res = lighting.compare_images(
        lighting.render_side_light(sa, 10.0), lighting.render_side_light(sb, 200.0)
    )
    assert res.score < lighting.DECISIVE_SCORE
    assert res.flags == ()


def test_ring_lit_pair_is_the_plain_comparison_and_ring_vs_side_is_flagged(pair) -> None:
    (sa, _), (sb, _) = pair
    ra, rb = render_ring_light(sa), render_ring_light(sb)
    res = lighting.compare_images(ra, rb)
    assert res.method == "plain"
    assert res.score == pytest.approx(compare(prepare(ra), prepare(rb)).score)
    assert res.score >= lighting.DECISIVE_SCORE
    mixed = lighting.compare_images(ra, lighting.render_side_light(sb, 30.0))
    assert mixed.flags == (lighting.FLAG_KINDS_DIFFER,)
    assert mixed.as_dict()["flags"] == [lighting.FLAG_KINDS_DIFFER]


# --- shading models ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"elevation_deg": 50.0},
        {"specular": 0.5},
        {"shininess": 5.0, "specular": 0.5},
        {"ambient": 0.3},
        {"gamma": 0.6},
        {"exposure": 1.5},
        {"noise": 0.05},
    ],
)
def test_every_side_light_parameter_changes_the_image(pair, kwargs) -> None:
    scan, _ = pair[0]
    base = lighting.render_side_light(scan, 30.0, specular=0.5 if "shininess" in kwargs else 0.0)
    other = lighting.render_side_light(scan, 30.0, **kwargs)
    assert not np.allclose(base.data[base.mask], other.data[other.mask])


def test_side_light_azimuth_and_noise_seed_change_the_image(pair) -> None:
    scan, _ = pair[0]
    a = lighting.render_side_light(scan, 30.0, noise=0.05, seed=1)
    assert not np.allclose(
        a.data[a.mask], lighting.render_side_light(scan, 31.0, noise=0.05, seed=1).data[a.mask]
    )
    assert not np.allclose(
        a.data[a.mask], lighting.render_side_light(scan, 30.0, noise=0.05, seed=2).data[a.mask]
    )
    np.testing.assert_array_equal(
        a.data[a.mask], lighting.render_side_light(scan, 30.0, noise=0.05, seed=1).data[a.mask]
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"elevation_deg": 50.0},
        {"azimuths": 5},
        {"nonuniformity": 0.3},
        {"specular": 0.5},
        {"gamma": 0.6},
        {"exposure": 1.5},
        {"noise": 0.05},
        {"ambient": 0.3},
    ],
)
def test_every_ring_parameter_changes_the_image(pair, kwargs) -> None:
    scan, _ = pair[0]
    base = lighting.render_ring(scan)
    other = lighting.render_ring(scan, **kwargs)
    assert not np.allclose(base.data[base.mask], other.data[other.mask])


def test_renderers_refuse_bad_input(pair) -> None:
    scan, _ = pair[0]
    img = render_ring_light(scan)
    with pytest.raises(BallisticsError, match="topography"):
        lighting.render_side_light(img, 0.0)
    with pytest.raises(BallisticsError, match="azimuths"):
        lighting.render_ring(scan, azimuths=2)
    with pytest.raises(BallisticsError, match="nonuniformity"):
        lighting.render_ring(scan, nonuniformity=1.0)
    with pytest.raises(BallisticsError, match="gamma"):
        lighting.render_side_light(scan, 0.0, gamma=0.0)
    assert math.isfinite(float(np.nanmean(img.data)))
