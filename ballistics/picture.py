"""The comparison picture: what an examiner checks before believing a score.

Three panels side by side at the same scale (the 6.25-um canvas of :mod:`ballistics.pipeline`):

1. **A** with the cells of the forward (A -> B) Congruent-Matching-Cells pass outlined;
2. **B moved onto A** by the comparison's pose, with the backward (B -> A) cells carried along;
3. **the overlay**: A in magenta, aligned B in green (where they agree the picture turns grey
   or white; a misregistration shows as colour fringes), with A's cells outlined again.

Congruent cells are outlined in green, the other cells the comparison considered in grey.
Surfaces are shown in grey levels clipped at the 1st / 99th percentile of their valid values;
invalid points are dark blue-grey so missing data is visible. A text strip below gives the
score, the CMC count (forward / backward), the pose and the non-match frequency.

Pure functions; the PNG is encoded with OpenCV.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .compare import CellResult, Comparison
from .errors import BallisticsError
from .pipeline import PreparedCasing
from .register import rotate

__all__ = ["comparison_png", "write_comparison_png"]

#: BGR colours.
MISSING = (70, 58, 48)  # dark blue-grey: no valid data
CONGRUENT = (0, 215, 0)
OTHER_CELL = (150, 150, 150)
TEXT = (235, 235, 235)
STRIP = (30, 30, 30)
_GAP = 8  # pixels between panels
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _canvas(
    data: np.ndarray, mask: np.ndarray, size: int, factor: int
) -> tuple[np.ndarray, np.ndarray]:
    """Place a centred canvas on a ``size`` x ``size`` one the way the comparison did
    (``compare._same_canvas`` pads the ``factor``-downsampled levels centrally), so that
    :attr:`CellResult.bbox_px` lands on the right pixels."""
    n = (data.shape[0] // factor) * factor
    lo = ((size // factor - data.shape[0] // factor) // 2) * factor
    d = np.zeros((size, size), np.float32)
    m = np.zeros((size, size), bool)
    d[lo : lo + n, lo : lo + n] = np.where(mask[:n, :n], data[:n, :n], 0.0)
    m[lo : lo + n, lo : lo + n] = mask[:n, :n]
    return d, m


def _clip_range(data: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """1st and 99th percentile of the valid values (a safe range when there are none)."""
    if not mask.any():
        return 0.0, 1.0
    lo, hi = np.percentile(data[mask], [1.0, 99.0])
    if not hi > lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def _grey(data: np.ndarray, mask: np.ndarray, rng: tuple[float, float]) -> np.ndarray:
    """0..1 grey levels, float32 (meaningless where ``mask`` is False)."""
    lo, hi = rng
    return np.clip((data - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _panel(grey: np.ndarray, mask: np.ndarray) -> np.ndarray:
    g = (grey * 255.0 + 0.5).astype(np.uint8)
    out = np.dstack([g, g, g])
    out[~mask] = MISSING
    return out


def _overlay(ga: np.ndarray, ma: np.ndarray, gb: np.ndarray, mb: np.ndarray) -> np.ndarray:
    """A in magenta (blue + red), B in green; a channel is dark where its surface is invalid."""
    a8 = np.where(ma, ga * 255.0 + 0.5, 0.0).astype(np.uint8)
    b8 = np.where(mb, gb * 255.0 + 0.5, 0.0).astype(np.uint8)
    out = np.dstack([a8, b8, a8])
    out[~(ma | mb)] = MISSING
    return out


def _cell_style(cell: CellResult) -> tuple[tuple[int, int, int], int]:
    return (CONGRUENT, 2) if cell.congruent else (OTHER_CELL, 1)


def _draw_cells(img: np.ndarray, cells: list[CellResult]) -> None:
    """Outline cells (bbox on this canvas); congruent ones last, so they stay on top."""
    for c in sorted(cells, key=lambda c: c.congruent):
        colour, thick = _cell_style(c)
        r0, c0, r1, c1 = c.bbox_px
        cv2.rectangle(img, (int(c0), int(r0)), (int(c1) - 1, int(r1) - 1), colour, thick)


def _draw_moved_cells(img: np.ndarray, cells: list[CellResult], mat: np.ndarray) -> None:
    """Outline cells of B's canvas carried by the affine ``mat`` (B -> A) as quadrilaterals."""
    for c in sorted(cells, key=lambda c: c.congruent):
        colour, thick = _cell_style(c)
        r0, c0, r1, c1 = c.bbox_px
        corners = np.array([[c0, r0], [c1 - 1, r0], [c1 - 1, r1 - 1], [c0, r1 - 1]], np.float64)
        moved = corners @ mat[:, :2].T + mat[:, 2]
        cv2.polylines(img, [np.round(moved).astype(np.int32)], True, colour, thick)


def _label(img: np.ndarray, text: str) -> None:
    scale = max(0.45, img.shape[1] / 1400.0)
    (w, h), base = cv2.getTextSize(text, _FONT, scale, 1)
    cv2.rectangle(img, (0, 0), (w + 12, h + base + 10), STRIP, -1)
    cv2.putText(img, text, (6, h + 5), _FONT, scale, TEXT, 1, cv2.LINE_AA)


def _ascii(text: str) -> str:
    """cv2.putText draws ASCII only."""
    return text.encode("ascii", "replace").decode("ascii")


