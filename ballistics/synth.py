"""Physically motivated synthetic cartridge-case head scans with ground truth.

Every scan is a *raw* topography of the case-head area around the primer (not cropped to
the breech face): the case head at height 0, the primer a slightly domed disc recessed by
20-50 um with a rounded edge and a narrow gap to the primer pocket, the gun's breech-face
texture printed into the primer, the firing-pin dent, aperture-shear striations beside it,
and per-shot nuisance: arbitrary rotation, primer offset in the field of view, uneven
contact, the primer's own roughness, dome and tilt, scanner noise, dropouts and spikes.

Geometry conventions
--------------------
* Three frames. The **gun frame** has its origin at the centre of the firing-pin hole; the
  breech-face texture, the firing-pin shape and the aperture-shear band are fixed in it, so
  every shot of one firearm carries the *same* surface pattern. The **casing frame** has its
  origin at the primer centre; it differs from the gun frame by a small per-gun offset (pins
  strike slightly off-centre) plus a per-shot jitter. The **image frame** is (x = column,
  y = row) in metres.
* A casing-frame point ``q`` appears at image position ``primer_center + R(theta) q`` where
  ``R(theta)`` is the 2x2 rotation ``[[cos, -sin], [sin, cos]]`` acting on ``(x, y)`` and
  ``theta = Truth.rotation_deg``. Hence a gun-frame point ``g`` appears at
  ``fp_center + R(theta) g``; :func:`gun_frame_coordinates` undoes this.

Everything is seeded and deterministic: the same arguments give bit-identical scans.
"""

from __future__ import annotations

import csv
import functools
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .scan import Scan

CALIBERS: dict[str, float] = {"9mm": 4.45e-3, ".45ACP": 5.3e-3, ".40S&W": 4.45e-3}
"""Primer diameter in metres, by calibre."""

PATTERNS: tuple[str, ...] = ("parallel", "arc", "granular", "crosshatch")
FP_SHAPES: tuple[str, ...] = ("round", "elongated")

_TEX_SPACING = 6.0e-6  # grid spacing of the gun-frame texture (band limit 20 um -> >3 px)
_BAND = (20e-6, 300e-6)  # breech-face texture wavelengths, metres


@dataclass(frozen=True)
class Firearm:
    """A synthetic firearm: its class characteristics and the seed of its individual marks.

    Attributes
    ----------
    id : str
        Firearm identifier, e.g. ``"G0007"``.
    caliber : str
        One of :data:`CALIBERS` (``"9mm"``, ``".45ACP"``, ``".40S&W"``).
    breech_pattern : str
        Breech-face class pattern, one of :data:`PATTERNS`.
    fp_shape : str
        Firing-pin shape, ``"round"`` (hemispherical dent) or ``"elongated"`` (Glock-type).
    fp_size_m : tuple of float
        Firing-pin impression semi-axes ``(semi_major, semi_minor)`` in metres; equal for a
        round pin.
    seed : int
        Seed of the individual marks (breech-face texture, aperture-shear profile, ...).
    group : str or None
        Consecutive-manufacture group id. Firearms of one group share a subclass component
        (half the breech-face texture variance) but keep their own individual marks.
    fp_depth_m : float
        Depth of the firing-pin impression in metres.
    texture_amplitude_m : float
        RMS height of the breech-face impression in metres (at full contact).
    has_aperture_shear : bool
        Whether shots of this gun carry aperture-shear striations.
    """

    id: str
    caliber: str
    breech_pattern: str
    fp_shape: str
    fp_size_m: tuple[float, float]
    seed: int
    group: str | None = None
    fp_depth_m: float = 0.25e-3
    texture_amplitude_m: float = 2.0e-6
    has_aperture_shear: bool = True

    def __post_init__(self) -> None:
        if self.caliber not in CALIBERS:
            raise ValueError(f"unknown caliber {self.caliber!r}; expected one of {list(CALIBERS)}")
        if self.breech_pattern not in PATTERNS:
            raise ValueError(f"unknown breech pattern {self.breech_pattern!r}; one of {PATTERNS}")
        if self.fp_shape not in FP_SHAPES:
            raise ValueError(f"unknown firing-pin shape {self.fp_shape!r}; one of {FP_SHAPES}")
        a, b = self.fp_size_m
        if not (0 < b <= a < 2e-3):
            raise ValueError(f"fp_size_m must be (semi_major >= semi_minor > 0) m; got {a, b}")

    @property
    def primer_diameter_m(self) -> float:
        return CALIBERS[self.caliber]


