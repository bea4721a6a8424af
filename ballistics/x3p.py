"""Read and write X3P topography files (ISO 25178-72 / ISO 5436-2).

An X3P is a ZIP archive holding ``main.xml`` (axes, matrix size, links), ``md5checksum.hex``
(MD5 of ``main.xml``), ``bindata/data.bin`` (heights, little-endian, x fastest) and optionally
``bindata/valid.bin`` (one validity bit per point, least significant bit first).

The reader treats every file as hostile: the zip directory, every declared member size and the
matrix size are checked against :class:`~ballistics.limits.Limits` before anything is
decompressed or allocated, members are read with a bounded read, and the XML is parsed with
``defusedxml`` (no entities, no DTD, no external references). It also tolerates the deviations
of real files: a folder prefix inside the zip, a root element without namespace, CSAFE ``Mask``
elements and ``bindata/mask.png`` (ignored), and stale or missing checksums (a warning).
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import struct
import tempfile
import warnings
import xml.etree.ElementTree as ET
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import defusedxml
import defusedxml.ElementTree as DET
import numpy as np

from .errors import BallisticsError, ScanFormatError, ScanTooLargeError, UnsafeInputError
from .limits import DEFAULT_LIMITS, Limits, MiB, Source, read_source, source_name
from .scan import Scan

__all__ = [
    "LENGTH_UNITS",
    "NAMESPACE",
    "LengthUnitError",
    "X3PChecksumWarning",
    "check_length_unit",
    "read_x3p",
    "write_x3p",
]

NAMESPACE = "http://www.opengps.eu/2008/ISO5436_2"
_XSI = "http://www.w3.org/2001/XMLSchema-instance"

DataType = Literal["I", "L", "F", "D"]
# ISO 5436-2 data types: I=int16, L=int32, F=float32, D=float64, always little-endian.
_DTYPES: dict[str, np.dtype[Any]] = {
    "I": np.dtype("<i2"),
    "L": np.dtype("<i4"),
    "F": np.dtype("<f4"),
    "D": np.dtype("<f8"),
}

# main.xml of a DataLink file is a few kB; 16 MiB leaves room for vendor extensions.
_MAX_XML_BYTES = 16 * MiB
# md5checksum.hex is 32 hex digits plus a file name.
_MAX_CHECKSUM_BYTES = 4096
# Budget per central-directory entry: 46 fixed bytes plus name, extra field and comment.
# Real X3P names are short; this bounds the parse work zipfile does before we see members.
_MAX_CD_ENTRY_BYTES = 46 + 4096
# Small members (checksums, XML) can have odd ratios; only large ones are ratio-checked.
_RATIO_MIN_BYTES = 1 * MiB

_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIG = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_LOCATOR_SIG = b"PK\x06\x07"
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_ZIP64_EOCD_SIG = b"PK\x06\x06"

# Errors the zip and decompression layers raise for corrupt input (BallisticsError is a
# ValueError, so it is re-raised before this tuple is consulted).
_CORRUPT_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    NotImplementedError,
    RuntimeError,
    EOFError,
    OSError,
    zlib.error,
    lzma.LZMAError,
    struct.error,
    ValueError,
)


#: Length units an X3P's increments and heights may be read in, as metres per unit. The
#: standard says metres; "um" is the override for writers (often R tool chains) that put
#: micrometres in the same fields. Never chosen from the values: the caller says which.
LENGTH_UNITS: dict[str, float] = {"m": 1.0, "um": 1e-6}

#: A lateral increment (pixel) larger than this, in metres, cannot be a surface scan of a
#: cartridge case (real instruments: 0.5 to 10 um); in metres it is refused as a unit error.
MAX_INCREMENT_M = 1e-3
#: A lateral increment smaller than this, in metres, is below any optical instrument's pixel;
#: read with ``length_unit="um"`` it means the file was in metres after all.
MIN_INCREMENT_M = 1e-9


class LengthUnitError(ScanFormatError):
    """An X3P's lengths are not in the unit it is being read in (the message names the fix)."""


