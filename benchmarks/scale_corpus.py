"""Fast same-calibre distractor casings for the scale benchmark (``benchmarks/scale.py``).

A full simulation of one casing (``ballistics.synth.fired_surface`` + an instrument model +
``ballistics.pipeline.prepare``) costs 2-6 s here; 100 k of them would take days. A distractor
only has to be a plausible *other gun's* breech face as the search sees it: the prepared
6.25-um canvas. So this module draws that canvas directly:

1. a fresh firearm (9 mm primer, class pattern drawn uniformly from the synth families
   granular / parallel / crosshatch / arc, firing-pin shape and size, pin offset, texture
   amplitude, aperture-shear band: the distributions of ``synth.make_firearms`` and
   ``synth._gun_params``); its texture is ``synth._component`` drawn straight on the canvas
   grid (752 x 752), with no rotation or remapping (the families are isotropic in
   distribution, so a random gun needs no random rotation);
2. per-shot nuisance as ``synth._shoot`` draws it: the tilted contact plane (transfer weight
   0.3-1), the flow-back lip around the pin, primer roughness;
3. an "instrument" flavour (:data:`FLAVOURS`, after the 3-D models of
   ``ballistics.instruments``): lateral transfer (Gaussian PSF incl. pixel footprint), height
   noise, dropout blobs, and the mask margins the pipeline leaves for that model;
4. conditioning as ``prepare`` conditions a topography - the 16-250 um ISO Gaussian band-pass
   - applied as one transfer function in the Fourier domain together with the PSF;
5. the breech-face mask: primer disc minus the edge margin, minus the firing-pin hole (the
   pin's stadium with the margin segmentation leaves), minus the aperture-shear band when the
   gun has one, minus dropouts.

Each casing's descriptor (``ballistics.descriptors.describe``) and screening signature
(``ballistics.screen.signature``) are computed by the real functions from a
:class:`ballistics.pipeline.PreparedCasing` holding the canvas. The cache keeps only those
(576 B + 16 KiB per casing); the comparison surface is **regenerated deterministically from
(seed, index)** when stage 3 needs it (:func:`prepared`), ~0.1 s.

How these casings differ from full simulations (see RESULTS-scale.md for the measured effect):

* no segmentation, no cropping, no levelling, no outlier removal: the mask geometry is drawn,
  not found, and the canvas is centred on the true primer centre (no centring error);
* the band-pass is circular (FFT over the whole canvas) instead of NaN-aware normalised
  convolution inside the mask, so there are no filter edge effects at the pin hole or rim;
* texture grid: the synth families are drawn on their 6-um grid and read as 6.25 um (all
  wavelengths 4 % longer than in ``fire``);
* no consecutive-manufacture groups (every distractor is an unrelated gun), one calibre
  (9 mm), no aperture-shear profile (so the striation term of the comparison is absent and
  there is no ``aperture_shear`` descriptor);
* instrument effects are reduced to PSF, white height noise, smooth drift and dropout blobs:
  no slope-dependent dropouts or spikes, no focus-variation noise gain on low texture, no
  photometric-stereo slope saturation.

Usage::

    nice -n 10 python benchmarks/scale_corpus.py --n 100000 --workers 2   # resumable

Cache: ``benchmarks/_data/scale/distractors-seed<S>/`` (``desc-<k>.npy`` (M, 144) float32,
``sig-<k>.npy`` (M, 32, 128) float32, ``meta-<k>.json``; chunks of :data:`CHUNK`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import ROOT

CACHE = ROOT / "benchmarks" / "_data" / "scale"
CHUNK = 500
CANVAS = 752  # a 9-mm primer's canvas side at 6.25 um (what prepare makes)
SPACING_M = 6.25e-6
PRIMER_RADIUS_M = 4.45e-3 / 2  # synth.CALIBERS["9mm"] / 2
SHORT_CUTOFF_UM = 16.0  # condition.DEFAULT_SHORT_CUTOFF_UM
LONG_CUTOFF_UM = 250.0  # condition.DEFAULT_LONG_CUTOFF_UM
VERSION = "scale-distractor-1"


@dataclass(frozen=True)
class Flavour:
    """What an instrument model leaves on the prepared canvas (lengths in micrometres).

    Attributes
    ----------
    psf_um : float
        Gaussian lateral transfer, incl. the anti-alias blur of the instrument's pixel
        (``hypot(psf_sigma_um, pixel_um / 2)`` of the instrument model).
    noise_um : float
        White height noise RMS (before the band-pass).
    drift_um : float
        Smooth (~100 um) height drift RMS, e.g. integrated normal noise.
    dust_frac : float
        Area fraction of dropout blobs.
    dust_um : float
        Dropout blob size.
    rim_margin_px : float
        Canvas pixels between the primer edge and the outermost valid pixel.
    hole_margin : float
        Firing-pin hole radius as a multiple of the pin's (stadium) radius.
    shear_band : bool
        Whether segmentation finds (and removes) the aperture-shear band.
    """

    psf_um: float
    noise_um: float
    drift_um: float
    dust_frac: float
    dust_um: float
    rim_margin_px: float
    hole_margin: float
    shear_band: bool


#: Parameters from ``ballistics.instruments.INSTRUMENTS`` (PSF, pixel, noise, dropouts); the
#: mask margins were measured on prepared full simulations of calibration seed 101 (rim:
#: outermost valid pixel 342-343 px from the centre for confocal / focus variation, 336 for
#: photometric stereo, primer radius 357 px; pin hole 1.15-1.25 x the pin radius where the
#: shear band was removed, 1.0 for photometric stereo).
FLAVOURS: dict[str, Flavour] = {
    "confocal": Flavour(
        psf_um=math.hypot(0.6, 3.125 / 2),
        noise_um=0.012,
        drift_um=0.0,
        dust_frac=0.006,
        dust_um=15.0,
        rim_margin_px=15.0,
        hole_margin=1.15,
        shear_band=True,
    ),
    "focus_variation": Flavour(
        psf_um=math.hypot(2.5, 4.4 / 2),
        noise_um=0.06,
        drift_um=0.0,
        dust_frac=0.01,
        dust_um=40.0,
        rim_margin_px=14.0,
        hole_margin=1.15,
        shear_band=True,
    ),
    "photometric_stereo": Flavour(
        psf_um=math.hypot(6.0, 7.4 / 2),
        noise_um=0.0,
        drift_um=0.3,
        dust_frac=0.0,
        dust_um=0.0,
        rim_margin_px=21.0,
        hole_margin=1.0,
        shear_band=False,
    ),
}
FLAVOUR_NAMES = tuple(FLAVOURS)


@dataclass(frozen=True)
class Distractor:
    """One drawn distractor canvas.

    Attributes
    ----------
    data : ndarray of shape (CANVAS, CANVAS), float32
        Conditioned heights in metres, 0 outside ``mask``.
    mask : ndarray of shape (CANVAS, CANVAS), bool
    meta : dict
        Flavour and the drawn gun's class characteristics.
    """

    data: np.ndarray
    mask: np.ndarray
    meta: dict[str, Any]


def _gauss_transfer(f: np.ndarray, cutoff_um: float) -> np.ndarray:
    """ISO 16610-21 Gaussian low-pass transmission at spatial frequency ``f`` (1/um)."""
    alpha = math.sqrt(math.log(2.0) / math.pi)
    return np.asarray(np.exp(-math.pi * (alpha * cutoff_um * f) ** 2))


@dataclass(frozen=True)
class _Grid:
    """The canvas's rfft2 grid and the filters that do not depend on the casing."""

    f: np.ndarray  # spatial frequency, 1/um, (CANVAS, CANVAS // 2 + 1)
    ang: np.ndarray  # direction of the frequency vector, rad
    weight: np.ndarray  # rfft bins' multiplicity in the full spectrum (1 or 2)
    band: np.ndarray  # synth texture band (20-300 um, red slope), as synth._component
    rough: np.ndarray  # primer roughness: Gaussian smoothing, sigma 15 um (synth._shoot)
    drift: np.ndarray  # smooth drift: Gaussian smoothing, sigma 100 um
    transfer: dict[str, np.ndarray]  # band-pass 16-250 um x the flavour's PSF
    f1: np.ndarray  # frequencies of the 1-D arc profile (1-um samples, 16384), 1/um


