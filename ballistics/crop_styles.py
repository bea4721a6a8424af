"""The cropping styles real labs save, made from a raw synthetic scan, with ground truth.

A raw scan from :func:`ballistics.synth.fire` shows the whole case head around the primer.
Labs and scanners save other fields of view; each function here turns a raw scan and its
:class:`~ballistics.synth.Truth` into one of them and carries the ground truth (primer and
firing-pin centres) into the new scan's pixels:

* :func:`case_head` - the raw scan unchanged (style a).
* :func:`disc_fov` - NaN outside a circle a little wider than the primer, or a little
  narrower and off-centre so that the primer edge is only partly visible (style b).
* :func:`annulus_pin_invalid` - the breech-face annulus cropped inside the primer edge with
  the firing-pin impression masked invalid, as in the processed Fadul files (style c).
* :func:`breech_face_pin_present` - cropped inside the primer edge, the firing-pin dent kept
  (style d).
* :func:`pin_partly_invalid`, :func:`scale_pin_depth` - a partial, shallow or absent firing
  pin (style e), applied on top of any of the above.

:func:`styled_variants` draws a seeded mix of all of them for a benchmark or a test. All
functions are pure: the input scan is never modified.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .scan import Scan
from .synth import Truth

STYLES: tuple[str, ...] = (
    "case_head",
    "disc_fov",
    "annulus_pin_invalid",
    "breech_face_pin_present",
)
"""Expected segmentation styles of the crops made here (see ``Segmentation.style``)."""


@dataclass(frozen=True, eq=False)
class StyledScan:
    """A cropped synthetic scan and its ground truth in its own pixels.

    Attributes
    ----------
    variant : str
        Name of the crop, e.g. ``"disc_fov_narrow"`` or ``"pin_absent"``.
    style : str
        The segmentation style this crop should be recognised as (one of :data:`STYLES`).
    scan : Scan
        The cropped scan (``kind="topography"``).
    primer_center : tuple of float
        True primer centre (row, col), pixels of ``scan``.
    primer_radius_px : float
        True primer radius, pixels.
    fp_center : tuple of float
        True firing-pin centre (row, col), pixels of ``scan``.
    fp_shape : str
        ``"round"`` or ``"elongated"``.
    pin_expected : bool
        Whether enough of the firing-pin impression is left for a segmentation to find it.
    params : dict
        Parameters of the crop (radii as fractions of the primer radius, offsets in pixels).
    """

    variant: str
    style: str
    scan: Scan
    primer_center: tuple[float, float]
    primer_radius_px: float
    fp_center: tuple[float, float]
    fp_shape: str
    pin_expected: bool = True
    params: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# helpers


def _pin_rho(shape: tuple[int, int], truth_center: tuple[float, float], t: Truth) -> np.ndarray:
    """Normalised stadium distance of every pixel from the firing-pin impression.

    ``rho < 1`` inside the impression (the stadium of :func:`ballistics.synth.fire`):
    ``t.fp_axes_px`` gives (semi-major, semi-minor), ``t.fp_angle_deg`` the major axis.
    """
    a, b = t.fp_axes_px
    phi = math.radians(t.fp_angle_deg)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    dx, dy = xx - truth_center[1], yy - truth_center[0]
    pu = math.cos(phi) * dx + math.sin(phi) * dy
    pv = -math.sin(phi) * dx + math.cos(phi) * dy
    du = np.maximum(np.abs(pu) - (a - b), 0.0)
    return np.asarray(np.sqrt(du * du + pv * pv) / b)


def _crop(
    s: StyledScan, keep: np.ndarray, step: str, params: dict[str, Any], margin_px: int = 4
) -> StyledScan:
    """Invalidate pixels outside ``keep`` and crop the array to their bounding box."""
    mask = s.scan.mask & keep
    rows, cols = np.nonzero(keep)
    m, n = keep.shape
    r0, r1 = max(int(rows.min()) - margin_px, 0), min(int(rows.max()) + margin_px + 1, m)
    c0, c1 = max(int(cols.min()) - margin_px, 0), min(int(cols.max()) + margin_px + 1, n)
    data = np.where(mask, s.scan.data, np.nan)[r0:r1, c0:c1]
    scan = s.scan.evolve(
        step,
        params,
        {"valid_points": int(mask[r0:r1, c0:c1].sum())},
        data=data,
        mask=mask[r0:r1, c0:c1],
    )
    return replace(
        s,
        scan=scan,
        primer_center=(s.primer_center[0] - r0, s.primer_center[1] - c0),
        fp_center=(s.fp_center[0] - r0, s.fp_center[1] - c0),
        params={**s.params, **params},
    )


def _circle(shape: tuple[int, int], center: tuple[float, float], r: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return np.asarray((yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= r * r)


# --------------------------------------------------------------------------------------
# the styles


def case_head(scan: Scan, truth: Truth) -> StyledScan:
    """Style a: the raw scan of the case head, unchanged."""
    return StyledScan(
        variant="case_head",
        style="case_head",
        scan=scan,
        primer_center=truth.primer_center,
        primer_radius_px=truth.primer_radius_px,
        fp_center=truth.fp_center,
        fp_shape=truth.fp_shape,
    )


def disc_fov(
    scan: Scan,
    truth: Truth,
    *,
    radius_factor: float = 1.1,
    offset_px: tuple[float, float] = (0.0, 0.0),
) -> StyledScan:
    """Style b: NaN outside a disc around the primer, the firing-pin dent kept.

    Parameters
    ----------
    scan : Scan
        Raw scan from :func:`ballistics.synth.fire`.
    truth : Truth
    radius_factor : float
        Disc radius as a multiple of the primer radius (> 1: the whole primer edge is
        visible; slightly < 1 with an ``offset_px``: only part of it is).
    offset_px : tuple of float
        (row, col) offset of the disc centre from the primer centre, pixels.
    """
    s = case_head(scan, truth)
    c = (truth.primer_center[0] + offset_px[0], truth.primer_center[1] + offset_px[1])
    keep = _circle(scan.shape, c, radius_factor * truth.primer_radius_px)
    params = {"disc_radius_factor": radius_factor, "disc_offset_px": list(offset_px)}
    out = _crop(s, keep, "crop_styles.disc_fov", params)
    variant = "disc_fov_wide" if radius_factor >= 1.0 else "disc_fov_narrow"
    return replace(out, variant=variant, style="disc_fov")


def breech_face_pin_present(
    scan: Scan,
    truth: Truth,
    *,
    radius_factor: float = 0.85,
    offset_px: tuple[float, float] = (0.0, 0.0),
) -> StyledScan:
    """Style d: cropped to a disc inside the primer edge; the firing-pin dent is kept.

    The crop is centred on the primer (plus ``offset_px``, the error of the lab's own
    centring), so no primer edge is left in the data.
    """
    s = case_head(scan, truth)
    c = (truth.primer_center[0] + offset_px[0], truth.primer_center[1] + offset_px[1])
    keep = _circle(scan.shape, c, radius_factor * truth.primer_radius_px)
    params = {"inner_radius_factor": radius_factor, "crop_offset_px": list(offset_px)}
    out = _crop(s, keep, "crop_styles.breech_face", params)
    return replace(out, variant="breech_face_pin_present", style="breech_face_pin_present")


def annulus_pin_invalid(
    scan: Scan,
    truth: Truth,
    *,
    radius_factor: float = 0.8,
    offset_px: tuple[float, float] = (0.0, 0.0),
    pin_margin: float = 1.3,
) -> StyledScan:
    """Style c: the breech-face annulus with the firing-pin impression masked invalid.

    Like the processed Fadul files: a disc inside the primer edge (``radius_factor`` of the
    primer radius) minus the firing-pin impression grown by ``pin_margin`` (stadium units).
    """
    s = breech_face_pin_present(scan, truth, radius_factor=radius_factor, offset_px=offset_px)
    rho = _pin_rho(s.scan.shape, s.fp_center, truth)
    keep = rho >= pin_margin
    params = {"pin_margin": pin_margin}
    out = _crop(s, keep, "crop_styles.mask_pin", params, margin_px=10**6)
    return replace(out, variant="annulus_pin_invalid", style="annulus_pin_invalid")


def pin_partly_invalid(
    s: StyledScan, truth: Truth, *, cut_angle_deg: float = 0.0, cut_offset: float = 0.0
) -> StyledScan:
    """Style e: part of the firing-pin impression is invalid (dropout or crop).

    Pixels of the impression (grown by 20 %) on the far side of a line through the pin
    centre are set invalid: the line's normal points along ``cut_angle_deg`` (degrees, x =
    col, y = row) and is moved by ``cut_offset`` semi-minor axes (0 = half the pin lost).
    """
    rho = _pin_rho(s.scan.shape, s.fp_center, truth)
    yy, xx = np.mgrid[: s.scan.shape[0], : s.scan.shape[1]].astype(np.float64)
    a = math.radians(cut_angle_deg)
    side = math.cos(a) * (xx - s.fp_center[1]) + math.sin(a) * (yy - s.fp_center[0])
    lost = (rho < 1.2) & (side > cut_offset * truth.fp_axes_px[1])
    params = {"pin_cut_angle_deg": cut_angle_deg, "pin_cut_offset": cut_offset}
    out = _crop(s, ~lost, "crop_styles.pin_partly_invalid", params, margin_px=10**6)
    return replace(out, variant=f"{s.variant}+pin_partly_invalid")


def scale_pin_depth(s: StyledScan, truth: Truth, *, depth_factor: float) -> StyledScan:
    """Style e: a shallow (``0 < depth_factor < 1``) or absent (``0``) firing-pin dent.

    The dent is measured against a plane fitted to a ring around it and scaled by
    ``depth_factor``; with 0 the impression (and its wall dropouts) is replaced by the
    plane, and the scan no longer has a pin to find (``pin_expected`` False).
    """
    z, valid = s.scan.data.copy(), s.scan.mask.copy()
    rho = _pin_rho(z.shape, s.fp_center, truth)
    ring = valid & (rho > 1.3) & (rho < 1.9)
    inner = rho < 1.2
    depth_left_m = 0.0
    if ring.sum() >= 10:
        yy, xx = np.nonzero(ring)
        design = np.column_stack([np.ones(yy.size), yy, xx]).astype(np.float64)
        coef, *_ = np.linalg.lstsq(design, z[yy, xx], rcond=None)
        iy, ix = np.nonzero(inner)
        plane = coef[0] + coef[1] * iy + coef[2] * ix
        dent = z[iy, ix] - plane
        ok = valid[iy, ix]
        depth_left_m = depth_factor * float(-np.min(dent[ok])) if ok.any() else 0.0
        z[iy, ix] = plane + depth_factor * np.where(np.isfinite(dent), dent, 0.0)
        if depth_factor == 0.0:
            # the wall dropouts go with the dent, all over the replaced disc (a confocal
            # scan's drop out a little outside the impression too; left invalid they made an
            # enclosed hole that is rightly taken for a firing pin)
            valid[iy, ix] = True
    scan = s.scan.evolve(
        "crop_styles.scale_pin_depth",
        {"depth_factor": depth_factor},
        {"depth_left_um": depth_left_m * 1e6},
        data=np.where(valid, z, np.nan),
        mask=valid & np.isfinite(z),
    )
    name = "pin_absent" if depth_factor == 0 else "pin_shallow"
    return replace(
        s,
        scan=scan,
        variant=f"{s.variant}+{name}",
        # a dent shallower than ~30 um is not an impression one can rely on finding
        pin_expected=s.pin_expected and depth_left_m >= 30e-6,
        params={**s.params, "depth_factor": depth_factor, "depth_left_um": depth_left_m * 1e6},
    )


# --------------------------------------------------------------------------------------
# a seeded mix


VARIANTS: tuple[str, ...] = (
    "case_head",
    "disc_fov_wide",
    "disc_fov_narrow",
    "annulus_pin_invalid",
    "breech_face_pin_present",
    "breech_face_pin_present+pin_partly_invalid",
    "disc_fov_wide+pin_shallow",
    "disc_fov_wide+pin_absent",
    "breech_face_pin_present+pin_absent",
)
"""The variants :func:`styled_variants` makes, in order."""


def styled_variants(
    scan: Scan, truth: Truth, *, seed: int, variants: tuple[str, ...] = VARIANTS
) -> list[StyledScan]:
    """Every cropping style of one raw scan, with seeded random crop parameters.

    Parameters
    ----------
    scan : Scan
        Raw scan from :func:`ballistics.synth.fire`.
    truth : Truth
    seed : int
        Seed of the crop parameters (radii, offsets, cut angles).
    variants : tuple of str
        Subset of :data:`VARIANTS` to make.

    Returns
    -------
    list of StyledScan
        In the order of ``variants``.
    """
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown crop variants {sorted(unknown)}; choose from {VARIANTS}")
    rng = np.random.default_rng([seed, 0xC50])
    rp = truth.primer_radius_px

    def centring_error() -> tuple[float, float]:
        # a lab centres a field of view on the primer to within ~1 % of its radius; the
        # primer edge inside it, not the disc, must give the centre
        return (float(rng.normal(0, 0.01 * rp)), float(rng.normal(0, 0.01 * rp)))

    def make(name: str) -> StyledScan:
        if name == "case_head":
            return case_head(scan, truth)
        if name in ("disc_fov_wide", "disc_fov_wide+pin_shallow", "disc_fov_wide+pin_absent"):
            s = disc_fov(
                scan,
                truth,
                radius_factor=float(rng.uniform(1.04, 1.25)),
                offset_px=centring_error(),
            )
            if name.endswith("pin_shallow"):
                return scale_pin_depth(s, truth, depth_factor=float(rng.uniform(0.25, 0.4)))
            if name.endswith("pin_absent"):
                return scale_pin_depth(s, truth, depth_factor=0.0)
            return s
        if name == "disc_fov_narrow":
            # narrower than the primer and off-centre: the edge shows on one side only
            k = float(rng.uniform(0.95, 0.99))
            d = (float(rng.uniform(1.05, 1.12)) - k) * rp
            a = float(rng.uniform(0, 2 * math.pi))
            return disc_fov(
                scan, truth, radius_factor=k, offset_px=(d * math.sin(a), d * math.cos(a))
            )
        if name == "annulus_pin_invalid":
            # cropped inside the edge, centred on the primer: the crop is the only evidence
            # of the primer centre left in the data, so it is centred on the truth
            return annulus_pin_invalid(
                scan,
                truth,
                radius_factor=float(rng.uniform(0.7, 0.9)),
                pin_margin=float(rng.uniform(1.1, 1.5)),
            )
        s = breech_face_pin_present(scan, truth, radius_factor=float(rng.uniform(0.8, 0.95)))
        if name.endswith("pin_partly_invalid"):
            return pin_partly_invalid(
                s,
                truth,
                cut_angle_deg=float(rng.uniform(0, 360)),
                cut_offset=float(rng.uniform(-0.3, 0.3)),
            )
        if name.endswith("pin_absent"):
            return scale_pin_depth(s, truth, depth_factor=0.0)
        return s

    return [make(v) for v in variants]
