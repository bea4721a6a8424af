"""Find the primer, the firing-pin impression and the aperture-shear band on a casing scan.

Works on raw 3-D topographies (case head around the primer), on scans already cropped to
the breech face (an annulus of valid data, e.g. the processed Fadul X3P files), and on 2-D
images (``kind="image"``: oblique renders, ring-light photographs).

Method (all on a downsampled copy at ~25 um per pixel, then refined):

* **Primer**: edge pixels (gradient magnitude of the height or intensity) vote for circle
  centres along their gradient direction (a gradient Hough transform); the best centre's
  radius is the distance histogram peak with the widest angular coverage; a trimmed
  least-squares circle fit and a radial-profile refinement at finer resolution follow.
  Pre-cropped scans: the convex hull of the valid data, fit as a circle.
* **Firing pin**: the deepest connected region inside the primer after removing a robust
  plane (topography), or the invalid hole (pre-cropped), or a second Hough circle (images);
  its image moments give the centre, the semi-axes, the angle and the shape class.
* **Aperture shear**: the angular sector just outside the firing-pin impression where the
  high-pass surface is striated along the radial direction markedly more than further out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from .errors import SegmentationError
from .scan import Scan

WORK_SPACING_M = 25e-6
"""Working pixel spacing of the coarse search, metres."""

PRIMER_RADIUS_RANGE_M = (1.4e-3, 3.2e-3)
"""Plausible primer radii (small pistol 2.2 mm, large pistol 2.65 mm; processed scans
cropped inside the edge can be smaller)."""

FP_RADIUS_RANGE_M = (0.2e-3, 1.1e-3)
ELONGATION_THRESHOLD = 1.4
"""Major/minor axis ratio above which a firing-pin impression is called elongated."""


@dataclass(frozen=True, eq=False)
class Segmentation:
    """Where the marks are on one scan (pixel coordinates of that scan).

    Attributes
    ----------
    primer_center : tuple of float
        (row, col) in pixels.
    primer_radius : float
        Pixels.
    firing_pin_center : tuple of float
        (row, col) in pixels.
    firing_pin_shape : {"round", "elongated"}
    firing_pin_radius : float
        Half the major axis, pixels.
    firing_pin_axes : tuple of float
        (major, minor) semi-axes, pixels.
    firing_pin_angle_deg : float
        Angle of the major axis, degrees counter-clockwise from +col in (x = col, y = row)
        coordinates, in [0, 180).
    precropped : bool
        True when the scan was already cropped to the breech face (passed through).
    breech_face_mask : ndarray of shape (M, N), bool
        Valid pixels of the breech-face annulus (inside the primer, outside the firing pin).
    aperture_shear_mask : ndarray of shape (M, N), bool, or None
        The aperture-shear band, when one was found.
    aperture_shear_angle_deg : float or None
        Direction from the firing-pin centre to the shear band (same convention).
    """

    primer_center: tuple[float, float]
    primer_radius: float
    firing_pin_center: tuple[float, float]
    firing_pin_shape: str
    firing_pin_radius: float
    firing_pin_axes: tuple[float, float]
    firing_pin_angle_deg: float
    precropped: bool
    breech_face_mask: np.ndarray
    aperture_shear_mask: np.ndarray | None = None
    aperture_shear_angle_deg: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (plain floats, no masks)."""
        return {
            "primer_center": [float(self.primer_center[0]), float(self.primer_center[1])],
            "primer_radius": float(self.primer_radius),
            "firing_pin_center": [
                float(self.firing_pin_center[0]),
                float(self.firing_pin_center[1]),
            ],
            "firing_pin_shape": self.firing_pin_shape,
            "firing_pin_radius": float(self.firing_pin_radius),
            "firing_pin_axes": [float(self.firing_pin_axes[0]), float(self.firing_pin_axes[1])],
            "firing_pin_angle_deg": float(self.firing_pin_angle_deg),
            "precropped": bool(self.precropped),
            "breech_face_pixels": int(self.breech_face_mask.sum()),
            "aperture_shear": self.aperture_shear_mask is not None,
            "aperture_shear_angle_deg": (
                None
                if self.aperture_shear_angle_deg is None
                else float(self.aperture_shear_angle_deg)
            ),
        }


# --------------------------------------------------------------------------------------
# helpers


