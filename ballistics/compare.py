"""Registration-based comparison of two prepared casings (breech face, and aperture-shear
striations where both have them).

Three stages, coarse to fine, the way an examiner first orients the casings and then checks the
detail:

1. **Coarse**: every rotation over 360 deg at ``coarse_step_deg`` on a heavily downsampled
   surface, masked NCC over all translations for each rotation in one batched FFT.
2. **Refine**: the best few rotations are refined at finer rotation steps on a finer level.
3. **Congruent Matching Cells** (Song 2013; cmcR): the reference is cut into a grid of cells;
   each cell is registered in the other surface near the refined pose over a small rotation sweep;
   a cell is *congruent* when its correlation is at least ``ccf_threshold`` and its rotation and
   translation agree with the consensus within ``angle_tol_deg`` and ``translation_tol_um``.
   Run in both directions.

The score combines the congruent-cell counts with the correlation at the registered pose, so it
ranks continuously rather than in integer steps.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from .errors import BallisticsError
from .pipeline import PreparedCasing
from .register import Reference, ncc_maps, reference, rotate
from .screen import rotation_candidates, signature


@dataclass(frozen=True)
class CompareParams:
    """Comparison parameters. Lengths in micrometres; angles in degrees.

    Attributes
    ----------
    coarse_factor : int
        Downsampling of the 6.25-um canvas for the full-rotation sweep (8 -> 50 um).
    coarse_step_deg : float
        Rotation step of the full sweep.
    coarse_peaks : int
        Rotations kept from the sweep for refinement.
    rotation_hints : int
        When > 0, the sweep covers only the coarse angles within one step of the best
        ``rotation_hints`` rotations of the spectrum screen (:mod:`ballistics.screen`; each
        taken as both theta and theta + 180 deg) instead of the full circle. 0: full circle.
    refine_factor : int
        Downsampling for the refinement (4 -> 25 um).
    refine_step_deg : float
        Final rotation step of the refinement: each coarse peak is searched +-coarse_step_deg
        in steps of twice this, then the best angle's neighbours at this step.
    max_offset_um : float
        Largest translation between the two primer centres that is searched.
    cell_factor : int
        Downsampling for the cells (2 -> 12.5 um).
    grid : int
        Cells per side (cmcR: 8).
    min_cell_valid : float
        Cells with less valid data are dropped (cmcR: 0.15).
    cell_angles_deg : tuple of float
        Per-cell rotation sweep around the refined pose.
    cell_search_um : float
        Per-cell translation search radius around the refined pose.
    ccf_threshold : float
        Minimum per-cell correlation for a congruent cell (cmcR: 0.5).
    angle_tol_deg : float
        Congruence tolerance on rotation (cmcR: 6).
    translation_tol_um : float
        Congruence tolerance on translation (cmcR: 20 px at 6.25 um = 125 um).
    """

    coarse_factor: int = 8
    coarse_step_deg: float = 4.0
    coarse_peaks: int = 3
    rotation_hints: int = 3
    refine_factor: int = 4
    refine_step_deg: float = 1.0
    max_offset_um: float = 500.0
    cell_factor: int = 2
    grid: int = 8
    min_cell_valid: float = 0.15
    cell_angles_deg: tuple[float, ...] = (-3.0, 0.0, 3.0)
    cell_search_um: float = 250.0
    ccf_threshold: float = 0.5
    angle_tol_deg: float = 6.0
    translation_tol_um: float = 125.0

    def __post_init__(self) -> None:
        for name in ("coarse_factor", "refine_factor", "cell_factor", "grid", "coarse_peaks"):
            if int(getattr(self, name)) < 1:
                raise BallisticsError(f"CompareParams.{name} must be >= 1")
        if int(self.rotation_hints) < 0:
            raise BallisticsError("CompareParams.rotation_hints must be >= 0 (0: full circle)")
        for name in ("coarse_step_deg", "refine_step_deg", "max_offset_um", "cell_search_um"):
            if not float(getattr(self, name)) > 0:
                raise BallisticsError(f"CompareParams.{name} must be > 0")
        if not 0 <= self.min_cell_valid <= 1:
            raise BallisticsError("CompareParams.min_cell_valid must be in [0, 1]")


@dataclass(frozen=True)
class Pose:
    """Rigid pose mapping the second surface onto the first: rotate by ``rotation_deg`` about
    its primer centre (counter-clockwise as displayed), then translate by (dy_m, dx_m)."""

    rotation_deg: float
    dy_m: float
    dx_m: float

    def inverse(self) -> Pose:
        a = math.radians(self.rotation_deg)
        c, s = math.cos(a), math.sin(a)
        # x_b = R(-a)(x_a - t); in (x, y) with rows down, cv2's R(a) = [[c, s], [-s, c]].
        tx, ty = self.dx_m, self.dy_m
        return Pose(-self.rotation_deg, -(s * tx + c * ty), -(c * tx - s * ty))


@dataclass(frozen=True)
class CellResult:
    """One cell of the reference registered in the other surface.

    ``row``/``col`` index the grid; ``bbox_px`` = (r0, c0, r1, c1) on the 6.25-um canvas of the
    reference; pose offsets are relative to the comparison's registered pose."""

    direction: str
    row: int
    col: int
    bbox_px: tuple[int, int, int, int]
    valid_fraction: float
    ccf: float
    rotation_deg: float
    dy_m: float
    dx_m: float
    congruent: bool


