"""Segmentation: accuracy on a seeded synthetic corpus, real Fadul / NBIDE data, refusals."""

from __future__ import annotations

import json
import math
import re
import time
import warnings
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ballistics.crop_styles import disc_fov, styled_variants
from ballistics.errors import SegmentationError
from ballistics.render import render_oblique
from ballistics.scan import Scan
from ballistics.segment import Segmentation, segment
from ballistics.synth import corpus_plan, fire


def _errors(plan):
    ep, ef, shape_ok, times = [], [], [], []
    shear_hit, shear_n, shear_fp = 0, 0, 0
    for fa, shot_seed, sp in plan:
        scan, tr = fire(fa, shot_seed=shot_seed, spacing_m=sp)
        t0 = time.perf_counter()
        seg = segment(scan)
        times.append((sp, time.perf_counter() - t0))
        ep.append(math.dist(seg.primer_center, tr.primer_center))
        ef.append(math.dist(seg.firing_pin_center, tr.fp_center))
        shape_ok.append(seg.firing_pin_shape == tr.fp_shape)
        assert seg.breech_face_mask.shape == scan.shape
        if tr.shear_angle_deg is not None:
            shear_n += 1
            a = seg.aperture_shear_angle_deg
            if a is not None and abs((a - tr.shear_angle_deg + 180) % 360 - 180) < 30:
                shear_hit += 1
        elif seg.aperture_shear_mask is not None:
            shear_fp += 1
    return (
        np.array(ep),
        np.array(ef),
        np.array(shape_ok),
        times,
        (shear_hit, shear_n, shear_fp),
    )


def test_segmentation_accuracy_on_synthetic_corpus() -> None:
    """Headline: 102 raw casings (34 guns x 3 shots), ~80 % at 6.25 um and ~20 % at 3.125 um.

    Measured (seed 2024, 102 casings): primer-centre error median 0.12 px, firing-pin-centre
    error median 0.35 px, 100 % of casings within 10 px on both, shape correct 100 %,
    aperture shear found (direction within 30 deg) on 39 of 51 shots that carry it, 1 false
    positive; segment() mean 0.070 s (6.25 um), 0.184 s (3.125 um); test ~28 s.
    """
    plan = corpus_plan(guns=34, shots=3, seed=2024)
    assert len(plan) >= 100
    ep, ef, shape_ok, times, (hit, n_shear, fp) = _errors(plan)
    within = float(np.mean((ep < 10) & (ef < 10)))
    t625 = [t for s, t in times if s == 6.25e-6]
    t3 = [t for s, t in times if s != 6.25e-6]
    print(
        f"\nprimer median {np.median(ep):.2f} px, fp median {np.median(ef):.2f} px, "
        f"within 10 px {100 * within:.1f} %, shape {100 * shape_ok.mean():.1f} %, "
        f"shear {hit}/{n_shear} (fp {fp}), "
        f"time 6.25um mean {np.mean(t625):.3f} s, 3.125um mean {np.mean(t3) if t3 else 0:.3f} s"
    )
    assert np.median(ep) < 3.0
    assert np.median(ef) < 5.0
    assert within >= 0.97
    assert shape_ok.mean() >= 0.95
    assert hit >= 0.5 * n_shear and fp <= 0.1 * len(plan)
    # Speed is measured by benchmarks/pipeline_speed.py, not asserted here (noisy machine).


def test_segmentation_fast_coarse_spacing() -> None:
    """Quick variant at 12.5 um (different seed, other calibres mixed in)."""
    plan = corpus_plan(guns=8, shots=2, seed=99, spacing_choices=((12.5e-6, 1.0),))
    ep, ef, shape_ok, _, _ = _errors(plan)
    assert np.median(ep) < 2.0 and np.median(ef) < 3.0
    assert np.mean((ep < 5) & (ef < 5)) >= 0.95
    assert shape_ok.mean() >= 0.95


def test_segmentation_fields_and_dict() -> None:
    fa = corpus_plan(guns=1, shots=1, seed=3)[0][0]
    scan, tr = fire(fa, shot_seed=1)
    seg = segment(scan)
    assert isinstance(seg, Segmentation) and not seg.precropped
    assert seg.style == "case_head" and seg.firing_pin_found and 0.5 < seg.confidence <= 1.0
    d = seg.as_dict()
    json.dumps(d)
    assert d["style"] == "case_head" and d["firing_pin_found"] is True
    assert d["notes"] == list(seg.notes)
    for key in (
        "primer_center",
        "primer_radius",
        "firing_pin_center",
        "firing_pin_shape",
        "firing_pin_radius",
        "firing_pin_axes",
        "firing_pin_angle_deg",
        "precropped",
    ):
        assert key in d
    assert abs(seg.primer_radius - tr.primer_radius_px) < 5
    assert seg.firing_pin_radius == seg.firing_pin_axes[0] >= seg.firing_pin_axes[1]
    bf = seg.breech_face_mask
    assert bf.dtype == bool and bf.shape == scan.shape
    fr, fc = (round(v) for v in seg.firing_pin_center)
    assert not bf[fr, fc]  # the pin is not breech face
    assert not bf[0, 0]  # nor is the case head
    assert not (bf & ~scan.mask).any()
    area = bf.sum() * scan.spacing_m[0] ** 2
    assert 0.5 * math.pi * (2.2e-3) ** 2 < area < math.pi * (2.65e-3) ** 2


