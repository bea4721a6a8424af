"""A cheap rotation-aligned screen between the descriptor search and the full comparison.

The power spectrum of a surface does not change when the surface is translated (so primer
centring errors do not matter) and rotates with it. Unwrapped onto polar coordinates
(frequency radius x angle), a rotation of the casing becomes a circular shift along the angle
axis, so two casings are screened by the best correlation of their polar spectra over all
shifts: one small batched FFT per pair, microseconds instead of the ~100 ms of a registration.

Unlike the index descriptor (ring-wise harmonic *magnitudes*, which forget how the rings are
oriented relative to each other), the screen aligns all rings with one common rotation, so it
keeps the joint orientation of the marks. On the 40 Fadul casings it separates known matches
from known non-matches with AUC 0.985 against 0.83 for the descriptor, and keeping the best
10 % of the candidates loses 2 of 126 known-match pairs (the descriptor: 40)
(``benchmarks/screen_accuracy.py``; the taper and the fourth root were chosen on these data
and the synthetic corpus). It is a filter, not the evidence: the full comparison scores the
candidates it keeps.

The best shift also estimates the rotation modulo 180 degrees (a real surface's spectrum is
centrosymmetric).
"""

from __future__ import annotations

import cv2
import numpy as np

from .descriptors import centred_power, to_polar
from .errors import BallisticsError
from .pipeline import PreparedCasing

#: Downsampling of the 6.25-um canvas before the spectrum (4 -> 25 um).
_FACTOR = 4
#: Gaussian taper of the valid-region edges, in pixels of that level (6 -> 150 um): a hard
#: mask edge (primer outline, firing-pin hole) leaks into every frequency and makes all
#: casings look alike; tapering it raised the Fadul AUC from 0.95 to 0.98.
_TAPER_PX = 6.0
RADII = 32
#: Angle samples over 180 degrees (the spectrum is centrosymmetric).
ANGLES = 128
SIGNATURE_VERSION = "pss-2"
SIGNATURE_SHAPE = (RADII, ANGLES)
#: Candidates screened per batch (bounds memory at thousands of candidates).
SCREEN_CHUNK = 2048


def signature(prepared: PreparedCasing) -> np.ndarray:
    """Polar spectrum of the breech face (edges tapered; fourth root of the power, so the
    strongest bands do not dominate), zero-mean per radius, unit L2 norm overall.

    Returns
    -------
    ndarray of shape (RADII, ANGLES), float32
        Row r covers spatial frequencies around (r + 0.5) / RADII of the Nyquist frequency of
        the 25-um level; column k the direction k * 180 / ANGLES degrees.
    """
    d, m = prepared.level(_FACTOR)
    taper = cv2.GaussianBlur(m.astype(np.float32), (0, 0), _TAPER_PX) * m
    amp = (centred_power(d * taper) ** 0.25).astype(np.float32)
    polar = to_polar(amp, RADII, 2 * ANGLES)  # angle over 360 degrees
    half = polar[:, :ANGLES] + polar[:, ANGLES:]
    half = half - half.mean(axis=1, keepdims=True)
    n = float(np.linalg.norm(half))
    return (half / n if n > 0 else half).astype(np.float32)


