"""Caps on untrusted input, and the bounded read that enforces the first of them.

Every scan that reaches the service comes from outside: an upload, a file on a shared drive.
The readers check each cap *before* the work it guards (reading, decompressing, allocating),
so a hostile or broken file costs at most a few megabytes and milliseconds to refuse.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ScanFormatError, ScanTooLargeError

MiB = 1024 * 1024
GiB = 1024 * MiB

Source = str | os.PathLike[str] | bytes | bytearray | memoryview


@dataclass(frozen=True)
class Limits:
    """Caps applied to every scan file before it is read, decompressed or decoded.

    Attributes
    ----------
    max_file_bytes : int
        Largest file (or upload) accepted, in bytes. Default 256 MiB.
    max_uncompressed_bytes : int
        Largest total of the sizes declared by the members of an X3P zip, and largest decoded
        image buffer, in bytes. Default 1 GiB.
    max_pixels : int
        Largest number of points (rows x cols) of a scan or image. Default 64 million, i.e. an
        8000 x 8000 image; the largest real breech-face scans are about 4000 x 4000.
    max_members : int
        Largest number of members in an X3P zip. A real X3P holds 3 to 6. Default 64.
    max_compression_ratio : float
        Largest uncompressed / compressed size accepted for a zip member over 1 MiB. Deflate
        cannot exceed about 1032:1, so the default 1100 only rejects other methods used as
        a bomb, or a header that lies.
    """

    max_file_bytes: int = 256 * MiB
    max_uncompressed_bytes: int = 1 * GiB
    max_pixels: int = 64_000_000
    max_members: int = 64
    max_compression_ratio: float = 1100.0

    def check_pixels(self, rows: int, cols: int, what: str) -> None:
        """Raise :class:`ScanTooLargeError` if ``rows x cols`` exceeds :attr:`max_pixels`.

        Parameters
        ----------
        rows, cols : int
            Dimensions claimed by a file header, before anything is allocated.
        what : str
            What is being checked, for the message (e.g. ``"PNG header"``).
        """
        if rows * cols > self.max_pixels:
            raise ScanTooLargeError(
                f"{what} claims {cols} x {rows} = {rows * cols:,} pixels; the limit is "
                f"{self.max_pixels:,} pixels (Limits.max_pixels)"
            )

    def check_decoded_bytes(self, nbytes: int, what: str) -> None:
        """Raise :class:`ScanTooLargeError` if a decoded buffer would exceed the byte cap."""
        if nbytes > self.max_uncompressed_bytes:
            raise ScanTooLargeError(
                f"{what} would decode to {nbytes:,} bytes; the limit is "
                f"{self.max_uncompressed_bytes:,} bytes (Limits.max_uncompressed_bytes)"
            )


DEFAULT_LIMITS = Limits()


def source_name(source: Source, name: str | None = None) -> str:
    """Name to use for ``source`` in messages and provenance: ``name``, the file name, or
    ``"<bytes>"``."""
    if name:
        return name
    if isinstance(source, bytes | bytearray | memoryview):
        return "<bytes>"
    return Path(source).name


def read_source(source: Source, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Return the content of ``source``, refusing anything over ``limits.max_file_bytes``.

    Parameters
    ----------
    source : str, path-like, bytes, bytearray or memoryview
        A file path, or the file content itself (e.g. an upload).
    limits : Limits

    Returns
    -------
    bytes
        The whole file content, at most ``limits.max_file_bytes`` long.

    Raises
    ------
    ScanFormatError
        The path does not exist, is not a regular file, or cannot be read.
    ScanTooLargeError
        The file is larger than ``limits.max_file_bytes``.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        _check_file_size(len(data), "<bytes>", limits)
        return data
    path = Path(source)
    if path.exists() and not path.is_file():
        # Checked before opening: opening a FIFO or a device could block forever.
        raise ScanFormatError(f"not a regular file: {path}")
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            _check_file_size(size, str(path), limits)
            # read(n) allocates n bytes up front, so ask for the actual size, not the cap;
            # the extra byte detects a file still being written, which is not trusted.
            data = fh.read(size + 1)
    except FileNotFoundError:
        raise ScanFormatError(f"no such file: {path}") from None
    except OSError as exc:
        raise ScanFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > size:
        raise ScanFormatError(f"{path} grew while being read; read it again once complete")
    return data


def _check_file_size(size: int, what: str, limits: Limits) -> None:
    if size > limits.max_file_bytes:
        raise ScanTooLargeError(
            f"{what} is {size:,} bytes; the limit is {limits.max_file_bytes:,} bytes "
            "(Limits.max_file_bytes)"
        )
