"""One place that checks every field of every request before the service acts on it.

Ids are checked first (:func:`check_ids`, before the caller is even authenticated, so a 70 KB
id never reaches the audit log): over :data:`MAX_ID_CHARS` a request is refused with the id's
length only, never echoed back. Then each string field has a length limit (characters;
:data:`FIELD_LIMITS`, else :data:`DEFAULT_MAX_CHARS`, so a field added to the proto later is
bounded too) and one control-character policy: no C0/C1 control characters, no Unicode
bidirectional overrides or isolates (they make a listing display something other than what is
stored), and no newline or tab except in the free-text fields of :data:`MULTILINE_FIELDS`.
Dates must be real calendar dates, spacings must lie in the plausible range, counts must be
>= 0. The handlers' own checks use the same functions: verdicts (:func:`verdict_name`),
firing-pin classes (:func:`check_firing_pin_class`), spacings (:func:`spacing_or_none`),
length units (:func:`length_unit`).

A refusal raises :class:`InvalidRequest` (a :class:`~ballistics.errors.BallisticsError`), the
one client-error type: the service maps it, once, to ``INVALID_ARGUMENT``. Messages never echo
input unbounded: :func:`shown`.
"""

from __future__ import annotations

import datetime as _dt
import math
import unicodedata
from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError, Message

from ballistics.errors import BallisticsError

from .proto_gen import matching_pb2 as pb

#: Plausible pixel spacing of a request, metres (0.1 um to 100 um); 0 means "from the file".
MIN_SPACING_M = 1e-7
MAX_SPACING_M = 1e-4

#: Longest status message sent to a client (characters).
MAX_DETAIL_CHARS = 512

DEFAULT_MAX_CHARS = 256
FIELD_LIMITS: dict[str, int] = {
    # ids: generated ids are 16 hex digits; incident ids are chosen by the lab
    "casing_id": 128,
    "candidate_id": 128,
    "casing_a": 128,
    "casing_b": 128,
    "incident_id": 128,
    "agency_case_number": 128,
    "calibre": 64,
    "firing_pin_class": 16,
    "acquisition_date": 10,
    "date_from": 10,
    "date_to": 10,
    "place": 256,
    "file_name": 255,
    "format": 16,
    "jurisdictions": 64,
    "comment": 4000,
    "reason": 1000,
    # intelligence (server.intel_service)
    "firearm_id": 128,
    "series_id": 128,
    "trace_id": 128,
    "serial_number": 64,
    "recovered_on": 10,
    "requested_at": 10,
    "outcome": 2000,
}
#: The id fields checked before authentication, and their limit (characters).
ID_FIELDS = (
    "casing_id",
    "casing_a",
    "casing_b",
    "candidate_id",
    "incident_id",
    "firearm_id",
    "series_id",
    "trace_id",
)
MAX_ID_CHARS = 128
MULTILINE_FIELDS = frozenset({"comment", "reason", "outcome"})
DATE_FIELDS = frozenset(
    {"acquisition_date", "date_from", "date_to", "recovered_on", "requested_at"}
)
SPACING_FIELDS = frozenset({"pixel_spacing_m"})
NON_NEGATIVE_FIELDS = frozenset({"max_results", "limit", "offset"})
MAX_REPEATED = 32  # entries of a repeated string field (jurisdictions)

#: Verdict enum values and their names in the store.
VERDICTS: dict[int, str] = {
    pb.HIT: "hit",
    pb.EXCLUDED: "excluded",
    pb.INCONCLUSIVE: "inconclusive",
}
FIRING_PIN_CLASSES = ("", "round", "elongated")

# Bidirectional embeddings, overrides, isolates and marks (Trojan Source, CVE-2021-42574).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_MULTILINE_OK = frozenset("\n\t")


class InvalidRequest(BallisticsError):
    """A request field breaks a documented limit; the message names the field and the limit."""


class Undecodable:
    """Stands for a request message that could not be parsed."""

    def __init__(self, error: str) -> None:
        self.error = error


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """A deserializer that returns :class:`Undecodable` instead of raising."""
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, ValueError, RuntimeError, UnicodeDecodeError) as e:
            return Undecodable(type(e).__name__)

    return parse


def check_decodable(request: Any) -> None:
    """Raise :class:`InvalidRequest` for a request that could not be parsed."""
    if isinstance(request, Undecodable):
        raise InvalidRequest(
            "the request could not be decoded as the expected protobuf message "
            f"({request.error}); is the client built from proto/ballistics/v1/matching.proto?",
        )


def check_ids(message: Any) -> None:
    """Refuse a request whose id fields are longer than :data:`MAX_ID_CHARS` (by length only,
    never echoing the id). Non-messages pass (streams are checked per message)."""
    descriptor = getattr(message, "DESCRIPTOR", None)
    if descriptor is None:
        return
    for name in ID_FIELDS:
        if name not in descriptor.fields_by_name:
            continue
        value = getattr(message, name)
        if isinstance(value, str) and len(value) > MAX_ID_CHARS:
            raise InvalidRequest(
                f"{name} is {len(value):,} characters long; ids are at most {MAX_ID_CHARS}"
                " characters"
            )


