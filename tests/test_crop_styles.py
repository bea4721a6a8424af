"""The synthetic cropping styles: geometry and ground truth carried into the new pixels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ballistics.crop_styles import (
    VARIANTS,
    annulus_pin_invalid,
    breech_face_pin_present,
    disc_fov,
    pin_partly_invalid,
    scale_pin_depth,
    styled_variants,
)
from ballistics.synth import corpus_plan, fire


@pytest.fixture(scope="module")
def raw():
    fa, ss, _ = corpus_plan(guns=1, shots=1, seed=5)[0]
    return fire(fa, shot_seed=ss, spacing_m=7.5e-6)


def _valid_radius(s, center):
    rows, cols = np.nonzero(s.scan.mask)
    return float(np.max(np.hypot(rows - center[0], cols - center[1])))


def test_disc_fov_radius_and_truth_shift(raw) -> None:
    scan, tr = raw
    s = disc_fov(scan, tr, radius_factor=1.15, offset_px=(5.0, -3.0))
    assert s.style == "disc_fov" and s.variant == "disc_fov_wide"
    # the array is cropped: the truth moves with it, and the same surface point stays there
    assert s.scan.shape[0] < scan.shape[0] or s.scan.shape[1] < scan.shape[1]
    shift = (tr.primer_center[0] - s.primer_center[0], tr.primer_center[1] - s.primer_center[1])
    assert shift == pytest.approx(
        (tr.fp_center[0] - s.fp_center[0], tr.fp_center[1] - s.fp_center[1])
    )
    r, c = round(s.fp_center[0]), round(s.fp_center[1])
    r0, c0 = round(shift[0]), round(shift[1])
    if s.scan.mask[r, c]:
        assert s.scan.data[r, c] == scan.data[r + r0, c + c0]
    disc_c = (s.primer_center[0] + 5.0, s.primer_center[1] - 3.0)
    assert _valid_radius(s, disc_c) <= 1.15 * tr.primer_radius_px + 1
    narrow = disc_fov(scan, tr, radius_factor=0.97, offset_px=(20.0, 0.0))
    assert narrow.variant == "disc_fov_narrow"


def test_annulus_masks_the_pin_and_keeps_it_for_breech_face(raw) -> None:
    scan, tr = raw
    c = annulus_pin_invalid(scan, tr, radius_factor=0.8, pin_margin=1.3)
    d = breech_face_pin_present(scan, tr, radius_factor=0.8)
    for s in (c, d):
        assert _valid_radius(s, s.primer_center) <= 0.8 * tr.primer_radius_px + 1
    fr, fc = (round(v) for v in c.fp_center)
    assert not c.scan.mask[fr, fc]  # pin hole invalid
    assert d.scan.mask[fr - 2 : fr + 3, fc - 2 : fc + 3].any()  # pin present
    assert c.scan.mask.sum() < d.scan.mask.sum()


def test_pin_depth_and_partial_pin(raw) -> None:
    scan, tr = raw
    d = breech_face_pin_present(scan, tr)
    fr, fc = (round(v) for v in d.fp_center)
    win = (slice(fr - 5, fr + 6), slice(fc - 5, fc + 6))
    deep0 = np.nanmedian(d.scan.masked()[win])
    shallow = scale_pin_depth(d, tr, depth_factor=0.3)
    absent = scale_pin_depth(d, tr, depth_factor=0.0)
    ring = np.nanmedian(d.scan.masked()[fr - 5 : fr + 6, fc + int(1.6 * tr.fp_axes_px[0])])
    depth = ring - deep0
    assert depth > 100e-6
    assert ring - np.nanmedian(shallow.scan.masked()[win]) == pytest.approx(0.3 * depth, rel=0.2)
    assert abs(ring - np.nanmedian(absent.scan.masked()[win])) < 0.05 * depth
    assert shallow.pin_expected and not absent.pin_expected
    part = pin_partly_invalid(d, tr, cut_angle_deg=90.0, cut_offset=0.0)
    lost = d.scan.mask & ~part.scan.mask
    rows, _ = np.nonzero(lost)
    assert lost.any() and (rows >= fr - 1).all()  # only the +row side (normal along +y)


def test_styled_variants_seeded_and_complete(raw) -> None:
    scan, tr = raw
    a = styled_variants(scan, tr, seed=3)
    b = styled_variants(scan, tr, seed=3)
    assert [s.variant for s in a] == list(VARIANTS)
    for x, y in zip(a, b, strict=True):
        assert x.params == y.params and np.array_equal(x.scan.mask, y.scan.mask)
    assert styled_variants(scan, tr, seed=4)[1].params != a[1].params
    for s in a:
        m, n = s.scan.shape
        assert 0 <= s.primer_center[0] < m and 0 <= s.primer_center[1] < n
        assert math.isfinite(s.primer_radius_px)
    with pytest.raises(ValueError, match="unknown crop variants"):
        styled_variants(scan, tr, seed=1, variants=("nope",))


def test_absent_pin_leaves_no_wall_dropouts() -> None:
    """A confocal scan drops the pin's steep walls out a little beyond the impression; with
    the dent removed they made an enclosed hole that segmentation rightly took for a firing
    pin (44 % of pin_absent crops). The whole replaced disc is now measured."""
    from dataclasses import replace as dc_replace

    from ballistics.instruments import INSTRUMENTS, instrument_rng, record
    from ballistics.segment import segment
    from ballistics.synth import fired_surface, make_firearms

    fa = next(f for f in make_firearms(40, seed=5) if f.fp_shape == "round")
    shot = 5 * 1000
    surface = fired_surface(fa, shot_seed=shot, spacing_m=6.25e-6)
    scan, tr = record(
        surface,
        "confocal",
        rng=instrument_rng(fa.seed, shot, "confocal"),
        params=dc_replace(INSTRUMENTS["confocal"].params, pixel_um=6.25),
    )
    (absent,) = styled_variants(scan, tr, seed=shot, variants=("disc_fov_wide+pin_absent",))
    assert not absent.pin_expected
    yy, xx = np.mgrid[: absent.scan.shape[0], : absent.scan.shape[1]]
    near = np.hypot(yy - absent.fp_center[0], xx - absent.fp_center[1]) < 1.15 * tr.fp_axes_px[1]
    assert absent.scan.mask[near].all()
    assert not segment(absent.scan).firing_pin_found