def test_elongated_pin_angle() -> None:
    plan = [p for p in corpus_plan(guns=12, shots=1, seed=8) if p[0].fp_shape == "elongated"]
    assert plan
    for fa, ss, sp in plan:
        scan, tr = fire(fa, shot_seed=ss, spacing_m=sp)
        seg = segment(scan)
        assert seg.firing_pin_shape == "elongated"
        d = abs((seg.firing_pin_angle_deg - tr.fp_angle_deg + 90) % 180 - 90)
        assert d < 5, (seg.firing_pin_angle_deg, tr.fp_angle_deg)


def test_segment_oblique_render() -> None:
    """The 2-D path on side-lit renders of synthetic casings (edges + Hough circles)."""
    errs_p, errs_f = [], []
    for fa, ss, _ in corpus_plan(guns=6, shots=1, seed=4):
        scan, tr = fire(fa, shot_seed=ss, spacing_m=6.25e-6)
        seg = segment(render_oblique(scan))
        errs_p.append(math.dist(seg.primer_center, tr.primer_center))
        errs_f.append(math.dist(seg.firing_pin_center, tr.fp_center))
    # measured (12 renders): primer median 1.0 px (all < 1.2 px); firing pin median ~18 px,
    # worst ~90 px: the 2-D firing-pin locator (Hough circle on shading edges) is coarse.
    assert np.median(errs_p) < 3
    assert np.median(errs_f) < 40


def test_refuses_flat_and_empty_scans() -> None:
    flat = Scan(np.zeros((400, 400)), np.ones((400, 400), bool), (6.25e-6, 6.25e-6), "topography")
    with pytest.raises(SegmentationError, match=r"flat|primer"):
        segment(flat)
    empty = Scan(
        np.full((400, 400), np.nan), np.zeros((400, 400), bool), (6.25e-6, 6.25e-6), "topography"
    )
    with pytest.raises(SegmentationError, match="valid"):
        segment(empty)
    grey = Scan(np.full((300, 300), 0.5), np.ones((300, 300), bool), (2.53e-6, 2.53e-6), "image")
    with pytest.raises(SegmentationError):
        segment(grey)


# ----------------------------------------------------------------------------- real data


def _load_x3p(path: Path) -> Scan:
    try:
        from ballistics.io import read_scan
    except ImportError:  # pragma: no cover - reader not landed yet
        read_scan = None
    if read_scan is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return read_scan(path)
    with zipfile.ZipFile(path) as z:  # pragma: no cover
        names = z.namelist()
        xml = z.read(next(n for n in names if n.endswith("main.xml"))).decode()
        sx = int(re.search(r"<SizeX>(\d+)", xml).group(1))  # type: ignore[union-attr]
        sy = int(re.search(r"<SizeY>(\d+)", xml).group(1))  # type: ignore[union-attr]
        raw = z.read(next(n for n in names if n.endswith("data.bin")))
    a = np.frombuffer(raw, "<f8").reshape(sy, sx)
    return Scan(a, np.isfinite(a), (6.25e-6, 6.25e-6), "topography")


def test_fadul_files_are_precropped(fadul_paths: list[Path]) -> None:
    """Every processed Fadul scan passes through as pre-cropped.

    Measured: outer radius of valid data 1.48-1.81 mm (the processed files are cropped
    *inside* the primer edge, so this is less than the 2.2 mm of a 9 mm primer); the
    inner hole (masked firing-pin area) ~1.3 mm; ~0.01 s per file.
    """
    radii = []
    for p in fadul_paths:
        scan = _load_x3p(p)
        seg = segment(scan)
        assert seg.precropped, p.name
        assert seg.style == "annulus_pin_invalid" and seg.firing_pin_found, p.name
        r_mm = seg.primer_radius * scan.spacing_m[0] * 1e3
        radii.append(r_mm)
        assert 1.4 < r_mm < 2.4, (p.name, r_mm)
        assert math.dist(seg.firing_pin_center, seg.primer_center) < 0.5 * seg.primer_radius
        m, n = scan.shape
        assert abs(seg.primer_center[0] - m / 2) < 0.15 * m
        assert abs(seg.primer_center[1] - n / 2) < 0.15 * n
        # the breech face is the valid annulus, and most of it
        bf = seg.breech_face_mask
        assert bf.sum() > 0.8 * scan.mask.sum()
    print(f"\nFadul outer radius {min(radii):.2f}-{max(radii):.2f} mm over {len(radii)} files")


def _load_png(path: Path) -> Scan:
    try:
        from ballistics.image_io import read_image
    except ImportError:  # pragma: no cover
        read_image = None
    if read_image is not None:
        return read_image(path)
    import cv2  # pragma: no cover

    im = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float64) / 255.0
    return Scan(im, np.ones(im.shape, bool), (2.53e-6, 2.53e-6), "image")


