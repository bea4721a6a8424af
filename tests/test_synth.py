"""Synthetic casings: determinism, same-gun pattern repeatability, ground truth, corpus files."""

from __future__ import annotations

import csv
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from ballistics.render import render_oblique
from ballistics.synth import (
    CALIBERS,
    MANIFEST_COLUMNS,
    Firearm,
    Truth,
    corpus_plan,
    fire,
    gun_frame_coordinates,
    make_firearms,
    png16_with_phys,
)


def test_make_firearms_is_seeded_and_mixed() -> None:
    a = make_firearms(40, seed=3)
    b = make_firearms(40, seed=3)
    c = make_firearms(40, seed=4)
    assert a == b
    assert a != c
    assert len(a) == 40 and len({f.id for f in a}) == 40
    assert {f.fp_shape for f in a} == {"round", "elongated"}
    assert len({f.breech_pattern for f in a}) == 4
    assert len({f.caliber for f in a}) >= 2
    groups = [f.group for f in a if f.group is not None]
    assert groups, "expected some consecutive-manufacture groups"
    for g in set(groups):
        members = [f for f in a if f.group == g]
        assert len(members) >= 2
        assert len({(f.caliber, f.breech_pattern, f.fp_shape) for f in members}) == 1
        assert len({f.seed for f in members}) == len(members)


def test_firearm_validates() -> None:
    with pytest.raises(ValueError, match="caliber"):
        Firearm("x", "12ga", "arc", "round", (5e-4, 5e-4), 1)
    with pytest.raises(ValueError, match="fp_size_m"):
        Firearm("x", "9mm", "arc", "round", (1e-4, 5e-4), 1)


def test_fire_is_deterministic_and_consistent() -> None:
    fa = make_firearms(3, seed=11)[0]
    s1, t1 = fire(fa, shot_seed=5)
    s2, t2 = fire(fa, shot_seed=5)
    s3, _ = fire(fa, shot_seed=6)
    assert np.array_equal(s1.mask, s2.mask)
    assert np.array_equal(s1.data[s1.mask], s2.data[s2.mask])
    assert t1 == t2
    assert not np.array_equal(s1.mask, s3.mask)
    # shape, spacing, units
    assert s1.kind == "topography" and s1.spacing_m == (6.25e-6, 6.25e-6)
    m, n = s1.shape
    dia_px = CALIBERS[fa.caliber] / 6.25e-6
    assert 1.1 * dia_px < m < 1.3 * dia_px and m == n
    assert 0.9 < s1.valid_fraction < 0.995  # dropouts: a few per cent
    z = s1.data[s1.mask]
    assert np.nanmax(np.abs(z)) < 1e-3  # metres, not micrometres
    # ground truth in range and consistent with the surface
    assert isinstance(t1, Truth)
    pr, pc = t1.primer_center
    assert 0 <= pr < m and 0 <= pc < n
    assert abs(t1.primer_radius_px - dia_px / 2) < 0.01 * dia_px
    assert math.hypot(pr - t1.fp_center[0], pc - t1.fp_center[1]) < 0.2e-3 / 6.25e-6
    assert 0 <= t1.rotation_deg < 360
    # the firing pin is the deepest place; the case head is above the primer
    fr, fc = (round(v) for v in t1.fp_center)
    pin = s1.masked()[fr - 3 : fr + 4, fc - 3 : fc + 4]
    head = s1.masked()[:20, :20]
    ring = s1.masked()[int(pr) - 3 : int(pr) + 4, int(pc + 0.7 * t1.primer_radius_px)]
    assert np.nanmedian(pin) < np.nanmedian(ring) - 0.1e-3
    assert np.nanmedian(ring) < np.nanmedian(head) - 10e-6


def test_spacing_changes_pixels_not_geometry() -> None:
    fa = make_firearms(3, seed=12)[1]
    a, ta = fire(fa, shot_seed=1, spacing_m=6.25e-6)
    b, tb = fire(fa, shot_seed=1, spacing_m=3.125e-6)
    assert b.shape[0] == pytest.approx(2 * a.shape[0], abs=4)
    assert tb.primer_radius_px == pytest.approx(2 * ta.primer_radius_px)
    assert ta.rotation_deg == tb.rotation_deg


def _gun_frame_patch(scan, truth: Truth, half_m: float = 1.6e-3, step_m: float = 12.5e-6):
    """Resample the breech-face area into the gun frame and band-pass it (NaN outside)."""
    ax = np.arange(-half_m, half_m + step_m / 2, step_m)
    gx, gy = np.meshgrid(ax, ax)
    rows, cols = gun_frame_coordinates(truth, gx, gy)
    z = np.where(scan.mask, scan.data, 0.0)
    w = scan.mask.astype(float)
    zi = ndimage.map_coordinates(z, [rows, cols], order=1, cval=0.0)
    wi = ndimage.map_coordinates(w, [rows, cols], order=1, cval=0.0)
    r = np.hypot(gx, gy)
    keep = (wi > 0.99) & (r > 1.0e-3) & (r < 1.55e-3)
    zi = np.where(keep, zi, 0.0)
    kw = keep.astype(float)
    lo = ndimage.gaussian_filter(zi, 4) / np.maximum(ndimage.gaussian_filter(kw, 4), 1e-6)
    hp = np.where(keep, zi - lo, np.nan)
    return hp


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    x, y = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    return float((x * y).sum() / math.sqrt((x * x).sum() * (y * y).sum()))


