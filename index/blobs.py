"""Content-addressed file store for prepared surfaces, beside the SQLite store of record.

Layout::

    <data_dir>/surfaces/ab/cd/abcd...   one file per distinct surface, named by its SHA-256

A surface file is written to a temporary file, fsync'ed, renamed into place, and its directory
(and the directories created for it) fsync'ed before the caller commits the SQLite row that
references it, so a casing reported as stored never points at a missing or torn file. Reads
re-hash the bytes, so a corrupt or missing file is an error naming the file, never a wrong
comparison. SQLite keeps the hash and size (``surface_files`` in :mod:`index.store`); this
module knows nothing of casings.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path


class SurfaceFileError(RuntimeError):
    """A stored surface file is missing, truncated or does not match its recorded SHA-256."""


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename or a new entry inside it survives power loss (no-op where
    unsupported)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: Path, data: bytes | Path) -> None:
    """Write ``data`` (bytes, or the content of a file, copied in 4 MiB blocks) to ``path``
    atomically: temp file, fsync, rename, fsync directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            if isinstance(data, Path):
                with open(data, "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 22)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(path.parent)


class BlobStore:
    """Files named by the SHA-256 of their content under ``root`` (two levels of fan-out).

    Parameters
    ----------
    root : path
        The folder (``<data_dir>/surfaces``); created on first write.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        """Where the file of ``sha256`` lives (whether or not it exists)."""
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def has(self, sha256: str, size: int) -> bool:
        """True when the file exists with ``size`` bytes (a rename is atomic, so a file at its
        final name is never torn; bit rot is caught by :meth:`get`)."""
        try:
            return self.path(sha256).stat().st_size == size
        except FileNotFoundError:
            return False

    def put(self, data: bytes) -> tuple[str, int]:
        """Store ``data`` durably; returns (sha256 hex, size in bytes). Idempotent: content
        already stored is not written again."""
        sha = hashlib.sha256(data).hexdigest()
        if not self.has(sha, len(data)):
            self._write(sha, data)
        return sha, len(data)

    def _write(self, sha: str, data: bytes) -> None:
        path = self.path(sha)
        # Create the fan-out folders one by one, fsyncing each parent a new entry appeared in.
        for d in (self.root, path.parent.parent, path.parent):
            if not d.is_dir():
                d.mkdir(parents=True, exist_ok=True)
                fsync_dir(d.parent)
        atomic_write(path, data)

    def get(self, sha256: str, size: int | None = None, *, what: str = "surface") -> bytes:
        """The file's bytes, verified against ``sha256`` (and ``size`` when given).

        Raises
        ------
        SurfaceFileError
            Missing, wrong size or wrong hash; the message names ``what`` and the file.
        """
        path = self.path(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise SurfaceFileError(
                f"{what}: surface file {path} is missing; restore it from a backup (the casing's "
                "original scan, kept under objects/, can also be prepared again)"
            ) from None
        if size is not None and len(data) != size:
            raise SurfaceFileError(
                f"{what}: surface file {path} holds {len(data)} bytes, {size} were stored; "
                "the file is truncated or was replaced: restore it from a backup"
            )
        if hashlib.sha256(data).hexdigest() != sha256:
            raise SurfaceFileError(
                f"{what}: surface file {path} does not match its SHA-256 (corrupt); restore it"
                " from a backup"
            )
        return data

    def delete(self, sha256: str) -> bool:
        """Remove the file (True when one was removed). The caller checks no row refers to it."""
        path = self.path(sha256)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        fsync_dir(path.parent)
        return True

    def iter_shas(self) -> Iterator[str]:
        """The digests of every file present (temporary files left by a crash excluded)."""
        if not self.root.is_dir():
            return
        for a in sorted(self.root.iterdir()):
            if not a.is_dir() or len(a.name) != 2:
                continue
            for b in sorted(a.iterdir()):
                if not b.is_dir():
                    continue
                for f in sorted(b.iterdir()):
                    if len(f.name) == 64 and not f.name.startswith("."):
                        yield f.name

    def remove_temporaries(self) -> int:
        """Delete ``.*.tmp`` files a killed writer left behind; returns how many. Call only
        where no other writer is running (the catalog's exclusive lock)."""
        n = 0
        if self.root.is_dir():
            for f in self.root.glob("*/*/.*.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()
                    n += 1
        return n