@dataclass(frozen=True)
class Comparison:
    """Result of :func:`compare`. ``score``: higher is more similar."""

    score: float
    cmc: int
    cmc_forward: int
    cmc_backward: int
    cells_considered: int
    correlation: float
    pose: Pose
    regions: dict[str, float]
    cells: tuple[CellResult, ...] = field(repr=False)
    striation_correlation: float | None = None
    params: CompareParams = field(default_factory=CompareParams, repr=False)
    flags: tuple[str, ...] = ()

    @property
    def rotation_deg(self) -> float:
        return self.pose.rotation_deg

    @property
    def dx_m(self) -> float:
        return self.pose.dx_m

    @property
    def dy_m(self) -> float:
        return self.pose.dy_m

    def as_dict(self, *, cells: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "score": round(self.score, 6),
            "cmc": self.cmc,
            "cmc_forward": self.cmc_forward,
            "cmc_backward": self.cmc_backward,
            "cells_considered": self.cells_considered,
            "correlation": round(self.correlation, 6),
            "rotation_deg": round(self.pose.rotation_deg, 3),
            "dx_m": self.pose.dx_m,
            "dy_m": self.pose.dy_m,
            "regions": {k: round(v, 6) for k, v in self.regions.items()},
            "striation_correlation": self.striation_correlation,
            "flags": list(self.flags),
        }
        if cells:
            out["cells"] = [asdict(c) for c in self.cells]
        return out