def test_same_gun_same_pattern_after_undoing_rotation() -> None:
    guns = [
        Firearm("A", "9mm", "granular", "round", (6e-4, 6e-4), 101, texture_amplitude_m=2e-6),
        Firearm("B", "9mm", "granular", "round", (6e-4, 6e-4), 202, texture_amplitude_m=2e-6),
    ]
    sa1, ta1 = fire(guns[0], shot_seed=1)
    sa2, ta2 = fire(guns[0], shot_seed=2, spacing_m=3.125e-6)
    sb1, tb1 = fire(guns[1], shot_seed=1)
    assert abs(ta1.rotation_deg - ta2.rotation_deg) > 5  # genuinely rotated
    pa1 = _gun_frame_patch(sa1, ta1)
    pa2 = _gun_frame_patch(sa2, ta2)
    pb1 = _gun_frame_patch(sb1, tb1)
    same = _corr(pa1, pa2)
    diff = _corr(pa1, pb1)
    # measured: same ~0.6-0.8 (partial contact, primer roughness), different ~0.0
    assert same > 0.5, same
    assert abs(diff) < 0.15, diff


def test_consecutive_slides_share_subclass_marks() -> None:
    fas = [f for f in make_firearms(40, seed=5) if f.group is not None][:2]
    assert fas[0].group == fas[1].group
    s1, t1 = fire(fas[0], shot_seed=1)
    s2, t2 = fire(fas[1], shot_seed=1)
    c = _corr(_gun_frame_patch(s1, t1), _gun_frame_patch(s2, t2))
    assert 0.15 < c < 0.7, c  # shared half of the texture, but not the same gun


def test_render_oblique_is_an_image() -> None:
    fa = make_firearms(2, seed=1)[0]
    s, _ = fire(fa, shot_seed=1)
    img = render_oblique(s, azimuth_deg=45, elevation_deg=25)
    assert img.kind == "image" and img.shape == s.shape and img.spacing_m == s.spacing_m
    v = img.data[img.mask]
    assert 0.0 <= v.min() and v.max() <= 1.0 and v.std() > 0.01
    assert img.provenance[-1].name == "render_oblique"


def test_png_phys_chunk() -> None:
    img = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20).astype(np.uint16)
    data = png16_with_phys(img, (6.25e-6, 6.25e-6))
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    i = data.index(b"pHYs")
    length = struct.unpack(">I", data[i - 4 : i])[0]
    body = data[i : i + 4 + length]
    ppx, ppy, unit = struct.unpack(">IIB", body[4:])
    assert (ppx, ppy, unit) == (160000, 160000, 1)
    assert struct.unpack(">I", data[i + 4 + length : i + 8 + length])[0] == zlib.crc32(body)
    import cv2

    back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and np.array_equal(back, img)


def test_corpus_plan_spacing_variety() -> None:
    plan = corpus_plan(guns=30, shots=3, seed=2)
    sp = np.array([p[2] for p in plan])
    frac_fine = float(np.mean(sp == 3.125e-6))
    assert 0.08 < frac_fine < 0.35 and np.mean(sp == 6.25e-6) > 0.6
    assert plan == corpus_plan(guns=30, shots=3, seed=2)


def test_write_corpus(tmp_path: Path) -> None:
    pytest.importorskip("ballistics.x3p")
    from ballistics.synth import write_corpus

    manifest = write_corpus(
        tmp_path / "c", guns=2, shots=2, seed=7, png=True, spacing_choices=((12.5e-6, 1.0),)
    )
    rows = list(csv.DictReader(manifest.read_text().splitlines()))
    assert tuple(rows[0].keys()) == MANIFEST_COLUMNS
    assert len(rows) == 2 * 2 * 2
    files = {r["file"] for r in rows}
    assert sum(f.endswith(".x3p") for f in files) == 4
    assert sum(f.endswith(".png") for f in files) == 4
    for f in files:
        assert (manifest.parent / f).stat().st_size > 1000
    assert len({r["firearm_id"] for r in rows}) == 2
    # deterministic
    m2 = write_corpus(
        tmp_path / "d", guns=2, shots=2, seed=7, png=False, spacing_choices=((12.5e-6, 1.0),)
    )
    rows2 = list(csv.DictReader(m2.read_text().splitlines()))
    assert [r for r in rows if r["file"].endswith(".x3p")] == rows2
    # round trip through the X3P reader
    from ballistics.x3p import read_x3p

    x3 = sorted(manifest.parent.glob("*.x3p"))[0]
    scan = read_x3p(x3)
    fa = next(f for f in make_firearms(2, seed=7) if x3.name.startswith(f.id))
    shot = int(x3.stem.rsplit("-", 1)[1]) - 1
    ref, _ = fire(fa, shot_seed=7 * 1000003 + shot, spacing_m=12.5e-6)
    assert scan.shape == ref.shape
    assert np.array_equal(scan.mask, ref.mask)
    assert np.allclose(scan.data[scan.mask], ref.data[ref.mask], atol=1e-9)


def test_png_with_invalid_pixels_carries_them_as_alpha(tmp_path) -> None:
    from ballistics.io import read_scan

    img = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20 + 100).astype(np.uint16)
    valid = np.ones(img.shape, bool)
    valid[5:15, 20:30] = False
    path = tmp_path / "a.png"
    path.write_bytes(png16_with_phys(img, (6.25e-6, 6.25e-6), valid=valid))
    back = read_scan(path)
    np.testing.assert_array_equal(back.mask, valid)
    np.testing.assert_allclose(back.data[valid], img[valid] / 65535.0, atol=1e-6)
    with pytest.raises(ValueError):
        png16_with_phys(img, (6.25e-6, 6.25e-6), valid=valid[:10])
