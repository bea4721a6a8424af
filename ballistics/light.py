"""What a lab says, and what detection finds, about the light of a 2-D image: the small,
dependency-free part of :mod:`ballistics.lighting` (the service validates requests with it
without loading the image pipeline).

Conventions: angles in degrees counter-clockwise from the +col axis in (x = col, y = row)
coordinates; an azimuth is the direction the light comes *from* (image frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import BallisticsError

__all__ = [
    "FLAG_INCOMPATIBLE",
    "FLAG_KINDS_DIFFER",
    "FLAG_NOT_RECORDED",
    "LIGHT_FLAGS",
    "LIGHT_KINDS",
    "LightEstimate",
    "LightRequest",
    "as_light",
]

FLAG_INCOMPATIBLE = "light_directions_incompatible"
FLAG_KINDS_DIFFER = "light_kinds_differ"
FLAG_NOT_RECORDED = "light_not_recorded"
#: The comparison flags ``ballistics.lighting`` adds (next to ``ballistics.compare.FLAGS``); each
#: makes a comparison ``low_confidence`` (``ballistics.quality.combine``).
LIGHT_FLAGS: dict[str, str] = {
    FLAG_INCOMPATIBLE: (
        "not a match, but the two side lights hide the marks at too many relative rotations "
        "for a low score to mean 'different gun'"
    ),
    FLAG_KINDS_DIFFER: (
        "the two images were taken under different kinds of light (ring, side, coaxial): they "
        "show different quantities, so the score is not trustworthy either way"
    ),
    FLAG_NOT_RECORDED: (
        "one image is side-lit and the other's light was never recorded (stored before "
        "lights were): compared on the flattened images, which a turning light defeats"
    ),
}
#: Kinds of light a 2-D image can be taken under (the ``--light`` choices besides ``auto``).
LIGHT_KINDS = ("ring", "side", "coaxial")


@dataclass(frozen=True)
class LightEstimate:
    """How a 2-D image was lit.

    Attributes
    ----------
    kind : {"ring", "side", "coaxial"}
        ``"side"``: one directional light (``"directional"`` is accepted as another spelling).
        ``"coaxial"`` (light along the optical axis) is never detected, only given; like a
        ring light it turns with the casing, so it is compared on the flattened image.
    azimuth_deg : float or None
        Direction the light comes from (side light only), degrees counter-clockwise from
        +col in (x = col, y = row), in [0, 360).
    strength : float or None
        Detection statistic: first angular harmonic of the primer edge's brightness relative
        to the breech face's brightness spread (None when nothing was detected).
    source : {"metadata", "detected"}
        Where the kind came from.
    azimuth_source : {"metadata", "detected"} or None
        Where the azimuth came from (side light only; ``--light side`` without an azimuth
        takes the kind from metadata and detects the azimuth). Defaults to ``source``.
    """

    kind: str
    azimuth_deg: float | None = None
    strength: float | None = None
    source: str = "detected"
    azimuth_source: str | None = None

    def __post_init__(self) -> None:
        if self.kind == "directional":
            object.__setattr__(self, "kind", "side")
        if self.kind not in LIGHT_KINDS:
            raise BallisticsError(
                f"light kind must be one of {', '.join(LIGHT_KINDS)}; got {self.kind!r}"
            )
        for name in ("source", "azimuth_source"):
            value = getattr(self, name)
            if value is not None and value not in ("metadata", "detected"):
                raise BallisticsError(f"light {name} must be 'metadata' or 'detected'")
        if self.kind == "side" and self.azimuth_deg is None:
            raise BallisticsError("a side light needs azimuth_deg (degrees)")
        if self.kind != "side" and self.azimuth_deg is not None:
            raise BallisticsError(f"a {self.kind} light has no azimuth; got {self.azimuth_deg}")
        if self.azimuth_deg is not None:
            if not math.isfinite(self.azimuth_deg):
                raise BallisticsError(f"light azimuth must be finite; got {self.azimuth_deg}")
            object.__setattr__(self, "azimuth_deg", float(self.azimuth_deg) % 360.0)
            if self.azimuth_source is None:
                object.__setattr__(self, "azimuth_source", self.source)

    @property
    def directional(self) -> bool:
        """True for a side light (its shading turns against the casing)."""
        return self.kind == "side"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "azimuth_deg": None if self.azimuth_deg is None else round(self.azimuth_deg, 3),
            "source": self.source,
            "azimuth_source": self.azimuth_source,
            "strength": None if self.strength is None else round(self.strength, 4),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LightEstimate:
        """Inverse of :meth:`as_dict` (e.g. from a stored surface)."""
        try:
            return cls(
                str(d["kind"]),
                None if d.get("azimuth_deg") is None else float(d["azimuth_deg"]),
                None if d.get("strength") is None else float(d["strength"]),
                str(d.get("source") or "detected"),
                d.get("azimuth_source"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BallisticsError(f"unreadable light record {d!r}: {exc}") from None


@dataclass(frozen=True)
class LightRequest:
    """What a lab says about an image's light (``--light``, ``--light-azimuth-deg``, the
    manifest's ``light`` and ``light_azimuth_deg`` columns, ``SubmitMetadata.light``).

    Attributes
    ----------
    kind : {"auto", "ring", "side", "coaxial"}
        ``auto`` detects the light (:func:`detect_light`); the others are metadata and
        override detection.
    azimuth_deg : float or None
        A side light's direction (degrees counter-clockwise from +col, the direction the light
        comes from, image frame). With ``kind="auto"`` it means a side light; ``side``
        without it detects the azimuth only.
    """

    kind: str = "auto"
    azimuth_deg: float | None = None

    def __post_init__(self) -> None:
        kind = str(self.kind or "auto").strip().lower()
        if kind == "directional":
            kind = "side"
        if kind not in ("auto", *LIGHT_KINDS):
            raise BallisticsError(
                f"light must be one of auto, {', '.join(LIGHT_KINDS)}; got {self.kind!r}"
            )
        az = self.azimuth_deg
        if az is not None:
            if not math.isfinite(az):
                raise BallisticsError(f"light azimuth must be a finite number of degrees; got {az}")
            if kind in ("ring", "coaxial"):
                raise BallisticsError(
                    f"a {kind} light has no azimuth: drop the azimuth ({az} deg), or say the "
                    "light is 'side'"
                )
            kind = "side"
            az = float(az) % 360.0
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "azimuth_deg", az)

    @property
    def is_auto(self) -> bool:
        """Nothing given: detect."""
        return self.kind == "auto"

    @classmethod
    def parse(cls, kind: str | None = None, azimuth_deg: float | str | None = None) -> LightRequest:
        """From loose metadata (e.g. manifest cells): empty strings mean "not given"."""
        az: float | None = None
        if azimuth_deg is not None and azimuth_deg != "":
            try:
                az = float(azimuth_deg)
            except ValueError:
                raise BallisticsError(
                    f"light azimuth must be a number of degrees; got {azimuth_deg!r}"
                ) from None
        return cls(kind or "auto", az)

    @classmethod
    def from_options(cls, kind: str | None, azimuth_deg: float | None) -> LightRequest:
        """From the command line's ``--light`` / ``--light-azimuth-deg`` (None: not given);
        a contradiction names both options."""
        try:
            return cls(kind or "auto", azimuth_deg)
        except BallisticsError as exc:
            raise BallisticsError(
                f"--light {kind or 'auto'} --light-azimuth-deg {azimuth_deg}: {exc}"
            ) from None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "azimuth_deg": self.azimuth_deg}


def as_light(
    light: LightRequest | LightEstimate | float | str | None,
) -> LightRequest | LightEstimate:
    """Metadata -> LightRequest (a LightEstimate stays as it is): a number is a side light's
    azimuth, a string a kind ("auto", "ring", "side", "coaxial") or a number."""
    if light is None:
        return LightRequest()
    if isinstance(light, LightEstimate | LightRequest):
        return light
    if isinstance(light, str):
        text = light.strip().lower()
        if text in ("auto", "directional", *LIGHT_KINDS):
            return LightRequest(text)
        try:
            light = float(light)
        except ValueError:
            raise BallisticsError(
                f"light must be one of auto, {', '.join(LIGHT_KINDS)} or a side light's azimuth "
                f"in degrees; got {light!r}"
            ) from None
    return LightRequest("side", float(light))
