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
    found = hough_circles(
        gx,
        gy,
        edge,
        rmin,
        rmax,
        center_region=center_region,
        visible=visible,
        min_visible=min_visible,
        nbins=nbins,
        k=1,
    )
    return found[0] if found else None


def hough_circles(
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
    k: int = 1,
    peaks: int = 4,
) -> list[tuple[float, float, float, float]]:
    """The ``k`` most complete circles among the strongest ``peaks`` accumulator peaks.

    As :func:`hough_circle` (which is this with ``k=1``), best first.
    """
    ys, xs = np.nonzero(edge)
    if xs.size < 12:
        return []
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
    found: list[tuple[float, tuple[float, float, float, float]]] = []
    # examine the strongest few accumulator peaks
    a3 = a2.copy()
    for _ in range(peaks):
        j = int(np.argmax(a3))
        py, px = divmod(j, n)
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
        jb = int(np.argmax(score))
        found.append((float(score[jb]), (float(px), float(py), float(rmin + jb), float(cov[jb]))))
    found.sort(key=lambda t: -t[0])
    out = []
    for _, (cx0, cy0, r0, c) in found[:k]:
        keep = np.abs(np.hypot(xs - cx0, ys - cy0) - r0) < 3.0
        if keep.sum() >= 8:
            cx0, cy0, r0 = robust_circle(xs[keep], ys[keep], (cx0, cy0, r0), 1.5)
        out.append((cx0, cy0, r0, c))
    return out


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


# --------------------------------------------------------------------------------------
# stadium (elongated firing pin) fits


