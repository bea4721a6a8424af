"""Image primitives of :mod:`ballistics.segment`: circle fits, a gradient Hough transform,
region moments, masks. Pure functions on low-resolution working grids (pixels)."""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import ndimage


def downsample(data: np.ndarray, mask: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
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


def fill_nearest(z: np.ndarray, valid: np.ndarray) -> np.ndarray:
    if valid.all():
        return z
    if not valid.any():
        return np.zeros_like(z)
    idx = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
    return np.asarray(z[tuple(idx)])


def fit_circle(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Algebraic (Kasa) least-squares circle; returns (cx, cy, r)."""
    a = np.column_stack([x, y, np.ones_like(x)])
    b = x * x + y * y
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    cx, cy = sol[0] / 2, sol[1] / 2
    r = math.sqrt(max(sol[2] + cx * cx + cy * cy, 0.0))
    return float(cx), float(cy), r


def robust_circle(
    x: np.ndarray, y: np.ndarray, init: tuple[float, float, float], tol: float
) -> tuple[float, float, float]:
    """Trimmed circle fit starting from ``init``: refit on points within ``tol`` of it."""
    cx, cy, r = init
    for t in (3 * tol, 2 * tol, tol):
        d = np.abs(np.hypot(x - cx, y - cy) - r)
        keep = d < t
        if keep.sum() < 8:
            break
        cx, cy, r = fit_circle(x[keep], y[keep])
    return cx, cy, r


def hough_circle(
    gx: np.ndarray,
    gy: np.ndarray,
    edge: np.ndarray,
    rmin: float,
    rmax: float,
    *,
    center_region: np.ndarray | None = None,
    visible: np.ndarray | None = None,
    min_visible: float = 0.25,
    nbins: int = 72,
) -> tuple[float, float, float, float] | None:
    """Gradient Hough transform for the most complete circle with rmin <= r <= rmax.

    Returns (cx, cy, r, coverage) in pixels of the given grid, coverage in 0..1. With
    ``visible`` (bool mask of where an edge could be seen at all), coverage counts only the
    angular bins whose circle point is visible, and circles with less than ``min_visible``
    of their length visible are not considered: a field of view cropped across the primer
    edge shows only an arc of it.
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
        if visible is None:
            cov = occ.mean(axis=1)
        else:
            vis = _visible_bins(visible, px, py, rmin + np.arange(nr + 2), nbins)
            nvis = vis.sum(axis=1)
            cov = (occ & vis).sum(axis=1) / np.maximum(nvis, 1)
            cov = np.where(nvis >= min_visible * nbins, cov, 0.0)
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
        cx, cy, r0 = robust_circle(xs[keep], ys[keep], (cx, cy, r0), 1.5)
    return cx, cy, r0, c


def _visible_bins(
    visible: np.ndarray, px: float, py: float, radii: np.ndarray, nbins: int
) -> np.ndarray:
    """(len(radii), nbins) bool: is the circle point of each radius and angle bin visible."""
    ang = (np.arange(nbins) + 0.5) / nbins * 2 * math.pi - math.pi
    x = np.rint(px + radii[:, None] * np.cos(ang)[None, :]).astype(np.int64)
    y = np.rint(py + radii[:, None] * np.sin(ang)[None, :]).astype(np.int64)
    m, n = visible.shape
    inside = (x >= 0) & (x < n) & (y >= 0) & (y < m)
    out = np.zeros(x.shape, dtype=bool)
    out[inside] = visible[y[inside], x[inside]]
    return out


def points_visible(visible: np.ndarray, py: np.ndarray, px: np.ndarray) -> np.ndarray:
    """Bool array: is the nearest pixel of each point (row ``py``, col ``px``) visible."""
    iy, ix = np.rint(py).astype(np.int64), np.rint(px).astype(np.int64)
    m, n = visible.shape
    ok = (iy >= 0) & (iy < m) & (ix >= 0) & (ix < n)
    out = np.zeros(iy.shape, dtype=bool)
    out[ok] = visible[iy[ok], ix[ok]]
    return out


def step_contrast(
    z: np.ndarray,
    visible: np.ndarray,
    cx: float,
    cy: float,
    r: float,
    delta: float,
    nang: int = 180,
) -> tuple[float, float, float, float]:
    """How much a circle looks like a height step (the primer edge) in ``z``.

    Along ``nang`` rays, compares the height ``delta`` pixels outside the circle with the
    height ``delta`` inside (the step), and the latter with the height ``2 * delta`` further
    in (the slope of the surface itself, a texture/noise reference), where all three points
    are visible.

    Returns
    -------
    step : float
        Median outside-minus-inside height difference (units of ``z``).
    agreement : float
        Fraction of visible rays whose step has the sign of the median.
    ratio : float
        ``|step|`` over the median absolute reference difference (inf when that is 0).
    visible_fraction : float
        Fraction of rays with all three points visible.
    """
    th = (np.arange(nang) + 0.5) / nang * 2 * math.pi
    c, s = np.cos(th), np.sin(th)
    radii = (r + delta, r - delta, r - 3 * delta)
    pts = [(cy + s * q, cx + c * q) for q in radii]
    vis = np.ones(nang, dtype=bool)
    for py, px in pts:
        vis &= points_visible(visible, py, px)
    if vis.sum() < 8:
        return 0.0, 0.0, 0.0, float(vis.mean())
    out, inn, ref = (
        ndimage.map_coordinates(z, [py[vis], px[vis]], order=1, mode="nearest") for py, px in pts
    )
    d = out - inn
    step = float(np.median(d))
    agree = float(np.mean(np.sign(d) == np.sign(step))) if step != 0 else 0.0
    noise = float(np.median(np.abs(inn - ref)))
    ratio = abs(step) / noise if noise > 0 else math.inf
    return step, agree, ratio, float(vis.mean())


def moments(mask: np.ndarray) -> tuple[float, float, float, float, float]:
    """(row, col, major semi-axis, minor semi-axis, angle deg) of a binary region."""
    ys, xs = np.nonzero(mask)
    cy, cx = float(ys.mean()), float(xs.mean())
    cov = np.cov(np.vstack([xs - cx, ys - cy])) if xs.size > 2 else np.eye(2)
    w, v = np.linalg.eigh(cov)
    w = np.maximum(w, 1e-12)
    major, minor = 2.0 * math.sqrt(w[1]), 2.0 * math.sqrt(w[0])
    ang = math.degrees(math.atan2(v[1, 1], v[0, 1])) % 180.0
    return cy, cx, major, minor, ang


def largest_component(mask: np.ndarray, prefer: tuple[float, float] | None = None) -> np.ndarray:
    lab, k = ndimage.label(mask)
    if k == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(lab.ravel())[1:].astype(np.float64)
    if prefer is not None:
        com = ndimage.center_of_mass(mask, lab, range(1, k + 1))
        d = np.array([math.hypot(c[0] - prefer[0], c[1] - prefer[1]) for c in com])
        sizes = sizes / (1.0 + (d / max(math.sqrt(sizes.max()), 1.0)) ** 2)
    return np.asarray(lab == (int(np.argmax(sizes)) + 1))


def disc(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return np.asarray((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)


def upsample_mask(m: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    out = cv2.resize(m.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return np.asarray(out > 0)


def robust_plane(z: np.ndarray, sel: np.ndarray, f: float = 1.0) -> tuple[float, float, float]:
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


def refine_step_circle(
    z: np.ndarray,
    cx: float,
    cy: float,
    r: float,
    nang: int = 180,
    *,
    visible: np.ndarray | None = None,
) -> tuple[float, float, float]:
    """Refine a circle on the position of the largest radial height change along rays.

    With ``visible``, only rays whose circle point is visible take part.
    """
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
    seen = np.ones(nang, dtype=bool)
    if visible is not None:
        seen = points_visible(visible, cy + np.sin(th) * r, cx + np.cos(th) * r)
        if seen.sum() < 20:
            return cx, cy, r
    ok = seen & (strength > 0.25 * np.median(strength[seen]))
    rj = r + (dr[j] + dr[j + 1]) / 2
    x = cx + np.cos(th) * rj
    y = cy + np.sin(th) * rj
    if ok.sum() < 20:
        return cx, cy, r
    return robust_circle(x[ok], y[ok], fit_circle(x[ok], y[ok]), 1.0)
