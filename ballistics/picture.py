"""The comparison picture: what an examiner checks before believing a score.

Three panels side by side at the same scale (the 6.25-um canvas of :mod:`ballistics.pipeline`),
all in **A's frame**:

1. **A** with the cells of the forward (A -> B) Congruent-Matching-Cells pass outlined;
2. **B moved into A's frame** by the comparison's pose (rotated about its primer centre, then
   translated), with the backward (B -> A) cells carried along as quadrilaterals;
3. **the overlay**: A in magenta, moved B in green (where they agree the picture turns grey
   or white; a misregistration shows as colour fringes), with A's cells outlined again.

The canvas is padded (:func:`align_pair`) so that B's breech face is never cut off by the
translation. Congruent cells are outlined in green, the other cells the comparison considered
in grey. Surfaces are shown in grey levels clipped at the 1st / 99th percentile of their valid
values; invalid points are dark blue-grey so missing data is visible. A text strip below names
the two casings (ids, case numbers), gives the score, the CMC count (forward / backward), the
pose and the non-match frequency against the reference set of the same kind of scan (2-D
images against the image reference, 3-D topographies against the topography one).

:func:`align_pair`, :func:`height_colours` and :func:`shaded` are also the building blocks of
the review page's pictures (``server.web``). Pure functions; PNGs are encoded with OpenCV.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .compare import CellResult, Comparison
from .errors import BallisticsError
from .pipeline import PreparedCasing
from .register import rotate

__all__ = [
    "AlignedPair",
    "align_pair",
    "comparison_png",
    "encode_png",
    "frequency_words",
    "height_colours",
    "shaded",
    "write_comparison_png",
]

#: BGR colours.
MISSING = (70, 58, 48)  # dark blue-grey: no valid data
CONGRUENT = (0, 215, 0)
OTHER_CELL = (150, 150, 150)
TEXT = (235, 235, 235)
STRIP = (30, 30, 30)
_GAP = 8  # pixels between panels
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_MARGIN_PX = 4  # kept around B's data after the move, besides the pad the move needs


def _canvas(
    data: np.ndarray, mask: np.ndarray, size: int, factor: int
) -> tuple[np.ndarray, np.ndarray]:
    """Place a centred canvas on a ``size`` x ``size`` one the way the comparison did
    (``compare._same_canvas`` pads the ``factor``-downsampled levels centrally), so that
    :attr:`CellResult.bbox_px` lands on the right pixels (shifted by the extra pad, if any)."""
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


@dataclass(frozen=True)
class AlignedPair:
    """Two compared surfaces on one padded canvas in A's frame.

    Attributes
    ----------
    a, a_mask : ndarray of shape (S, S)
        A's surface (float32, 0 where invalid) and validity.
    b, b_mask : ndarray of shape (S, S)
        B moved into A's frame by the comparison's pose (plus ``extra_rotation_deg``).
    range_a, range_b : tuple of float
        1st / 99th percentile of each surface's valid values (B's before the move).
    spacing_m : float
        Canvas spacing (metres per pixel).
    pad_px : int
        Pixels added on each side of the comparison's canvas (a multiple of the cell factor).
    rotation_deg : float
        The rotation applied to B (pose + extra), counter-clockwise as displayed.
    extra_rotation_deg : float
        The examiner's fine-tune on top of the comparison's pose.
    b_to_a : ndarray of shape (2, 3)
        Affine map of B's padded canvas (x = column, y = row) into A's frame.
    forward : list of (CellResult, ndarray of shape (4, 2))
        Forward (A -> B) cells with their corners (x, y) on this canvas.
    backward : list of (CellResult, ndarray of shape (4, 2))
        Backward (B -> A) cells carried into A's frame by ``b_to_a``.
    kind : str
        "topography" (heights in metres) or "image" (dimensionless intensity).
    """

    a: np.ndarray
    a_mask: np.ndarray
    b: np.ndarray
    b_mask: np.ndarray
    range_a: tuple[float, float]
    range_b: tuple[float, float]
    spacing_m: float
    pad_px: int
    rotation_deg: float
    extra_rotation_deg: float
    b_to_a: np.ndarray
    forward: list[tuple[CellResult, np.ndarray]]
    backward: list[tuple[CellResult, np.ndarray]]
    kind: str

    @property
    def size(self) -> int:
        return int(self.a.shape[0])


def _corners(cell: CellResult, pad: int) -> np.ndarray:
    r0, c0, r1, c1 = cell.bbox_px
    return np.array([[c0, r0], [c1 - 1, r0], [c1 - 1, r1 - 1], [c0, r1 - 1]], np.float64) + float(
        pad
    )


def align_pair(
    a: PreparedCasing,
    b: PreparedCasing,
    comparison: Comparison,
    *,
    extra_rotation_deg: float = 0.0,
) -> AlignedPair:
    """Put A and B (moved by the comparison's pose) on one canvas in A's frame, uncut.

    Parameters
    ----------
    a, b : PreparedCasing
        The two casings exactly as compared (``comparison = compare(a, b)``).
    comparison : Comparison
        Its pose maps ``b`` onto ``a``; its cells are carried along.
    extra_rotation_deg : float
        Added to the pose's rotation (about B's primer centre, before the translation): the
        review page's fine-tune. 0 shows the comparison as scored.
    """
    spacing = float(a.surface.spacing_m[0])
    f = max(1, int(comparison.params.cell_factor))
    sa, sb = a.surface, b.surface
    size0 = max(sa.shape[0] // f, sb.shape[0] // f) * f
    if size0 == 0:
        raise BallisticsError("cannot draw an empty surface")
    pose = comparison.pose
    shift = (pose.dy_m / spacing, pose.dx_m / spacing)
    # Pad so B's data, wherever the pose puts it, stays on the canvas: its farthest valid
    # point from the primer centre plus the translation, plus a small margin.
    _, mb0 = _canvas(sb.data, sb.mask, size0, f)
    rr, cc = np.nonzero(mb0)
    centre = (size0 - 1) / 2.0
    reach = float(np.hypot(rr - centre, cc - centre).max()) if rr.size else 0.0
    need = reach + math.hypot(*shift) + _MARGIN_PX - centre
    pad = max(0, math.ceil(need / f)) * f
    size = size0 + 2 * pad
    da, ma = _canvas(sa.data, sa.mask, size, f)
    db, mb = _canvas(sb.data, sb.mask, size, f)
    angle = float(pose.rotation_deg) + float(extra_rotation_deg)
    db2, mb2 = rotate(db, mb, angle, shift)
    mat = cv2.getRotationMatrix2D(((size - 1) / 2.0, (size - 1) / 2.0), angle, 1.0)
    mat[0, 2] += shift[1]
    mat[1, 2] += shift[0]
    fwd = sorted(
        (c for c in comparison.cells if c.direction == "a->b"), key=lambda c: (c.row, c.col)
    )
    bwd = sorted(
        (c for c in comparison.cells if c.direction != "a->b"), key=lambda c: (c.row, c.col)
    )
    return AlignedPair(
        a=da,
        a_mask=ma,
        b=db2,
        b_mask=mb2,
        range_a=_clip_range(da, ma),
        range_b=_clip_range(db, mb),
        spacing_m=spacing,
        pad_px=pad,
        rotation_deg=angle,
        extra_rotation_deg=float(extra_rotation_deg),
        b_to_a=mat,
        forward=[(c, _corners(c, pad)) for c in fwd],
        backward=[(c, _corners(c, pad) @ mat[:, :2].T + mat[:, 2]) for c in bwd],
        kind=str(getattr(a, "kind", "topography")),
    )


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


def overlay_image(pair: AlignedPair) -> np.ndarray:
    """A in magenta, moved B in green (BGR uint8, shape (S, S, 3)), without cells."""
    return _overlay(
        _grey(pair.a, pair.a_mask, pair.range_a),
        pair.a_mask,
        _grey(pair.b, pair.b_mask, pair.range_b),
        pair.b_mask,
    )


def height_colours(
    data: np.ndarray, mask: np.ndarray, rng: tuple[float, float], *, colour: bool = True
) -> np.ndarray:
    """Heights (or intensities) as a BGR uint8 picture: viridis over ``rng`` (or grey when
    ``colour`` is False), invalid points in :data:`MISSING`. Shape (H, W, 3)."""
    g = (_grey(data, mask, rng) * 255.0 + 0.5).astype(np.uint8)
    out = cv2.applyColorMap(g, cv2.COLORMAP_VIRIDIS) if colour else np.dstack([g, g, g])
    out[~mask] = MISSING
    return out


def colour_scale(n: int = 11) -> list[str]:
    """``n`` hex colours (#rrggbb) of the :func:`height_colours` map from low to high."""
    lut = cv2.applyColorMap(np.linspace(0, 255, n).astype(np.uint8)[:, None], cv2.COLORMAP_VIRIDIS)
    return [f"#{int(p[2]):02x}{int(p[1]):02x}{int(p[0]):02x}" for p in lut[:, 0]]


def shaded(
    data: np.ndarray,
    mask: np.ndarray,
    spacing_m: float,
    *,
    azimuth_deg: float = 315.0,
    elevation_deg: float = 45.0,
) -> np.ndarray:
    """A topography lit by a virtual light (Lambertian hill shading), BGR uint8 (H, W, 3).

    ``azimuth_deg``: the light's direction in the picture, counter-clockwise from the +x
    (column) axis as displayed; ``elevation_deg`` above the surface. Heights are scaled so the
    RMS slope is 0.5 (breech-face marks are far shallower than they are wide; unscaled they
    would shade flat). Invalid points are :data:`MISSING`.
    """
    if not mask.any():
        out = np.zeros((*data.shape, 3), np.uint8)
        out[:] = MISSING
        return out
    z = np.where(mask, data - float(np.median(data[mask])), 0.0).astype(np.float64)
    gy, gx = (np.asarray(g) for g in np.gradient(z, spacing_m))
    rms = float(np.sqrt(np.mean(gx[mask] ** 2 + gy[mask] ** 2))) or 1.0
    gx, gy = gx * (0.5 / rms), gy * (0.5 / rms)
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    # rows run down: a light at azimuth az (counter-clockwise as displayed) has row -sin(az)
    lx, ly, lz = math.cos(el) * math.cos(az), -math.cos(el) * math.sin(az), math.sin(el)
    shade = (-gx * lx - gy * ly + lz) / np.sqrt(gx * gx + gy * gy + 1.0)
    g = (np.clip(shade, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    out = np.dstack([g, g, g])
    out[~mask] = MISSING
    return out


def _cell_style(cell: CellResult) -> tuple[tuple[int, int, int], int]:
    return (CONGRUENT, 2) if cell.congruent else (OTHER_CELL, 1)


def _draw_quads(img: np.ndarray, cells: list[tuple[CellResult, np.ndarray]]) -> None:
    """Outline cells (corners on this canvas) with their numbers; congruent ones on top."""
    scale = max(0.35, img.shape[1] / 2400.0)
    for n, (c, quad) in sorted(enumerate(cells, 1), key=lambda t: t[1][0].congruent):
        colour, thick = _cell_style(c)
        cv2.polylines(img, [np.round(quad).astype(np.int32)], True, colour, thick)
        x, y = quad.min(axis=0)
        cv2.putText(img, str(n), (int(x) + 3, int(y) + 14), _FONT, scale, colour, 1, cv2.LINE_AA)


def _label(img: np.ndarray, text: str) -> None:
    scale = max(0.45, img.shape[1] / 1400.0)
    (w, h), base = cv2.getTextSize(text, _FONT, scale, 1)
    cv2.rectangle(img, (0, 0), (w + 12, h + base + 10), STRIP, -1)
    cv2.putText(img, text, (6, h + 5), _FONT, scale, TEXT, 1, cv2.LINE_AA)


def _ascii(text: str) -> str:
    """cv2.putText draws ASCII only."""
    return text.encode("ascii", "replace").decode("ascii")


def reference_name(kind: str) -> str:
    """The non-match reference set used for ``kind`` scans, in words (data set and size)."""
    from .calibration import load_reference

    try:
        ref = load_reference(kind)
    except BallisticsError:
        return f"no reference set for {kind} scans"
    src = ref.source
    what = "3-D topography" if kind == "topography" else "2-D image"
    n = ref.scores.get("combined", np.empty(0)).size
    version = src.get("extractor_version", "?")
    return f"{n} {what} non-match pairs of '{src.get('dataset', '?')}' ({version})"


def frequency_words(score: float | None, kind: str, region: str = "combined") -> str:
    """The non-match frequency of ``score`` in honest words, against the reference set of the
    same kind of scan, e.g. "none of 717 3-D reference non-matches scored this high".

    ``kind``: "topography" (3-D) or "image" (2-D): never calibrated against each other.
    Unknown (no score, no reference) says so; it is never printed as 0.
    """
    from .calibration import load_reference

    if score is None:
        return "not compared: no non-match frequency"
    try:
        ref = load_reference(kind)
    except BallisticsError:
        return f"non-match frequency unknown (no reference set for {kind} scans)"
    scores = ref.scores.get(region)
    if scores is None or scores.size == 0:  # never another region's scores: not comparable
        return f"non-match frequency unknown (no {kind} reference for the {region} region)"
    n = int(scores.size)
    k = n - int(np.searchsorted(scores, float(score), side="left"))
    what = "3-D" if kind == "topography" else "2-D"
    src = f"reference: {ref.source.get('dataset', '?')}, {what}"
    if k == 0:
        return f"none of {n} {what} reference non-matches scored this high ({src})"
    return f"{k} of {n} {what} reference non-matches scored this high ({src})"


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
    a: PreparedCasing,
    b: PreparedCasing,
    comparison: Comparison,
    *,
    title: str = "",
    label_a: str = "A",
    label_b: str = "B",
    kind: str | None = None,
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
    label_a, label_b : str
        What A and B are (casing id, case number, file), one line each in the text strip.
    kind : str or None
        The kind of the compared scans ("topography" or "image"), which picks the non-match
        reference set; None: ``a.kind`` (pass it when ``a`` is an image's pseudo-height).
    """
    pair = align_pair(a, b, comparison)
    size = pair.size
    ga = _grey(pair.a, pair.a_mask, pair.range_a)
    gb = _grey(pair.b, pair.b_mask, pair.range_b)
    panel_a = _panel(ga, pair.a_mask)
    _draw_quads(panel_a, pair.forward)
    panel_b = _panel(gb, pair.b_mask)
    _draw_quads(panel_b, pair.backward)
    over = _overlay(ga, pair.a_mask, gb, pair.b_mask)
    _draw_quads(over, pair.forward)
    pose = comparison.pose
    _label(panel_a, "A, forward cells")
    _label(panel_b, f"B in A's frame (rotated {pose.rotation_deg:.1f} deg), backward cells")
    _label(over, "overlay: A magenta, B green")

    gap = np.full((size, _GAP, 3), STRIP, np.uint8)
    top = np.hstack([panel_a, gap, panel_b, gap, over])
    lines = [title] if title else []
    lines += [f"A: {label_a}", f"B: {label_b}"]
    lines += [
        f"score {comparison.score:.3f}   CMC {comparison.cmc} (forward {comparison.cmc_forward}"
        f" / backward {comparison.cmc_backward} of {comparison.cells_considered} cells)"
        f"   correlation {comparison.correlation:.3f}",
        f"B rotated {pose.rotation_deg:.1f} deg about its primer centre, then moved dx"
        f" {pose.dx_m * 1e6:.1f} um, dy {pose.dy_m * 1e6:.1f} um   cells numbered; outline green"
        " = congruent, grey = not congruent",
        frequency_words(comparison.score, kind or pair.kind),
    ]
    return np.vstack([top, _text_strip(lines, top.shape[1], pair.spacing_m)])


def encode_png(img: np.ndarray) -> bytes:
    """PNG bytes of a BGR (or grey) uint8 picture."""
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - OpenCV failure
        raise BallisticsError("PNG encoding of the comparison picture failed")
    return bytes(buf.tobytes())


def comparison_png(
    a: PreparedCasing,
    b: PreparedCasing,
    comparison: Comparison,
    *,
    title: str = "",
    label_a: str = "A",
    label_b: str = "B",
    kind: str | None = None,
) -> bytes:
    """The comparison picture (see the module docstring), PNG-encoded.

    Returns
    -------
    bytes
        A PNG of width ~3x its height: A, B moved into A's frame, and the overlay, with a
        text strip.
    """
    return encode_png(
        comparison_image(a, b, comparison, title=title, label_a=label_a, label_b=label_b, kind=kind)
    )


def write_comparison_png(
    path: str | os.PathLike[str],
    a: PreparedCasing,
    b: PreparedCasing,
    comparison: Comparison,
    *,
    title: str = "",
    label_a: str = "A",
    label_b: str = "B",
    kind: str | None = None,
) -> Path:
    """Write :func:`comparison_png` to ``path``; returns the path."""
    out = Path(path)
    png = comparison_png(a, b, comparison, title=title, label_a=label_a, label_b=label_b, kind=kind)
    out.write_bytes(png)
    return out
