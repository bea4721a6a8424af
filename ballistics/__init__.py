"""Image pipeline for fired cartridge cases: read, segment, condition, describe, compare.

Knows nothing of the index or the service.
"""

from .errors import (
    BallisticsError,
    MissingSpacingError,
    ScanFormatError,
    ScanTooLargeError,
    SegmentationError,
    UnsafeInputError,
)
from .scan import Scan, Step

try:  # the installed distribution's version (pyproject.toml)
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("ballistics-match")
except PackageNotFoundError:  # pragma: no cover - running from a tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "BallisticsError",
    "MissingSpacingError",
    "Scan",
    "ScanFormatError",
    "ScanTooLargeError",
    "SegmentationError",
    "Step",
    "UnsafeInputError",
]
