"""The pipeline functions the index needs, behind one small object so tests can inject fakes.

:class:`Engine` is the interface (a :class:`typing.Protocol`, checked by mypy);
:class:`BallisticsEngine` (the default) implements it with the real pipeline, imported lazily so
importing ``index`` does not import OpenCV; :class:`index.testing.FakeEngine` implements it
without image processing. Bad input raises :class:`ballistics.errors.BallisticsError`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .search import SCREEN_KEY

#: Screening scores: query signature (D,) x stored signatures (N, D) -> scores (N,).
ScreenFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


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
    segmentation: dict[str, Any] | None = None
    """What segmentation found (``PreparedCasing.segmentation``: primer and firing-pin centres
    and radii in pixels, ...); None if the engine has none. Reported as computed, so a caller
    never decodes the stored surface again to learn it."""
    light: dict[str, Any] | None = None
    """The light a 2-D image was taken under (``LightEstimate.as_dict``); None for 3-D."""


class Comparison(Protocol):
    """What an engine's ``score`` returns (``ballistics.compare.Comparison``)."""

    @property
    def score(self) -> float: ...

    @property
    def cmc(self) -> float: ...

    @property
    def regions(self) -> Mapping[str, float]: ...


class Engine(Protocol):
    """The pipeline as the index uses it (:class:`BallisticsEngine`, ``FakeEngine``)."""

    @property
    def extractor_version(self) -> str:
        """The descriptor version the index is built for."""
        ...

    @property
    def screen(self) -> ScreenFn | None:
        """The screening comparison of stored signatures (None: the engine has none)."""
        ...

    def process(
        self,
        source: bytes | Path,
        filename: str | None,
        spacing_m: float | None,
        *,
        length_unit: str = "m",
    ) -> Processed:
        """Read (from the content or a file path), prepare and describe one scan.
        ``length_unit``: of an X3P's lengths, "m" or "um" (callers pass it only when it is
        not "m", so engines written without the keyword keep working). Engines that know
        lights also take ``light`` (a ``ballistics.light.LightRequest`` for a 2-D image),
        passed only when one was given."""
        ...

    def describe(self, prepared: Any) -> dict[str, np.ndarray]:
        """Descriptors of a prepared casing, plus the screening signature under
        :data:`index.search.SCREEN_KEY` (stored, versioned and re-extracted like a
        descriptor, never put in a vector index)."""
        ...

    def load(self, surface: bytes) -> Any:
        """The prepared casing from its stored bytes (inverse of ``Processed.surface``; a 2-D
        image comes back with its recorded light)."""
        ...

    def score(self, a: Any, b: Any) -> Comparison:
        """The registration comparison of two prepared casings (light-aware for 2-D)."""
        ...

    def coarse_similarity(self, a: Any, b: Any) -> float:
        """A cheap ranking score of two prepared casings, better than the screen and cheaper
        than :meth:`score` (the search's rescue stage; not evidence)."""
        ...

    def picture(
        self, a: Any, b: Any, comparison: Any, *, labels: tuple[str, str] = ("A", "B")
    ) -> bytes:
        """The examiner's comparison picture (PNG bytes); ``labels`` name A and B on it."""
        ...

    def non_match_frequency(
        self, score: float, region: str, kind: str = "topography"
    ) -> float | None:
        """How often known non-matches of this kind of scan score this high (None: unknown)."""
        ...


