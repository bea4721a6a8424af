"""Global, rotation- and translation-invariant descriptors for the index's first stage.

Breech face: the 2-D power spectrum of the conditioned surface is invariant to translation
(centring errors); a rotation of the casing rotates it. Sampling the power spectrum on
frequency rings and keeping the magnitudes of its angular Fourier harmonics makes it invariant
to rotation too, while keeping *how anisotropic* each frequency band is (filing marks,
turning arcs, granular blasting differ). Only even harmonics carry information: the power
spectrum of a real surface is centrosymmetric.

Aperture shear: the magnitude spectrum of the striation profile (shift-invariant).

Vectors are float32 and L2-normalised, for inner-product search. A stored vector records
:data:`EXTRACTOR_VERSION`; vectors of different versions are never compared.
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np

from .pipeline import PREPARE_VERSION, PreparedCasing

#: Downsampling of the 6.25-um canvas before the spectrum (4 -> 25 um).
_FACTOR = 4
_RINGS = 16
_ANGLES = 128
_HARMONICS = 16  # even harmonics 0, 2, ..., 16 -> 9 per ring
_PROFILE_BINS = 32

EXTRACTOR_VERSION = f"bfps-2/{PREPARE_VERSION}"
DESCRIPTOR_DIMS: dict[str, int] = {
    "breech_face": _RINGS * (_HARMONICS // 2 + 1),
    "aperture_shear": _PROFILE_BINS,
}


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.nan_to_num(v.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    n = float(np.linalg.norm(v))
    return (v / n if n > 0 else v).astype(np.float32)


def centred_power(x: np.ndarray) -> np.ndarray:
    """Power spectrum of ``x`` (M, M) under a Hann window, zero frequency at the centre,
    scaled to mean 1: translation-invariant, rotates with ``x``. Shape (M, M), float64."""
    size = x.shape[0]
    window = np.outer(np.hanning(size), np.hanning(size))
    power = np.abs(np.fft.fftshift(np.fft.fft2(x * window))) ** 2
    return power / (power.mean() or 1.0)


def to_polar(img: np.ndarray, radii: int, angles: int) -> np.ndarray:
    """Resample a centred (M, M) spectrum onto (radii, angles): radius 0 .. M/2 (Nyquist),
    angle 0 .. 360 degrees."""
    size = img.shape[0]
    centre = (size / 2.0, size / 2.0)
    flags = cv2.WARP_POLAR_LINEAR + cv2.INTER_LINEAR
    return cv2.warpPolar(img, (radii, angles), centre, size / 2.0, flags).T


def breech_face_descriptor(prepared: PreparedCasing) -> np.ndarray:
    """Ring-wise angular-harmonic magnitudes of the power spectrum, square-rooted.

    Returns
    -------
    ndarray of shape (DESCRIPTOR_DIMS["breech_face"],), float32, unit L2 norm
    """
    d, _ = prepared.level(_FACTOR)
    polar = to_polar(centred_power(d).astype(np.float32), _RINGS * 4, _ANGLES)
    rings = polar.reshape(_RINGS, 4, _ANGLES).mean(axis=1)
    harm = np.abs(np.fft.rfft(rings, axis=1))[:, 0 : _HARMONICS + 1 : 2]
    # Power-law normalisation (as for Fisher vectors in image retrieval): a square root keeps
    # the strongest bands from dominating the inner product.
    return _unit(np.sqrt(harm.ravel()))


def aperture_shear_descriptor(profile: np.ndarray) -> np.ndarray:
    """Magnitude spectrum of a striation profile, in ``_PROFILE_BINS`` log-spaced bands."""
    p = np.asarray(profile, np.float64)
    p = p - p.mean()
    spec = np.abs(np.fft.rfft(p * np.hanning(p.size)))[1:]
    edges = np.unique(np.geomspace(1, spec.size, _PROFILE_BINS + 1).astype(int))
    bands = np.array([spec[a - 1 : b].mean() for a, b in itertools.pairwise(edges)])
    out = np.zeros(_PROFILE_BINS)
    out[: bands.size] = np.sqrt(bands)
    return _unit(out)


def describe(prepared: PreparedCasing) -> dict[str, np.ndarray]:
    """Descriptor per region present on the casing.

    Returns
    -------
    dict
        ``"breech_face"`` always; ``"aperture_shear"`` when a striation profile was found.
        Each value: ndarray of shape (DESCRIPTOR_DIMS[region],), float32, unit L2 norm.
    """
    out = {"breech_face": breech_face_descriptor(prepared)}
    if prepared.aperture_profile is not None and prepared.aperture_profile.size >= 16:
        out["aperture_shear"] = aperture_shear_descriptor(prepared.aperture_profile)
    return out
