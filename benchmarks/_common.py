"""Shared helpers for the benchmarks: machine description, metrics, pair scoring in a pool."""

from __future__ import annotations

import csv
import math
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"


def fadul_files() -> tuple[list[Path], list[str]]:
    """The 40 Fadul scans in ../shared/data/real and their slide (firearm) ids."""
    folder = REAL / "csafe-cartridgeCaseScans"
    rows = list(csv.DictReader(open(folder / "MANIFEST.tsv"), delimiter="\t"))
    return [folder / r["file"] for r in rows], [r["firearm_id"] for r in rows]


def synth_files(
    guns: int, shots: int, seed: int, png: bool
) -> tuple[str, list[Path], list[str], list[str]]:
    """A seeded synthetic corpus (written once under benchmarks/_data): dataset name, files
    (X3P, or the 2-D renders with ``png``), firearm ids and consecutive-manufacture groups."""
    from ballistics.synth import write_corpus

    out = ROOT / "benchmarks" / "_data" / f"synth-g{guns}-s{shots}-seed{seed}"
    manifest = out / "manifest.csv"
    key = "png" if png else "x3p"
    # The manifest has one row per written file (X3P, and PNG when rendered): keep one kind.
    # A corpus written without renders is rewritten (deterministically) when png asks for them.
    rows = list(csv.DictReader(open(manifest))) if manifest.exists() else []
    if not any(r["file"].endswith("." + key) for r in rows):
        write_corpus(out, guns=guns, shots=shots, seed=seed, png=png)
        rows = list(csv.DictReader(open(manifest)))
    rows = [r for r in rows if r["file"].endswith("." + key)]
    return (
        f"synth-{key}",
        [out / r["file"] for r in rows],
        [r["firearm_id"] for r in rows],
        [r.get("group", "") for r in rows],
    )


def machine() -> dict[str, Any]:
    model = platform.processor() or ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version()}


def auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """Probability that a random known match outscores a random known non-match (ties 1/2)."""
    p, n = np.asarray(pos, float), np.asarray(neg, float)
    if p.size == 0 or n.size == 0:
        return math.nan
    gt = (p[:, None] > n[None, :]).mean()
    eq = (p[:, None] == n[None, :]).mean()
    return float(gt + 0.5 * eq)


def quantiles(x: Sequence[float]) -> dict[str, float]:
    a = np.asarray(x, float)
    if a.size == 0:
        return {}
    qs = np.percentile(a, [0, 5, 25, 50, 75, 95, 100])
    return {
        k: round(float(v), 4)
        for k, v in zip(("min", "p5", "p25", "p50", "p75", "p95", "max"), qs, strict=True)
    }


def rank_metrics(scores: np.ndarray, labels: Sequence[str], top: int = 5) -> dict[str, Any]:
    """For each item as a query against all others: rank of the best same-label item."""
    n = len(labels)
    s = scores.copy()
    np.fill_diagonal(s, -np.inf)
    ranks = []
    for i in range(n):
        order = np.argsort(-s[i], kind="stable")
        same = [r for r, j in enumerate(order) if j != i and labels[j] == labels[i]]
        if same:
            ranks.append(same[0] + 1)
    r = np.asarray(ranks)
    return {
        "queries": int(r.size),
        "top1": int((r == 1).sum()),
        f"top{top}": int((r <= top).sum()),
        "top1_rate": round(float((r == 1).mean()), 4),
        f"top{top}_rate": round(float((r <= top).mean()), 4),
        "worst_rank": int(r.max()) if r.size else 0,
    }


def descriptor_recall(
    vectors: np.ndarray, labels: Sequence[str], fraction: float = 0.05
) -> dict[str, Any]:
    """Share of queries with a same-label item inside the nearest ``fraction`` of the database."""
    s = vectors @ vectors.T
    np.fill_diagonal(s, -np.inf)
    n = len(labels)
    k = max(1, math.ceil(fraction * (n - 1)))
    hit = 0
    queries = 0
    for i in range(n):
        if not any(labels[j] == labels[i] for j in range(n) if j != i):
            continue
        queries += 1
        near = np.argsort(-s[i])[:k]
        hit += any(labels[j] == labels[i] for j in near)
    return {
        "fraction": fraction,
        "k": k,
        "queries": queries,
        "recall": round(hit / max(1, queries), 4),
    }


_PREPARED: list[Any] = []


def _init(prepared: list[Any]) -> None:
    # Each worker compares on one core: the benchmark measures single-core cost per pair.
    os.environ["OMP_NUM_THREADS"] = "1"
    _PREPARED[:] = prepared


def _score(pair: tuple[int, int]) -> tuple[int, int, dict[str, Any], float]:
    from ballistics.compare import compare

    i, j = pair
    t = time.perf_counter()
    c = compare(_PREPARED[i], _PREPARED[j])
    return i, j, c.as_dict(), time.perf_counter() - t


def score_pairs(
    prepared: list[Any], pairs: list[tuple[int, int]], workers: int
) -> list[tuple[int, int, dict[str, Any], float]]:
    if workers <= 1:
        _init(prepared)
        return [_score(p) for p in pairs]
    with ProcessPoolExecutor(workers, initializer=_init, initargs=(prepared,)) as ex:
        return list(ex.map(_score, pairs, chunksize=8))