def check_length_unit(length_unit: str) -> str:
    """Return ``length_unit`` if it is one of :data:`LENGTH_UNITS`, else raise.

    ``""`` means metres (the proto default).

    Raises
    ------
    BallisticsError
        An unknown unit (a client error).
    """
    unit = "m" if length_unit == "" else length_unit
    if unit not in LENGTH_UNITS:
        raise BallisticsError(
            f"unknown length unit {length_unit!r}; use one of {', '.join(LENGTH_UNITS)} "
            "(m: the X3P standard; um: files that write micrometres in the metre fields)"
        )
    return unit


class X3PChecksumWarning(UserWarning):
    """An X3P checksum is stale or missing; the data was read anyway.

    Real files are often edited after writing (e.g. masked by x3ptools) without the
    checksums being updated, so a mismatch is reported, not refused.
    """


@dataclass(frozen=True)
class _Header:
    """What the reader needs from ``main.xml``; lengths in metres."""

    size_x: int
    size_y: int
    data_type: str
    dx_m: float
    dy_m: float
    z_increment: float
    z_offset: float
    data_link: str
    data_md5: str | None
    valid_link: str | None
    valid_md5: str | None
    checksum_file: str
    instrument: dict[str, str] = field(default_factory=dict)

    @property
    def n_points(self) -> int:
        return self.size_x * self.size_y


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_x3p(
    source: Source,
    *,
    limits: Limits = DEFAULT_LIMITS,
    name: str | None = None,
    length_unit: str = "m",
) -> Scan:
    """Read an X3P surface topography file.

    Parameters
    ----------
    source : str, path-like or bytes
        Path of the ``.x3p`` file, or its content (e.g. an upload).
    limits : Limits, optional
        Caps on file size, member count and sizes, and points.
    name : str, optional
        Name recorded in the provenance and messages; defaults to the file name, or
        ``"<bytes>"`` for content.
    length_unit : {"m", "um"}, optional
        Unit of the file's CX/CY/CZ increments, offset and float heights. ``"m"`` (default) is
        the standard; ``"um"`` reads files that write micrometres in those fields and converts
        them to metres. The unit is never guessed: a file read in metres whose pixel is over
        1 mm (:data:`MAX_INCREMENT_M`) is refused, naming this override; one read in
        micrometres whose pixel is under 1 nm is refused too. Recorded in the provenance.

    Returns
    -------
    Scan
        ``kind="topography"``; ``data`` of shape (SizeY, SizeX), float64 heights in metres with
        NaN where invalid; ``mask`` True where valid; ``spacing_m`` = (CY, CX increment) in
        metres. The provenance holds one ``"read_x3p"`` step (``params["length_unit"]``).

    Raises
    ------
    ScanFormatError
        Not a zip, truncated or corrupt, missing members, malformed or unsupported header,
        data size that does not match the header.
    UnsafeInputError
        XML with a DTD, entities or external references; a data link leaving the archive;
        an implausible compression ratio.
    ScanTooLargeError
        Any cap of ``limits`` exceeded.
    LengthUnitError
        The increments cannot be in ``length_unit`` (see above).
    BallisticsError
        ``length_unit`` is not one of :data:`LENGTH_UNITS`.

    Warns
    -----
    X3PChecksumWarning
        A checksum of ``main.xml``, ``data.bin`` or ``valid.bin`` is stale or missing.
    """
    unit = check_length_unit(length_unit)
    label = source_name(source, name)
    raw = read_source(source, limits)
    try:
        return _read_x3p_bytes(raw, label, limits, unit)
    except BallisticsError:
        raise
    except _CORRUPT_ZIP_ERRORS as exc:
        raise ScanFormatError(
            f"{label}: corrupt X3P archive ({type(exc).__name__}: {exc})"
        ) from None


