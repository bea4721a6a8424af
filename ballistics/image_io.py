"""Read 2-D microscope images (PNG, TIFF, JPEG) of cartridge-case heads as image scans.

Images are untrusted input: the header is parsed here, by hand for PNG and JPEG and by
``tifffile`` (which reads no pixel data until asked) for TIFF, and the pixel count is checked
against :class:`~ballistics.limits.Limits` before the decoder allocates anything. The pixel
spacing comes from the file (PNG ``pHYs`` in metres, TIFF resolution in inch or cm) or from the
caller; it is never guessed.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
import tifffile
from scipy import ndimage

from .errors import BallisticsError, MissingSpacingError, ScanFormatError
from .limits import DEFAULT_LIMITS, Limits, Source, read_source, source_name
from .scan import Scan

__all__ = ["BLACK_HOLES_UM", "ImageFormat", "black_holes", "image_format", "read_image"]

ImageFormat = Literal["png", "tiff", "jpeg"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGICS = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # classic and BigTIFF
_JPEG_MAGIC = b"\xff\xd8\xff"

# libpng writes 8 kB IDAT chunks, so a 256 MiB PNG has ~33k chunks; the cap keeps a file of
# millions of empty chunks from costing seconds before it is refused.
_MAX_PNG_CHUNKS = 100_000
_PNG_MAX_CHUNK = 2**31 - 1  # the PNG specification's limit on a chunk length
# Samples per pixel for each PNG colour type after cv2 decoding (palette expands to BGR).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 4, 6: 4}
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic...); not C4/C8/CC.
# Real JPEGs have a few dozen segments before the image data; a walk past this is an attack.
_MAX_JPEG_SEGMENTS = 1024
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Metres per TIFF ResolutionUnit (2 = inch, 3 = centimetre); 1 = no absolute unit.
_TIFF_UNIT_M = {2: 0.0254, 3: 0.01}
# BT.601 luma weights, the ones cv2.cvtColor uses for grey conversion.
_LUMA_RGB = np.array([0.299, 0.587, 0.114])
#: Smallest black blob (side of a square, micrometres) :func:`read_image` takes for a hole.
BLACK_HOLES_UM = 20.0


@dataclass(frozen=True)
class _Header:
    """What the header says, before any pixel is decoded; spacing (dy, dx) in metres."""

    format: ImageFormat
    width: int
    height: int
    channels: int
    bytes_per_sample: int
    spacing_m: tuple[float, float] | None
    spacing_source: str | None


def image_format(raw: bytes) -> ImageFormat | None:
    """Image format from the magic bytes at the start of ``raw``, or None."""
    if raw.startswith(_PNG_MAGIC):
        return "png"
    if raw[:4] in _TIFF_MAGICS:
        return "tiff"
    if raw.startswith(_JPEG_MAGIC):
        return "jpeg"
    return None


def read_image(
    source: Source,
    *,
    spacing_m: float | None = None,
    limits: Limits = DEFAULT_LIMITS,
    name: str | None = None,
    black_holes_um: float | None = BLACK_HOLES_UM,
) -> Scan:
    """Read a PNG, TIFF or JPEG image as an image scan of relative intensity.

    Parameters
    ----------
    source : str, path-like or bytes
        Path of the image, or its content.
    spacing_m : float, optional
        Pixel spacing in metres (same along rows and columns). Overrides the file's own
        resolution; required when the file has none (always for JPEG).
    limits : Limits, optional
        Caps on file size, pixels and decoded bytes.
    name : str, optional
        Name for provenance and messages; defaults to the file name or ``"<bytes>"``.
    black_holes_um : float or None
        Pixels at intensity 0 in connected blobs at least as large as a square this many
        micrometres wide are invalid (:func:`black_holes`). None keeps them.

    Returns
    -------
    Scan
        ``kind="image"``; ``data`` of shape (height, width), float64 intensity in 0..1 (8/16-bit
        integers divided by 255/65535; colour reduced to BT.601 luminance); ``mask`` False where
        an alpha channel is 0, a float sample is not finite or a black hole was found;
        ``spacing_m`` (dy, dx) in metres.

    Raises
    ------
    ScanFormatError
        Not a PNG/TIFF/JPEG, corrupt or truncated.
    ScanTooLargeError
        The header claims more than ``limits.max_pixels`` pixels or the file is too big.
    MissingSpacingError
        No usable resolution in the file and ``spacing_m`` not given.
    """
    label = source_name(source, name)
    raw = read_source(source, limits)
    header = _read_header(raw, label)
    limits.check_pixels(header.height, header.width, f"{label}: {header.format.upper()} header")
    npix = header.height * header.width
    limits.check_decoded_bytes(
        npix * max(header.channels * header.bytes_per_sample, 8), f"{label}: image"
    )
    spacing, spacing_source = _choose_spacing(header, spacing_m, label)
    pixels = _decode(raw, header, label)
    data, mask = _to_intensity(pixels, header.format, label)
    if data.shape != (header.height, header.width):
        raise ScanFormatError(
            f"{label}: decoded image is {data.shape[1]} x {data.shape[0]}; the header said "
            f"{header.width} x {header.height}"
        )
    holes = np.zeros_like(mask)
    if black_holes_um is not None:
        holes = black_holes(data, mask, spacing, min_blob_um=black_holes_um)
        mask &= ~holes
        data = np.where(mask, data, np.nan)
    params = {
        "file": label,
        "format": header.format,
        "spacing_source": spacing_source,
        "black_holes_um": black_holes_um,
    }
    stats = {
        "size_xy": [header.width, header.height],
        "dtype": str(pixels.dtype),
        "channels": 1 if pixels.ndim == 2 else int(pixels.shape[2]),
        "black_hole_pixels": int(holes.sum()),
    }
    return Scan(data=data, mask=mask, spacing_m=spacing, kind="image").evolve(
        "read_image", params, stats
    )


def black_holes(
    data: np.ndarray,
    mask: np.ndarray,
    spacing_m: tuple[float, float],
    *,
    min_blob_um: float = BLACK_HOLES_UM,
) -> np.ndarray:
    """Which pixels are black holes: intensity 0 in connected blobs at least as large as a
    square ``min_blob_um`` micrometres wide.

    An image file has no "invalid" pixel unless it carries an alpha channel, so tools write
    missing data (a 3-D scan's dropouts, the outside of a disc crop) as black. Read as
    intensity, a black blob in the breech face is the strongest shading of all and takes over
    segmentation and correlation; black holds no texture either way (a crushed shadow
    neither). A lone black pixel is camera noise and is kept.

    Parameters
    ----------
    data : ndarray of shape (M, N)
        Intensity in 0..1.
    mask : ndarray of shape (M, N), bool
        Valid pixels.
    spacing_m : tuple of float
        (row, col) pixel spacing in metres.
    min_blob_um : float
        Smallest blob, as the side of a square in micrometres.

    Returns
    -------
    ndarray of shape (M, N), bool
    """
    if not min_blob_um > 0:
        raise BallisticsError(f"black_holes needs min_blob_um > 0 micrometres; got {min_blob_um!r}")
    black = mask & (data <= 0.0)
    if not black.any():
        return black
    min_px = max(2, round((min_blob_um * 1e-6) ** 2 / (spacing_m[0] * spacing_m[1])))
    labels, n = ndimage.label(black)
    big = np.bincount(labels.ravel(), minlength=n + 1) >= min_px
    big[0] = False
    return big[labels]


# ---- headers ----------------------------------------------------------------------------


def _read_header(raw: bytes, label: str) -> _Header:
    fmt = image_format(raw)
    if fmt == "png":
        return _png_header(raw, label)
    if fmt == "tiff":
        return _tiff_header(raw, label)
    if fmt == "jpeg":
        return _jpeg_header(raw, label)
    if not raw:
        raise ScanFormatError(f"{label}: empty file; expected a PNG, TIFF or JPEG image")
    raise ScanFormatError(f"{label}: not a PNG, TIFF or JPEG image (unrecognised first bytes)")


def _png_header(raw: bytes, label: str) -> _Header:
    """Size from IHDR and spacing from pHYs (only when its unit is the metre).

    Walks every chunk first: cv2's PNG reader trusts chunk lengths and spends seconds (and
    gigabytes) on one corrupt length, so the structure is checked here before it sees the file.
    """
    chunks = list(_png_chunks(raw, label))
    ctype, start, end = chunks[0]
    if ctype != b"IHDR" or end - start != 13:
        raise ScanFormatError(f"{label}: PNG does not start with its IHDR header chunk")
    width, height, depth, colour, _, _, _ = struct.unpack_from(">IIBBBBB", raw, start)
    if width == 0 or height == 0 or colour not in _PNG_CHANNELS:
        raise ScanFormatError(
            f"{label}: PNG header is invalid (size {width} x {height}, colour type {colour})"
        )
    types = [c[0] for c in chunks]
    if b"IDAT" not in types:
        raise ScanFormatError(f"{label}: PNG holds no image data (no IDAT chunk)")
    spacing: tuple[float, float] | None = None
    # pHYs counts only before the image data, as the PNG specification requires.
    for ctype, start, end in chunks[1 : types.index(b"IDAT")]:
        if ctype == b"pHYs" and end - start == 9:
            ppu_x, ppu_y, unit = struct.unpack_from(">IIB", raw, start)
            if unit == 1 and ppu_x > 0 and ppu_y > 0:
                spacing = (1.0 / ppu_y, 1.0 / ppu_x)
    return _Header(
        format="png",
        width=width,
        height=height,
        channels=_PNG_CHANNELS[colour],
        bytes_per_sample=2 if depth == 16 else 1,
        spacing_m=spacing,
        spacing_source="png:pHYs" if spacing else None,
    )


def _png_chunks(raw: bytes, label: str) -> Iterator[tuple[bytes, int, int]]:
    """Yield (type, body start, body end) of each chunk up to IEND; refuse a broken layout."""
    pos = len(_PNG_MAGIC)
    for _ in range(_MAX_PNG_CHUNKS):
        if pos + 12 > len(raw):
            raise ScanFormatError(f"{label}: PNG truncated (ends before its IEND chunk)")
        length, ctype = struct.unpack_from(">I4s", raw, pos)
        end = pos + 8 + length
        if length > _PNG_MAX_CHUNK or end + 4 > len(raw):
            raise ScanFormatError(
                f"{label}: PNG chunk {ctype!r} at byte {pos} claims {length:,} bytes; the file "
                f"has {len(raw) - pos - 12:,} left (truncated or corrupt)"
            )
        yield ctype, pos + 8, end
        if ctype == b"IEND":
            return
        pos = end + 4  # skip the CRC
    raise ScanFormatError(f"{label}: PNG has more than {_MAX_PNG_CHUNKS:,} chunks")


def _tiff_header(raw: bytes, label: str) -> _Header:
    """Shape and resolution of the first page; tifffile reads tags only, not pixels."""
    try:
        with tifffile.TiffFile(io.BytesIO(raw)) as tif:
            page = tif.pages.first
            width, height = int(page.imagewidth), int(page.imagelength)
            depth, samples = int(page.imagedepth), int(page.samplesperpixel)
            bits = int(page.bitspersample)
            tags = {tag.name: tag.value for tag in page.tags.values()}
    except BallisticsError:
        raise
    except Exception as exc:  # tifffile raises many types for corrupt headers
        raise ScanFormatError(
            f"{label}: corrupt TIFF header ({type(exc).__name__}: {exc})"
        ) from None
    if width <= 0 or height <= 0 or depth != 1:
        raise ScanFormatError(
            f"{label}: TIFF first page is {width} x {height} x {depth}; expected a 2-D image"
        )
    spacing = _tiff_spacing(tags)
    return _Header(
        format="tiff",
        width=width,
        height=height,
        channels=max(samples, 1),
        bytes_per_sample=max(-(-bits // 8), 1),
        spacing_m=spacing,
        spacing_source="tiff:resolution" if spacing else None,
    )


def _tiff_spacing(tags: dict[str, Any]) -> tuple[float, float] | None:
    """(dy, dx) in metres from X/YResolution (pixels per unit) and ResolutionUnit."""
    # The TIFF default unit is the inch; unit 1 means "no absolute unit" (aspect only).
    unit_m = _TIFF_UNIT_M.get(int(tags.get("ResolutionUnit", 2)))
    xres, yres = tags.get("XResolution"), tags.get("YResolution", tags.get("XResolution"))
    if unit_m is None or xres is None or yres is None:
        return None
    try:
        px_per_unit_x = xres[0] / xres[1]
        px_per_unit_y = yres[0] / yres[1]
    except (TypeError, IndexError, ZeroDivisionError):
        return None
    if px_per_unit_x <= 0 or px_per_unit_y <= 0:
        return None
    return (unit_m / px_per_unit_y, unit_m / px_per_unit_x)


def _jpeg_header(raw: bytes, label: str) -> _Header:
    """Size and component count from the first SOF marker; no spacing (JFIF dpi is unreliable).

    Also checks that an end-of-image marker follows the scan data: libjpeg fills a truncated
    file with grey instead of failing.
    """
    pos = 2
    frame: tuple[int, int, int] | None = None
    for _ in range(_MAX_JPEG_SEGMENTS):
        if pos + 4 > len(raw):
            break
        if raw[pos] != 0xFF:
            raise ScanFormatError(f"{label}: corrupt JPEG (no marker at byte {pos})")
        marker = raw[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # stand-alone markers carry no length
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", raw, pos + 2)
        if marker in _JPEG_SOF and pos + 10 <= len(raw):
            _, height, width, ncomp = struct.unpack_from(">BHHB", raw, pos + 4)
            frame = (height, width, ncomp)
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            if frame is None:
                break
            if raw.rfind(b"\xff\xd9") < pos:
                raise ScanFormatError(f"{label}: JPEG truncated (no end-of-image marker)")
            height, width, ncomp = frame
            if height == 0 or width == 0:
                raise ScanFormatError(
                    f"{label}: JPEG frame size {width} x {height} is not supported"
                )
            return _Header("jpeg", width, height, ncomp, 1, None, None)
        pos += 2 + length
    raise ScanFormatError(f"{label}: corrupt or truncated JPEG (no frame header before image data)")


# ---- spacing ----------------------------------------------------------------------------


def _choose_spacing(
    header: _Header, spacing_m: float | None, label: str
) -> tuple[tuple[float, float], str]:
    """Explicit spacing wins over the file's; a missing or implausible one is refused."""
    if spacing_m is not None:
        s = float(spacing_m)
        if not (math.isfinite(s) and 0.0 < s < 1e-2):
            raise BallisticsError(
                f"spacing_m must be a positive length in metres below 1 cm; got {spacing_m!r} "
                "(did you pass micrometres? 2.5 um is 2.5e-6 m)"
            )
        return (s, s), "explicit"
    how = "pass --spacing-um on the command line or spacing_m= (metres) when reading"
    if header.spacing_m is None:
        where = {
            "png": "no pHYs chunk in metres",
            "tiff": "no X/YResolution with an inch or cm unit",
            "jpeg": "JPEG resolution is not trusted",
        }[header.format]
        raise MissingSpacingError(
            f"{label}: pixel spacing is not in the file ({where}) and was not given; {how}. "
            "Spacing is never guessed."
        )
    dy, dx = header.spacing_m
    if not all(math.isfinite(s) and 1e-9 <= s < 1e-2 for s in (dy, dx)):
        raise MissingSpacingError(
            f"{label}: the file's resolution gives an implausible spacing of {dx:.3g} x "
            f"{dy:.3g} m per pixel; {how}"
        )
    assert header.spacing_source is not None
    return header.spacing_m, header.spacing_source


