"""Registration-based comparison of two prepared casings (breech face, and aperture-shear
striations where both have them).

Coarse to fine, the way an examiner first orients the casings and then checks the detail, but
without committing to one pose before the detail has been seen:

1. **Coarse**: every rotation over 360 deg at ``coarse_step_deg`` on a heavily downsampled
   surface, masked NCC over all translations up to ``max_offset_um`` for each rotation in one
   batched FFT (opt-in, ``presweep_keep``: every rotation is first scored on a level twice
   coarser, and only the best, with their neighbours, are scored on the coarse level). The
   ``coarse_peaks`` best distinct peaks in (rotation, translation) become pose *hypotheses*;
   the best peak near each of the spectrum screen's ``rotation_hints`` rotations is kept as
   well (the hints add hypotheses, they never remove any).
2. **Cell evidence**: every hypothesis is scored by Congruent Matching Cells on the
   refinement level, in both directions; hypotheses are ranked by congruent cells, then NCC.
3. **Refine**: the ``refine_peaks`` best hypotheses are refined at finer rotation steps and
   within a small translation window on a finer level.
4. **Congruent Matching Cells** (Song 2013; cmcR) on the finest level: the reference is cut
   into a grid of cells; each cell is registered in the other surface near the refined pose
   over a small rotation sweep; a cell is *congruent* when its correlation is at least
   ``ccf_threshold`` and its rotation and translation agree with the consensus within
   ``angle_tol_deg`` and ``translation_tol_um``. Run in both directions, for the refined
   hypotheses in rank order until one has ``accept_cmc`` congruent cells both ways; the best
   scoring one is the result.

Cells are correlated with per-cell zero mean (``cell_normalise``) and the surfaces can be
divided by their local RMS (``contrast_sigma_um``) so that faint but consistent texture counts.
A comparison carries :data:`FLAGS` when its pose is not trustworthy (the two directions prefer
different poses, or no pose stands out), so a low score is not read as "different gun" when the
registration failed.

The score combines the congruent-cell counts with the correlation at the registered pose, so it
ranks continuously rather than in integer steps.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from .errors import BallisticsError
from .pipeline import PreparedCasing
from .register import downsample, local_contrast, masked_blur, ncc_at, ncc_maps, reference, rotate
from .screen import rotation_candidates, signature

#: What each entry of :attr:`Comparison.flags` means.
FLAGS: dict[str, str] = {
    "directions_disagree": (
        "the A->B and B->A cell passes prefer different poses: the registration is not "
        "reliable, so the score is not evidence that the casings differ"
    ),
    "weak_registration": (
        "some cells agree on a pose, but fewer than accept_cmc both ways: the registration "
        "may have failed on a matching pair, so the low score is not evidence that the guns "
        "differ"
    ),
}
#: A direction needs this many congruent cells before its preferred pose counts as a vote.
_MIN_VOTE_CELLS = 3
#: weak_registration: fewer than accept_cmc congruent cells both ways, yet a pose scored on
#: the cell level had at least this many both ways. Chosen on synthetic seeds 5 and 9 and the
#: odd-numbered Fadul slides as the rule catching most lost matches while firing on at most
#: 5 % of non-matches (0/142; the earlier rule, "runner-up NCC >= 0.9 x the chosen", fired on
#: 82/142); judged on seed 2 and the even-numbered slides: 0/99 non-matches. Re-checked with
#: the 1-mm search and coarse blur: 3/142 and 0/99 (benchmarks/weak_registration.py,
#: RESULTS-weak-registration.md).
_PARTIAL_CELLS = 4


@dataclass(frozen=True)
class CompareParams:
    """Comparison parameters. Lengths in micrometres; angles in degrees.

    Attributes
    ----------
    coarse_factor : int
        Downsampling of the 6.25-um canvas for the full-rotation sweep (8 -> 50 um).
    coarse_step_deg : float
        Rotation step of the full sweep.
    coarse_blur_um : float or None
        Both surfaces are blurred by a Gaussian of this standard deviation (micrometres) on
        the coarse level before the sweep, so the true pose still correlates when it falls
        between two sampled rotations (half a 4-deg step moves the texture ~90 um at a 2.5-mm
        radius). Chosen on pose_survival seed 5 (RESULTS-coarse-blur.md): 50 kept the true
        pose best on most conditions but lost it on a surface with step offsets as large as
        its texture (stitched fields of view: 1 of 8 matches found, 6 of 8 without blur);
        35 matched no blur there and on every other condition, and keeps an exact copy
        turned between two sampled rotations. None: no blur.
    presweep_keep : int or None
        Opt-in shortcut, off by default because it lost a true pose: every rotation of the
        coarse sweep is first scored on the level twice coarser than ``coarse_factor`` (100
        um; best masked NCC over all translations within ``max_offset_um``), and only the
        ``presweep_keep`` best rotations (plus the screen's hint rotations, each with its two
        neighbours) are scored on the coarse level. Chosen as 12 on seed 1 of every instrument
        model and condition of ``benchmarks/compare_speed.py`` and the odd Fadul slides (no
        true pose lost there, 3 to 30); on held-out seed 2 it kept every pose of the 3-D
        models, the synthetic conditions and all 63 Fadul matches, but lost one of the 2-D
        side-light model (the 100-um level ranked the true rotation 79th of 90; it is first on
        the 50-um level). It saves about 10 ms a Fadul pair. None: the full sweep (every
        rotation scored on the coarse level).
    coarse_peaks : int
        Distinct (rotation, translation) peaks of the sweep kept as pose hypotheses; two peaks
        are distinct when they differ by at least 1.5 coarse steps in rotation or
        ``translation_tol_um`` in translation.
    rotation_hints : int
        The best sweep peak within one coarse step of each of the best ``rotation_hints``
        rotations of the spectrum screen (:mod:`ballistics.screen`; each taken as both theta
        and theta + 180 deg) is kept as an extra hypothesis. The sweep always covers the full
        circle: hints add hypotheses, they never remove any. 0: no extra hypotheses.
    refine_peaks : int
        Hypotheses (best cell evidence first) refined and scored on the cell level (after the
        first, only those with at least ``accept_cmc`` congruent cells, both directions
        together, on the refinement level).
    refine_factor : int
        Downsampling for the cell evidence and the refinement (4 -> 25 um).
    refine_step_deg : float
        Final rotation step of the refinement: each hypothesis is searched +-coarse_step_deg
        in steps of twice this, then the best angle's neighbours at this step.
    max_offset_um : float
        Largest translation between the two primer centres that is searched (1 mm: primer
        centres found up to 1 mm apart). Without ``coarse_blur_um`` the wider search let
        false peaks crowd out the true pose of an exact copy rotated by 90 deg (between two
        sampled rotations; tests/test_picture.py).
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
    cell_normalise : bool
        Correlate each cell with its mean removed (and that of the window it is compared
        with), so a cell's offset or residual form does not swamp faint texture. False: plain
        normalised cross-product (no mean removal).
    contrast_sigma_um : float or None
        Divide both surfaces by their local RMS (Gaussian window of this standard deviation)
        before registration and cells, so faint regions weigh as much as strong ones. None:
        global unit RMS only.
    ccf_threshold : float
        Minimum per-cell correlation for a congruent cell (cmcR: 0.5).
    angle_tol_deg : float
        Congruence tolerance on rotation (cmcR: 6).
    translation_tol_um : float
        Congruence tolerance on translation (cmcR: 20 px at 6.25 um = 125 um).
    accept_cmc : int
        A refined hypothesis with at least this many congruent cells in both directions ends
        the search (NIST's C >= 6 match threshold); below it the next hypothesis is scored too.
    """

    coarse_factor: int = 8
    coarse_step_deg: float = 4.0
    coarse_blur_um: float | None = 35.0
    presweep_keep: int | None = None
    coarse_peaks: int = 5
    rotation_hints: int = 1
    refine_peaks: int = 2
    refine_factor: int = 4
    refine_step_deg: float = 1.0
    max_offset_um: float = 1000.0
    cell_factor: int = 2
    grid: int = 8
    min_cell_valid: float = 0.15
    cell_angles_deg: tuple[float, ...] = (-3.0, 0.0, 3.0)
    cell_search_um: float = 250.0
    cell_normalise: bool = True
    contrast_sigma_um: float | None = None
    ccf_threshold: float = 0.5
    angle_tol_deg: float = 6.0
    translation_tol_um: float = 125.0
    accept_cmc: int = 6

    def __post_init__(self) -> None:
        for name in (
            "coarse_factor",
            "refine_factor",
            "cell_factor",
            "grid",
            "coarse_peaks",
            "refine_peaks",
        ):
            if int(getattr(self, name)) < 1:
                raise BallisticsError(f"CompareParams.{name} must be >= 1")
        if self.presweep_keep is not None and int(self.presweep_keep) < 1:
            raise BallisticsError(
                "CompareParams.presweep_keep must be >= 1, or None for the full sweep"
            )
        if int(self.rotation_hints) < 0:
            raise BallisticsError("CompareParams.rotation_hints must be >= 0 (0: no hints)")
        if int(self.accept_cmc) < 0:
            raise BallisticsError("CompareParams.accept_cmc must be >= 0")
        for name in ("coarse_step_deg", "refine_step_deg", "max_offset_um", "cell_search_um"):
            if not float(getattr(self, name)) > 0:
                raise BallisticsError(f"CompareParams.{name} must be > 0")
        if self.coarse_blur_um is not None and not float(self.coarse_blur_um) > 0:
            raise BallisticsError(
                "CompareParams.coarse_blur_um must be > 0 micrometres, or None for no blur"
            )
        if self.contrast_sigma_um is not None and not float(self.contrast_sigma_um) > 0:
            raise BallisticsError(
                "CompareParams.contrast_sigma_um must be > 0 micrometres, or None to switch "
                "local contrast normalisation off"
            )
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

    def distance(self, other: Pose) -> tuple[float, float]:
        """(rotation difference in degrees, 0-180; translation difference in metres)."""
        da = abs((self.rotation_deg - other.rotation_deg + 180.0) % 360.0 - 180.0)
        return da, math.hypot(self.dy_m - other.dy_m, self.dx_m - other.dx_m)


@dataclass(frozen=True)
class Hypothesis:
    """A candidate pose of the second surface onto the first, with its evidence so far.

    Attributes
    ----------
    pose : Pose
    ncc : float
        Masked NCC at the level that produced or last refined the pose.
    hinted : bool
        Kept because it lies near a rotation of the spectrum screen.
    cells_forward, cells_backward : int
        Congruent cells A->B and B->A at the last level the hypothesis was scored on
        (-1: not scored yet).
    """

    pose: Pose
    ncc: float
    hinted: bool = False
    cells_forward: int = -1
    cells_backward: int = -1

    @property
    def evidence(self) -> int:
        return max(0, self.cells_forward) + max(0, self.cells_backward)


@dataclass(frozen=True)
class Trace:
    """The pose hypotheses at each step of one comparison (for benchmarks and diagnosis).

    ``coarse``: from the sweep, best NCC first; ``screened``: the same with cell evidence on
    the refinement level, best evidence first; ``refined``: the ones refined (of the first
    ``refine_peaks`` screened, those scored on the cell level: the first, then those with at
    least ``accept_cmc`` congruent cells, until one is a CMC match); ``final``: the refined
    ones scored on the cell level (``cells_*`` = CMC counts), in the order scored."""

    coarse: tuple[Hypothesis, ...]
    screened: tuple[Hypothesis, ...]
    refined: tuple[Hypothesis, ...]
    final: tuple[Hypothesis, ...]


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
    """Result of :func:`compare`. ``score``: higher is more similar.

    ``flags`` lists reasons (keys of :data:`FLAGS`) not to trust the pose, and with it a low
    score; empty when the registration is sound."""

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


def _levels(
    a: PreparedCasing, b: PreparedCasing, factor: int, params: CompareParams
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Both surfaces at one pyramid level on a common canvas, contrast-normalised if asked."""
    la, lb = _same_canvas(a.level(factor), b.level(factor))
    if params.contrast_sigma_um is None:
        return la, lb
    sigma = params.contrast_sigma_um * 1e-6 / (a.surface.spacing_m[0] * factor)
    return (local_contrast(*la, sigma), la[1]), (local_contrast(*lb, sigma), lb[1])


#: Rotations per batched NCC call of :func:`_sweep`.
_CHUNK = 8


def _sweep(
    ref: Any,
    moving: tuple[np.ndarray, np.ndarray],
    angles: np.ndarray,
    dy: int | np.ndarray,
    dx: np.ndarray | None = None,
    moving_valid: int | None = None,
) -> np.ndarray:
    """NCC maps for ``moving`` rotated by each angle: shape (len(angles), 2s+1, 2s+1) for all
    translations up to ``dy`` = s pixels, or (len(angles), len(dy), len(dx)) at the given
    translations. ``moving_valid``: see :func:`ballistics.register.ncc_maps` (default: the
    valid points of ``moving`` rotated by the first angle, for every chunk)."""
    out = []
    # Chunks of rotations keep the spectra a few MB: one batch of 90 rotations allocates
    # ~50 MB per call, and the page faults made a sweep's time vary 3x on a busy machine.
    for c0 in range(0, len(angles), _CHUNK):
        chunk = angles[c0 : c0 + _CHUNK]
        d = np.empty((len(chunk), *moving[0].shape), np.float32)
        m = np.empty((len(chunk), *moving[0].shape), bool)
        for k, ang in enumerate(chunk):
            d[k], m[k] = rotate(moving[0], moving[1], float(ang))
        if moving_valid is None:
            moving_valid = int(m[0].sum())
        if dx is None:
            out.append(ncc_maps(ref, d, m, int(dy), moving_valid=moving_valid))
        else:
            out.append(ncc_at(ref, d, m, np.asarray(dy), dx, moving_valid=moving_valid))
    return np.concatenate(out)


def _angle_diff(x: float, y: float) -> float:
    return abs((x - y + 180.0) % 360.0 - 180.0)


def _hint_groups(
    a: PreparedCasing, b: PreparedCasing, params: CompareParams, angles: np.ndarray
) -> list[set[int]]:
    """Indices of the sweep angles within one step of each screen rotation (theta and
    theta + 180: the spectrum cannot tell them apart), one set per such rotation."""
    if params.rotation_hints <= 0:
        return []
    n, step = len(angles), params.coarse_step_deg
    groups = []
    for h in rotation_candidates(signature(a), signature(b), params.rotation_hints):
        for base in (h, h + 180.0):
            k = round(base / step)
            groups.append({(k + d) % n for d in (-1, 0, 1)})
    return groups


def _presweep(
    fa: tuple[np.ndarray, np.ndarray],
    fb: tuple[np.ndarray, np.ndarray],
    params: CompareParams,
    spacing_m: float,
    angles: np.ndarray,
) -> np.ndarray | None:
    """Indices of the ``presweep_keep`` rotations (of ``angles``) whose best NCC over all
    translations is highest on the level twice coarser than ``fa``/``fb`` (the blurred coarse
    level); None when the pre-sweep is off or would keep every rotation."""
    keep = params.presweep_keep
    if keep is None or keep >= len(angles):
        return None
    (da, ma), (db, mb) = (downsample(*fa, 2), downsample(*fb, 2))
    s = max(1, round(params.max_offset_um * 1e-6 / (2 * spacing_m)))
    best = _sweep(reference(da, ma, s), (db, mb), angles, s).max(axis=(1, 2))
    return np.sort(np.argsort(-best, kind="stable")[:keep])


def _coarse_maps(
    a: PreparedCasing, b: PreparedCasing, params: CompareParams
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], float, int]:
    """Both surfaces on the coarse level (blurred as ``coarse_blur_um`` says), that level's
    spacing in metres and the translation search radius in its pixels."""
    spacing = a.surface.spacing_m[0] * params.coarse_factor
    fa, fb = _levels(a, b, params.coarse_factor, params)
    if params.coarse_blur_um is not None:
        sigma = params.coarse_blur_um * 1e-6 / spacing
        fa, fb = (masked_blur(*fa, sigma), fa[1]), (masked_blur(*fb, sigma), fb[1])
    return fa, fb, spacing, max(1, round(params.max_offset_um * 1e-6 / spacing))