_G: list[_Grid] = []


def _grid() -> _Grid:
    if not _G:
        p = SPACING_M * 1e6
        fy = np.fft.fftfreq(CANVAS, p)[:, None]
        fx = np.fft.rfftfreq(CANVAS, p)[None, :]
        f = np.hypot(fx, fy)
        lo, hi = 20.0, 300.0  # synth._BAND in um
        lam = 1.0 / np.maximum(f, 1e-30)
        band = 1.0 / (1.0 + (lam / hi) ** -4) / (1.0 + (lo / lam) ** -4)
        band *= (np.maximum(f, 1.0 / hi) * hi) ** -0.6
        band[0, 0] = 0.0
        weight = np.full(f.shape, 2.0)
        weight[:, 0] = weight[:, -1] = 1.0  # CANVAS is even: the Nyquist column is single
        bp = _gauss_transfer(f, SHORT_CUTOFF_UM) * (1.0 - _gauss_transfer(f, LONG_CUTOFF_UM))
        transfer = {
            name: (bp * np.exp(-2.0 * (math.pi * fl.psf_um * f) ** 2)).astype(np.float32)
            for name, fl in FLAVOURS.items()
        }
        _G.append(
            _Grid(
                f=f.astype(np.float32),
                ang=np.broadcast_to(np.arctan2(fy, fx), f.shape).astype(np.float32),
                weight=weight.astype(np.float32),
                band=band.astype(np.float32),
                rough=np.exp(-2.0 * (math.pi * 15.0 * f) ** 2).astype(np.float32),
                drift=np.exp(-2.0 * (math.pi * 100.0 * f) ** 2).astype(np.float32),
                transfer=transfer,
                f1=np.fft.rfftfreq(16384, 1.0),
            )
        )
    return _G[0]


