"""Instrument models: valid scans, determinism, each instrument's documented signature."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from ballistics.errors import BallisticsError
from ballistics.instruments import (
    INSTRUMENTS,
    ConfocalParams,
    SideLightParams,
    confocal,
    focus_variation,
    instrument_rng,
    photometric_stereo,
    record,
    side_light,
)
from ballistics.scan import Scan
from ballistics.synth import (
    Firearm,
    FiredSurface,
    fire,
    fired_surface,
    make_firearms,
    write_corpus,
)

GUN_A = Firearm("A", "9mm", "granular", "round", (6e-4, 6e-4), 101, texture_amplitude_m=2e-6)
GUN_B = Firearm("B", "9mm", "granular", "round", (6e-4, 6e-4), 202, texture_amplitude_m=2e-6)


def _surface(pixel_um: float, gun: Firearm = GUN_A, shot: int = 1) -> FiredSurface:
    return fired_surface(gun, shot_seed=shot, spacing_m=pixel_um * 1e-6)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _annulus(truth, shape, lo: float, hi: float) -> np.ndarray:
    """Pixels between ``lo`` and ``hi`` primer radii from the primer centre, outside the pin."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    r = np.hypot(yy - truth.primer_center[0], xx - truth.primer_center[1])
    rf = np.hypot(yy - truth.fp_center[0], xx - truth.fp_center[1])
    rp = truth.primer_radius_px
    return (r > lo * rp) & (r < hi * rp) & (rf > 1.4 * truth.fp_axes_px[0])


def _highpass(img: np.ndarray, sigma_px: float) -> np.ndarray:
    return img - cv2.GaussianBlur(img, (0, 0), sigma_px)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    x, y = a - a.mean(), b - b.mean()
    return float((x * y).sum() / math.sqrt((x * x).sum() * (y * y).sum()))


# --------------------------------------------------------------------------------------
# catalogue, validity, determinism


def test_catalogue_covers_the_documented_instruments() -> None:
    kinds = {n: i.kind for n, i in INSTRUMENTS.items()}
    assert {n for n, k in kinds.items() if k == "topography"} == {
        "confocal",
        "focus_variation",
        "photometric_stereo",
    }
    assert {n for n, k in kinds.items() if k == "image"} == {
        "ring_low",
        "ring_high",
        "side_light",
        "coaxial",
    }
    pixels = [p for i in INSTRUMENTS.values() for p in i.pixels_um]
    assert min(pixels) == 2.5 and max(pixels) == 7.5
    assert INSTRUMENTS["photometric_stereo"].pixels_um == (7.4,)
    for inst in INSTRUMENTS.values():
        assert inst.params.pixel_um in inst.pixels_um


@pytest.mark.parametrize("name", list(INSTRUMENTS))
def test_each_instrument_records_a_valid_scan(name: str) -> None:
    inst = INSTRUMENTS[name]
    pixel = inst.pixels_um[-1]
    surface = _surface(pixel)
    scan, truth = record(surface, name, rng=_rng())
    assert scan.kind == inst.kind
    # the surface was fired at the instrument's pixel: no resampling
    assert scan.spacing_m == pytest.approx((pixel * 1e-6, pixel * 1e-6))
    assert scan.shape == surface.shape
    assert truth.instrument == name and truth.spacing_m == pytest.approx(pixel * 1e-6)
    assert truth.primer_center == surface.truth.primer_center
    assert scan.provenance[-1].name.startswith("instrument.")
    assert scan.provenance[-1].name == f"instrument.{inst.model.__name__}"
    if inst.kind == "topography":
        z = scan.data[scan.mask]
        assert np.abs(z).max() < 1e-3  # metres
        if name == "photometric_stereo":
            assert scan.valid_fraction == 1.0  # no dropouts
        else:
            assert 0.9 < scan.valid_fraction < 0.999
    else:
        assert scan.valid_fraction == 1.0
        assert scan.data.min() >= 0.0 and scan.data.max() <= 1.0
        assert scan.data.std() > 0.01
    if name == "side_light":
        assert truth.light_azimuth_deg == pytest.approx(135.0)
    else:
        assert truth.light_azimuth_deg is None


@pytest.mark.parametrize("name", list(INSTRUMENTS))
def test_same_seed_same_scan(name: str) -> None:
    surface = _surface(7.5)
    prm = dataclasses.replace(INSTRUMENTS[name].params, pixel_um=7.5)
    a, ta = record(surface, name, rng=_rng(3), params=prm)
    b, tb = record(surface, name, rng=_rng(3), params=prm)
    c, _ = record(surface, name, rng=_rng(4), params=prm)
    assert ta == tb
    assert np.array_equal(a.mask, b.mask)
    assert np.array_equal(a.data[a.mask], b.data[b.mask])
    assert not (np.array_equal(a.mask, c.mask) and np.array_equal(a.data[a.mask], c.data[c.mask]))


