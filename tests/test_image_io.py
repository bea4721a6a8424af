"""Image reading: real NBIDE PNGs, PNG/TIFF/JPEG at 8 and 16 bits, spacing from file or caller."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from ballistics.errors import BallisticsError, MissingSpacingError, ScanFormatError
from ballistics.image_io import read_image
from ballistics.io import read_scan

# ---- helpers --------------------------------------------------------------------------------


def grey(dtype: type = np.uint8, shape: tuple[int, int] = (30, 40), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    return rng.integers(0, top, size=shape, endpoint=True).astype(dtype)


def png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def png_bytes(
    pixels: np.ndarray, *, px_per_m: tuple[int, int] | None = None, unit: int = 1
) -> bytes:
    """PNG from cv2, with a pHYs chunk (pixels per unit x, y) inserted after IHDR."""
    ok, enc = cv2.imencode(".png", pixels)
    assert ok
    raw = enc.tobytes()
    if px_per_m is None:
        return raw
    ihdr_end = 8 + 8 + 13 + 4
    phys = png_chunk(b"pHYs", struct.pack(">IIB", px_per_m[0], px_per_m[1], unit))
    return raw[:ihdr_end] + phys + raw[ihdr_end:]


def tiff_bytes(pixels: np.ndarray, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, pixels, **kwargs)  # type: ignore[arg-type]
    return buf.getvalue()


def jpeg_bytes(pixels: np.ndarray) -> bytes:
    ok, enc = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert ok
    return enc.tobytes()


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


# ---- real files -----------------------------------------------------------------------------


def test_nbide_pngs(nbide_paths: list[Path]) -> None:
    for path in nbide_paths:
        scan = read_image(path)
        assert scan.shape == (1944, 2592)
        assert scan.kind == "image"
        # pHYs says 10039.5 dpi, i.e. 25.4 mm / 10039.5 = 2.53 um per pixel.
        assert scan.spacing_m == pytest.approx((2.53e-6, 2.53e-6), rel=1e-3)
        assert 0.0 <= scan.data.min() and scan.data.max() <= 1.0
        assert scan.mask.all()
        step = scan.provenance[-1]
        assert step.name == "read_image" and step.params["spacing_source"] == "png:pHYs"
        assert step.stats["dtype"] == "uint8"


# ---- PNG ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_grey_with_phys(dtype: type) -> None:
    pixels = grey(dtype)
    scan = read_image(png_bytes(pixels, px_per_m=(400_000, 200_000)))
    assert scan.spacing_m == (5e-6, 2.5e-6)  # (dy, dx) from (ppu_y, ppu_x)
    np.testing.assert_allclose(scan.data, pixels / np.iinfo(dtype).max, rtol=0, atol=1e-12)
    assert scan.provenance[-1].stats["dtype"] == np.dtype(dtype).name


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_colour_becomes_luminance(dtype: type) -> None:
    rgb = np.stack([grey(dtype, seed=s) for s in (1, 2, 3)], axis=-1)
    scan = read_image(png_bytes(rgb[..., ::-1].copy(), px_per_m=(400_000, 400_000)))  # cv2 BGR
    np.testing.assert_allclose(scan.data, luminance(rgb / np.iinfo(dtype).max), atol=1e-12)


def test_png_alpha_zero_is_masked() -> None:
    bgra = np.stack([grey(seed=s) for s in (1, 2, 3, 4)], axis=-1)
    bgra[..., 3] = 255
    bgra[:5, :7, 3] = 0
    scan = read_image(png_bytes(bgra, px_per_m=(400_000, 400_000)))
    assert not scan.mask[:5, :7].any()
    assert scan.mask.sum() == bgra.shape[0] * bgra.shape[1] - 35


def test_png_phys_without_metre_unit_is_missing_spacing() -> None:
    raw = png_bytes(grey(), px_per_m=(1, 1), unit=0)  # unit 0: aspect ratio only
    with pytest.raises(MissingSpacingError, match=r"--spacing-um.*spacing_m"):
        read_image(raw)


def test_png_with_implausible_resolution_is_refused() -> None:
    raw = png_bytes(grey(), px_per_m=(1, 1), unit=1)  # 1 m per pixel
    with pytest.raises(MissingSpacingError, match="implausible"):
        read_image(raw)


def test_explicit_spacing_overrides_the_file() -> None:
    raw = png_bytes(grey(), px_per_m=(400_000, 400_000))
    scan = read_image(raw, spacing_m=3e-6)
    assert scan.spacing_m == (3e-6, 3e-6)
    assert scan.provenance[-1].params["spacing_source"] == "explicit"


def test_spacing_in_micrometres_is_refused_with_a_hint() -> None:
    with pytest.raises(BallisticsError, match="micrometres"):
        read_image(png_bytes(grey()), spacing_m=2.5)


# ---- TIFF -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize(
    ("unit", "px_per_unit", "expected_m"),
    [("CENTIMETER", 4000.0, 2.5e-6), ("INCH", 10160.0, 2.5e-6)],
)
def test_tiff_grey_with_resolution(
    dtype: type, unit: str, px_per_unit: float, expected_m: float
) -> None:
    pixels = grey(dtype)
    raw = tiff_bytes(pixels, resolution=(px_per_unit, px_per_unit), resolutionunit=unit)
    scan = read_image(raw)
    assert scan.spacing_m == pytest.approx((expected_m, expected_m), rel=1e-12)
    np.testing.assert_allclose(scan.data, pixels / np.iinfo(dtype).max, atol=1e-12)
    assert scan.provenance[-1].params["spacing_source"] == "tiff:resolution"


def test_tiff_colour_becomes_luminance() -> None:
    rgb = np.stack([grey(np.uint16, seed=s) for s in (1, 2, 3)], axis=-1)
    raw = tiff_bytes(rgb, photometric="rgb", resolution=(4000, 4000), resolutionunit="CENTIMETER")
    np.testing.assert_allclose(read_image(raw).data, luminance(rgb / 65535.0), atol=1e-12)


def test_tiff_without_absolute_unit_needs_spacing() -> None:
    raw = tiff_bytes(grey())  # tifffile writes 1 px per "no unit"
    with pytest.raises(MissingSpacingError, match="--spacing-um"):
        read_image(raw)
    assert read_image(raw, spacing_m=2e-6).spacing_m == (2e-6, 2e-6)


# ---- JPEG -----------------------------------------------------------------------------------


def test_jpeg_with_explicit_spacing() -> None:
    # A smooth ramp survives JPEG compression almost unchanged (no black: see black_holes).
    ramp = np.tile(np.linspace(8, 255, 64).astype(np.uint8), (48, 1))
    raw = jpeg_bytes(ramp)
    scan = read_image(raw, spacing_m=4e-6)
    assert scan.shape == (48, 64) and scan.spacing_m == (4e-6, 4e-6)
    np.testing.assert_allclose(scan.data, ramp / 255.0, atol=0.03)


def test_jpeg_without_spacing_is_refused() -> None:
    with pytest.raises(MissingSpacingError, match=r"--spacing-um.*spacing_m"):
        read_image(jpeg_bytes(grey()))


def test_jpeg_colour_becomes_luminance() -> None:
    bgr = np.zeros((32, 32, 3), np.uint8)
    bgr[..., 2] = 200  # pure red
    scan = read_image(jpeg_bytes(bgr), spacing_m=1e-6)
    assert scan.data.mean() == pytest.approx(0.299 * 200 / 255, abs=0.02)


# ---- dispatch -------------------------------------------------------------------------------


def test_read_scan_dispatches_on_content_not_name(tmp_path: Path) -> None:
    pixels = grey()
    cases = {
        "png": png_bytes(pixels, px_per_m=(400_000, 400_000)),
        "tiff": tiff_bytes(pixels, resolution=(4000, 4000), resolutionunit="CENTIMETER"),
        "jpeg": jpeg_bytes(pixels),
    }
    for fmt, raw in cases.items():
        path = tmp_path / "misnamed.x3p"
        path.write_bytes(raw)
        spacing = 2.5e-6 if fmt == "jpeg" else None
        from_path = read_scan(path, spacing_m=spacing)
        from_bytes = read_scan(raw, name="upload", spacing_m=spacing)
        assert from_path.provenance[-1].params["format"] == fmt
        assert from_bytes.provenance[-1].params["file"] == "upload"
        np.testing.assert_array_equal(from_path.data, from_bytes.data)


def test_read_scan_refuses_unknown_and_empty_content(tmp_path: Path) -> None:
    with pytest.raises(ScanFormatError, match=r"X3P.*PNG.*TIFF.*JPEG"):
        read_scan(b"GIF89a" + bytes(100))
    with pytest.raises(ScanFormatError, match="empty file"):
        read_scan(b"")
    with pytest.raises(ScanFormatError, match="no such file"):
        read_scan(tmp_path / "nothing.png")


def test_black_holes_are_invalid_but_lone_black_pixels_are_kept(tmp_path) -> None:
    """A tool without an alpha channel writes missing data black; a lone black pixel is
    camera noise."""
    from ballistics.image_io import black_holes
    from ballistics.synth import png16_with_phys

    rng = np.random.default_rng(4)
    img = (20000 + 3000 * rng.standard_normal((120, 120))).clip(1, 65535).astype(np.uint16)
    img[10:20, 10:20] = 0  # 50 x 50 um at 5 um: a hole
    img[60, 60] = 0  # one crushed pixel
    img[90:92, 90:92] = 0  # 10 x 10 um: under the default 20 um
    path = tmp_path / "holes.png"
    path.write_bytes(png16_with_phys(img, (5e-6, 5e-6)))
    s = read_image(path)
    assert not s.mask[10:20, 10:20].any()
    assert s.mask[60, 60] and s.mask[90:92, 90:92].all()
    assert int((~s.mask).sum()) == 100
    assert np.all(np.isnan(s.data[~s.mask]))
    assert s.provenance[-1].stats["black_hole_pixels"] == 100
    kept = read_image(path, black_holes_um=None)
    assert kept.mask.all() and kept.data[15, 15] == 0.0
    finer = read_image(path, black_holes_um=8.0)
    assert not finer.mask[90:92, 90:92].any()
    with pytest.raises(BallisticsError):
        black_holes(s.data, s.mask, s.spacing_m, min_blob_um=0.0)


def test_a_render_with_black_holes_reads_like_one_with_alpha(tmp_path) -> None:
    """A render of a scan with dropouts, written with the holes black or as alpha: the same
    primer and pin are found and the prepared surfaces agree; read with the black kept, the
    holes take over segmentation."""
    from ballistics.pipeline import prepare
    from ballistics.render import render_ring_light
    from ballistics.segment import segment
    from ballistics.synth import fire, make_firearms, png16_with_phys

    scan, truth = fire(make_firearms(1, seed=8)[0], shot_seed=2, dropout_frac=0.05)
    img = render_ring_light(scan)
    assert not img.mask.all()
    q = np.round(np.clip(np.nan_to_num(img.masked(), nan=0.0), 0, 1) * 65535).astype(np.uint16)
    (tmp_path / "alpha.png").write_bytes(png16_with_phys(q, img.spacing_m, valid=img.mask))
    (tmp_path / "black.png").write_bytes(png16_with_phys(q, img.spacing_m))
    alpha, black = read_image(tmp_path / "alpha.png"), read_image(tmp_path / "black.png")
    np.testing.assert_array_equal(alpha.mask, img.mask)
    diff = black.mask != img.mask
    assert diff.mean() < 1e-3 and black.mask[diff].all()  # only holes under 20 um kept
    seg = segment(black)
    assert np.hypot(*np.subtract(seg.primer_center, truth.primer_center)) < 3.0
    raw = segment(read_image(tmp_path / "black.png", black_holes_um=None))
    assert np.hypot(*np.subtract(raw.primer_center, truth.primer_center)) > 10.0
    a, b = prepare(alpha).surface, prepare(black).surface
    both = a.mask & b.mask
    assert float(np.corrcoef(a.data[both], b.data[both])[0, 1]) > 0.95
