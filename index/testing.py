"""A fake pipeline engine for tests and benchmarks of the index (no image processing).

File contents ``b"FAKE:<gun>:<shot>[:<pad>]"`` become descriptors near a per-gun centre (so
casings fired by the same virtual gun find each other); any other content gets a random
vector seeded by its hash; content starting with ``b"BAD"`` is rejected like a corrupt scan
(:class:`~ballistics.errors.ScanFormatError`, as the real engine). It implements
:class:`index.engine.Engine`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ballistics.errors import BallisticsError, ScanFormatError

from .engine import Engine, Processed, ScreenFn
from .search import SCREEN_KEY


@dataclass
class FakeComparison:
    score: float
    cmc: float
    regions: dict[str, float] = field(default_factory=dict)


class FakeEngine:
    def __init__(
        self,
        dim: int = 32,
        extractor_version: str = "fake-1",
        regions: tuple[str, ...] = ("breech_face",),
        noise: float = 0.35,
        with_screen: bool = False,
    ) -> None:
        self.dim = dim
        self.extractor_version = extractor_version
        self.regions = regions
        self.noise = noise
        self.calls = 0
        self.score_delay_s = 0.0
        # with_screen: describe() adds a screening signature (a copy of the first region's
        # vector) and screen() scores by inner product, like the real engine's stage 2.
        self.screen: ScreenFn | None = self._screen if with_screen else None

    def _screen(self, query: np.ndarray, signatures: np.ndarray) -> np.ndarray:
        return np.asarray(signatures, np.float64) @ np.asarray(query, np.float64)

    def _vec(self, data: bytes, region: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(region.encode() + data).digest()[:8], "little")
        rng = np.random.default_rng(seed)
        v = rng.standard_normal(self.dim)
        if data.startswith(b"FAKE:"):
            gun = data.split(b":")[1]
            g = int.from_bytes(hashlib.sha256(region.encode() + gun).digest()[:8], "little")
            v = np.random.default_rng(g).standard_normal(self.dim) + self.noise * v
        v = v.astype(np.float32)
        return v / np.linalg.norm(v)

    def process(
        self,
        source: bytes | Path,
        filename: str | None,
        spacing_m: float | None,
        *,
        length_unit: str = "m",
    ) -> Processed:
        if length_unit not in ("m", "um"):
            raise BallisticsError(
                f"unknown length unit {length_unit!r} (fake engine); use 'm' or 'um'"
            )
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        if data.startswith(b"BAD"):
            raise ScanFormatError(
                f"{filename or 'upload'}: not a readable scan (fake engine: content starts"
                " with b'BAD')"
            )
        descs = {r: self._vec(data, r) for r in self.regions}
        shape = "elongated" if data[-1:] in (b"e",) else "round"
        return Processed(
            descriptors=self._with_signature(descs),
            surface=self.surface_of(descs),
            prepared=descs,
            firing_pin_shape=shape,
            format="fake",
            spacing_m=6.25e-6,
            segmentation={"firing_pin_shape": shape, "fake": True},
        )

    def surface_of(self, descs: dict[str, np.ndarray]) -> bytes:
        # the "prepared surface" is the version tag plus descriptors (lets reextract change them)
        return b"".join(descs[r].astype(np.float32).tobytes() for r in self.regions)

    def describe(self, prepared: Any) -> dict[str, np.ndarray]:
        out = {}
        for r in self.regions:
            v = np.asarray(prepared[r], np.float32)
            if self.extractor_version != "fake-1":  # a "new extractor": a fixed sign flip
                v = -v
            out[r] = v
        return self._with_signature(out)

    def _with_signature(self, descs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.screen is None:
            return descs
        return {**descs, SCREEN_KEY: descs[self.regions[0]].copy()}

    def load(self, surface: bytes) -> dict[str, np.ndarray]:
        a = np.frombuffer(surface, dtype=np.float32).reshape(len(self.regions), self.dim)
        return {r: a[i].copy() for i, r in enumerate(self.regions)}

    def coarse_similarity(self, a: Any, b: Any) -> float:
        # the mean of the regions' inner products, as score() (no sleep: it stands in for a
        # cheap step)
        return float(np.mean([np.dot(a[r], b[r]) for r in self.regions]))

    def score(self, a: Any, b: Any) -> FakeComparison:
        self.calls += 1
        if self.score_delay_s:
            time.sleep(self.score_delay_s)  # stands in for a slow registration
        regs = {r: float(np.dot(a[r], b[r])) for r in self.regions}
        s = float(np.mean(list(regs.values())))
        return FakeComparison(score=s, cmc=round(max(s, 0.0) * 20), regions=regs)

    def picture(
        self, a: Any, b: Any, comparison: Any, *, labels: tuple[str, str] = ("A", "B")
    ) -> bytes:
        """A small grey PNG: the fake pipeline has no surfaces to draw."""
        import cv2

        _, buf = cv2.imencode(".png", np.full((8, 24), 128, np.uint8))
        return bytes(buf)

    def non_match_frequency(
        self, score: float, region: str, kind: str = "topography"
    ) -> float | None:
        return float(min(1.0, max(1e-6, 1.0 - score)))


class FakeEngineV2(FakeEngine):
    """The fake pipeline after a descriptor change (for upgrade paths driven by the CLI)."""

    def __init__(self) -> None:
        super().__init__(extractor_version="fake-2")


class FakeScreenEngine(FakeEngine):
    """The fake pipeline with a screening signature (stage 2), for the CLI's engine swap
    (``BALLISTICS_INDEX_ENGINE=index.testing:FakeScreenEngine``)."""

    def __init__(self) -> None:
        super().__init__(with_screen=True)

    def _vec(self, data: bytes, region: str) -> np.ndarray:
        # b"\x89PNG\r\n\x1a\n" + b"FAKE:..." passes the server's format sniff and still
        # names its virtual gun
        return super()._vec(data.removeprefix(PNG_MAGIC), region)


#: The first bytes of a PNG file (what the server's format sniff looks for).
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


if TYPE_CHECKING:  # mypy proves the fakes implement the interface the catalog is typed with
    _fake: Engine = FakeEngine()
    _fake_v2: Engine = FakeEngineV2()