@dataclass(frozen=True)
class Truth:
    """Ground truth of one synthetic shot.

    Attributes
    ----------
    firearm_id, casing_id, caliber : str
    group : str or None
    spacing_m : float
        Pixel spacing (square pixels), metres.
    primer_center : tuple of float
        Primer centre (row, col) in pixels.
    primer_radius_px : float
        Primer (cup) radius in pixels.
    fp_center : tuple of float
        Firing-pin impression centre (row, col) in pixels.
    fp_shape : str
        ``"round"`` or ``"elongated"``.
    fp_axes_px : tuple of float
        Firing-pin impression semi-axes (major, minor) in pixels.
    fp_angle_deg : float
        Image-frame angle of the firing-pin major axis, degrees counter-clockwise from the
        +col axis in (x = col, y = row) coordinates.
    rotation_deg : float
        Rotation of the casing in the field of view (see module docstring), 0-360.
    offset_m : tuple of float
        Offset (row, col) of the primer centre from the field-of-view centre, metres.
    shear_angle_deg : float or None
        Image-frame direction (same convention as ``fp_angle_deg``) from the firing-pin
        centre towards the aperture-shear band, or None when the shot has none.
    instrument : str or None
        Name of the instrument model that recorded the scan (:mod:`ballistics.instruments`);
        None for :func:`fire`'s own scanner.
    light_azimuth_deg : float or None
        For a directional (side) light: the image-frame direction the light comes *from*
        (same convention as ``fp_angle_deg``); relative to the casing it is
        ``light_azimuth_deg - rotation_deg``. None for lights symmetric about the axis.
    """

    firearm_id: str
    casing_id: str
    caliber: str
    group: str | None
    spacing_m: float
    primer_center: tuple[float, float]
    primer_radius_px: float
    fp_center: tuple[float, float]
    fp_shape: str
    fp_axes_px: tuple[float, float]
    fp_angle_deg: float
    rotation_deg: float
    offset_m: tuple[float, float]
    shear_angle_deg: float | None
    instrument: str | None = None
    light_azimuth_deg: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------
# firearms


def make_firearms(
    n: int,
    *,
    seed: int,
    group_size: int = 3,
    group_fraction: float = 0.3,
    calibers: Sequence[str] = ("9mm", "9mm", "9mm", ".40S&W", ".45ACP"),
) -> list[Firearm]:
    """Make ``n`` firearms mixing classes, firing-pin shapes, calibres and groups.

    Parameters
    ----------
    n : int
        Number of firearms.
    seed : int
        Master seed; the same seed gives the same list.
    group_size : int
        Size of a consecutive-manufacture group (same calibre, pattern and pin shape,
        shared subclass texture).
    group_fraction : float
        Approximate fraction of the firearms that belong to a group.
    calibers : sequence of str
        Calibres drawn from uniformly (repeat an entry to weight it).

    Returns
    -------
    list of Firearm
    """
    rng = np.random.default_rng([seed, 0x6E5])
    out: list[Firearm] = []
    gi = 0
    while len(out) < n:
        caliber = str(rng.choice(list(calibers)))
        pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
        shape = "elongated" if rng.random() < 0.35 else "round"
        if shape == "round":
            r = float(rng.uniform(0.5e-3, 0.75e-3))
            size = (r, r)
            depth = float(rng.uniform(0.2e-3, 0.3e-3))
        else:
            a = float(rng.uniform(0.55e-3, 0.65e-3))
            size = (a, float(rng.uniform(0.28e-3, 0.33e-3)))
            depth = float(rng.uniform(0.15e-3, 0.25e-3))
        k = 1
        group: str | None = None
        if group_size > 1 and n - len(out) >= group_size and rng.random() < group_fraction:
            k = group_size
            group = f"S{seed % 10000:04d}-{gi:03d}"
            gi += 1
        amp = float(rng.uniform(1.0e-6, 3.0e-6))
        shear = bool(rng.random() < (0.9 if shape == "elongated" else 0.6))
        for _ in range(k):
            idx = len(out)
            out.append(
                Firearm(
                    id=f"G{seed % 10000:04d}-{idx:04d}",
                    caliber=caliber,
                    breech_pattern=pattern,
                    fp_shape=shape,
                    fp_size_m=size,
                    seed=int(rng.integers(2**31 - 1)),
                    group=group,
                    fp_depth_m=depth,
                    texture_amplitude_m=amp,
                    has_aperture_shear=shear,
                )
            )
    return out


@dataclass(frozen=True)
class _GunParams:
    fp_offset: tuple[float, float]  # gun-frame primer-centre -> firing-pin (x, y) offset, m
    fp_angle: float  # gun-frame major-axis angle, rad
    shear_angle: float  # gun-frame direction of the shear band from the pin centre, rad
    shear_profile: np.ndarray  # 1-D striation profile, unit RMS, sampled every 1 um
    shear_length: float  # band length, m