def stadium_boundary(
    cx: float, cy: float, half_len: float, b: float, theta: float, step: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Points and outward unit normals along a stadium's boundary, about ``step`` apart.

    The stadium is the set of points within ``b`` of the segment of half-length
    ``half_len`` through (``cx``, ``cy``) along the angle ``theta`` (radians, x = col,
    y = row); a circle when ``half_len`` is 0. Returns (x, y, nx, ny).
    """
    d = np.array([math.cos(theta), math.sin(theta)])
    nrm = np.array([-d[1], d[0]])
    xs, ys, nxs, nys = [], [], [], []
    if half_len > 0:
        t = np.arange(-half_len, half_len, step) + step / 2
        for s in (1.0, -1.0):
            xs.append(cx + t * d[0] + s * b * nrm[0])
            ys.append(cy + t * d[1] + s * b * nrm[1])
            nxs.append(np.full(t.size, s * nrm[0]))
            nys.append(np.full(t.size, s * nrm[1]))
    k = max(math.ceil(math.pi * b / step), 8)
    phi = (np.arange(k) + 0.5) / k * math.pi - math.pi / 2
    for s in (1.0, -1.0):
        ux = s * (np.cos(phi) * d[0] + np.sin(phi) * nrm[0])
        uy = s * (np.cos(phi) * d[1] + np.sin(phi) * nrm[1])
        xs.append(cx + s * half_len * d[0] + b * ux)
        ys.append(cy + s * half_len * d[1] + b * uy)
        nxs.append(ux)
        nys.append(uy)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(nxs), np.concatenate(nys)


def stadium_distance(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, half_len: float, b: float, theta: float
) -> np.ndarray:
    """Signed distance of points (``x`` = col, ``y`` = row) from a stadium's boundary
    (negative inside); parameters as for :func:`stadium_boundary`."""
    c, s = math.cos(theta), math.sin(theta)
    u = c * (x - cx) + s * (y - cy)
    v = -s * (x - cx) + c * (y - cy)
    du = np.maximum(np.abs(u) - half_len, 0.0)
    return np.asarray(np.hypot(du, v) - b)


Stadium = tuple[float, float, float, float, float]
"""(cx, cy, half_len, b, theta): centre (col, row), segment half-length and radius in
pixels, axis angle in radians (x = col, y = row), as for :func:`stadium_boundary`."""


class EdgeMap:
    """Edge pixels with their gradient directions, for scoring and fitting outlines.

    Parameters
    ----------
    edge : ndarray of shape (M, N), bool
        Edge pixels.
    gx, gy : ndarray of shape (M, N)
        Image gradient along columns and rows.
    tol : float
        A boundary point is covered by an edge pixel within ``tol`` pixels whose gradient is
        within ~37 degrees of the boundary normal (either sign: light may come from any side).
    """

    def __init__(self, edge: np.ndarray, gx: np.ndarray, gy: np.ndarray, tol: float = 1.5):
        self.edge = edge
        self.tol = tol
        self.dist, (self.iy, self.ix) = ndimage.distance_transform_edt(~edge, return_indices=True)
        g = np.hypot(gx, gy) + 1e-30
        self.ux, self.uy = gx / g, gy / g

    def covered(self, x: np.ndarray, y: np.ndarray, nx: np.ndarray, ny: np.ndarray) -> np.ndarray:
        """Bool array: is each point (col ``x``, row ``y``, normal (nx, ny)) covered."""
        m, n = self.edge.shape
        jx, jy = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
        inside = (jx >= 0) & (jx < n) & (jy >= 0) & (jy < m)
        jx, jy = np.where(inside, jx, 0), np.where(inside, jy, 0)
        ey, ex = self.iy[jy, jx], self.ix[jy, jx]
        along = np.abs(self.ux[ey, ex] * nx + self.uy[ey, ex] * ny) >= 0.8
        return np.asarray(inside & (self.dist[jy, jx] <= self.tol) & along)

    def coverage(self, st: Stadium) -> float:
        """Share of a stadium's boundary covered by edge pixels, 0..1."""
        return float(self.covered(*stadium_boundary(*st)).mean())

    def grow(
        self,
        circle: tuple[float, float, float],
        max_half_len: float,
        *,
        n_angles: int = 72,
        min_gain: float = 0.08,
    ) -> Stadium:
        """The stadium grown from one circle whose boundary is covered best.

        A gradient Hough transform finds one end of an elongated (stadium-shaped) firing-pin
        impression as a circle (cx, cy, r); this extends it along every direction
        (``n_angles`` steps) by up to ``2 * max_half_len`` pixels, one end cap staying on
        the circle. A stadium longer than the circle must cover at least ``min_gain`` more
        of its boundary (texture next to a round pin should not stretch it).
        """
        px, py, pr = circle
        best: Stadium = (px, py, 0.0, pr, 0.0)
        c0 = self.coverage(best)
        best_c = c0
        kc = max(math.ceil(math.pi * pr), 8)
        phi = (np.arange(kc) + 0.5) / kc * math.pi - math.pi / 2
        ext = np.arange(1.0, 2 * max_half_len + 1e-9, 1.0)
        if not ext.size:
            return best
        t = ext - 0.5  # side samples, one per pixel of extension
        for k in range(n_angles):
            th = 2 * math.pi * k / n_angles
            d = np.array([math.cos(th), math.sin(th)])
            nrm = np.array([-d[1], d[0]])
            ucap = np.cos(phi)[:, None] * d + np.sin(phi)[:, None] * nrm  # (kc, 2)
            back = self.covered(
                px - pr * ucap[:, 0], py - pr * ucap[:, 1], -ucap[:, 0], -ucap[:, 1]
            )
            sides = np.zeros(t.size)
            for sgn in (1.0, -1.0):
                sides += self.covered(
                    px + t * d[0] + sgn * pr * nrm[0],
                    py + t * d[1] + sgn * pr * nrm[1],
                    np.full(t.size, sgn * nrm[0]),
                    np.full(t.size, sgn * nrm[1]),
                )
            fx = px + ext[:, None] * d[0] + pr * ucap[None, :, 0]
            fy = py + ext[:, None] * d[1] + pr * ucap[None, :, 1]
            ux = np.broadcast_to(ucap[:, 0], fx.shape)
            uy = np.broadcast_to(ucap[:, 1], fx.shape)
            front = self.covered(fx, fy, ux, uy).sum(axis=1)
            # coverage of every extension e at once
            cov = (back.sum() + np.cumsum(sides) + front) / (2 * kc + 2 * ext)
            j = int(np.argmax(cov))
            if cov[j] > best_c and cov[j] >= c0 + min_gain:
                e = float(ext[j])
                best = (px + d[0] * e / 2, py + d[1] * e / 2, e / 2, pr, th % math.pi)
                best_c = float(cov[j])
        return best

    def refine(self, st: Stadium, max_half_len: float) -> Stadium:
        """Robust least-squares fit of a stadium's boundary to the edge pixels near it.

        Edge pixels within ``2 * tol`` of the boundary take part (soft-L1 loss); the fit is
        kept when its centre moves by less than the radius.
        """
        from scipy.optimize import least_squares

        cx, cy, hl, b, th = st
        ys, xs = np.nonzero(self.edge)
        xf, yf = xs.astype(np.float64), ys.astype(np.float64)
        sel = np.abs(stadium_distance(xf, yf, cx, cy, hl, b, th)) <= 2 * self.tol
        if sel.sum() < 12:
            return st
        x, y = xf[sel], yf[sel]

        def resid(p: np.ndarray) -> np.ndarray:
            return stadium_distance(x, y, p[0], p[1], max(p[2], 0.0), p[3], p[4])

        lo = np.array([-np.inf, -np.inf, 0.0, 0.5 * b, -np.inf])
        hi = np.array([np.inf, np.inf, max(max_half_len, hl + 1.0), 1.5 * b, np.inf])
        p0 = np.clip(np.array([cx, cy, hl, b, th]), lo + 1e-9, hi - 1e-9)
        fit = least_squares(resid, p0, bounds=(lo, hi), loss="soft_l1", f_scale=self.tol)
        if not fit.success or math.hypot(fit.x[0] - cx, fit.x[1] - cy) >= b:
            return st
        fx, fy, fh, fb, ft = (float(v) for v in fit.x)
        return fx, fy, fh, fb, ft % math.pi


def region_stadium(region: np.ndarray) -> Stadium | None:
    """A stadium of the same centre, axis and second moments as a binary region.

    For a stadium of half-length L and radius b, the variance across the axis is b^2/4 for a
    disc and b^2/3 for the rectangle; along it, the rectangle adds L^2/3. Solved for (L, b)
    from the region's area and its variance across the axis (approximately).
    """
    if region.sum() < 5:
        return None
    cy, cx, _major, minor, ang = moments(region)
    area = float(region.sum())
    # area = pi b^2 + 4 L b; choose b from the minor axis (moments give 2 sqrt(var))
    b = max(minor, 1.0)
    half = max((area - math.pi * b * b) / (4 * b), 0.0)
    if half < 0.5:
        b = math.sqrt(area / math.pi)
        half = 0.0
    return cx, cy, half, b, math.radians(ang) % math.pi


def ridge_edges(g: np.ndarray, gx: np.ndarray, gy: np.ndarray, threshold: float) -> np.ndarray:
    """Thin edges: pixels of gradient magnitude ``g`` above ``threshold`` that are local
    maxima across the edge (non-maximum suppression along the gradient direction,
    quantised to 8 neighbours)."""
    ang = np.arctan2(gy, gx)
    q = np.rint(ang / (math.pi / 4)).astype(np.int64) % 4  # 0: x, 1: diagonal, 2: y, 3: anti
    offsets = ((0, 1), (1, 1), (1, 0), (1, -1))
    gp = np.pad(g, 1, mode="edge")
    m, n = g.shape
    keep = np.zeros((m, n), dtype=bool)
    for k, (dy, dx) in enumerate(offsets):
        a = gp[1 + dy : 1 + dy + m, 1 + dx : 1 + dx + n]
        b = gp[1 - dy : 1 - dy + m, 1 - dx : 1 - dx + n]
        keep |= (q == k) & (g >= a) & (g >= b)
    return keep & (g > threshold)


def ring_energy_search(
    z: np.ndarray,
    circle: tuple[float, float, float],
    window: float,
    step: float,
    *,
    nang: int = 360,
) -> tuple[float, float, float, float]:
    """The circle near ``circle`` along which the image changes most across, on average.

    Every circle whose centre is within ``window`` pixels (per axis, on a grid of ``step``)
    of the given one and whose radius is within ``window`` of its radius is scored by the
    mean over ``nang`` rays of the absolute radial derivative of ``z`` where it crosses the
    ray. Unlike edge coverage, which dense texture saturates, the mean grows only where
    the image changes across the circle over much of its length: a primer edge seen under
    any light (a dark or bright ring, or a step whose sign turns with a side light).

    Parameters
    ----------
    z : ndarray of shape (M, N)
        Image (or heights), finite.
    circle : tuple of float
        (cx, cy, r) start, pixels.
    window, step : float
        Search half-width and grid step, pixels.

    Returns
    -------
    tuple of float
        (cx, cy, r, score): the best circle and its mean absolute radial derivative.
    """
    cx0, cy0, r0 = circle
    th = (np.arange(nang) + 0.5) / nang * 2 * math.pi
    c, s = np.cos(th), np.sin(th)
    drho = min(step, 0.5) / 2
    span = 2 * window + 2 * drho
    rho = np.arange(r0 - span, r0 + span + 1e-9, drho)
    prof = ndimage.map_coordinates(
        z,
        [cy0 + s[:, None] * rho[None, :], cx0 + c[:, None] * rho[None, :]],
        order=1,
        mode="nearest",
    )
    energy = np.abs(np.gradient(prof, drho, axis=1))
    offs = np.arange(-window, window + 1e-9, step)
    k = np.rint((r0 + offs - rho[0]) / drho).astype(np.int64)  # radius index offsets
    rows = np.arange(nang)[:, None]
    best = (cx0, cy0, r0, -1.0)
    for dy in offs:
        for dx in offs:
            base = (dx * c + dy * s) / drho  # (nang,) shift of the circle along each ray
            idx = np.clip(np.rint(base)[:, None].astype(np.int64) + k[None, :], 0, rho.size - 1)
            score = energy[rows, idx].mean(axis=0)
            j = int(np.argmax(score))
            if score[j] > best[3]:
                best = (cx0 + dx, cy0 + dy, r0 + offs[j], float(score[j]))
    return best
