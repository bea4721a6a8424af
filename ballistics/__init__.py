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
