"""Find the primer, the firing-pin impression and the aperture-shear band on a casing scan.

Labs save a case head in many ways; the segmentation decides from the *geometry* of the
surface, never from where the invalid pixels are, which of these it was given
(:attr:`Segmentation.style`):

``"case_head"``
    A raw 3-D scan of the case head: the primer edge is a circular height step.
``"disc_fov"``
    A raw 3-D scan whose field of view is cropped to a disc (NaN outside a circle a little
    wider, or a little narrower, than the primer): the step is visible over all or part of
    its length, and found there.
``"annulus_pin_invalid"``
    A breech face cropped inside the primer edge with the firing-pin hole already invalid
    (e.g. the processed Fadul files): no step; the circular boundary of the valid data
    stands in for the primer edge, and the invalid hole is the firing pin.
``"breech_face_pin_present"``
    Cropped inside the primer edge, the firing-pin dent still measured: the boundary stands
    in for the primer edge, the dent is found by its depression.
``"image"``
    A 2-D image (ring-light photograph, oblique render): the primer edge is a ring of
    intensity edges, the firing pin a smaller disc inside it.

A missing or partial firing-pin impression is not a refusal: the pin is then reported as not
found (:attr:`Segmentation.firing_pin_found`), the breech face is the whole annulus and a
note says so. A scan is refused only when there is no breech face to compare, and the error
says what was seen.

Method (on a downsampled copy at ~25 um per pixel, then refined):

* **Valid-data boundary**: the convex hull of the largest valid region, where it does not run
  along the frame, is fit as a circle; it counts as a circular boundary when most of its
  length lies on that circle.
* **Primer edge** (3-D): edge pixels (height slope) vote for circle centres along their
  gradient (a gradient Hough transform) counting only the visible part of each circle; the
  best circle is kept if the height *steps* across it (consistent sign, well above the
  surface's own slope), then refined on the full-resolution radial profiles of its visible
  part (a gap where a steep wall dropped out is bridged; the step is in it). A disc crop
  narrower than the primer and off its centre keeps only a thin crescent of case head: its
  inner edge gives the circle when the Hough vote does not. A raw scan with no circular
  crop and no step (photometric stereo integrates the step into a groove) takes the ring
  of steep slopes of primer size, several times steeper than the breech face.
* **Primer edge** (2-D): the gradient Hough transform proposes circles; dense texture covers
  any circle with edges, so the candidates are told apart, and refined to sub-pixel, by the
  mean absolute radial change of the unblurred image across them (a dark or bright ring, or
  a step whose sign turns with a side light).
* **Firing pin** (3-D): the connected region near the primer centre that is either deeper
  than the breech face (after a robust plane) or an invalid hole enclosed by valid data (or
  both, for a partly invalid impression); its image moments give centre, semi-axes, angle
  and shape class. A partly invalid impression is a stadium fitted at once to its rim
  (measured dent against measured surface) and to the outline of its invalid part.
* **Firing pin** (2-D): the rim is the strongest closed outline of shading edges once the
  texture is blurred away: thinned edges, Hough circles each grown into the stadium whose
  boundary the edges cover best (an elongated pin is found from one end), outlines of
  filled edge regions and the innermost closed outline around each circle's centre; the
  best-covered outline, or a well-covered one enclosing it (the lit floor under a side
  light is an outline of its own inside the rim).
* **Aperture shear**: the angular sector just outside the firing-pin impression where the
  high-pass surface is striated along the radial direction markedly more than further out.

Confidence (:attr:`Segmentation.confidence`, 0..1) is the product of a primer term and a
firing-pin term. Primer: for a step (or a 2-D ring), its angular coverage (share of the
visible circle with edge pixels) times ``min(1, visible fraction / 0.5)``; for a boundary
stand-in, ``0.8 * min(1, 1.5 * inliers * coverage)`` (share of the boundary on its circle
times the share of angles it covers). Firing pin: 1 for an enclosed invalid hole, and
``min(1, 0.7 + 0.1 * depth / threshold)`` for a dent (1 from three times the detection
threshold); ``min(1, 0.5 + coverage)`` for a 2-D outline (share of its boundary covered by
rim edges); 0.5 when not found. A ring of steep slopes standing in for a step (a raw scan
with no circular crop and no step, e.g. photometric stereo) halves the primer term and is
said in the notes; a crescent's edge counts as an edge coverage of 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from . import _segment_helpers as h
from .errors import SegmentationError
from .scan import Scan

WORK_SPACING_M = 25e-6
"""Working pixel spacing of the coarse search, metres."""

PRIMER_RADIUS_RANGE_M = (1.4e-3, 3.2e-3)
"""Plausible primer radii (small pistol 2.2 mm, large pistol 2.65 mm; processed scans
cropped inside the edge can be smaller)."""

BOUNDARY_RADIUS_RANGE_M = (1.0e-3, 3.6e-3)
"""Plausible radii of a circular valid-data boundary standing in for the primer edge."""

FP_RADIUS_RANGE_M = (0.2e-3, 1.1e-3)
ELONGATION_THRESHOLD = 1.4
"""Major/minor axis ratio above which a firing-pin impression is called elongated."""

MIN_FOV_M = 1.5e-3
"""Smallest field of view (shorter side) that can hold a breech face, metres."""

MAX_SPACING_M = 60e-6
"""Coarsest pixel spacing at which a primer is still resolved, metres."""

MIN_STEP_M = 2e-6
"""Smallest median height step across the primer edge, metres."""

EDGE_SLOPE = 0.12
"""Slope (height over distance) above which a working-grid pixel votes for the primer edge."""

SOFT_EDGE_SLOPE = 0.06
"""Lower slope threshold tried on an uncropped scan when no circle of primer size is found
at :data:`EDGE_SLOPE` (otherwise the scan would be refused)."""

MIN_PIN_DEPTH_M = 15e-6
"""Smallest depth of a firing-pin dent below the breech face (and at least 8 robust sigma of
the breech-face heights), metres."""

MIN_BREECH_FACE_M2 = 0.5e-6
"""Smallest breech-face area worth comparing (0.5 mm^2), square metres."""

STYLES: tuple[str, ...] = (
    "case_head",
    "disc_fov",
    "annulus_pin_invalid",
    "breech_face_pin_present",
    "image",
)


@dataclass(frozen=True, eq=False)
class Segmentation:
    """Where the marks are on one scan (pixel coordinates of that scan).

    Attributes
    ----------
    primer_center : tuple of float
        (row, col) in pixels.
    primer_radius : float
        Pixels.
    firing_pin_center : tuple of float or None
        (row, col) in pixels; None when the firing pin was not found.
    firing_pin_shape : {"round", "elongated"} or None
    firing_pin_radius : float or None
        Half the major axis, pixels.
    firing_pin_axes : tuple of float or None
        (major, minor) semi-axes, pixels.
    firing_pin_angle_deg : float or None
        Angle of the major axis, degrees counter-clockwise from +col in (x = col, y = row)
        coordinates, in [0, 180).
    precropped : bool
        True when the scan was already cropped to the breech face (styles
        ``"annulus_pin_invalid"`` and ``"breech_face_pin_present"``): the valid-data boundary
        stands in for the primer edge and no edge margin is removed.
    breech_face_mask : ndarray of shape (M, N), bool
        Valid pixels of the breech-face annulus (inside the primer, outside the firing pin).
    aperture_shear_mask : ndarray of shape (M, N), bool, or None
        The aperture-shear band, when one was found.
    aperture_shear_angle_deg : float or None
        Direction from the firing-pin centre to the shear band (same convention).
    style : str
        How the scan was saved, as recognised from its geometry; one of :data:`STYLES`.
    firing_pin_found : bool
        Whether a firing-pin impression was found.
    confidence : float
        How sure the segmentation is, 0..1 (see the module docstring for how it is computed).
    notes : tuple of str
        Human-readable remarks, e.g. ``"firing pin not found; breech face = whole annulus"``.
    """

    primer_center: tuple[float, float]
    primer_radius: float
    firing_pin_center: tuple[float, float] | None
    firing_pin_shape: str | None
    firing_pin_radius: float | None
    firing_pin_axes: tuple[float, float] | None
    firing_pin_angle_deg: float | None
    precropped: bool
    breech_face_mask: np.ndarray
    aperture_shear_mask: np.ndarray | None = None
    aperture_shear_angle_deg: float | None = None
    style: str = "case_head"
    firing_pin_found: bool = True
    confidence: float = 1.0
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (plain floats, no masks; unknown pin fields are None)."""

        def pair(v: tuple[float, float] | None) -> list[float] | None:
            return None if v is None else [float(v[0]), float(v[1])]

        def num(v: float | None) -> float | None:
            return None if v is None else float(v)

        return {
            "primer_center": [float(self.primer_center[0]), float(self.primer_center[1])],
            "primer_radius": float(self.primer_radius),
            "firing_pin_center": pair(self.firing_pin_center),
            "firing_pin_shape": self.firing_pin_shape,
            "firing_pin_radius": num(self.firing_pin_radius),
            "firing_pin_axes": pair(self.firing_pin_axes),
            "firing_pin_angle_deg": num(self.firing_pin_angle_deg),
            "precropped": bool(self.precropped),
            "breech_face_pixels": int(self.breech_face_mask.sum()),
            "aperture_shear": self.aperture_shear_mask is not None,
            "aperture_shear_angle_deg": num(self.aperture_shear_angle_deg),
            "style": self.style,
            "firing_pin_found": bool(self.firing_pin_found),
            "confidence": float(self.confidence),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class _Circle:
    """A circle on the working grid: centre (cx = col, cy = row), radius, all in pixels."""

    cx: float
    cy: float
    r: float
    quality: float  # 0..1, see the module docstring (confidence)


@dataclass(frozen=True)
class _Pin:
    """A firing pin on the working grid and at full resolution."""

    lo: np.ndarray  # working-grid region (bool)
    full: tuple[float, float, float, float, float]  # (row, col, major, minor, angle) full res
    invalid_hole: bool  # the impression is (mostly) an invalid hole
    quality: float
    note: str | None = None


# --------------------------------------------------------------------------------------
# the public entry point


def segment(scan: Scan) -> Segmentation:
    """Locate the primer, the firing-pin impression and the aperture-shear band.

    Parameters
    ----------
    scan : Scan
        A topography of the case head in any of the cropping styles of the module docstring,
        or a 2-D image (``kind="image"``).

    Returns
    -------
    Segmentation
        Pixel coordinates of ``scan``; ``style``, ``confidence`` and ``notes`` say what was
        recognised.

    Raises
    ------
    SegmentationError
        When the scan has too little valid data, its spacing cannot be that of a case-head
        scan, or there is no breech face to compare (no primer edge and no circular crop).
    """
    if scan.valid_fraction < 0.05:
        raise SegmentationError(
            f"scan has only {100 * scan.valid_fraction:.1f} % valid pixels; nothing to segment"
        )
    sy, sx = scan.spacing_m
    sp = math.sqrt(sy * sx)
    fov = min(scan.shape[0] * sy, scan.shape[1] * sx)
    if fov < MIN_FOV_M:
        raise SegmentationError(
            f"field of view {fov * 1e3:.3g} mm ({scan.shape[0]} x {scan.shape[1]} px at "
            f"{sy:.3g} x {sx:.3g} m) is smaller than a primer ({MIN_FOV_M * 1e3:.1f} mm at "
            "least); check the pixel spacing (metres per pixel)"
        )
    if sp > MAX_SPACING_M:
        raise SegmentationError(
            f"pixel spacing {sp * 1e6:.3g} um is too coarse to resolve a primer (at most "
            f"{MAX_SPACING_M * 1e6:.0f} um); check the pixel spacing (metres per pixel)"
        )
    f = max(1, round(WORK_SPACING_M / sp))
    zlo, wlo = h.downsample(scan.data, scan.mask, f)
    vlo = wlo > 0.5
    if min(zlo.shape) < 16:
        raise SegmentationError(f"scan of {scan.shape} pixels is too small to segment")
    if scan.kind == "image":
        return _segment_image(scan, zlo, vlo, f)
    return _segment_topography(scan, zlo, vlo, f)


# --------------------------------------------------------------------------------------
# 3-D


def _valid_boundary_circle(vlo: np.ndarray, sp_lo: float) -> _Circle | None:
    """The circle of the valid data's outer boundary, when it is one (working grid).

    The convex hull of the largest valid region is sampled densely; samples on the frame
    are dropped (a crop by the frame is not a circle); the rest is fit by a trimmed circle.
    Accepted when >= 35 % of the samples lie within 3 % of the radius and they cover at least
    30 % of the circle's angles (processed files are often clipped by the frame and by
    straight cuts).
    """
    opened = ndimage.binary_opening(vlo, iterations=1)
    comp = h.largest_component(opened)
    if comp.sum() < 50:
        return None
    pts = cv2.findNonZero(comp.astype(np.uint8))
    hull = cv2.convexHull(pts).reshape(-1, 2).astype(np.float64)
    m, n = vlo.shape

    def on_frame(p: np.ndarray) -> bool:
        return bool(p[0] <= 0.5 or p[0] >= n - 1.5 or p[1] <= 0.5 or p[1] >= m - 1.5)

    xs_l, ys_l, edge_l = [], [], []
    for i in range(len(hull)):  # long edges weigh by their length
        p, q = hull[i], hull[(i + 1) % len(hull)]
        k = max(int(np.hypot(*(q - p))), 1)
        t = np.arange(k) / k
        xs_l.append(p[0] + t * (q[0] - p[0]))
        ys_l.append(p[1] + t * (q[1] - p[1]))
        # an edge between two frame points runs along the frame or cuts across a corner
        edge_l.append(np.full(k, on_frame(p) and on_frame(q)))
    x, y, frame_edge = np.concatenate(xs_l), np.concatenate(ys_l), np.concatenate(edge_l)
    off = ~frame_edge & (x > 0.5) & (x < n - 1.5) & (y > 0.5) & (y < m - 1.5)
    if off.sum() < 24:
        return None
    xo, yo = x[off], y[off]
    tol_frac = 0.03

    def score(c: tuple[float, float, float]) -> tuple[float, float]:
        on = np.abs(np.hypot(xo - c[0], yo - c[1]) - c[2]) < max(2.0, tol_frac * c[2])
        ang = np.arctan2(yo[on] - c[1], xo[on] - c[0])
        bins = np.unique(((ang + math.pi) / (2 * math.pi) * 72).astype(np.int64) % 72)
        return float(on.mean()), bins.size / 72

    # the whole hull first (a crop inside the frame, as the Fadul files), then the part off
    # the frame alone (a disc clipped by the frame)
    lo, hi = (v / sp_lo for v in BOUNDARY_RADIUS_RANGE_M)
    for xs, ys in ((x, y), (xo, yo)):
        cx, cy, r = h.robust_circle(xs, ys, h.fit_circle(xs, ys), 2.0)
        if not (math.isfinite(r) and lo <= r <= hi):
            continue
        inliers, coverage = score((cx, cy, r))
        if inliers >= 0.35 and coverage >= 0.3:
            return _Circle(cx, cy, r, min(1.0, 1.5 * inliers * coverage))
    return None


def _find_primer_step(
    z: np.ndarray,
    vlo: np.ndarray,
    sp_lo: float,
    cropped: bool,
    scan: Scan | None = None,
    f: int = 1,
) -> tuple[_Circle | None, str]:
    """The primer edge as a circular height step on the working grid, and what was seen.

    ``cropped``: the field of view has a valid-data boundary of its own, so only the part of
    each candidate circle on valid data counts (a disc crop may cut across the edge), and
    the circle is refined on the full-resolution ``scan`` (downsampled by ``f``).
    """
    gy, gx = np.gradient(z, sp_lo)
    slope = np.hypot(gx, gy)
    # Uncropped, the holes (dropouts, often on the steep edge wall itself) are filled from
    # their neighbours as before: counting only measured pixels would hide the edge.
    if cropped:
        # narrow gaps (a confocal scan's steep edge wall drops out) count as seen: the step
        # is measured across them
        bridged = ndimage.binary_closing(vlo, iterations=2, border_value=0) | vlo
        visible = ndimage.binary_erosion(bridged, iterations=1, border_value=1)
    else:
        visible = np.ones_like(vlo, dtype=bool)
    if not np.isfinite(slope).all() or float(np.max(np.where(visible, slope, 0.0))) < 0.05:
        return None, "no height step at all (the surface is flat)"
    edge = (slope > EDGE_SLOPE) & visible
    rmin, rmax = (v / sp_lo for v in PRIMER_RADIUS_RANGE_M)
    # cropped: a short visible arc (a narrow disc, a confocal edge wall that dropped out)
    # covers less, and texture can win the Hough vote: the best few circles are each
    # checked for a step
    found = h.hough_circles(
        gx,
        gy,
        edge,
        rmin,
        rmax,
        visible=visible if cropped else None,
        min_visible=0.2,
        k=3 if cropped else 1,
    )
    min_cov = 0.25 if cropped else 0.4
    cands = [c for c in found if c[3] >= min_cov]
    if not cands and not cropped:
        # no circular crop to fall back on: a soft edge (a confocal edge wall that dropped
        # out, filled from its neighbours) may stay under the slope threshold over most of
        # the circle; it is looked for again at a lower one and must still step
        soft = h.hough_circles(gx, gy, (slope > SOFT_EDGE_SLOPE) & visible, rmin, rmax, k=1)
        cands = [c for c in soft if c[3] >= min_cov]
    if not cands:
        cov = found[0][3] if found else 0.0
        return None, f"no circular edge of primer size (best covers {100 * cov:.0f} %)"
    # a clear step (consistent sign, 5 x the slope) is taken at once; otherwise the
    # accepted circle that steps most clearly (a false circle through texture and the
    # crop can pass as a soft step ahead of a short, clear arc of the true edge)
    first: tuple[_Circle | None, str] | None = None
    best: tuple[float, _Circle, str] | None = None
    for hc in cands:
        circle, seen, clarity, clear = _check_step(z, visible, sp_lo, hc, cropped, scan, f)
        if circle is not None and clear:
            return circle, seen
        if circle is not None and (best is None or clarity > best[0]):
            best = (clarity, circle, seen)
        first = first or (circle, seen)
    if best is not None:
        return best[1], best[2]
    assert first is not None
    return first


def _check_step(
    z: np.ndarray,
    visible: np.ndarray,
    sp_lo: float,
    hc: tuple[float, float, float, float],
    cropped: bool,
    scan: Scan | None,
    f: int,
) -> tuple[_Circle | None, str, float, bool]:
    """Refine one Hough circle and keep it if the height steps across it.

    Returns (circle or None, what was seen, clarity = sign agreement times the step's ratio
    to the slope, whether the step is clear).

    A step is at least :data:`MIN_STEP_M`, with the sign
    of the median on 75 % of the visible rays and three times the surface's own slope --
    or, on a cropped field of view, 2.5 times with 95 % sign agreement (a soft step seen
    on a short arc) -- and 15 % of the circle visible (10 % for a clear, consistent step).
    """
    cx, cy, r, cov = hc
    cx, cy, r = h.refine_step_circle(z, cx, cy, r, visible=visible if cropped else None)
    delta = max(2.0, 75e-6 / sp_lo)
    if scan is not None:
        # a cropped field of view may show only an arc of the edge: refine it on the
        # full-resolution radial profiles of that arc (sub-pixel, so a short arc still
        # gives the centre); uncropped, a step flattened to a groove (photometric stereo)
        # has two walls, and the working grid picks either per ray
        step, _, _, _ = h.step_contrast(z, visible, cx, cy, r, delta)
        cx, cy, r = _refine_step_full(scan, f, (cx, cy, r), 1.0 if step >= 0 else -1.0)
    step, agree, ratio, vis = h.step_contrast(z, visible, cx, cy, r, delta)
    seen = (
        f"best circle r={r * sp_lo * 1e3:.2f} mm, {100 * vis:.0f} % visible, step "
        f"{step * 1e6:.1f} um, sign agreement {100 * agree:.0f} %, {ratio:.1f} x the slope"
    )
    lo, hi = PRIMER_RADIUS_RANGE_M
    if not lo <= r * sp_lo <= hi:  # refined away from primer size (onto the firing pin)
        return None, f"no primer-edge height step ({seen}; not of primer size)", 0.0, False
    clear = agree >= 0.95 and ratio >= 5.0
    steps = ratio >= 3.0 or (cropped and agree >= 0.95 and ratio >= 2.5)
    if abs(step) < MIN_STEP_M or agree < 0.75 or not steps or vis < (0.1 if clear else 0.15):
        return None, f"no primer-edge height step ({seen})", 0.0, False
    quality = cov * min(1.0, vis / 0.5)
    return _Circle(cx, cy, r, quality), seen, agree * min(ratio, 1e6), clear


def _find_primer_crescent(
    z: np.ndarray, vlo: np.ndarray, sp_lo: float, boundary: _Circle, scan: Scan, f: int
) -> _Circle | None:
    """The primer edge of a disc crop a little off the primer, from the crescent of case head.

    A disc a little narrower than the primer and off its centre keeps a thin crescent of
    the case head on one side; with the steep wall dropped out (confocal) the arc of the
    edge is too short and gapped for the Hough vote. The crescent is the valid data near
    the crop boundary that stands more than ``max(5 um, 6 sigma)`` off a robust plane of
    the inner disc; its edge towards the primer is fitted by a trimmed circle and checked
    as a step (:func:`_check_step`, refined on full-resolution profiles).
    """
    m, n = z.shape
    yy, xx = np.mgrid[:m, :n]
    rb = np.hypot(xx - boundary.cx, yy - boundary.cy)
    inner = vlo & (rb < 0.7 * boundary.r)
    if inner.sum() < 50:
        return None
    a0, a1, a2 = h.robust_plane(z, inner)
    hz = z - (a0 + a1 * yy + a2 * xx)
    res = hz[inner]
    sigma = 1.4826 * float(np.median(np.abs(res - np.median(res))))
    thr = max(5e-6, 6.0 * sigma)
    outer = vlo & (rb > 0.75 * boundary.r)
    for sign in (1.0, -1.0):
        cres = ndimage.binary_opening(outer & (sign * hz > thr), iterations=1)
        if cres.sum() < 20:
            continue
        # crescent pixels facing measured (or bridged-gap) primer, not the crop outside
        primer_side = ndimage.binary_closing(vlo, iterations=3) & ~cres
        edge = cres & ndimage.binary_dilation(primer_side, iterations=2)
        ys, xs = (v.astype(np.float64) for v in np.nonzero(edge))
        if xs.size < 12:
            continue
        cx, cy, r = h.robust_circle(xs, ys, h.fit_circle(xs, ys), 1.5)
        if not (math.isfinite(r) and r > 0):
            continue
        visible = ndimage.binary_erosion(
            ndimage.binary_closing(vlo, iterations=2, border_value=0) | vlo,
            iterations=1,
            border_value=1,
        )
        circle = _check_step(z, visible, sp_lo, (cx, cy, r, 0.5), True, scan, f)[0]
        if circle is not None:
            return circle
    return None


def _find_primer_ring(z: np.ndarray, sp_lo: float, scan: Scan, f: int) -> _Circle | None:
    """The primer edge of an uncropped scan as a ring of steep slopes, step or not.

    A photometric-stereo scan integrates saturated slope estimates: the primer's step
    flattens to a groove (or a step of ~1 um) whose walls are still the steepest closed
    ring of primer size. Hough circles (edge coverage >= 0.4) are refined on the mean
    absolute radial derivative of ``z`` (:func:`_segment_helpers.ring_energy_search`); a
    circle is kept when that mean is :data:`RING_MIN_RATIO` times the median of concentric
    circles over the breech face (0.55-0.85 of its radius), then refined on the
    full-resolution radial profiles (any wall of a groove is concentric with the edge).
    Returns the circle on the working grid with half its edge coverage as quality, or None.
    """
    gy, gx = np.gradient(z, sp_lo)
    slope = np.hypot(gx, gy)
    if not np.isfinite(slope).all():
        return None
    rmin, rmax = (v / sp_lo for v in PRIMER_RADIUS_RANGE_M)
    found = h.hough_circles(gx, gy, slope > 0.12, rmin, rmax, k=3)
    for cx0, cy0, r0, cov in found:
        if cov < 0.4:
            continue
        cx, cy, r, energy = h.ring_energy_search(z, (cx0, cy0, r0), 2.0, 0.5)
        ref = [h.ring_energy_search(z, (cx, cy, k * r), 0.0, 1.0)[3] for k in RING_REF_RADII]
        if energy < RING_MIN_RATIO * max(float(np.median(ref)), 1e-30):
            continue
        delta = max(2.0, 75e-6 / sp_lo)
        step = h.step_contrast(z, np.ones_like(z, dtype=bool), cx, cy, r, delta)[0]
        cx, cy, r = _refine_step_full(scan, f, (cx, cy, r), 1.0 if step >= 0 else -1.0)
        if PRIMER_RADIUS_RANGE_M[0] <= r * sp_lo <= PRIMER_RADIUS_RANGE_M[1]:
            return _Circle(cx, cy, r, 0.5 * cov)
    return None


RING_MIN_RATIO = 6.0
"""A ring of steep slopes is a primer edge when its mean absolute radial derivative is this
many times that of the breech face (photometric-stereo grooves: 25-45 on seeds 3, 5, 7)."""

RING_REF_RADII = (0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85)
"""Radii (fractions of the ring's) of the breech-face circles a ring is compared with."""


def _refine_step_full(
    scan: Scan, f: int, circle: tuple[float, float, float], sign: float, nang: int = 360
) -> tuple[float, float, float]:
    """Refine a working-grid step circle on full-resolution radial profiles.

    Along ``nang`` rays the profile within about three working pixels of the circle is
    smoothed (sigma 10 um) and the step is placed at the strongest slope of the step's
    ``sign`` (sub-sample, parabolic peak). Rays crossing invalid data are skipped; a trimmed
    circle fit of the step points gives the circle. Returns (cx, cy, r) on the working grid.
    """
    cx, cy, r = circle
    fcx, fcy, fr = (cx + 0.5) * f - 0.5, (cy + 0.5) * f - 0.5, r * f
    sp = math.sqrt(scan.spacing_m[0] * scan.spacing_m[1])
    w = 3.0 * f + 3.0
    dr = np.arange(-w, w + 0.01, 0.5)
    th = np.linspace(0, 2 * math.pi, nang, endpoint=False)
    rad = fr + dr
    px = fcx + np.cos(th)[:, None] * rad[None, :]
    py = fcy + np.sin(th)[:, None] * rad[None, :]
    data = np.where(scan.mask, scan.data, np.nan)
    prof = ndimage.map_coordinates(data, [py.ravel(), px.ravel()], order=1, cval=np.nan)
    prof = prof.reshape(nang, dr.size)
    ok = np.isfinite(prof).all(axis=1)
    if GAP_TOLERANT:
        # a steep edge wall that dropped out (confocal, focus variation) leaves a gap with
        # measured surface on both sides: bridged linearly, the step is in the gap
        fin = np.isfinite(prof)
        third = dr.size // 3
        both = (fin[:, :third].sum(axis=1) >= 3) & (fin[:, -third:].sum(axis=1) >= 3)
        gap = both & ~ok & (fin.mean(axis=1) >= 0.4)
        xs_ = np.arange(dr.size)
        for i in np.nonzero(gap)[0]:
            prof[i] = np.interp(xs_, xs_[fin[i]], prof[i, fin[i]])
        ok = ok | gap
    if ok.sum() < 24:
        return cx, cy, r
    sm = ndimage.gaussian_filter1d(prof[ok], max(1.0, 10e-6 / sp) * 2.0, axis=1)
    d = sign * np.diff(sm, axis=1)
    j = np.clip(np.argmax(d, axis=1), 1, d.shape[1] - 2)
    rows = np.arange(j.size)
    y0, y1, y2 = d[rows, j - 1], d[rows, j], d[rows, j + 1]
    den = y0 - 2 * y1 + y2
    frac = np.where(np.abs(den) > 1e-30, 0.5 * (y0 - y2) / np.where(den == 0, 1, den), 0.0)
    rj = fr + dr[j] + 0.25 + 0.5 * np.clip(frac, -1, 1)  # diff sits between two samples
    x = fcx + np.cos(th[ok]) * rj
    y = fcy + np.sin(th[ok]) * rj
    nx, ny, nr = h.robust_circle(x, y, h.fit_circle(x, y), 1.0)
    if not math.isfinite(nr) or abs(nr - fr) > w or math.hypot(nx - fcx, ny - fcy) > w:
        return cx, cy, r
    return (nx + 0.5) / f - 0.5, (ny + 0.5) / f - 0.5, nr / f


def _segment_topography(scan: Scan, zlo: np.ndarray, vlo: np.ndarray, f: int) -> Segmentation:
    sp = math.sqrt(scan.spacing_m[0] * scan.spacing_m[1])
    sp_lo = sp * f
    notes: list[str] = []
    boundary = _valid_boundary_circle(vlo, sp_lo)
    z = h.fill_nearest(zlo, vlo)
    z = ndimage.median_filter(z, size=3, mode="nearest")
    step, seen = _find_primer_step(z, vlo, sp_lo, boundary is not None, scan, f)
    if step is None and boundary is not None:
        step = _find_primer_crescent(z, vlo, sp_lo, boundary, scan, f) or None
    if step is not None:
        primer = step
        precropped = False
        style = "disc_fov" if boundary is not None else "case_head"
        if style == "disc_fov" and boundary is not None and boundary.r < step.r:
            notes.append("field of view cropped inside the primer edge: edge partly visible")
    elif boundary is None and (weak := _find_primer_ring(z, sp_lo, scan, f)) is not None:
        # nothing else to go on (no circular crop): photometric-stereo heights flatten the
        # step to a groove of steep walls (integrated saturated slopes); the ring of those
        # walls is taken, said, and trusted less
        primer = weak
        precropped = False
        style = "case_head"
        notes.append(
            f"weak primer-edge step ({seen}); the edge is the ring of steep slopes around it; "
            "confidence halved"
        )
    elif boundary is not None:
        primer = _Circle(boundary.cx, boundary.cy, boundary.r + 0.5, 0.8 * boundary.quality)
        precropped = True
        style = "breech_face_pin_present"  # or annulus_pin_invalid, decided by the pin
        notes.append("no primer-edge step; the valid-data boundary stands in for the primer edge")
    else:
        raise SegmentationError(
            "no breech face to compare: found no primer edge (a circular height step) and the "
            f"valid data ({100 * scan.valid_fraction:.0f} % of the frame) has no circular "
            f"boundary; saw {seen}"
        )
    pin = _find_pin_3d(scan, z, vlo, f, primer, boundary_is_primer=step is None)
    if pin is not None and pin.invalid_hole and precropped:
        style = "annulus_pin_invalid"
    if pin is not None and pin.note:
        notes.append(pin.note)
    return _finish(scan, f, primer, pin, style=style, precropped=precropped, notes=notes)


def _find_pin_3d(
    scan: Scan,
    z: np.ndarray,
    vlo: np.ndarray,
    f: int,
    primer: _Circle,
    *,
    boundary_is_primer: bool,
) -> _Pin | None:
    """The firing-pin impression: a depression, an enclosed invalid hole, or both."""
    sp_lo = math.sqrt(scan.spacing_m[0] * scan.spacing_m[1]) * f
    cx, cy, r = primer.cx, primer.cy, primer.r
    m, n = z.shape
    yy, xx = np.mgrid[:m, :n]
    rr = np.hypot(xx - cx, yy - cy)
    inner = rr < 0.8 * r
    # invalid holes: inside the primer, and (unless the valid boundary is the primer edge
    # itself) enclosed by valid data, so that a crop across the primer is not taken for one
    # (a boundary stand-in carries half a pixel beyond the fitted boundary: not for the hole)
    hole = ~vlo & (rr <= 0.92 * (r - 0.5 if boundary_is_primer else r))
    if not boundary_is_primer:
        hole &= ndimage.binary_fill_holes(vlo)
    hole = ndimage.binary_opening(hole, iterations=1)
    min_area = 0.5 * math.pi * (FP_RADIUS_RANGE_M[0] / sp_lo) ** 2
    # depression below a robust plane of the breech face
    ann = (rr > 0.45 * r) & (rr < 0.85 * r) & vlo
    a0, a1, a2 = h.robust_plane(z, ann)
    hz = z - (a0 + a1 * yy + a2 * xx)
    resid = hz[ann]
    sigma = 1.4826 * float(np.median(np.abs(resid - np.median(resid)))) if resid.size else 0.0
    thr_min = max(MIN_PIN_DEPTH_M, 8.0 * sigma)
    sel = inner & vlo
    deep_level = float(np.percentile(hz[sel], 0.5)) if sel.any() else 0.0
    deep = np.zeros_like(vlo)
    thr = 0.0
    if deep_level < -thr_min:
        thr = 0.3 * deep_level
        deep = (hz < thr) & inner & vlo
    cand = deep | hole
    if not cand.any():
        return None
    pin_lo = h.largest_component(cand, prefer=(cy, cx))
    if pin_lo.sum() < max(min_area, 4):
        return None
    py, px = ndimage.center_of_mass(pin_lo)
    if math.hypot(py - cy, px - cx) > 0.6 * r:
        return None
    invalid_share = float((pin_lo & ~vlo).sum() / pin_lo.sum())
    deep_share = float((pin_lo & deep).sum() / pin_lo.sum())
    if deep_share < 0.15:  # no dent, only a hole: the impression was masked, use its moments
        pin_lo = h.largest_component(hole, prefer=(cy, cx))
        fy, fx, major, minor, ang = h.moments(pin_lo)
        full = ((fy + 0.5) * f - 0.5, (fx + 0.5) * f - 0.5, major * f, minor * f, ang)
        return _Pin(pin_lo, full, True, 1.0)
    quality = min(1.0, 0.7 + 0.1 * abs(deep_level) / thr_min)
    note = None
    partial = invalid_share > 0.1
    if partial:
        note = (
            f"firing-pin impression {100 * invalid_share:.0f} % invalid; its centre and shape "
            "are fitted to the rim of the measured part"
        )
    full = _refine_pin_full(scan, f, pin_lo, (a0, a1, a2), thr, (cy, cx), partial=partial)
    return _Pin(pin_lo, full, False, quality, note)


def _refine_pin_full(
    scan: Scan,
    f: int,
    pin_lo: np.ndarray,
    plane: tuple[float, float, float],
    thr: float,
    prefer_lo: tuple[float, float],
    *,
    partial: bool = False,
) -> tuple[float, float, float, float, float]:
    """Firing-pin (row, col, major, minor, angle) at full resolution in its bounding box.

    The dent's moments; for a ``partial`` (partly invalid) impression, an ellipse fitted to
    the rim where the dent meets measured breech face (the invalid side has no rim).
    """
    rows, cols = np.nonzero(ndimage.binary_dilation(pin_lo, iterations=3))
    r0, r1 = rows.min() * f, (rows.max() + 1) * f
    c0, c1 = cols.min() * f, (cols.max() + 1) * f
    win = scan.data[r0:r1, c0:c1]
    wv = scan.mask[r0:r1, c0:c1]
    wy, wx = np.mgrid[r0:r1, c0:c1]
    lo_y = (wy + 0.5) / f - 0.5
    lo_x = (wx + 0.5) / f - 0.5
    pl = plane[0] + plane[1] * lo_y + plane[2] * lo_x
    up = h.upsample_mask(pin_lo, (pin_lo.shape[0] * f, pin_lo.shape[1] * f))[r0:r1, c0:c1]
    deep_valid = wv & (win - pl < thr)
    deep_full = ndimage.binary_closing(deep_valid | (~wv & up), iterations=2)
    deep_full = ndimage.binary_fill_holes(deep_full)
    pc_local = ((prefer_lo[0] + 0.5) * f - 0.5 - r0, (prefer_lo[1] + 0.5) * f - 0.5 - c0)
    comp = h.largest_component(np.asarray(deep_full), prefer=pc_local)
    if comp.sum() < 10:
        comp = up
    if partial:
        found = _fit_rim(comp, wv)
        if found is not None:
            ey, ex, major, minor, ang = found
            return ey + r0, ex + c0, major, minor, ang
    fy, fx, major, minor, ang = h.moments(comp)
    return fy + r0, fx + c0, major, minor, ang


def _fit_rim(
    comp: np.ndarray, valid: np.ndarray
) -> tuple[float, float, float, float, float] | None:
    """(row, col, major, minor, angle) of a partly measured firing-pin dent.

    The outline of the impression is where the measured breech face around it ends: on the
    measured side at the dent's *rim* (or at the outer edge of the band where a steep wall
    dropped out, as on a confocal scan), on the invalid side at the outline of the invalid
    patch. The two are told apart by thickness: the invalid patch survives a morphological
    opening by a fifth of the dent's radius, a dropped-out wall (a thin band) and speckle do
    not. A stadium (round pins are stadiums of length 0) is fitted to both outlines at once,
    with one centre, axis and length and a radius of its own for each (an invalid patch over
    an impression is often a little larger than the impression). A robust (soft-L1) fit;
    when it is not elongated, concentric circles are fitted the same way. The edge where the
    measured floor meets the invalid patch is never used: it is where the data stop, not
    where the impression does. ``comp`` is the dent and the invalid part together, ``valid``
    the measured pixels.
    """
    from scipy.optimize import least_squares

    st = h.region_stadium(comp)
    if st is None:
        return None
    cx, cy, half, b, th = st
    k = max(2, round(0.2 * b))
    # the invalid patch over the impression (thick), not the wall dropouts (thin)
    patch = ndimage.binary_opening(~valid, iterations=k) & ndimage.binary_dilation(
        comp, iterations=2
    )
    inner = comp | (~valid & ndimage.binary_dilation(comp, iterations=2))
    outside = valid & ~inner
    edge = inner & ndimage.binary_dilation(outside, iterations=1)
    hole_edge = edge & ndimage.binary_dilation(patch, iterations=2)
    # the opening rounds the patch's corners off: edge pixels near it are neither
    rim = edge & ~ndimage.binary_dilation(patch, iterations=k + 2)
    if rim.sum() < 20:
        return None
    ry, rx = (v.astype(np.float64) for v in np.nonzero(rim))
    hy, hx = (v.astype(np.float64) for v in np.nonzero(hole_edge))

    def resid(p: np.ndarray, hl: float | None = None) -> np.ndarray:
        hl_ = max(p[2], 0.0) if hl is None else hl
        r1 = h.stadium_distance(rx, ry, p[0], p[1], hl_, p[3], p[4])
        r2 = h.stadium_distance(hx, hy, p[0], p[1], hl_, p[5], p[4])
        return np.concatenate([r1, r2])

    lo = np.array([-np.inf, -np.inf, 0.0, 0.3 * b, -np.inf, 0.3 * b])
    hi = np.array([np.inf, np.inf, 3.0 * b + half, 3.0 * b, np.inf, 4.0 * b])
    p0 = np.clip(np.array([cx, cy, half, b, th, 1.1 * b]), lo + 1e-9, hi - 1e-9)
    fit = least_squares(resid, p0, bounds=(lo, hi), loss="soft_l1", f_scale=1.5)
    if not fit.success:
        return None
    fx, fy, fh, fb, ft = (float(v) for v in fit.x[:5])
    inside = 0 <= fy < comp.shape[0] and 0 <= fx < comp.shape[1]
    if inside and fh + fb > ELONGATION_THRESHOLD * fb:
        return fy, fx, fh + fb, fb, math.degrees(ft) % 180.0
    # round: where the dent's measured rim is clear of invalid data (the wall was measured),
    # it alone fixes a circle (a half circle is plenty); otherwise (the wall dropped out)
    # concentric circles through the outer edge of the dropout band and the patch outline
    clean = comp & valid & ~ndimage.binary_dilation(~valid, iterations=2)
    clean &= ndimage.binary_dilation(valid & ~comp, iterations=1)
    if clean.sum() >= 20:
        cy_, cx_ = (v.astype(np.float64) for v in np.nonzero(clean))
        ccx, ccy, cr = h.robust_circle(cx_, cy_, h.fit_circle(cx_, cy_), 1.5)
    else:
        keep = np.array([0, 1, 3, 5])
        q0 = np.clip(np.array([cx, cy, b, 1.1 * b]), lo[keep] + 1e-9, hi[keep] - 1e-9)
        circ = least_squares(
            lambda q: resid(np.array([q[0], q[1], 0.0, q[2], 0.0, q[3]]), 0.0),
            q0,
            bounds=(lo[keep], hi[keep]),
            loss="soft_l1",
            f_scale=1.5,
        )
        ccx, ccy, cr = (float(v) for v in circ.x[:3]) if circ.success else (math.nan,) * 3
    if not (math.isfinite(cr) and 0 <= ccy < comp.shape[0] and 0 <= ccx < comp.shape[1]):
        return None
    return ccy, ccx, cr, cr, 0.0


def _finish(
    scan: Scan,
    f: int,
    primer: _Circle,
    pin: _Pin | None,
    *,
    style: str,
    precropped: bool,
    notes: list[str],
) -> Segmentation:
    """Scale the coarse primer to full resolution, build the masks, classify the pin."""
    cy, cx, r = primer.cy, primer.cx, primer.r
    pcy, pcx, pr = (cy + 0.5) * f - 0.5, (cx + 0.5) * f - 0.5, r * f
    m, n = scan.shape
    sp = math.sqrt(scan.spacing_m[0] * scan.spacing_m[1])
    margin = 0.0 if precropped else max(0.03 * pr, 100e-6 / sp)
    primer_disc = h.disc((m, n), pcy, pcx, pr - margin)
    shear_mask: np.ndarray | None = None
    shear_ang: float | None = None
    if pin is None:
        notes.append("firing pin not found; breech face = whole annulus")
        bf = primer_disc & scan.mask
        seg_pin: tuple[Any, ...] = (None, None, None, None, None)
    else:
        fy, fx, major, minor, ang = pin.full
        shape = "elongated" if major > ELONGATION_THRESHOLD * max(minor, 1e-9) else "round"
        if pin.invalid_hole:  # the hole is already invalid: keep every valid annulus pixel
            pin_mask = h.upsample_mask(pin.lo, (m, n))
            pin_big = np.zeros((m, n), dtype=bool)
        else:
            pin_big = h.upsample_mask(ndimage.binary_dilation(pin.lo, iterations=2), (m, n))
            pin_mask = pin_big | h.disc((m, n), fy, fx, 0.9 * minor)
            pin_big = pin_mask
        bf = primer_disc & ~pin_big & scan.mask
        if scan.kind == "topography" and not pin.invalid_hole:
            found = _find_aperture_shear(scan, (fy, fx), pin_mask, minor, bf)
            if found is not None:
                shear_mask, shear_ang = found
                bf = bf & ~shear_mask
        seg_pin = ((float(fy), float(fx)), shape, float(major), (float(major), float(minor)), ang)
    area = float(bf.sum()) * scan.spacing_m[0] * scan.spacing_m[1]
    if area < MIN_BREECH_FACE_M2:
        raise SegmentationError(
            f"no breech face to compare: {area * 1e6:.2f} mm^2 of valid data inside the primer "
            f"(radius {pr * sp * 1e3:.2f} mm, style {style}) outside the firing pin; at least "
            f"{MIN_BREECH_FACE_M2 * 1e6:.1f} mm^2 is needed"
        )
    pin_q = 0.5 if pin is None else pin.quality
    return Segmentation(
        primer_center=(float(pcy), float(pcx)),
        primer_radius=float(pr),
        firing_pin_center=seg_pin[0],
        firing_pin_shape=seg_pin[1],
        firing_pin_radius=seg_pin[2],
        firing_pin_axes=seg_pin[3],
        firing_pin_angle_deg=None if seg_pin[4] is None else float(seg_pin[4]),
        precropped=precropped,
        breech_face_mask=bf,
        aperture_shear_mask=shear_mask,
        aperture_shear_angle_deg=shear_ang,
        style=style,
        firing_pin_found=pin is not None,
        confidence=float(np.clip(primer.quality * pin_q, 0.0, 1.0)),
        notes=tuple(notes),
    )


def _find_aperture_shear(
    scan: Scan,
    pin_center: tuple[float, float],
    pin_mask: np.ndarray,
    minor: float,
    bf: np.ndarray,
    nsect: int = 24,
) -> tuple[np.ndarray, float] | None:
    """Angular sector next to the pin whose fine texture is radially striated.

    ``pin_mask`` is the full-resolution firing-pin region. Compares, per angular sector
    around the pin centre, the share of tangential gradient energy of the high-passed
    surface in a ring just outside the pin (0-0.45 mm) with a ring further out
    (0.6-1.0 mm): aperture-shear striae run radially, so only the near ring of their
    sector is dominated by tangential gradients.
    """
    sp = math.sqrt(scan.spacing_m[0] * scan.spacing_m[1])
    fy, fx = pin_center
    rows, cols = np.nonzero(pin_mask)
    if rows.size == 0:
        return None
    pad = int(1.1e-3 / sp) + 2
    m, n = scan.shape
    r0, r1 = max(int(rows.min()) - pad, 0), min(int(rows.max()) + pad + 1, m)
    c0, c1 = max(int(cols.min()) - pad, 0), min(int(cols.max()) + pad + 1, n)
    if r1 - r0 < 16 or c1 - c0 < 16:
        return None
    wv = bf[r0:r1, c0:c1]
    z = np.where(wv, scan.data[r0:r1, c0:c1], 0.0).astype(np.float32)
    w = wv.astype(np.float32)
    s_hp = 15e-6 / sp
    low = cv2.GaussianBlur(z, (0, 0), s_hp) / np.maximum(cv2.GaussianBlur(w, (0, 0), s_hp), 1e-3)
    hp = np.where(wv, z - low, 0.0).astype(np.float32)
    gy, gx = np.gradient(hp)
    yy, xx = np.mgrid[r0:r1, c0:c1]
    dy, dx = (yy - fy).astype(np.float32), (xx - fx).astype(np.float32)
    rr = np.hypot(dx, dy) + 1e-6
    grad_r = (gx * dx + gy * dy) / rr
    grad_t = (-gx * dy + gy * dx) / rr
    et, er = grad_t * grad_t, grad_r * grad_r
    ang = np.arctan2(dy, dx)
    sect = ((ang + math.pi) / (2 * math.pi) * nsect).astype(np.int64) % nsect
    pm = pin_mask[r0:r1, c0:c1]
    dist = cv2.distanceTransform((~pm).astype(np.uint8), cv2.DIST_L2, 5) * sp
    near = wv & (dist < 0.45e-3)
    far = wv & (dist > 0.6e-3) & (dist < 1.0e-3)

    def frac(sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = np.bincount(sect[sel], weights=et[sel], minlength=nsect)
        q = np.bincount(sect[sel], weights=er[sel], minlength=nsect)
        cnt = np.bincount(sect[sel], minlength=nsect)
        return t / np.maximum(t + q, 1e-30), cnt

    fn, cn = frac(near)
    ff, _ = frac(far)
    score = np.where(cn > 30, fn - ff, -1.0)
    sm = (np.roll(score, 1) + 2 * score + np.roll(score, -1)) / 4
    k = int(np.argmax(sm))
    if _DEBUG:
        print("shear", np.round(fn, 2), np.round(ff, 2), k, sm[k])
    if sm[k] < SHEAR_MIN_SCORE:
        return None
    centers = (np.arange(nsect) + 0.5) / nsect * 2 * math.pi - math.pi
    idx = [(k - 1) % nsect, k, (k + 1) % nsect]
    wts = np.maximum(score[idx], 0) + 1e-9
    a = math.atan2(
        float(np.sum(wts * np.sin(centers[idx]))), float(np.sum(wts * np.cos(centers[idx])))
    )
    dang = np.abs(np.angle(np.exp(1j * (ang - a))))
    half_w = max(minor, 0.25e-3 / sp)
    band = near & (dang < math.pi / 2) & (rr * np.sin(dang) < half_w)
    out = np.zeros((m, n), dtype=bool)
    out[r0:r1, c0:c1] = band
    return out, math.degrees(a) % 360.0


_DEBUG = False
GAP_TOLERANT = True
SHEAR_MIN_SCORE = 0.12


# --------------------------------------------------------------------------------------
# 2-D


def _segment_image(scan: Scan, zlo: np.ndarray, vlo: np.ndarray, f: int) -> Segmentation:
    sp = math.sqrt(scan.spacing_m[0] * scan.spacing_m[1])
    sp_lo = sp * f
    z = h.fill_nearest(zlo, vlo)
    lo, hi = np.percentile(z, [1, 99])
    if hi - lo <= 1e-9:
        raise SegmentationError("image has no contrast: nothing to segment")
    z0 = np.clip((z - lo) / (hi - lo), 0, 1)
    z = cv2.GaussianBlur(z0.astype(np.float32), (0, 0), 1.0).astype(np.float64)
    gy, gx = np.gradient(z)
    mag = np.hypot(gx, gy)
    edge = mag > np.percentile(mag, 85)
    rmin, rmax = (v / sp_lo for v in PRIMER_RADIUS_RANGE_M)
    m, n = z.shape
    region = h.disc((m, n), (m - 1) / 2, (n - 1) / 2, 0.35 * min(m, n))
    found = h.hough_circles(gx, gy, edge, rmin, rmax, center_region=region, k=3)
    hc = found[0] if found else None
    if hc is None or hc[3] < 0.3:
        cov = 0.0 if hc is None else hc[3]
        raise SegmentationError(
            "image: no primer circle of plausible radius found (no ring of edges of "
            f"{PRIMER_RADIUS_RANGE_M[0] * 1e3:.1f}-{PRIMER_RADIUS_RANGE_M[1] * 1e3:.1f} mm "
            f"radius; the best covers {100 * cov:.0f} % of its circle)"
        )
    # Dense texture covers any circle with edges: the candidates are told apart, and
    # refined, by how much the unblurred image changes across them on average
    cov = hc[3]
    best = max(
        (h.ring_energy_search(z0, c[:3], PRIMER_2D_SEARCH_M / sp_lo, 1.0) for c in found),
        key=lambda t: t[3],
    )
    for window, step in ((1.0, 0.25), (0.25, 0.05)):
        best = h.ring_energy_search(z0, best[:3], window, step)
    cx, cy, r = best[:3]
    primer = _Circle(cx, cy, r, cov)
    pin = _find_pin_2d(z, primer, sp_lo, f)
    return _finish(scan, f, primer, pin, style="image", precropped=False, notes=[])


def _find_pin_2d(z: np.ndarray, primer: _Circle, sp_lo: float, f: int) -> _Pin | None:
    """The firing-pin impression of a 2-D image: the closed rim of strong shading edges.

    Whatever the light (ring, side, coaxial), the steep wall of the impression makes the
    strongest gradients inside the primer once the fine breech-face texture is blurred
    away. The rim is thinned (non-maximum suppression) and kept where the gradient is a
    good share of the strongest near the centre; a gradient Hough transform proposes
    circles (a round pin, or one end of an elongated one), each is grown into the stadium
    its rim covers best (:meth:`_segment_helpers.EdgeMap.grow`); closed outlines of the
    edges around each circle's centre (the outermost, and the innermost: the floor, or its
    bright spot, inside the rim) are candidates too; :func:`_outermost` picks the rim among
    them. ``z`` is the normalised working-grid image.
    """
    m, n = z.shape
    cx, cy, r = primer.cx, primer.cy, primer.r
    zb = cv2.GaussianBlur(z.astype(np.float32), (0, 0), PIN_2D_BLUR_M / sp_lo).astype(np.float64)
    gy, gx = (np.asarray(g_) for g_ in np.gradient(zb))
    g = np.hypot(gx, gy)
    near = h.disc((m, n), cy, cx, 0.75 * r)
    if not near.any():
        return None
    thr = PIN_2D_EDGE_FRACTION * float(np.percentile(g[near], 99.5))
    edge = h.ridge_edges(g, gx, gy, thr) & near
    fr = (FP_RADIUS_RANGE_M[0] / sp_lo, min(FP_RADIUS_RANGE_M[1] / sp_lo, 0.42 * r))
    max_len = FP_RADIUS_RANGE_M[1] / sp_lo
    inner = h.disc((m, n), cy, cx, 0.35 * r)
    em = h.EdgeMap(edge, gx, gy)
    cands: list[h.Stadium] = []
    for px, py, pr, _ in h.hough_circles(gx, gy, edge, *fr, center_region=inner, k=3):
        cands.append(em.refine(em.grow((px, py, pr), max(max_len - pr, 0.0)), max_len))
        # a Hough peak keeps only its most complete ring; under a coaxial light that is the
        # bright spot of the floor, and the rim is a concentric, larger ring of the same peak
        radii = np.arange(math.ceil(pr + PIN_2D_RING_GAP_PX), fr[1] + 1e-9, 1.0)
        if radii.size:
            cov_r = [em.coverage((px, py, 0.0, float(rr), 0.0)) for rr in radii]
            rr = float(radii[int(np.argmax(cov_r))])
            if max(cov_r) >= PIN_2D_MIN_COVERAGE:
                cands.append(em.refine(em.grow((px, py, rr), max(max_len - rr, 0.0)), max_len))
    # the outermost closed outline: under a directional light the lit floor of the
    # impression is a complete circle of its own, inside the rim
    closed = ndimage.binary_closing(edge, iterations=1)
    filled = ndimage.binary_fill_holes(closed)
    if cands:
        lab, _ = ndimage.label(filled)
        seeds = {int(lab[round(c[1]), round(c[0])]) for c in cands if _inside(c, m, n)}
        regions = [lab == k for k in seeds - {0}]
        # and the innermost closed outline around each candidate's centre: filling merges
        # the floor (or its bright spot) with the rim around it and a mark joining the rim
        # into one region, whose outline is then neither
        holes, _ = ndimage.label(filled & ~closed)
        inner_k = {int(holes[round(c[1]), round(c[0])]) for c in cands if _inside(c, m, n)}
        regions += [
            ndimage.binary_dilation(ndimage.binary_fill_holes(holes == k)) for k in inner_k - {0}
        ]
        for reg in regions:
            reg = ndimage.binary_opening(reg, iterations=2)
            st = h.region_stadium(h.largest_component(reg)) if reg.any() else None
            if st is not None and st[2] + st[3] <= max_len:
                cands.append(em.refine(st, max_len))
    scored = [(em.coverage(c), c) for c in cands]
    scored = [t for t in scored if t[0] >= PIN_2D_MIN_COVERAGE]
    if not scored:
        return None
    cov, (sx, sy, half, b, th) = _outermost(scored)
    yy, xx = np.mgrid[:m, :n]
    pin_lo = h.stadium_distance(xx, yy, sx, sy, half, b, th) <= 0
    full = (
        (sy + 0.5) * f - 0.5,
        (sx + 0.5) * f - 0.5,
        (half + b) * f,
        b * f,
        math.degrees(th) % 180.0,
    )
    return _Pin(pin_lo, full, False, min(1.0, 0.5 + cov))


PRIMER_2D_SEARCH_M = 200e-6
"""How far (centre per axis, and radius) the 2-D primer circle is sought around each Hough
candidate, metres."""

PIN_2D_BLUR_M = 37.5e-6
"""Gaussian blur (sigma, metres) before the 2-D firing-pin search: hides breech-face texture."""

PIN_2D_EDGE_FRACTION = 0.3
"""2-D pin rim: gradient above this share of the strongest (99.5th percentile) near the
primer centre."""

PIN_2D_MIN_COVERAGE = 0.3
"""Least share of a 2-D firing-pin candidate's boundary covered by rim edges."""

PIN_2D_RIM_COVERAGE = 0.8
"""A well-covered 2-D outline that encloses the best-covered one is the rim when this much of
its boundary is covered."""


PIN_2D_RING_GAP_PX = 3.0
"""Least gap (working pixels, 75 um) between a 2-D Hough ring and the concentric rim sought
around it: the floor's bright spot of a shallow impression reaches 0.8 of the rim radius."""


PIN_2D_CONCENTRIC_RIM_COVERAGE = 0.7
"""As :data:`PIN_2D_RIM_COVERAGE`, for an outline concentric with the enclosed one: the floor's
bright spot under a coaxial or ring light corroborates the rim around it, whose wall may be
partly hidden where a mark next to the impression joins it."""


def _outermost(scored: list[tuple[float, h.Stadium]]) -> tuple[float, h.Stadium]:
    """The rim among scored (coverage, stadium) outlines.

    Start from the best-covered outline; while a larger outline (1.3 times the area at
    least) covered at least :data:`PIN_2D_RIM_COVERAGE` (one concentric with it,
    :data:`PIN_2D_CONCENTRIC_RIM_COVERAGE`) encloses it (its boundary at most a fifth of
    the larger radius, and 1.5 px at least, outside), take the smallest such, a concentric
    one if there is any: under a directional light the lit floor of the impression is a
    complete outline of its own, inside the rim, and so is the bright spot of its floor
    under a ring or coaxial light; a mark joining the rim from outside makes larger
    outlines, never smaller ones. Between a floor spot and its rim, an off-centre outline
    touching the spot on one side and the rim on the other is covered nearly as well as
    either and encloses the spot too, but only the rim shares the spot's centre: of the
    concentric ones, those within half a pixel of the least centre offset are taken first.
    Once an outline was taken as concentric with the one it encloses (a rim around its
    floor or floor spot), only a concentric outline may replace it: an off-centre one
    enclosing it is the rim joined by a mark beside the impression.
    """

    def area(st: h.Stadium) -> float:
        return st[3] * (math.pi * st[3] + 4 * st[2])

    def encloses(outer: h.Stadium, inner: h.Stadium) -> bool:
        x, y, _, _ = h.stadium_boundary(*inner)
        return float(np.max(h.stadium_distance(x, y, *outer))) <= max(1.5, 0.2 * outer[3])

    def offset(outer: h.Stadium, inner: h.Stadium) -> float:
        return math.hypot(outer[0] - inner[0], outer[1] - inner[1])

    def concentric(outer: h.Stadium, inner: h.Stadium) -> bool:
        return offset(outer, inner) <= max(1.5, 0.1 * outer[3])

    best = max(scored, key=lambda t: t[0])
    centred = False  # whether best was taken as concentric with the outline it encloses
    while True:
        bigger = [
            t
            for t in scored
            if t[0]
            >= (
                PIN_2D_CONCENTRIC_RIM_COVERAGE if concentric(t[1], best[1]) else PIN_2D_RIM_COVERAGE
            )
            and area(t[1]) > 1.3 * area(best[1])
            and encloses(t[1], best[1])
            # a rim found around its floor (spot) is left only for a concentric outline: an
            # off-centre one enclosing both is the rim joined by a mark beside it
            and (not centred or concentric(t[1], best[1]))
        ]
        if not bigger:
            return best
        # concentric ones first: an off-centre outline between the floor's spot and the rim
        # can ride on the spot on one side and on the rim on the other, and both enclose the
        # spot; the rim shares the spot's centre (ring or coaxial light)
        pool = [t for t in bigger if concentric(t[1], best[1])]
        if pool:
            # the most concentric (to half a pixel): an outline riding the spot on one side and
            # the rim on the other can pass as concentric too, but lies off the spot's centre
            off = [offset(t[1], best[1]) for t in pool]
            pool = [t for t, o in zip(pool, off, strict=True) if o <= min(off) + 0.5]
        # the innermost: marks next to the impression (drag mark, aperture shear) can only
        # add outlines outside the rim, never inside it
        best = min(pool or bigger, key=lambda t: area(t[1]))
        centred = bool(pool)


def _inside(st: h.Stadium, m: int, n: int) -> bool:
    return 0 <= round(st[1]) < m and 0 <= round(st[0]) < n