class BallisticsEngine:
    """The real pipeline (``ballistics.io``, ``.pipeline``, ``.descriptors``, ``.compare``).

    ``limits``: the byte and pixel caps every scan is read with (``ballistics.limits.Limits``;
    None: the reader's defaults). ``surface_form``: how a topography's prepared surface is
    stored (``PreparedCasing.to_bytes``): "levels" (default; only the pyramid levels the
    comparison, descriptors and screen read, with identical results, ~1/4 of the bytes;
    benchmarks/RESULTS-store.md) or "full" (the 6.25-um canvas). A 2-D image with its light
    is always stored in full.
    """

    def __init__(self, limits: Any = None, surface_form: str = "levels") -> None:
        self.limits = limits
        self.surface_form = surface_form

    @property
    def extractor_version(self) -> str:
        descriptors = importlib.import_module("ballistics.descriptors")
        screen = importlib.import_module("ballistics.screen")

        return f"{descriptors.EXTRACTOR_VERSION}+{screen.SIGNATURE_VERSION}"

    def process(
        self,
        source: bytes | Path,
        filename: str | None,
        spacing_m: float | None,
        *,
        length_unit: str = "m",
        light: Any = None,
    ) -> Processed:
        """See :meth:`Engine.process`. A path is read by the reader itself (one copy in
        memory, the reader's), named ``filename`` in messages (never the path). A 2-D image
        gets its light (``light``, else detected; ``ballistics.lighting.prepare_scan``); a 3-D
        scan has none (``light`` ignored)."""
        io = importlib.import_module("ballistics.io")
        lighting = importlib.import_module("ballistics.lighting")

        kwargs = {} if self.limits is None else {"limits": self.limits}
        name = filename if filename or isinstance(source, bytes) else "upload"
        scan = io.read_scan(
            source, name=name, spacing_m=spacing_m, length_unit=length_unit, **kwargs
        )
        prep = lighting.prepare_scan(scan, light=light)
        est = lighting.light_of(prep)
        return Processed(
            descriptors=self.describe(prep),
            surface=prep.to_bytes(
                "full" if isinstance(prep, lighting.LitCasing) else self.surface_form
            ),
            prepared=prep,
            firing_pin_shape=prep.segmentation.get("firing_pin_shape"),
            format=io.sniff_format(_head(source)) or "unknown",
            spacing_m=float(scan.spacing_m[1]),
            quality=getattr(prep, "quality", None),
            segmentation=dict(prep.segmentation),
            light=None if est is None else est.as_dict(),
        )

    def describe(self, prepared: Any) -> dict[str, np.ndarray]:
        descriptors = importlib.import_module("ballistics.descriptors")
        screen = importlib.import_module("ballistics.screen")

        out = dict(descriptors.describe(prepared))
        out[SCREEN_KEY] = screen.signature(prepared).ravel()
        return out

    @property
    def screen(self) -> ScreenFn:
        return self._screen

    @staticmethod
    def _screen(query: np.ndarray, signatures: np.ndarray) -> np.ndarray:
        screen = importlib.import_module("ballistics.screen")

        shape = screen.SIGNATURE_SHAPE
        q = np.asarray(query, np.float32).reshape(shape)
        c = np.asarray(signatures, np.float32).reshape(-1, *shape)
        return np.asarray(screen.screen(q, c)[0], np.float64)

    def load(self, surface: bytes) -> Any:
        lighting = importlib.import_module("ballistics.lighting")
        return lighting.load_prepared(surface)

    def score(self, a: Any, b: Any) -> Comparison:
        lighting = importlib.import_module("ballistics.lighting")

        return lighting.compare_prepared(a, b)

    def coarse_similarity(self, a: Any, b: Any) -> float:
        """:func:`ballistics.compare.coarse_similarity` (the comparison's coarse sweep)."""
        compare = importlib.import_module("ballistics.compare")

        return float(compare.coarse_similarity(a, b))

    def picture(
        self, a: Any, b: Any, comparison: Any, *, labels: tuple[str, str] = ("A", "B")
    ) -> bytes:
        """The examiner's comparison picture (PNG bytes; pseudo-heights for side-lit pairs),
        with ``labels`` (ids, case numbers) naming A and B and the reference set of
        ``a``'s kind of scan."""
        picture = importlib.import_module("ballistics.picture")
        lighting = importlib.import_module("ballistics.lighting")
        pa, pb = lighting.picture_surfaces(a, b, comparison)
        png = picture.comparison_png(
            pa,
            pb,
            comparison,
            label_a=labels[0],
            label_b=labels[1],
            kind=getattr(a, "kind", "topography"),
        )
        return bytes(png)

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


def _head(source: bytes | Path, n: int = 16) -> bytes:
    """The first ``n`` bytes of the content or of the file (enough to sniff the format)."""
    if isinstance(source, bytes):
        return source[:n]
    with open(source, "rb") as f:
        return f.read(n)
