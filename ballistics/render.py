"""2-D oblique-light rendering of a topography (the "2-D image" path)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from .errors import BallisticsError
from .scan import Scan


def _fill_nan(z: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill invalid pixels by normalised convolution (repeated at growing scales)."""
    if mask.all():
        return z
    out = np.where(mask, z, 0.0).astype(np.float32)
    w = mask.astype(np.float32)
    filled = out.copy()
    todo = ~mask
    sigma = 2.0
    while todo.any() and sigma < max(z.shape):
        num = cv2.GaussianBlur(out, (0, 0), sigma)
        den = cv2.GaussianBlur(w, (0, 0), sigma)
        ok = todo & (den > 1e-3)
        filled[ok] = num[ok] / den[ok]
        todo &= ~ok
        sigma *= 2.0
    if todo.any():
        filled[todo] = float(np.mean(out[mask])) if mask.any() else 0.0
    return filled.astype(np.float64)


def _gradient(scan: Scan) -> tuple[np.ndarray, np.ndarray]:
    z = _fill_nan(scan.data, scan.mask)
    gy, gx = np.gradient(z, *scan.spacing_m)
    return gy, gx


def _shade(
    gy: np.ndarray, gx: np.ndarray, azimuth_deg: float, elevation_deg: float, ambient: float
) -> np.ndarray:
    """Lambertian shading of slopes (gy, gx) for one light direction, scaled to 0..1."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    lx, ly, lz = math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)
    shade = (-gx * lx - gy * ly + lz) / np.sqrt(gx * gx + gy * gy + 1.0)
    return np.clip((np.clip(shade, 0.0, 1.0) + ambient) / (1.0 + ambient), 0.0, 1.0)


def render_oblique(
    scan: Scan,
    *,
    azimuth_deg: float = 135.0,
    elevation_deg: float = 30.0,
    ambient: float = 0.05,
) -> Scan:
    """Render a topography as a side-lit (oblique, Lambertian) 2-D image.

    Parameters
    ----------
    scan : Scan
        ``kind="topography"``, heights in metres.
    azimuth_deg : float
        Direction the light comes *from*, degrees counter-clockwise from the +col axis in
        (x = col, y = row) coordinates.
    elevation_deg : float
        Light elevation above the surface plane, degrees (low = grazing side light).
    ambient : float
        Constant added to the diffuse term before scaling to 0..1.

    Returns
    -------
    Scan
        ``kind="image"``, intensity in 0..1, same shape, spacing and mask as ``scan``.
    """
    if scan.kind != "topography":
        raise BallisticsError(f"render_oblique needs a topography scan; got kind={scan.kind!r}")
    if not scan.mask.any():
        raise BallisticsError("render_oblique: the scan has no valid data")
    gy, gx = _gradient(scan)
    img = np.where(scan.mask, _shade(gy, gx, azimuth_deg, elevation_deg, ambient), np.nan)
    params = {"azimuth_deg": azimuth_deg, "elevation_deg": elevation_deg, "ambient": ambient}
    return scan.evolve("render_oblique", params, data=img, mask=scan.mask.copy(), kind="image")


def render_ring_light(
    scan: Scan, *, elevation_deg: float = 30.0, azimuths: int = 12, ambient: float = 0.05
) -> Scan:
    """Render a topography as lit by a low-angle ring light (oblique light from all sides).

    The mean of :func:`render_oblique` over ``azimuths`` equally spaced directions. Like the
    ring light of IBIS-style 2-D breech-face acquisition, the shading does not depend on how
    the casing is turned, so 2-D images of one casing at two rotations differ by a rotation.

    Returns
    -------
    Scan
        ``kind="image"``, intensity in 0..1, same shape, spacing and mask as ``scan``.
    """
    if azimuths < 3:
        raise BallisticsError(f"render_ring_light needs at least 3 azimuths; got {azimuths}")
    views = [
        render_oblique(
            scan, azimuth_deg=360.0 * k / azimuths, elevation_deg=elevation_deg, ambient=ambient
        )
        for k in range(azimuths)
    ]
    img = np.mean([v.data for v in views], axis=0)
    params = {"elevation_deg": elevation_deg, "azimuths": azimuths, "ambient": ambient}
    return scan.evolve("render_ring_light", params, data=img, mask=scan.mask.copy(), kind="image")