def verdict_name(value: int) -> str:
    """The store's name of a verdict enum value; InvalidRequest for an unset or unknown one."""
    if value not in VERDICTS:
        raise InvalidRequest("verdict must be HIT, EXCLUDED or INCONCLUSIVE")
    return VERDICTS[value]


def check_firing_pin_class(value: str) -> None:
    if value not in FIRING_PIN_CLASSES:
        raise InvalidRequest("firing_pin_class must be 'round' or 'elongated'")


def spacing_or_none(field: str, value: float) -> float | None:
    """A request's pixel spacing in metres, None for 0 ("from the file")."""
    check_spacing_m(field, value)
    return None if value == 0 else value


def length_unit(field: str, value: str) -> str:
    """``"m"`` or ``"um"`` from a request's length unit ("" = metres)."""
    from ballistics.x3p import check_length_unit

    try:
        return check_length_unit(value)
    except BallisticsError as exc:
        raise InvalidRequest(f"{field}: {exc}") from None


def light_fields(message: Any) -> dict[str, Any]:
    """``light`` and ``light_azimuth_deg`` of a SubmitMetadata / SearchRequest, checked
    (unknown kind, or a ring / coaxial light with an azimuth: InvalidRequest)."""
    from ballistics.light import LightRequest

    az = message.light_azimuth_deg if message.HasField("light_azimuth_deg") else None
    try:
        req = LightRequest(message.light or "auto", az)
    except BallisticsError as exc:
        raise InvalidRequest(f"light: {exc}") from None
    return {"light": req.kind, "light_azimuth_deg": req.azimuth_deg}


def check_non_negative(field: str, value: int) -> None:
    if value < 0:
        raise InvalidRequest(f"{field} must be >= 0; got {value}")


def shown(value: str, limit: int = 40) -> str:
    """``value`` for a message: repr, cut to ``limit`` characters with its full length noted."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value):,} characters)"


def truncate_detail(message: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """A status message bounded to ``limit`` characters (last resort against echoed input)."""
    return message if len(message) <= limit else message[: limit - 15] + "... (truncated)"


def check_text(field: str, value: str, max_chars: int | None = None) -> None:
    """Length limit and control-character policy for one string field."""
    limit = max_chars if max_chars is not None else FIELD_LIMITS.get(field, DEFAULT_MAX_CHARS)
    if len(value) > limit:
        raise InvalidRequest(
            f"{field} is {len(value):,} characters; the limit is {limit:,} ({shown(value)})"
        )
    allowed = _MULTILINE_OK if field in MULTILINE_FIELDS else frozenset()
    for i, ch in enumerate(value):
        if ch in allowed:
            continue
        if ch in _BIDI or unicodedata.category(ch) in ("Cc", "Cs"):
            raise InvalidRequest(
                f"{field} contains the control character U+{ord(ch):04X} at position {i}; "
                "control and bidirectional-override characters are not accepted"
                + ("" if field in MULTILINE_FIELDS else " (nor line breaks or tabs)")
            )


def check_date(field: str, value: str) -> None:
    """Empty, or a real calendar date YYYY-MM-DD."""
    if not value:
        return
    ok = len(value) == 10 and value[4] == "-" and value[7] == "-"
    if ok:
        try:
            _dt.date.fromisoformat(value)
        except ValueError:
            ok = False
    if not ok:
        raise InvalidRequest(f"{field} must be a calendar date YYYY-MM-DD; got {shown(value)}")


def check_spacing_m(field: str, value: float) -> None:
    """0 (take the spacing from the file) or a plausible spacing in metres."""
    if value == 0:
        return
    if not (math.isfinite(value) and MIN_SPACING_M <= value <= MAX_SPACING_M):
        raise InvalidRequest(
            f"{field} must be 0 (from the file) or a spacing in metres between "
            f"{MIN_SPACING_M * 1e6:g} um and {MAX_SPACING_M * 1e6:g} um; got {value!r} "
            "(6.25 um is 6.25e-6)"
        )


def validate_message(msg: Message, prefix: str = "") -> None:
    """Check every set field of ``msg`` (recursively) against the policy above.

    Raises
    ------
    InvalidRequest
        The first field that breaks a limit.
    """
    for fd, value in msg.ListFields():
        name = fd.name
        label = prefix + name
        if fd.message_type is not None:
            if fd.message_type.GetOptions().map_entry:
                continue  # requests carry no maps
            items = value if fd.is_repeated else [value]
            for item in items:
                validate_message(item, prefix=label + ".")
            continue
        values: list[Any] = list(value) if fd.is_repeated else [value]
        if fd.is_repeated and len(values) > MAX_REPEATED:
            raise InvalidRequest(
                f"{label} has {len(values):,} entries; the limit is {MAX_REPEATED}"
            )
        for v in values:
            if isinstance(v, str):
                check_text(name, v)
                if name in DATE_FIELDS:
                    check_date(name, v)
            elif isinstance(v, float) and name in SPACING_FIELDS:
                check_spacing_m(name, v)
            elif isinstance(v, int) and not isinstance(v, bool) and name in NON_NEGATIVE_FIELDS:
                check_non_negative(name, v)
