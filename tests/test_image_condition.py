"""2-D image conditioning: each step is pure, records itself, and its parameters matter."""

from __future__ import annotations

import numpy as np
import pytest

from ballistics import BallisticsError, Scan
from ballistics import image_condition as IC
from ballistics.pipeline import image_conditioning_for, prepare

SP = 5e-6


def _image(seed: int = 0, n: int = 160, holes: bool = True) -> Scan:
    rng = np.random.default_rng(seed)
    xx = np.mgrid[0:n, 0:n][1] * SP
    img = 0.4 + 0.05 * rng.standard_normal((n, n)) + 200.0 * xx  # texture + shading ramp
    img = np.clip(img, 0.0, 1.0)
    mask = np.ones((n, n), bool)
    if holes:
        mask[50:70, 60:90] = False
    return Scan(np.where(mask, img, np.nan), mask, (SP, SP), "image")


def test_equalise_ignores_any_monotone_camera_response() -> None:
    s = _image()
    gamma = Scan(s.data**0.45, s.mask, s.spacing_m, "image")
    exposed = Scan(np.minimum(3.0 * s.data, 10.0), s.mask, s.spacing_m, "image")
    a, b, c = IC.equalise(s), IC.equalise(gamma), IC.equalise(exposed)
    np.testing.assert_allclose(a.data[a.mask], b.data[b.mask], atol=1e-12)
    np.testing.assert_allclose(a.data[a.mask], c.data[c.mask], atol=1e-12)
    assert np.all(np.isnan(a.data[~a.mask]))
    assert abs(float(np.mean(a.data[a.mask]))) < 1e-6  # normal scores
    assert a.provenance[-1].name == "equalise"
    # without it, gamma changes the image
    assert not np.allclose(s.data[s.mask], gamma.data[gamma.mask])


def test_equalise_ties_share_a_score() -> None:
    s = _image()
    sat = Scan(np.minimum(s.data, 0.45), s.mask, s.spacing_m, "image")  # clipped glints tie
    out = IC.equalise(sat)
    tied = sat.mask & (sat.data >= 0.45)
    assert tied.sum() > 10
    assert np.ptp(out.data[tied]) == 0.0
    assert out.provenance[-1].stats["largest_tie_fraction"] == pytest.approx(
        tied.sum() / sat.mask.sum()
    )


def test_clip_robust_bounds_glints_and_sigma_matters() -> None:
    s = _image(holes=False)
    d = s.data.copy()
    d[5, 5] = 50.0
    s = Scan(d, s.mask, s.spacing_m, "image")
    tight, loose = IC.clip_robust(s, sigma=2.0), IC.clip_robust(s, sigma=6.0)
    assert tight.data.max() < loose.data.max() < 50.0
    assert (
        tight.provenance[-1].stats["clipped_fraction"]
        > loose.provenance[-1].stats["clipped_fraction"]
    )
    with pytest.raises(BallisticsError):
        IC.clip_robust(s, sigma=0.0)


def test_each_parameter_changes_the_conditioned_image() -> None:
    s = _image(1)
    base = IC.condition_image(s, IC.ImageConditioning())
    variants = [
        IC.ImageConditioning(short_cutoff_um=16.0),
        IC.ImageConditioning(short_cutoff_um=None),
        IC.ImageConditioning(long_cutoff_um=250.0),
        IC.ImageConditioning(equalise=True),
        IC.ImageConditioning(clip_sigma=1.5),
        IC.ImageConditioning(dent_threshold=1.0),  # a low threshold takes texture too
    ]
    for p in variants:
        out = IC.condition_image(s, p)
        both = base.mask & out.mask
        assert not np.allclose(base.data[both], out.data[both]), p
    full = IC.ImageConditioning(equalise=True, dent_threshold=4.0, clip_sigma=3.0)
    names = [st.name for st in IC.condition_image(s, full).provenance]
    assert names == ["mask_dent", "equalise", "flatten_illumination", "bandpass", "clip_robust"]


@pytest.mark.parametrize(
    "kw",
    [
        {"short_cutoff_um": 500.0, "long_cutoff_um": 400.0},
        {"short_cutoff_um": 0.0},
        {"long_cutoff_um": -1.0},
        {"clip_sigma": -2.0},
    ],
)
def test_invalid_conditioning_is_refused(kw: dict) -> None:
    with pytest.raises(BallisticsError):
        IC.ImageConditioning(**kw)


