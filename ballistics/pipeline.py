"""From a read scan to a :class:`PreparedCasing`: segment, crop to the primer, condition,
resample and centre on a square canvas. This is what descriptors and comparisons consume and
what the index stores (compressed) for re-ranking.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import condition
from .errors import BallisticsError, SegmentationError
from .image_condition import DEFAULT_IMAGE_CONDITIONING, ImageConditioning, condition_image
from .quality import quality_record
from .register import downsample, rotate
from .scan import Scan
from .segment import Segmentation, segment

#: Spacing of the stored breech-face canvas, metres (cmcR and NFI compare at 6.25 um or coarser).
CANVAS_SPACING_M = 6.25e-6
#: Version of the preparation chain; part of the extractor version of every stored vector.
# prep-3: 2-D images conditioned by ballistics.image_condition; prep-4: black holes in image
# files are invalid (ballistics.image_io.black_holes); prep-5: 3-D segmentation fits a partly
# invalid firing pin to the breech-face outline and retries a soft primer edge before refusing;
# prep-6: the 2-D firing pin is the smallest rim enclosing the floor spot (coaxial light);
# prep-7: among 2-D outlines enclosing the floor spot, one concentric with it comes first
# prep-8: the most concentric of those first; the concentric rim sought from 3 px past the spot
# prep-9: 2-D floor (spot) inside rim and mark proposed; a rim concentric with it stays
PREPARE_VERSION = "prep-9"
_CANVAS_MULTIPLE = 16
#: The pyramid levels (downsampling factors of the canvas) that comparison, descriptors and
#: screen read: ``CompareParams`` cell_factor 2 (12.5 um), refine_factor 4 (25 um; also
#: ``descriptors`` and ``screen``), coarse_factor 8 (50 um). The "levels" storage form keeps
#: exactly these arrays, so a casing read back compares, describes and screens bit for bit as
#: the full canvas does.
STORED_LEVELS = (2, 4, 8)
#: Storage forms of :meth:`PreparedCasing.to_bytes`.
FORMS = ("full", "levels")


@dataclass(eq=False)
class PreparedCasing:
    """A conditioned breech-face surface centred on the primer, plus what segmentation found.

    Attributes
    ----------
    surface : Scan
        Square canvas of side S at :data:`CANVAS_SPACING_M`; the primer centre is the canvas
        centre ((S - 1) / 2, (S - 1) / 2). Topography in metres (band-passed), or flattened
        image intensity (dimensionless) for 2-D images. Invalid outside the breech face.
    segmentation : dict
        ``Segmentation.as_dict()`` of the original scan (pixel coordinates of that scan).
    aperture_profile : ndarray of shape (L,) or None
        Aperture-shear striation profile across the striae, sampled at the canvas spacing.
    quality : dict or None
        :func:`ballistics.quality.quality_record` of the breech face (valid fraction, texture,
        noise, contact coverage, segmentation confidence, ``low_confidence`` and
        ``reasons``). None for casings stored before quality records existed: unknown, not
        zero.
    """

    surface: Scan
    segmentation: dict[str, Any]
    aperture_profile: np.ndarray | None = None
    quality: dict[str, Any] | None = None
    _levels: dict[int, tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, repr=False, compare=False
    )
    stored_levels: tuple[int, ...] | None = field(default=None, repr=False, compare=False)
    """None: ``surface`` is the full canvas. Else the casing was read back from the "levels"
    form: only these levels are exact, and ``surface`` is the finest of them (in metres)
    repeated onto the canvas grid, for pictures; see :meth:`to_bytes`."""

    @property
    def kind(self) -> str:
        return self.surface.kind

    def level(self, factor: int) -> tuple[np.ndarray, np.ndarray]:
        """The surface downsampled by ``factor`` and scaled to unit RMS, cached.

        Returns
        -------
        data : ndarray of shape (S // factor, S // factor), float32 (zero where invalid)
        mask : ndarray of the same shape, bool
        """
        if factor not in self._levels:
            if self.stored_levels is not None:
                raise BallisticsError(
                    f"level {factor} of this casing is not stored (only {self.stored_levels}: "
                    "it was stored in the 'levels' form); prepare it again from its original "
                    "scan to compare it at another resolution"
                )
            s = self.surface
            d, m = downsample(np.where(s.mask, s.data, 0.0), s.mask, factor)
            rms = float(np.sqrt(np.mean(d[m] ** 2))) if m.any() else 1.0
            self._levels[factor] = ((d / (rms or 1.0)).astype(np.float32), m)
        return self._levels[factor]

    def to_bytes(self, form: str = "full") -> bytes:
        """Compressed, self-describing serialisation (npz) for the store.

        Parameters
        ----------
        form : {"full", "levels"}
            "full": the whole canvas (float32) and its mask. "levels": only the pyramid
            levels :data:`STORED_LEVELS` exactly as :meth:`level` returns them (float32, unit
            RMS) and their masks, plus the finest level's RMS so a reader can show it in
            metres: about a quarter of the bytes, with identical comparisons, descriptors and
            screen signatures (:meth:`from_bytes`).
        """
        if form not in FORMS:
            raise BallisticsError(f"unknown storage form {form!r}; use one of {FORMS}")
        if form == "full" and self.stored_levels is not None:
            raise BallisticsError(
                "this casing was stored in the 'levels' form; its full canvas is not kept "
                "(prepare it again from its original scan)"
            )
        s = self.surface
        meta: dict[str, Any] = {
            "version": PREPARE_VERSION,
            "spacing_m": list(s.spacing_m),
            "kind": s.kind,
            "segmentation": self.segmentation,
            # the step from_bytes adds to a levels-form casing is added again on reading
            "provenance": [p for p in s.provenance_dicts() if p["name"] != "stored_levels"],
        }
        if self.quality is not None:
            meta["quality"] = self.quality
        buf = io.BytesIO()
        arrays: dict[str, Any] = {}
        if form == "full":
            arrays["data"] = np.where(s.mask, s.data, 0.0).astype(np.float32)
            arrays["mask"] = np.packbits(s.mask)
        else:
            levels = self.stored_levels or STORED_LEVELS
            for f in levels:
                d, m = self.level(f)
                arrays[f"level{f}_data"] = d
                arrays[f"level{f}_mask"] = np.packbits(m)
            meta["form"] = "levels"
            meta["levels"] = list(levels)
            meta["canvas_px"] = list(s.shape)
            meta["finest_rms"] = self._finest_rms(levels[0])
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        if self.aperture_profile is not None:
            arrays["aperture_profile"] = self.aperture_profile.astype(np.float32)
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    def _finest_rms(self, factor: int) -> float:
        """The RMS :meth:`level` divided level ``factor`` by (its values back in metres)."""
        if self.stored_levels is not None:
            return float(self.surface.provenance[-1].stats["finest_rms"])
        s = self.surface
        d, m = downsample(np.where(s.mask, s.data, 0.0), s.mask, factor)
        return float(np.sqrt(np.mean(d[m] ** 2))) if m.any() else 1.0

    @classmethod
    def from_bytes(cls, raw: bytes) -> PreparedCasing:
        """Inverse of :meth:`to_bytes` (either form); raises BallisticsError on anything else.

        A "levels" blob gives a casing whose :meth:`level` returns the stored arrays (other
        levels raise) and whose ``surface`` is the finest stored level, in metres, repeated
        onto the canvas grid (what a comparison picture shows: the cells' resolution)."""
        from .scan import Step

        levels: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                if meta.get("form") == "levels":
                    for f in meta["levels"]:
                        d = z[f"level{f}_data"].astype(np.float32)
                        m = np.unpackbits(z[f"level{f}_mask"])[: d.size].reshape(d.shape)
                        levels[int(f)] = (d, m.astype(bool))
                    data = mask = None
                else:
                    data = z["data"].astype(np.float64)
                    mask = np.unpackbits(z["mask"])[: data.size].reshape(data.shape).astype(bool)
                prof = z["aperture_profile"].astype(np.float64) if "aperture_profile" in z else None
        except Exception as exc:  # any decoding failure means the blob is not ours
            raise BallisticsError(f"stored surface is unreadable: {exc}") from exc
        steps = tuple(Step(p["name"], p["params"], p["stats"]) for p in meta["provenance"])
        quality = meta.get("quality")  # absent in blobs written before quality records
        quality = quality if isinstance(quality, dict) else None
        if data is None or mask is None:
            f = int(meta["levels"][0])
            d, m = levels[f]
            shape = tuple(int(n) for n in meta["canvas_px"])
            data = np.zeros(shape, np.float64)
            mask = np.zeros(shape, bool)
            rep_d = np.repeat(np.repeat(d.astype(np.float64) * meta["finest_rms"], f, 0), f, 1)
            rep_m = np.repeat(np.repeat(m, f, 0), f, 1)
            data[: rep_d.shape[0], : rep_d.shape[1]] = rep_d
            mask[: rep_m.shape[0], : rep_m.shape[1]] = rep_m
            steps += (
                Step(
                    "stored_levels",
                    {"levels": [int(x) for x in meta["levels"]]},
                    {"finest_rms": float(meta["finest_rms"])},
                ),
            )
            surface = Scan(
                np.where(mask, data, np.nan), mask, tuple(meta["spacing_m"]), meta["kind"], steps
            )
            return cls(
                surface,
                meta["segmentation"],
                prof,
                quality,
                levels,
                tuple(int(x) for x in meta["levels"]),
            )
        surface = Scan(
            np.where(mask, data, np.nan), mask, tuple(meta["spacing_m"]), meta["kind"], steps
        )
        return cls(surface, meta["segmentation"], prof, quality)


def _crop_centred(scan: Scan, mask: np.ndarray, center: tuple[float, float], half: int) -> Scan:
    """Square crop of side 2*half+1 around ``center`` (row, col), padding with invalid."""
    r0, c0 = round(center[0]) - half, round(center[1]) - half
    size = 2 * half + 1
    out = np.full((size, size), np.nan)
    m = np.zeros((size, size), bool)
    rs, cs = max(r0, 0), max(c0, 0)
    re, ce = min(r0 + size, scan.shape[0]), min(c0 + size, scan.shape[1])
    if re <= rs or ce <= cs:
        raise SegmentationError("primer centre lies outside the scan")
    out[rs - r0 : re - r0, cs - c0 : ce - c0] = scan.data[rs:re, cs:ce]
    m[rs - r0 : re - r0, cs - c0 : ce - c0] = mask[rs:re, cs:ce]
    return scan.evolve(
        "crop_to_primer",
        {"center_px": [float(center[0]), float(center[1])], "half_size_px": half},
        {"valid_points": int(m.sum())},
        data=out,
        mask=m,
    )


def aperture_profile(scan: Scan, seg: Segmentation, spacing_m: float) -> np.ndarray | None:
    """Striation profile across the aperture-shear band, or None when there is no band.

    The striae run away from the firing-pin centre along ``seg.aperture_shear_angle_deg``;
    heights in the band (plane removed) are averaged along them and binned across them every
    ``spacing_m`` metres, so the profile is independent of the casing's rotation.

    Returns
    -------
    ndarray of shape (L,), float64, metres (or intensity for images); None if L < 16.
    """
    band = seg.aperture_shear_mask
    pin = seg.firing_pin_center  # None when the pin was not found (then there is no band)
    if band is None or seg.aperture_shear_angle_deg is None or pin is None:
        return None
    band = band & scan.mask
    rows, cols = np.nonzero(band)
    if rows.size < 64:
        return None
    a = math.radians(seg.aperture_shear_angle_deg)
    dy = (rows - pin[0]) * scan.spacing_m[0]
    dx = (cols - pin[1]) * scan.spacing_m[1]
    u = math.cos(a) * dx + math.sin(a) * dy
    v = -math.sin(a) * dx + math.cos(a) * dy
    z = scan.data[rows, cols]
    design = np.stack([np.ones_like(u), u, v], axis=1)
    coef, *_ = np.linalg.lstsq(design, z, rcond=None)
    z = z - design @ coef
    idx = np.floor((v - v.min()) / spacing_m).astype(int)
    counts = np.bincount(idx)
    sums = np.bincount(idx, weights=z)
    ok = counts >= 3
    if int(ok.sum()) < 16:
        return None
    prof = np.interp(np.arange(counts.size), np.flatnonzero(ok), sums[ok] / counts[ok])
    return prof


def image_conditioning_for(
    short_cutoff_um: float | None,
    long_cutoff_um: float | None,
    image_conditioning: ImageConditioning | None = None,
) -> ImageConditioning:
    """The :class:`ImageConditioning` :func:`prepare` applies to a 2-D image.

    ``image_conditioning`` when given; else :data:`DEFAULT_IMAGE_CONDITIONING` when the
    cut-offs are the topography defaults (16 and 250 um: not chosen for images); else the
    given cut-offs (a long cut-off of None keeps the image default's).
    """
    if image_conditioning is not None:
        return image_conditioning
    if (short_cutoff_um, long_cutoff_um) == (
        condition.DEFAULT_SHORT_CUTOFF_UM,
        condition.DEFAULT_LONG_CUTOFF_UM,
    ):
        return DEFAULT_IMAGE_CONDITIONING
    return ImageConditioning(
        short_cutoff_um=short_cutoff_um,
        long_cutoff_um=long_cutoff_um or DEFAULT_IMAGE_CONDITIONING.long_cutoff_um,
    )


def condition_breech_face(
    scan: Scan,
    *,
    short_cutoff_um: float | None = condition.DEFAULT_SHORT_CUTOFF_UM,
    long_cutoff_um: float | None = condition.DEFAULT_LONG_CUTOFF_UM,
    spacing_m: float = CANVAS_SPACING_M,
    image_conditioning: ImageConditioning | None = None,
) -> Scan:
    """The conditioning chain for a cropped breech face (topography or 2-D image; for images
    see :func:`image_conditioning_for`)."""
    if scan.kind == "topography":
        s = condition.level(scan, method="sphere")
        s = condition.remove_outliers(s)
        s = condition.bandpass(s, short_cutoff_um=short_cutoff_um, long_cutoff_um=long_cutoff_um)
    else:
        s = condition_image(
            scan, image_conditioning_for(short_cutoff_um, long_cutoff_um, image_conditioning)
        )
    return condition.resample(s, spacing_m=spacing_m)


def prepare(
    scan: Scan,
    *,
    spacing_m: float = CANVAS_SPACING_M,
    short_cutoff_um: float | None = condition.DEFAULT_SHORT_CUTOFF_UM,
    long_cutoff_um: float | None = condition.DEFAULT_LONG_CUTOFF_UM,
    image_conditioning: ImageConditioning | None = None,
) -> PreparedCasing:
    """Segment, crop, condition and centre a scan for description and comparison.

    Parameters
    ----------
    scan : Scan
        Raw or pre-cropped topography, or a 2-D image.
    spacing_m : float
        Canvas spacing in metres (default 6.25e-6).
    short_cutoff_um, long_cutoff_um : float or None
        Band-pass cut-offs in micrometres (see :func:`ballistics.condition.bandpass`) of a
        topography. For a 2-D image, the defaults select
        :data:`ballistics.image_condition.DEFAULT_IMAGE_CONDITIONING` (40-400 um) and other
        values are used as the image's cut-offs (see :func:`image_conditioning_for`).
    image_conditioning : ImageConditioning, optional
        How a 2-D image is conditioned (:mod:`ballistics.image_condition`); overrides the
        cut-offs for images. Ignored for topographies.

    Returns
    -------
    PreparedCasing
    """
    seg = segment(scan)
    sy, sx = scan.spacing_m
    half = math.ceil(seg.primer_radius * 1.04) + 2
    crop = _crop_centred(scan, seg.breech_face_mask & scan.mask, seg.primer_center, half)
    cond = condition_breech_face(
        crop,
        short_cutoff_um=short_cutoff_um,
        long_cutoff_um=long_cutoff_um,
        spacing_m=spacing_m,
        image_conditioning=image_conditioning,
    )
    # Sub-pixel re-centring: the crop was centred on the rounded primer centre.
    scale = (sy / spacing_m, sx / spacing_m)
    frac = (
        (seg.primer_center[0] - round(seg.primer_center[0])) * scale[0],
        (seg.primer_center[1] - round(seg.primer_center[1])) * scale[1],
    )
    # A multiple of 16 keeps the centre exact at every pyramid level and makes padding two
    # canvases to a common size symmetric (see compare._same_canvas).
    size = -(-max(cond.shape) // _CANVAS_MULTIPLE) * _CANVAS_MULTIPLE
    data = np.zeros((size, size), np.float64)
    mask = np.zeros((size, size), bool)
    data[: cond.shape[0], : cond.shape[1]] = np.where(cond.mask, cond.data, 0.0)
    mask[: cond.shape[0], : cond.shape[1]] = cond.mask
    target = (size - 1) / 2.0
    now = ((cond.shape[0] - 1) / 2.0 + frac[0], (cond.shape[1] - 1) / 2.0 + frac[1])
    d, m = rotate(data, mask, 0.0, (target - now[0], target - now[1]))
    surface = cond.evolve(
        "centre_canvas",
        {"canvas_px": size},
        {"valid_fraction": float(m.mean())},
        data=np.where(m, d.astype(np.float64), np.nan),
        mask=m,
    )
    if int(m.sum()) < 1000:
        raise SegmentationError(
            f"only {int(m.sum())} valid breech-face points after conditioning; the scan is too "
            "small, too noisy or not a cartridge-case head"
        )
    summary = seg.as_dict()
    if scan.kind != "topography":
        # the noise estimate's band gain follows the cut-off the image was filtered with
        short_cutoff_um = image_conditioning_for(
            short_cutoff_um, long_cutoff_um, image_conditioning
        ).short_cutoff_um
    quality = quality_record(surface, crop, summary, short_cutoff_um=short_cutoff_um)
    return PreparedCasing(surface, summary, aperture_profile(scan, seg, spacing_m), quality)
