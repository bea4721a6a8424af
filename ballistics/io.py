"""One entry point for every scan file: sniff the content, dispatch to the right reader.

The format is decided by the first bytes, never by the file name: uploads arrive as bytes
with whatever name the client chose.
"""

from __future__ import annotations

from .errors import ScanFormatError
from .image_io import image_format, read_image
from .limits import DEFAULT_LIMITS, Limits, Source, read_source, source_name
from .scan import Scan
from .x3p import check_length_unit, read_x3p

__all__ = ["SUPPORTED_FORMATS", "read_scan", "sniff_format"]

SUPPORTED_FORMATS = "X3P (zip), PNG, TIFF, JPEG"

# Local file header (any zip) and end record alone (an empty zip, refused later with a message).
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


def sniff_format(raw: bytes) -> str | None:
    """``"x3p"``, ``"png"``, ``"tiff"`` or ``"jpeg"`` from the magic bytes; None if unknown."""
    if raw[:4] in _ZIP_MAGICS:
        return "x3p"
    return image_format(raw)


def read_scan(
    source: Source,
    *,
    name: str | None = None,
    spacing_m: float | None = None,
    limits: Limits = DEFAULT_LIMITS,
    length_unit: str = "m",
) -> Scan:
    """Read an X3P topography or a PNG/TIFF/JPEG image, whichever the content is.

    Parameters
    ----------
    source : str, path-like or bytes
        Path of the file, or its content (the gRPC server passes uploaded bytes).
    name : str, optional
        Name for provenance and messages (e.g. the uploaded file name).
    spacing_m : float, optional
        Pixel spacing in metres. For images it overrides the file's resolution and is required
        when the file has none. For X3P it overrides the file's CX/CY increments, recorded as
        an ``"override_spacing"`` provenance step with both values.
    limits : Limits, optional
        Caps on file size, members, decoded bytes and pixels.
    length_unit : {"m", "um"}, optional
        Unit of an X3P's increments and heights (see :func:`ballistics.x3p.read_x3p`): the
        standard metres by default; ``"um"`` for files that write micrometres there. It is
        never guessed: an X3P whose pixel would be over 1 mm in metres is refused with a
        message naming this override. Images carry no length unit (their spacing comes from
        the file's resolution tags or ``spacing_m``), so it does not apply to them.

    Returns
    -------
    Scan
        ``kind="topography"`` (X3P, heights in metres) or ``kind="image"`` (intensity 0..1);
        data of shape (rows, cols), float64.

    Raises
    ------
    ScanFormatError
        Missing file, empty file, unknown format, a corrupt file of a known format, or a
        pixel spacing outside ``limits.min_spacing_m``-``limits.max_spacing_m``.
    BallisticsError
        ``length_unit`` is unknown.
    UnsafeInputError, ScanTooLargeError, MissingSpacingError, LengthUnitError
        See :func:`ballistics.x3p.read_x3p` and :func:`ballistics.image_io.read_image`.
    """
    unit = check_length_unit(length_unit)
    label = source_name(source, name)
    raw = read_source(source, limits)
    if not raw:
        raise ScanFormatError(f"{label}: empty file; expected {SUPPORTED_FORMATS}")
    fmt = sniff_format(raw)
    if fmt is None:
        raise ScanFormatError(
            f"{label}: unrecognised file content (first bytes {raw[:8]!r}); supported formats "
            f"are {SUPPORTED_FORMATS}"
        )
    if fmt != "x3p":
        scan = read_image(raw, spacing_m=spacing_m, limits=limits, name=label)
    else:
        scan = read_x3p(raw, limits=limits, name=label, length_unit=unit)
        if spacing_m is not None:
            scan = _override_spacing(scan, float(spacing_m))
    # Before any step divides by it (a 1e-300 m spacing made segmentation divide by zero).
    limits.check_spacing(scan.spacing_m, label)
    return scan


def _override_spacing(scan: Scan, spacing_m: float) -> Scan:
    """Replace the file's spacing by the caller's, keeping the file's value in provenance."""
    params = {"spacing_m": spacing_m, "file_spacing_m": list(scan.spacing_m)}
    # Scan validates the new spacing (positive metres below 1 cm) on construction.
    return scan.evolve("override_spacing", params, spacing_m=(spacing_m, spacing_m))
