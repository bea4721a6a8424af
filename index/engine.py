"""The pipeline functions the index needs, behind one small object so tests can inject fakes.

:class:`BallisticsEngine` (the default) calls the real pipeline lazily, so importing ``index``
does not import OpenCV. An engine provides:

* ``extractor_version`` - the descriptor version the index is built for;
* ``process(data, filename, spacing_m, *, length_unit="m") -> Processed`` - read, prepare and
  describe one file (``length_unit``: of an X3P's lengths, "m" or "um"; callers pass it only
  when it is not "m", so engines without the keyword keep working; likewise ``light``, a
  ``ballistics.lighting.LightRequest`` for a 2-D image, passed only when one was given);
* ``describe(prepared) -> dict[str, ndarray]`` - descriptors of a prepared casing, plus the
  screening signature under :data:`index.search.SCREEN_KEY` (stored, versioned and
  re-extracted like a descriptor, but never put in a vector index);
* ``screen(query_signature, signatures) -> ndarray`` - screening scores, (D,) x (N, D) -> (N,);
* ``load(surface_bytes) -> prepared`` - inverse of ``PreparedCasing.to_bytes`` (a 2-D image
  comes back with its recorded light, ``ballistics.lighting.load_prepared``);
* ``score(a, b)`` - the registration comparison (object with ``.score``, ``.cmc``, ``.regions``,
  ``.flags``), light-aware for 2-D images (``ballistics.lighting.compare_prepared``);
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
    light: dict[str, Any] | None = None
    """The light a 2-D image was taken under (``LightEstimate.as_dict``); None for 3-D."""


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
        light: Any = None,
    ) -> Processed:
        io = importlib.import_module("ballistics.io")
        lighting = importlib.import_module("ballistics.lighting")

        kwargs = {} if self.limits is None else {"limits": self.limits}
        scan = io.read_scan(
            data, name=filename, spacing_m=spacing_m, length_unit=length_unit, **kwargs
        )
        # A 2-D image gets its light (given, else detected); a 3-D scan has none (ignored).
        prep = lighting.prepare_scan(scan, light=light)
        est = lighting.light_of(prep)
        return Processed(
            descriptors=self.describe(prep),
            surface=prep.to_bytes(),
            prepared=prep,
            firing_pin_shape=prep.segmentation.get("firing_pin_shape"),
            format=io.sniff_format(data) or "unknown",
            spacing_m=float(scan.spacing_m[1]),
            quality=getattr(prep, "quality", None),
            light=None if est is None else est.as_dict(),
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
        lighting = importlib.import_module("ballistics.lighting")
        return lighting.load_prepared(surface)

    def score(self, a: Any, b: Any) -> Any:
        lighting = importlib.import_module("ballistics.lighting")

        return lighting.compare_prepared(a, b)

    def picture(self, a: Any, b: Any, comparison: Any) -> bytes:
        """The examiner's comparison picture (PNG bytes; pseudo-heights for side-lit pairs)."""
        picture = importlib.import_module("ballistics.picture")
        lighting = importlib.import_module("ballistics.lighting")
        pa, pb = lighting.picture_surfaces(a, b, comparison)
        return bytes(picture.comparison_png(pa, pb, comparison))

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
