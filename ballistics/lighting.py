"""2-D images that know their light: detect ring vs side light, and compare side-lit images
in a way that accounts for the light turning with the casing.

Why
---
Under a ring light the image depends on the local tilt but not on its direction, so it turns
with the casing and the plain registration-based comparison works. Under a single side light
from image-frame azimuth ``L`` the shading is, to first order, minus the directional derivative
of the height along ``L``: ``I ~ c - dz/ds_L``. Rotate the casing and the same marks are lit
from another direction in the casing frame: at 90 degrees the two images are nearly
uncorrelated, at 180 degrees inverted, and the plain comparison calls a same-gun pair a
non-match.

What
----
* :func:`detect_light` tells a ring light from a side light by the shading of the primer's
  rounded edge (bright on the side facing a side light, dark on the far side; even all round
  under a ring light) and estimates the side light's azimuth. Metadata
  (:class:`LightRequest`) overrides detection.
* :func:`pseudo_height` integrates the flattened shading along the light direction with a
  leaky (regularised) inverse of the directional derivative. The result estimates the
  band-passed height for every wavevector not perpendicular to the light, and does not depend
  on where the light was: two pseudo-heights of one casing lit from different sides correlate
  positively, so they compare like 3-D topographies.
* :func:`comparable_fraction` says, from the texture directions each image shows, over what
  fraction of relative rotations the two lights leave enough common texture. A pair that does
  not match and whose lights hide the texture at many rotations is *flagged*
  (``light_directions_incompatible``) instead of being reported as a non-match.
* :func:`prepare_image` / :func:`compare_lit` (and the one-shot :func:`compare_images`) wrap
  :func:`ballistics.pipeline.prepare` and :func:`ballistics.compare.compare`.
* The product path (CLI, store, search, service): :func:`prepare_scan` prepares any scan
  (a :class:`LitCasing` for a 2-D image: a PreparedCasing that carries its light and, for a
  side light, its pseudo-height; stored by ``LitCasing.to_bytes``, read back by
  :func:`load_prepared`), and :func:`compare_prepared` compares two of them (a
  :class:`LitComparison`: the comparison plus the light's flags and record). What a lab
  says about the light is a :class:`LightRequest` (``--light``, ``--light-azimuth-deg``);
  metadata overrides detection (:func:`resolve_light`).
* :func:`render_side_light` and :func:`render_ring` are small shading models (Lambertian plus
  a specular lobe, gamma, exposure, camera noise) used by the tests and
  ``benchmarks/side_light.py``.

Conventions: angles in degrees counter-clockwise from the +col axis in (x = col, y = row)
coordinates (as :func:`ballistics.render.render_oblique`); an azimuth is the direction the
light comes *from*. ``Comparison.pose.rotation_deg`` maps ``b`` onto ``a``, so ``b``'s light,
seen in ``a``'s image frame, comes from ``light_b - rotation_deg``.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
from scipy import ndimage

from .compare import CompareParams, Comparison, compare
from .errors import BallisticsError
from .light import (
    FLAG_INCOMPATIBLE,
    FLAG_KINDS_DIFFER,
    FLAG_NOT_RECORDED,
    LIGHT_FLAGS,
    LIGHT_KINDS,
    LightEstimate,
    LightRequest,
)
from .light import as_light as _as_light
from .pipeline import PreparedCasing, prepare
from .scan import Scan
from .segment import segment

__all__ = [
    "FLAG_INCOMPATIBLE",
    "FLAG_KINDS_DIFFER",
    "FLAG_NOT_RECORDED",
    "LIGHT_FLAGS",
    "LIGHT_KINDS",
    "ImageComparison",
    "LightEstimate",
    "LightRequest",
    "LitCasing",
    "LitComparison",
    "attach_light",
    "common_texture",
    "comparable_fraction",
    "compare_images",
    "compare_lit",
    "compare_prepared",
    "dent_mask",
    "detect_light",
    "exclude_dent",
    "light_of",
    "load_prepared",
    "picture_surfaces",
    "prepare_image",
    "prepare_scan",
    "pseudo_height",
    "render_ring",
    "render_side_light",
    "resolve_light",
    "texture_directions",
]

#: A primer edge whose first angular harmonic of brightness is at least this fraction of the
#: breech face's brightness spread is side-lit (chosen on the tuning light models of
#: benchmarks/side_light.py: side lights 0.116 and up, ring lights up to 0.100, the highest
#: for a ring 20 % brighter on one side).
DIRECTIONAL_THRESHOLD = 0.11
#: Integration length of :func:`pseudo_height`: wavelengths longer than this are not
#: integrated (their shading carries illumination gradients more than marks).
INTEGRATION_CUTOFF_UM = 250.0
#: A relative rotation is comparable when at least this share of the texture each image
#: shows is shown by the other image's light too (:func:`common_texture`). This and the two
#: below were chosen on the tuning set of benchmarks/side_light.py (`--retune`): the fewest
#: flags that leave no same-gun pair both unflagged and below DECISIVE_SCORE.
MIN_COMMON = 0.1
#: A non-matching pair is flagged when fewer than this fraction of relative rotations are
#: comparable.
MIN_COMPARABLE_FRACTION = 0.9
#: Scores at or above this are treated as a match (no flag); the comparison's own scale.
DECISIVE_SCORE = 0.6

_ANGLE_BINS = 36  # texture-direction histogram over [0, 180): 5-degree bins


# --------------------------------------------------------------------------------------
# light detection


def _harmonic(
    img: np.ndarray, sel: np.ndarray, center: tuple[float, float]
) -> tuple[np.ndarray, int]:
    """Least-squares first angular harmonic (a, b) of ``img`` around ``center`` over ``sel``:
    img ~ c + a cos(psi) + b sin(psi), psi = atan2(row - r0, col - c0). Returns ((a, b), n)."""
    rows, cols = np.nonzero(sel)
    if rows.size < 24:
        return np.zeros(2), int(rows.size)
    psi = np.arctan2(rows - center[0], cols - center[1])
    design = np.stack([np.ones_like(psi), np.cos(psi), np.sin(psi)], axis=1)
    coef, *_ = np.linalg.lstsq(design, img[rows, cols], rcond=None)
    return coef[1:], int(rows.size)


def detect_light(
    scan: Scan,
    segmentation: dict[str, Any] | None = None,
    *,
    threshold: float = DIRECTIONAL_THRESHOLD,
) -> LightEstimate:
    """Tell a ring light from a side light, and estimate the side light's azimuth.

    The primer's rounded edge falls away from the breech face all round: under a side light
    the stretch of edge facing the light is bright and the far stretch dark, under a ring light
    it is lit alike all round. The brightness in a band around the primer edge (0.95 to 1.05
    of the primer radius, valid pixels only) is fitted with a first angular harmonic about
    the primer centre; its amplitude, relative to the brightness spread of the breech face
    (5th to 95th percentile), decides the kind, and its phase (the bright side) is the light
    azimuth. The primer circle is the most reliable thing segmentation finds (the firing-pin
    outline shifts towards the lit side under a side light, so the dent is not used).

    Parameters
    ----------
    scan : Scan
        ``kind="image"``, the raw (unflattened) image.
    segmentation : dict, optional
        ``Segmentation.as_dict()`` of ``scan`` (e.g. ``PreparedCasing.segmentation``);
        computed when omitted.
    threshold : float
        Strength at or above which the light is called directional.

    Returns
    -------
    LightEstimate
        ``source="detected"``.
    """
    if scan.kind != "image":
        raise BallisticsError(
            f"detect_light needs a 2-D image (kind='image'); got kind={scan.kind!r}"
        )
    seg = segmentation if segmentation is not None else segment(scan).as_dict()
    qr, qc = seg["primer_center"]
    rp = float(seg["primer_radius"])
    rows, cols = np.indices(scan.shape, dtype=np.float64)
    rr = np.hypot(rows - qr, cols - qc)
    band = scan.mask & (rr > 0.95 * rp) & (rr < 1.05 * rp)
    vec, n = _harmonic(np.where(scan.mask, scan.data, 0.0), band, (qr, qc))
    face = scan.mask & (rr < 0.9 * rp)
    vals = scan.data[face] if face.any() else scan.data[scan.mask]
    lo, hi = np.percentile(vals, [5, 95]) if vals.size else (0.0, 1.0)
    spread = max(float(hi - lo), 1e-9)
    strength = float(np.hypot(*vec)) / spread if n >= 24 else 0.0
    if strength < threshold:
        return LightEstimate("ring", None, strength, "detected")
    bright = math.degrees(math.atan2(vec[1], vec[0]))
    return LightEstimate("side", bright % 360.0, strength, "detected")


def resolve_light(
    scan: Scan,
    segmentation: dict[str, Any] | None = None,
    light: LightRequest | LightEstimate | float | str | None = None,
    *,
    threshold: float = DIRECTIONAL_THRESHOLD,
) -> LightEstimate:
    """The light of a 2-D image: metadata where given, detection for the rest.

    Parameters
    ----------
    scan : Scan
        ``kind="image"``.
    segmentation : dict, optional
        ``Segmentation.as_dict()`` of ``scan`` (computed when needed and omitted).
    light : LightRequest, LightEstimate, float, str or None
        See :class:`LightRequest` (a float is a side light's azimuth); None detects.
    threshold : float
        Passed to :func:`detect_light` (``auto`` only).

    Returns
    -------
    LightEstimate
        ``source`` says whether the kind was given or detected, ``azimuth_source`` the same
        for a side light's azimuth.
    """
    req = _as_light(light)
    if isinstance(req, LightEstimate):
        return req
    if req.kind in ("ring", "coaxial"):
        return LightEstimate(req.kind, None, None, "metadata")
    if req.kind == "side" and req.azimuth_deg is not None:
        return LightEstimate("side", req.azimuth_deg, None, "metadata")
    if req.kind == "side":  # the kind is given: only the azimuth is detected
        det = detect_light(scan, segmentation, threshold=0.0)
        return LightEstimate("side", det.azimuth_deg, det.strength, "metadata", "detected")
    return detect_light(scan, segmentation, threshold=threshold)


# --------------------------------------------------------------------------------------
# pseudo-height and texture directions


def dent_mask(
    scan: Scan,
    segmentation: dict[str, Any],
    *,
    smooth_um: float = 40.0,
    threshold: float = 4.0,
    margin_um: float = 30.0,
) -> np.ndarray:
    """The firing-pin dent of a side-lit image, found by its shading rather than its outline.

    Under a side light the dent is a large bright/dark pair whose outline segmentation often
    misplaces (it follows the bright half), so dent walls leak into the breech face and,
    being far brighter and darker than the marks, dominate the comparison. Here the image,
    smoothed over ``smooth_um``, is compared with the breech face's median: pixels more than
    ``threshold`` robust standard deviations away, in blobs reaching the central 55 % of the
    primer radius, holes filled, grown by ``margin_um``, plus the segmented pin outline.

    Parameters
    ----------
    scan : Scan
        ``kind="image"``.
    segmentation : dict
        ``Segmentation.as_dict()`` of ``scan``.
    smooth_um, threshold, margin_um : float
        Smoothing (micrometres), anomaly threshold (robust sigmas) and growth (micrometres).

    Returns
    -------
    ndarray of shape scan.shape, bool
        True on the dent (to be excluded from the breech face).
    """
    sp = math.sqrt(scan.spacing_m[0] * scan.spacing_m[1])
    qr, qc = segmentation["primer_center"]
    rp = float(segmentation["primer_radius"])
    rows, cols = np.indices(scan.shape, dtype=np.float64)
    rr = np.hypot(rows - qr, cols - qc)
    disc = scan.mask & (rr < 0.9 * rp)
    if int(disc.sum()) < 100:
        return np.zeros(scan.shape, bool)
    med = float(np.median(scan.data[disc]))
    low = ndimage.gaussian_filter(np.where(scan.mask, scan.data, med), smooth_um * 1e-6 / sp)
    centre = float(np.median(low[disc]))
    sigma = 1.4826 * float(np.median(np.abs(low[disc] - centre))) + 1e-12
    odd = (np.abs(low - centre) > threshold * sigma) & (rr < 0.9 * rp)
    labels, _ = ndimage.label(odd)
    near = np.unique(labels[(rr < 0.55 * rp) & odd])
    keep = np.isin(labels, near[near > 0])
    pr, pc = segmentation["firing_pin_center"]
    major, minor = segmentation["firing_pin_axes"]
    ang = math.radians(segmentation["firing_pin_angle_deg"])
    du = math.cos(ang) * (cols - pc) + math.sin(ang) * (rows - pr)
    dv = -math.sin(ang) * (cols - pc) + math.cos(ang) * (rows - pr)
    keep |= np.hypot(du / max(major, 1.0), dv / max(minor, 1.0)) < 1.05
    keep = ndimage.binary_fill_holes(keep)
    grow = max(1, round(margin_um * 1e-6 / sp))
    out: np.ndarray = ndimage.binary_dilation(keep, iterations=grow)
    return out


def exclude_dent(scan: Scan, plain: PreparedCasing, **kwargs: Any) -> PreparedCasing:
    """``plain`` with the :func:`dent_mask` of ``scan`` removed from its breech face.

    The canvas of :func:`ballistics.pipeline.prepare` is the image cropped around the primer
    centre and resampled (never rotated): canvas pixel ``q`` shows image pixel
    ``primer_center + (q - (S - 1) / 2) * canvas_spacing / image_spacing``.

    Parameters
    ----------
    scan : Scan
        The image ``plain`` was prepared from.
    plain : PreparedCasing
    **kwargs
        Passed to :func:`dent_mask`.

    Returns
    -------
    PreparedCasing
    """
    dent = dent_mask(scan, plain.segmentation, **kwargs)
    s = plain.surface
    size = s.shape[0]
    qr, qc = plain.segmentation["primer_center"]
    idx = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    r = np.rint(qr + idx * s.spacing_m[0] / scan.spacing_m[0]).astype(int)
    c = np.rint(qc + idx * s.spacing_m[1] / scan.spacing_m[1]).astype(int)
    rin = (r >= 0) & (r < scan.shape[0])
    cin = (c >= 0) & (c < scan.shape[1])
    hit = np.zeros((size, size), bool)
    sub = dent[np.clip(r, 0, scan.shape[0] - 1)][:, np.clip(c, 0, scan.shape[1] - 1)]
    hit[np.ix_(rin, cin)] = sub[np.ix_(rin, cin)]
    mask = s.mask & ~hit
    surface = s.evolve(
        "exclude_dent",
        dict(kwargs),
        {"excluded_points": int((s.mask & hit).sum()), "valid_points": int(mask.sum())},
        data=np.where(mask, s.data, np.nan),
        mask=mask,
    )
    return PreparedCasing(surface, plain.segmentation, plain.aperture_profile)


def _wavevectors(n: int, spacing_m: float) -> tuple[np.ndarray, np.ndarray]:
    k = 2.0 * np.pi * np.fft.fftfreq(n, spacing_m)
    return k[:, None], k[None, :]  # ky (rows), kx (cols), radians per metre


def pseudo_height(
    prepared: PreparedCasing,
    azimuth_deg: float,
    *,
    integration_cutoff_um: float = INTEGRATION_CUTOFF_UM,
) -> PreparedCasing:
    """Relative height recovered from side-lit shading, on the prepared canvas.

    With the light from azimuth ``L`` (unit vector ``l`` in the image plane), the flattened
    image is ``I ~ -dz/ds_l``. In Fourier space ``dz/ds_l = i (k . l) Z``, so
    ``Z_est = i (k . l) I / ((k . l)^2 + k0^2)`` with ``k0 = 2 pi / integration_cutoff``:
    an exact integral for wavelengths shorter than the cut-off, a decaying one beyond it
    (no drift), and zero for wavevectors perpendicular to the light (nothing to integrate).
    ``Z_est = Z (k.l)^2 / ((k.l)^2 + k0^2)``: a non-negative filter of the true height, which
    is why pseudo-heights of one casing lit from any sides correlate positively.

    Parameters
    ----------
    prepared : PreparedCasing
        From :func:`ballistics.pipeline.prepare` on the side-lit image. The canvas is a crop and
        resampling of the image, never rotated, so the image-frame azimuth applies.
    azimuth_deg : float
        Light azimuth in the image frame (degrees, see module docstring).
    integration_cutoff_um : float
        Wavelength (micrometres) beyond which the integration leaks.

    Returns
    -------
    PreparedCasing
        Same canvas, segmentation and mask; ``surface.data`` is the pseudo-height
        (dimensionless, unit RMS), ``kind="image"``; no aperture profile (its shading depends
        on the light too).
    """
    if not integration_cutoff_um > 0:
        raise BallisticsError(
            f"integration_cutoff_um must be > 0 micrometres; got {integration_cutoff_um}"
        )
    s = prepared.surface
    if s.shape[0] != s.shape[1]:
        raise BallisticsError("pseudo_height needs a square prepared canvas")
    d = np.where(s.mask, s.data, 0.0)
    ky, kx = _wavevectors(s.shape[0], s.spacing_m[0])
    a = math.radians(azimuth_deg)
    kl = kx * math.cos(a) + ky * math.sin(a)
    k0 = 2.0 * math.pi / (integration_cutoff_um * 1e-6)
    z = np.real(np.fft.ifft2(np.fft.fft2(d) * (1j * kl / (kl * kl + k0 * k0))))
    rms = float(np.sqrt(np.mean(z[s.mask] ** 2))) if s.mask.any() else 1.0
    z = np.where(s.mask, z / (rms or 1.0), np.nan)
    surface = s.evolve(
        "pseudo_height",
        {"azimuth_deg": float(azimuth_deg) % 360.0, "integration_cutoff_um": integration_cutoff_um},
        {"rms_before_scaling": rms},
        data=z,
    )
    return PreparedCasing(surface, prepared.segmentation, None)


def texture_directions(
    prepared: PreparedCasing, *, band_um: tuple[float, float] = (20.0, 250.0)
) -> np.ndarray:
    """Angular distribution of the surface's texture energy (its wavevector directions).

    Parameters
    ----------
    prepared : PreparedCasing
        Usually a :func:`pseudo_height` (or a 3-D topography) canvas.
    band_um : (float, float)
        Wavelength band (micrometres) whose energy is counted.

    Returns
    -------
    ndarray of shape (36,)
        Energy fraction per 5-degree bin of wavevector direction over [0, 180) (image frame,
        same angle convention as the light); sums to 1.
    """
    lo, hi = band_um
    if not 0 < lo < hi:
        raise BallisticsError(f"band_um must be (short, long) with 0 < short < long; got {band_um}")
    s = prepared.surface
    d = np.where(s.mask, s.data, 0.0)
    ky, kx = _wavevectors(s.shape[0], s.spacing_m[0])
    k = np.hypot(kx, ky)
    sel = (k >= 2 * math.pi / (hi * 1e-6)) & (k <= 2 * math.pi / (lo * 1e-6))
    power = np.abs(np.fft.fft2(d)) ** 2
    phi = np.degrees(np.arctan2(ky, kx)) % 180.0
    idx = np.minimum((phi / (180.0 / _ANGLE_BINS)).astype(int), _ANGLE_BINS - 1)
    hist = np.bincount(idx[sel], weights=power[sel], minlength=_ANGLE_BINS)
    total = float(hist.sum())
    return hist / total if total > 0 else np.full(_ANGLE_BINS, 1.0 / _ANGLE_BINS)


def common_texture(
    dirs_a: np.ndarray,
    light_a_deg: float,
    dirs_b: np.ndarray,
    light_b_deg: float,
    rotation_deg: np.ndarray | float,
) -> np.ndarray:
    """Share of the texture both lights show, at relative rotation(s) ``rotation_deg``.

    A side light shows a wavevector at angle ``psi`` to it with energy weight ``cos^2 psi``.
    For image a: of the texture energy a's own light shows (``dirs_a`` weighted by
    ``cos^2`` to ``light_a``), the share that b's light, turned into a's frame
    (``light_b - rotation``), shows too; likewise for b; the smaller of the two. An isotropic
    texture gives 0.75 with both lights parallel or opposite and 0.25 at right angles;
    parallel marks lit along their wavevector give ~0 against a light along the marks.

    Parameters
    ----------
    dirs_a, dirs_b : ndarray of shape (36,)
        :func:`texture_directions` of each image's pseudo-height (image frames).
    light_a_deg, light_b_deg : float
        Light azimuths in each image's frame, degrees.
    rotation_deg : float or ndarray
        Rotation(s) mapping b onto a (``Comparison.pose.rotation_deg``), degrees.

    Returns
    -------
    ndarray of shape (R,), values in [0, 1] (R = number of rotations).
    """
    rot = np.atleast_1d(np.asarray(rotation_deg, dtype=np.float64))[:, None]
    phi = np.radians((np.arange(_ANGLE_BINS) + 0.5) * (180.0 / _ANGLE_BINS))[None, :]

    def share(d: np.ndarray, own: float, other: np.ndarray) -> np.ndarray:
        seen = d[None, :] * np.cos(phi - math.radians(own)) ** 2
        both = seen * np.cos(phi - np.radians(other)) ** 2
        out: np.ndarray = both.sum(axis=1) / np.maximum(seen.sum(axis=1), 1e-12)
        return out

    # b's light in a's frame is light_b - rotation; a's light in b's frame light_a + rotation.
    return np.minimum(
        share(dirs_a, light_a_deg, light_b_deg - rot),
        share(dirs_b, light_b_deg, light_a_deg + rot),
    )


def comparable_fraction(
    dirs_a: np.ndarray,
    light_a_deg: float,
    dirs_b: np.ndarray,
    light_b_deg: float,
    *,
    min_common: float = MIN_COMMON,
) -> float:
    """Fraction of relative rotations (1-degree grid) at which the two lights leave at least
    ``min_common`` common texture (:func:`common_texture`). 1.0: a low score excludes a match
    at every rotation; small: most rotations would hide the marks from one of the lights."""
    rot = np.arange(0.0, 360.0, 1.0)
    c = common_texture(dirs_a, light_a_deg, dirs_b, light_b_deg, rot)
    return float(np.mean(c >= min_common))


# --------------------------------------------------------------------------------------
# preparing and comparing

#: Version of the light arrays a :class:`LitCasing` adds to the stored surface blob.
LIGHT_BLOB_VERSION = "light-1"


@dataclass(eq=False)
class LitCasing(PreparedCasing):
    """A prepared 2-D image with its light: a :class:`PreparedCasing` (the flattened image, so
    descriptors, the screen, quality and pictures use it unchanged) plus what the light-aware
    comparison needs.

    Attributes
    ----------
    light : LightEstimate
        Required (keyword).
    height : PreparedCasing or None
        :func:`pseudo_height` of the image (dent excluded) for a side light, else None.
    directions : ndarray of shape (36,) or None
        :func:`texture_directions` of ``height`` (side light only).
    """

    light: LightEstimate | None = None
    height: PreparedCasing | None = None
    directions: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.light is None:
            raise BallisticsError("LitCasing needs its light (a LightEstimate)")
        if self.light.directional and (self.height is None or self.directions is None):
            raise BallisticsError("a side-lit LitCasing needs its pseudo-height and directions")

    @property
    def plain(self) -> PreparedCasing:
        """The flattened image (this object: a LitCasing is a PreparedCasing)."""
        return self

    def to_bytes(self, form: str = "full") -> bytes:
        """:meth:`PreparedCasing.to_bytes` plus the light (``light_meta``) and, for a side
        light, the pseudo-height and texture directions. Readers that know nothing of lights
        (``PreparedCasing.from_bytes``) read the flattened image as before. Only the "full"
        form: the light-aware comparison is not yet known to read only the stored levels."""
        if form != "full":
            raise BallisticsError(
                f"a 2-D image with its light is stored in the 'full' form only; got {form!r}"
            )
        with np.load(io.BytesIO(super().to_bytes()), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        assert self.light is not None
        meta: dict[str, Any] = {"version": LIGHT_BLOB_VERSION, "light": self.light.as_dict()}
        # Full precision: as_dict rounds for display.
        meta["light"]["azimuth_deg"] = self.light.azimuth_deg
        meta["light"]["strength"] = self.light.strength
        if self.height is not None and self.directions is not None:
            h = self.height.surface
            meta["height"] = {"spacing_m": list(h.spacing_m), "provenance": h.provenance_dicts()}
            arrays["light_height"] = np.where(h.mask, h.data, 0.0).astype(np.float32)
            arrays["light_height_mask"] = np.packbits(h.mask)
            arrays["light_directions"] = np.asarray(self.directions, np.float64)
        arrays["light_meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, raw: bytes) -> PreparedCasing:
        """:func:`load_prepared` (a plain PreparedCasing when no light was stored)."""
        return load_prepared(raw)


def load_prepared(raw: bytes) -> PreparedCasing:
    """A stored surface blob: a :class:`LitCasing` when it carries a light, else the plain
    :class:`PreparedCasing` (topographies, and 2-D images stored before lights were recorded).

    Raises
    ------
    BallisticsError
        The blob is not a prepared surface, or its light arrays are unreadable.
    """
    from .scan import Step

    plain = PreparedCasing.from_bytes(raw)
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            if "light_meta" not in z.files:
                return plain
            meta = json.loads(bytes(z["light_meta"]).decode())
            height_raw = z["light_height"] if "light_height" in z.files else None
            hmask_raw = z["light_height_mask"] if "light_height_mask" in z.files else None
            dirs = z["light_directions"] if "light_directions" in z.files else None
        light = LightEstimate.from_dict(meta["light"])
        height = None
        if height_raw is not None and hmask_raw is not None and "height" in meta:
            data = height_raw.astype(np.float64)
            mask = np.unpackbits(hmask_raw)[: data.size].reshape(data.shape).astype(bool)
            steps = tuple(
                Step(p["name"], p["params"], p["stats"]) for p in meta["height"]["provenance"]
            )
            surface = Scan(
                np.where(mask, data, np.nan), mask, tuple(meta["height"]["spacing_m"]), "image",
                steps,
            )  # fmt: skip
            height = PreparedCasing(surface, plain.segmentation, None)
    except BallisticsError:
        raise
    except Exception as exc:  # a blob with light arrays we cannot read is not ours
        raise BallisticsError(f"stored light record is unreadable: {exc}") from exc
    return LitCasing(
        plain.surface,
        plain.segmentation,
        plain.aperture_profile,
        plain.quality,
        light=light,
        height=height,
        directions=None if dirs is None else np.asarray(dirs, np.float64),
    )


def light_of(prepared: Any) -> LightEstimate | None:
    """The light recorded with a prepared casing; None for topographies and for images
    prepared (or stored) without one."""
    light = getattr(prepared, "light", None)
    return light if isinstance(light, LightEstimate) else None


def prepare_image(
    scan: Scan,
    *,
    light: LightRequest | LightEstimate | float | str | None = None,
    threshold: float = DIRECTIONAL_THRESHOLD,
    integration_cutoff_um: float = INTEGRATION_CUTOFF_UM,
    **prepare_kwargs: Any,
) -> LitCasing:
    """Prepare a 2-D image and work out its light.

    Parameters
    ----------
    scan : Scan
        ``kind="image"``.
    light : LightRequest, LightEstimate, float, str or None
        Metadata (:class:`LightRequest`; a float is a side light's azimuth in degrees, image
        frame; ``"ring"``, ``"side"``, ``"coaxial"``). None detects it (:func:`detect_light`).
    threshold : float
        Passed to :func:`detect_light`.
    integration_cutoff_um : float
        Passed to :func:`pseudo_height`.
    **prepare_kwargs
        Passed to :func:`ballistics.pipeline.prepare`.

    Returns
    -------
    LitCasing
    """
    if scan.kind != "image":
        raise BallisticsError(
            f"prepare_image needs a 2-D image (kind='image'); got kind={scan.kind!r}; "
            "topographies compare with ballistics.compare.compare directly"
        )
    return attach_light(
        scan,
        prepare(scan, **prepare_kwargs),
        light=light,
        threshold=threshold,
        integration_cutoff_um=integration_cutoff_um,
    )


def prepare_scan(
    scan: Scan,
    *,
    light: LightRequest | LightEstimate | float | str | None = None,
    **prepare_kwargs: Any,
) -> PreparedCasing:
    """What the product prepares: a :class:`LitCasing` for a 2-D image (light detected, or
    taken from ``light``), the plain :func:`ballistics.pipeline.prepare` for a topography
    (a 3-D scan has no light: ``light`` is ignored)."""
    if scan.kind != "image":
        return prepare(scan, **prepare_kwargs)
    return prepare_image(scan, light=light, **prepare_kwargs)


def attach_light(
    scan: Scan,
    plain: PreparedCasing,
    *,
    light: LightRequest | LightEstimate | float | str | None = None,
    threshold: float = DIRECTIONAL_THRESHOLD,
    integration_cutoff_um: float = INTEGRATION_CUTOFF_UM,
) -> LitCasing:
    """:func:`prepare_image` for an image already prepared (``plain = prepare(scan)``):
    resolve the light (:func:`resolve_light`) and, for a side light, add the pseudo-height."""
    est = resolve_light(scan, plain.segmentation, light, threshold=threshold)
    base = (plain.surface, plain.segmentation, plain.aperture_profile, plain.quality)
    if not est.directional or est.azimuth_deg is None:
        return LitCasing(*base, light=est)
    # Side light: segmentation misplaces the dent; drop it by its shading before integrating.
    face = exclude_dent(scan, plain)
    height = pseudo_height(face, est.azimuth_deg, integration_cutoff_um=integration_cutoff_um)
    return LitCasing(*base, light=est, height=height, directions=texture_directions(height))


@dataclass(frozen=True)
class LitComparison(Comparison):
    """A :class:`ballistics.compare.Comparison` of two 2-D images that knows their lights.

    ``flags`` holds the comparison's own flags and the light's (:data:`LIGHT_FLAGS`);
    ``light`` says how the pair was compared: ``method`` ("plain" or "pseudo_height"), the
    two lights (``a``, ``b``: :meth:`LightEstimate.as_dict`, None when not recorded),
    ``relative_light_deg``, ``common_at_pose`` and ``comparable_fraction`` (side-lit pairs).
    """

    light: dict[str, Any] | None = None

    def as_dict(self, *, cells: bool = False) -> dict[str, Any]:
        out = super().as_dict(cells=cells)
        out["light"] = self.light
        return out


def _lit_comparison(
    comp: Comparison, flags: tuple[str, ...], light: dict[str, Any]
) -> LitComparison:
    values = {f.name: getattr(comp, f.name) for f in fields(Comparison) if f.init}
    values["flags"] = tuple(dict.fromkeys((*comp.flags, *flags)))
    return LitComparison(**values, light=light)


@dataclass(frozen=True)
class ImageComparison:
    """Result of :func:`compare_lit` / :func:`compare_images`.

    Attributes
    ----------
    comparison : Comparison
        The comparison that counts (of the pseudo-heights for two side-lit images, else of
        the flattened images).
    flags : tuple of str
        The light's flags (:data:`LIGHT_FLAGS`). ``"light_directions_incompatible"``: not a
        match, but the two lights hide the marks at too many relative rotations for a low
        score to mean "different gun". ``"light_kinds_differ"``: images under different kinds
        of light (scored on the flattened images, not trustworthy either way).
    method : {"plain", "pseudo_height"}
    light_a, light_b : LightEstimate
    relative_light_deg : float or None
        Angle between the two lights in the casing frame at the registered pose, [0, 180].
    common_at_pose : float or None
        :func:`common_texture` at the registered pose.
    comparable_fraction : float or None
        :func:`comparable_fraction` of the pair.
    """

    comparison: Comparison
    flags: tuple[str, ...]
    method: str
    light_a: LightEstimate
    light_b: LightEstimate
    relative_light_deg: float | None = None
    common_at_pose: float | None = None
    comparable_fraction: float | None = None

    @property
    def score(self) -> float:
        return self.comparison.score

    def light_record(self) -> dict[str, Any]:
        """How the lights were used (the ``light`` of :class:`LitComparison`)."""

        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 4)

        return {
            "method": self.method,
            "a": self.light_a.as_dict(),
            "b": self.light_b.as_dict(),
            "relative_light_deg": r(self.relative_light_deg),
            "common_at_pose": r(self.common_at_pose),
            "comparable_fraction": r(self.comparable_fraction),
        }

    def as_comparison(self) -> LitComparison:
        """The product's view: the comparison with the light's flags added and its record."""
        return _lit_comparison(self.comparison, self.flags, self.light_record())

    def as_dict(self) -> dict[str, Any]:
        rec = self.light_record()
        return {
            **self.comparison.as_dict(),
            "flags": list(self.flags),
            "method": self.method,
            "light_a": rec["a"],
            "light_b": rec["b"],
            "relative_light_deg": rec["relative_light_deg"],
            "common_at_pose": rec["common_at_pose"],
            "comparable_fraction": rec["comparable_fraction"],
        }


#: ``CompareParams.coarse_blur_um`` for the comparison of two pseudo-heights. Pseudo-heights
#: are smooth already (integrated shading), and the blur that helps topographies hurt them on
#: the side-light tune set (pair AUC, side-lambert-30 / side-spec-20: none 0.999 / 0.928,
#: 50 um 0.962 / 0.920; results/side-light-tune-blur-*.json), so none.
HEIGHT_COARSE_BLUR_UM: float | None = None


def compare_lit(
    a: LitCasing,
    b: LitCasing,
    *,
    params: CompareParams | None = None,
    full_sweep: bool = True,
    decisive_score: float = DECISIVE_SCORE,
    min_comparable_fraction: float = MIN_COMPARABLE_FRACTION,
    min_common: float = MIN_COMMON,
) -> ImageComparison:
    """Compare two prepared 2-D images, accounting for their lights.

    Two ring-lit (or two coaxial) images: the plain comparison (the image turns with the
    casing). Two side-lit images: the comparison of their pseudo-heights; a pair scoring below
    ``decisive_score`` is flagged ``light_directions_incompatible`` when fewer than
    ``min_comparable_fraction`` of the relative rotations leave ``min_common`` common texture.
    Different kinds of light: the plain comparison, flagged ``light_kinds_differ``.

    Parameters
    ----------
    a, b : LitCasing
        From :func:`prepare_image`.
    params : CompareParams, optional
        Passed to :func:`ballistics.compare.compare`.
    full_sweep : bool
        For two side-lit images, sweep the full circle of rotations (``rotation_hints=0``):
        the spectra of pseudo-heights are filtered along each image's own light, so the
        spectrum screen's rotation hints lost the true rotation of about 1 in 4 side-lit
        matches on the tuning set. Ring-lit pairs keep ``params`` as given (on the tuning
        set the full sweep lowered a ring model's AUC from 0.9996 to 0.921).
    decisive_score : float
        Score at or above which a pair is a match and never flagged.
    min_comparable_fraction, min_common : float
        See :func:`comparable_fraction`.

    Returns
    -------
    ImageComparison
    """
    params = params or CompareParams()
    assert a.light is not None and b.light is not None
    if a.height is None or b.height is None:
        comp = compare(a, b, params=params)
        kinds = (FLAG_KINDS_DIFFER,) if a.light.kind != b.light.kind else ()
        return ImageComparison(comp, kinds, "plain", a.light, b.light)
    assert a.light.azimuth_deg is not None and b.light.azimuth_deg is not None
    assert a.directions is not None and b.directions is not None
    la, lb = a.light.azimuth_deg, b.light.azimuth_deg
    if full_sweep:
        params = replace(params, rotation_hints=0)
    params = replace(params, coarse_blur_um=HEIGHT_COARSE_BLUR_UM)
    comp = compare(a.height, b.height, params=params)
    rel = abs((lb - comp.rotation_deg - la + 180.0) % 360.0 - 180.0)
    at_pose = float(common_texture(a.directions, la, b.directions, lb, comp.rotation_deg)[0])
    frac = comparable_fraction(a.directions, la, b.directions, lb, min_common=min_common)
    flags: tuple[str, ...] = ()
    if comp.score < decisive_score and frac < min_comparable_fraction:
        flags = (FLAG_INCOMPATIBLE,)
    return ImageComparison(comp, flags, "pseudo_height", a.light, b.light, rel, at_pose, frac)


def compare_prepared(
    a: PreparedCasing, b: PreparedCasing, *, params: CompareParams | None = None
) -> Comparison:
    """The product's comparison of two prepared casings (CLI, search, service).

    Topographies: :func:`ballistics.compare.compare`, unchanged. Two images with recorded
    lights (:class:`LitCasing`): :func:`compare_lit`, returned as a :class:`LitComparison`
    whose ``flags`` carry the light's flags. An image without a recorded light (stored before
    lights were): the plain comparison, flagged ``light_not_recorded`` when the other image is
    side-lit (a low score then says nothing).

    Returns
    -------
    Comparison
        A :class:`LitComparison` for two images.
    """
    if a.kind != "image" or b.kind != "image":
        return compare(a, b, params=params)
    la, lb = light_of(a), light_of(b)
    if isinstance(a, LitCasing) and isinstance(b, LitCasing):
        return compare_lit(a, b, params=params).as_comparison()
    comp = compare(a, b, params=params)
    side = any(x is not None and x.directional for x in (la, lb))
    record = {
        "method": "plain",
        "a": None if la is None else la.as_dict(),
        "b": None if lb is None else lb.as_dict(),
        "relative_light_deg": None,
        "common_at_pose": None,
        "comparable_fraction": None,
    }
    return _lit_comparison(comp, (FLAG_NOT_RECORDED,) if side else (), record)


def picture_surfaces(
    a: PreparedCasing, b: PreparedCasing, comparison: Any
) -> tuple[PreparedCasing, PreparedCasing]:
    """The two surfaces a comparison picture should show: the pseudo-heights when the pair
    was compared on them (the flattened side-lit images would show the light, not the marks),
    else ``a`` and ``b``."""
    light = getattr(comparison, "light", None)
    if (
        isinstance(light, dict)
        and light.get("method") == "pseudo_height"
        and isinstance(a, LitCasing)
        and isinstance(b, LitCasing)
        and a.height is not None
        and b.height is not None
    ):
        return a.height, b.height
    return a, b


def compare_images(
    a: Scan,
    b: Scan,
    *,
    light_a: LightRequest | LightEstimate | float | str | None = None,
    light_b: LightRequest | LightEstimate | float | str | None = None,
    params: CompareParams | None = None,
) -> ImageComparison:
    """One-shot :func:`prepare_image` of both images, then :func:`compare_lit`.

    ``light_a``/``light_b``: metadata (:class:`LightRequest`, a side light's azimuth in
    degrees, image frame, or a kind), or None to detect it from the image.
    """
    return compare_lit(
        prepare_image(a, light=light_a), prepare_image(b, light=light_b), params=params
    )


# --------------------------------------------------------------------------------------
# shading models (until instrument models land in ballistics.instruments)


def _slopes(scan: Scan) -> tuple[np.ndarray, np.ndarray]:
    """(dz/drow, dz/dcol) in metres per metre; invalid points take their nearest valid value."""
    if not scan.mask.any():
        raise BallisticsError("render: the scan has no valid data")
    z = scan.data
    if not scan.mask.all():
        idx = ndimage.distance_transform_edt(
            ~scan.mask, return_distances=False, return_indices=True
        )
        z = z[tuple(idx)]
    gy, gx = np.gradient(z, *scan.spacing_m)
    return gy, gx


def _light_vector(azimuth_deg: float, elevation_deg: float) -> tuple[float, float, float]:
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)


def _radiance(
    gy: np.ndarray,
    gx: np.ndarray,
    azimuth_deg: float,
    elevation_deg: float,
    specular: float,
    shininess: float,
) -> np.ndarray:
    """Lambertian plus Blinn-Phong lobe for a camera looking straight down."""
    lx, ly, lz = _light_vector(azimuth_deg, elevation_deg)
    norm = np.sqrt(gx * gx + gy * gy + 1.0)
    diffuse = np.clip((-gx * lx - gy * ly + lz) / norm, 0.0, None)
    hx, hy, hz = lx, ly, lz + 1.0
    hn = math.sqrt(hx * hx + hy * hy + hz * hz)
    ndoth = np.clip((-gx * hx - gy * hy + hz) / (hn * norm), 0.0, None)
    out: np.ndarray = (1.0 - specular) * diffuse + specular * ndoth**shininess
    return out


def _camera(
    scan: Scan,
    radiance: np.ndarray,
    *,
    ambient: float,
    gamma: float,
    exposure: float,
    noise: float,
    seed: int,
    step: str,
    params: dict[str, Any],
) -> Scan:
    if not gamma > 0 or not exposure > 0 or noise < 0:
        raise BallisticsError(
            f"render needs gamma > 0, exposure > 0 and noise >= 0; got {gamma}, {exposure}, {noise}"
        )
    img = exposure * (radiance + ambient) / (1.0 + ambient)
    if noise > 0:
        img = img + noise * np.random.default_rng(seed).standard_normal(img.shape)
    img = np.clip(img, 0.0, 1.0) ** gamma
    cam = {"ambient": ambient, "gamma": gamma, "exposure": exposure, "noise": noise, "seed": seed}
    return scan.evolve(
        step,
        {**params, **cam},
        data=np.where(scan.mask, img, np.nan),
        mask=scan.mask.copy(),
        kind="image",
    )


def render_side_light(
    scan: Scan,
    azimuth_deg: float,
    elevation_deg: float = 30.0,
    *,
    specular: float = 0.0,
    shininess: float = 30.0,
    ambient: float = 0.05,
    gamma: float = 1.0,
    exposure: float = 1.0,
    noise: float = 0.0,
    seed: int = 0,
) -> Scan:
    """Render a topography under one side light (a minimal 2-D instrument model).

    Parameters
    ----------
    scan : Scan
        ``kind="topography"``, heights in metres.
    azimuth_deg : float
        Direction the light comes from, degrees counter-clockwise from +col in (x = col,
        y = row).
    elevation_deg : float
        Light elevation above the surface plane, degrees.
    specular : float
        Weight of the specular (Blinn-Phong) lobe, 0..1 (metal is specular).
    shininess : float
        Blinn-Phong exponent (narrower lobe when larger).
    ambient : float
        Constant light added before scaling.
    gamma : float
        Camera response exponent applied to the 0..1 intensity.
    exposure : float
        Gain before clipping to 0..1 (> 1 saturates highlights).
    noise : float
        Standard deviation of additive Gaussian camera noise (intensity units).
    seed : int
        Seed of the camera noise.

    Returns
    -------
    Scan
        ``kind="image"``, intensity in 0..1, same shape, spacing and mask as ``scan``.
    """
    if scan.kind != "topography":
        raise BallisticsError(f"render_side_light needs a topography; got kind={scan.kind!r}")
    gy, gx = _slopes(scan)
    rad = _radiance(gy, gx, azimuth_deg, elevation_deg, specular, shininess)
    params = {
        "azimuth_deg": float(azimuth_deg),
        "elevation_deg": elevation_deg,
        "specular": specular,
        "shininess": shininess,
    }
    return _camera(
        scan,
        rad,
        ambient=ambient,
        gamma=gamma,
        exposure=exposure,
        noise=noise,
        seed=seed,
        step="render_side_light",
        params=params,
    )


def render_ring(
    scan: Scan,
    elevation_deg: float = 30.0,
    *,
    azimuths: int = 12,
    nonuniformity: float = 0.0,
    specular: float = 0.0,
    shininess: float = 30.0,
    ambient: float = 0.05,
    gamma: float = 1.0,
    exposure: float = 1.0,
    noise: float = 0.0,
    seed: int = 0,
) -> Scan:
    """Render a topography under a ring light of ``azimuths`` sources (a 2-D instrument model).

    Parameters
    ----------
    elevation_deg : float
        Elevation of the ring's sources, degrees.
    azimuths : int
        Number of equally spaced sources (>= 3).
    nonuniformity : float
        Relative brightness imbalance of the ring: source k is weighted
        ``1 + nonuniformity * cos(az_k)`` (0 = uniform ring; real rings are never perfect).
    specular, shininess, ambient, gamma, exposure, noise, seed
        As in :func:`render_side_light`.

    Returns
    -------
    Scan
        ``kind="image"``, intensity in 0..1.
    """
    if scan.kind != "topography":
        raise BallisticsError(f"render_ring needs a topography; got kind={scan.kind!r}")
    if azimuths < 3:
        raise BallisticsError(f"render_ring needs at least 3 azimuths; got {azimuths}")
    if not 0 <= nonuniformity < 1:
        raise BallisticsError(f"nonuniformity must be in [0, 1); got {nonuniformity}")
    gy, gx = _slopes(scan)
    rad = np.zeros(scan.shape)
    weights = 0.0
    for k in range(azimuths):
        az = 360.0 * k / azimuths
        w = 1.0 + nonuniformity * math.cos(math.radians(az))
        rad += w * _radiance(gy, gx, az, elevation_deg, specular, shininess)
        weights += w
    params = {
        "elevation_deg": elevation_deg,
        "azimuths": azimuths,
        "nonuniformity": nonuniformity,
        "specular": specular,
        "shininess": shininess,
    }
    return _camera(
        scan,
        rad / weights,
        ambient=ambient,
        gamma=gamma,
        exposure=exposure,
        noise=noise,
        seed=seed,
        step="render_ring",
        params=params,
    )