def test_nbide_pair_primer_circle(nbide_paths: list[Path]) -> None:
    """Ring-light images: a primer circle of plausible size near the centre, both images.

    Measured: radius ~1.80-1.84 mm (edge of the flattened breech-face disc), centres
    within ~10 px of each other; firing-pin centre within ~0.4 mm of the primer centre.
    """
    segs = []
    for p in nbide_paths:
        scan = _load_png(p)
        assert scan.kind == "image"
        seg = segment(scan)
        r_mm = seg.primer_radius * scan.spacing_m[0] * 1e3
        assert 1.5 < r_mm < 2.8, r_mm
        m, n = scan.shape
        assert math.dist(seg.primer_center, (m / 2, n / 2)) < 0.2 * min(m, n)
        assert math.dist(seg.firing_pin_center, seg.primer_center) < 0.5 * seg.primer_radius
        segs.append(seg)
    if len(segs) >= 2:
        assert math.dist(segs[0].primer_center, segs[1].primer_center) < 80


# ----------------------------------------------------------------------------- cropping styles


def test_disc_cropped_raw_scan_is_segmented_from_its_primer_edge() -> None:
    """Regression (issue 9): a raw scan cropped to a disc around the primer, the firing-pin
    dent inside and measured, was refused ("pre-cropped scan: no firing-pin hole inside the
    valid annulus") or centred on the disc instead of the primer."""
    for fa, ss, _ in corpus_plan(guns=3, shots=1, seed=3):
        scan, tr = fire(fa, shot_seed=ss, spacing_m=6.25e-6, dropout_frac=0.0)
        s = disc_fov(scan, tr, radius_factor=1.12, offset_px=(8.0, -6.0))
        seg = segment(s.scan)
        assert math.dist(seg.primer_center, s.primer_center) < 3.0
        assert math.dist(seg.firing_pin_center, s.fp_center) < 5.0
        assert seg.firing_pin_shape == s.fp_shape
        assert seg.style == "disc_fov" and not seg.precropped and seg.firing_pin_found


def test_every_cropping_style_is_recognised() -> None:
    """All crop variants of a few casings (seed 13, 7.5 um, round and elongated pins): none is
    refused, styles are recognised, centres are found (a partly invalid pin's too), a missing
    pin is reported as such."""
    plan = corpus_plan(guns=4, shots=1, seed=13, spacing_choices=((7.5e-6, 1.0),))
    ep, ef = [], []
    for fa, ss, sp in plan:
        scan, tr = fire(fa, shot_seed=ss, spacing_m=sp)
        for st in styled_variants(scan, tr, seed=ss):
            seg = segment(st.scan)  # never refused
            e = math.dist(seg.primer_center, st.primer_center)
            if st.variant == "disc_fov_narrow" and seg.style != "disc_fov":
                # the edge arc was not found: the disc stands in for it, and says so
                assert any("stands in" in n for n in seg.notes)
            else:
                ep.append(e)
            assert seg.firing_pin_found == st.pin_expected, st.variant
            if st.variant != "disc_fov_narrow":  # narrow may legitimately show no edge
                assert seg.style == st.style, (st.variant, seg.style, seg.notes)
            assert seg.precropped == (
                seg.style in ("annulus_pin_invalid", "breech_face_pin_present")
            )
            if not seg.firing_pin_found:
                assert "firing pin not found; breech face = whole annulus" in seg.notes
                assert seg.confidence <= 0.5
                d = seg.as_dict()
                assert d["firing_pin_center"] is None and d["firing_pin_shape"] is None
                assert d["firing_pin_radius"] is None and d["firing_pin_axes"] is None
                json.dumps(d)
            else:
                ef.append(math.dist(seg.firing_pin_center, st.fp_center))
                assert seg.firing_pin_shape == st.fp_shape, st.variant
            assert seg.breech_face_mask.sum() > 0.3 * st.scan.mask.sum()
    assert np.median(ep) < 3.0 and np.max(ep) < 10.0
    assert np.median(ef) < 5.0 and np.mean(np.array(ef) < 10) >= 0.97


def test_partly_invalid_round_pin_centre() -> None:
    from ballistics.crop_styles import breech_face_pin_present, pin_partly_invalid

    plan = [p for p in corpus_plan(guns=8, shots=1, seed=21) if p[0].fp_shape == "round"][:3]
    assert plan
    for fa, ss, _ in plan:
        scan, tr = fire(fa, shot_seed=ss, spacing_m=6.25e-6)
        st = pin_partly_invalid(breech_face_pin_present(scan, tr), tr, cut_angle_deg=40.0)
        seg = segment(st.scan)
        assert seg.firing_pin_found
        assert any("invalid" in n for n in seg.notes)
        assert math.dist(seg.firing_pin_center, st.fp_center) < 10.0


def test_boundary_stand_in_is_said_and_less_confident() -> None:
    fa, ss, _ = corpus_plan(guns=1, shots=1, seed=3)[0]
    scan, tr = fire(fa, shot_seed=ss, spacing_m=7.5e-6)
    raw = segment(scan)
    d = styled_variants(scan, tr, seed=1, variants=("breech_face_pin_present",))[0]
    seg = segment(d.scan)
    assert seg.style == "breech_face_pin_present" and seg.precropped
    assert any("valid-data boundary stands in" in n for n in seg.notes)
    assert seg.confidence < raw.confidence