def _read_x3p_bytes(raw: bytes, label: str, limits: Limits, unit: str = "m") -> Scan:
    if not raw:
        raise ScanFormatError(f"{label}: empty file; expected an X3P (zip) archive")
    _check_zip_directory(raw, label, limits)
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        members = _checked_members(zf, label, limits)
        main_name = _find_main_xml(members, label)
        prefix = main_name[: -len("main.xml")]
        xml_bytes = _read_member(zf, members[main_name], _MAX_XML_BYTES, label)
        header = _parse_header(_parse_xml(xml_bytes, label), label)
        file_increments = [header.dx_m, header.dy_m]
        header = _in_metres(header, unit, label)
        status = {"main_xml": _main_checksum_status(zf, members, prefix, header, xml_bytes, label)}
        limits.check_pixels(header.size_y, header.size_x, f"{label}: main.xml")
        data, status["data"] = _read_points(zf, members, prefix, header, label, limits)
        if unit != "m":
            data *= LENGTH_UNITS[unit]
        valid = None
        if header.valid_link is not None:
            valid, status["valid"] = _read_valid(zf, members, prefix, header, label)
    _warn_checksums(status, label)

    mask = np.isfinite(data)
    if valid is not None:
        mask &= valid
    data[~mask] = np.nan
    params = {
        "file": label,
        "data_type": header.data_type,
        "size_xy": [header.size_x, header.size_y],
        "z_increment": header.z_increment,
        "member_prefix": prefix,
        "length_unit": unit,
    }
    stats: dict[str, Any] = {"checksum": status, "valid_fraction": float(mask.mean())}
    if unit != "m":
        stats["file_increment_xy"] = file_increments
    if header.instrument:
        stats["instrument"] = dict(header.instrument)
    return Scan(
        data=data,
        mask=mask,
        spacing_m=(header.dy_m, header.dx_m),
        kind="topography",
        provenance=(),
    ).evolve("read_x3p", params, stats)


def _in_metres(header: _Header, unit: str, label: str) -> _Header:
    """The header with CX/CY increments in metres, after checking they can be in ``unit``."""
    scale = LENGTH_UNITS[unit]
    dx, dy = header.dx_m * scale, header.dy_m * scale
    largest, smallest = max(dx, dy), min(dx, dy)
    if largest > MAX_INCREMENT_M and unit == "m":
        raise LengthUnitError(
            f"{label}: CX/CY Increment {header.dx_m:g} x {header.dy_m:g} read in {unit} is a "
            f"pixel of {largest:g} m; X3P lengths are metres and no cartridge-case scan "
            "has pixels over 1 mm. If this file writes micrometres (increment 3.125 for a "
            '3.125 um pixel), read it with --length-unit um (length_unit="um"; gRPC '
            "SubmitMetadata.length_unit / SearchRequest.length_unit): increments and heights "
            "are then converted from micrometres"
        )
    if largest > MAX_INCREMENT_M:
        raise LengthUnitError(
            f"{label}: CX/CY Increment {header.dx_m:g} x {header.dy_m:g} read in {unit} is a "
            f"pixel of {largest:g} m, too large for a cartridge-case scan in any unit "
            "this reader knows (m, um); check the file's increments"
        )
    if smallest < MIN_INCREMENT_M and unit != "m":
        raise LengthUnitError(
            f"{label}: CX/CY Increment {header.dx_m:g} x {header.dy_m:g} read in {unit} is a "
            f"pixel of {smallest * 1e9:.3g} nm, below any instrument's; the file is in metres "
            "(the X3P standard): read it without --length-unit um"
        )
    # Only the lateral increments change here; heights (with their CZ increment and offset,
    # in the file's unit) are decoded as written and scaled once by the caller.
    return header if unit == "m" else replace(header, dx_m=dx, dy_m=dy)


# ---- zip container ----------------------------------------------------------------------


def _check_zip_directory(raw: bytes, label: str, limits: Limits) -> None:
    """Refuse a zip whose central directory is too big before ``zipfile`` parses it.

    ``zipfile`` builds one object per directory entry; a 256 MB upload of minimal entries
    would be millions of objects. The end record says how many entries and bytes follow.
    """
    entries, cd_size = _end_of_central_directory(raw, label)
    if entries > limits.max_members:
        raise ScanTooLargeError(
            f"{label}: zip declares {entries:,} members; an X3P holds a handful and the limit "
            f"is {limits.max_members} (Limits.max_members)"
        )
    if cd_size > limits.max_members * _MAX_CD_ENTRY_BYTES:
        raise ScanTooLargeError(
            f"{label}: zip central directory is {cd_size:,} bytes, too large for "
            f"{limits.max_members} members (Limits.max_members)"
        )


