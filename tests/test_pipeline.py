"""prepare(), descriptors and calibration."""

from __future__ import annotations

import numpy as np
import pytest

from ballistics import condition
from ballistics.calibration import describe_frequency, load_reference, non_match_frequency
from ballistics.descriptors import DESCRIPTOR_DIMS, EXTRACTOR_VERSION, describe
from ballistics.io import read_scan
from ballistics.pipeline import CANVAS_SPACING_M, condition_breech_face, prepare
from ballistics.register import rotate
from ballistics.synth import fire, make_firearms


@pytest.fixture(scope="module")
def shots():
    guns = make_firearms(2, seed=21)
    return [(g.id, fire(g, shot_seed=70 + k)[0]) for g in guns for k in range(2)]


def test_prepare_centres_and_conditions(shots) -> None:
    _, scan = shots[0]
    p = prepare(scan)
    s = p.surface
    assert s.spacing_m == (CANVAS_SPACING_M, CANVAS_SPACING_M)
    assert s.shape[0] == s.shape[1] and s.shape[0] % 16 == 0
    names = [st.name for st in s.provenance]
    for step in ("crop_to_primer", "level", "remove_outliers", "bandpass", "resample"):
        assert step in names
    # The primer centre sits at the canvas centre: the valid breech face is balanced around it.
    rows, cols = np.nonzero(s.mask)
    c = (s.shape[0] - 1) / 2
    radius_px = p.segmentation["primer_radius"] * scan.spacing_m[0] / CANVAS_SPACING_M
    assert abs(rows.mean() - c) < 0.25 * radius_px and abs(cols.mean() - c) < 0.25 * radius_px
    assert np.hypot(rows - c, cols - c).max() <= radius_px * 1.05 + 2


def test_manual_chain_equals_wrapper(shots) -> None:
    from ballistics.segment import segment

    _, scan = shots[1]
    seg = segment(scan)
    wrapped = prepare(scan).surface
    # The wrapper = crop + the documented conditioning chain + centring; compare the chain part.
    from ballistics.pipeline import _crop_centred

    half = int(np.ceil(seg.primer_radius * 1.04)) + 2
    crop = _crop_centred(scan, seg.breech_face_mask & scan.mask, seg.primer_center, half)
    manual = condition.resample(
        condition.bandpass(condition.remove_outliers(condition.level(crop, method="sphere"))),
        spacing_m=CANVAS_SPACING_M,
    )
    chain = condition_breech_face(crop)
    np.testing.assert_array_equal(manual.mask, chain.mask)
    np.testing.assert_allclose(manual.data[manual.mask], chain.data[chain.mask])
    assert [st.name for st in wrapped.provenance[-5:-1]] == [
        st.name for st in chain.provenance[-4:]
    ]


def test_descriptor_shape_norm_and_version(shots) -> None:
    d = describe(prepare(shots[0][1]))
    v = d["breech_face"]
    assert v.dtype == np.float32 and v.shape == (DESCRIPTOR_DIMS["breech_face"],)
    assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
    assert "prep-" in EXTRACTOR_VERSION


def test_descriptor_is_rotation_invariant(shots) -> None:
    p = prepare(shots[0][1])
    v = describe(p)["breech_face"]
    s = p.surface
    d, m = rotate(np.where(s.mask, s.data, 0.0), s.mask, 73.0)
    from ballistics.pipeline import PreparedCasing
    from ballistics.scan import Scan

    turned = PreparedCasing(Scan(np.where(m, d, np.nan), m, s.spacing_m, s.kind), {}, None)
    w = describe(turned)["breech_face"]
    same_gun = describe(prepare(shots[1][1]))["breech_face"]
    other_gun = describe(prepare(shots[2][1]))["breech_face"]
    assert float(v @ w) > 0.98
    assert float(v @ w) > float(v @ other_gun)
    assert float(v @ same_gun) > float(v @ other_gun)


def test_calibration_is_monotone_and_honest() -> None:
    ref = load_reference()
    n = ref.scores["combined"].size
    assert n >= 100
    lo, hi = non_match_frequency(0.0), non_match_frequency(100.0)
    assert lo == pytest.approx(1.0)
    assert hi == pytest.approx(1 / (n + 1))  # never rarer than the reference can show
    mid = float(np.median(ref.scores["combined"]))
    assert 0.3 < non_match_frequency(mid) < 0.7
    assert describe_frequency(0.01).startswith("1 in 100 ")


def test_fadul_prepares_as_precropped(fadul_paths) -> None:
    p = prepare(read_scan(fadul_paths[0]))
    assert p.segmentation["precropped"] is True
    assert p.surface.valid_fraction > 0.1


def test_calibration_is_per_kind_of_scan() -> None:
    from ballistics import BallisticsError

    with pytest.raises(BallisticsError, match="no non-match reference for 'hologram'"):
        non_match_frequency(1.0, kind="hologram")
    assert load_reference("topography").source.get("dataset") == "fadul"


def test_image_and_topography_are_not_compared(shots) -> None:
    from ballistics import BallisticsError
    from ballistics.compare import compare
    from ballistics.render import render_ring_light

    scan = shots[0][1]
    with pytest.raises(BallisticsError, match="compare like with like"):
        compare(prepare(scan), prepare(render_ring_light(scan)))


def test_levels_form_compares_describes_and_screens_exactly_as_full(shots) -> None:
    """The "levels" storage form keeps only levels 2, 4 and 8: every comparison result,
    descriptor and screen signature is bit for bit that of the full canvas."""
    from ballistics.compare import compare
    from ballistics.pipeline import STORED_LEVELS, PreparedCasing
    from ballistics.screen import signature

    full = [PreparedCasing.from_bytes(prepare(s).to_bytes()) for _, s in shots[:3]]
    lev = [PreparedCasing.from_bytes(p.to_bytes("levels")) for p in full]
    assert all(
        len(b.to_bytes("levels")) < 0.5 * len(a.to_bytes()) for a, b in zip(full, lev, strict=True)
    )
    for a, b in zip(full, lev, strict=True):
        assert b.stored_levels == STORED_LEVELS and b.surface.shape == a.surface.shape
        assert b.surface.spacing_m == a.surface.spacing_m and b.quality == a.quality
        for k, v in describe(a).items():
            np.testing.assert_array_equal(v, describe(b)[k])
        np.testing.assert_array_equal(signature(a), signature(b))
        # the picture's surface: the finest level in metres, on the canvas grid
        assert abs(np.nanstd(b.surface.data) / np.nanstd(a.surface.data) - 1.0) < 0.3
        with pytest.raises(Exception, match="level 1 of this casing is not stored"):
            b.level(1)
    for i, j in ((0, 1), (0, 2), (1, 2)):
        ca, cb = compare(full[i], full[j]), compare(lev[i], lev[j])
        assert (ca.score, ca.cmc, ca.pose, ca.cells) == (cb.score, cb.cmc, cb.pose, cb.cells)
    again = PreparedCasing.from_bytes(lev[0].to_bytes("levels"))  # re-storing loses nothing
    assert [s.name for s in again.surface.provenance].count("stored_levels") == 1
    np.testing.assert_array_equal(again.level(2)[0], full[0].level(2)[0])
