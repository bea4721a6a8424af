"""Does the true pose survive registration? Synthetic same-gun pairs with a known relative pose.

Usage::

    python benchmarks/pose_survival.py [--seed 2] [--same 8] [--diff 4] [--conditions ...]
        [--maker module:function] [--no-before] [--no-exhaustive]
        [--out benchmarks/results/pose-survival-seed2.json]
    python benchmarks/pose_survival.py --conditions photometric_stereo photometric_stereo_faint \
        --same 10 --diff 10 --no-before     # an instrument model against the exhaustive sweep

For every pair the known pose (b onto a) is followed through each step of the comparison:

* ``after`` (this tree's :func:`ballistics.compare.compare_traced`): is a hypothesis within
  tolerance of the truth among the coarse sweep's hypotheses (``coarse``), among those chosen
  for refinement by cell evidence (``screened``), after refinement (``refined``); is the final
  pose right (``final``); is it right *and* a CMC match (``cmc``: >= 6 congruent cells both
  ways)?
* ``before`` (the comparison as of commit ``BASE``, loaded from git): the same steps, where the
  coarse step only keeps rotations (any kept rotation within tolerance counts);
* ``after, full sweep without hints`` (``rotation_hints=0``): hints must never cost a match;
* ``exhaustive``: every 1-deg rotation over 360 deg on the 25-um level with all translations
  within +-1 mm (``ballistics.register.reference/ncc_maps/rotate``, as in
  ``benchmarks/compare_speed.py``'s exhaustive mode but one level coarser to stay affordable),
  then the same cell stage (CMC both ways) at the best pose.

Tolerances: coarse and screened hypotheses within 4 deg and 150 um, refined and final poses
within 2 deg and 60 um. Timing: process CPU time per pair on one thread, median ms.

Pairs come from *makers*: a function ``maker(seed, n_same, n_diff)`` returning a list of
``Case`` (scan or prepared casing a, the same for b, a :class:`TruePose` or None for
different-gun pairs, a label). The built-in conditions use :mod:`ballistics.synth` with hard
variants (large offsets between primer centres, faint texture and low contact, noise, a
low-frequency warp with smoothing as a stand-in for another instrument's transfer); the
conditions of :data:`INSTRUMENT_CONDITIONS` record the true surface with an instrument model of
:mod:`ballistics.instruments` (photometric stereo, processed breech faces); others plug in
with ``--maker package.module:function``.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import argparse
import dataclasses
import importlib
import importlib.util
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import ROOT, auc, machine

cv2.setNumThreads(1)
clock = time.process_time

#: The commit whose comparison is the "before" column.
BASE = "3a73d65"
COARSE_TOL = (4.0, 150e-6)
FINE_TOL = (2.0, 60e-6)
MATCH_CMC = 6


@dataclass(frozen=True)
class TruePose:
    """Known relative pose of b onto a, in the sense of :class:`ballistics.compare.Pose`.

    A point of b at ``anchor_b_m`` (row, col metres from b's first pixel centre) lies on the
    point of a at ``anchor_a_m``; about it, b is rotated by ``rotation_deg`` (counter-clockwise
    as displayed) to fit a. For a raw scan the frame is the scan's pixel grid; for a prepared
    casing, its canvas."""

    rotation_deg: float
    anchor_a_m: tuple[float, float]
    anchor_b_m: tuple[float, float]


@dataclass
class Case:
    a: Any  # Scan or PreparedCasing
    b: Any
    truth: TruePose | None  # None: different guns
    label: str


def canvas_pose(t: TruePose, centre_a_m: tuple[float, float], centre_b_m: tuple[float, float]):
    """The :class:`Pose` between two canvases centred on ``centre_*_m`` (row, col metres in
    the frames of the anchors)."""
    from ballistics.compare import Pose

    al = math.radians(t.rotation_deg)
    c, s = math.cos(al), math.sin(al)
    # cv2's rotation on (x, y) = (col, row): [[c, s], [-s, c]].
    vx = centre_b_m[1] - t.anchor_b_m[1]
    vy = centre_b_m[0] - t.anchor_b_m[0]
    tx = t.anchor_a_m[1] - centre_a_m[1] + c * vx + s * vy
    ty = t.anchor_a_m[0] - centre_a_m[0] - s * vx + c * vy
    return Pose(t.rotation_deg % 360.0, ty, tx)


def prepared_with_centre(x: Any) -> tuple[Any, tuple[float, float]]:
    """Prepare a scan (or take a prepared casing) and return where its canvas centre lies in
    the anchor frame (row, col metres)."""
    from ballistics.pipeline import PreparedCasing, prepare

    if isinstance(x, PreparedCasing):
        n = x.surface.shape[0]
        sp = x.surface.spacing_m[0]
        return x, ((n - 1) / 2 * sp, (n - 1) / 2 * sp)
    p = prepare(x)
    pc = p.segmentation["primer_center"]
    return p, (pc[0] * x.spacing_m[0], pc[1] * x.spacing_m[1])


# --------------------------------------------------------------------------------------
# degradations (benchmark-only stand-ins for other instruments and poor casings)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float):
    k = max(1, int(sigma_px / 2))
    w = rng.standard_normal((shape[0] // k + 3, shape[1] // k + 3)).astype(np.float32)
    w = cv2.GaussianBlur(w, (0, 0), sigma_px / k)
    w = cv2.resize(w, (w.shape[1] * k, w.shape[0] * k), interpolation=cv2.INTER_LINEAR)
    w = w[: shape[0], : shape[1]]
    return w / (w.std() + 1e-12)


def add_noise(scan: Any, rng: np.random.Generator, white_m: float, smooth_m: float) -> Any:
    """White noise plus 15-um-correlated noise (an instrument noisier than the synth's)."""
    from ballistics import Scan

    sp = scan.spacing_m[0]
    z = scan.data + white_m * rng.standard_normal(scan.shape)
    z = z + smooth_m * _smooth_field(rng, scan.shape, 15e-6 / sp)
    return Scan(np.where(scan.mask, z, np.nan), scan.mask, scan.spacing_m, scan.kind)


def warp_and_smooth(
    scan: Any, rng: np.random.Generator, disp_m: float, blur_m: float, wavelength_m: float = 1e-3
) -> Any:
    """A zero-mean low-frequency displacement field (RMS ``disp_m``, correlation length about
    ``wavelength_m``) and a Gaussian blur of standard deviation ``blur_m``: a different
    instrument's distortion and transfer."""
    from ballistics import Scan

    sp = scan.spacing_m[0]
    h, w = scan.shape
    sig = wavelength_m / sp / 4
    dx = disp_m / sp * _smooth_field(rng, (h, w), sig)
    dy = disp_m / sp * _smooth_field(rng, (h, w), sig)
    mx = (np.arange(w, dtype=np.float32)[None, :] + dx).astype(np.float32)
    my = (np.arange(h, dtype=np.float32)[:, None] + dy).astype(np.float32)
    filled = np.where(scan.mask, scan.data, 0.0).astype(np.float32)
    m = scan.mask.astype(np.float32)
    num = cv2.GaussianBlur(filled, (0, 0), blur_m / sp)
    den = cv2.GaussianBlur(m, (0, 0), blur_m / sp)
    z = np.where(den > 0.5, num / np.maximum(den, 1e-6), 0.0).astype(np.float32)
    z = cv2.remap(z, mx, my, cv2.INTER_LINEAR)
    mm = cv2.remap((den > 0.5).astype(np.float32) * m, mx, my, cv2.INTER_LINEAR) > 0.99
    return Scan(np.where(mm, z, np.nan), mm, scan.spacing_m, scan.kind)


def shift_canvas(p: Any, dy_m: float, dx_m: float) -> tuple[Any, tuple[float, float]]:
    """Move the breech face by (dy, dx) on a canvas padded to hold it: a primer-centre error
    (or a lab that centres on something else). Returns the casing and the anchor shift
    (row, col metres) in the new canvas frame, including the padding."""
    from ballistics import Scan
    from ballistics.pipeline import PreparedCasing
    from ballistics.register import rotate

    s = p.surface
    sp = s.spacing_m[0]
    pad = math.ceil(max(abs(dy_m), abs(dx_m)) / sp / 8.0) * 8 + 8
    d = np.pad(np.where(s.mask, s.data, 0.0), pad)
    m = np.pad(s.mask, pad)
    d2, m2 = rotate(d, m, 0.0, (dy_m / sp, dx_m / sp))
    surf = Scan(np.where(m2, d2, np.nan), m2, s.spacing_m, s.kind, s.provenance)
    return PreparedCasing(surf, p.segmentation, p.aperture_profile), (
        pad * sp + dy_m,
        pad * sp + dx_m,
    )


# --------------------------------------------------------------------------------------
# built-in conditions


CONDITIONS: dict[str, dict[str, Any]] = {
    "standard": {},
    "offset_1mm": {"offset_m": (0.6e-3, 1.0e-3)},
    "faint": {"amplitude_m": 0.5e-6, "contact_min": 0.05},
    "noisy": {"noise_m": (0.4e-6, 0.3e-6)},
    "warped": {"warp_m": (6e-6, 10e-6)},
    "hard": {
        "amplitude_m": 0.7e-6,
        "contact_min": 0.1,
        "noise_m": (0.3e-6, 0.2e-6),
        "warp_m": (5e-6, 8e-6),
        "offset_m": (0.4e-3, 1.0e-3),
    },
    # b's prepared surface plus offsets constant over 500-um blocks, as large as its texture
    # (stitched fields of view, an instrument's low-frequency residue left by conditioning).
    "stepped": {"steps_m": 500e-6},
}


def synth_maker(condition: str) -> Callable[[int, int, int], list[Case]]:
    """A maker for one built-in condition (see :data:`CONDITIONS`)."""
    cfg = CONDITIONS[condition]

    def make(seed: int, n_same: int, n_diff: int) -> list[Case]:
        from ballistics.synth import fire, make_firearms

        guns = make_firearms(n_same + 1, seed=seed * 7919 + len(condition), group_fraction=0.0)
        if "amplitude_m" in cfg:
            guns = [dataclasses.replace(g, texture_amplitude_m=cfg["amplitude_m"]) for g in guns]
        rng = np.random.default_rng([seed, len(condition), 0xB0])
        kw = {"contact_min": cfg.get("contact_min", 0.3)}

        def shot(g: Any, k: int, second: bool) -> tuple[Any, tuple[float, float], float]:
            scan, tr = fire(g, shot_seed=seed * 100 + k, **kw)
            if "noise_m" in cfg:
                scan = add_noise(scan, rng, *cfg["noise_m"])
            if second and "warp_m" in cfg:
                scan = warp_and_smooth(scan, rng, *cfg["warp_m"])
            sp = tr.spacing_m
            return scan, (tr.fp_center[0] * sp, tr.fp_center[1] * sp), tr.rotation_deg

        cases = []
        for n in range(n_same + n_diff):
            ga = guns[n % n_same] if n < n_same else guns[(n - n_same) % n_same]
            gb = ga if n < n_same else guns[(n - n_same + 1) % (n_same + 1)]
            a, anc_a, th_a = shot(ga, 2 * n, False)
            b, anc_b, th_b = shot(gb, 2 * n + 1, True)
            truth = TruePose((th_b - th_a) % 360.0, anc_a, anc_b) if gb is ga else None
            label = f"{condition}/{ga.id}-{gb.id}/{ga.breech_pattern}"
            if "offset_m" in cfg or "steps_m" in cfg:
                pa, ca = prepared_with_centre(a)
                pb, cb = prepared_with_centre(b)
                r = rng.uniform(*cfg["offset_m"]) if "offset_m" in cfg else 0.0
                phi = rng.uniform(0, 2 * math.pi) if "offset_m" in cfg else 0.0
                pb2, shift = shift_canvas(pb, r * math.sin(phi), r * math.cos(phi))
                if truth is not None:
                    # Re-express both anchors in canvas frames (centre = canvas centre).
                    n_a, n_b = pa.surface.shape[0], pb.surface.shape[0]
                    sp = pa.surface.spacing_m[0]
                    aa = (
                        truth.anchor_a_m[0] - ca[0] + (n_a - 1) / 2 * sp,
                        truth.anchor_a_m[1] - ca[1] + (n_a - 1) / 2 * sp,
                    )
                    ab = (
                        truth.anchor_b_m[0] - cb[0] + (n_b - 1) / 2 * sp + shift[0],
                        truth.anchor_b_m[1] - cb[1] + (n_b - 1) / 2 * sp + shift[1],
                    )
                    truth = TruePose(truth.rotation_deg, aa, ab)
                a, b = pa, pb2
            if "steps_m" in cfg:
                b = add_steps(b, rng, cfg["steps_m"])
            cases.append(Case(a, b, truth, label))
        return cases

    return make


def add_steps(x: Any, rng: np.random.Generator, block_m: float) -> Any:
    """A prepared casing (or a scan, prepared first) plus a random offset per square block of
    side ``block_m``, with the standard deviation of the surface's own values."""
    from ballistics.pipeline import PreparedCasing, prepare
    from ballistics.scan import Scan

    p = x if isinstance(x, PreparedCasing) else prepare(x)
    s = p.surface
    n = s.shape[0]
    blk = max(1, round(block_m / s.spacing_m[0]))
    rms = float(np.sqrt(np.mean(s.data[s.mask] ** 2)))
    steps = rng.standard_normal((n // blk + 1, n // blk + 1))
    form = rms * np.kron(steps, np.ones((blk, blk)))[:n, :n]
    surf = Scan(np.where(s.mask, s.data + form, np.nan), s.mask, s.spacing_m, s.kind)
    return dataclasses.replace(p, surface=surf)


INSTRUMENT_CONDITIONS: dict[str, dict[str, Any]] = {
    "photometric_stereo": {"instrument": "photometric_stereo", "crop": "annulus_pin_invalid"},
    "photometric_stereo_faint": {
        "instrument": "photometric_stereo",
        "crop": "annulus_pin_invalid",
        "amplitude_m": 0.7e-6,
        "contact_min": 0.1,
    },
    # The other instrument models, 3-D and 2-D (same crop; used by compare_speed.py).
    **{
        name: {"instrument": name, "crop": "annulus_pin_invalid"}
        for name in (
            "confocal",
            "focus_variation",
            "ring_low",
            "ring_high",
            "side_light",
            "coaxial",
        )
    },
}
"""Conditions recorded by an instrument model of :mod:`ballistics.instruments` (the true
surface of :func:`ballistics.synth.fired_surface` measured by the named model at one of its
pixel sizes) and cut to a style of :mod:`ballistics.crop_styles` (``annulus_pin_invalid``:
processed breech faces, as the photometric-stereo scans of issue 9 were); ``*_faint`` adds
weak marks and low contact."""


def instrument_maker(condition: str) -> Callable[[int, int, int], list[Case]]:
    """A maker for one of :data:`INSTRUMENT_CONDITIONS`: same-gun pairs with the known pose
    from the synthetic truth (rotation difference; the firing-pin centre, fixed in the gun
    frame, as the anchor), different-gun pairs between neighbouring guns."""
    cfg = INSTRUMENT_CONDITIONS[condition]

    def make(seed: int, n_same: int, n_diff: int) -> list[Case]:
        from ballistics.crop_styles import styled_variants
        from ballistics.instruments import INSTRUMENTS, instrument_rng, record
        from ballistics.synth import fired_surface, make_firearms

        name = cfg["instrument"]
        inst = INSTRUMENTS[name]
        guns = make_firearms(n_same + 1, seed=seed * 7919 + len(condition), group_fraction=0.0)
        if "amplitude_m" in cfg:
            guns = [dataclasses.replace(g, texture_amplitude_m=cfg["amplitude_m"]) for g in guns]
        rng = np.random.default_rng([seed, len(condition), 0xB1])

        def shot(g: Any, k: int) -> tuple[Any, tuple[float, float], float]:
            pixel = float(rng.choice(inst.pixels_um))
            surf = fired_surface(
                g,
                shot_seed=seed * 100 + k,
                spacing_m=pixel * 1e-6,
                contact_min=cfg.get("contact_min", 0.3),
            )
            scan, tr = record(surf, name, rng=instrument_rng(g.seed, seed * 100 + k, name))
            fp = tr.fp_center
            if "crop" in cfg:
                st = styled_variants(scan, tr, seed=seed * 100 + k, variants=(cfg["crop"],))[0]
                scan, fp = st.scan, st.fp_center
            sp = tr.spacing_m
            return scan, (fp[0] * sp, fp[1] * sp), tr.rotation_deg

        cases = []
        for n in range(n_same + n_diff):
            ga = guns[n % n_same]
            gb = ga if n < n_same else guns[(n - n_same + 1) % (n_same + 1)]
            a, anc_a, th_a = shot(ga, 2 * n)
            b, anc_b, th_b = shot(gb, 2 * n + 1)
            truth = TruePose((th_b - th_a) % 360.0, anc_a, anc_b) if gb is ga else None
            cases.append(Case(a, b, truth, f"{condition}/{ga.id}-{gb.id}/{ga.breech_pattern}"))
        return cases

    return make


# --------------------------------------------------------------------------------------
# methods


def load_before() -> Any:
    """The comparison module as of :data:`BASE`, imported beside this tree's."""
    src = subprocess.run(
        ["git", "show", f"{BASE}:ballistics/compare.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    spec = importlib.util.spec_from_loader("ballistics._compare_before", loader=None)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "ballistics"
    sys.modules["ballistics._compare_before"] = mod
    exec(compile(src, f"{BASE}:ballistics/compare.py", "exec"), mod.__dict__)
    return mod


def close(p: Any, q: Any, tol: tuple[float, float]) -> bool:
    da = abs((p.rotation_deg - q.rotation_deg + 180.0) % 360.0 - 180.0)
    dt = math.hypot(p.dy_m - q.dy_m, p.dx_m - q.dx_m)
    return da <= tol[0] and dt <= tol[1]


def run_before(old: Any, a: Any, b: Any, truth: Any) -> dict[str, Any]:
    p = old.CompareParams()
    t = clock()
    c = old.compare(a, b, params=p)
    ms = 1000 * (clock() - t)
    out: dict[str, Any] = {"ms": ms, "score": c.score, "cmc": c.cmc, "flags": []}
    if truth is None:
        return out
    # The coarse rotations the old registration kept (same code path as its register()).
    fa, fb = old._same_canvas(a.level(p.coarse_factor), b.level(p.coarse_factor))
    s_c = max(1, round(p.max_offset_um * 1e-6 / (a.surface.spacing_m[0] * p.coarse_factor)))
    angles = old._coarse_angles(a, b, p)
    maps = old._sweep(old.reference(*fa, s_c), fb, angles, s_c)
    peak = maps.reshape(len(angles), -1).max(axis=1)
    chosen: list[float] = []
    for k in np.argsort(-peak):
        ang = float(angles[k])
        if all(abs((ang - x + 180) % 360 - 180) >= 1.5 * p.coarse_step_deg for x in chosen):
            chosen.append(ang)
        if len(chosen) == p.coarse_peaks:
            break
    rot_ok = [abs((x - truth.rotation_deg + 180) % 360 - 180) <= COARSE_TOL[0] for x in chosen]
    refined, _ = old.register(a, b, p)
    out["steps"] = {
        "coarse": any(rot_ok),
        "screened": any(rot_ok),
        "refined": close(refined, truth, FINE_TOL),
        "final": close(c.pose, truth, FINE_TOL),
    }
    out["steps"]["cmc"] = out["steps"]["final"] and c.cmc >= MATCH_CMC
    return out


def run_after(a: Any, b: Any, truth: Any, params: Any) -> dict[str, Any]:
    from ballistics.compare import compare_traced

    t = clock()
    c, tr = compare_traced(a, b, params=params)
    ms = 1000 * (clock() - t)
    out: dict[str, Any] = {
        "ms": ms,
        "score": c.score,
        "cmc": c.cmc,
        "flags": list(c.flags),
        "pose": [c.pose.rotation_deg, c.pose.dy_m, c.pose.dx_m],
        "hypotheses": len(tr.coarse),
        "finalised": len(tr.final),
    }
    if truth is None:
        return out
    out["steps"] = {
        "coarse": any(close(h.pose, truth, COARSE_TOL) for h in tr.coarse),
        "screened": any(close(h.pose, truth, COARSE_TOL) for h in tr.refined),
        "refined": any(close(h.pose, truth, FINE_TOL) for h in tr.refined),
        "final": close(c.pose, truth, FINE_TOL),
    }
    out["steps"]["cmc"] = out["steps"]["final"] and c.cmc >= MATCH_CMC
    return out


def run_exhaustive(a: Any, b: Any, truth: Any, params: Any) -> dict[str, Any]:
    """1-deg full-circle NCC on the refinement level, then the cell stage at the best pose."""
    from ballistics import compare as cm
    from ballistics.register import ncc_maps, reference, rotate

    t = clock()
    f = params.refine_factor
    (da, ma), (db, mb) = cm._same_canvas(a.level(f), b.level(f))
    sp = a.surface.spacing_m[0] * f
    s = round(params.max_offset_um * 1e-6 / sp)
    ref = reference(da, ma, s)
    best = (-2.0, 0.0, 0, 0)
    for start in range(0, 360, 12):
        angles = range(start, min(360, start + 12))
        d = np.empty((len(angles), *db.shape), np.float32)
        m = np.empty((len(angles), *db.shape), bool)
        for k, ang in enumerate(angles):
            d[k], m[k] = rotate(db, mb, float(ang))
        maps = ncc_maps(ref, d, m, s)
        k, i, j = np.unravel_index(int(np.argmax(maps)), maps.shape)
        if maps[k, i, j] > best[0]:
            best = (float(maps[k, i, j]), float(angles[k]), int(i) - s, int(j) - s)
    pose = cm.Pose(best[1], best[2] * sp, best[3] * sp)
    spc = a.surface.spacing_m[0] * params.cell_factor
    la, lb = cm._levels(a, b, params.cell_factor, params)
    pose, corr = cm._refine_translation(la, lb, pose, spc)
    fwd = cm._congruence(cm._cells(la, lb, pose, params, spc, "a->b"), params)
    bwd = cm._congruence(cm._cells(lb, la, pose.inverse(), params, spc, "b->a"), params)
    score, _ = cm._score(fwd, bwd, corr)
    cmc = min(cm._count(fwd), cm._count(bwd))
    out: dict[str, Any] = {
        "ms": 1000 * (clock() - t),
        "score": score,
        "cmc": cmc,
        "pose": [pose.rotation_deg, pose.dy_m, pose.dx_m],
    }
    if truth is not None:
        out["steps"] = {"final": close(pose, truth, FINE_TOL)}
        out["steps"]["cmc"] = out["steps"]["final"] and cmc >= MATCH_CMC
    return out


# --------------------------------------------------------------------------------------


STEPS = ("coarse", "screened", "refined", "final", "cmc")


def summarise(rows: list[dict[str, Any]], method: str) -> dict[str, Any]:
    same = [r[method] for r in rows if r["same"]]
    diff = [r[method] for r in rows if not r["same"]]
    out: dict[str, Any] = {
        "pairs_same": len(same),
        "pairs_diff": len(diff),
        "median_ms": round(float(np.median([r["ms"] for r in same + diff])), 1),
    }
    for st in STEPS:
        vals = [r["steps"][st] for r in same if st in r.get("steps", {})]
        if vals:
            out[st] = round(sum(vals) / len(vals), 3)
    if same:
        out["match_any_pose"] = round(sum(r["cmc"] >= MATCH_CMC for r in same) / len(same), 3)
    if same and diff:
        out["auc"] = round(auc([r["score"] for r in same], [r["score"] for r in diff]), 4)
    for name in ("directions_disagree", "weak_registration"):
        if any("flags" in r for r in same + diff):
            out[f"flag_{name}_same"] = sum(name in r.get("flags", []) for r in same)
            out[f"flag_{name}_diff"] = sum(name in r.get("flags", []) for r in diff)
    return out


def table(res: dict[str, Any]) -> str:
    """Markdown table of one result file: survival per step, CMC matches, AUC, flags, time."""
    head = (
        "| condition | method | coarse | screened | refined | final pose | final + CMC>=6 "
        "| CMC>=6 (any pose) | AUC | flags same / diff | median ms |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for cond, ms in res["summary"].items():
        for m in ("before", "after", "after_nohints", "exhaustive"):
            if m not in ms:
                continue
            v = ms[m]
            fl = "-"
            if "flag_directions_disagree_same" in v:
                fl = (
                    f"dd {v['flag_directions_disagree_same']}/{v['flag_directions_disagree_diff']},"
                    f" weak {v['flag_weak_registration_same']}/{v['flag_weak_registration_diff']}"
                )
            cells = [v.get(k, "-") for k in STEPS]
            lines.append(
                f"| {cond} | {m} | "
                + " | ".join(str(c) for c in cells)
                + f" | {v.get('match_any_pose', '-')} | {v.get('auc', '-')} | {fl} | {v['median_ms']} |"
            )
        lines.append(
            f"| {cond} | after = exhaustive pose (known matches) | "
            f"{ms['after_equals_exhaustive']} (where exhaustive is right: "
            f"{ms['after_equals_exhaustive_where_exhaustive_right']}) | | | | | | | | |"
        )
    return head + "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--same", type=int, default=8, help="same-gun pairs per condition")
    ap.add_argument("--diff", type=int, default=4, help="different-gun pairs per condition")
    ap.add_argument(
        "--conditions",
        nargs="*",
        default=list(CONDITIONS),
        choices=list(CONDITIONS) + list(INSTRUMENT_CONDITIONS),
    )
    ap.add_argument("--maker", action="append", default=[], help="module:function (extra)")
    ap.add_argument("--no-exhaustive", action="store_true")
    ap.add_argument(
        "--no-before", action="store_true", help="skip the comparison as of BASE (saves time)"
    )
    ap.add_argument("--params", default="{}", help="JSON CompareParams overrides for 'after'")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    wall0 = time.perf_counter()

    from ballistics.compare import CompareParams

    params = CompareParams(**json.loads(args.params))
    nohints = dataclasses.replace(params, rotation_hints=0)
    old = None if args.no_before else load_before()
    makers: list[tuple[str, Callable[[int, int, int], list[Case]]]] = [
        (c, instrument_maker(c) if c in INSTRUMENT_CONDITIONS else synth_maker(c))
        for c in args.conditions
    ]
    for spec in args.maker:
        mod, fn = spec.split(":")
        makers.append((spec, getattr(importlib.import_module(mod), fn)))

    rows: list[dict[str, Any]] = []
    for name, make in makers:
        for case in make(args.seed, args.same, args.diff):
            pa, ca = prepared_with_centre(case.a)
            pb, cb = prepared_with_centre(case.b)
            truth = None if case.truth is None else canvas_pose(case.truth, ca, cb)
            row: dict[str, Any] = {"condition": name, "label": case.label}
            row["same"] = truth is not None
            row["truth"] = None if truth is None else [truth.rotation_deg, truth.dy_m, truth.dx_m]
            if old is not None:
                row["before"] = run_before(old, pa, pb, truth)
            row["after"] = run_after(pa, pb, truth, params)
            row["after_nohints"] = run_after(pa, pb, truth, nohints)
            if not args.no_exhaustive:
                row["exhaustive"] = run_exhaustive(pa, pb, truth, params)
                if truth is not None:
                    from ballistics.compare import Pose

                    row["after_equals_exhaustive"] = close(
                        Pose(*row["after"]["pose"]), Pose(*row["exhaustive"]["pose"]), FINE_TOL
                    )
            keys = ["condition", "label", "same", "after_equals_exhaustive"]
            brief = {k: row[k] for k in keys if k in row}
            for m in ("before", "after", "after_nohints", "exhaustive"):
                if m in row:
                    brief[m] = {
                        k: row[m][k] for k in ("steps", "cmc", "ms", "flags") if k in row[m]
                    }
            print(json.dumps(brief), flush=True)
            rows.append(row)

    methods = (
        ([] if args.no_before else ["before"])
        + ["after", "after_nohints"]
        + ([] if args.no_exhaustive else ["exhaustive"])
    )
    summary: dict[str, Any] = {}
    for name in [n for n, _ in makers] + ["all"]:
        sub = [r for r in rows if name in ("all", r["condition"])]
        summary[name] = {m: summarise(sub, m) for m in methods}
        agree = [r["after_equals_exhaustive"] for r in sub if "after_equals_exhaustive" in r]
        exh_right = [
            r["after_equals_exhaustive"]
            for r in sub
            if "after_equals_exhaustive" in r and r["exhaustive"]["steps"]["final"]
        ]
        summary[name]["after_equals_exhaustive"] = (
            round(sum(agree) / len(agree), 3) if agree else None
        )
        summary[name]["after_equals_exhaustive_where_exhaustive_right"] = (
            f"{sum(exh_right)}/{len(exh_right)}"
        )
        lost = [
            r["label"]
            for r in sub
            if r["same"]
            and r["after_nohints"]["cmc"] >= MATCH_CMC
            and r["after"]["cmc"] < MATCH_CMC
        ]
        summary[name]["matches_lost_to_hints"] = lost
    res = {
        "command": "python " + " ".join(sys.argv),
        "machine": machine(),
        "threads": 1,
        "clock": "process_time (CPU)",
        "base_commit": BASE,
        "params_after": dataclasses.asdict(params),
        "tolerances": {"coarse": COARSE_TOL, "fine": FINE_TOL, "match_cmc": MATCH_CMC},
        "wall_s": round(time.perf_counter() - wall0, 1),
        "summary": summary,
        "rows": rows,
    }
    dest = (
        Path(args.out)
        if args.out
        else ROOT / "benchmarks" / "results" / (f"pose-survival-seed{args.seed}.json")
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(res, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
