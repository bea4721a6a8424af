"""Registration primitives: NaN-aware downsampling, rotation about the canvas centre, and the
masked normalised cross-correlation (NCC) over translations for a batch of rotations.

Surfaces here are plain arrays on a square *canvas* whose centre is the primer centre: values
are zero where the mask is False, so products and sums ignore invalid points. All functions are
pure; the heavy lifting is batched FFTs (scipy.fft, one thread: parallelism belongs to callers).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import fft as sfft

#: A point must be this fully covered by valid input after a warp to stay valid.
_COVER = 0.99


def downsample(data: np.ndarray, mask: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-average by an integer ``factor``, NaN-aware.

    Parameters
    ----------
    data, mask : ndarray of shape (M, N)
        Values (zero where invalid) and validity.
    factor : int
        Block size; M and N need not be multiples of it (the remainder is dropped).

    Returns
    -------
    data, mask : ndarray of shape (M // factor, N // factor), float32 and bool
    """
    if factor == 1:
        return data.astype(np.float32), mask.astype(bool)
    h, w = data.shape[0] // factor, data.shape[1] // factor
    m = mask[: h * factor, : w * factor].astype(np.float32)
    d = np.where(mask, data, 0.0)[: h * factor, : w * factor].astype(np.float32)
    # INTER_AREA with an integer factor is an exact block mean, and much faster than numpy.
    num = cv2.resize(d, (w, h), interpolation=cv2.INTER_AREA)
    den = cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA)
    valid = den >= 0.75
    out = np.where(valid, num / np.maximum(den, 1e-6), 0.0).astype(np.float32)
    return out, valid