def test_resampling_rescales_the_truth() -> None:
    fine = _surface(3.125)
    coarse = _surface(6.25)
    scan, truth = record(fine, "confocal", rng=_rng(), params=ConfocalParams(pixel_um=6.25))
    assert scan.spacing_m == pytest.approx((6.25e-6, 6.25e-6))
    assert abs(scan.shape[0] - coarse.shape[0]) <= 2
    ct = coarse.truth
    assert math.dist(truth.primer_center, ct.primer_center) < 1.0
    assert math.dist(truth.fp_center, ct.fp_center) < 1.0
    assert truth.primer_radius_px == pytest.approx(ct.primer_radius_px)
    assert truth.fp_axes_px == pytest.approx(ct.fp_axes_px)
    # and the recorded surface is where the truth says: the pin is the deepest place
    r, c = (round(v) for v in truth.fp_center)
    pin = np.nanmedian(scan.masked()[r - 2 : r + 3, c - 2 : c + 3])
    assert pin < np.nanmedian(scan.data[scan.mask]) - 0.1e-3


def test_record_validates() -> None:
    surface = _surface(7.5)
    with pytest.raises(BallisticsError, match=r"unknown instrument 'lidar'.*confocal"):
        record(surface, "lidar", rng=_rng())
    with pytest.raises(BallisticsError, match="takes ConfocalParams"):
        record(surface, "confocal", rng=_rng(), params=SideLightParams())
    with pytest.raises(BallisticsError, match="pixel_um"):
        confocal(surface, ConfocalParams(pixel_um=0.0), rng=_rng())
    bad = FiredSurface(np.full((32, 32), np.nan), 7.5e-6, surface.truth)
    with pytest.raises(BallisticsError, match="finite"):
        confocal(bad, rng=_rng())


# --------------------------------------------------------------------------------------
# every documented parameter changes the output


def _perturbed(field: str, value: object) -> object:
    if field == "bits":
        return 8 if value != 8 else 12
    if field == "azimuth_deg":
        return 45.0 if value is None else float(value) + 90.0  # type: ignore[arg-type]
    if field == "psf_sigma_um":  # a PSF well below the pixel is no blur at all: widen it
        return float(value) * 4.0  # type: ignore[arg-type]
    if isinstance(value, int) and not isinstance(value, bool):
        return value // 2
    assert isinstance(value, float)
    return value * 0.5 if value else 0.2


def _strip() -> FiredSurface:
    """A strip from the pin centre out across the breech face, primer edge and case head."""
    s = _surface(7.5)
    r, c = (round(v) for v in s.truth.fp_center)
    h = s.height_m
    cols = slice(c, c + 340) if c + 340 <= h.shape[1] else slice(c - 340, c)
    return FiredSurface(np.ascontiguousarray(h[r - 40 : r + 40, cols]), s.spacing_m, s.truth)


_PARAM_CASES = [
    (name, f.name)
    for name, inst in INSTRUMENTS.items()
    for f in dataclasses.fields(inst.params)
    if name not in ("ring_high",)  # same model and fields as ring_low
]


@pytest.mark.parametrize("name,field", _PARAM_CASES)
def test_every_parameter_changes_the_output(name: str, field: str) -> None:
    surface = _strip()
    inst = INSTRUMENTS[name]
    base = dataclasses.replace(inst.params, pixel_um=7.5)
    if field == "pixel_um":
        base = inst.params
    new = dataclasses.replace(base, **{field: _perturbed(field, getattr(base, field))})
    a = inst.model(surface, base, rng=_rng(1))
    b = inst.model(surface, new, rng=_rng(1))
    same = (
        a.shape == b.shape
        and np.array_equal(a.mask, b.mask)
        and np.array_equal(a.data[a.mask], b.data[b.mask])
    )
    assert not same, f"{name}.{field} did not change the scan"


# --------------------------------------------------------------------------------------
# each instrument's signature


