"""Caps on untrusted input, and the bounded read that enforces the first of them.

Every scan that reaches the service comes from outside: an upload, a file on a shared drive.
The readers check each cap *before* the work it guards (reading, decompressing, allocating),
so a hostile or broken file costs at most a few megabytes and milliseconds to refuse.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import threading
from collections.abc import Iterator
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
    working_bytes_per_pixel : int
        Working memory one pixel costs from reading to descriptors (bytes): what a request
        reserves from a :class:`MemoryBudget` when a header declares its size. Default 80:
        the real pipeline (``index.engine.BallisticsEngine.process``) peaked at 72-74 bytes
        per pixel on synthetic 1776 x 1776 and 3332 x 3332 float32 X3P scans.
    min_spacing_m, max_spacing_m : float
        Plausible pixel spacing of a scan, in metres (default 0.1 um to 100 um). A spacing
        outside is refused before any step divides by it.
    """

    max_file_bytes: int = 256 * MiB
    max_uncompressed_bytes: int = 1 * GiB
    max_pixels: int = 64_000_000
    max_members: int = 64
    max_compression_ratio: float = 1100.0
    working_bytes_per_pixel: int = 80
    min_spacing_m: float = 1e-7
    max_spacing_m: float = 1e-4
    hint: str = "Limits.max_pixels"

    def check_pixels(self, rows: int, cols: int, what: str) -> None:
        """Raise :class:`ScanTooLargeError` if ``rows x cols`` exceeds :attr:`max_pixels`.

        Inside :meth:`MemoryBudget.request` the declared size (times
        :attr:`working_bytes_per_pixel`) is also reserved from the budget, before anything is
        decoded; :class:`MemoryBudgetExceeded` if it does not fit.

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
                f"{self.max_pixels:,} pixels ({self.hint})"
            )
        reserve_working_memory(rows * cols * self.working_bytes_per_pixel, what)

    def check_spacing(self, spacing_m: tuple[float, float], what: str) -> None:
        """Raise :class:`ScanFormatError` unless both spacings (metres) are plausible."""
        lo, hi = self.min_spacing_m, self.max_spacing_m
        for s in spacing_m:
            if not (math.isfinite(s) and lo <= s <= hi):
                raise ScanFormatError(
                    f"{what}: pixel spacing {s:.3g} m is outside the plausible range "
                    f"{lo * 1e6:g}-{hi * 1e6:g} um; give the spacing explicitly if the file's "
                    "is wrong"
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


# ---- server-wide memory budget ----------------------------------------------------------


class MemoryBudgetExceeded(ScanTooLargeError):
    """A request's working memory does not fit the server's remaining budget (retry later)."""


class MemoryBudget:
    """Working memory shared by concurrent requests, in bytes.

    A request runs inside :meth:`request`; every scan header it reads
    (:meth:`Limits.check_pixels`) reserves the declared size before decoding, and everything
    is released when the request ends. Outside :meth:`request` nothing is reserved (the CLI).
    """

    def __init__(self, total_bytes: int) -> None:
        if total_bytes <= 0:
            raise ValueError(f"memory budget must be positive bytes; got {total_bytes}")
        self.total = int(total_bytes)
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        """Bytes reserved right now."""
        with self._lock:
            return self._used

    def _take(self, nbytes: int, what: str) -> None:
        with self._lock:
            if self._used + nbytes > self.total:
                used = self._used
            else:
                self._used += nbytes
                return
        if nbytes > self.total:
            raise MemoryBudgetExceeded(
                f"{what} needs about {nbytes / MiB:,.0f} MiB of working memory, more than the "
                f"server's whole memory budget of {self.total / MiB:,.0f} MiB "
                "(serve --memory-budget-mb)"
            )
        raise MemoryBudgetExceeded(
            f"{what} needs about {nbytes / MiB:,.0f} MiB of working memory; "
            f"{used / MiB:,.0f} MiB of the server's {self.total / MiB:,.0f} MiB memory budget "
            "are in use by other requests; retry shortly"
        )

    def _give(self, nbytes: int) -> None:
        with self._lock:
            self._used -= nbytes

    @contextlib.contextmanager
    def request(self) -> Iterator[Reservation]:
        """Scope of one request: what it reserves is released on exit."""
        reservation = Reservation(self)
        token = _CURRENT.set(reservation)
        try:
            yield reservation
        finally:
            _CURRENT.reset(token)
            reservation.release()


class Reservation:
    """What one request holds of a :class:`MemoryBudget`."""

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.held = 0

    def reserve(self, nbytes: int, what: str) -> None:
        self.budget._take(nbytes, what)
        self.held += nbytes

    def release(self) -> None:
        self.budget._give(self.held)
        self.held = 0


_CURRENT: contextvars.ContextVar[Reservation | None] = contextvars.ContextVar(
    "ballistics_memory_reservation", default=None
)


def reserve_working_memory(nbytes: int, what: str) -> None:
    """Reserve ``nbytes`` for the current request, if it runs inside a budget (else no-op)."""
    reservation = _CURRENT.get()
    if reservation is not None and nbytes > 0:
        reservation.reserve(nbytes, what)
