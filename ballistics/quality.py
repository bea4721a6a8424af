"""How usable one prepared breech face is: a quality record per scan.

A comparison can only find what the scan holds. A low score between two casings means
"different gun" only when both scans carry enough breech-face texture; on a scan with few valid
pixels, little contact between breech face and primer, heavy noise or an unsure segmentation,
it means "cannot tell". :func:`quality_record` measures those properties on the prepared casing
and :func:`assess` turns them into ``low_confidence`` with one reason per threshold crossed, so
every candidate and comparison can carry them (``quality``, ``low_confidence``).

Measures (all on the breech-face annulus between the firing-pin impression and the primer
edge, in the canvas frame of :class:`ballistics.pipeline.PreparedCasing`):

``valid_fraction``
    Valid pixels of the conditioned surface over the annulus area (from the segmentation's
    primer radius and firing-pin ellipse), 0..1. Dropouts, a half-scanned primer and
    band-pass edge losses lower it.
``texture_rms``
    RMS of the band-passed surface over its valid pixels: micrometres for topography
    (``texture_unit="um"``), flattened intensity for 2-D images (``"contrast"``).
``noise_rms``
    White-noise-equivalent noise, same unit: the robust (MAD) standard deviation of the
    finest-scale residual (the cropped, unfiltered scan minus a 1-pixel Gaussian smoothing of
    itself, at the scan's own spacing), divided by that residual's gain for white noise. Fine
    real texture counts too, so it is an upper bound on the instrument noise.
``snr``
    ``texture_rms / noise_rms_in_band``: the band-passed texture over the part of that noise
    the band-pass lets through (``noise_rms`` times the pass band's white-noise gain at the
    scan's spacing).
``contact_coverage``
    Fraction of the valid annulus whose local texture energy (RMS in a Gaussian window of
    :data:`CONTACT_WINDOW_UM`) is above a noise floor of ``CONTACT_NOISE_FACTOR`` times the
    in-band noise: where the breech face touched the primer and left marks.
``segmentation_confidence``
    ``confidence`` of the segmentation summary when it reports one, else None.

Thresholds (:data:`THRESHOLDS`) were chosen on synthetic casings with deliberately poor scans
(little contact, heavy noise, few valid pixels) and checked on held-out synthetic guns
(``tests/test_quality.py``) and on the 40 Fadul scans, none of which they flag.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from .scan import Scan

__all__ = [
    "CONTACT_FLOOR_UM",
    "CONTACT_NOISE_FACTOR",
    "CONTACT_WINDOW_UM",
    "QUALITY_VERSION",
    "THRESHOLDS",
    "annulus_mask",
    "assess",
    "combine",
    "noise_rms",
    "quality_record",
]

#: Version of the record's definition, stored with it.
QUALITY_VERSION = "quality-1"
#: Side scale (Gaussian sigma, micrometres) of the local texture energy for contact coverage:
#: a few cells of the finest breech-face marks, small against a ~450 um CMC cell.
CONTACT_WINDOW_UM = 50.0
#: Local texture energy above this many times the in-band noise counts as contact ...
CONTACT_NOISE_FACTOR = 1.5
#: ... and, for topography, above this RMS in micrometres: the primer's own roughness where
#: the breech face did not touch (0.2-0.4 um in the band on synthetic casings without contact)
#: is not counted as marks; breech-face marks on the 40 Fadul scans are 0.6-1.2 um RMS.
CONTACT_FLOOR_UM = 0.4

#: Lower limits below which a scan is ``low_confidence`` (the reason names the measure).
#: ``texture_rms_um`` applies to topography only (images have no absolute contrast scale).
#: Chosen on synthetic casings (``make_firearms(4, seed=21)``) and their deliberately poor
#: variants: good scans have valid fraction >= 0.89, snr >= 3.08 and coverage >= 0.94; half a
#: scan missing gives 0.43-0.46 valid; no contact or marks on a quarter of the annulus give
#: coverage <= 0.25; 1 um RMS of white noise on 0.9-1.4 um texture gives snr <= 2.06. The 40
#: Fadul scans (never used to choose) have valid fraction 0.76-0.96, snr 6.0-11.0 and
#: coverage 0.89-0.99: none is flagged.
THRESHOLDS: dict[str, float] = {
    "valid_fraction": 0.5,
    "contact_coverage": 0.4,
    "snr": 2.2,
    "texture_rms_um": 0.05,
    "segmentation_confidence": 0.5,
}

# Gain of "x - G_1px * x" for white noise: sqrt(1 - 2 g0 + sum g^2), with g0 = 1 / (2 pi) and
# sum g^2 = 1 / (4 pi) for a unit 2-D Gaussian.
_RESIDUAL_GAIN = math.sqrt(1.0 - 2.0 / (2.0 * math.pi) + 1.0 / (4.0 * math.pi))
# ISO 16610-21: sigma of the Gaussian = this factor times the cut-off wavelength.
_SIGMA_PER_CUTOFF = math.sqrt(math.log(2.0) / math.pi) / math.sqrt(2.0 * math.pi)


def _blur(a: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur (OpenCV: several times faster than scipy here), float32 is enough."""
    return cv2.GaussianBlur(a.astype(np.float32), (0, 0), sigma_px).astype(np.float64)


