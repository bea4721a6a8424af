"""How often does a different-gun pair score this high?

A reference distribution of known non-match comparison scores (measured by
``benchmarks/accuracy.py --write-reference`` on data with ground truth; the file records the
data set, the extractor version and the command) turns a raw score into an empirical
exceedance frequency an examiner can read: "1 in N known non-matches scored this high".
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


def build_reference(scores: dict[str, list[float]], source: dict[str, Any]) -> dict[str, Any]:
    """The JSON document :func:`load_reference` reads."""
    return {
        "source": source,
        "scores": {k: sorted(float(s) for s in v) for k, v in scores.items()},
    }


@lru_cache(maxsize=1)
def load_reference() -> Reference:
    """The packaged reference distribution (cached)."""
    try:
        text = resources.files("ballistics.data").joinpath(_REFERENCE_FILE).read_text()
    except FileNotFoundError as exc:  # pragma: no cover - packaging error
        raise BallisticsError(f"packaged {_REFERENCE_FILE} is missing") from exc
    doc = json.loads(text)
    scores = {k: np.asarray(v, np.float64) for k, v in doc["scores"].items()}
    return Reference(scores, doc.get("source", {}))


def non_match_frequency(score: float, region: str = "combined") -> float:
    """Fraction of known non-matches in the packaged reference scoring >= ``score``."""
    return load_reference().frequency(float(score), region)


def describe_frequency(freq: float) -> str:
    """Human form, e.g. ``"1 in 718 non-matches score this high"``."""
    return f"1 in {round(1.0 / freq):,} non-matches score this high"
