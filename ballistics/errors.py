"""One exception hierarchy for everything that can be wrong with a scan or a request.

Every refusal names the problem and, where possible, how to fix it. Callers (CLI, gRPC
service) map these classes to exit status 2 or to gRPC status codes; they never let a bad
input surface as a traceback or as ``UNKNOWN``.
"""

from __future__ import annotations


class BallisticsError(ValueError):
    """Base class: the input or request is unusable, and the message says why."""


class ScanFormatError(BallisticsError):
    """The file is not a readable scan (corrupt, truncated, wrong type, malformed XML...)."""


class UnsafeInputError(ScanFormatError):
    """The file tries something dangerous (XML entities, external references, path tricks)."""


class ScanTooLargeError(BallisticsError):
    """The file or its decoded content exceeds a configured cap (bytes or pixels)."""


class MissingSpacingError(BallisticsError):
    """The pixel spacing is not in the file and was not given; it is never guessed."""


class SegmentationError(BallisticsError):
    """The primer, firing pin or breech face could not be found in the scan."""