def annulus_mask(
    size: int, segmentation: Mapping[str, Any], scan_spacing_m: float, canvas_spacing_m: float
) -> np.ndarray:
    """The breech-face annulus on a canvas centred on the primer.

    Parameters
    ----------
    size : int
        Canvas side S, pixels; the primer centre is ((S - 1) / 2, (S - 1) / 2).
    segmentation : mapping
        ``Segmentation.as_dict()`` of the original scan (pixel coordinates of that scan).
    scan_spacing_m, canvas_spacing_m : float
        Pixel spacing of the original scan and of the canvas, metres.

    Returns
    -------
    ndarray of shape (S, S), bool
        Inside the primer (less the rim margin segmentation uses) and outside the firing-pin
        ellipse.
    """
    k = scan_spacing_m / canvas_spacing_m
    c = (size - 1) / 2.0
    radius = float(segmentation.get("primer_radius", 0.0)) * k
    precropped = bool(segmentation.get("precropped", False))
    # Same rim margin as ballistics.segment (3 % of the radius or 100 um) on raw scans.
    margin = 0.0 if precropped else max(0.03 * radius, 100e-6 / canvas_spacing_m)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    inside = (yy - c) ** 2 + (xx - c) ** 2 <= (radius - margin) ** 2
    pc = segmentation.get("primer_center") or [0.0, 0.0]
    fc = segmentation.get("firing_pin_center") or pc
    if segmentation.get("firing_pin_found", True) is False:
        return inside
    axes = segmentation.get("firing_pin_axes") or [segmentation.get("firing_pin_radius", 0.0)] * 2
    major, minor = (float(a) * k for a in axes)
    if major <= 0 or minor <= 0:
        return inside
    fy = c + (float(fc[0]) - float(pc[0])) * k
    fx = c + (float(fc[1]) - float(pc[1])) * k
    a = math.radians(float(segmentation.get("firing_pin_angle_deg", 0.0)))
    # (x = col, y = row), angle counter-clockwise from +col as in Segmentation
    u = (xx - fx) * math.cos(a) + (yy - fy) * math.sin(a)
    v = -(xx - fx) * math.sin(a) + (yy - fy) * math.cos(a)
    pin = (u / major) ** 2 + (v / minor) ** 2 <= 1.0
    return inside & ~pin


def noise_rms(scan: Scan) -> float:
    """White-noise-equivalent noise of a scan, in its data unit (metres or intensity).

    Robust (MAD) standard deviation of ``data - G(data, 1 px)`` over pixels whose whole
    smoothing window is valid, divided by the residual's white-noise gain. 0.0 with fewer
    than 100 such pixels.
    """
    mask = scan.mask
    z = np.where(mask, scan.data, 0.0)
    w = _blur(mask.astype(np.float64), 1.0)
    smooth = _blur(z, 1.0)
    inner = mask & (w > 0.999)
    if int(inner.sum()) < 100:
        return 0.0
    r = (z - smooth / np.maximum(w, 1e-12))[inner]
    mad = float(np.median(np.abs(r - np.median(r))))
    return 1.4826 * mad / _RESIDUAL_GAIN


def _band_gain(short_cutoff_um: float | None, spacing_m: float) -> float:
    """Fraction of white noise's RMS a Gaussian short cut-off lets through (2-D, per pixel)."""
    if short_cutoff_um is None:
        return 1.0
    sigma_px = _SIGMA_PER_CUTOFF * short_cutoff_um * 1e-6 / spacing_m
    # sum of a sampled unit 2-D Gaussian squared ~ 1 / (4 pi sigma^2); at most 1 (no smoothing)
    return float(min(1.0, 1.0 / (2.0 * math.sqrt(math.pi) * max(sigma_px, 1e-9))))


def _local_rms(data: np.ndarray, mask: np.ndarray, sigma_px: float) -> np.ndarray:
    """RMS of ``data`` over valid pixels in a Gaussian window; NaN where the window is empty."""
    m = mask.astype(np.float64)
    num = _blur(np.where(mask, data, 0.0) ** 2, sigma_px)
    den = _blur(m, sigma_px)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0.2, np.sqrt(num / np.maximum(den, 1e-12)), np.nan)