def _end_of_central_directory(raw: bytes, label: str) -> tuple[int, int]:
    """Return (total entries, central directory size) from the end record.

    Locates the record exactly as ``zipfile`` does (fixed position first, then the last
    signature in the comment window) so the numbers checked are the ones it will use.
    """
    size = _EOCD.size
    if len(raw) >= size and raw[-size : -size + 4] == _EOCD_SIG and raw[-2:] == b"\0\0":
        pos = len(raw) - size
    else:
        pos = raw.rfind(_EOCD_SIG, max(0, len(raw) - size - 65535))
        if pos < 0 or len(raw) - pos < size:
            raise ScanFormatError(
                f"{label}: not a zip archive or truncated (no end-of-central-directory record); "
                "an X3P file is a zip holding main.xml and bindata/data.bin"
            )
    fields = _EOCD.unpack_from(raw, pos)
    entries, cd_size = fields[4], fields[5]
    loc = pos - _ZIP64_LOCATOR.size
    if loc >= 0 and raw[loc : loc + 4] == _ZIP64_LOCATOR_SIG:
        rec = loc - _ZIP64_EOCD.size
        if rec < 0 or raw[rec : rec + 4] != _ZIP64_EOCD_SIG:
            raise ScanFormatError(f"{label}: corrupt zip64 end-of-central-directory record")
        z64 = _ZIP64_EOCD.unpack_from(raw, rec)
        entries, cd_size = z64[7], z64[8]
    return int(entries), int(cd_size)


def _checked_members(zf: zipfile.ZipFile, label: str, limits: Limits) -> dict[str, zipfile.ZipInfo]:
    """Map normalised member name -> info, after checking counts, sizes and ratios."""
    infos = [i for i in zf.infolist() if not i.is_dir()]
    if len(zf.infolist()) > limits.max_members:
        raise ScanTooLargeError(
            f"{label}: zip holds {len(zf.infolist())} members; limit {limits.max_members}"
        )
    total = 0
    for info in infos:
        total += info.file_size
        if info.file_size > limits.max_uncompressed_bytes or total > limits.max_uncompressed_bytes:
            raise ScanTooLargeError(
                f"{label}: zip member {info.filename!r} declares {info.file_size:,} bytes "
                f"uncompressed ({total:,} in all); the limit is "
                f"{limits.max_uncompressed_bytes:,} bytes (Limits.max_uncompressed_bytes)"
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > _RATIO_MIN_BYTES and ratio > limits.max_compression_ratio:
            raise UnsafeInputError(
                f"{label}: zip member {info.filename!r} claims a compression ratio of "
                f"{ratio:,.0f}:1 (limit {limits.max_compression_ratio:,.0f}:1); refusing a "
                "likely zip bomb"
            )
    # Windows tools sometimes store backslashes; links in main.xml use forward slashes.
    return {i.filename.replace("\\", "/"): i for i in infos}


def _find_main_xml(members: dict[str, zipfile.ZipInfo], label: str) -> str:
    """Name of ``main.xml``, at the root or under one folder prefix (``scan1/main.xml``)."""
    found = [n for n in members if n.rsplit("/", 1)[-1].lower() == "main.xml"]
    if not found:
        listing = ", ".join(sorted(members)[:10]) or "none"
        raise ScanFormatError(
            f"{label}: no main.xml in the zip (members: {listing}); an X3P holds main.xml, "
            "md5checksum.hex and bindata/data.bin"
        )
    depth = min(n.count("/") for n in found)
    shallowest = [n for n in found if n.count("/") == depth]
    if len(shallowest) > 1:
        raise ScanFormatError(
            f"{label}: several main.xml at the same level ({', '.join(shallowest)}); "
            "expected one X3P per file"
        )
    return shallowest[0]


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int, label: str) -> bytes:
    """Read at most ``cap`` bytes of a member; refuse one that inflates past it.

    The declared size was checked already, but a lying header is only caught by reading:
    read one byte past the cap and look.
    """
    if info.file_size > cap:
        raise ScanTooLargeError(
            f"{label}: zip member {info.filename!r} declares {info.file_size:,} bytes; at most "
            f"{cap:,} expected"
        )
    with zf.open(info) as fh:
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise ScanTooLargeError(
            f"{label}: zip member {info.filename!r} inflates past {cap:,} bytes"
        )
    return data


def _resolve_link(
    link: str, prefix: str, members: dict[str, zipfile.ZipInfo], what: str, label: str
) -> str | None:
    """Member name a link of ``main.xml`` points at, or None if it is not in the zip.

    Links are relative to ``main.xml``; files written from a folder also work unprefixed.
    """
    norm = link.strip().replace("\\", "/")
    if norm.startswith("/") or ":" in norm or ".." in norm.split("/"):
        raise UnsafeInputError(
            f"{label}: {what} link {link!r} in main.xml points outside the archive; "
            "expected a relative path such as bindata/data.bin"
        )
    norm = norm.removeprefix("./")
    for candidate in (prefix + norm, norm):
        if candidate in members:
            return candidate
    return None