def test_refusal_says_what_was_seen() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1e-7, (400, 400))
    mask = np.zeros((400, 400), bool)
    mask[50:350, 30:200] = True  # a rectangle of flat data: no edge, no circle
    with pytest.raises(SegmentationError, match=r"no breech face to compare.*saw"):
        segment(Scan(z, mask, (6.25e-6, 6.25e-6), "topography"))


@pytest.mark.parametrize("spacing", [1e-300, 1e-12, 2e-4])
def test_absurd_spacing_is_a_clear_error(spacing: float) -> None:
    fa, ss, _ = corpus_plan(guns=1, shots=1, seed=3)[0]
    scan, _ = fire(fa, shot_seed=ss, spacing_m=12.5e-6)
    bad = Scan(scan.data, scan.mask, (spacing, spacing), "topography")
    with pytest.raises(SegmentationError, match="spacing"):
        segment(bad)


def test_consumers_accept_a_missing_pin() -> None:
    from server.commands_local import _human_inspect
    from server.service import segmentation_to_proto

    fa, ss, _ = corpus_plan(guns=1, shots=1, seed=3)[0]
    scan, tr = fire(fa, shot_seed=ss, spacing_m=7.5e-6)
    st = styled_variants(scan, tr, seed=2, variants=("disc_fov_wide+pin_absent",))[0]
    seg = segment(st.scan)
    assert not seg.firing_pin_found
    d = seg.as_dict()
    pb = segmentation_to_proto(d)
    assert pb.firing_pin_center_row == 0.0 and pb.firing_pin_shape == ""
    assert json.loads(pb.summary_json)["firing_pin_center"] is None
    rec = {"file": "x", "kind": "topography", "spacing_m": [7.5e-6] * 2, "shape": [1, 1]}
    text = _human_inspect({**rec, "valid_fraction": 1.0, **d})
    assert "firing pin: not found" in text and "style: disc_fov" in text
    from ballistics.pipeline import prepare

    prep = prepare(st.scan)
    assert prep.segmentation["firing_pin_found"] is False
    assert prep.aperture_profile is None


# ------------------------------------------------------------- instruments and elongated pins


def _elongated_shots(n: int, seed: int = 5):
    from ballistics.synth import make_firearms

    firearms = [fa for fa in make_firearms(40, seed=seed) if fa.fp_shape == "elongated"][:n]
    assert len(firearms) == n
    return [(fa, seed * 1000 + i) for i, fa in enumerate(firearms)]


@pytest.mark.parametrize("light", ["render_ring", "ring_low", "side_light", "coaxial"])
def test_elongated_pin_in_2d_images(light: str) -> None:
    """2-D firing pins are the rim's outline, grown from one end into a stadium.

    The Hough circle alone found one end of an elongated pin (17-55 px off, shape "round")
    under every light; under a side light the lit floor was taken for the pin, and under a
    coaxial light the primer centre was 7-8 px off. Measured after the fix (6.25 um, seed
    5): pin centre < 2 px, primer centre < 1 px.
    """
    from ballistics.instruments import INSTRUMENTS, instrument_rng, record
    from ballistics.render import render_ring_light
    from ballistics.synth import fired_surface

    for fa, shot in _elongated_shots(2):
        if light == "render_ring":
            scan, tr = fire(fa, shot_seed=shot, spacing_m=6.25e-6)
            img = render_ring_light(scan)
        else:
            surface = fired_surface(fa, shot_seed=shot, spacing_m=6.25e-6)
            img, tr = record(
                surface,
                light,
                rng=instrument_rng(fa.seed, shot, light),
                params=replace(INSTRUMENTS[light].params, pixel_um=6.25),
            )
        seg = segment(img)
        assert seg.firing_pin_shape == "elongated"
        assert math.dist(seg.firing_pin_center, tr.fp_center) < 5.0
        assert math.dist(seg.primer_center, tr.primer_center) < 3.0
        # the major axis along the truth's (angles mod 180)
        d = abs((seg.firing_pin_angle_deg - tr.fp_angle_deg + 90) % 180 - 90)
        assert d < 10.0


def test_side_light_round_pin_is_the_rim_not_the_lit_floor() -> None:
    """Under a side light the lit floor of a round impression is a complete circle inside
    the rim; the rim (outermost well-covered outline) is the pin. Taking the best-covered
    outline instead put this one 27.6 px off."""
    from ballistics.instruments import INSTRUMENTS, instrument_rng, record
    from ballistics.synth import fired_surface, make_firearms

    fa = [f for f in make_firearms(40, seed=7) if f.fp_shape == "round"][1]
    shot = 7 * 1000 + 2
    surface = fired_surface(fa, shot_seed=shot, spacing_m=6.25e-6)
    img, tr = record(
        surface,
        "side_light",
        rng=instrument_rng(fa.seed, shot, "side_light"),
        params=replace(INSTRUMENTS["side_light"].params, pixel_um=6.25),
    )
    seg = segment(img)
    assert math.dist(seg.firing_pin_center, tr.fp_center) < 5.0
    assert seg.firing_pin_radius * 6.25e-6 == pytest.approx(tr.fp_axes_px[0] * 6.25e-6, rel=0.2)


