"""The comparison picture: three aligned panels, cells outlined, missing data visible."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ballistics.compare import Comparison, compare
from ballistics.picture import (
    CONGRUENT,
    MISSING,
    OTHER_CELL,
    _canvas,
    comparison_image,
    comparison_png,
    write_comparison_png,
)
from ballistics.pipeline import PreparedCasing, prepare
from ballistics.register import rotate
from ballistics.scan import Scan
from ballistics.synth import fire, make_firearms

_GAP = 8


@pytest.fixture(scope="module")
def prepared() -> dict[str, PreparedCasing]:
    fa = make_firearms(2, seed=1)
    out = {}
    for name, gun, shot in (("g0a", fa[0], 1), ("g0b", fa[0], 2), ("g1", fa[1], 3)):
        scan, _ = fire(gun, shot_seed=shot)
        out[name] = prepare(scan)
    return out


@pytest.fixture(scope="module")
def same(prepared: dict[str, PreparedCasing]) -> Comparison:
    return compare(prepared["g0a"], prepared["g0b"])


def _moved_copy(p: PreparedCasing, angle: float, shift: tuple[float, float]) -> PreparedCasing:
    s = p.surface
    d, m = rotate(np.where(s.mask, s.data, 0.0), s.mask, angle, shift)
    surf = Scan(np.where(m, d.astype(np.float64), np.nan), m, s.spacing_m, s.kind)
    return PreparedCasing(surf, dict(p.segmentation), None)


def _panels(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    size = (img.shape[1] - 2 * _GAP) // 3
    top = img[:size]
    return (
        top[:, :size],
        top[:, size + _GAP : 2 * size + _GAP],
        top[:, 2 * size + 2 * _GAP :],
        size,
    )


def test_png_is_three_panels_with_text(prepared, same: Comparison) -> None:
    raw = comparison_png(prepared["g0a"], prepared["g0b"], same, title="A: x  B: y")
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    h, w = img.shape[:2]
    size = (w - 2 * _GAP) // 3
    assert w == 3 * size + 2 * _GAP
    assert size < h < size + 250  # panels plus a text strip
    assert 2.2 < w / h < 3.3
    # Same inputs, same bytes; inputs untouched.
    before = prepared["g0a"].surface.data.copy()
    assert comparison_png(prepared["g0a"], prepared["g0b"], same, title="A: x  B: y") == raw
    assert np.array_equal(before, prepared["g0a"].surface.data, equal_nan=True)


def test_missing_data_is_blue_grey_and_congruent_cells_green(prepared, same) -> None:
    assert same.cmc_forward > 0
    img = comparison_image(prepared["g0a"], prepared["g0b"], same)
    pa, pb, over, size = _panels(img)
    # Bottom-left corner of the canvas is outside the primer: no data, in all three panels.
    for panel in (pa, pb, over):
        assert tuple(int(v) for v in panel[size - 3, 3]) == MISSING
    assert (pa == CONGRUENT).all(axis=2).sum() > 100
    assert (over == CONGRUENT).all(axis=2).sum() > 100


def test_no_green_cells_without_congruence(prepared) -> None:
    diff = compare(prepared["g0a"], prepared["g1"])
    img = comparison_image(prepared["g0a"], prepared["g1"], diff)
    pa, _, _, _ = _panels(img)
    green = (pa == CONGRUENT).all(axis=2).sum()
    assert (green > 0) == (diff.cmc_forward > 0)


def _drawn(panel: np.ndarray) -> np.ndarray:
    """Pixels of cell outlines or missing data (not surface grey levels)."""
    return (
        (panel == CONGRUENT).all(axis=2)
        | (panel == OTHER_CELL).all(axis=2)
        | (panel == MISSING).all(axis=2)
    )


@pytest.mark.parametrize("angle,shift", [(90.0, (8.0, -12.0)), (40.0, (0.0, 0.0))])
def test_pose_moves_b_onto_a(prepared, angle: float, shift: tuple[float, float]) -> None:
    """B = A rotated and shifted: the middle panel shows A again, and the overlay is grey
    (magenta and green agree) where both have data. (The shifts are chosen so that the
    inverse pose lies on the 25-um grid the registration resolves.)"""
    a = prepared["g0a"]
    b = _moved_copy(a, angle, shift)
    comp = compare(a, b)
    img = comparison_image(a, b, comp)
    pa, pb, over, size = _panels(img)
    _, ma = _canvas(a.surface.data, a.surface.mask, size, comp.params.cell_factor)
    both = ma & ~_drawn(pa) & ~_drawn(pb) & ~_drawn(over)
    both[:40] = False  # panel labels
    assert both.sum() > 0.5 * ma.sum()
    ga, gb = pa[..., 0].astype(float)[both], pb[..., 0].astype(float)[both]
    assert np.corrcoef(ga, gb)[0, 1] > 0.95
    magenta, green = over[..., 2].astype(float)[both], over[..., 1].astype(float)[both]
    assert np.corrcoef(magenta, green)[0, 1] > 0.95


def test_cell_boxes_sit_on_the_data(prepared, same: Comparison) -> None:
    a, b = prepared["g0a"], prepared["g0b"]
    f = same.params.cell_factor
    size = max(a.surface.shape[0] // f, b.surface.shape[0] // f) * f
    _, ma = _canvas(a.surface.data, a.surface.mask, size, f)
    for c in same.cells:
        if c.direction != "a->b":
            continue
        r0, c0, r1, c1 = c.bbox_px
        assert ma[r0:r1, c0:c1].mean() == pytest.approx(c.valid_fraction, abs=0.08)


def test_write_comparison_png(prepared, same: Comparison, tmp_path: Path) -> None:
    out = write_comparison_png(tmp_path / "c.png", prepared["g0a"], prepared["g0b"], same)
    img = cv2.imread(str(out))
    assert img is not None and img.shape[1] > 2 * img.shape[0]


def test_b_is_moved_into_a_frame_and_never_cut_off(prepared, same: Comparison) -> None:
    """A pose that moves B's ring 1 mm sideways: the padded canvas keeps all of B's data."""
    import dataclasses

    from ballistics.compare import Pose
    from ballistics.picture import align_pair

    a, b = prepared["g0a"], prepared["g0b"]
    far = dataclasses.replace(same, pose=Pose(same.pose.rotation_deg, 0.0, 1e-3))
    pair = align_pair(a, b, far)
    assert pair.pad_px > 0 and pair.pad_px % same.params.cell_factor == 0
    assert pair.b_mask.sum() >= 0.97 * b.surface.mask.sum()
    assert pair.a_mask.sum() == a.surface.mask.sum()
    # the moved cells follow the pose: their centres move with the changed x translation
    fwd = align_pair(a, b, same)
    shift_px = (1e-3 - same.pose.dx_m) / pair.spacing_m
    cx = [q[:, 0].mean() - fwd.pad_px for _, q in fwd.backward]
    cx_far = [q[:, 0].mean() - pair.pad_px for _, q in pair.backward]
    assert np.allclose(np.subtract(cx_far, cx), shift_px, atol=1.0)
    img = comparison_image(a, b, far, label_a="casing 1, case X-1", label_b="casing 2")
    assert img.shape[1] == 3 * pair.size + 2 * _GAP


def test_frequency_words_use_the_reference_of_the_scan_kind() -> None:
    from ballistics.calibration import load_reference
    from ballistics.picture import frequency_words

    n3 = load_reference("topography").scores["combined"].size
    n2 = load_reference("image").scores["combined"].size
    assert n3 != n2
    top3 = frequency_words(1e9, "topography")
    assert top3.startswith(f"none of {n3} 3-D reference non-matches")
    top2 = frequency_words(1e9, "image")
    assert top2.startswith(f"none of {n2} 2-D reference non-matches")
    assert f"{n3} of {n3}" in frequency_words(-1e9, "topography")
    assert "unknown" in frequency_words(0.5, "topography", "no_such_region")
    assert "not compared" in frequency_words(None, "image")