def test_topography_is_refused_with_a_pointer() -> None:
    s = _image()
    topo = Scan(s.data * 1e-6, s.mask, s.spacing_m, "topography")
    with pytest.raises(BallisticsError, match=r"ballistics\.condition"):
        IC.condition_image(topo)


def test_prepare_uses_the_image_conditioning() -> None:
    from ballistics.render import render_ring_light
    from ballistics.synth import fire, make_firearms

    scan, _ = fire(make_firearms(1, seed=5)[0], shot_seed=1)
    img = render_ring_light(scan)
    default = prepare(img)
    steps = {st.name: st.params for st in default.surface.provenance}
    assert steps["bandpass"]["short_cutoff_um"] == IC.DEFAULT_IMAGE_CONDITIONING.short_cutoff_um
    assert "equalise" not in steps
    assert ("mask_dent" in steps) == (IC.DEFAULT_IMAGE_CONDITIONING.dent_threshold is not None)
    eq = prepare(img, image_conditioning=IC.ImageConditioning(equalise=True))
    assert "equalise" in {st.name for st in eq.surface.provenance}
    old = prepare(img, short_cutoff_um=20.0, long_cutoff_um=300.0)
    steps = {st.name: st.params for st in old.surface.provenance}
    assert steps["bandpass"]["short_cutoff_um"] == 20.0
    assert steps["flatten_illumination"]["long_cutoff_um"] == 300.0
    # topographies ignore the image conditioning
    t1 = prepare(scan)
    t2 = prepare(scan, image_conditioning=IC.ImageConditioning(equalise=True))
    np.testing.assert_array_equal(t1.surface.data, t2.surface.data)


def test_image_conditioning_for_resolves_the_cutoffs() -> None:
    assert image_conditioning_for(16.0, 250.0) is IC.DEFAULT_IMAGE_CONDITIONING
    assert image_conditioning_for(30.0, None) == IC.ImageConditioning(
        30.0, IC.DEFAULT_IMAGE_CONDITIONING.long_cutoff_um
    )
    mine = IC.ImageConditioning(equalise=True)
    assert image_conditioning_for(30.0, 300.0, mine) is mine


def _dented(seed: int = 3, n: int = 200) -> tuple[Scan, np.ndarray]:
    """A primer-centred crop: texture, and an elongated dent whose dark wall and bright floor
    segmentation only half removed (an invalid disc on one end)."""
    rng = np.random.default_rng(seed)
    img = 0.5 + 0.03 * rng.standard_normal((n, n))
    rows, cols = np.indices((n, n), dtype=np.float64)
    c = (n - 1) / 2
    du = np.maximum(np.abs(cols - c) - 20.0, 0.0)  # stadium 2 x 20 px long, 12 px radius
    rho = np.hypot(du, rows - c) / 12.0
    img = np.where(rho < 1.0, 0.9, img)  # bright floor
    img = np.where((rho >= 1.0) & (rho < 1.4), 0.05, img)  # dark wall
    outside = np.hypot(rows - c, cols - c) > 0.48 * n
    mask = ~outside & ~(np.hypot(rows - c, cols - (c - 20.0)) < 14.0)
    dent = rho < 1.4
    return Scan(np.where(mask, img, np.nan), mask, (SP, SP), "image"), dent


def test_mask_dent_removes_what_segmentation_left_of_the_dent() -> None:
    s, dent = _dented()
    out = IC.mask_dent(s, threshold=4.0)
    left = s.mask & dent
    assert left.sum() > 200
    assert not (out.mask & dent).any()
    # the texture away from the dent stays
    far = s.mask & ~ndimage_dilate(dent, 36)  # the smoothed wall's tail + the 8-px margin
    assert (out.mask & far).sum() / far.sum() > 0.99
    assert out.provenance[-1].name == "mask_dent"
    # the parameter reaches the chain
    kept = IC.condition_image(s, IC.ImageConditioning(short_cutoff_um=None, dent_threshold=None))
    masked = IC.condition_image(s, IC.ImageConditioning(short_cutoff_um=None, dent_threshold=4.0))
    assert masked.mask.sum() < kept.mask.sum()


def test_mask_dent_leaves_a_dentless_image_alone() -> None:
    s = _image(2, holes=False)
    out = IC.mask_dent(s, threshold=4.0)
    assert out.mask.sum() / s.mask.sum() > 0.98


def ndimage_dilate(m: np.ndarray, k: int) -> np.ndarray:
    from scipy import ndimage

    return np.asarray(ndimage.binary_dilation(m, iterations=k))