def test_coaxial_round_pin_is_the_rim_concentric_with_the_floor_spot() -> None:
    """Under a coaxial light the floor's bright spot is the best-covered circle, and a mark
    next to the impression (a dark crescent beside the rim) joined the rim into a larger,
    off-centre outline that was taken for the pin: 36 px off (seed 6173, 3.125 um, found by
    ``benchmarks/segmentation_styles.py``). The rim is the ring concentric with the spot."""
    from ballistics.instruments import INSTRUMENTS, instrument_rng, record
    from ballistics.synth import fired_surface, make_firearms

    fa = next(f for f in make_firearms(48, seed=6173) if f.fp_shape == "round")
    shot = 6173 * 1000
    surface = fired_surface(fa, shot_seed=shot, spacing_m=3.125e-6)
    img, tr = record(
        surface,
        "coaxial",
        rng=instrument_rng(fa.seed, shot, "coaxial"),
        params=replace(INSTRUMENTS["coaxial"].params, pixel_um=3.125),
    )
    for st in styled_variants(img, tr, seed=shot, variants=("case_head", "disc_fov_wide")):
        seg = segment(st.scan)
        assert seg.firing_pin_shape == "round"
        assert math.dist(seg.firing_pin_center, st.fp_center) < 5.0  # measured 2.1, 2.0


def test_rim_concentric_with_floor_spot_beats_smaller_off_centre_outline() -> None:
    """Floor spot (r 17, fully covered), an off-centre outline touching the spot on one
    side and the rim on the other (r 19.6, 3.4 px off, coverage 0.84) and the rim (r 23,
    concentric, 0.91): the numbers of the render_ring miss of seed 8807. Both larger
    outlines enclose the spot; taking the smaller put the pin 27 px off at 3.125 um."""
    from ballistics.segment import _outermost

    spot = (109.9, 101.2, 0.3, 17.0, 1.5)
    between = (112.6, 103.3, 2.95, 19.57, 2.09)
    rim = (109.9, 101.1, 0.7, 23.1, 1.4)
    scored = [(1.0, spot), (0.838, between), (0.913, rim)]
    assert _outermost(scored)[1] == rim
    # with no concentric outline the smallest enclosing one is still the rim
    assert _outermost([(1.0, spot), (0.838, between)])[1] == between


def test_render_ring_round_pin_is_not_between_floor_spot_and_rim() -> None:
    """``render_ring_light`` of a round pin at 3.125 um (seed 8807, casing
    G8807-0002-8807000, found by ``benchmarks/segmentation_styles.py``): the pin centre
    was 27 px off, on an outline between the floor's bright spot and the rim."""
    from ballistics.render import render_ring_light
    from ballistics.synth import make_firearms

    fa = next(f for f in make_firearms(48, seed=8807) if f.fp_shape == "round")
    assert fa.id == "G8807-0002"
    scan, tr = fire(fa, shot_seed=8807 * 1000, spacing_m=3.125e-6)
    (st,) = styled_variants(scan, tr, seed=8807 * 1000, variants=("case_head",))
    seg = segment(render_ring_light(st.scan))
    assert seg.firing_pin_shape == "round"
    assert math.dist(seg.firing_pin_center, st.fp_center) < 5.0  # measured 27.4 before, 1.2


def test_most_concentric_rim_beats_outline_riding_spot_and_rim() -> None:
    """The numbers of the render_ring miss of tuning seed 2719 (G2719-0000-2719000,
    disc_fov_wide, 2.5 um): floor spot (r 16.2), the rim (r 21.4, 0.1 px off the spot's
    centre, coverage 0.78) and an outline riding the spot below and the rim above (r 17.1,
    half-length 5, 1.6 px off: within the concentric tolerance too, and smaller). prep-7 took
    the smaller, 16 px off at 2.5 um; the rim shares the spot's centre."""
    from ballistics.segment import _outermost

    spot = (102.6, 99.2, 0.4, 16.2, 1.06)
    beside = (102.7, 102.5, 2.9, 16.7, 1.52)
    rim_and_mark = (99.4, 95.7, 6.2, 21.0, 0.83)
    rim = (102.5, 99.1, 1.0, 21.4, 0.81)
    riding = (103.1, 100.8, 5.0, 17.1, 3.01)
    scored = [(1.0, spot), (0.92, beside), (0.79, rim_and_mark), (0.78, rim), (0.77, riding)]
    assert _outermost(scored)[1] == rim
    # without the rim, the concentric outline riding the spot and the rim is still taken
    assert _outermost([t for t in scored if t[1] != rim])[1] == riding


