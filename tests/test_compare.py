"""Registration-based comparison on seeded synthetic casings: invariance, symmetry,
separation, and every documented parameter has an effect."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from ballistics import BallisticsError, Scan
from ballistics.compare import CompareParams, Pose, compare
from ballistics.pipeline import PreparedCasing, prepare
from ballistics.synth import fire, make_firearms


def _turn(scan: Scan, angle_deg: float, shift_px: tuple[float, float], side: int) -> Scan:
    """The same physical casing put back on the stage rotated and shifted: rotate a wide
    field of view, then keep a central ``side`` x ``side`` field that is fully measured."""
    h, w = scan.shape
    mat = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle_deg, 1.0)
    mat[0, 2] += shift_px[1]
    mat[1, 2] += shift_px[0]
    d = cv2.warpAffine(np.where(scan.mask, scan.data, 0.0), mat, (w, h), flags=cv2.INTER_LINEAR)
    m = cv2.warpAffine(scan.mask.astype(np.float32), mat, (w, h)) > 0.99
    r0, c0 = (h - side) // 2, (w - side) // 2
    d, m = d[r0 : r0 + side, c0 : c0 + side], m[r0 : r0 + side, c0 : c0 + side]
    return Scan(np.where(m, d, np.nan), m, scan.spacing_m, scan.kind)


@pytest.fixture(scope="module")
def casings() -> dict[tuple[str, int], tuple[Scan, PreparedCasing]]:
    guns = make_firearms(3, seed=11)
    out = {}
    for g in guns:
        for k in range(2):
            scan, _ = fire(g, shot_seed=500 + k)
            out[g.id, k] = (scan, prepare(scan))
    return out


def test_rotated_and_shifted_casing_scores_as_itself(casings) -> None:
    gun = make_firearms(1, seed=5)[0]
    wide, _ = fire(gun, shot_seed=9, fov_factor=1.8, max_offset_frac=0.0)
    side = int(wide.shape[0] * 1.2 / 1.8)
    prep = prepare(_turn(wide, 0.0, (0.0, 0.0), side))
    turned = prepare(_turn(wide, 137.0, (12.0, -20.0), side))
    self_score = compare(prep, prep).score
    c = compare(prep, turned)
    assert c.score > 0.8 * self_score
    # Mapping the turned copy back onto the original undoes the 137-degree turn.
    err = (c.rotation_deg - (360.0 - 137.0) + 180.0) % 360.0 - 180.0
    assert abs(err) < 2.0, c.rotation_deg


def test_symmetry(casings) -> None:
    (_, a), (_, b) = casings[next(iter(casings))], list(casings.values())[1]
    ab, ba = compare(a, b), compare(b, a)
    assert ab.score == pytest.approx(ba.score, rel=0.15, abs=0.05)
    err = (ab.rotation_deg + ba.rotation_deg + 180.0) % 360.0 - 180.0
    assert abs(err) < 3.0


def test_separation_same_gun_above_different_gun(casings) -> None:
    keys = list(casings)
    km, knm = [], []
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            s = compare(casings[keys[i]][1], casings[keys[j]][1]).score
            (km if keys[i][0] == keys[j][0] else knm).append(s)
    assert min(km) > max(knm), (km, knm)


def test_pose_inverse_roundtrip() -> None:
    p = Pose(33.0, 40e-6, -25e-6)
    q = p.inverse().inverse()
    assert q.rotation_deg == pytest.approx(p.rotation_deg)
    assert q.dx_m == pytest.approx(p.dx_m) and q.dy_m == pytest.approx(p.dy_m)


def test_serialisation_roundtrip_keeps_comparison(casings) -> None:
    (_, a), (_, b) = list(casings.values())[:2]
    a2 = PreparedCasing.from_bytes(a.to_bytes())
    assert compare(a2, b).score == pytest.approx(compare(a, b).score, rel=1e-3)
    with pytest.raises(BallisticsError, match="unreadable"):
        PreparedCasing.from_bytes(b"not a surface")


CHANGED = {
    "coarse_factor": 16,
    "coarse_step_deg": 45.0,
    "coarse_peaks": 12,
    "rotation_hints": 0,
    "refine_factor": 8,
    "refine_step_deg": 2.0,
    "max_offset_um": 60.0,
    "cell_factor": 4,
    "grid": 5,
    "min_cell_valid": 0.9,
    "cell_angles_deg": (0.0,),
    "cell_search_um": 40.0,
    "ccf_threshold": 0.9,
    "angle_tol_deg": 0.0,
    "translation_tol_um": 1.0,
}


# The congruence tolerances decide between cells that disagree with the consensus; on easy
# synthetic pairs every well-correlated cell agrees exactly, so they are shown on the
# congruence step itself with cells that disagree.
TOLERANCES = {"angle_tol_deg", "translation_tol_um"}


def test_every_parameter_is_covered() -> None:
    assert set(CHANGED) == {f.name for f in dataclasses.fields(CompareParams)}


@pytest.mark.parametrize("name", sorted(TOLERANCES))
def test_congruence_tolerances_change_the_count(name: str) -> None:
    from ballistics.compare import CellResult, _congruence

    def cell(i: int, rot: float, dy_um: float) -> CellResult:
        return CellResult("a->b", i, 0, (0, 0, 1, 1), 1.0, 0.8, rot, dy_um * 1e-6, 0.0, False)

    cells = [cell(0, 0, 0), cell(1, 0, 0), cell(2, 3.0, 50.0), cell(3, 0, 0), cell(4, 3.0, 50.0)]
    base = sum(c.congruent for c in _congruence(cells, CompareParams()))
    other = sum(c.congruent for c in _congruence(cells, CompareParams(**{name: CHANGED[name]})))
    assert base == 5 and other == 3


@pytest.mark.parametrize("name", sorted(set(CHANGED) - TOLERANCES))
def test_each_parameter_changes_the_outcome(casings, name: str) -> None:
    keys = list(casings)
    a, b = casings[keys[0]][1], casings[keys[1]][1]  # same gun, different shots
    # Other guns: their pose is not pinned down by a true match, so search settings show.
    c, d = casings[keys[2]][1], casings[keys[4]][1]
    params = CompareParams(**{name: CHANGED[name]})
    changed = [
        compare(x, y).as_dict(cells=True) != compare(x, y, params=params).as_dict(cells=True)
        for x, y in ((a, b), (a, c), (b, d), (c, d))
    ]
    assert any(changed)


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(BallisticsError, match="grid"):
        CompareParams(grid=0)
    with pytest.raises(BallisticsError, match="min_cell_valid"):
        CompareParams(min_cell_valid=2.0)


def test_fadul_hard_pairs_regression(fadul_paths) -> None:
    """Known matches that an approximate coarse NCC once lost (score ~0.2, wrong rotation):
    each must outscore every non-match among the same casings."""
    from itertools import combinations

    from ballistics.io import read_scan

    slide = {"4-1": 4, "4-2": 4, "5-2": 5, "N": 5, "S": 7, "Y": 7}
    by_name = {p.stem.split("_", 1)[1]: p for p in fadul_paths}
    prep = {n: prepare(read_scan(by_name[n])) for n in slide}
    km, knm = [], []
    for x, y in combinations(slide, 2):
        s = compare(prep[x], prep[y]).score
        (km if slide[x] == slide[y] else knm).append((s, x, y))
    assert min(km)[0] > max(knm)[0], (min(km), max(knm))