def _same_canvas(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Pad both (centred) to a common even size so their centres coincide."""
    size = max(a[0].shape[0], b[0].shape[0])

    def pad(x: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        p = size - x[0].shape[0]
        if p == 0:
            return x
        lo = p // 2
        w = ((lo, p - lo), (lo, p - lo))
        return np.pad(x[0], w), np.pad(x[1], w)

    return pad(a), pad(b)


def _best(maps: np.ndarray) -> tuple[int, int, int, float]:
    k, i, j = np.unravel_index(int(np.argmax(maps)), maps.shape)
    return int(k), int(i), int(j), float(maps[k, i, j])


def _sweep(
    ref: Reference,
    moving: tuple[np.ndarray, np.ndarray],
    angles: np.ndarray,
    max_shift: int,
) -> np.ndarray:
    """NCC maps for ``moving`` rotated by each angle: shape (len(angles), 2s+1, 2s+1)."""
    d = np.empty((len(angles), *moving[0].shape), np.float32)
    m = np.empty((len(angles), *moving[0].shape), bool)
    for k, ang in enumerate(angles):
        d[k], m[k] = rotate(moving[0], moving[1], float(ang))
    return ncc_maps(ref, d, m, max_shift)


def _coarse_angles(a: PreparedCasing, b: PreparedCasing, params: CompareParams) -> np.ndarray:
    """The rotations of the coarse sweep: the full circle, or the grid angles near the
    screen's best rotations (both theta and theta + 180: the spectrum cannot tell them apart)."""
    step = params.coarse_step_deg
    full = np.arange(0.0, 360.0, step)
    if params.rotation_hints <= 0:
        return full
    hints = rotation_candidates(signature(a), signature(b), params.rotation_hints)
    keep: set[int] = set()
    for h in hints:
        for base in (h, h + 180.0):
            k = round(base / step)
            keep.update((k + d) % len(full) for d in (-1, 0, 1))
    return full[sorted(keep)] if keep else full


def register(a: PreparedCasing, b: PreparedCasing, params: CompareParams) -> tuple[Pose, float]:
    """Coarse-to-fine rigid registration of ``b`` onto ``a``; returns the pose and its NCC
    at the refinement level."""
    spacing = a.surface.spacing_m[0]
    # Coarse: full circle.
    fa, fb = _same_canvas(a.level(params.coarse_factor), b.level(params.coarse_factor))
    s_c = max(1, round(params.max_offset_um * 1e-6 / (spacing * params.coarse_factor)))
    angles = _coarse_angles(a, b, params)
    maps = _sweep(reference(*fa, s_c), fb, angles, s_c)
    peak = maps.reshape(len(angles), -1).max(axis=1)
    order = np.argsort(-peak)
    chosen: list[float] = []
    sep = 1.5 * params.coarse_step_deg
    for k in order:
        ang = float(angles[k])
        if all(abs((ang - c + 180) % 360 - 180) >= sep for c in chosen):
            chosen.append(ang)
        if len(chosen) == params.coarse_peaks:
            break
    # Refine: finer rotation steps around each kept peak, on a finer level.
    ra, rb = _same_canvas(a.level(params.refine_factor), b.level(params.refine_factor))
    s_r = max(1, round(params.max_offset_um * 1e-6 / (spacing * params.refine_factor)))
    ref = reference(*ra, s_r)
    # The coarse peak can sit anywhere on a plateau one coarse step wide (arc patterns), so
    # search +-coarse_step_deg around each peak in double steps, then the neighbours of the
    # best angle in single steps.
    span = params.coarse_step_deg
    steps = np.arange(-span, span + 1e-9, 2.0 * params.refine_step_deg)
    fine = np.concatenate([c + steps for c in chosen])
    maps = _sweep(ref, rb, fine, s_r)
    k, i, j, value = _best(maps)
    near = float(fine[k]) + np.array([-params.refine_step_deg, params.refine_step_deg])
    maps2 = _sweep(ref, rb, near, s_r)
    k2, i2, j2, value2 = _best(maps2)
    if value2 > value:
        fine, k, i, j, value = near, k2, i2, j2, value2
    step_m = spacing * params.refine_factor
    return Pose(float(fine[k]) % 360.0, (i - s_r) * step_m, (j - s_r) * step_m), value


def _refine_translation(
    la: tuple[np.ndarray, np.ndarray],
    lb: tuple[np.ndarray, np.ndarray],
    pose: Pose,
    spacing_m: float,
    window: int = 3,
) -> tuple[Pose, float]:
    """Re-estimate the translation on the finer cell level within ``window`` pixels of
    ``pose``, with a parabolic sub-pixel fit of the NCC peak; returns the pose and its NCC."""
    cy, cx = round(pose.dy_m / spacing_m), round(pose.dx_m / spacing_m)
    reach = max(abs(cy), abs(cx)) + window + 1
    d, m = rotate(lb[0], lb[1], pose.rotation_deg)
    ncc = ncc_maps(reference(*la, reach), d[None], m[None], reach)[0]
    y0, x0 = reach + cy - window, reach + cx - window
    sub = ncc[y0 : y0 + 2 * window + 1, x0 : x0 + 2 * window + 1]
    i, j = np.unravel_index(int(np.argmax(sub)), sub.shape)

    def vertex(lo: float, mid: float, hi: float) -> float:
        den = lo - 2.0 * mid + hi
        return 0.0 if den >= 0 else float(np.clip(0.5 * (lo - hi) / den, -0.5, 0.5))

    fy = vertex(sub[i - 1, j], sub[i, j], sub[i + 1, j]) if 0 < i < sub.shape[0] - 1 else 0.0
    fx = vertex(sub[i, j - 1], sub[i, j], sub[i, j + 1]) if 0 < j < sub.shape[1] - 1 else 0.0
    dy = (cy - window + i + fy) * spacing_m
    dx = (cx - window + j + fx) * spacing_m
    return Pose(pose.rotation_deg, dy, dx), float(sub[i, j])


def _cells(
    a: tuple[np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray],
    pose: Pose,
    params: CompareParams,
    spacing_m: float,
    direction: str,
) -> list[CellResult]:
    """Register each cell of ``a`` in ``b`` near ``pose``; congruence is decided later."""
    da, ma = a
    size = da.shape[0]
    rows, cols = np.nonzero(ma)
    if rows.size == 0:
        return []
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    edges_r = np.linspace(r0, r1, params.grid + 1).round().astype(int)
    edges_c = np.linspace(c0, c1, params.grid + 1).round().astype(int)
    search = max(1, round(params.cell_search_um * 1e-6 / spacing_m))
    shift_px = (pose.dy_m / spacing_m, pose.dx_m / spacing_m)
    moved = [rotate(b[0], b[1], pose.rotation_deg + d, shift_px) for d in params.cell_angles_deg]
    out: list[CellResult] = []
    f = params.cell_factor
    for gi in range(params.grid):
        for gj in range(params.grid):
            y0, y1, x0, x1 = edges_r[gi], edges_r[gi + 1], edges_c[gj], edges_c[gj + 1]
            cm = ma[y0:y1, x0:x1]
            frac = float(cm.mean()) if cm.size else 0.0
            if frac < params.min_cell_valid or cm.sum() < 16:
                continue
            tmpl = da[y0:y1, x0:x1]
            if float(np.abs(tmpl).sum()) == 0.0:
                continue
            sy0, sy1 = max(0, y0 - search), min(size, y1 + search)
            sx0, sx1 = max(0, x0 - search), min(size, x1 + search)
            best = (-2.0, 0.0, 0, 0)
            for dang, (db, mb) in zip(params.cell_angles_deg, moved, strict=True):
                region = db[sy0:sy1, sx0:sx1]
                if not mb[sy0:sy1, sx0:sx1].any():
                    continue
                res = cv2.matchTemplate(region, tmpl.astype(np.float32), cv2.TM_CCORR_NORMED)
                _, val, _, loc = cv2.minMaxLoc(res)
                if val > best[0]:
                    # loc = (x, y) of the template's top-left in the region.
                    best = (float(val), dang, sy0 + loc[1] - y0, sx0 + loc[0] - x0)
            if best[0] <= -2.0:
                continue
            out.append(
                CellResult(
                    direction,
                    gi,
                    gj,
                    (int(y0 * f), int(x0 * f), int(y1 * f), int(x1 * f)),
                    frac,
                    best[0],
                    float(best[1]),
                    float(best[2] * spacing_m),
                    float(best[3] * spacing_m),
                    False,
                )
            )
    return out


def _congruence(cells: list[CellResult], params: CompareParams) -> list[CellResult]:
    """Mark cells congruent with the consensus (median pose of the well-correlated cells)."""
    good = [c for c in cells if c.ccf >= params.ccf_threshold]
    if not good:
        return cells
    th = float(np.median([c.rotation_deg for c in good]))
    dy = float(np.median([c.dy_m for c in good]))
    dx = float(np.median([c.dx_m for c in good]))
    tol = params.translation_tol_um * 1e-6
    out = []
    for c in cells:
        ok = (
            c.ccf >= params.ccf_threshold
            and abs(c.rotation_deg - th) <= params.angle_tol_deg
            and math.hypot(c.dy_m - dy, c.dx_m - dx) <= tol
        )
        out.append(CellResult(**{**asdict(c), "congruent": ok}))
    return out


def striation_correlation(p: np.ndarray | None, q: np.ndarray | None) -> float | None:
    """Best normalised correlation of two striation profiles over shifts of up to a third of
    their length (None when either profile is missing)."""
    if p is None or q is None or len(p) < 8 or len(q) < 8:
        return None
    p = (p - p.mean()) / (p.std() or 1.0)
    q = (q - q.mean()) / (q.std() or 1.0)
    n = min(len(p), len(q))
    best = -1.0
    for s in range(-n // 3, n // 3 + 1):
        x = p[max(0, s) : max(0, s) + n]
        y = q[max(0, -s) : max(0, -s) + n]
        m = min(len(x), len(y))
        if m >= n // 2:
            best = max(best, float(np.corrcoef(x[:m], y[:m])[0, 1]))
    return best


def compare(
    a: PreparedCasing, b: PreparedCasing, *, params: CompareParams | None = None
) -> Comparison:
    """Compare two prepared casings with unknown relative rotation.

    Parameters
    ----------
    a, b : PreparedCasing
        Outputs of :func:`ballistics.pipeline.prepare` (same canvas spacing).
    params : CompareParams, optional

    Returns
    -------
    Comparison
        ``score`` = mean congruent-cell count of both directions, normalised by the cells
        considered, plus the registered correlation; ``pose`` maps ``b`` onto ``a``.
    """
    params = params or CompareParams()
    if a.kind != b.kind:
        raise BallisticsError(
            f"cannot compare a {a.kind} scan with a {b.kind} scan: 2-D images and 3-D "
            "topographies show different quantities; compare like with like"
        )
    if not math.isclose(a.surface.spacing_m[0], b.surface.spacing_m[0], rel_tol=1e-6):
        raise BallisticsError(
            "the two casings were prepared at different spacings "
            f"({a.surface.spacing_m[0]} m vs {b.surface.spacing_m[0]} m); prepare both alike"
        )
    pose, _ = register(a, b, params)
    spacing = a.surface.spacing_m[0] * params.cell_factor
    la, lb = _same_canvas(a.level(params.cell_factor), b.level(params.cell_factor))
    pose, corr = _refine_translation(la, lb, pose, spacing)
    fwd = _congruence(_cells(la, lb, pose, params, spacing, "a->b"), params)
    bwd = _congruence(_cells(lb, la, pose.inverse(), params, spacing, "b->a"), params)
    cf = sum(c.congruent for c in fwd)
    cb = sum(c.congruent for c in bwd)
    considered = max(1, (len(fwd) + len(bwd)) // 2)
    cmc = min(cf, cb)
    bf = (cf + cb) / 2.0 / considered
    score = bf + max(0.0, corr)
    regions = {"breech_face": score}
    stri = striation_correlation(a.aperture_profile, b.aperture_profile)
    if stri is not None:
        regions["aperture_shear"] = stri
    return Comparison(
        score=score,
        cmc=cmc,
        cmc_forward=cf,
        cmc_backward=cb,
        cells_considered=considered,
        correlation=corr,
        pose=pose,
        regions=regions,
        cells=tuple(fwd + bwd),
        striation_correlation=stri,
        params=params,
    )