def test_rim_of_shallow_impression_just_outside_its_floor_spot() -> None:
    """A shallow impression's bright floor spot reaches 0.8 of the rim radius (tuning seed
    9319, G9319-0008-9319002, render_ring disc_fov_wide at 2.5 um: spot r 23.8, rim 29.8
    working px). The concentric rim was sought only from 1.3 spot radii (31 px) out, found
    a fainter ring beyond the rim, and an off-centre outline between spot and rim was taken
    (39 px off at 2.5 um). Here on the working grid (25 um): the rim is broken where a mark
    joins it, a faint partial arc lies outside it."""
    from ballistics.segment import _Circle, _find_pin_2d

    rng = np.random.default_rng(7)
    m = 200
    yy, xx = np.mgrid[:m, :m]
    cx, cy = 101.3, 98.6
    r = np.hypot(xx - cx, yy - cy)
    ang = np.arctan2(yy - cy, xx - cx)
    z = np.full((m, m), 0.6) + 0.02 * rng.standard_normal((m, m))
    z[(r < 30) & (np.abs(ang - 2.0) > 0.8)] = 0.35  # dark wall, broken over 1.6 rad
    z[(r > 35) & (r < 38) & (np.abs(ang + 1.0) < 1.6)] = 0.45  # faint arc outside the rim
    z[r < 24] = 1.0  # the floor's bright spot
    z[np.hypot(xx - 100, yy - 100) > 80] = 0.3  # outside the primer
    pin = _find_pin_2d(z, _Circle(100.0, 100.0, 80.0, 1.0), 25e-6, 1)
    assert pin is not None
    row, col, major, minor = pin.full[:4]
    assert math.dist((row, col), (cy, cx)) < 1.0  # prep-7: 3.2 px off (spot-rim outline)
    assert abs(minor - 30.0) < 1.5 and abs(major - 30.0) < 1.5  # prep-7: 26.1 and 29.1


def _coaxial_pin_with_mark(shift: float) -> tuple[np.ndarray, tuple[float, float]]:
    """Working-grid (25 um) coaxial image of a round impression (r 21): dark, a bright spot
    on its floor smaller than any pin (Gaussian, sigma 4.5), and a dark mark beside it (the
    impression shifted by ``shift`` px, over +-0.65 rad) that joins the rim and hides it
    there. Returns the image and the true centre (col, row)."""
    rng = np.random.default_rng(3)
    m = 200
    yy, xx = np.mgrid[:m, :m]
    cx, cy, a = 101.3, 98.6, -2.3
    r = np.hypot(xx - cx, yy - cy)
    ang = np.angle(np.exp(1j * (np.arctan2(yy - cy, xx - cx) - a)))
    z = np.full((m, m), 0.45) + 0.03 * rng.standard_normal((m, m))
    shifted = np.hypot(xx - cx - shift * math.cos(a), yy - cy - shift * math.sin(a)) < 21
    z[shifted & (np.abs(ang) < 0.65)] = 0.12
    z[r < 21] = 0.05
    z += 0.85 * np.exp(-0.5 * (r / 4.5) ** 2)
    z[np.hypot(xx - 100, yy - 100) > 80] = 0.3  # outside the primer
    return z, (cx, cy)


def test_rim_around_floor_spot_smaller_than_any_pin() -> None:
    """Tuning seed 2719, coaxial, G2719-0000-2719000 (3.125 um both crops 45 px off, 2.5 um
    case head 55 px): the floor's bright spot (r 6.6 working px) is smaller than any pin, so
    no Hough circle proposes it, and filling the closed edges merged it with the rim and the
    aperture-shear mark joining the rim into one region. The best-covered outline was then
    the rim and the mark together (0.82 against the rim's 0.79). Now the innermost closed
    outline around each candidate's centre is proposed too: the spot, and the rim
    concentric with it is the pin."""
    from ballistics.segment import _Circle, _find_pin_2d

    z, (cx, cy) = _coaxial_pin_with_mark(10.0)
    pin = _find_pin_2d(z, _Circle(100.0, 100.0, 80.0, 1.0), 25e-6, 1)
    assert pin is not None
    row, col, major, minor = pin.full[:4]
    assert math.dist((row, col), (cy, cx)) < 1.0  # prep-8: 4.8 px off (rim and mark)
    assert abs(minor - 21.0) < 1.5 and abs(major - 21.0) < 1.5


def test_rim_found_around_floor_spot_is_not_left_for_rim_joined_by_mark() -> None:
    """As above with a longer mark: the outline of rim and mark encloses the rim, is well
    covered and 1.3 times its area, and was taken next (6 px off). A rim taken as concentric
    with the floor (spot) it encloses is left only for a concentric outline."""
    from ballistics.segment import _Circle, _find_pin_2d

    z, (cx, cy) = _coaxial_pin_with_mark(12.0)
    pin = _find_pin_2d(z, _Circle(100.0, 100.0, 80.0, 1.0), 25e-6, 1)
    assert pin is not None
    assert math.dist(pin.full[:2], (cy, cx)) < 1.0  # prep-8: 6.0 px off