# ---- decoding ---------------------------------------------------------------------------


def _decode(raw: bytes, header: _Header, label: str) -> np.ndarray:
    """Pixels as decoded, (H, W) or (H, W, C), colour in cv2's BGR(A) channel order."""
    if header.format == "tiff":
        return _decode_tiff(raw, label)
    pixels = cv2.imdecode(np.frombuffer(raw, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ScanFormatError(
            f"{label}: {header.format.upper()} could not be decoded (corrupt or truncated)"
        )
    return np.asarray(pixels)


def _decode_tiff(raw: bytes, label: str) -> np.ndarray:
    try:
        with tifffile.TiffFile(io.BytesIO(raw)) as tif:
            page = tif.pages.first
            _check_strips_cover_image(page, label)
            pixels = np.asarray(page.asarray())
            axes = str(page.axes)
    except BallisticsError:
        raise
    except Exception as exc:  # truncated strips, unknown compression...
        raise ScanFormatError(
            f"{label}: TIFF could not be decoded ({type(exc).__name__}: {exc})"
        ) from None
    if axes.startswith("S") and pixels.ndim == 3:  # planar configuration: samples first
        pixels = np.moveaxis(pixels, 0, -1)
    # TIFF colour is RGB(A); reorder to BGR(A) so one conversion serves every format.
    if pixels.ndim == 3 and pixels.shape[2] >= 3:
        pixels = pixels[..., ::-1] if pixels.shape[2] == 3 else pixels[..., [2, 1, 0, 3]]
    return pixels


def _check_strips_cover_image(page: Any, label: str) -> None:
    """Refuse uncompressed strips shorter than the image: tifffile would pad them with zeros."""
    if int(page.compression) != 1:
        return
    needed = int(page.imagewidth) * int(page.imagelength) * int(page.samplesperpixel)
    needed = needed * int(page.bitspersample) // 8
    stored = sum(int(n) for n in page.databytecounts)
    if stored < needed:
        raise ScanFormatError(
            f"{label}: TIFF strips hold {stored:,} bytes; {needed:,} bytes expected for "
            f"{page.imagewidth} x {page.imagelength} pixels (truncated or corrupt)"
        )


def _to_intensity(pixels: np.ndarray, fmt: str, label: str) -> tuple[np.ndarray, np.ndarray]:
    """(intensity, mask), both (H, W): float64 in 0..1 and bool. Input channels BGR(A)."""
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    alpha = None
    if pixels.ndim == 3:
        nch = pixels.shape[2]
        if nch in (2, 4):
            alpha = pixels[..., -1]
        grey = pixels[..., 0] if nch == 2 else pixels[..., :3] @ _LUMA_RGB[::-1]
    elif pixels.ndim == 2:
        grey = pixels
    else:
        raise ScanFormatError(f"{label}: {fmt} decoded to an unsupported shape {pixels.shape}")
    data = _scale(np.asarray(grey), pixels.dtype, label)
    mask = np.isfinite(data)
    if alpha is not None:
        mask &= alpha > 0
    return data, mask


def _scale(grey: np.ndarray, dtype: np.dtype[Any], label: str) -> np.ndarray:
    """Integers to 0..1 by their full range; floats kept as they are (assumed 0..1)."""
    if dtype == np.bool_:
        return grey.astype(np.float64)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return (grey.astype(np.float64) - info.min) / (float(info.max) - info.min)
    if np.issubdtype(dtype, np.floating):
        return grey.astype(np.float64)
    raise ScanFormatError(f"{label}: unsupported pixel type {dtype}")