def test_photometric_stereo_drifts_at_low_frequency_and_flattens_slopes() -> None:
    surface = _surface(7.4)
    truth = surface.truth
    ps = photometric_stereo(surface, rng=_rng())
    cf = confocal(surface, ConfocalParams(pixel_um=7.4), rng=_rng())
    low = 200e-6 / 7.4e-6  # sigma of the low-pass, pixels

    def low_residual(scan) -> float:
        res = np.where(scan.mask, scan.data - surface.height_m, 0.0)
        w = scan.mask.astype(float)
        lp = cv2.GaussianBlur(res, (0, 0), low) / np.maximum(cv2.GaussianBlur(w, (0, 0), low), 1e-6)
        lp = lp[scan.mask]
        return float((lp - lp.mean()).std())

    assert low_residual(ps) > 0.5e-6  # integration drift, warp and bowl: micrometres
    assert low_residual(cf) < 0.05e-6  # confocal: white noise only, averages out

    def pin_depth(scan) -> float:
        r, c = (round(v) for v in truth.fp_center)
        centre = np.nanmedian(scan.masked()[r - 2 : r + 3, c - 2 : c + 3])
        ring = _annulus(truth, scan.shape, 0.55, 0.75) & scan.mask
        return float(np.median(scan.data[ring]) - centre)

    true_depth = pin_depth(
        Scan(surface.height_m, np.ones(surface.shape, bool), cf.spacing_m, "topography")
    )
    assert pin_depth(cf) == pytest.approx(true_depth, rel=0.03)
    assert pin_depth(ps) < 0.9 * true_depth  # slope saturation: a shallower pin


def test_confocal_loses_steep_slopes_only() -> None:
    surface = _surface(3.125)
    scan = confocal(surface, rng=_rng())
    gy, gx = np.gradient(surface.height_m, surface.spacing_m)
    slope = np.degrees(np.arctan(np.hypot(gx, gy)))
    steep, flat = slope > 50, slope < 20
    assert steep.sum() > 1000
    lost_or_spiked = ~scan.mask | (np.abs(scan.data - surface.height_m) > 3e-6)
    assert lost_or_spiked[steep].mean() > 0.95
    assert (~scan.mask)[flat].mean() < 0.01
    # fine white noise where measured on flat ground
    res = (scan.data - surface.height_m)[flat & scan.mask]
    assert np.median(np.abs(res)) < 0.05e-6


def test_focus_variation_is_noisier_and_patchier_where_texture_is_low() -> None:
    surface = _surface(4.4)
    truth = surface.truth
    scan = focus_variation(surface, rng=_rng())
    head = _annulus(truth, scan.shape, 1.08, 1.3)  # case head: smooth, 0.4 um roughness
    face = _annulus(truth, scan.shape, 0.45, 0.8)  # breech face: micrometres of texture
    # the transfer is smooth: compare with the surface blurred as the instrument does
    from ballistics.instruments import _to_pixels

    ref = _to_pixels(surface, 4.4, INSTRUMENTS["focus_variation"].params.psf_sigma_um)
    res = scan.data - ref
    noise_head = float(np.std(res[head & scan.mask]))
    noise_face = float(np.std(res[face & scan.mask]))
    assert noise_head > 2.0 * noise_face, (noise_head, noise_face)
    assert (~scan.mask)[head].mean() > 2.0 * (~scan.mask)[face].mean()


def test_side_light_shading_inverts_when_the_light_turns_by_180_degrees() -> None:
    surface = _surface(6.25)
    face = _annulus(surface.truth, surface.shape, 0.45, 0.85)
    quiet = {"shot_noise": 0.0, "read_noise": 0.0}
    imgs = {}
    for az in (30.0, 120.0, 210.0):
        prm = SideLightParams(pixel_um=6.25, azimuth_deg=az, **quiet)
        imgs[az] = _highpass(side_light(surface, prm, rng=_rng()).data, 4.0)[face]
    assert _corr(imgs[30.0], imgs[210.0]) < -0.6
    assert abs(_corr(imgs[30.0], imgs[120.0])) < 0.3
    # the azimuth is metadata of the scan and of the truth, drawn when not given
    s1, t1 = record(surface, "side_light", rng=_rng(1), params=SideLightParams(azimuth_deg=None))
    _, t2 = record(surface, "side_light", rng=_rng(2), params=SideLightParams(azimuth_deg=None))
    assert t1.light_azimuth_deg != t2.light_azimuth_deg
    assert s1.provenance[-1].params["light_azimuth_deg"] == t1.light_azimuth_deg