def test_elongated_rim_around_lit_floor_merged_with_mark() -> None:
    """Tuning seed 2719, ring_high, G2719-0011-2719001 (elongated, 2.5 um, both crops 27 px
    off): under a high ring light the wall is a thin dark band around the lit floor; a dark
    mark beside a long side joins it, and filling merged floor, wall and mark into one
    region. An outline riding the floor's edge on one side and the rim on the other was the
    best covered (0.86 against the rim's 0.82). Here on the working grid (25 um): the lit
    floor, proposed as the innermost closed outline around a candidate's centre, finds the
    rim concentric with it."""
    from ballistics import _segment_helpers as h
    from ballistics.segment import _Circle, _find_pin_2d

    rng = np.random.default_rng(3)
    m = 200
    yy, xx = np.mgrid[:m, :m]
    cx, cy, half, b, th = 101.3, 98.6, 8.8, 14.0, 2.1
    z = np.full((m, m), 0.85) + 0.03 * rng.standard_normal((m, m))
    a = th + math.pi / 2
    su = (xx - cx) * math.cos(a) + (yy - cy) * math.sin(a)
    sv = -(xx - cx) * math.sin(a) + (yy - cy) * math.cos(a)
    z[(su > 0.85 * b) & (su < 0.85 * b + 12) & (np.abs(sv) < 0.6 * b)] = 0.35  # the mark
    dist = h.stadium_distance(xx, yy, cx, cy, half, b, th)
    z[dist < 0] = 0.35  # the wall
    z[dist < -3.0] = 0.95  # the lit floor
    z[np.hypot(xx - 100, yy - 100) > 80] = 0.6  # outside the primer
    pin = _find_pin_2d(z, _Circle(100.0, 100.0, 80.0, 1.0), 25e-6, 1)
    assert pin is not None
    row, col, major, minor = pin.full[:4]
    assert math.dist((row, col), (cy, cx)) < 1.2  # prep-8: 2.2 px off (riding outline)
    assert major / minor > 1.4  # elongated


def test_partly_invalid_elongated_pin_centre() -> None:
    """Half an elongated pin invalid: a stadium fitted to the rim and the invalid part's
    outline at once. Before: the rim's ellipse or circle fit, 18-45 px off (and "round")."""
    from ballistics.crop_styles import breech_face_pin_present, pin_partly_invalid

    for (fa, shot), ang in zip(_elongated_shots(2, seed=3), (30.0, 200.0), strict=True):
        scan, tr = fire(fa, shot_seed=shot, spacing_m=6.25e-6)
        st = pin_partly_invalid(breech_face_pin_present(scan, tr), tr, cut_angle_deg=ang)
        seg = segment(st.scan)
        assert seg.firing_pin_found and seg.firing_pin_shape == "elongated"
        assert math.dist(seg.firing_pin_center, st.fp_center) < 10.0  # measured 6.4, 1.6


def test_photometric_stereo_soft_primer_step_is_not_refused() -> None:
    """A raw photometric-stereo scan flattens the primer step (1.9 um, 1.9 x the slope: below
    the usual 2 um and 3 x on the working grid). Refined on full-resolution profiles it passes
    as a step, instead of refusing the scan."""
    from ballistics.instruments import INSTRUMENTS, instrument_rng, record
    from ballistics.synth import fired_surface, make_firearms

    fa = [f for f in make_firearms(40, seed=5) if f.fp_shape == "round"][1]
    shot = 5 * 1000 + 2
    surface = fired_surface(fa, shot_seed=shot, spacing_m=6.25e-6)
    scan, tr = record(
        surface,
        "photometric_stereo",
        rng=instrument_rng(fa.seed, shot, "photometric_stereo"),
        params=replace(INSTRUMENTS["photometric_stereo"].params, pixel_um=6.25),
    )
    seg = segment(scan)
    assert seg.style == "case_head"
    # measured 3.5 px as a weak step; 0.01 px since the step circle of a raw scan is refined
    # on full-resolution profiles (the step then passes as a step)
    assert math.dist(seg.primer_center, tr.primer_center) < 1.0


def test_photometric_stereo_groove_primer_edge_is_not_refused() -> None:
    """A raw photometric-stereo case head whose primer step integrated to a groove (-1.4 um,
    0.3 x the slope: not even a weak step) is segmented from the ring of the groove's steep
    walls, refined on full-resolution profiles. Before: refused (no primer edge)."""
    from ballistics.instruments import INSTRUMENTS, instrument_rng, record
    from ballistics.synth import fired_surface, make_firearms

    fa = next(f for f in make_firearms(40, seed=5) if f.fp_shape == "elongated")
    shot = 5 * 1000 + 1
    surface = fired_surface(fa, shot_seed=shot, spacing_m=7.5e-6)
    scan, tr = record(
        surface,
        "photometric_stereo",
        rng=instrument_rng(fa.seed, shot, "photometric_stereo"),
        params=replace(INSTRUMENTS["photometric_stereo"].params, pixel_um=7.5),
    )
    seg = segment(scan)
    assert seg.style == "case_head"
    assert math.dist(seg.primer_center, tr.primer_center) < 1.0  # measured 0.01 px
    assert math.dist(seg.firing_pin_center, tr.fp_center) < 5.0
    # the ring fallback alone (taken when even a full-resolution step check fails) finds it
    from scipy import ndimage

    from ballistics import _segment_helpers as h
    from ballistics.segment import _find_primer_ring

    f = 3  # 7.5 um -> the 25 um working grid
    zlo, wlo = h.downsample(scan.data, scan.mask, f)
    z = ndimage.median_filter(h.fill_nearest(zlo, wlo > 0.5), size=3, mode="nearest")
    ring = _find_primer_ring(z, 7.5e-6 * f, scan, f)
    assert ring is not None and ring.quality <= 0.5
    centre = ((ring.cy + 0.5) * f - 0.5, (ring.cx + 0.5) * f - 0.5)
    assert math.dist(centre, tr.primer_center) < 1.0