def _white(rng: np.random.Generator) -> np.ndarray:
    """Complex white noise on the rfft2 grid (complex64)."""
    w = rng.standard_normal((CANVAS, CANVAS // 2 + 1, 2), dtype=np.float32)
    return w.view(np.complex64)[..., 0]


def _unit(spec: np.ndarray, g: _Grid) -> np.ndarray:
    """Scale a spectrum so that its field has unit RMS (Parseval on the rfft grid)."""
    power = float(np.sum(g.weight * (spec.real**2 + spec.imag**2)))
    return spec * np.float32(CANVAS**2 / math.sqrt(power or 1.0))


def _directional(g: _Grid, theta: float, width_deg: float) -> np.ndarray:
    d = np.mod(g.ang - np.float32(theta) + np.float32(math.pi / 2), np.float32(math.pi))
    d -= np.float32(math.pi / 2)  # distance of the direction to theta, modulo pi
    return np.exp(np.float32(-0.5 / math.radians(width_deg) ** 2) * d * d)


def _texture(pattern: str, rng: np.random.Generator, flavour: str) -> np.ndarray:
    """A unit-RMS (before conditioning) breech-face texture of one of the synth families,
    band-passed and PSF-filtered, on the canvas (float32). The filters are those of
    ``synth._component``, evaluated on the 6.25-um canvas grid."""
    g = _grid()
    tr = g.transfer[flavour]
    noise = _white(rng)
    if pattern == "granular":
        spec = _unit(noise * g.band, g)
    elif pattern in ("parallel", "crosshatch"):
        t0 = float(rng.uniform(0, math.pi))
        h = _directional(g, t0, 2.5)
        if pattern == "crosshatch":
            h = h + _directional(g, t0 + math.radians(rng.uniform(50, 90)), 2.5)
        spec = _unit(noise * g.band * (np.float32(0.15) + h), g)
    elif pattern == "arc":
        # circular turning marks: a 1-D profile of the distance to a far-away centre, filtered
        # in 1-D (the arcs are nearly straight over the transfer's few micrometres)
        iso = _unit(noise * g.band, g)
        lam = 1.0 / np.maximum(g.f1, 1e-30)
        h1 = 1.0 / (1.0 + (lam / 300.0) ** -4) / (1.0 + (20.0 / lam) ** -4)
        h1[0] = 0.0
        prof = np.fft.irfft(np.fft.rfft(rng.standard_normal(16384)) * h1, 16384)
        prof /= prof.std() + 1e-30
        fl = FLAVOURS[flavour]
        f1 = g.f1
        t1 = _gauss_transfer(f1, SHORT_CUTOFF_UM) * (1.0 - _gauss_transfer(f1, LONG_CUTOFF_UM))
        t1 = t1 * np.exp(-2.0 * (math.pi * fl.psf_um * f1) ** 2)
        prof_c = np.fft.irfft(np.fft.rfft(prof) * t1, 16384).astype(np.float32)
        dist = float(rng.uniform(3e-3, 8e-3))
        a = float(rng.uniform(0, 2 * math.pi))
        ax = (np.arange(CANVAS, dtype=np.float32) - CANVAS / 2) * np.float32(SPACING_M)
        r = np.hypot(
            ax[None, :] - np.float32(dist * math.cos(a)),
            ax[:, None] - np.float32(dist * math.sin(a)),
        )
        ri = np.clip(((r - r.min()) / np.float32(1e-6)).astype(np.int64), 0, prof_c.size - 1)
        out = prof_c[ri] + np.float32(0.35) * np.fft.irfft2(iso * tr, (CANVAS, CANVAS))
        return np.asarray(out / np.float32(math.sqrt(1 + 0.35**2)), np.float32)
    else:  # pragma: no cover - PATTERNS is fixed
        raise ValueError(pattern)
    return np.asarray(np.fft.irfft2(spec * tr, (CANVAS, CANVAS)), np.float32)


def draw(seed: int, index: int) -> Distractor:
    """Distractor ``index`` of the corpus ``seed`` (bit-identical for the same arguments).

    The flavour cycles over :data:`FLAVOUR_NAMES` with ``index``; everything else is drawn
    from ``numpy.random.default_rng([seed, index, 0x5CA1E])``.
    """
    from ballistics.synth import PATTERNS, _blobs

    f32 = np.float32
    g = _grid()
    rng = np.random.default_rng([seed, index, 0x5CA1E])
    flavour = FLAVOUR_NAMES[index % len(FLAVOUR_NAMES)]
    fl = FLAVOURS[flavour]
    # --- the gun (as synth.make_firearms / _gun_params) ----------------------------------
    pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
    elongated = bool(rng.random() < 0.35)
    if elongated:
        a_m, b_m = float(rng.uniform(0.55e-3, 0.65e-3)), float(rng.uniform(0.28e-3, 0.33e-3))
    else:
        a_m = b_m = float(rng.uniform(0.5e-3, 0.75e-3))
    amp = float(rng.uniform(1.0e-6, 3.0e-6))
    has_shear = bool(rng.random() < (0.9 if elongated else 0.6))
    rr, ra = float(rng.uniform(0.0, 0.12e-3)), float(rng.uniform(0, 2 * math.pi))
    fp_angle = float(rng.uniform(0, math.pi))
    shear_angle = float(rng.uniform(0, 2 * math.pi))
    if elongated:
        shear_angle = fp_angle + math.pi / 2 * (1 if rng.random() < 0.5 else -1)
    shear_length = float(rng.uniform(0.3e-3, 0.45e-3))
    # --- the shot ------------------------------------------------------------------------
    rp = PRIMER_RADIUS_M * float(rng.uniform(0.995, 1.005))
    jit = rng.normal(0.0, 25e-6, 2)
    s = SPACING_M
    c = (CANVAS - 1) / 2.0
    ax = ((np.arange(CANVAS) - c) * s).astype(f32)
    xs, ys = ax[None, :], ax[:, None]
    r = np.sqrt(xs * xs + ys * ys)
    # pin-centred frame
    gx = xs - f32(rr * math.cos(ra) + jit[0])
    gy = ys - f32(rr * math.sin(ra) + jit[1])
    ca_, sa_ = math.cos(fp_angle), math.sin(fp_angle)
    pu = f32(ca_) * gx + f32(sa_) * gy
    pv = -f32(sa_) * gx + f32(ca_) * gy
    du = np.maximum(np.abs(pu) - f32(a_m - b_m), 0)
    rho = np.sqrt(du * du + pv * pv) / f32(b_m)

    tex = _texture(pattern, rng, flavour)
    cang = float(rng.uniform(0, 2 * math.pi))
    cslope = float(rng.uniform(0.0, 0.8))
    cw = np.clip(
        f32(0.8) + f32(cslope) * (f32(math.cos(cang)) * xs + f32(math.sin(cang)) * ys) / f32(rp),
        0.3,
        1.0,
    )
    # primer roughness (0.2-0.4 um, ~15 um), white noise and drift of the flavour: independent
    # Gaussian fields, so one draw with the combined spectrum
    rough = float(rng.uniform(0.2e-6, 0.4e-6))
    parts = [(rough, g.rough), (fl.noise_um * 1e-6, None), (fl.drift_um * 1e-6, g.drift)]
    psd = np.zeros(g.f.shape, np.float32)
    for a, h in parts:
        if a > 0:
            hh = np.ones_like(g.f) if h is None else h
            rms2 = float(np.sum(g.weight * hh * hh)) / CANVAS**2
            psd += f32(a * a / rms2) * hh * hh
    lip = f32(3e-6) * np.exp(-(((rho - f32(1.1)) / f32(0.08)) ** 2))  # flow-back lip
    spec = _white(rng) * np.sqrt(psd) + np.fft.rfft2(lip)
    nuis = np.fft.irfft2(spec * g.transfer[flavour], (CANVAS, CANVAS))
    cond = f32(amp) * tex * cw + nuis.astype(f32)
    # --- the breech-face mask -------------------------------------------------------------
    mask = (r < f32(rp - fl.rim_margin_px * s)) & (rho >= f32(fl.hole_margin))
    if has_shear and fl.shear_band:
        cs_, ss_ = math.cos(shear_angle), math.sin(shear_angle)
        su = f32(cs_) * gx + f32(ss_) * gy
        sv = -f32(ss_) * gx + f32(cs_) * gy
        ext = (a_m - b_m) * abs(math.cos(shear_angle - fp_angle)) + b_m
        width = 2 * b_m * 0.9 if elongated else 1.4 * b_m
        s0 = ext * 0.85
        band = (su > 0) & (su < f32(s0 + shear_length)) & (np.abs(sv) < f32(width / 2 + 3 * s))
        mask &= ~band
    if fl.dust_frac > 0:
        mask &= ~_blobs(rng, (CANVAS, CANVAS), fl.dust_frac, fl.dust_um * 1e-6 / s)
    data = np.where(mask, cond, f32(0.0)).astype(f32)
    meta = {
        "flavour": flavour,
        "pattern": pattern,
        "fp_shape": "elongated" if elongated else "round",
        "shear_band": bool(has_shear and fl.shear_band),
    }
    return Distractor(data, mask, meta)


def prepared(seed: int, index: int) -> Any:
    """Distractor ``index`` as a :class:`ballistics.pipeline.PreparedCasing` (what stage 3
    compares), regenerated from its seed."""
    from ballistics.pipeline import PreparedCasing
    from ballistics.scan import Scan

    d = draw(seed, index)
    surface = Scan(
        np.where(d.mask, d.data.astype(np.float64), np.nan),
        d.mask,
        (SPACING_M, SPACING_M),
        "topography",
    ).evolve("scale_corpus.draw", {"seed": seed, "index": index, "version": VERSION, **d.meta})
    seg = {"synthetic_distractor": True, **d.meta}
    return PreparedCasing(surface, seg, None, None)


def features(p: Any) -> tuple[np.ndarray, np.ndarray]:
    """(breech-face descriptor (144,) float32, screening signature (32, 128) float32) of a
    prepared casing, by the functions the index uses."""
    from ballistics.descriptors import breech_face_descriptor
    from ballistics.screen import signature

    return breech_face_descriptor(p), signature(p)


def corpus_dir(seed: int) -> Path:
    return CACHE / f"distractors-seed{seed}"


def _make_chunk(args: tuple[int, int, int]) -> tuple[int, float, float]:
    """Generate and write chunk ``k`` (indices k*CHUNK ..) of corpus ``seed``; returns
    (k, wall seconds, CPU seconds of this process)."""
    seed, k, n = args
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    t = time.perf_counter()
    cpu = time.process_time()
    out = corpus_dir(seed)
    lo, hi = k * CHUNK, min(n, (k + 1) * CHUNK)
    desc = np.zeros((hi - lo, 144), np.float32)
    sig = np.zeros((hi - lo, 32, 128), np.float32)
    metas = []
    for j, i in enumerate(range(lo, hi)):
        p = prepared(seed, i)
        desc[j], sig[j] = features(p)
        metas.append(p.segmentation)
    # write-then-rename: an interrupted build leaves no half chunk behind
    for name, arr in (("desc", desc), ("sig", sig)):
        tmp = out / f"{name}-{k:04d}.tmp.npy"
        np.save(tmp, arr)
        tmp.rename(out / f"{name}-{k:04d}.npy")
    (out / f"meta-{k:04d}.json").write_text(json.dumps(metas))
    return k, time.perf_counter() - t, time.process_time() - cpu


def chunk_done(seed: int, k: int, n: int) -> bool:
    """Chunk ``k`` is written and holds all of its casings for a corpus of ``n``."""
    d = corpus_dir(seed)
    files = [d / f"desc-{k:04d}.npy", d / f"sig-{k:04d}.npy", d / f"meta-{k:04d}.json"]
    if not all(f.exists() for f in files):
        return False
    want = min(n, (k + 1) * CHUNK) - k * CHUNK
    return len(json.loads(files[2].read_text())) >= want


def build(n: int, seed: int, workers: int) -> dict[str, Any]:
    """Generate (resuming) the first ``n`` distractors of corpus ``seed``; returns the rate."""
    out = corpus_dir(seed)
    out.mkdir(parents=True, exist_ok=True)
    todo = [(seed, k, n) for k in range(math.ceil(n / CHUNK)) if not chunk_done(seed, k, n)]
    # a short last chunk from a smaller build is regenerated when n grows past it
    t = time.perf_counter()
    made = 0
    cpu = 0.0
    if todo:
        with ProcessPoolExecutor(max(1, workers)) as ex:
            for k, s, c in ex.map(_make_chunk, todo):
                made += min(n, (k + 1) * CHUNK) - k * CHUNK
                cpu += c
                print(f"chunk {k}: {s:.1f} s wall, {c:.1f} s CPU", file=sys.stderr, flush=True)
    wall = time.perf_counter() - t
    info = {
        "n": n,
        "seed": seed,
        "version": VERSION,
        "generated": made,
        "wall_s": round(wall, 1),
        "workers": workers,
        "casings_per_s": round(made / wall, 2) if made else None,
        "cpu_s_per_casing": round(cpu / made, 4) if made else None,
        "projected_h_for_100k_on_2_free_cores": round(cpu / made * 100_000 / 2 / 3600, 2)
        if made
        else None,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    if made:
        (out / f"BUILD-{int(time.time())}.json").write_text(json.dumps(info))
    return info


def load(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """The first ``n`` cached distractors: descriptors (n, 144), signatures (n, 32, 128)
    (memory-mapped chunks concatenated) and metadata."""
    d = corpus_dir(seed)
    ks = range(math.ceil(n / CHUNK))
    missing = [k for k in ks if not chunk_done(seed, k, n)]
    if missing:
        raise FileNotFoundError(
            f"distractor chunks {missing[:5]}... of seed {seed} are not built; run "
            f"python benchmarks/scale_corpus.py --n {n} --seed {seed}"
        )
    desc = np.concatenate([np.load(d / f"desc-{k:04d}.npy") for k in ks])[:n]
    sig = np.concatenate([np.load(d / f"sig-{k:04d}.npy", mmap_mode="r") for k in ks])[:n]
    meta = [m for k in ks for m in json.loads((d / f"meta-{k:04d}.json").read_text())][:n]
    if len(desc) < n:
        raise FileNotFoundError(f"only {len(desc)} distractors cached; need {n}")
    return desc, sig, meta


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    print(json.dumps(build(args.n, args.seed, args.workers)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