def test_ring_lights_turn_with_the_casing_and_differ_from_the_legacy_render() -> None:
    from ballistics.render import render_ring_light

    surface = _surface(6.25)
    face = _annulus(surface.truth, surface.shape, 0.45, 0.85)
    ref = render_ring_light(fire(GUN_A, shot_seed=1)[0])
    face &= ref.mask
    legacy = _highpass(np.where(ref.mask, ref.data, np.nanmean(ref.data)), 4.0)[face]
    for name in ("ring_low", "ring_high", "coaxial"):
        prm = dataclasses.replace(INSTRUMENTS[name].params, pixel_um=6.25)
        img = _highpass(record(surface, name, rng=_rng(), params=prm)[0].data, 4.0)[face]
        assert abs(_corr(img, legacy)) < 0.9, name
    # ring_low and ring_high are different instruments, not one rescaled
    lo = record(surface, "ring_low", rng=_rng(), params=INSTRUMENTS["ring_low"].params)[0]
    hi_prm = dataclasses.replace(INSTRUMENTS["ring_high"].params, pixel_um=6.25)
    hi = record(surface, "ring_high", rng=_rng(), params=hi_prm)[0]
    assert lo.data.mean() < hi.data.mean() - 0.2


# --------------------------------------------------------------------------------------
# matching still works through each 3-D instrument


@pytest.mark.parametrize("name", ["confocal", "focus_variation", "photometric_stereo"])
def test_same_gun_pairs_correlate_after_prepare(name: str) -> None:
    from ballistics.compare import compare
    from ballistics.pipeline import prepare

    inst = INSTRUMENTS[name]
    prepared = []
    for gun, shot, pixel in (
        (GUN_A, 1, inst.pixels_um[0]),
        (GUN_A, 2, inst.pixels_um[-1]),
        (GUN_B, 1, inst.pixels_um[-1]),
    ):
        surface = _surface(pixel, gun, shot)
        scan, _ = record(surface, name, rng=instrument_rng(gun.seed, shot, name))
        prepared.append(prepare(scan))
    same = compare(prepared[0], prepared[1])
    diff = compare(prepared[0], prepared[2])
    assert same.cmc >= 6 and same.correlation > 0.3, (same.cmc, same.correlation)
    assert diff.cmc <= 2 and same.score > diff.score + 0.5


# --------------------------------------------------------------------------------------
# corpus and command line


def test_write_corpus_with_instruments(tmp_path: Path) -> None:
    from ballistics.io import read_scan

    m2 = write_corpus(tmp_path / "side", guns=1, shots=2, seed=3, instrument="side_light")
    rows = list(csv.DictReader(m2.read_text().splitlines()))
    assert [r["file"].rsplit(".", 1)[1] for r in rows] == ["png", "png"]
    assert {r["instrument"] for r in rows} == {"side_light"}
    assert all(float(r["light_azimuth_deg"]) == 135.0 for r in rows)
    img = read_scan(m2.parent / rows[0]["file"])
    assert img.kind == "image"
    assert any(
        math.isclose(img.spacing_m[0] * 1e6, p, rel_tol=1e-5)
        for p in INSTRUMENTS["side_light"].pixels_um
    )
    assert float(rows[0]["spacing_m"]) == pytest.approx(img.spacing_m[0], rel=1e-5)

    m3 = write_corpus(tmp_path / "ps", guns=1, shots=1, seed=3, instrument="photometric_stereo")
    (row,) = list(csv.DictReader(m3.read_text().splitlines()))
    scan = read_scan(m3.parent / row["file"])
    fa = make_firearms(1, seed=3)[0]
    ref, _ = record(
        fired_surface(fa, shot_seed=3 * 1000003, spacing_m=7.4e-6),
        "photometric_stereo",
        rng=instrument_rng(fa.seed, 3 * 1000003, "photometric_stereo"),
    )
    assert scan.kind == "topography" and scan.shape == ref.shape
    assert np.allclose(scan.data[scan.mask], ref.data[ref.mask], atol=1e-9)
    assert row["instrument"] == "photometric_stereo" and row["light_azimuth_deg"] == ""

    with pytest.raises(BallisticsError, match=r"unknown instrument 'xray'.*photometric_stereo"):
        write_corpus(tmp_path / "bad", guns=1, shots=1, instrument="xray")
    assert not (tmp_path / "bad").exists()


def test_cli_synth_instrument(tmp_path: Path, capsys) -> None:
    from server.cli import main

    out = tmp_path / "c"
    argv = ["synth", str(out), "--guns", "1", "--shots", "1", "--instrument", "coaxial"]
    assert main(argv) == 0
    assert "instrument coaxial" in capsys.readouterr().out
    assert len(list(out.glob("*.png"))) == 1 and not list(out.glob("*.x3p"))
    bad = ["synth", str(tmp_path / "d"), "--guns", "1", "--shots", "1", "--instrument", "xray"]
    assert main(bad) == 2
    assert "unknown instrument 'xray'" in capsys.readouterr().err
