"""The one scan type that flows through the pipeline.

A :class:`Scan` is immutable. Every pipeline step is a pure function ``Scan -> Scan`` that
returns a new scan with one :class:`Step` appended to its provenance, so an examiner can read
exactly what was done to a surface and with which parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from .errors import BallisticsError

Kind = Literal["topography", "image"]
KINDS: tuple[Kind, ...] = ("topography", "image")


@dataclass(frozen=True)
class Step:
    """One entry of a scan's provenance.

    Attributes
    ----------
    name : str
        Step name, e.g. ``"read_x3p"``, ``"level_plane"``, ``"bandpass"``.
    params : dict
        Parameters the step was called with (JSON-serialisable; lengths carry units in the key,
        e.g. ``"short_cutoff_um"``).
    stats : dict
        Statistics the step measured (JSON-serialisable).
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params), "stats": dict(self.stats)}


@dataclass(frozen=True, eq=False)
class Scan:
    """A measured surface or image of a cartridge-case head.

    Attributes
    ----------
    data : ndarray of shape (M, N), float64
        Heights in **metres** for ``kind="topography"``; relative intensity (dimensionless,
        nominally 0..1) for ``kind="image"``. Values where ``mask`` is False are meaningless
        (conventionally NaN).
    mask : ndarray of shape (M, N), bool
        True where ``data`` holds a valid measurement.
    spacing_m : tuple of float
        Pixel spacing ``(row_spacing, col_spacing)`` in metres, i.e. (y, x).
    kind : {"topography", "image"}
    provenance : tuple of Step
        What produced this scan, oldest first.
    """

    data: np.ndarray
    mask: np.ndarray
    spacing_m: tuple[float, float]
    kind: Kind
    provenance: tuple[Step, ...] = ()

    def __post_init__(self) -> None:
        data = np.asarray(self.data)
        mask = np.asarray(self.mask)
        if data.ndim != 2:
            raise BallisticsError(f"scan data must be 2-D (rows, cols); got shape {data.shape}")
        if mask.shape != data.shape:
            raise BallisticsError(
                f"scan mask shape {mask.shape} differs from data shape {data.shape}"
            )
        if self.kind not in KINDS:
            raise BallisticsError(f"scan kind must be one of {KINDS}; got {self.kind!r}")
        sy, sx = (float(s) for s in self.spacing_m)
        for name, s in (("row", sy), ("col", sx)):
            if not (math.isfinite(s) and 0.0 < s < 1e-2):
                raise BallisticsError(
                    f"{name} spacing must be a positive length in metres below 1 cm; got {s!r}"
                    " (did you pass micrometres? 6.25 um is 6.25e-6 m)"
                )
        if data.dtype != np.float64:
            data = data.astype(np.float64)
        mask = mask.astype(bool, copy=False) & np.isfinite(data)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "spacing_m", (sy, sx))

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.data.shape[0]), int(self.data.shape[1]))

    @property
    def valid_fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0

    def masked(self) -> np.ndarray:
        """Data with NaN where invalid; shape (M, N), float64."""
        return np.where(self.mask, self.data, np.nan)

    def evolve(
        self,
        step: str,
        params: dict[str, Any] | None = None,
        stats: dict[str, Any] | None = None,
        **changes: Any,
    ) -> Scan:
        """Return a copy with ``changes`` applied and ``step`` appended to the provenance."""
        rec = Step(step, dict(params or {}), dict(stats or {}))
        return replace(self, provenance=(*self.provenance, rec), **changes)

    def provenance_dicts(self) -> list[dict[str, Any]]:
        return [s.as_dict() for s in self.provenance]