def rotate(
    data: np.ndarray, mask: np.ndarray, angle_deg: float, shift: tuple[float, float] = (0.0, 0.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate about the canvas centre by ``angle_deg`` (counter-clockwise as displayed, rows
    down), then translate by ``shift`` = (dy, dx) pixels. Points not fully covered by valid input
    become invalid (zero)."""
    h, w = data.shape
    mat = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), float(angle_deg), 1.0)
    mat[0, 2] += shift[1]
    mat[1, 2] += shift[0]
    d = cv2.warpAffine(data.astype(np.float32), mat, (w, h), flags=cv2.INTER_LINEAR)
    m = cv2.warpAffine(mask.astype(np.float32), mat, (w, h), flags=cv2.INTER_LINEAR) >= _COVER
    return np.where(m, d, 0.0).astype(np.float32), m


@dataclass(frozen=True)
class Reference:
    """The fixed side of a correlation, transformed once and reused for many rotations.

    Attributes
    ----------
    size : int
        FFT size (canvas + maximum shift, rounded to a fast length).
    f, f2, fm : ndarray
        Complex conjugates of the rFFTs of data, data squared and mask (conjugated once here
        so each correlation is a plain product).
    valid : int
        Number of valid points.
    """

    size: int
    f: np.ndarray
    f2: np.ndarray
    fm: np.ndarray
    valid: int


def reference(data: np.ndarray, mask: np.ndarray, max_shift: int) -> Reference:
    """Prepare ``data`` (M, M) as the fixed side of :func:`ncc_maps`."""
    n = sfft.next_fast_len(max(data.shape) + max_shift, real=True)
    d = np.where(mask, data, 0.0).astype(np.float32)
    m = mask.astype(np.float32)
    spec = np.conj(_rfft2_padded(np.stack([d, d * d, m]), n))
    return Reference(n, spec[0], spec[1], spec[2], int(mask.sum()))


def _rfft2_padded(x: np.ndarray, n: int) -> np.ndarray:
    """``rfft2(x, (n, n))`` over the last two axes of float32 ``x`` (..., M, M), M <= n.

    The rows beyond M are zero padding: transforming the last axis first, on the M real rows
    only, then the other axis with zero padding skips the transforms of the empty rows."""
    f = sfft.rfft(x, n, axis=-1, workers=1)
    return sfft.fft(f, n, axis=-2, workers=1)


def _irfft2_at(spec: np.ndarray, n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``irfft2(spec, (n, n))[..., rows, cols]``: the inverse at the selected rows and columns
    only. The inverse is separable: the complex pass over the first axis, then the real pass
    only over the selected rows (about half the work when few shifts are wanted)."""
    out = sfft.ifft(spec, n, axis=-2, workers=1)[..., rows, :]
    return sfft.irfft(out, n, axis=-1, workers=1)[..., cols]


def ncc_maps(
    ref: Reference,
    moving: np.ndarray,
    moving_mask: np.ndarray,
    max_shift: int,
    min_overlap: float = 0.3,
    moving_valid: int | None = None,
) -> np.ndarray:
    """Masked NCC of ``ref`` with each of a batch of moving surfaces, over all translations.

    Parameters
    ----------
    ref : Reference
    moving, moving_mask : ndarray of shape (K, M, M)
        K candidate surfaces (e.g. K rotations), zero where invalid.
    max_shift : int
        Translations from -max_shift to +max_shift pixels on both axes are scored.
    min_overlap : float
        Translations where the overlap is below this fraction of the smaller valid area score
        -1, so tiny overlaps cannot produce spurious peaks.
    moving_valid : int, optional
        Valid points of the moving surface for that rule; default: those of ``moving_mask[0]``
        (so a batch's threshold depends on its first member unless this is given).

    Returns
    -------
    ndarray of shape (K, 2 * max_shift + 1, 2 * max_shift + 1)
        NCC; entry ``[k, max_shift + dy, max_shift + dx]`` scores moving[k] shifted by (dy, dx)
        pixels (positive = down/right) against the reference.
    """
    shifts = np.arange(-max_shift, max_shift + 1)
    return ncc_at(ref, moving, moving_mask, shifts, shifts, min_overlap, moving_valid)


def ncc_at(
    ref: Reference,
    moving: np.ndarray,
    moving_mask: np.ndarray,
    dy: np.ndarray,
    dx: np.ndarray,
    min_overlap: float = 0.3,
    moving_valid: int | None = None,
) -> np.ndarray:
    """:func:`ncc_maps` at chosen translations only (a window around a known pose costs about
    half the full map, the forward transforms being shared).

    Parameters
    ----------
    ref : Reference
        Built with ``max_shift`` >= every ``|dy|`` and ``|dx|`` (its FFT size must hold the
        canvas plus the largest shift, or the correlation wraps around).
    moving, moving_mask : ndarray of shape (K, M, M)
    dy, dx : ndarray of int, shapes (R,) and (C,)
        Translations in pixels (positive = down/right).
    min_overlap, moving_valid
        As in :func:`ncc_maps`.

    Returns
    -------
    ndarray of shape (K, R, C)
        NCC; entry ``[k, r, c]`` scores moving[k] shifted by (dy[r], dx[c]).
    """
    n = ref.size
    reach = int(max(np.abs(dy).max(), np.abs(dx).max()))
    if n < moving.shape[-1] + reach:
        raise ValueError(
            f"shifts up to {reach} px need an FFT size >= {moving.shape[-1] + reach}, the "
            f"reference has {n}: build it with reference(..., max_shift >= {reach})"
        )
    x = np.empty((3, *moving.shape), np.float32)
    x[0] = moving
    x[1] = moving_mask
    np.multiply(x[0], x[0], out=x[2])
    fb, fmb, fb2 = _rfft2_padded(x, n)
    # One batched inverse for the four maps: numerator, overlap count, and each side's
    # energy over the overlap. (Approximating the energies by the overlap count, both being
    # unit RMS overall, was tried and lost true rotations on real scans: Fadul AUC 1.00 -> 0.97.)
    prods = np.empty((4, *fb.shape), fb.dtype)
    for out, (a, b) in zip(
        prods, ((ref.f, fb), (ref.fm, fmb), (ref.f2, fmb), (ref.fm, fb2)), strict=True
    ):
        np.multiply(a, b, out=out)  # into place: far faster than stacking temporaries
    # irfft(conj(A) B)[t] = sum_x a(x) b(x + t) = corr(a, b)[-t], where
    # corr(a, b)[s] = sum_x a(x) b(x - s) scores the moving surface shifted by s.
    num, cnt, ea, eb = _irfft2_at(prods, n, (-np.asarray(dy)) % n, (-np.asarray(dx)) % n)
    with np.errstate(invalid="ignore", divide="ignore"):
        ncc = num / np.sqrt(np.maximum(ea * eb, 1e-20))
    valid = int(moving_mask[0].sum()) if moving_valid is None else int(moving_valid)
    small = min(ref.valid, valid or 1)
    ncc[(cnt < min_overlap * small) | ~np.isfinite(ncc)] = -1.0
    return ncc.astype(np.float64)


def masked_blur(data: np.ndarray, mask: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur over the valid points only (normalised convolution), rescaled to unit RMS.

    Why: the coarse rotation sweep samples rotation every few degrees; at the breech face's
    radius a rotation error of half a step moves the texture by one or two coarse pixels,
    enough to decorrelate pixel-scale texture entirely. Blurring both sides by about that
    much keeps the true pose's correlation high between the sampled angles.

    Parameters
    ----------
    data, mask : ndarray of shape (M, N)
        Values (zero where invalid) and validity.
    sigma_px : float
        Standard deviation of the Gaussian, in pixels of ``data``.

    Returns
    -------
    ndarray of shape (M, N), float32
        Zero where invalid, unit RMS over the valid points.
    """
    d = np.where(mask, data, 0.0).astype(np.float32)
    if not mask.any():
        return d
    num, den = _gauss(d, mask, sigma_px)
    return _unit_rms(np.where(mask, num / np.maximum(den, 1e-3), 0.0), mask)


def _gauss(values: np.ndarray, mask: np.ndarray, sigma_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian sums of ``values`` (zero where invalid) and of the mask: a normalised
    convolution's numerator and weight."""
    k, border = (0, 0), cv2.BORDER_CONSTANT
    return (
        cv2.GaussianBlur(values, k, sigma_px, borderType=border),
        cv2.GaussianBlur(mask.astype(np.float32), k, sigma_px, borderType=border),
    )


def _unit_rms(out: np.ndarray, mask: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(out[mask] ** 2))) or 1.0
    return (out / rms).astype(np.float32)


def local_contrast(
    data: np.ndarray, mask: np.ndarray, sigma_px: float, floor: float = 0.1
) -> np.ndarray:
    """Divide a surface by its local RMS, so faint but consistent texture weighs as much in a
    correlation as strong texture elsewhere (uneven breech-face contact, worn areas).

    Parameters
    ----------
    data, mask : ndarray of shape (M, N)
        Values (zero where invalid, about unit RMS overall) and validity.
    sigma_px : float
        Standard deviation of the Gaussian window of the local RMS, in pixels.
    floor : float
        The local mean square is floored at ``floor`` times the global one, so flat or empty
        regions (noise only) are not blown up without bound.

    Returns
    -------
    ndarray of shape (M, N), float32
        Zero where invalid, unit RMS over the valid points.
    """
    d = np.where(mask, data, 0.0).astype(np.float32)
    if not mask.any():
        return d
    e2, w = _gauss(d * d, mask, sigma_px)
    glob = float(np.mean(d[mask] ** 2)) or 1.0
    local = np.where(w > 1e-3, e2 / np.maximum(w, 1e-3), glob)
    out = np.where(mask, d / np.sqrt(np.maximum(local, floor * glob)), 0.0)
    return _unit_rms(out, mask)