def quality_record(
    surface: Scan,
    crop: Scan,
    segmentation: Mapping[str, Any],
    *,
    short_cutoff_um: float | None,
) -> dict[str, Any]:
    """The quality record of a prepared casing (see the module doc).

    Parameters
    ----------
    surface : Scan
        The prepared canvas (``PreparedCasing.surface``): band-passed, of shape (S, S),
        centred on the primer.
    crop : Scan
        The unfiltered crop around the primer, masked to the breech face, at the scan's own
        spacing (what conditioning started from).
    segmentation : mapping
        ``Segmentation.as_dict()`` of the original scan.
    short_cutoff_um : float or None
        The band-pass short cut-off the surface was conditioned with (for the in-band noise).

    Returns
    -------
    dict
        JSON-ready: ``version``, ``valid_fraction``, ``texture_rms``, ``noise_rms``,
        ``texture_unit``, ``snr``, ``contact_coverage``, ``segmentation_confidence``,
        ``low_confidence``, ``reasons`` (and the thresholds used).
    """
    topo = surface.kind == "topography"
    to_unit = 1e6 if topo else 1.0  # metres -> micrometres for topography
    canvas_sp = math.sqrt(surface.spacing_m[0] * surface.spacing_m[1])
    scan_sp = math.sqrt(crop.spacing_m[0] * crop.spacing_m[1])
    ring = annulus_mask(surface.shape[0], segmentation, scan_sp, canvas_sp)
    valid = surface.mask & ring
    n_ring = int(ring.sum())
    valid_fraction = float(valid.sum() / n_ring) if n_ring else 0.0
    values = surface.data[valid]
    texture = float(np.sqrt(np.mean(values**2))) * to_unit if values.size else 0.0
    noise = noise_rms(crop) * to_unit
    in_band = noise * _band_gain(short_cutoff_um, scan_sp)
    snr = texture / in_band if in_band > 0 else math.inf
    energy = _local_rms(surface.data, surface.mask, CONTACT_WINDOW_UM * 1e-6 / canvas_sp)
    e = energy[valid] * to_unit
    e = e[np.isfinite(e)]
    floor = max(CONTACT_NOISE_FACTOR * in_band, CONTACT_FLOOR_UM if topo else 0.0)
    coverage = float(np.mean(e > floor)) if e.size else 0.0
    conf = segmentation.get("confidence")
    rec: dict[str, Any] = {
        "version": QUALITY_VERSION,
        "valid_fraction": round(valid_fraction, 4),
        "texture_rms": round(texture, 6),
        "noise_rms": round(noise, 6),
        "noise_rms_in_band": round(in_band, 6),
        "texture_unit": "um" if topo else "contrast",
        "snr": round(snr, 3) if math.isfinite(snr) else None,
        "contact_coverage": round(coverage, 4),
        "contact_floor": round(floor, 6),
        "segmentation_confidence": None if conf is None else float(conf),
    }
    low, reasons = assess(rec)
    rec["low_confidence"] = low
    rec["reasons"] = reasons
    return rec


def assess(
    record: Mapping[str, Any], thresholds: Mapping[str, float] = THRESHOLDS
) -> tuple[bool, list[str]]:
    """``(low_confidence, reasons)`` of a quality record against ``thresholds``."""
    t = thresholds
    reasons: list[str] = []
    vf = record.get("valid_fraction")
    if vf is not None and vf < t["valid_fraction"]:
        reasons.append(
            f"few valid pixels: {100 * vf:.0f} % of the breech-face annulus "
            f"(< {100 * t['valid_fraction']:.0f} %)"
        )
    cov = record.get("contact_coverage")
    if cov is not None and cov < t["contact_coverage"]:
        reasons.append(
            f"little contact: breech-face marks on {100 * cov:.0f} % of the annulus "
            f"(< {100 * t['contact_coverage']:.0f} %)"
        )
    snr = record.get("snr")
    if snr is not None and snr < t["snr"]:
        reasons.append(f"noisy: texture/noise {snr:.1f} (< {t['snr']:g})")
    if record.get("texture_unit") == "um":
        tex = record.get("texture_rms")
        if tex is not None and tex < t["texture_rms_um"]:
            reasons.append(f"no texture: {tex:.3f} um RMS (< {t['texture_rms_um']:g} um)")
    conf = record.get("segmentation_confidence")
    if conf is not None and conf < t["segmentation_confidence"]:
        reasons.append(
            f"unsure segmentation: confidence {conf:.2f} (< {t['segmentation_confidence']:g})"
        )
    return bool(reasons), reasons


def combine(
    qualities: Mapping[str, Mapping[str, Any] | None], flags: tuple[str, ...] | list[str] = ()
) -> tuple[bool, list[str]]:
    """``(low_confidence, reasons)`` of a comparison or candidate.

    Parameters
    ----------
    qualities : mapping
        Label (e.g. ``"query"``, ``"candidate"``, ``"a"``, ``"b"``) -> quality record, or None
        when a casing has none (stored before quality records): unknown, not low.
    flags : sequence of str
        The comparison's flags (e.g. ``"directions_disagree"``); any flag is low confidence.
    """
    reasons = [
        f"{label}: {r}"
        for label, q in qualities.items()
        if q is not None
        for r in (q.get("reasons") or [])
    ]
    reasons += [f"comparison: {f}" for f in flags]
    return bool(reasons), reasons