def _downsample(data: np.ndarray, mask: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    """Block mean of valid pixels (factor ``f``); returns (values, valid fraction)."""
    if f <= 1:
        return np.where(mask, data, 0.0), mask.astype(np.float64)
    m, n = data.shape
    mm, nn = (m // f) * f, (n // f) * f
    d = np.where(mask[:mm, :nn], data[:mm, :nn], 0.0).reshape(mm // f, f, nn // f, f)
    w = mask[:mm, :nn].reshape(mm // f, f, nn // f, f).astype(np.float64)
    ws = w.sum(axis=(1, 3))
    vs = d.sum(axis=(1, 3))
    out = np.divide(vs, ws, out=np.zeros_like(vs), where=ws > 0)
    return out, ws / (f * f)


def _fill_nearest(z: np.ndarray, valid: np.ndarray) -> np.ndarray:
    if valid.all():
        return z
    if not valid.any():
        return np.zeros_like(z)
    idx = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
    return np.asarray(z[tuple(idx)])


def _fit_circle(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Algebraic (Kasa) least-squares circle; returns (cx, cy, r)."""
    a = np.column_stack([x, y, np.ones_like(x)])
    b = x * x + y * y
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    cx, cy = sol[0] / 2, sol[1] / 2
    r = math.sqrt(max(sol[2] + cx * cx + cy * cy, 0.0))
    return float(cx), float(cy), r


def _robust_circle(
    x: np.ndarray, y: np.ndarray, init: tuple[float, float, float], tol: float
) -> tuple[float, float, float]:
    """Trimmed circle fit starting from ``init``: refit on points within ``tol`` of it."""
    cx, cy, r = init
    for t in (3 * tol, 2 * tol, tol):
        d = np.abs(np.hypot(x - cx, y - cy) - r)
        keep = d < t
        if keep.sum() < 8:
            break
        cx, cy, r = _fit_circle(x[keep], y[keep])
    return cx, cy, r


def _hough_circle(
    gx: np.ndarray,
    gy: np.ndarray,
    edge: np.ndarray,
    rmin: float,
    rmax: float,
    *,
    center_region: np.ndarray | None = None,
    nbins: int = 72,
) -> tuple[float, float, float, float] | None:
    """Gradient Hough transform for the most complete circle with rmin <= r <= rmax.

    Returns (cx, cy, r, coverage) in pixels of the given grid, coverage in 0..1.
    """
    ys, xs = np.nonzero(edge)
    if xs.size < 12:
        return None
    g = np.hypot(gx[ys, xs], gy[ys, xs]) + 1e-30
    ux, uy = gx[ys, xs] / g, gy[ys, xs] / g
    m, n = edge.shape
    radii = np.arange(math.floor(rmin), math.ceil(rmax) + 1, 1.0)
    acc = np.zeros(m * n, dtype=np.float64)
    for sign in (1.0, -1.0):
        cx = xs[:, None] + sign * ux[:, None] * radii[None, :]
        cy = ys[:, None] + sign * uy[:, None] * radii[None, :]
        ix = np.rint(cx).astype(np.int64).ravel()
        iy = np.rint(cy).astype(np.int64).ravel()
        ok = (ix >= 0) & (ix < n) & (iy >= 0) & (iy < m)
        acc += np.bincount(iy[ok] * n + ix[ok], minlength=m * n)
    a2 = cv2.GaussianBlur(acc.reshape(m, n).astype(np.float32), (0, 0), 1.0)
    if center_region is not None:
        a2 = np.where(center_region, a2, 0.0).astype(np.float32)
    best: tuple[float, float, float, float] | None = None
    best_score = -1.0
    # examine the strongest few accumulator peaks
    a3 = a2.copy()
    for _ in range(4):
        k = int(np.argmax(a3))
        py, px = divmod(k, n)
        if a3[py, px] <= 0:
            break
        y0, y1 = max(py - 6, 0), min(py + 7, m)
        x0, x1 = max(px - 6, 0), min(px + 7, n)
        a3[y0:y1, x0:x1] = 0
        d = np.hypot(xs - px, ys - py)
        sel = (d >= rmin) & (d <= rmax)
        if sel.sum() < 12:
            continue
        # radius = the 1-px distance bin with the widest angular coverage
        ang = np.arctan2(ys[sel] - py, xs[sel] - px)
        ab = ((ang + math.pi) / (2 * math.pi) * nbins).astype(np.int64) % nbins
        rb = np.rint(d[sel] - rmin).astype(np.int64)
        nr = int(rb.max()) + 1
        occ = np.zeros((nr + 2, nbins), dtype=bool)
        for dr in (-1, 0, 1):  # a 3-px wide ring
            rr = np.clip(rb + dr, 0, nr + 1)
            occ[rr, ab] = True
        cov = occ.mean(axis=1)
        counts = np.bincount(rb, minlength=nr + 2)
        score = cov + 1e-4 * np.convolve(counts, np.ones(3), "same")[: nr + 2]
        j = int(np.argmax(score))
        r0 = rmin + j
        c = float(cov[j])
        if score[j] > best_score:
            best_score = float(score[j])
            best = (float(px), float(py), float(r0), c)
    if best is None:
        return None
    cx, cy, r0, c = best
    keep = np.abs(np.hypot(xs - cx, ys - cy) - r0) < 3.0
    if keep.sum() >= 8:
        cx, cy, r0 = _robust_circle(xs[keep], ys[keep], (cx, cy, r0), 1.5)
    return cx, cy, r0, c


def _moments(mask: np.ndarray) -> tuple[float, float, float, float, float]:
    """(row, col, major semi-axis, minor semi-axis, angle deg) of a binary region."""
    ys, xs = np.nonzero(mask)
    cy, cx = float(ys.mean()), float(xs.mean())
    cov = np.cov(np.vstack([xs - cx, ys - cy])) if xs.size > 2 else np.eye(2)
    w, v = np.linalg.eigh(cov)
    w = np.maximum(w, 1e-12)
    major, minor = 2.0 * math.sqrt(w[1]), 2.0 * math.sqrt(w[0])
    ang = math.degrees(math.atan2(v[1, 1], v[0, 1])) % 180.0
    return cy, cx, major, minor, ang


def _largest_component(mask: np.ndarray, prefer: tuple[float, float] | None = None) -> np.ndarray:
    lab, k = ndimage.label(mask)
    if k == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(lab.ravel())[1:].astype(np.float64)
    if prefer is not None:
        com = ndimage.center_of_mass(mask, lab, range(1, k + 1))
        d = np.array([math.hypot(c[0] - prefer[0], c[1] - prefer[1]) for c in com])
        sizes = sizes / (1.0 + (d / max(math.sqrt(sizes.max()), 1.0)) ** 2)
    return np.asarray(lab == (int(np.argmax(sizes)) + 1))


def _disc(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return np.asarray((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)


def _upsample_mask(m: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    out = cv2.resize(m.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return np.asarray(out > 0)


def _robust_plane(z: np.ndarray, sel: np.ndarray, f: float = 1.0) -> tuple[float, float, float]:
    """Plane a + b*row + c*col fit by trimmed least squares over ``sel``."""
    ys, xs = np.nonzero(sel)
    if ys.size < 10:
        return float(np.median(z[sel])) if ys.size else 0.0, 0.0, 0.0
    if ys.size > 20000:
        step = ys.size // 20000 + 1
        ys, xs = ys[::step], xs[::step]
    v = z[ys, xs]
    a = np.column_stack([np.ones(ys.size), ys * f, xs * f])
    keep = np.ones(ys.size, dtype=bool)
    coef = np.zeros(3)
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(a[keep], v[keep], rcond=None)
        res = v - a @ coef
        mad = float(np.median(np.abs(res[keep] - np.median(res[keep])))) + 1e-15
        keep = np.abs(res) < 3.5 * 1.4826 * mad
        if keep.sum() < 10:
            break
    return float(coef[0]), float(coef[1]), float(coef[2])


# --------------------------------------------------------------------------------------
# the public entry point


def segment(scan: Scan) -> Segmentation:
    """Locate the primer, the firing-pin impression and the aperture-shear band.

    Parameters
    ----------
    scan : Scan
        A raw topography of the case head, a topography already cropped to the breech face
        (detected automatically and passed through), or a 2-D image (``kind="image"``).

    Returns
    -------
    Segmentation
        Pixel coordinates of ``scan``.

    Raises
    ------
    SegmentationError
        When the scan has too little valid data, or no primer edge or firing pin is found.
    """
    if scan.valid_fraction < 0.05:
        raise SegmentationError(
            f"scan has only {100 * scan.valid_fraction:.1f} % valid pixels; nothing to segment"
        )
    sy, sx = scan.spacing_m
    sp = math.sqrt(sy * sx)
    f = max(1, round(WORK_SPACING_M / sp))
    zlo, wlo = _downsample(scan.data, scan.mask, f)
    vlo = wlo > 0.5
    if min(zlo.shape) < 16:
        raise SegmentationError(f"scan of {scan.shape} pixels is too small to segment")
    if scan.kind == "topography" and _looks_precropped(vlo):
        return _segment_precropped(scan, vlo, f)
    if scan.kind == "image":
        return _segment_image(scan, zlo, vlo, f)
    return _segment_raw(scan, zlo, vlo, f)


def _looks_precropped(vlo: np.ndarray) -> bool:
    """True when the valid data is a disc/annulus inside the frame (corners empty)."""
    m, n = vlo.shape
    b = max(2, min(m, n) // 10)
    corners = np.concatenate(
        [vlo[:b, :b].ravel(), vlo[:b, -b:].ravel(), vlo[-b:, :b].ravel(), vlo[-b:, -b:].ravel()]
    )
    return bool(corners.mean() < 0.2 and vlo.mean() < 0.9)


def _primer_radius_px(sp_lo: float) -> tuple[float, float]:
    return PRIMER_RADIUS_RANGE_M[0] / sp_lo, PRIMER_RADIUS_RANGE_M[1] / sp_lo


def _segment_raw(scan: Scan, zlo: np.ndarray, vlo: np.ndarray, f: int) -> Segmentation:
    sp = math.sqrt(scan.spacing_m[0] * scan.spacing_m[1])
    sp_lo = sp * f
    z = _fill_nearest(zlo, vlo)
    z = ndimage.median_filter(z, size=3, mode="nearest")
    gy, gx = np.gradient(z, sp_lo)
    slope = np.hypot(gx, gy)
    if not np.isfinite(slope).all() or float(np.nanmax(slope)) < 0.05:
        raise SegmentationError("no height step found: the scan looks flat (no primer edge)")
    edge = slope > 0.12
    rmin, rmax = _primer_radius_px(sp_lo)
    hc = _hough_circle(gx, gy, edge, rmin, rmax)
    if hc is None or hc[3] < 0.4:
        raise SegmentationError(
            "primer edge not found: no circular height step of plausible radius "
            f"({PRIMER_RADIUS_RANGE_M[0] * 1e3:.1f}-{PRIMER_RADIUS_RANGE_M[1] * 1e3:.1f} mm)"
        )
    cx, cy, r, _ = hc
    cx, cy, r = _refine_step_circle(z, cx, cy, r)

    # firing pin: deepest connected region inside the primer, after a robust plane
    m, n = z.shape
    yy, xx = np.mgrid[:m, :n]
    rr = np.hypot(xx - cx, yy - cy)
    ann = (rr > 0.45 * r) & (rr < 0.85 * r) & vlo
    a0, a1, a2 = _robust_plane(z, ann)
    h = z - (a0 + a1 * yy + a2 * xx)
    inner = rr < 0.8 * r
    deep_level = float(np.percentile(h[inner & vlo], 0.5)) if (inner & vlo).any() else 0.0
    if deep_level > -30e-6:
        raise SegmentationError(
            "firing-pin impression not found: nothing inside the primer is deeper than 30 um"
        )
    thr = 0.3 * deep_level
    pin_lo = _largest_component((h < thr) & inner, prefer=(cy, cx))
    if pin_lo.sum() < 4:
        raise SegmentationError("firing-pin impression not found inside the primer")
    # refine the firing pin at full resolution inside its bounding box
    rows, cols = np.nonzero(ndimage.binary_dilation(pin_lo, iterations=3))
    r0, r1 = rows.min() * f, (rows.max() + 1) * f
    c0, c1 = cols.min() * f, (cols.max() + 1) * f
    win = scan.data[r0:r1, c0:c1]
    wv = scan.mask[r0:r1, c0:c1]
    wy, wx = np.mgrid[r0:r1, c0:c1]
    lo_y = (wy + 0.5) / f - 0.5
    lo_x = (wx + 0.5) / f - 0.5
    plane = a0 + a1 * lo_y + a2 * lo_x
    deep_full = wv & (win - plane < thr)
    deep_full = ndimage.binary_closing(deep_full, iterations=2)
    deep_full = ndimage.binary_fill_holes(deep_full)
    pc_local = ((cy + 0.5) * f - 0.5 - r0, (cx + 0.5) * f - 0.5 - c0)
    comp = _largest_component(np.asarray(deep_full), prefer=pc_local)
    if comp.sum() < 10:
        comp = _upsample_mask(pin_lo, (pin_lo.shape[0] * f, pin_lo.shape[1] * f))[r0:r1, c0:c1]
    fy, fx, major, minor, ang = _moments(comp)
    fy += r0
    fx += c0
    return _finish(scan, f, (cy, cx, r), (fy, fx, major, minor, ang), pin_lo, precropped=False)


def _refine_step_circle(
    z: np.ndarray, cx: float, cy: float, r: float, nang: int = 180
) -> tuple[float, float, float]:
    """Refine a circle on the position of the largest radial height change along rays."""
    th = np.linspace(0, 2 * math.pi, nang, endpoint=False)
    dr = np.arange(-5.0, 5.01, 0.25)
    rad = r + dr
    px = cx + np.cos(th)[:, None] * rad[None, :]
    py = cy + np.sin(th)[:, None] * rad[None, :]
    prof = ndimage.map_coordinates(z, [py.ravel(), px.ravel()], order=1, mode="nearest")
    prof = prof.reshape(nang, dr.size)
    d = np.abs(np.diff(prof, axis=1))
    d = ndimage.uniform_filter1d(d, 3, axis=1)
    j = np.argmax(d, axis=1)
    strength = d[np.arange(nang), j]
    ok = strength > 0.25 * np.median(strength)
    rj = r + (dr[j] + dr[j + 1]) / 2
    x = cx + np.cos(th) * rj
    y = cy + np.sin(th) * rj
    if ok.sum() < 20:
        return cx, cy, r
    return _robust_circle(x[ok], y[ok], _fit_circle(x[ok], y[ok]), 1.0)


def _finish(
    scan: Scan,
    f: int,
    primer_lo: tuple[float, float, float],
    pin_full: tuple[float, float, float, float, float],
    pin_lo: np.ndarray,
    *,
    precropped: bool,
) -> Segmentation:
    """Scale the coarse primer to full resolution, build the masks, classify the pin."""
    cy, cx, r = primer_lo
    pcy, pcx, pr = (cy + 0.5) * f - 0.5, (cx + 0.5) * f - 0.5, r * f
    fy, fx, major, minor, ang = pin_full
    shape = "elongated" if major > ELONGATION_THRESHOLD * max(minor, 1e-9) else "round"
    m, n = scan.shape
    sp = math.sqrt(scan.spacing_m[0] * scan.spacing_m[1])
    margin = 0.0 if precropped else max(0.03 * pr, 100e-6 / sp)
    primer_disc = _disc((m, n), pcy, pcx, pr - margin)
    if precropped:  # the hole is already invalid: keep every valid pixel of the annulus
        pin_full_mask = _upsample_mask(pin_lo, (m, n))
        pin_big = np.zeros((m, n), dtype=bool)
    else:
        pin_big = _upsample_mask(ndimage.binary_dilation(pin_lo, iterations=2), (m, n))
        pin_full_mask = pin_big | _disc((m, n), fy, fx, 0.9 * minor)
        pin_big = pin_full_mask
    bf = primer_disc & ~pin_big & scan.mask
    shear_mask: np.ndarray | None = None
    shear_ang: float | None = None
    if scan.kind == "topography" and not precropped:
        found = _find_aperture_shear(scan, (fy, fx), pin_full_mask, minor, bf)
        if found is not None:
            shear_mask, shear_ang = found
            bf = bf & ~shear_mask
    return Segmentation(
        primer_center=(float(pcy), float(pcx)),
        primer_radius=float(pr),
        firing_pin_center=(float(fy), float(fx)),
        firing_pin_shape=shape,
        firing_pin_radius=float(major),
        firing_pin_axes=(float(major), float(minor)),
        firing_pin_angle_deg=float(ang),
        precropped=precropped,
        breech_face_mask=bf,
        aperture_shear_mask=shear_mask,
        aperture_shear_angle_deg=shear_ang,
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
SHEAR_MIN_SCORE = 0.12


def _segment_precropped(scan: Scan, vlo: np.ndarray, f: int) -> Segmentation:
    opened = ndimage.binary_opening(vlo, iterations=1)
    comp = _largest_component(opened)
    if comp.sum() < 50:
        raise SegmentationError("pre-cropped scan: too little connected valid data")
    pts = cv2.findNonZero(comp.astype(np.uint8))
    hull = cv2.convexHull(pts).reshape(-1, 2).astype(np.float64)
    # sample the hull polygon densely so that long edges weigh by their length
    xs_l, ys_l = [], []
    for i in range(len(hull)):
        p, q = hull[i], hull[(i + 1) % len(hull)]
        k = max(int(np.hypot(*(q - p))), 1)
        t = np.arange(k) / k
        xs_l.append(p[0] + t * (q[0] - p[0]))
        ys_l.append(p[1] + t * (q[1] - p[1]))
    x, y = np.concatenate(xs_l), np.concatenate(ys_l)
    cx, cy, r = _robust_circle(x, y, _fit_circle(x, y), 2.0)
    m, n = vlo.shape
    hole = ~vlo & _disc((m, n), cy, cx, 0.92 * r)
    hole = ndimage.binary_opening(hole, iterations=1)
    pin_lo = _largest_component(hole, prefer=(cy, cx))
    if pin_lo.sum() < 4:
        raise SegmentationError("pre-cropped scan: no firing-pin hole inside the valid annulus")
    fy, fx, major, minor, ang = _moments(pin_lo)
    to_full = (
        (fy + 0.5) * f - 0.5,
        (fx + 0.5) * f - 0.5,
        major * f,
        minor * f,
        ang,
    )
    return _finish(scan, f, (cy, cx, r + 0.5), to_full, pin_lo, precropped=True)


def _segment_image(scan: Scan, zlo: np.ndarray, vlo: np.ndarray, f: int) -> Segmentation:
    sp = math.sqrt(scan.spacing_m[0] * scan.spacing_m[1])
    sp_lo = sp * f
    z = _fill_nearest(zlo, vlo)
    lo, hi = np.percentile(z, [1, 99])
    if hi - lo <= 1e-9:
        raise SegmentationError("image has no contrast: nothing to segment")
    z = np.clip((z - lo) / (hi - lo), 0, 1)
    z = cv2.GaussianBlur(z.astype(np.float32), (0, 0), 1.0).astype(np.float64)
    gy, gx = np.gradient(z)
    mag = np.hypot(gx, gy)
    edge = mag > np.percentile(mag, 85)
    rmin, rmax = _primer_radius_px(sp_lo)
    m, n = z.shape
    region = _disc((m, n), (m - 1) / 2, (n - 1) / 2, 0.35 * min(m, n))
    hc = _hough_circle(gx, gy, edge, rmin, rmax, center_region=region)
    if hc is None or hc[3] < 0.3:
        raise SegmentationError("image: no primer circle of plausible radius found")
    cx, cy, r, _ = hc
    cx, cy, r = _refine_step_circle(z, cx, cy, r)
    fr = (FP_RADIUS_RANGE_M[0] / sp_lo, min(FP_RADIUS_RANGE_M[1] / sp_lo, 0.42 * r))
    inner = _disc((m, n), cy, cx, 0.35 * r)
    hp = _hough_circle(gx, gy, edge & _disc((m, n), cy, cx, 0.75 * r), *fr, center_region=inner)
    if hp is None:
        raise SegmentationError("image: no firing-pin impression found inside the primer")
    px, py, pr, _ = hp
    pin_lo = _disc((m, n), py, px, pr)
    # shape: ellipse fit to the edge pixels near the pin circle
    ys, xs = np.nonzero(edge)
    near = np.abs(np.hypot(xs - px, ys - py) - pr) < max(0.25 * pr, 2.0)
    major = minor = pr
    ang = 0.0
    if near.sum() >= 12:
        _, (w1, w2), a = cv2.fitEllipse(np.column_stack([xs[near], ys[near]]).astype(np.float32))
        if 0.5 * pr < min(w1, w2) / 2 and max(w1, w2) / 2 < 2.0 * pr:
            major, minor = max(w1, w2) / 2, min(w1, w2) / 2
            ang = (a if w1 >= w2 else a + 90.0) % 180.0
    to_full = ((py + 0.5) * f - 0.5, (px + 0.5) * f - 0.5, major * f, minor * f, ang)
    return _finish(scan, f, (cy, cx, r), to_full, pin_lo, precropped=False)