def test_confocal_narrow_disc_primer_from_the_case_head_crescent() -> None:
    """A confocal scan cropped to a disc a little narrower than the primer and off its
    centre: the wall dropped out and only a thin crescent of case head is left on one side.
    The crescent's inner edge gives the primer circle (refined across the dropped-out wall).
    Before: the crop boundary stood in for the primer edge, 40 px off."""
    from ballistics.instruments import INSTRUMENTS, instrument_rng, record
    from ballistics.synth import fired_surface, make_firearms

    fa = next(f for f in make_firearms(40, seed=3) if f.fp_shape == "round")
    shot = 3 * 1000
    surface = fired_surface(fa, shot_seed=shot, spacing_m=6.25e-6)
    scan, tr = record(
        surface,
        "confocal",
        rng=instrument_rng(fa.seed, shot, "confocal"),
        params=replace(INSTRUMENTS["confocal"].params, pixel_um=6.25),
    )
    st = styled_variants(scan, tr, seed=shot, variants=("disc_fov_narrow",))[0]
    seg = segment(st.scan)
    assert seg.style == "disc_fov"
    assert math.dist(seg.primer_center, st.primer_center) < 2.0  # measured 0.2 px


def _recorded(seed: int, i: int, instrument: str, spacing_um: float):
    """Shot ``i`` of ``segmentation_styles``'s casing pick (alternately round and elongated
    pins of ``make_firearms(40, seed)``), recorded by ``instrument``; (scan, truth, shot)."""
    from ballistics.instruments import INSTRUMENTS, instrument_rng, record
    from ballistics.synth import fired_surface, make_firearms

    firearms = make_firearms(40, seed=seed)
    pool = [fa for fa in firearms if fa.fp_shape == ("round" if i % 2 == 0 else "elongated")]
    fa = pool[i // 2]
    shot = seed * 1000 + i
    if instrument == "generic":
        scan, tr = fire(fa, shot_seed=shot, spacing_m=spacing_um * 1e-6)
        return scan, tr, shot
    surface = fired_surface(fa, shot_seed=shot, spacing_m=spacing_um * 1e-6)
    scan, tr = record(
        surface,
        instrument,
        rng=instrument_rng(fa.seed, shot, instrument),
        params=replace(INSTRUMENTS[instrument].params, pixel_um=spacing_um),
    )
    return scan, tr, shot


@pytest.mark.parametrize(
    ("instrument", "i", "before_px"),
    [("confocal", 0, 26.0), ("confocal", 2, 26.8), ("confocal", 3, 6.9), ("generic", 1, 5.6)],
)
def test_partly_invalid_pin_from_the_breech_face_outline(
    instrument: str, i: int, before_px: float
) -> None:
    """A breech face with the pin impression partly invalid (crop
    ``breech_face_pin_present+pin_partly_invalid``, seed 3, 7.5 um). On a confocal scan the
    dent's steep wall drops out all round, so no measured rim is left; the pin is fitted to
    where the measured breech face ends, the invalid patch told from the thin wall dropout
    by its thickness, never to where the floor meets the invalid data. Before: the floor's
    edge (straight cut included) or the moments of dent and patch, ``before_px`` off."""
    scan, tr, shot = _recorded(3, i, instrument, 7.5)
    st = styled_variants(scan, tr, seed=shot)[5]
    assert st.variant == "breech_face_pin_present+pin_partly_invalid"
    seg = segment(st.scan)
    assert seg.firing_pin_found and seg.firing_pin_shape == st.fp_shape
    assert any("invalid" in n for n in seg.notes)
    assert math.dist(seg.firing_pin_center, st.fp_center) < min(5.0, before_px / 2)
    # measured 0.4, 0.6, 0.5 and 0.3 px


def test_confocal_case_head_with_a_soft_primer_edge_is_accepted() -> None:
    """A raw confocal case head (seed 4049, casing 0, 7.5 um) whose primer edge slopes stay
    under the edge threshold over most of the circle (Hough coverage 38 %, under the 40 %
    an uncropped scan needs): looked for again at a lower slope threshold, it steps clearly.
    Before: refused ("no breech face to compare")."""
    scan, tr, _ = _recorded(4049, 0, "confocal", 7.5)
    seg = segment(scan)
    assert seg.style == "case_head" and not seg.precropped
    assert math.dist(seg.primer_center, tr.primer_center) < 1.0  # measured 0.05 px
    assert math.dist(seg.firing_pin_center, tr.fp_center) < 5.0  # measured 0.02 px