def _gun_params(fa: Firearm) -> _GunParams:
    rng = np.random.default_rng([fa.seed, 0x61])
    rr = float(rng.uniform(0.0, 0.12e-3))
    ra = float(rng.uniform(0, 2 * math.pi))
    fp_angle = float(rng.uniform(0, math.pi))
    shear_angle = float(rng.uniform(0, 2 * math.pi))
    if fa.fp_shape == "elongated":  # Glock: shear beside the long side of the pin
        shear_angle = fp_angle + math.pi / 2 * (1 if rng.random() < 0.5 else -1)
    n = 4096
    prof = _bandlimited_1d(rng, n, 1e-6, 8e-6, 60e-6)
    return _GunParams(
        fp_offset=(rr * math.cos(ra), rr * math.sin(ra)),
        fp_angle=fp_angle,
        shear_angle=shear_angle,
        shear_profile=prof,
        shear_length=float(rng.uniform(0.3e-3, 0.45e-3)),
    )


def _bandlimited_1d(
    rng: np.random.Generator, n: int, dx: float, lo: float, hi: float
) -> np.ndarray:
    """Unit-RMS 1-D noise with wavelengths between ``lo`` and ``hi`` metres."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, dx)
    lam = 1.0 / np.maximum(f, 1e-30)
    h = 1.0 / (1.0 + (lam / hi) ** -4) / (1.0 + (lo / lam) ** -4)
    h[0] = 0.0
    out = np.fft.irfft(spec * h, n)
    return (out / (out.std() + 1e-30)).astype(np.float64)


# --------------------------------------------------------------------------------------
# breech-face texture (gun frame)


def _texture_grid_size(caliber: str) -> int:
    half = CALIBERS[caliber] / 2 + 0.45e-3
    return int(2 * math.ceil(half / _TEX_SPACING))


def _component(pattern: str, seed: int, n: int) -> np.ndarray:
    """One unit-RMS texture component of a class ``pattern`` on an n x n gun-frame grid."""
    rng = np.random.default_rng([seed, 0x7E])
    gs = _TEX_SPACING
    fy = np.fft.fftfreq(n, gs)[:, None]
    fx = np.fft.rfftfreq(n, gs)[None, :]
    f = np.hypot(fx, fy)
    lo, hi = _BAND
    lam = 1.0 / np.maximum(f, 1e-30)
    band = 1.0 / (1.0 + (lam / hi) ** -4) / (1.0 + (lo / lam) ** -4)
    band *= (np.maximum(f, 1.0 / hi) * hi) ** -0.6  # red-ish: longer wavelengths stronger
    band[0, 0] = 0.0
    ang = np.arctan2(fy, fx)

    def directional(theta: float, width_deg: float) -> np.ndarray:
        d = np.angle(np.exp(2j * (ang - theta))) / 2  # distance modulo pi
        return np.asarray(np.exp(-0.5 * (d / math.radians(width_deg)) ** 2))

    noise = np.fft.rfft2(rng.standard_normal((n, n)).astype(np.float32))
    if pattern == "granular":
        h = band
        out = np.fft.irfft2(noise * h, (n, n))
    elif pattern in ("parallel", "crosshatch"):
        t0 = float(rng.uniform(0, math.pi))
        h = directional(t0, 2.5)
        if pattern == "crosshatch":
            h = h + directional(t0 + math.radians(rng.uniform(50, 90)), 2.5)
        out = np.fft.irfft2(noise * band * (0.15 + h), (n, n))
    elif pattern == "arc":
        iso = np.fft.irfft2(noise * band, (n, n))
        # circular turning marks: a 1-D profile of the distance to a far-away centre
        dist = float(rng.uniform(3e-3, 8e-3))
        a = float(rng.uniform(0, 2 * math.pi))
        cx, cy = dist * math.cos(a), dist * math.sin(a)
        ax = (np.arange(n) - n / 2) * gs
        r = np.hypot(ax[None, :] - cx, ax[:, None] - cy)
        prof = _bandlimited_1d(rng, 16384, 1e-6, lo, hi)
        ri = np.clip(((r - r.min()) / 1e-6).astype(np.int64), 0, prof.size - 1)
        out = prof[ri] + 0.35 * iso / (iso.std() + 1e-30)
    else:  # pragma: no cover - validated by Firearm
        raise ValueError(pattern)
    out = out - out.mean()
    return np.asarray(out / (out.std() + 1e-30), dtype=np.float32)


@functools.lru_cache(maxsize=12)
def _texture_cached(pattern: str, seed: int, group_seed: int | None, caliber: str) -> np.ndarray:
    n = _texture_grid_size(caliber)
    ind = _component(pattern, seed, n)
    if group_seed is None:
        tex = ind
    else:
        sub = _component(pattern, group_seed, n)
        tex = np.float32(math.sqrt(0.5)) * sub + np.float32(math.sqrt(0.5)) * ind
        tex /= tex.std()
    tex.setflags(write=False)
    return tex


def _group_seed(group: str | None) -> int | None:
    if group is None:
        return None
    return zlib.crc32(group.encode()) & 0x7FFFFFFF


def breech_face_texture(firearm: Firearm) -> tuple[np.ndarray, float]:
    """The firearm's breech-face texture in the gun frame.

    Returns
    -------
    texture : ndarray of shape (n, n), float32
        Unit-RMS texture; multiply by ``firearm.texture_amplitude_m`` for metres. The gun
        origin (firing-pin centre) is at pixel ``(n / 2, n / 2)``; x runs along columns.
    spacing_m : float
        Grid spacing in metres.
    """
    return (
        _texture_cached(
            firearm.breech_pattern, firearm.seed, _group_seed(firearm.group), firearm.caliber
        ),
        _TEX_SPACING,
    )


# --------------------------------------------------------------------------------------
# one shot


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Unit-RMS Gaussian-filtered white noise (float32).

    Smooth fields are drawn on a coarser grid (a third of ``sigma_px`` per cell at most) and
    interpolated up, which is several times faster and statistically indistinguishable.
    """
    m, n = shape
    k = max(1, int(sigma_px / 1.5))
    w: np.ndarray = rng.standard_normal((m // k + 2, n // k + 2), dtype=np.float32)
    if sigma_px / k > 0.3:
        w = np.asarray(cv2.GaussianBlur(w, (0, 0), sigma_px / k, borderType=cv2.BORDER_REFLECT))
    if k > 1:
        size = ((n // k + 2) * k, (m // k + 2) * k)
        w = np.asarray(cv2.resize(w, size, interpolation=cv2.INTER_LINEAR))
    w = w[k : k + m, k : k + n]
    return np.asarray(w / (w.std() + 1e-12), dtype=np.float32)


def _blobs(
    rng: np.random.Generator, shape: tuple[int, int], frac: float, scale_px: float
) -> np.ndarray:
    """Boolean blobs covering about ``frac`` of the area, feature size ~``scale_px``."""
    m, n = shape
    cs = max(4, int(scale_px))
    small = rng.standard_normal((m // cs + 2, n // cs + 2)).astype(np.float32)
    small = np.asarray(cv2.GaussianBlur(small, (0, 0), 0.8))
    big = np.asarray(cv2.resize(small, (n + 2 * cs, m + 2 * cs), interpolation=cv2.INTER_CUBIC))
    big = big[cs : cs + m, cs : cs + n]
    thr = np.quantile(big[::4, ::4], 1.0 - frac) if frac > 0 else np.inf
    return np.asarray(big > thr)


@dataclass(frozen=True, eq=False)
class FiredSurface:
    """The true surface of one fired case head, before any instrument measures it.

    What a perfect scanner would record: the primer, the case head, the gun's marks and the
    per-shot nuisance that belongs to the casing (contact, primer roughness, dome, the tilt
    of the casing on the stage), with no measurement noise, dropouts or spikes. Instrument
    models (:mod:`ballistics.instruments`) turn it into a :class:`~ballistics.scan.Scan`.

    Attributes
    ----------
    height_m : ndarray of shape (M, M), float64
        Heights in metres, finite everywhere.
    spacing_m : float
        Pixel spacing (square pixels), metres.
    truth : Truth
        Ground truth in the pixel coordinates of ``height_m``.
    """

    height_m: np.ndarray
    spacing_m: float
    truth: Truth

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.height_m.shape[0]), int(self.height_m.shape[1]))


@dataclass
class _Shot:
    """Intermediate state of one shot, shared by :func:`fire` and :func:`fired_surface`."""

    z: np.ndarray  # float32 heights, metres (true surface)
    rng: np.random.Generator  # positioned after the true surface's draws
    fp_in: np.ndarray  # inside the firing-pin impression
    rho: np.ndarray  # normalised firing-pin radial coordinate
    truth: Truth
    n: int
    spacing_m: float


def _shoot(
    firearm: Firearm,
    *,
    shot_seed: int,
    spacing_m: float,
    fov_factor: float,
    max_offset_frac: float,
    contact_min: float,
    casing_id: str | None,
) -> _Shot:
    """Build the true surface of one shot; the generator is left where the scanner starts."""
    if not (0.5e-6 <= spacing_m <= 50e-6):
        raise ValueError(f"spacing_m must be between 0.5 and 50 um; got {spacing_m!r}")
    gp = _gun_params(firearm)
    rng = np.random.default_rng([firearm.seed, shot_seed, 0x5407])
    s = float(spacing_m)
    rp = firearm.primer_diameter_m / 2 * float(rng.uniform(0.995, 1.005))
    n = round(fov_factor * 2 * rp / s / 2) * 2
    fov = n * s
    theta = float(rng.uniform(0.0, 360.0))
    off = rng.uniform(-max_offset_frac, max_offset_frac, 2) * fov  # (row, col) metres
    pc_row = (n - 1) / 2 + off[0] / s
    pc_col = (n - 1) / 2 + off[1] / s
    # primer centre in the gun frame (the pin strikes slightly off centre)
    jit = rng.normal(0.0, 25e-6, 2)
    pg = (-gp.fp_offset[0] + jit[0], -gp.fp_offset[1] + jit[1])
    ct, st = math.cos(math.radians(theta)), math.sin(math.radians(theta))

    f32 = np.float32
    ys = ((np.arange(n, dtype=np.float64) - pc_row) * s).astype(f32)[:, None]
    xs = ((np.arange(n, dtype=np.float64) - pc_col) * s).astype(f32)[None, :]
    # casing frame: q = R(-theta) p
    u = f32(ct) * xs + f32(st) * ys
    v = -f32(st) * xs + f32(ct) * ys
    r = np.sqrt(u * u + v * v)
    # gun frame
    gx = u + f32(pg[0])
    gy = v + f32(pg[1])

    # --- primer and case head -----------------------------------------------------------
    recess = float(rng.uniform(20e-6, 50e-6))
    dome = float(rng.uniform(2e-6, 8e-6))
    edge_r = float(rng.uniform(50e-6, 90e-6))  # rounding radius of the primer-cup edge
    gap = float(rng.uniform(8e-6, 20e-6))
    z = np.zeros((n, n), dtype=f32)
    inside = r < rp
    rn = r / f32(rp)
    z_primer = f32(-recess) + f32(dome) * (1 - rn * rn)
    t = np.clip(r - f32(rp - edge_r), 0, edge_r)
    z_primer -= f32(0.7) * (f32(edge_r) - np.sqrt(np.maximum(f32(edge_r**2) - t * t, 0)))
    z = np.where(inside, z_primer, z)
    groove = (r >= rp) & (r < rp + gap)
    z[groove] = f32(-recess - 40e-6)
    # case-head roughness and turning marks
    head_tex = 0.4e-6 * _smooth_noise(rng, (n, n), 12e-6 / s)
    z = np.where(inside | groove, z, z + head_tex)

    # --- breech-face impression ---------------------------------------------------------
    tex, tgs = breech_face_texture(firearm)
    tn = tex.shape[0]
    mx = (gx / f32(tgs) + f32(tn / 2)).astype(f32)
    my = (gy / f32(tgs) + f32(tn / 2)).astype(f32)
    bf = cv2.remap(tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    ca = float(rng.uniform(0, 2 * math.pi))
    cslope = float(rng.uniform(0.0, 0.8))
    cw = np.clip(
        f32(0.8) + f32(cslope) * (f32(math.cos(ca)) * u + f32(math.sin(ca)) * v) / f32(rp),
        contact_min,
        1.0,
    )
    taper = np.clip((f32(rp - edge_r) - r) / f32(edge_r), 0, 1)
    # firing-pin impression (gun frame, stadium with hemispherical profile)
    a_m, b_m = firearm.fp_size_m
    ca_, sa_ = math.cos(gp.fp_angle), math.sin(gp.fp_angle)
    pu = f32(ca_) * gx + f32(sa_) * gy
    pv = -f32(sa_) * gx + f32(ca_) * gy
    half_seg = f32(a_m - b_m)
    du = np.maximum(np.abs(pu) - half_seg, 0)
    rho = np.sqrt(du * du + pv * pv) / f32(b_m)
    fp_in = rho < 1
    depth = firearm.fp_depth_m * float(rng.uniform(0.9, 1.1))
    z_fp = -f32(depth) * np.sqrt(np.maximum(1 - rho * rho, 0))
    away = np.clip((rho - f32(1.0)) / f32(0.15), 0, 1)
    z += f32(firearm.texture_amplitude_m) * bf * cw * taper * away
    # flow-back lip around the pin
    z += f32(3e-6) * np.exp(-(((rho - f32(1.1)) / f32(0.08)) ** 2)) * taper
    z = np.where(fp_in, z + z_fp, z)

    # --- aperture shear ------------------------------------------------------------------
    shear_img: float | None = None
    if firearm.has_aperture_shear:
        cs_, ss_ = math.cos(gp.shear_angle), math.sin(gp.shear_angle)
        su = f32(cs_) * gx + f32(ss_) * gy  # along the band (away from the pin)
        sv = -f32(ss_) * gx + f32(cs_) * gy  # across the band
        # extent of the stadium along the shear direction (support function)
        dang = gp.shear_angle - gp.fp_angle
        ext = (a_m - b_m) * abs(math.cos(dang)) + b_m
        width = 2 * b_m * 0.9 if firearm.fp_shape == "elongated" else 1.4 * b_m
        s0 = f32(ext * 0.85)
        band = (su > s0) & (su < s0 + f32(gp.shear_length)) & (np.abs(sv) < f32(width / 2))
        prof = gp.shear_profile
        idx = np.clip(((sv + f32(width)) / f32(1e-6)).astype(np.int32), 0, prof.size - 1)
        fade = np.clip((s0 + f32(gp.shear_length) - su) / f32(0.1e-3), 0, 1)
        amp = f32(3e-6 * rng.uniform(0.7, 1.0))
        z = np.where(band, z + amp * prof[idx].astype(f32) * fade + f32(2e-6) * fade, z)
        shear_img = (math.degrees(gp.shear_angle) + theta) % 360.0

    # --- per-shot nuisance of the casing (primer roughness, tilt on the stage) ----------
    rough = f32(rng.uniform(0.2e-6, 0.4e-6)) * _smooth_noise(rng, (n, n), 15e-6 / s)
    z = np.where(inside, z + rough, z)
    tilt = rng.normal(0.0, 1e-3, 2)
    z += f32(tilt[0]) * ys + f32(tilt[1]) * xs

    fpx = pc_col + (ct * -pg[0] - st * -pg[1]) / s
    fpy = pc_row + (st * -pg[0] + ct * -pg[1]) / s
    cid = casing_id if casing_id is not None else f"{firearm.id}-{shot_seed}"
    truth = Truth(
        firearm_id=firearm.id,
        casing_id=cid,
        caliber=firearm.caliber,
        group=firearm.group,
        spacing_m=s,
        primer_center=(float(pc_row), float(pc_col)),
        primer_radius_px=rp / s,
        fp_center=(float(fpy), float(fpx)),
        fp_shape=firearm.fp_shape,
        fp_axes_px=(a_m / s, b_m / s),
        fp_angle_deg=(math.degrees(gp.fp_angle) + theta) % 180.0,
        rotation_deg=theta,
        offset_m=(float(off[0]), float(off[1])),
        shear_angle_deg=shear_img,
    )
    return _Shot(z=z, rng=rng, fp_in=fp_in, rho=rho, truth=truth, n=n, spacing_m=s)


def fired_surface(
    firearm: Firearm,
    *,
    shot_seed: int,
    spacing_m: float = 6.25e-6,
    fov_factor: float = 1.2,
    max_offset_frac: float = 0.06,
    contact_min: float = 0.3,
    casing_id: str | None = None,
) -> FiredSurface:
    """The true surface of one shot, for an instrument model to measure.

    Same geometry, marks and casing nuisance as :func:`fire` with the same arguments (the
    two share every draw up to the scanner), without scanner noise, dropouts or spikes.

    Parameters
    ----------
    firearm, shot_seed, spacing_m, fov_factor, max_offset_frac, contact_min, casing_id
        As for :func:`fire`.

    Returns
    -------
    FiredSurface
    """
    shot = _shoot(
        firearm,
        shot_seed=shot_seed,
        spacing_m=spacing_m,
        fov_factor=fov_factor,
        max_offset_frac=max_offset_frac,
        contact_min=contact_min,
        casing_id=casing_id,
    )
    return FiredSurface(shot.z.astype(np.float64), shot.spacing_m, shot.truth)


def fire(
    firearm: Firearm,
    *,
    shot_seed: int,
    spacing_m: float = 6.25e-6,
    fov_factor: float = 1.2,
    max_offset_frac: float = 0.06,
    dropout_frac: float = 0.02,
    spike_frac: float = 3e-4,
    contact_min: float = 0.3,
    casing_id: str | None = None,
) -> tuple[Scan, Truth]:
    """Fire one synthetic shot and scan the case head around the primer.

    The scanner here is the project's original generic one (white height noise, NaN
    dropout blobs, steep-wall dropouts in the pin, spikes); :mod:`ballistics.instruments`
    models specific instruments on :func:`fired_surface` instead.

    Parameters
    ----------
    firearm : Firearm
    shot_seed : int
        Seed of everything that varies from shot to shot.
    spacing_m : float
        Pixel spacing (square), metres.
    fov_factor : float
        Field of view side as a multiple of the primer diameter.
    max_offset_frac : float
        Largest offset (per axis) of the primer centre from the field-of-view centre, as a
        fraction of the field of view.
    dropout_frac : float
        Approximate fraction of NaN dropout blobs (plus steep-wall dropouts in the firing-pin
        impression).
    spike_frac : float
        Fraction of pixels replaced by spikes (outliers of 5-30 um).
    contact_min : float
        Smallest breech-face transfer weight of the tilted contact plane (1 = full contact).
    casing_id : str, optional
        Defaults to ``f"{firearm.id}-{shot_seed}"``.

    Returns
    -------
    scan : Scan
        ``kind="topography"``, heights in metres, NaN where ``mask`` is False.
    truth : Truth
    """
    shot = _shoot(
        firearm,
        shot_seed=shot_seed,
        spacing_m=spacing_m,
        fov_factor=fov_factor,
        max_offset_frac=max_offset_frac,
        contact_min=contact_min,
        casing_id=casing_id,
    )
    rng, n, s, z = shot.rng, shot.n, shot.spacing_m, shot.z
    z = z + np.float32(rng.uniform(0.03e-6, 0.08e-6)) * rng.standard_normal(
        (n, n), dtype=np.float32
    )
    zz = z.astype(np.float64)
    drop = _blobs(rng, (n, n), dropout_frac, 60e-6 / s)
    wall = shot.fp_in & (shot.rho > 0.93) & (_smooth_noise(rng, (n, n), 20e-6 / s) > 0.0)
    zz[drop | wall] = np.nan
    k = int(spike_frac * n * n)
    if k:
        ii = rng.integers(0, n * n, k)
        zz.flat[ii] = zz.flat[ii] + rng.choice([-1.0, 1.0], k) * rng.uniform(5e-6, 30e-6, k)

    truth = shot.truth
    params = {
        "firearm_id": firearm.id,
        "casing_id": truth.casing_id,
        "shot_seed": int(shot_seed),
        "spacing_um": s * 1e6,
        "fov_factor": fov_factor,
    }
    scan = Scan(zz, np.isfinite(zz), (s, s), "topography").evolve("synth.fire", params)
    return scan, truth


def gun_frame_coordinates(
    truth: Truth, gx_m: np.ndarray, gy_m: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Image (row, col) pixel coordinates of gun-frame points ``(gx_m, gy_m)`` (metres).

    Use with :func:`scipy.ndimage.map_coordinates` or ``cv2.remap`` to resample a scan into
    the gun frame (firing-pin centre at the origin), undoing the casing rotation and offset.
    """
    th = math.radians(truth.rotation_deg)
    c, s = math.cos(th), math.sin(th)
    sp = truth.spacing_m
    col = truth.fp_center[1] + (c * gx_m - s * gy_m) / sp
    row = truth.fp_center[0] + (s * gx_m + c * gy_m) / sp
    return row, col


# --------------------------------------------------------------------------------------
# corpus


def png16_with_phys(
    img: np.ndarray, spacing_m: tuple[float, float], *, valid: np.ndarray | None = None
) -> bytes:
    """Encode a 2-D uint16 array as PNG with a pHYs chunk giving the pixel size in metres.

    Parameters
    ----------
    img : ndarray of shape (M, N), uint16
    spacing_m : tuple of float
        (row, col) spacing in metres; pHYs stores pixels per metre (x, y).
    valid : ndarray of shape (M, N), bool, optional
        Which pixels hold data. When given, the PNG gets an alpha channel (0 where invalid,
        as :func:`ballistics.image_io.read_image` reads it): grey in B, G and R, 16 bits.
    """
    arr = np.ascontiguousarray(img, dtype=np.uint16)
    if valid is not None:
        if valid.shape != arr.shape:
            raise ValueError(f"valid has shape {valid.shape}; the image has {arr.shape}")
        alpha = np.where(valid, np.uint16(65535), np.uint16(0))
        arr = np.ascontiguousarray(np.stack([arr, arr, arr, alpha], axis=-1))
    ok, buf = cv2.imencode(".png", arr)
    if not ok:  # pragma: no cover
        raise RuntimeError("PNG encoding failed")
    data = buf.tobytes()
    ppm_x = round(1.0 / spacing_m[1])
    ppm_y = round(1.0 / spacing_m[0])
    body = b"pHYs" + struct.pack(">IIB", ppm_x, ppm_y, 1)
    chunk = struct.pack(">I", 9) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    ihdr_end = 8 + 4 + 4 + 13 + 4  # signature + IHDR (length, type, 13 bytes, crc)
    if data[12:16] != b"IHDR":  # pragma: no cover
        raise RuntimeError("unexpected PNG layout")
    return data[:ihdr_end] + chunk + data[ihdr_end:]


MANIFEST_COLUMNS = (
    "file",
    "firearm_id",
    "casing_id",
    "caliber",
    "spacing_m",
    "primer_row",
    "primer_col",
    "primer_radius_px",
    "fp_row",
    "fp_col",
    "fp_shape",
    "group",
    "rotation_deg",
    "instrument",
    "light_azimuth_deg",
)


def corpus_plan(
    *,
    guns: int,
    shots: int,
    seed: int = 0,
    spacing_choices: Sequence[tuple[float, float]] = ((6.25e-6, 0.8), (3.125e-6, 0.2)),
) -> list[tuple[Firearm, int, float]]:
    """The (firearm, shot_seed, spacing_m) triples of a seeded corpus, gun-major order.

    ``spacing_choices`` holds ``(spacing_m, probability)`` pairs.
    """
    firearms = make_firearms(guns, seed=seed)
    rng = np.random.default_rng([seed, 0xC0])
    sp = np.array([c[0] for c in spacing_choices], dtype=np.float64)
    pr = np.array([c[1] for c in spacing_choices], dtype=np.float64)
    pr = pr / pr.sum()
    plan = []
    for fa in firearms:
        for k in range(shots):
            plan.append((fa, int(seed * 1000003 + k), float(sp[rng.choice(sp.size, p=pr)])))
    return plan


def write_corpus(
    out_dir: str | Path,
    *,
    guns: int,
    shots: int,
    seed: int = 0,
    png: bool = False,
    spacing_choices: Sequence[tuple[float, float]] | None = None,
    instrument: str | None = None,
) -> Path:
    """Write a seeded synthetic corpus: scans, optional ring-light PNG renders, manifest.

    Parameters
    ----------
    out_dir : path
        Output folder (created).
    guns, shots : int
        Number of firearms and shots per firearm.
    seed : int
        Master seed; the same seed writes the same corpus.
    png : bool
        Also write each 3-D scan's ring-light render (low-angle light from all sides, as in
        2-D breech-face acquisition, :func:`ballistics.render.render_ring_light`) as a 16-bit
        PNG with a pHYs chunk. Ignored for a 2-D ``instrument``, whose images are the PNGs.
    spacing_choices : sequence of (spacing_m, probability), optional
        Scan spacings to draw from. Default: 80 % at 6.25 um and 20 % at 3.125 um for the
        generic scanner; the instrument's own pixel sizes (``INSTRUMENTS[name].pixels_um``,
        equally likely) with an ``instrument``.
    instrument : str, optional
        Record every shot with this model of :data:`ballistics.instruments.INSTRUMENTS`
        (3-D models write X3P, 2-D models 16-bit PNG). None: :func:`fire`'s generic scanner.

    Returns
    -------
    Path
        Path of ``manifest.csv`` (one row per written file).
    """
    from .render import render_ring_light
    from .x3p import write_x3p

    inst = None
    if instrument is not None:
        from .errors import BallisticsError
        from .instruments import INSTRUMENTS

        if instrument not in INSTRUMENTS:
            raise BallisticsError(
                f"unknown instrument {instrument!r}; choose one of {', '.join(INSTRUMENTS)}"
            )
        inst = INSTRUMENTS[instrument]
    if spacing_choices is None:
        if inst is None:
            spacing_choices = ((6.25e-6, 0.8), (3.125e-6, 0.2))
        else:
            spacing_choices = tuple((p * 1e-6, 1.0) for p in inst.pixels_um)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for fa, shot_seed, sp in corpus_plan(
        guns=guns, shots=shots, seed=seed, spacing_choices=spacing_choices
    ):
        k = shot_seed - seed * 1000003
        cid = f"{fa.id}-{k + 1:02d}"
        scan, tr = _record_shot(fa, shot_seed, sp, cid, instrument)
        base = {
            "firearm_id": tr.firearm_id,
            "casing_id": tr.casing_id,
            "caliber": tr.caliber,
            "spacing_m": f"{tr.spacing_m:.6g}",
            "primer_row": f"{tr.primer_center[0]:.3f}",
            "primer_col": f"{tr.primer_center[1]:.3f}",
            "primer_radius_px": f"{tr.primer_radius_px:.3f}",
            "fp_row": f"{tr.fp_center[0]:.3f}",
            "fp_col": f"{tr.fp_center[1]:.3f}",
            "fp_shape": tr.fp_shape,
            "group": tr.group or "",
            "rotation_deg": f"{tr.rotation_deg:.4f}",
            "instrument": tr.instrument or "",
            "light_azimuth_deg": (
                "" if tr.light_azimuth_deg is None else f"{tr.light_azimuth_deg:.4f}"
            ),
        }
        if scan.kind == "image":
            _write_png(out / f"{cid}.png", scan)
            rows.append({"file": f"{cid}.png", **base})
            continue
        name = f"{cid}.x3p"
        write_x3p(out / name, scan)
        rows.append({"file": name, **base})
        if png:
            pname = f"{cid}.png"
            _write_png(out / pname, render_ring_light(scan))
            rows.append({"file": pname, **base})
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(MANIFEST_COLUMNS))
        w.writeheader()
        w.writerows(rows)
    return manifest


def _record_shot(
    fa: Firearm, shot_seed: int, spacing_m: float, casing_id: str, instrument: str | None
) -> tuple[Scan, Truth]:
    """One corpus shot: :func:`fire`, or the true surface recorded by a named instrument."""
    if instrument is None:
        return fire(fa, shot_seed=shot_seed, spacing_m=spacing_m, casing_id=casing_id)
    from .instruments import instrument_rng, record

    surface = fired_surface(fa, shot_seed=shot_seed, spacing_m=spacing_m, casing_id=casing_id)
    return record(surface, instrument, rng=instrument_rng(fa.seed, shot_seed, instrument))


def _write_png(path: Path, img: Scan) -> None:
    """A 0..1 image scan as a 16-bit PNG with its pixel size. Invalid pixels (a 3-D scan's
    dropouts seen through a render) go in an alpha channel rather than as black, which the
    comparison would read as shading."""
    arr = np.clip(np.nan_to_num(img.masked(), nan=0.0), 0, 1)
    q = np.round(arr * 65535).astype(np.uint16)
    valid = None if img.mask.all() else img.mask
    path.write_bytes(png16_with_phys(q, img.spacing_m, valid=valid))