def _checked(x: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(x, np.float32)
    if a.shape[-2:] != SIGNATURE_SHAPE:
        raise BallisticsError(
            f"{what} has shape {a.shape}; a screening signature is {SIGNATURE_SHAPE} "
            f"(version {SIGNATURE_VERSION})"
        )
    return a


def _correlations(q: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Circular correlation over angle shifts, summed over radii: (N, ANGLES)."""
    return _correlations_from_spectra(q, np.fft.rfft(c, axis=-1))


def _correlations_from_spectra(q: np.ndarray, spec: np.ndarray) -> np.ndarray:
    """:func:`_correlations` from the candidates' angular spectra (N, RADII, ANGLES // 2 + 1)."""
    fq = np.conj(np.fft.rfft(q, axis=-1)).astype(spec.dtype)
    # one (N, freq) product summed over radii; einsum avoids the (N, RADII, freq) temporary
    return np.asarray(np.fft.irfft(np.einsum("rf,nrf->nf", fq, spec), n=ANGLES, axis=-1))


def spectra(signatures: np.ndarray, chunk: int = SCREEN_CHUNK) -> np.ndarray:
    """The angular spectra of many signatures, computed once so that many queries (or one query
    over thousands of candidates) are screened without re-transforming them.

    Parameters
    ----------
    signatures : ndarray of shape (N, RADII, ANGLES) or (N, RADII * ANGLES)
    chunk : int
        Signatures transformed at a time (bounds the float64 temporaries).

    Returns
    -------
    ndarray of shape (N, RADII, ANGLES // 2 + 1), complex64
    """
    c = np.asarray(signatures).reshape(-1, *SIGNATURE_SHAPE)
    out = np.empty((len(c), RADII, ANGLES // 2 + 1), np.complex64)
    for a in range(0, len(c), max(1, chunk)):
        out[a : a + chunk] = np.fft.rfft(_checked(c[a : a + chunk], "signatures"), axis=-1)
    return out


def screen_spectra(
    query: np.ndarray, spec: np.ndarray, chunk: int = SCREEN_CHUNK
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`screen` of one query against candidates given by their :func:`spectra`: the same
    scores and rotations (to float32 rounding), vectorised over thousands of candidates in
    chunks (about 20 us per candidate on one core).

    Parameters
    ----------
    query : ndarray of shape (RADII, ANGLES)
    spec : ndarray of shape (N, RADII, ANGLES // 2 + 1), complex64
    chunk : int
        Candidates per batch (memory: ~1 KB per candidate per batch).

    Returns
    -------
    scores, rotation_deg : ndarrays of shape (N,), float64 (see :func:`screen`)
    """
    q = _checked(query, "query signature")
    if spec.ndim != 3 or spec.shape[1:] != (RADII, ANGLES // 2 + 1):
        raise BallisticsError(
            f"spectra have shape {spec.shape}; screen_spectra needs (N, {RADII}, "
            f"{ANGLES // 2 + 1}) from ballistics.screen.spectra"
        )
    scores = np.empty(len(spec), np.float64)
    shift = np.empty(len(spec), np.int64)
    for a in range(0, len(spec), max(1, chunk)):
        corr = _correlations_from_spectra(q, spec[a : a + chunk])
        k = np.argmax(corr, axis=1)
        scores[a : a + chunk] = corr[np.arange(len(corr)), k]
        shift[a : a + chunk] = k
    return scores, shift * (180.0 / ANGLES)


def rotation_candidates(a: np.ndarray, b: np.ndarray, n: int) -> list[float]:
    """The ``n`` best rotations of ``b`` onto ``a`` modulo 180 degrees (local maxima of the
    correlation, best first), in the sense of :attr:`ballistics.compare.Pose.rotation_deg`."""
    corr = _correlations(_checked(a, "signature"), _checked(b, "signature")[None])[0]
    peaks = np.nonzero((corr >= np.roll(corr, 1)) & (corr >= np.roll(corr, -1)))[0]
    best = peaks[np.argsort(-corr[peaks])][:n]
    return [float(k) * 180.0 / ANGLES for k in best]


def screen(query: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best circular correlation of one signature with each of many.

    Parameters
    ----------
    query : ndarray of shape (RADII, ANGLES)
    candidates : ndarray of shape (N, RADII, ANGLES)
        Signatures from :func:`signature`.

    Returns
    -------
    scores : ndarray of shape (N,), float64
        Correlation at the best rotation, in [-1, 1] (1: identical up to a rotation).
    rotation_deg : ndarray of shape (N,), float64
        That rotation modulo 180 degrees, in the sense of
        :attr:`ballistics.compare.Pose.rotation_deg` (candidate onto query).
    """
    c = _checked(candidates, "candidate signatures")
    if c.ndim == 2:
        c = c[None]
    if len(c) == 0:
        return np.zeros(0), np.zeros(0)
    return screen_spectra(query, spectra(c))
