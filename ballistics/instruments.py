"""Instrument models: what different scanners and cameras record of one fired surface.

Real labs measure casings with different instruments, and each leaves its own signature on
the data: its lateral transfer (how much fine detail survives), its noise, where it fails to
measure (dropouts) and how it distorts heights. Each model here is a pure function

    ``model(surface, params, *, rng) -> Scan``

of a :class:`ballistics.synth.FiredSurface` (the true surface, see
:func:`ballistics.synth.fired_surface`), a frozen parameter record and a seeded generator. The
same arguments give bit-identical output.

3-D (``kind="topography"``, heights in metres, NaN where not measured):

* :func:`confocal` - sharp lateral transfer, fine white height noise; the objective's numerical
  aperture cannot see slopes beyond ~35 degrees, so steep walls drop out or produce spikes
  ("bat wings"); a few small dust dropouts.
* :func:`focus_variation` - smoother transfer; the focus measure needs texture, so smooth,
  low-texture areas are noisier and drop out; very steep walls drop out.
* :func:`photometric_stereo` - ~7.4 um pixels, smooth transfer; heights come from integrating
  estimated surface normals, so noise in the normals becomes low-frequency drift and the
  field warps; the normal estimate saturates on steep slopes, biasing heights there (a
  shallower firing pin, a softer primer step); every pixel is valid.

2-D (``kind="image"``, relative intensity 0..1, every pixel valid): a metal surface reflects
with a diffuse part and a specular lobe around the mirror direction; the camera adds
exposure, vignetting, shot and read noise, gamma and quantisation.

* :func:`ring_light` - light from all azimuths at one elevation (symmetric about the optical
  axis: the image turns with the casing). Two variants in :data:`INSTRUMENTS`, both unlike
  :func:`ballistics.render.render_ring_light` (Lambertian, 30 degrees, no camera):
  ``ring_low`` (grazing, glossy, over-exposed glints) and ``ring_high`` (steeper, mostly
  diffuse, 8-bit camera with sRGB-like gamma).
* :func:`side_light` - one directional light (azimuth, elevation): the shading is a
  directional derivative of the height and turns *against* the casing (it inverts when the
  light turns by 180 degrees). The image-frame light azimuth is recorded on the scan's
  provenance and on :attr:`ballistics.synth.Truth.light_azimuth_deg`.
* :func:`coaxial_light` - light along the optical axis (through the objective): flat facets
  bright, tilted ones dark.

Pixels: each model takes ``pixel_um`` (2.5-7.5 um in :data:`INSTRUMENTS`); when it differs from
the surface spacing the surface is low-pass filtered and resampled first, and
:func:`record` rescales the ground truth to the new pixels.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import cv2
import numpy as np
from scipy.special import ndtr

from .errors import BallisticsError
from .scan import Kind, Scan
from .synth import FiredSurface, Truth, _blobs, _smooth_noise

__all__ = [
    "INSTRUMENTS",
    "CameraParams",
    "CoaxialParams",
    "ConfocalParams",
    "FocusVariationParams",
    "Instrument",
    "PhotometricStereoParams",
    "RingLightParams",
    "SideLightParams",
    "coaxial_light",
    "confocal",
    "focus_variation",
    "instrument_rng",
    "photometric_stereo",
    "record",
    "ring_light",
    "side_light",
]

# --------------------------------------------------------------------------------------
# parameters


@dataclass(frozen=True)
class ConfocalParams:
    """Confocal microscope. Lengths in micrometres, angles in degrees.

    Attributes
    ----------
    pixel_um : float
        Pixel spacing of the recorded scan.
    psf_sigma_um : float
        Gaussian lateral transfer (point-spread) width; small = sharp.
    noise_um : float
        RMS of the white height noise.
    max_slope_deg : float
        Slopes beyond this are not seen by the objective: the chance of a dropout rises
        linearly from 0 here to 1 at ``max_slope_deg + 10``.
    steep_spike_frac : float
        Of the pixels lost on steep slopes, the fraction recorded as a spike instead of NaN.
    spike_um : float
        Largest spike height (spikes are 0.2-1 times this, either sign).
    dropout_frac : float
        Approximate area fraction of small dust dropouts (~20 um blobs).
    """

    pixel_um: float = 3.125
    psf_sigma_um: float = 0.6
    noise_um: float = 0.012
    max_slope_deg: float = 35.0
    steep_spike_frac: float = 0.1
    spike_um: float = 20.0
    dropout_frac: float = 0.003


@dataclass(frozen=True)
class FocusVariationParams:
    """Focus-variation microscope. Lengths in micrometres, angles in degrees.

    Attributes
    ----------
    pixel_um : float
        Pixel spacing of the recorded scan.
    psf_sigma_um : float
        Gaussian lateral transfer width (the focus window smooths more than confocal).
    noise_um : float
        RMS height noise where the surface has ample texture.
    texture_ref_um : float
        Local texture (RMS of the fine high-pass height) at which the noise doubles; the
        noise grows as ``noise_um * (1 + texture_ref_um / texture)``, capped at 20x.
    low_texture_um : float
        Below this local texture the focus measure fails: the pixel drops out with a
        probability rising to 1 at half of it.
    max_slope_deg : float
        Slopes beyond this drop out.
    dropout_frac : float
        Approximate area fraction of random dropout blobs (~40 um).
    """

    pixel_um: float = 4.4
    psf_sigma_um: float = 2.5
    noise_um: float = 0.04
    texture_ref_um: float = 0.25
    low_texture_um: float = 0.06
    max_slope_deg: float = 75.0
    dropout_frac: float = 0.01


@dataclass(frozen=True)
class PhotometricStereoParams:
    """Photometric-stereo (elastomer gel) scanner. Lengths in micrometres, angles in degrees.

    Attributes
    ----------
    pixel_um : float
        Pixel spacing of the recorded scan (~7.4 um on commercial instruments).
    psf_sigma_um : float
        Gaussian lateral transfer width (the gel and the normal estimate smooth).
    normal_noise : float
        RMS of the white noise added to the estimated slopes (dimensionless, dz/dx); it
        integrates into low-frequency height drift.
    slope_saturation_deg : float
        Estimated slopes saturate around this angle: ``g / sqrt(1 + (g / tan(sat))^2)``.
        Heights on steep slopes come out biased (too shallow).
    warp_um : float
        RMS of a smooth warp of the field (integration of biased normals), metres-scale
        wavelength ``warp_wavelength_um``.
    warp_wavelength_um : float
        Correlation length of the warp.
    bowl_um : float
        Largest height of a random bowl (quadratic) across the field.
    """

    pixel_um: float = 7.4
    psf_sigma_um: float = 6.0
    normal_noise: float = 0.004
    slope_saturation_deg: float = 40.0
    warp_um: float = 1.5
    warp_wavelength_um: float = 1500.0
    bowl_um: float = 4.0


@dataclass(frozen=True)
class CameraParams:
    """Optics and sensor of a 2-D instrument (shared by every 2-D parameter record).

    Attributes
    ----------
    pixel_um : float
        Pixel spacing of the image, micrometres.
    psf_sigma_um : float
        Gaussian lens blur, micrometres.
    exposure : float
        Gain on the radiance before the sensor clips at 1 (above 1: glints saturate).
    gamma : float
        Output = clipped linear intensity ** gamma (1: linear sensor; 0.45: sRGB-like).
    shot_noise : float
        Photon noise: RMS ``shot_noise * sqrt(I)`` at linear intensity ``I``.
    read_noise : float
        RMS of the signal-independent sensor noise.
    bits : int
        Quantisation of the output (8, 12 or 16).
    vignetting : float
        Fractional intensity loss at the field-of-view corners (quadratic fall-off).
    """

    pixel_um: float = 5.0
    psf_sigma_um: float = 3.0
    exposure: float = 1.0
    gamma: float = 1.0
    shot_noise: float = 0.01
    read_noise: float = 0.005
    bits: int = 12
    vignetting: float = 0.0


@dataclass(frozen=True)
class RingLightParams(CameraParams):
    """Ring light around the objective. Lengths in micrometres, angles in degrees.

    Attributes
    ----------
    elevation_deg : float
        Elevation of the light above the surface plane (low = grazing).
    lobe_deg : float
        Width (sigma) of the specular lobe around the mirror direction.
    specular : float
        Share of the specular lobe in the reflectance (0 = matte, 1 = mirror-like).
    azimuths : int
        Light sources around the ring.

    Plus the camera fields of :class:`CameraParams`.
    """

    elevation_deg: float = 20.0
    lobe_deg: float = 10.0
    specular: float = 0.5
    azimuths: int = 16


@dataclass(frozen=True)
class SideLightParams(CameraParams):
    """One directional (side) light. Lengths in micrometres, angles in degrees.

    Attributes
    ----------
    azimuth_deg : float or None
        Image-frame direction the light comes *from*, counter-clockwise from +col in
        (x = col, y = row) coordinates. None: drawn uniformly from ``rng`` for each scan.
    elevation_deg : float
        Elevation of the light above the surface plane.
    lobe_deg, specular : float
        As for :class:`RingLightParams`.

    Plus the camera fields of :class:`CameraParams`.
    """

    azimuth_deg: float | None = 135.0
    elevation_deg: float = 25.0
    lobe_deg: float = 12.0
    specular: float = 0.3


@dataclass(frozen=True)
class CoaxialParams(CameraParams):
    """Coaxial light (through the objective, along the optical axis).

    Attributes
    ----------
    lobe_deg : float
        Width (sigma) of the specular lobe: facets tilted by more than ~lobe_deg / 2 turn
        dark.
    specular : float
        Share of the specular lobe in the reflectance.

    Plus the camera fields of :class:`CameraParams`.
    """

    lobe_deg: float = 8.0
    specular: float = 0.8


Params = (
    ConfocalParams
    | FocusVariationParams
    | PhotometricStereoParams
    | RingLightParams
    | SideLightParams
    | CoaxialParams
)

# --------------------------------------------------------------------------------------
# shared steps


def _check_surface(surface: FiredSurface) -> None:
    h = np.asarray(surface.height_m)
    if h.ndim != 2 or min(h.shape) < 16:
        raise BallisticsError(
            f"surface height must be a 2-D array of at least 16x16; got {h.shape}"
        )
    if not np.isfinite(h).all():
        raise BallisticsError("the true surface must be finite everywhere (no NaN)")


def _check_pixel(pixel_um: float) -> None:
    if not (0.5 <= pixel_um <= 50.0):
        raise BallisticsError(f"pixel_um must be between 0.5 and 50 micrometres; got {pixel_um!r}")


def _to_pixels(surface: FiredSurface, pixel_um: float, psf_sigma_um: float) -> np.ndarray:
    """Apply the lateral transfer (Gaussian PSF) and resample to ``pixel_um`` pixels.

    The output grid keeps the field of view's origin: output pixel centre ``i`` lies at input
    coordinate ``(i + 0.5) * p / s - 0.5``. Down-sampling adds the anti-alias blur a sensor's
    pixel area gives (sigma = half the pixel).

    Returns
    -------
    ndarray of shape (M', N'), float64
        Heights in metres, ``M' = floor(M * s / p)``.
    """
    _check_pixel(pixel_um)
    s = surface.spacing_m
    p = pixel_um * 1e-6
    h = np.asarray(surface.height_m, dtype=np.float64)
    sigma_in = psf_sigma_um * 1e-6 / s
    if p > s * 1.0001:
        sigma_in = math.hypot(sigma_in, 0.5 * p / s)
    if sigma_in > 0.05:
        h = np.asarray(
            cv2.GaussianBlur(h, (0, 0), sigma_in, borderType=cv2.BORDER_REFLECT), np.float64
        )
    if math.isclose(p, s, rel_tol=1e-9):
        return np.asarray(h)
    k = p / s
    m, n = (math.floor(d / k) for d in h.shape)
    mat = np.array([[k, 0.0, 0.5 * k - 0.5], [0.0, k, 0.5 * k - 0.5]])
    out = cv2.warpAffine(
        h,
        mat,
        (n, m),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT,
    )
    return np.asarray(out, dtype=np.float64)


def _slopes(h: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray]:
    """(dz/dy, dz/dx), dimensionless."""
    gy, gx = np.gradient(h, p)
    return gy, gx


def _unit_noise(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return rng.standard_normal(shape)


def _topography(h: np.ndarray, valid: np.ndarray, p: float, name: str, params: Any) -> Scan:
    z = np.where(valid, h, np.nan)
    rec = {"instrument": name, **asdict(params)}
    return Scan(z, valid, (p, p), "topography").evolve(
        f"instrument.{name}", rec, {"valid_fraction": float(valid.mean())}
    )


# --------------------------------------------------------------------------------------
# 3-D instruments


def confocal(
    surface: FiredSurface,
    params: ConfocalParams = ConfocalParams(),
    *,
    rng: np.random.Generator,
) -> Scan:
    """What a confocal microscope records of ``surface`` (see :class:`ConfocalParams`).

    Returns
    -------
    Scan
        ``kind="topography"``, heights in metres at ``params.pixel_um`` spacing; NaN and
        ``mask`` False where not measured.
    """
    _check_surface(surface)
    p = params.pixel_um * 1e-6
    h = _to_pixels(surface, params.pixel_um, params.psf_sigma_um)
    shape = (int(h.shape[0]), int(h.shape[1]))
    gy, gx = _slopes(h, p)
    slope = np.degrees(np.arctan(np.hypot(gx, gy)))
    z = h + params.noise_um * 1e-6 * _unit_noise(rng, shape)
    p_lost = np.clip((slope - params.max_slope_deg) / 10.0, 0.0, 1.0)
    lost = rng.random(shape) < p_lost
    spike = lost & (rng.random(shape) < params.steep_spike_frac)
    amp = rng.uniform(0.2, 1.0, shape) * rng.choice([-1.0, 1.0], shape)
    z = np.where(spike, z + params.spike_um * 1e-6 * amp, z)
    dust = _blobs(rng, shape, params.dropout_frac, 20e-6 / p) if params.dropout_frac > 0 else None
    valid = ~(lost & ~spike)
    if dust is not None:
        valid &= ~dust
    return _topography(z, valid, p, "confocal", params)


def _local_texture(h: np.ndarray, p: float) -> np.ndarray:
    """RMS of the fine (< ~30 um) height detail around each pixel, metres."""
    fine = h - cv2.GaussianBlur(h, (0, 0), max(1.0, 8e-6 / p), borderType=cv2.BORDER_REFLECT)
    e = cv2.GaussianBlur(fine * fine, (0, 0), max(1.0, 12e-6 / p), borderType=cv2.BORDER_REFLECT)
    return np.asarray(np.sqrt(np.maximum(e, 0.0)))


def focus_variation(
    surface: FiredSurface,
    params: FocusVariationParams = FocusVariationParams(),
    *,
    rng: np.random.Generator,
) -> Scan:
    """What a focus-variation microscope records of ``surface``.

    See :class:`FocusVariationParams`. The height noise is slightly correlated (the focus
    window) and grows where the surface has little fine texture; such areas also drop out.

    Returns
    -------
    Scan
        ``kind="topography"``, heights in metres at ``params.pixel_um`` spacing.
    """
    _check_surface(surface)
    p = params.pixel_um * 1e-6
    h = _to_pixels(surface, params.pixel_um, params.psf_sigma_um)
    shape = (int(h.shape[0]), int(h.shape[1]))
    tex = _local_texture(h, p)
    gain = np.minimum(1.0 + params.texture_ref_um * 1e-6 / np.maximum(tex, 1e-12), 20.0)
    w = np.asarray(cv2.GaussianBlur(_unit_noise(rng, shape), (0, 0), 0.7), np.float64)
    w = w / (w.std() + 1e-30)
    z = h + params.noise_um * 1e-6 * gain * w
    lo = params.low_texture_um * 1e-6
    p_lost = np.clip((lo - tex) / (0.5 * lo), 0.0, 1.0) if lo > 0 else np.zeros(shape)
    # patchy, not speckled: compare with smooth noise mapped to uniform (~10 um patches)
    lost = ndtr(_smooth_noise(rng, shape, max(1.0, 10e-6 / p))) < p_lost
    gy, gx = _slopes(h, p)
    lost |= np.degrees(np.arctan(np.hypot(gx, gy))) > params.max_slope_deg
    if params.dropout_frac > 0:
        lost |= _blobs(rng, shape, params.dropout_frac, 40e-6 / p)
    return _topography(z, ~lost, p, "focus_variation", params)


def _integrate(gx: np.ndarray, gy: np.ndarray, p: float) -> np.ndarray:
    """Least-squares height from slopes (Fourier integration on the mirrored field).

    Mirroring (even extension of the height) keeps the borders free of wrap-around.
    """
    m, n = gx.shape
    ex = np.block([[gx, -gx[:, ::-1]], [gx[::-1, :], -gx[::-1, ::-1]]])
    ey = np.block([[gy, gy[:, ::-1]], [-gy[::-1, :], -gy[::-1, ::-1]]])
    wy = 2 * np.pi * np.fft.fftfreq(2 * m, p)[:, None]
    wx = 2 * np.pi * np.fft.fftfreq(2 * n, p)[None, :]
    den = wx * wx + wy * wy
    den[0, 0] = 1.0
    zf = (-1j * wx * np.fft.fft2(ex) - 1j * wy * np.fft.fft2(ey)) / den
    zf[0, 0] = 0.0
    return np.asarray(np.real(np.fft.ifft2(zf))[:m, :n])


def photometric_stereo(
    surface: FiredSurface,
    params: PhotometricStereoParams = PhotometricStereoParams(),
    *,
    rng: np.random.Generator,
) -> Scan:
    """What a photometric-stereo scanner records of ``surface``.

    Slopes are estimated (saturating on steep walls, with white noise) and integrated back
    to heights; a smooth warp and a bowl follow. Every pixel is valid.

    Returns
    -------
    Scan
        ``kind="topography"``, heights in metres at ``params.pixel_um`` spacing.
    """
    _check_surface(surface)
    p = params.pixel_um * 1e-6
    h = _to_pixels(surface, params.pixel_um, params.psf_sigma_um)
    shape = (int(h.shape[0]), int(h.shape[1]))
    gy, gx = _slopes(h, p)
    g = np.hypot(gx, gy)
    sat = math.tan(math.radians(params.slope_saturation_deg))
    f = 1.0 / np.sqrt(1.0 + (g / sat) ** 2)
    gx = gx * f + params.normal_noise * _unit_noise(rng, shape)
    gy = gy * f + params.normal_noise * _unit_noise(rng, shape)
    z = _integrate(gx, gy, p)
    # keep the mean height of the original field (the integration loses the constant)
    z += float(np.mean(h) - np.mean(z))
    if params.warp_um > 0:
        z += (
            params.warp_um
            * 1e-6
            * _smooth_noise(rng, shape, params.warp_wavelength_um / 2 / params.pixel_um)
        )
    if params.bowl_um > 0:
        m, n = shape
        yy = (np.arange(m) - (m - 1) / 2)[:, None] / (m / 2)
        xx = (np.arange(n) - (n - 1) / 2)[None, :] / (n / 2)
        a, b, c = rng.uniform(-1.0, 1.0, 3)
        z += params.bowl_um * 1e-6 * (a * xx * xx + b * yy * yy + c * xx * yy) / 3.0
    return _topography(z, np.ones(shape, bool), p, "photometric_stereo", params)


# --------------------------------------------------------------------------------------
# 2-D instruments


def _normals(h: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gy, gx = _slopes(h, p)
    nz = 1.0 / np.sqrt(1.0 + gx * gx + gy * gy)
    return -gx * nz, -gy * nz, nz


def _light(azimuth_deg: float, elevation_deg: float) -> tuple[float, float, float]:
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return (math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el))


def _reflect(
    n: tuple[np.ndarray, np.ndarray, np.ndarray],
    light: tuple[float, float, float],
    specular: float,
    lobe_deg: float,
) -> np.ndarray:
    """Radiance towards the camera (+z) for one light: diffuse + Gaussian specular lobe.

    The lobe is a function of the angle between the normal and the half vector of the
    light and view directions (a Torrance-Sparrow-like facet model); both terms are 1 at
    best, so the radiance lies in 0..1.
    """
    nx, ny, nz = n
    lx, ly, lz = light
    diffuse = np.maximum(nx * lx + ny * ly + nz * lz, 0.0)
    hx, hy, hz = lx, ly, lz + 1.0
    hn = math.sqrt(hx * hx + hy * hy + hz * hz)
    cos_a = np.clip((nx * hx + ny * hy + nz * hz) / hn, -1.0, 1.0)
    lobe = math.radians(max(lobe_deg, 1e-3))
    spec = np.exp(-0.5 * (np.arccos(cos_a) / lobe) ** 2)
    return np.asarray((1.0 - specular) * diffuse + specular * spec)


def _camera(
    radiance: np.ndarray, params: CameraParams, p: float, rng: np.random.Generator
) -> np.ndarray:
    """Lens blur, vignetting, exposure, noise, clipping, gamma and quantisation."""
    if params.bits not in (8, 12, 16):
        raise BallisticsError(f"bits must be 8, 12 or 16; got {params.bits!r}")
    if not params.gamma > 0:
        raise BallisticsError(f"gamma must be positive; got {params.gamma!r}")
    img = radiance
    sigma = params.psf_sigma_um * 1e-6 / p
    if sigma > 0.05:
        img = cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    m, n = img.shape
    if params.vignetting > 0:
        yy = (np.arange(m) - (m - 1) / 2)[:, None] / (m / 2)
        xx = (np.arange(n) - (n - 1) / 2)[None, :] / (n / 2)
        img = img * (1.0 - params.vignetting * (xx * xx + yy * yy) / 2.0)
    img = params.exposure * img
    sd = np.sqrt(params.shot_noise**2 * np.maximum(img, 0.0) + params.read_noise**2)
    img = np.clip(img + sd * rng.standard_normal((m, n)), 0.0, 1.0) ** params.gamma
    levels = float(2**params.bits - 1)
    return np.asarray(np.round(img * levels) / levels)


def _image(img: np.ndarray, p: float, name: str, params: Any, extra: dict[str, Any]) -> Scan:
    rec = {"instrument": name, **asdict(params), **extra}
    valid = np.ones(img.shape, bool)
    return Scan(img, valid, (p, p), "image").evolve(
        f"instrument.{name}", rec, {"mean_intensity": float(img.mean())}
    )


def ring_light(
    surface: FiredSurface,
    params: RingLightParams = RingLightParams(),
    *,
    rng: np.random.Generator,
) -> Scan:
    """A 2-D image of ``surface`` under a ring light (see :class:`RingLightParams`).

    Returns
    -------
    Scan
        ``kind="image"``, intensity 0..1 at ``params.pixel_um`` spacing, all valid.
    """
    _check_surface(surface)
    if params.azimuths < 3:
        raise BallisticsError(f"a ring light needs at least 3 azimuths; got {params.azimuths}")
    p = params.pixel_um * 1e-6
    h = _to_pixels(surface, params.pixel_um, 0.0)
    nrm = _normals(h, p)
    rad = np.zeros(h.shape)
    for k in range(params.azimuths):
        light = _light(360.0 * k / params.azimuths, params.elevation_deg)
        rad += _reflect(nrm, light, params.specular, params.lobe_deg)
    rad /= params.azimuths
    return _image(_camera(rad, params, p, rng), p, "ring_light", params, {})


def side_light(
    surface: FiredSurface,
    params: SideLightParams = SideLightParams(),
    *,
    rng: np.random.Generator,
) -> Scan:
    """A 2-D image of ``surface`` under one directional light (see :class:`SideLightParams`).

    The image-frame light azimuth used is recorded as ``light_azimuth_deg`` in the last
    provenance step's parameters.

    Returns
    -------
    Scan
        ``kind="image"``, intensity 0..1 at ``params.pixel_um`` spacing, all valid.
    """
    _check_surface(surface)
    az = params.azimuth_deg
    if az is None:
        az = float(rng.uniform(0.0, 360.0))
    az = float(az) % 360.0
    p = params.pixel_um * 1e-6
    h = _to_pixels(surface, params.pixel_um, 0.0)
    rad = _reflect(
        _normals(h, p), _light(az, params.elevation_deg), params.specular, params.lobe_deg
    )
    img = _camera(rad, params, p, rng)
    return _image(img, p, "side_light", params, {"light_azimuth_deg": az})


def coaxial_light(
    surface: FiredSurface,
    params: CoaxialParams = CoaxialParams(),
    *,
    rng: np.random.Generator,
) -> Scan:
    """A 2-D image of ``surface`` under coaxial light (see :class:`CoaxialParams`).

    Returns
    -------
    Scan
        ``kind="image"``, intensity 0..1 at ``params.pixel_um`` spacing, all valid.
    """
    _check_surface(surface)
    p = params.pixel_um * 1e-6
    h = _to_pixels(surface, params.pixel_um, 0.0)
    rad = _reflect(_normals(h, p), (0.0, 0.0, 1.0), params.specular, params.lobe_deg)
    return _image(_camera(rad, params, p, rng), p, "coaxial_light", params, {})


# --------------------------------------------------------------------------------------
# the catalogue


@dataclass(frozen=True)
class Instrument:
    """One named instrument of :data:`INSTRUMENTS`.

    Attributes
    ----------
    name : str
    kind : {"topography", "image"}
    model : callable
        ``model(surface, params, *, rng) -> Scan``.
    params : parameter record
        The instrument's settings (``pixel_um`` is replaced per scan from ``pixels_um``).
    pixels_um : tuple of float
        Pixel spacings a corpus draws from for this instrument.
    description : str
    """

    name: str
    kind: Kind
    model: Callable[..., Scan]
    params: Any
    pixels_um: tuple[float, ...]
    description: str


INSTRUMENTS: dict[str, Instrument] = {
    i.name: i
    for i in (
        Instrument(
            "confocal",
            "topography",
            confocal,
            ConfocalParams(),
            (2.5, 3.125),
            "confocal microscope: sharp, fine noise, steep-slope dropouts and spikes",
        ),
        Instrument(
            "focus_variation",
            "topography",
            focus_variation,
            FocusVariationParams(),
            (3.5, 4.4, 5.0),
            "focus variation: smoother, noisy and missing where texture is low",
        ),
        Instrument(
            "photometric_stereo",
            "topography",
            photometric_stereo,
            PhotometricStereoParams(),
            (7.4,),
            "photometric stereo gel scanner: 7.4 um, integration drift, slope bias, no dropouts",
        ),
        Instrument(
            "ring_low",
            "image",
            ring_light,
            RingLightParams(
                pixel_um=4.0,
                elevation_deg=12.0,
                lobe_deg=8.0,
                specular=0.6,
                exposure=3.0,
                gamma=0.8,
                shot_noise=0.01,
                read_noise=0.004,
                bits=12,
                psf_sigma_um=3.0,
                vignetting=0.15,
            ),
            (4.0, 5.0),
            "grazing glossy ring light, over-exposed glints, 12-bit camera",
        ),
        Instrument(
            "ring_high",
            "image",
            ring_light,
            RingLightParams(
                pixel_um=6.0,
                elevation_deg=45.0,
                lobe_deg=20.0,
                specular=0.2,
                exposure=0.9,
                gamma=0.45,
                shot_noise=0.02,
                read_noise=0.01,
                bits=8,
                psf_sigma_um=5.0,
                azimuths=8,
            ),
            (6.0, 7.5),
            "steeper matte ring light (8 LEDs), 8-bit sRGB-like camera",
        ),
        Instrument(
            "side_light",
            "image",
            side_light,
            SideLightParams(pixel_um=5.0),
            (5.0, 6.25),
            "one directional light at 25 deg elevation, azimuth 135 deg in the image frame",
        ),
        Instrument(
            "coaxial",
            "image",
            coaxial_light,
            CoaxialParams(pixel_um=3.5),
            (3.5, 5.0),
            "coaxial light through the objective: flat bright, tilted dark",
        ),
    )
}
"""The instrument models a corpus can be recorded with, by name."""


def instrument_rng(firearm_seed: int, shot_seed: int, name: str) -> np.random.Generator:
    """The generator :func:`ballistics.synth.write_corpus` uses for one shot and instrument."""
    return np.random.default_rng([firearm_seed, shot_seed, zlib.crc32(name.encode()) & 0x7FFFFFFF])


def _rescaled_truth(truth: Truth, pixel_m: float) -> Truth:
    """Ground truth in the pixels of a scan resampled from ``truth.spacing_m`` to ``pixel_m``."""
    k = truth.spacing_m / pixel_m
    if math.isclose(k, 1.0, rel_tol=1e-9):
        return replace(truth, spacing_m=pixel_m)

    def pt(v: tuple[float, float]) -> tuple[float, float]:
        return ((v[0] + 0.5) * k - 0.5, (v[1] + 0.5) * k - 0.5)

    return replace(
        truth,
        spacing_m=pixel_m,
        primer_center=pt(truth.primer_center),
        primer_radius_px=truth.primer_radius_px * k,
        fp_center=pt(truth.fp_center),
        fp_axes_px=(truth.fp_axes_px[0] * k, truth.fp_axes_px[1] * k),
    )


def record(
    surface: FiredSurface,
    instrument: str,
    *,
    rng: np.random.Generator,
    params: Any | None = None,
) -> tuple[Scan, Truth]:
    """Record ``surface`` with a named instrument of :data:`INSTRUMENTS`.

    Parameters
    ----------
    surface : FiredSurface
    instrument : str
        A key of :data:`INSTRUMENTS`.
    rng : numpy.random.Generator
        Seeded generator of the measurement noise (see :func:`instrument_rng`).
    params : parameter record, optional
        Overrides the instrument's settings (same type as ``INSTRUMENTS[name].params``).
        None: those settings, at the surface's own spacing when it is one of the
        instrument's ``pixels_um`` (no resampling), else at ``params.pixel_um``.

    Returns
    -------
    scan : Scan
    truth : Truth
        The surface's truth in the scan's pixels, with ``instrument`` set (and
        ``light_azimuth_deg`` for a side light).
    """
    if instrument not in INSTRUMENTS:
        raise BallisticsError(
            f"unknown instrument {instrument!r}; choose one of {', '.join(INSTRUMENTS)}"
        )
    inst = INSTRUMENTS[instrument]
    prm = inst.params if params is None else params
    if params is None and any(
        math.isclose(surface.spacing_m, p * 1e-6, rel_tol=1e-6) for p in inst.pixels_um
    ):
        prm = replace(prm, pixel_um=surface.spacing_m * 1e6)
    if type(prm) is not type(inst.params):
        raise BallisticsError(
            f"instrument {instrument!r} takes {type(inst.params).__name__}, "
            f"got {type(prm).__name__}"
        )
    scan = inst.model(surface, prm, rng=rng)
    truth = _rescaled_truth(surface.truth, scan.spacing_m[0])
    az = scan.provenance[-1].params.get("light_azimuth_deg")
    truth = replace(
        truth,
        instrument=instrument,
        light_azimuth_deg=None if az is None else float(az),
    )
    return scan, truth