def _frequency_text(score: float) -> str:
    from .calibration import describe_frequency, non_match_frequency

    try:
        freq = non_match_frequency(score)
    except BallisticsError:
        return "non-match frequency: n/a (no reference distribution)"
    return f"non-match frequency {freq:.3g}: {describe_frequency(freq)}"


def _text_strip(lines: list[str], width: int, spacing_m: float) -> np.ndarray:
    scale = 0.6 if width < 1600 else 0.8
    (_, h), base = cv2.getTextSize("Ag", _FONT, scale, 1)
    step = h + base + 8
    strip = np.full((step * len(lines) + 12, width, 3), STRIP, np.uint8)
    for i, line in enumerate(lines):
        y = 8 + h + i * step
        cv2.putText(strip, _ascii(line), (10, y), _FONT, scale, TEXT, 1, cv2.LINE_AA)
    # Scale bar: 1 mm at the canvas spacing, bottom right.
    bar = round(1e-3 / spacing_m)
    if 0 < bar < width // 3:
        x1, y = width - 20, strip.shape[0] - 14
        cv2.line(strip, (x1 - bar, y), (x1, y), TEXT, 3)
        (tw, _), _ = cv2.getTextSize("1 mm", _FONT, scale, 1)
        cv2.putText(
            strip, "1 mm", (x1 - bar // 2 - tw // 2, y - 8), _FONT, scale, TEXT, 1, cv2.LINE_AA
        )
    return strip


def comparison_image(
    a: PreparedCasing, b: PreparedCasing, comparison: Comparison, *, title: str = ""
) -> np.ndarray:
    """The comparison picture as a BGR uint8 array of shape (H, 3 * S + 2 * gap, 3).

    Parameters
    ----------
    a, b : PreparedCasing
        The two casings exactly as compared (``comparison = compare(a, b)``).
    comparison : Comparison
        Its pose maps ``b`` onto ``a``; its cells are drawn.
    title : str
        First line of the text strip (e.g. the two file names).
    """
    spacing = float(a.surface.spacing_m[0])
    f = max(1, int(comparison.params.cell_factor))
    sa, sb = a.surface, b.surface
    size = max(sa.shape[0] // f, sb.shape[0] // f) * f
    if size == 0:
        raise BallisticsError("cannot draw an empty surface")
    da, ma = _canvas(sa.data, sa.mask, size, f)
    db, mb = _canvas(sb.data, sb.mask, size, f)
    pose = comparison.pose
    shift = (pose.dy_m / spacing, pose.dx_m / spacing)
    db2, mb2 = rotate(db, mb, pose.rotation_deg, shift)
    ga = _grey(da, ma, _clip_range(da, ma))
    gb = _grey(db2, mb2, _clip_range(db, mb))

    fwd = [c for c in comparison.cells if c.direction == "a->b"]
    bwd = [c for c in comparison.cells if c.direction != "a->b"]
    panel_a = _panel(ga, ma)
    _draw_cells(panel_a, fwd)
    panel_b = _panel(gb, mb2)
    mat = cv2.getRotationMatrix2D(
        ((size - 1) / 2.0, (size - 1) / 2.0), float(pose.rotation_deg), 1.0
    )
    mat[0, 2] += shift[1]
    mat[1, 2] += shift[0]
    _draw_moved_cells(panel_b, bwd, mat)
    over = _overlay(ga, ma, gb, mb2)
    _draw_cells(over, fwd)
    _label(panel_a, "A")
    _label(panel_b, f"B aligned to A (rotated {pose.rotation_deg:.1f} deg, shifted)")
    _label(over, "overlay: A magenta, B green")

    gap = np.full((size, _GAP, 3), STRIP, np.uint8)
    top = np.hstack([panel_a, gap, panel_b, gap, over])
    lines = [title] if title else []
    lines += [
        f"score {comparison.score:.3f}   CMC {comparison.cmc} (forward {comparison.cmc_forward}"
        f" / backward {comparison.cmc_backward} of {comparison.cells_considered} cells)"
        f"   correlation {comparison.correlation:.3f}",
        f"rotation {pose.rotation_deg:.1f} deg   translation dx {pose.dx_m * 1e6:.1f} um,"
        f" dy {pose.dy_m * 1e6:.1f} um   cells: green congruent, grey not",
        _frequency_text(comparison.score),
    ]
    return np.vstack([top, _text_strip(lines, top.shape[1], spacing)])


def comparison_png(
    a: PreparedCasing, b: PreparedCasing, comparison: Comparison, *, title: str = ""
) -> bytes:
    """The comparison picture (see the module docstring), PNG-encoded.

    Returns
    -------
    bytes
        A PNG of width ~3x its height: A, B aligned onto A, and the overlay, with a text strip.
    """
    ok, buf = cv2.imencode(".png", comparison_image(a, b, comparison, title=title))
    if not ok:  # pragma: no cover - OpenCV failure
        raise BallisticsError("PNG encoding of the comparison picture failed")
    return buf.tobytes()


def write_comparison_png(
    path: str | os.PathLike[str],
    a: PreparedCasing,
    b: PreparedCasing,
    comparison: Comparison,
    *,
    title: str = "",
) -> Path:
    """Write :func:`comparison_png` to ``path``; returns the path."""
    out = Path(path)
    out.write_bytes(comparison_png(a, b, comparison, title=title))
    return out