# ---- XML header -------------------------------------------------------------------------


def _parse_xml(xml_bytes: bytes, label: str) -> ET.Element:
    """Parse ``main.xml`` safely and strip namespaces so prefixed and bare files look alike."""
    try:
        root = DET.fromstring(
            xml_bytes, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except defusedxml.DefusedXmlException as exc:
        raise UnsafeInputError(
            f"{label}: main.xml uses a DTD, entities or external references ({exc}); "
            "X3P headers never need them"
        ) from None
    except ET.ParseError as exc:
        raise ScanFormatError(f"{label}: main.xml is not well-formed XML ({exc})") from None
    for element in root.iter():
        if isinstance(element.tag, str) and "}" in element.tag:
            element.tag = element.tag.split("}", 1)[1]
    if root.tag != "ISO5436_2":
        raise ScanFormatError(f"{label}: main.xml root element is {root.tag!r}; expected ISO5436_2")
    return root


def _text(root: ET.Element, path: str, label: str) -> str:
    element = root.find(path)
    if element is None or element.text is None or not element.text.strip():
        raise ScanFormatError(f"{label}: main.xml lacks {path}")
    return element.text.strip()


def _optional_text(root: ET.Element, path: str) -> str | None:
    element = root.find(path)
    if element is None or element.text is None or not element.text.strip():
        return None
    return element.text.strip()


def _positive_int(root: ET.Element, path: str, label: str) -> int:
    text = _text(root, path, label)
    try:
        value = int(text)
    except ValueError:
        raise ScanFormatError(
            f"{label}: main.xml {path} is {text[:40]!r}; expected a positive integer"
        ) from None
    if value <= 0:
        raise ScanFormatError(f"{label}: main.xml {path} is {value}; expected a positive integer")
    return value


def _finite_float(root: ET.Element, path: str, label: str, default: float | None = None) -> float:
    text = _optional_text(root, path)
    if text is None:
        if default is None:
            raise ScanFormatError(f"{label}: main.xml lacks {path}")
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise ScanFormatError(f"{label}: main.xml {path} is {text[:40]!r}; expected a number")
    return value


def _parse_header(root: ET.Element, label: str) -> _Header:
    """Extract sizes, increments, links and instrument from a namespace-stripped root."""
    for axis in ("CX", "CY"):
        kind = _optional_text(root, f"Record1/Axes/{axis}/AxisType") or "I"
        if kind != "I":
            raise ScanFormatError(
                f"{label}: axis {axis} is {kind!r} (a point cloud or profile list); only "
                "incremental (I) x/y axes, i.e. a regular grid, are supported"
            )
    data_type = _text(root, "Record1/Axes/CZ/DataType", label)
    if data_type not in _DTYPES:
        raise ScanFormatError(
            f"{label}: CZ DataType {data_type[:10]!r} is not one of I, L, F, D "
            "(int16, int32, float32, float64)"
        )
    dx, dy = (_finite_float(root, f"Record1/Axes/{a}/Increment", label) for a in ("CX", "CY"))
    if dx <= 0 or dy <= 0:
        raise ScanFormatError(f"{label}: CX/CY Increment must be positive metres; got {dx}, {dy}")
    z_inc = _finite_float(root, "Record1/Axes/CZ/Increment", label, default=1.0)
    if z_inc == 0:
        raise ScanFormatError(f"{label}: CZ Increment is 0; expected a non-zero scale in metres")
    z_off = _finite_float(root, "Record1/Axes/CZ/Offset", label, default=0.0)

    if root.find("Record3/DataList") is not None:
        raise ScanFormatError(
            f"{label}: main.xml holds the points inline (DataList); only binary data "
            "(DataLink to bindata/data.bin) is supported"
        )
    size_z_text = _optional_text(root, "Record3/MatrixDimension/SizeZ") or "1"
    if size_z_text != "1":
        raise ScanFormatError(
            f"{label}: SizeZ is {size_z_text[:20]!r}; only single-layer surfaces (SizeZ=1) "
            "are supported"
        )
    instrument = {
        key.lower(): value
        for key in ("Manufacturer", "Model", "Serial", "Version")
        if (value := _optional_text(root, f"Record2/Instrument/{key}")) is not None
    }
    return _Header(
        size_x=_positive_int(root, "Record3/MatrixDimension/SizeX", label),
        size_y=_positive_int(root, "Record3/MatrixDimension/SizeY", label),
        data_type=data_type,
        dx_m=dx,
        dy_m=dy,
        z_increment=z_inc,
        z_offset=z_off,
        data_link=_text(root, "Record3/DataLink/PointDataLink", label),
        data_md5=_optional_text(root, "Record3/DataLink/MD5ChecksumPointData"),
        valid_link=_optional_text(root, "Record3/DataLink/ValidPointsLink"),
        valid_md5=_optional_text(root, "Record3/DataLink/MD5ChecksumValidPoints"),
        checksum_file=_optional_text(root, "Record4/ChecksumFile") or "md5checksum.hex",
        instrument=instrument,
    )


# ---- binary data and checksums ----------------------------------------------------------


def _read_points(
    zf: zipfile.ZipFile,
    members: dict[str, zipfile.ZipInfo],
    prefix: str,
    header: _Header,
    label: str,
    limits: Limits,
) -> tuple[np.ndarray, str]:
    """Heights of shape (SizeY, SizeX), float64 metres, and the data checksum status."""
    name = _resolve_link(header.data_link, prefix, members, "PointDataLink", label)
    if name is None:
        raise ScanFormatError(
            f"{label}: data file {header.data_link!r} named in main.xml is missing from the zip"
        )
    dtype = _DTYPES[header.data_type]
    expected = header.n_points * dtype.itemsize
    limits.check_decoded_bytes(expected, f"{label}: {name}")
    declared = members[name].file_size
    if declared != expected:
        raise ScanFormatError(
            f"{label}: {name} holds {declared:,} bytes but SizeX x SizeY x {dtype.itemsize} "
            f"({header.size_x} x {header.size_y}, DataType {header.data_type}) = "
            f"{expected:,} bytes expected"
        )
    buf = _read_member(zf, members[name], expected, label)
    if len(buf) != expected:
        raise ScanFormatError(
            f"{label}: {name} yielded {len(buf):,} bytes; {expected:,} bytes expected"
        )
    status = _digest_status(buf, header.data_md5)
    heights = np.frombuffer(buf, dtype=dtype).reshape(header.size_y, header.size_x)
    data = heights.astype(np.float64)
    del buf, heights
    # Integers are counts of CZ Increment; floats are metres unless a scale is given.
    if header.data_type in ("I", "L") or header.z_increment != 1.0:
        data *= header.z_increment
    if header.z_offset != 0.0:
        data += header.z_offset
    return data, status


def _read_valid(
    zf: zipfile.ZipFile,
    members: dict[str, zipfile.ZipInfo],
    prefix: str,
    header: _Header,
    label: str,
) -> tuple[np.ndarray, str]:
    """Validity mask of shape (SizeY, SizeX), bool, from bit j (LSB first) of valid.bin."""
    assert header.valid_link is not None
    name = _resolve_link(header.valid_link, prefix, members, "ValidPointsLink", label)
    if name is None:
        raise ScanFormatError(
            f"{label}: validity file {header.valid_link!r} named in main.xml is missing"
        )
    needed = -(-header.n_points // 8)
    declared = members[name].file_size
    # Some writers pad to a word boundary; fewer bytes than points is an error.
    if not needed <= declared <= needed + 8:
        raise ScanFormatError(
            f"{label}: {name} holds {declared:,} bytes; {needed:,} bytes (one bit per point "
            f"for {header.size_x} x {header.size_y}) expected"
        )
    buf = _read_member(zf, members[name], needed + 8, label)
    if len(buf) < needed:
        raise ScanFormatError(f"{label}: {name} yielded {len(buf):,} bytes; {needed:,} expected")
    bits = np.unpackbits(
        np.frombuffer(buf, dtype=np.uint8), count=header.n_points, bitorder="little"
    )
    return bits.astype(bool).reshape(header.size_y, header.size_x), _digest_status(
        buf, header.valid_md5
    )


def _main_checksum_status(
    zf: zipfile.ZipFile,
    members: dict[str, zipfile.ZipInfo],
    prefix: str,
    header: _Header,
    xml_bytes: bytes,
    label: str,
) -> str:
    """``"ok"``, ``"stale"``, ``"missing"`` or ``"unreadable"`` for the MD5 of main.xml."""
    name = _resolve_link(header.checksum_file, prefix, members, "ChecksumFile", label)
    if name is None:
        return "missing"
    if members[name].file_size > _MAX_CHECKSUM_BYTES:
        return "unreadable"
    # Format is "<hex digest> *main.xml" (md5sum style) or just the digest.
    text = _read_member(zf, members[name], _MAX_CHECKSUM_BYTES, label)
    tokens = text.decode("ascii", errors="replace").split()
    return _digest_status(xml_bytes, tokens[0] if tokens else None)


def _digest_status(content: bytes, expected_hex: str | None) -> str:
    if not expected_hex:
        return "missing"
    actual = hashlib.md5(content, usedforsecurity=False).hexdigest()
    return "ok" if expected_hex.strip().lower() == actual else "stale"


def _warn_checksums(status: dict[str, str], label: str) -> None:
    bad = {k: v for k, v in status.items() if v != "ok"}
    if bad:
        detail = ", ".join(f"{k}: {v}" for k, v in bad.items())
        warnings.warn(
            X3PChecksumWarning(
                f"{label}: X3P checksum not confirmed ({detail}); the data was read anyway. "
                "A stale checksum usually means the file was edited after it was written."
            ),
            stacklevel=4,  # the caller of read_x3p
        )


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_x3p(
    path: str | os.PathLike[str],
    scan: Scan,
    *,
    dtype: DataType = "D",
    length_unit: str = "m",
) -> None:
    """Write a topography scan as a standard X3P file, atomically.

    Parameters
    ----------
    path : str or path-like
        Destination; written to a temporary file in the same folder, then renamed.
    scan : Scan
        ``kind="topography"``, heights in metres; invalid points are written as NaN (float
        types) and in ``bindata/valid.bin`` (integer types).
    dtype : {"D", "F", "I", "L"}, optional
        Data type of ``data.bin``: float64 (default, exact round trip), float32, int16 or
        int32. For integers the CZ Increment is chosen so the largest height fits; heights
        are then quantised to within half an increment.
    length_unit : {"m", "um"}, optional
        Unit written in the CX/CY/CZ increments and float heights. ``"m"`` (default) is the
        standard; ``"um"`` writes the deviation some tool chains produce (micrometres in the
        metre fields), e.g. to test that readers refuse it unless told
        (``read_x3p(..., length_unit="um")``).

    Raises
    ------
    BallisticsError
        ``scan`` is an image, or ``dtype`` or ``length_unit`` is unknown.
    """
    if scan.kind != "topography":
        raise BallisticsError(f"X3P holds topography; got a scan of kind {scan.kind!r}")
    if dtype not in _DTYPES:
        raise BallisticsError(f"dtype must be one of {sorted(_DTYPES)}; got {dtype!r}")
    per_metre = 1.0 / LENGTH_UNITS[check_length_unit(length_unit)]
    point_data, z_increment, valid_data = _encode_points(scan, dtype, per_metre)
    links = {"bindata/data.bin": point_data}
    if valid_data is not None:
        links["bindata/valid.bin"] = valid_data
    xml_bytes = _build_main_xml(scan, dtype, z_increment, links, per_metre)
    members = {"main.xml": xml_bytes, **links}
    members["md5checksum.hex"] = f"{_md5(xml_bytes)} *main.xml\n".encode("ascii")
    _atomic_write_zip(Path(path), members)


def _encode_points(
    scan: Scan, dtype: str, per_metre: float = 1.0
) -> tuple[bytes, float, bytes | None]:
    """(data.bin bytes, CZ Increment, valid.bin bytes or None), lengths in file units
    (``per_metre`` file units per metre)."""
    heights = scan.masked() if per_metre == 1.0 else scan.masked() * per_metre
    if dtype in ("D", "F"):
        return heights.astype(_DTYPES[dtype]).tobytes(), 1.0, None
    qmax = np.iinfo(_DTYPES[dtype]).max
    valid = scan.mask
    amax = float(np.abs(heights[valid]).max()) if valid.any() else 0.0
    # One step per count, with the largest |height| at the top of the range.
    z_increment = amax / qmax if amax > 0 else 1e-9
    counts = np.clip(np.rint(np.where(valid, heights, 0.0) / z_increment), -qmax, qmax)
    valid_bits = np.packbits(valid.ravel(), bitorder="little").tobytes()
    return counts.astype(_DTYPES[dtype]).tobytes(), z_increment, valid_bits


def _build_main_xml(
    scan: Scan, dtype: str, z_increment: float, links: dict[str, bytes], per_metre: float = 1.0
) -> bytes:
    """ISO 5436-2 main.xml with Record1-4 for a DataLink file (lateral increments scaled by
    ``per_metre``; ``z_increment`` is already in file units)."""
    ET.register_namespace("p", NAMESPACE)
    ET.register_namespace("xsi", _XSI)
    root = ET.Element(f"{{{NAMESPACE}}}ISO5436_2")
    root.set(f"{{{_XSI}}}schemaLocation", f"{NAMESPACE} {NAMESPACE}/ISO5436_2.xsd")

    record1 = ET.SubElement(root, "Record1")
    _sub(record1, "Revision", "ISO5436 - 2000")
    _sub(record1, "FeatureType", "SUR")
    axes = ET.SubElement(record1, "Axes")
    dy, dx = (v * per_metre for v in scan.spacing_m)
    for axis, kind, data_type, increment in (
        ("CX", "I", "D", dx),
        ("CY", "I", "D", dy),
        ("CZ", "A", dtype, z_increment),
    ):
        element = ET.SubElement(axes, axis)
        _sub(element, "AxisType", kind)
        _sub(element, "DataType", data_type)
        # repr() gives the shortest text that parses back to the same float.
        _sub(element, "Increment", repr(float(increment)))
        _sub(element, "Offset", "0")

    now = datetime.now(UTC).isoformat(timespec="seconds")
    instrument = _instrument_of(scan)
    record2 = ET.SubElement(root, "Record2")
    _sub(record2, "Date", now)
    _sub(record2, "Creator", "ballistics-match")
    inst = ET.SubElement(record2, "Instrument")
    for key in ("Manufacturer", "Model", "Serial", "Version"):
        _sub(inst, key, instrument.get(key.lower(), "unknown"))
    _sub(record2, "CalibrationDate", now)
    probing = ET.SubElement(record2, "ProbingSystem")
    _sub(probing, "Type", "NonContacting")
    _sub(probing, "Identification", "unknown")
    _sub(record2, "Comment", "steps: " + ", ".join(s.name for s in scan.provenance))

    record3 = ET.SubElement(root, "Record3")
    matrix = ET.SubElement(record3, "MatrixDimension")
    rows, cols = scan.shape
    for key, value in (("SizeX", cols), ("SizeY", rows), ("SizeZ", 1)):
        _sub(matrix, key, str(value))
    link = ET.SubElement(record3, "DataLink")
    _sub(link, "PointDataLink", "bindata/data.bin")
    _sub(link, "MD5ChecksumPointData", _md5(links["bindata/data.bin"]))
    if "bindata/valid.bin" in links:
        _sub(link, "ValidPointsLink", "bindata/valid.bin")
        _sub(link, "MD5ChecksumValidPoints", _md5(links["bindata/valid.bin"]))

    record4 = ET.SubElement(root, "Record4")
    _sub(record4, "ChecksumFile", "md5checksum.hex")
    ET.indent(root, space="  ")
    body = ET.tostring(root, encoding="unicode")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n").encode("utf-8")


def _instrument_of(scan: Scan) -> dict[str, str]:
    """Instrument recorded by the ``read_x3p`` step that produced ``scan``, if any."""
    for step in scan.provenance:
        if step.name == "read_x3p" and isinstance(step.stats.get("instrument"), dict):
            return {str(k): str(v) for k, v in step.stats["instrument"].items()}
    return {}


def _sub(parent: ET.Element, tag: str, text: str) -> None:
    ET.SubElement(parent, tag).text = text


def _md5(content: bytes) -> str:
    return hashlib.md5(content, usedforsecurity=False).hexdigest()


def _atomic_write_zip(path: Path, members: dict[str, bytes]) -> None:
    """Write a zip to ``path`` via a temporary file and a rename, so readers never see half."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for name, content in members.items():
                    zf.writestr(name, content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
