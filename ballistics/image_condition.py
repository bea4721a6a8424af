"""Conditioning of 2-D images (ring, coaxial or side light) for comparison.

Why images need their own chain
-------------------------------
A 2-D image is not a height map: its intensity is a non-linear function of the local surface
tilt, passed through the camera's exposure, clipping and gamma. Under a ring light the
response is even in the slope (about ``|grad z|**2`` for the shallow tilts of a breech-face
impression), so

* the marks' information moves to longer wavelengths (squaring a band-limited texture makes
  sum and difference frequencies; the per-shot primer roughness, ~15 um, lands in the short
  band and correlates with nothing), and
* the grey levels are a monotone but unknown function of that response (exposure, gamma,
  saturated glints), different for every instrument.

The chain here therefore (0) masks the firing-pin dent by its shading where segmentation left
part of it (``dent_threshold``), (1) optionally replaces the grey levels by their normal
scores within the breech face (``equalise``: any monotone camera response gives the same
image),
(2) removes the shading and equalises the local contrast at ``long_cutoff_um``
(:func:`ballistics.condition.flatten_illumination`), (3) removes wavelengths shorter than
``short_cutoff_um`` and (4) optionally clips what is left at ``clip_sigma`` robust standard
deviations, so that a few glints cannot dominate a correlation.

Defaults (:data:`DEFAULT_IMAGE_CONDITIONING`) were chosen leave-one-instrument-out on the
2-D instrument models of :mod:`ballistics.instruments` (``benchmarks/instruments_loio.py``;
see ``benchmarks/RESULTS-instruments.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.special import ndtri

from . import condition
from .errors import BallisticsError
from .scan import Scan

__all__ = [
    "DEFAULT_IMAGE_CONDITIONING",
    "ImageConditioning",
    "clip_robust",
    "condition_image",
    "equalise",
    "mask_dent",
]


@dataclass(frozen=True)
class ImageConditioning:
    """How a 2-D breech-face image is conditioned. Lengths in micrometres.

    Attributes
    ----------
    short_cutoff_um : float or None
        Wavelengths shorter than this are removed (Gaussian, ISO 16610-21 weighting). None
        keeps them.
    long_cutoff_um : float
        Shading and contrast are flattened at this scale
        (:func:`ballistics.condition.flatten_illumination`).
    equalise : bool
        Replace grey levels by their normal scores within the valid region first
        (:func:`equalise`), making the result independent of any monotone camera response.
    clip_sigma : float or None
        Clip the conditioned image at this many robust standard deviations
        (:func:`clip_robust`). None: no clipping.
    dent_threshold : float or None
        Mask the firing-pin dent by its shading (:func:`mask_dent`): smoothed pixels this
        many robust standard deviations from the breech face's median, in blobs reaching the
        centre. None: keep what segmentation left.
    """

    short_cutoff_um: float | None = 40.0
    long_cutoff_um: float = 400.0
    equalise: bool = False
    clip_sigma: float | None = None
    dent_threshold: float | None = None

    def __post_init__(self) -> None:
        if not self.long_cutoff_um > 0:
            raise BallisticsError(
                f"ImageConditioning.long_cutoff_um must be > 0 micrometres; "
                f"got {self.long_cutoff_um!r}"
            )
        if self.short_cutoff_um is not None and not (
            0 < self.short_cutoff_um < self.long_cutoff_um
        ):
            raise BallisticsError(
                "ImageConditioning needs 0 < short_cutoff_um < long_cutoff_um (micrometres); "
                f"got {self.short_cutoff_um!r}, {self.long_cutoff_um!r}"
            )
        if self.dent_threshold is not None and not self.dent_threshold > 0:
            raise BallisticsError(
                "ImageConditioning.dent_threshold must be > 0 robust sigmas or None; "
                f"got {self.dent_threshold!r}"
            )
        if self.clip_sigma is not None and not self.clip_sigma > 0:
            raise BallisticsError(
                f"ImageConditioning.clip_sigma must be > 0 or None; got {self.clip_sigma!r}"
            )


#: What :func:`ballistics.pipeline.prepare` uses for 2-D images unless told otherwise.
DEFAULT_IMAGE_CONDITIONING = ImageConditioning()


def equalise(scan: Scan) -> Scan:
    """Normal scores of the valid grey levels (rank-based; ties share their mean rank).

    Returns
    -------
    Scan
        Same shape and mask; valid values are standard-normal quantiles of their ranks, so
        any strictly increasing transform of the input gives the same output.
    """
    _require_image(scan, "equalise")
    vals = scan.data[scan.mask]
    if vals.size < 2:
        raise BallisticsError("equalise needs at least 2 valid pixels")
    order = np.argsort(vals, kind="stable")
    sorted_vals = vals[order]
    # mean rank of each run of equal values (quantised and clipped pixels tie)
    _, start, counts = np.unique(sorted_vals, return_index=True, return_counts=True)
    mean_rank = start + (counts - 1) / 2.0
    ranks = np.empty(vals.size)
    ranks[order] = np.repeat(mean_rank, counts)
    scores = ndtri((ranks + 0.5) / vals.size)
    out = np.full(scan.shape, np.nan)
    out[scan.mask] = scores
    stats = {
        "distinct_levels": int(counts.size),
        "largest_tie_fraction": float(counts.max() / vals.size),
    }
    return scan.evolve("equalise", {}, stats, data=out)


def clip_robust(scan: Scan, *, sigma: float) -> Scan:
    """Clip valid values to ``median +- sigma * 1.4826 * MAD``.

    Returns
    -------
    Scan
        Same mask; the fraction of clipped points is recorded.
    """
    if not sigma > 0:
        raise BallisticsError(f"clip_robust needs sigma > 0; got {sigma!r}")
    vals = scan.data[scan.mask]
    med = float(np.median(vals))
    s = 1.4826 * float(np.median(np.abs(vals - med))) + 1e-30
    lo, hi = med - sigma * s, med + sigma * s
    out = np.where(scan.mask, np.clip(scan.data, lo, hi), np.nan)
    clipped = float(np.mean((vals < lo) | (vals > hi)))
    return scan.evolve("clip_robust", {"sigma": sigma}, {"clipped_fraction": clipped}, data=out)


def mask_dent(
    scan: Scan,
    *,
    threshold: float = 4.0,
    smooth_um: float = 40.0,
    margin_um: float = 40.0,
    centre_fraction: float = 0.55,
) -> Scan:
    """Invalidate the firing-pin dent of a breech-face image found by its shading.

    The walls of a ~0.2 mm deep dent are far brighter or darker than any mark; when
    segmentation misplaces the pin outline (an elongated striker, a dent lit unevenly) what it
    leaves dominates every correlation. The scan is a crop centred on the primer (as
    :func:`ballistics.pipeline.prepare` makes it): pixels whose ``smooth_um`` Gaussian
    average lies more than ``threshold`` robust standard deviations from the median of the
    valid disc, in blobs that reach within ``centre_fraction`` of the disc's radius of its
    centre, together with the invalid pixels there (the pin outline segmentation removed),
    holes filled and grown by ``margin_um``, are set invalid.

    Returns
    -------
    Scan
        Same data; mask without the dent (the number of pixels removed is recorded).
    """
    _require_image(scan, "mask_dent")
    sp = math.sqrt(scan.spacing_m[0] * scan.spacing_m[1])
    m, n = scan.shape
    rows, cols = np.indices(scan.shape, dtype=np.float64)
    rr = np.hypot(rows - (m - 1) / 2.0, cols - (n - 1) / 2.0)
    radius = 0.5 * min(m, n)
    valid = scan.mask
    if int(valid.sum()) < 100:
        return scan
    med = float(np.median(scan.data[valid]))
    w = ndimage.gaussian_filter(valid.astype(np.float64), smooth_um * 1e-6 / sp)
    num = ndimage.gaussian_filter(np.where(valid, scan.data, 0.0), smooth_um * 1e-6 / sp)
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(w > 0.2, num / w, med)
    centre = float(np.median(low[valid]))
    sigma = 1.4826 * float(np.median(np.abs(low[valid] - centre))) + 1e-12
    inner = rr < centre_fraction * radius
    odd = valid & (np.abs(low - centre) > threshold * sigma)
    odd |= ~valid & inner
    labels, _ = ndimage.label(odd)
    near = np.unique(labels[inner & odd])
    dent = ndimage.binary_fill_holes(np.isin(labels, near[near > 0]))
    grow = max(1, round(margin_um * 1e-6 / sp))
    dent = ndimage.binary_dilation(dent, iterations=grow) & valid
    mask = valid & ~dent
    return scan.evolve(
        "mask_dent",
        {
            "threshold": threshold,
            "smooth_um": smooth_um,
            "margin_um": margin_um,
            "centre_fraction": centre_fraction,
        },
        {"removed_points": int(dent.sum()), "valid_points": int(mask.sum())},
        data=np.where(mask, scan.data, np.nan),
        mask=mask,
    )


def condition_image(scan: Scan, params: ImageConditioning = DEFAULT_IMAGE_CONDITIONING) -> Scan:
    """The conditioning chain for a cropped 2-D breech-face image (before resampling).

    Parameters
    ----------
    scan : Scan
        ``kind="image"``, intensities (any scale), invalid outside the breech face.
    params : ImageConditioning

    Returns
    -------
    Scan
        Dimensionless, about unit local RMS; each step recorded in the provenance.
    """
    _require_image(scan, "condition_image")
    s = scan
    if params.dent_threshold is not None:
        s = mask_dent(s, threshold=params.dent_threshold)
    s = equalise(s) if params.equalise else s
    s = condition.flatten_illumination(s, long_cutoff_um=params.long_cutoff_um)
    if params.short_cutoff_um is not None:
        s = condition.bandpass(s, short_cutoff_um=params.short_cutoff_um, long_cutoff_um=None)
    if params.clip_sigma is not None:
        s = clip_robust(s, sigma=params.clip_sigma)
    return s


def _require_image(scan: Scan, what: str) -> None:
    if scan.kind != "image":
        raise BallisticsError(
            f"{what} applies to 2-D images (kind='image'); got kind={scan.kind!r}. "
            "Topographies are conditioned by ballistics.condition (level, band-pass)."
        )