def coarse_similarity(
    a: PreparedCasing, b: PreparedCasing, *, params: CompareParams | None = None
) -> float:
    """The best NCC of the comparison's full-rotation sweep on the coarse level (every
    ``coarse_step_deg`` rotation, every translation up to ``max_offset_um``): the first step
    of :func:`compare`, about a quarter of its cost (15-21 ms a pair on one core). Not
    evidence: a cheap ranking of candidates for the full comparison (``index.search``'s
    rescue stage). Among 100k distractors, of the 130 candidates a search sets aside after
    its first 20 (positions 20-149 of stage 2's order), it ranked first every mate those held:
    5 of 5 on Fadul, 2 of 2 on the held-out synthetic seed 401 (benchmarks/scale_rescue.py).

    Returns
    -------
    float
        In [-1, 1]; -1 when no rotation and translation leaves enough overlap.
    """
    params = params or CompareParams()
    fa, fb, _, s = _coarse_maps(a, b, params)
    angles = np.arange(0.0, 360.0, params.coarse_step_deg)
    maps = _sweep(reference(*fa, s), fb, angles, s, moving_valid=int(fb[1].sum()))
    return float(maps.max())


def coarse_hypotheses(
    a: PreparedCasing, b: PreparedCasing, params: CompareParams
) -> list[Hypothesis]:
    """Pose hypotheses from the full-rotation sweep on the coarse level: the ``coarse_peaks``
    best distinct local maxima over (rotation, translation), then the best peak near each
    screen rotation when it is not among them. Best NCC first, hinted ones last."""
    fa, fb, spacing, s = _coarse_maps(a, b, params)
    angles = np.arange(0.0, 360.0, params.coarse_step_deg)
    groups = _hint_groups(a, b, params, angles)
    keep = _presweep(fa, fb, params, spacing, angles)
    n = len(angles)
    peakable = np.ones(n, bool)
    # The small-overlap rule uses b's own valid area whichever rotations are swept (the full
    # sweep's first rotation, 0 deg, has exactly that area).
    valid_b = int(fb[1].sum())
    if keep is None:
        maps = _sweep(reference(*fa, s), fb, angles, s, moving_valid=valid_b)
    else:
        # The hints' rotations are always swept, so the hints add what they always added.
        keep = np.union1d(keep, np.array(sorted({k for g in groups for k in g}), dtype=int))
        # With both neighbours: a kept rotation is a local maximum over rotation exactly when
        # it is one in the full sweep. An edge rotation (one neighbour not swept) may not be
        # a peak: an unswept neighbour could be higher, and such false local maxima crowded
        # out a true pose on a tuning pair (coaxial light, seed 1).
        swept = np.union1d(keep, np.concatenate([(keep - 1) % n, (keep + 1) % n]))
        maps = np.full((n, 2 * s + 1, 2 * s + 1), -1.0)
        maps[swept] = _sweep(reference(*fa, s), fb, angles[swept], s, moving_valid=valid_b)
        inner = np.zeros(n, bool)
        inner[swept] = True
        peakable = inner & np.roll(inner, 1) & np.roll(inner, -1)
    # Local maxima over rotation (circular) and translation; the rest cannot be a peak.
    top = ndimage.maximum_filter(maps, size=3, mode=("wrap", "nearest", "nearest"))
    flat = maps.ravel()
    cand = np.flatnonzero((flat >= top.ravel()) & (flat > -1.0))
    cand = cand[peakable[cand // maps[0].size]]
    cand = cand[np.argsort(-flat[cand], kind="stable")][:2000]
    ks, is_, js = np.unravel_index(cand, maps.shape)
    sep_deg = 1.5 * params.coarse_step_deg
    sep_px = params.translation_tol_um * 1e-6 / spacing
    kept: list[tuple[int, int, int]] = []

    def distinct(k: int, i: int, j: int) -> bool:
        return all(
            _angle_diff(angles[k], angles[k2]) >= sep_deg or math.hypot(i - i2, j - j2) >= sep_px
            for k2, i2, j2 in kept
        )

    for k, i, j in zip(ks.tolist(), is_.tolist(), js.tolist(), strict=True):
        if len(kept) >= params.coarse_peaks:
            break
        if distinct(k, i, j):
            kept.append((k, i, j))
    hinted = {k for g in groups for k in g}
    main = len(kept)
    for g in groups:
        for k, i, j in zip(ks.tolist(), is_.tolist(), js.tolist(), strict=True):
            if k in g:
                if distinct(k, i, j):
                    kept.append((k, i, j))
                break
    return [
        Hypothesis(
            Pose(float(angles[k]), (i - s) * spacing, (j - s) * spacing),
            float(maps[k, i, j]),
            hinted=n >= main or k in hinted,
        )
        for n, (k, i, j) in enumerate(kept)
    ]


def _count(cells: list[CellResult]) -> int:
    return sum(c.congruent for c in cells)


def cell_evidence(
    a: PreparedCasing, b: PreparedCasing, hyps: list[Hypothesis], params: CompareParams
) -> list[Hypothesis]:
    """Score each hypothesis by congruent cells in both directions on the refinement level;
    best evidence (then NCC) first."""
    spacing = a.surface.spacing_m[0] * params.refine_factor
    ra, rb = _levels(a, b, params.refine_factor, params)
    # One cell rotation: a coarse pose is within half a coarse step (2 deg), which moves a
    # 25-um cell by less than a pixel; three rotations tripled the cost for no change in rank.
    pe = replace(params, cell_angles_deg=(0.0,))
    ga, gb = _cell_grid(ra, pe), _cell_grid(rb, pe)
    out = []
    for h in hyps:
        f = _congruence(_cells(ra, rb, h.pose, pe, spacing, "a->b", ga), pe)
        r = _congruence(_cells(rb, ra, h.pose.inverse(), pe, spacing, "b->a", gb), pe)
        # Congruent cells agree with each other, not necessarily with the hypothesis: a pose
        # 100-200 um off still collects them (each cell searches +-cell_search_um). Move the
        # pose to where the cells say, so such near-duplicates merge instead of competing.
        pose = h.pose
        c = _consensus(f)
        if c is not None:
            pose = Pose(pose.rotation_deg, pose.dy_m - c[1], pose.dx_m - c[2])
        out.append(replace(h, pose=pose, cells_forward=_count(f), cells_backward=_count(r)))
    out.sort(key=lambda h: (h.evidence, h.ncc), reverse=True)
    tol = params.translation_tol_um * 1e-6 / 2.0
    kept: list[Hypothesis] = []
    for h in out:
        if all(
            h.pose.distance(k.pose)[0] > params.coarse_step_deg or h.pose.distance(k.pose)[1] > tol
            for k in kept
        ):
            kept.append(h)
    return kept


def refine_hypotheses(
    a: PreparedCasing, b: PreparedCasing, hyps: list[Hypothesis], params: CompareParams
) -> list[Hypothesis]:
    """Refine each hypothesis on the refinement level: rotations +-coarse_step_deg in double
    steps, then the best angle's neighbours in single steps, each within a small translation
    window around the hypothesis (so distinct hypotheses stay distinct)."""
    if not hyps:
        return []
    spacing = a.surface.spacing_m[0] * params.refine_factor
    ra, rb = _levels(a, b, params.refine_factor, params)
    # Coarse pixels are coarse_factor / refine_factor refinement pixels: search a little more.
    win = max(2, math.ceil(1.5 * params.coarse_factor / params.refine_factor))
    s = max(1, round(params.max_offset_um * 1e-6 / spacing)) + win

    def centre(pose: Pose) -> tuple[int, int]:
        return (
            min(max(round(pose.dy_m / spacing), -s), s),
            min(max(round(pose.dx_m / spacing), -s), s),
        )

    # Only windows of +-win around each hypothesis are read (two rounds: +-2 win in all), so
    # the FFT needs to hold just the largest of those shifts, not all +-s.
    reach = max(max(abs(c) for c in centre(h.pose)) for h in hyps) + 2 * win
    ref = reference(*ra, min(reach, s))

    def best_near(angles: np.ndarray, pose: Pose) -> tuple[int, int, int, float]:
        """Best (angle index, dy px, dx px, NCC) within +-win of ``pose`` (clipped to +-s)."""
        cy, cx = centre(pose)
        ys = np.arange(max(-s, cy - win), min(s, cy + win) + 1)
        xs = np.arange(max(-s, cx - win), min(s, cx + win) + 1)
        sub = _sweep(ref, rb, angles, ys, xs)
        k, i, j = np.unravel_index(int(np.argmax(sub)), sub.shape)
        return int(k), int(ys[i]), int(xs[j]), float(sub[k, i, j])

    span = params.coarse_step_deg
    steps = np.arange(-span, span + 1e-9, 2.0 * params.refine_step_deg)
    near = np.array([-params.refine_step_deg, params.refine_step_deg])
    out = []
    for h in hyps:
        k, i, j, v = best_near(h.pose.rotation_deg + steps, h.pose)
        ang = h.pose.rotation_deg + float(steps[k])
        k2, i2, j2, v2 = best_near(ang + near, Pose(ang, i * spacing, j * spacing))
        if v2 > v:
            ang, i, j, v = ang + float(near[k2]), i2, j2, v2
        out.append(replace(h, pose=Pose(ang % 360.0, i * spacing, j * spacing), ncc=v))
    return out


def register(a: PreparedCasing, b: PreparedCasing, params: CompareParams) -> tuple[Pose, float]:
    """Coarse-to-fine rigid registration of ``b`` onto ``a``: the hypothesis with the best cell
    evidence on the refinement level, refined; returns the pose and its NCC at that level.
    (:func:`compare` scores several refined hypotheses on the cell level instead.)"""
    screened = cell_evidence(a, b, coarse_hypotheses(a, b, params), params)
    best = refine_hypotheses(a, b, screened[:1], params)[0]
    return best.pose, best.ncc


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
    span = np.arange(-window, window + 1)
    sub = ncc_at(reference(*la, reach), d[None], m[None], cy + span, cx + span)[0]
    i, j = np.unravel_index(int(np.argmax(sub)), sub.shape)

    def vertex(lo: float, mid: float, hi: float) -> float:
        den = lo - 2.0 * mid + hi
        return 0.0 if den >= 0 else float(np.clip(0.5 * (lo - hi) / den, -0.5, 0.5))

    fy = vertex(sub[i - 1, j], sub[i, j], sub[i + 1, j]) if 0 < i < sub.shape[0] - 1 else 0.0
    fx = vertex(sub[i, j - 1], sub[i, j], sub[i, j + 1]) if 0 < j < sub.shape[1] - 1 else 0.0
    dy = (cy - window + i + fy) * spacing_m
    dx = (cx - window + j + fx) * spacing_m
    return Pose(pose.rotation_deg, dy, dx), float(sub[i, j])


@dataclass(frozen=True)
class _Cell:
    """One grid cell of a reference surface, ready to be matched: its grid index, bounds on
    its level (rows y0:y1, columns x0:x1), valid fraction and float32 template."""

    row: int
    col: int
    y0: int
    y1: int
    x0: int
    x1: int
    valid_fraction: float
    template: np.ndarray


def _cell_grid(a: tuple[np.ndarray, np.ndarray], params: CompareParams) -> list[_Cell]:
    """The cells of ``a`` that are matched (enough valid data, not flat). They do not depend
    on the pose, so one grid serves every hypothesis of a comparison."""
    da, ma = a
    rows, cols = np.nonzero(ma)
    if rows.size == 0:
        return []
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    edges_r = np.linspace(r0, r1, params.grid + 1).round().astype(int)
    edges_c = np.linspace(c0, c1, params.grid + 1).round().astype(int)

    # Valid counts and absolute sums of all cells at once (block sums over the grid edges),
    # so only the cells worth matching are visited one by one.
    def block_sums(x: np.ndarray) -> np.ndarray:
        rows_ = np.add.reduceat(x[r0:r1], edges_r[:-1] - r0, axis=0)
        return np.add.reduceat(rows_[:, c0:c1], edges_c[:-1] - c0, axis=1)

    counts = block_sums(ma.astype(np.int64))
    mass = block_sums(np.abs(da).astype(np.float64))
    out = []
    for gi in range(params.grid):
        for gj in range(params.grid):
            y0, y1, x0, x1 = edges_r[gi], edges_r[gi + 1], edges_c[gj], edges_c[gj + 1]
            size = (y1 - y0) * (x1 - x0)
            if size == 0 or y1 <= y0 or x1 <= x0:
                continue
            frac = float(counts[gi, gj]) / size
            if frac < params.min_cell_valid or counts[gi, gj] < 16 or mass[gi, gj] == 0.0:
                continue
            cm = ma[y0:y1, x0:x1]
            tmpl = da[y0:y1, x0:x1]
            if params.cell_normalise:
                # Invalid points at the cell's own mean vanish once the mean is removed.
                tmpl = np.where(cm, tmpl, float(tmpl[cm].mean()))
            # Python ints: the matching loop's index arithmetic is much slower on numpy scalars.
            box = (int(y0), int(y1), int(x0), int(x1))
            out.append(_Cell(gi, gj, *box, frac, tmpl.astype(np.float32)))
    return out


def _cells(
    a: tuple[np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray],
    pose: Pose,
    params: CompareParams,
    spacing_m: float,
    direction: str,
    grid: list[_Cell] | None = None,
) -> list[CellResult]:
    """Register each cell of ``a`` in ``b`` near ``pose``; congruence is decided later.
    ``grid``: :func:`_cell_grid` of ``a`` with ``params``, when the caller already has it."""
    if grid is None:
        grid = _cell_grid(a, params)
    if not grid:
        return []
    size = a[0].shape[0]
    search = max(1, round(params.cell_search_um * 1e-6 / spacing_m))
    shift_px = (pose.dy_m / spacing_m, pose.dx_m / spacing_m)
    moved = [rotate(b[0], b[1], pose.rotation_deg + d, shift_px) for d in params.cell_angles_deg]
    # Integral images of the moved masks: whether a search region holds any valid point is
    # then four lookups instead of a scan of the region.
    sums = [cv2.integral(mb.view(np.uint8)) for _, mb in moved]
    out: list[CellResult] = []
    f = params.cell_factor
    method = cv2.TM_CCOEFF_NORMED if params.cell_normalise else cv2.TM_CCORR_NORMED
    for c in grid:
        y0, y1, x0, x1 = c.y0, c.y1, c.x0, c.x1
        sy0, sy1 = max(0, y0 - search), min(size, y1 + search)
        sx0, sx1 = max(0, x0 - search), min(size, x1 + search)
        best = (-2.0, 0.0, 0, 0)
        for dang, (db, _), ii in zip(params.cell_angles_deg, moved, sums, strict=True):
            at = ii.item
            if at(sy1, sx1) - at(sy0, sx1) - at(sy1, sx0) + at(sy0, sx0) == 0:
                continue
            # OpenCV scores a flat window (0/0) as 0, never NaN.
            res = cv2.matchTemplate(db[sy0:sy1, sx0:sx1], c.template, method)
            _, val, _, loc = cv2.minMaxLoc(res)
            if val > best[0]:
                # loc = (x, y) of the template's top-left in the region.
                best = (float(val), dang, sy0 + loc[1] - y0, sx0 + loc[0] - x0)
        if best[0] <= -2.0:
            continue
        out.append(
            CellResult(
                direction,
                c.row,
                c.col,
                (int(y0 * f), int(x0 * f), int(y1 * f), int(x1 * f)),
                c.valid_fraction,
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
    # statistics.median: the same value as np.median, without its per-call overhead.
    th = float(statistics.median([c.rotation_deg for c in good]))
    dy = float(statistics.median([c.dy_m for c in good]))
    dx = float(statistics.median([c.dx_m for c in good]))
    tol = params.translation_tol_um * 1e-6
    out = []
    for c in cells:
        ok = (
            c.ccf >= params.ccf_threshold
            and abs(c.rotation_deg - th) <= params.angle_tol_deg
            and math.hypot(c.dy_m - dy, c.dx_m - dx) <= tol
        )
        if ok == c.congruent:
            out.append(c)
            continue
        # Positional construction: dataclasses.replace costs ~10 us a cell, a few ms a pair.
        out.append(
            CellResult(
                c.direction,
                c.row,
                c.col,
                c.bbox_px,
                c.valid_fraction,
                c.ccf,
                c.rotation_deg,
                c.dy_m,
                c.dx_m,
                bool(ok),
            )
        )
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


def _consensus(cells: list[CellResult]) -> tuple[float, float, float] | None:
    """Median (rotation, dy, dx) offset of the congruent cells from the pose, or None."""
    good = [c for c in cells if c.congruent]
    if len(good) < 2:
        return None
    return (
        float(statistics.median([c.rotation_deg for c in good])),
        float(statistics.median([c.dy_m for c in good])),
        float(statistics.median([c.dx_m for c in good])),
    )


def _directions_disagree(
    screened: list[Hypothesis],
    final: list[Hypothesis],
    pose: Pose,
    fwd: list[CellResult],
    bwd: list[CellResult],
    params: CompareParams,
) -> bool:
    """Whether A->B and B->A prefer different poses: on the cell evidence of the hypotheses,
    on the final cell scores, or in the consensus offsets of the chosen pose's cells."""
    tol = params.translation_tol_um * 1e-6

    def apart(p: Pose, q: Pose) -> bool:
        da, dt = p.distance(q)
        return da > params.angle_tol_deg or dt > tol

    for hs in (screened, final):
        if len(hs) < 2:
            continue
        f = max(hs, key=lambda h: (h.cells_forward, h.ncc))
        r = max(hs, key=lambda h: (h.cells_backward, h.ncc))
        if (
            apart(f.pose, r.pose)
            and min(f.cells_forward, r.cells_backward) >= _MIN_VOTE_CELLS
            and f.cells_forward > r.cells_forward
            and r.cells_backward > f.cells_backward
        ):
            return True
    cf, cb = _consensus(fwd), _consensus(bwd)
    if cf is None or cb is None:
        return False
    # A cell of A found at offset d in B (moved) means B should move by -d; likewise backward.
    pf = Pose(pose.rotation_deg - cf[0], pose.dy_m - cf[1], pose.dx_m - cf[2])
    inv = pose.inverse()
    pb = Pose(inv.rotation_deg - cb[0], inv.dy_m - cb[1], inv.dx_m - cb[2]).inverse()
    return apart(pf, pb)


def _weak(final: list[Hypothesis], cf: int, cb: int, params: CompareParams) -> bool:
    """Whether a comparison short of a CMC match still found partial agreement on a pose
    (see :data:`_PARTIAL_CELLS`): a pair that does not match rarely does."""
    if min(cf, cb) >= params.accept_cmc:
        return False
    both = max((min(h.cells_forward, h.cells_backward) for h in final), default=0)
    return both >= _PARTIAL_CELLS


def _score(fwd: list[CellResult], bwd: list[CellResult], corr: float) -> tuple[float, int]:
    """(score, cells considered): mean congruent fraction of both directions + correlation."""
    considered = max(1, (len(fwd) + len(bwd)) // 2)
    return (_count(fwd) + _count(bwd)) / 2.0 / considered + max(0.0, corr), considered


def compare_traced(
    a: PreparedCasing, b: PreparedCasing, *, params: CompareParams | None = None
) -> tuple[Comparison, Trace]:
    """:func:`compare`, also returning the pose hypotheses at each step."""
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
    coarse = coarse_hypotheses(a, b, params)
    screened = cell_evidence(a, b, coarse, params)
    spacing = a.surface.spacing_m[0] * params.cell_factor
    la, lb = _levels(a, b, params.cell_factor, params)
    ga, gb = _cell_grid(la, params), _cell_grid(lb, params)
    refined: list[Hypothesis] = []
    final: list[Hypothesis] = []
    best: tuple[float, Pose, float, list[CellResult], list[CellResult], int] | None = None
    for n, h in enumerate(screened[: params.refine_peaks]):
        if n > 0 and h.evidence < params.accept_cmc:
            # Too little cell evidence on the refinement level to beat the first on the
            # finest (the first is always scored): skip the most expensive steps. Each
            # hypothesis is refined on its own, only when it will be scored.
            continue
        h = refine_hypotheses(a, b, [h], params)[0]
        refined.append(h)
        pose, corr = _refine_translation(la, lb, h.pose, spacing)
        fwd = _congruence(_cells(la, lb, pose, params, spacing, "a->b", ga), params)
        bwd = _congruence(_cells(lb, la, pose.inverse(), params, spacing, "b->a", gb), params)
        score, considered = _score(fwd, bwd, corr)
        final.append(replace(h, pose=pose, cells_forward=_count(fwd), cells_backward=_count(bwd)))
        if best is None or score > best[0]:
            best = (score, pose, corr, fwd, bwd, considered)
        if min(_count(fwd), _count(bwd)) >= params.accept_cmc:
            break
    assert best is not None  # refine_peaks >= 1 and the sweep always yields a peak
    score, pose, corr, fwd, bwd, considered = best
    cf, cb = _count(fwd), _count(bwd)
    flags = []
    if _directions_disagree(screened, final, pose, fwd, bwd, params):
        flags.append("directions_disagree")
    if _weak(final, cf, cb, params):
        flags.append("weak_registration")
    regions = {"breech_face": score}
    stri = striation_correlation(a.aperture_profile, b.aperture_profile)
    if stri is not None:
        regions["aperture_shear"] = stri
    comp = Comparison(
        score=score,
        cmc=min(cf, cb),
        cmc_forward=cf,
        cmc_backward=cb,
        cells_considered=considered,
        correlation=corr,
        pose=pose,
        regions=regions,
        cells=tuple(fwd + bwd),
        striation_correlation=stri,
        params=params,
        flags=tuple(flags),
    )
    return comp, Trace(tuple(coarse), tuple(screened), tuple(refined), tuple(final))


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
        considered, plus the registered correlation; ``pose`` maps ``b`` onto ``a``;
        ``flags`` say when that pose is not trustworthy (:data:`FLAGS`).
    """
    return compare_traced(a, b, params=params)[0]
