"""The pipeline functions the index needs, behind one small object so tests can inject fakes.

:class:`BallisticsEngine` (the default) calls the real pipeline lazily, so importing ``index``
does not import OpenCV. An engine provides:

* ``extractor_version`` - the descriptor version the index is built for;
* ``process(data, filename, spacing_m, *, length_unit="m") -> Processed`` - read, prepare and
  describe one file (``length_unit``: of an X3P's lengths, "m" or "um"; callers pass it only
  when it is not "m", so engines without the keyword keep working);
* ``describe(prepared) -> dict[str, ndarray]`` - descriptors of a prepared casing, plus the
  screening signature under :data:`index.search.SCREEN_KEY` (stored, versioned and
  re-extracted like a descriptor, but never put in a vector index);
* ``screen(query_signature, signatures) -> ndarray`` - screening scores, (D,) x (N, D) -> (N,);
* ``load(surface_bytes) -> prepared`` - inverse of ``PreparedCasing.to_bytes``;
* ``score(a, b)`` - the registration comparison (object with ``.score``, ``.cmc``, ``.regions``);
* ``non_match_frequency(score, region) -> float | None``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from .search import SCREEN_KEY


@dataclass
class Processed:
    """What ingest stores for one file."""

    descriptors: dict[str, np.ndarray]
    surface: bytes
    prepared: Any
    firing_pin_shape: str | None
    format: str | None
    spacing_m: float | None
    quality: dict[str, Any] | None = None
    """The scan's quality record (``ballistics.quality``); None if the engine has none."""


class BallisticsEngine:
    """The real pipeline (``ballistics.io``, ``.pipeline``, ``.descriptors``, ``.compare``).

    ``limits``: the byte and pixel caps every scan is read with (``ballistics.limits.Limits``;
    None: the reader's defaults).
    """

    def __init__(self, limits: Any = None) -> None:
        self.limits = limits

    @property
    def extractor_version(self) -> str:
        descriptors = importlib.import_module("ballistics.descriptors")
        screen = importlib.import_module("ballistics.screen")

        return f"{descriptors.EXTRACTOR_VERSION}+{screen.SIGNATURE_VERSION}"

    def process(
        self,
        data: bytes,
        filename: str | None,
        spacing_m: float | None,
        *,
        length_unit: str = "m",
    ) -> Processed:
        io = importlib.import_module("ballistics.io")
        pipeline = importlib.import_module("ballistics.pipeline")

        kwargs = {} if self.limits is None else {"limits": self.limits}
        scan = io.read_scan(
            data, name=filename, spacing_m=spacing_m, length_unit=length_unit, **kwargs
        )
        prep = pipeline.prepare(scan)
        return Processed(
            descriptors=self.describe(prep),
            surface=prep.to_bytes(),
            prepared=prep,
            firing_pin_shape=prep.segmentation.get("firing_pin_shape"),
            format=io.sniff_format(data) or "unknown",
            spacing_m=float(scan.spacing_m[1]),
            quality=getattr(prep, "quality", None),
        )

    def describe(self, prepared: Any) -> dict[str, np.ndarray]:
        descriptors = importlib.import_module("ballistics.descriptors")
        screen = importlib.import_module("ballistics.screen")

        out = dict(descriptors.describe(prepared))
        out[SCREEN_KEY] = screen.signature(prepared).ravel()
        return out

    def screen(self, query: np.ndarray, signatures: np.ndarray) -> np.ndarray:
        screen = importlib.import_module("ballistics.screen")

        shape = screen.SIGNATURE_SHAPE
        q = np.asarray(query, np.float32).reshape(shape)
        c = np.asarray(signatures, np.float32).reshape(-1, *shape)
        return np.asarray(screen.screen(q, c)[0], np.float64)

    def load(self, surface: bytes) -> Any:
        pipeline = importlib.import_module("ballistics.pipeline")
        return pipeline.PreparedCasing.from_bytes(surface)

    def score(self, a: Any, b: Any) -> Any:
        compare = importlib.import_module("ballistics.compare")

        return compare.compare(a, b)

    def picture(self, a: Any, b: Any, comparison: Any) -> bytes:
        """The examiner's comparison picture (PNG bytes)."""
        picture = importlib.import_module("ballistics.picture")
        return bytes(picture.comparison_png(a, b, comparison))

    def non_match_frequency(
        self, score: float, region: str, kind: str = "topography"
    ) -> float | None:
        """How often known non-matches of the same kind of scan score this high."""
        try:
            calibration = importlib.import_module("ballistics.calibration")
        except ImportError:
            return None
        try:
            return float(calibration.non_match_frequency(score, region, kind))
        except (ValueError, KeyError):
            return None
