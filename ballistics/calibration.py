"""How often does a different-gun pair score this high?

A reference distribution of known non-match comparison scores, one per kind of scan
(``topography``: 3-D; ``image``: 2-D), measured by ``benchmarks/accuracy.py --write-reference``
on data with ground truth (each section records its data set, extractor version and command),
turns a raw score into an empirical exceedance frequency an examiner can read: "1 in N known
non-matches scored this high". 2-D and 3-D scores are never calibrated against each other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from .errors import BallisticsError

_REFERENCE_FILE = "nonmatch_reference.json"


@dataclass(frozen=True)
class Reference:
    """Sorted known-non-match scores per region, with where they came from."""

    scores: dict[str, np.ndarray]
    source: dict[str, Any]

    def frequency(self, score: float, region: str = "combined") -> float:
        """Estimated fraction of non-matches scoring >= ``score``: (k + 1) / (n + 1).

        The +1 keeps the estimate honest past the largest reference score: with n references
        it never claims rarer than 1 in (n + 1).
        """
        ref = self.scores.get(region)
        if ref is None:
            ref = self.scores.get("combined")
        if ref is None or ref.size == 0:
            raise BallisticsError(f"no non-match reference for region {region!r}")
        k = ref.size - int(np.searchsorted(ref, score, side="left"))
        return (k + 1) / (ref.size + 1)


def build_section(scores: dict[str, list[float]], source: dict[str, Any]) -> dict[str, Any]:
    """One kind's section of the JSON document :func:`load_reference` reads."""
    return {
        "source": source,
        "scores": {k: sorted(float(s) for s in v) for k, v in scores.items()},
    }


@lru_cache(maxsize=4)
def load_reference(kind: str = "topography") -> Reference:
    """The packaged reference distribution for ``kind`` ("topography" or "image"), cached."""
    try:
        text = resources.files("ballistics.data").joinpath(_REFERENCE_FILE).read_text()
    except FileNotFoundError as exc:  # pragma: no cover - packaging error
        raise BallisticsError(f"packaged {_REFERENCE_FILE} is missing") from exc
    doc = json.loads(text)
    if kind not in doc:
        raise BallisticsError(
            f"no non-match reference for {kind!r} scans (have: {sorted(doc)}); run "
            "benchmarks/accuracy.py --write-reference on data of that kind"
        )
    section = doc[kind]
    scores = {k: np.asarray(v, np.float64) for k, v in section["scores"].items()}
    return Reference(scores, section.get("source", {}))


def non_match_frequency(score: float, region: str = "combined", kind: str = "topography") -> float:
    """Fraction of known non-matches of the same ``kind`` scoring >= ``score``."""
    return load_reference(kind).frequency(float(score), region)


def describe_frequency(freq: float) -> str:
    """Human form, e.g. ``"1 in 718 non-matches score this high"``."""
    return f"1 in {round(1.0 / freq):,} non-matches score this high"
