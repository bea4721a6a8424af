"""Accuracy per instrument model, and leave-one-instrument-out (LOIO) parameter choice.

Usage::

    python benchmarks/instruments_loio.py            # full run (~25 min on one shared core)
    python benchmarks/instruments_loio.py --quick    # small corpora, a few minutes
    python benchmarks/instruments_loio.py --light detect --candidates default,img_default

For each instrument of :data:`ballistics.instruments.INSTRUMENTS` a seeded corpus (its own
firearms: no two instruments share a gun, so a left-out instrument is new data, not new
pictures of known guns; consecutive-manufacture groups included) is fired and recorded by the
instrument at one of its pixel sizes (2.5-7.5 um over the instruments). The casings are cut in
turn to the cropping styles of :mod:`ballistics.crop_styles` (3-D: case head, disc field of
view wide and narrow, annulus with the pin invalid, breech face with the pin present and
partly invalid; 2-D: case head, disc field of view), and every second 3-D scan goes through
a micrometre-unit X3P file read back with ``length_unit="um"`` (the others through a metre
file). Each scan is prepared with :func:`ballistics.pipeline.prepare` and all pairs are
compared, once per candidate setting of its modality (:data:`CANDIDATES`): 3-D pairs with
:func:`ballistics.compare.compare`, 2-D pairs as the service compares images
(:func:`ballistics.lighting.attach_light` + :func:`ballistics.lighting.compare_lit`: the
plain comparison for ring-lit images, pseudo-heights for side-lit ones, pairs whose lights
leave too little to compare flagged ``light_directions_incompatible``). The light is the
instrument's (``--light metadata``, default: what a lab knows of its own light) or detected
from the image (``--light detect``); detection is recorded either way.

Scans that fail to prepare are *refusals*: counted, listed with the message, and scored 0
against everything (so they count against AUC and retrieval; the AUC over scored pairs only
is reported beside it). Top-10 retrieval: each casing as the query against all others of its
instrument, the fraction whose same-gun mate is among the 10 best.

LOIO: within a modality (3-D instruments; 2-D instruments), for each instrument the
candidate with the best mean pair AUC (refusals counted) on the *other* instruments of the
modality is chosen (ties: mean top-10 retrieval, then the order of :data:`CANDIDATES`), and
its result on the left-out instrument is reported next to the fixed default.

Writes ``benchmarks/results/instruments_loio[-quick].json`` (command, machine, every score,
flag and refusal) and prints the tables of ``benchmarks/RESULTS-instruments.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import ROOT, auc, machine, quantiles


@dataclass(frozen=True)
class Candidate:
    """One parameter setting the LOIO choice picks from (for one modality).

    3-D candidates set the topography band-pass and :class:`CompareParams`; 2-D candidates
    set the :class:`ballistics.image_condition.ImageConditioning` (``image``, keyword
    arguments) and :class:`CompareParams`."""

    name: str
    description: str
    modality: str = "3-D"
    short_cutoff_um: float = 16.0
    long_cutoff_um: float = 250.0
    image: dict[str, Any] | None = None
    compare: dict[str, Any] = field(default_factory=dict)

    @property
    def prepare_key(self) -> tuple[Any, ...]:
        return (
            self.short_cutoff_um,
            self.long_cutoff_um,
            tuple(sorted((self.image or {}).items())),
        )

    def prepare_kwargs(self) -> dict[str, Any]:
        from ballistics.image_condition import ImageConditioning

        kw: dict[str, Any] = {
            "short_cutoff_um": self.short_cutoff_um,
            "long_cutoff_um": self.long_cutoff_um,
        }
        if self.image is not None:
            kw["image_conditioning"] = ImageConditioning(**self.image)
        return kw


#: The documented candidate settings. "default" is what the service runs today (3-D).
CANDIDATES_3D: tuple[Candidate, ...] = (
    Candidate("default", "prepare 16-250 um band-pass, CompareParams()"),
    Candidate(
        "full_sweep",
        "prepare 16-250 um, CompareParams(rotation_hints=0): no screen hints",
        compare={"rotation_hints": 0},
    ),
)
#: 2-D candidates: the image conditioning (ballistics.image_condition); every 2-D pair is
#: compared the way the service compares images (ballistics.lighting: light detected from
#: the image, side-lit pairs by pseudo-height, flags for incompatible lights).
CANDIDATES_2D: tuple[Candidate, ...] = (
    Candidate(
        "img_default",
        "ImageConditioning(): the default (40-400 um)",
        modality="2-D",
        image={},
    ),
    Candidate(
        "img_60_400",
        "ImageConditioning(short_cutoff_um=60): a longer short cut-off",
        modality="2-D",
        image={"short_cutoff_um": 60.0},
    ),
    Candidate(
        "img_16_250",
        "ImageConditioning(16, 250): the image chain before this change (topography band)",
        modality="2-D",
        image={"short_cutoff_um": 16.0, "long_cutoff_um": 250.0},
    ),
    Candidate(
        "img_16_400",
        "ImageConditioning(16, 400): the fine band kept, shading flattened at 400 um",
        modality="2-D",
        image={"short_cutoff_um": 16.0},
    ),
    Candidate(
        "img_25_400",
        "ImageConditioning(25, 400): between the two",
        modality="2-D",
        image={"short_cutoff_um": 25.0},
    ),
)
CANDIDATES: dict[str, tuple[Candidate, ...]] = {"3-D": CANDIDATES_3D, "2-D": CANDIDATES_2D}

MODALITIES = {
    "3-D": ("confocal", "focus_variation", "photometric_stereo"),
    "2-D": ("ring_low", "ring_high", "coaxial", "side_light", "render_ring"),
}
RING_LIKE = ("ring_low", "ring_high", "coaxial", "render_ring")

#: A 2-D "instrument" that is not in ballistics.instruments: the ring-light renders of
#: ``ballistics.synth.write_corpus --png`` (the generic scanner of :func:`ballistics.synth.fire`,
#: rendered by :func:`ballistics.render.render_ring_light`, 16-bit like the PNG files), the
#: images of ``benchmarks/accuracy.py synth --png``: noise-free shading at the scan's own
#: pixels, unlike the camera models, with the scanner's dropouts as holes (every second file
#: writes them black, as a tool without an alpha channel would; the others as alpha).
RENDER_RING = "render_ring"
RENDER_RING_PIXELS_UM = (3.125, 6.25)


def instrument_kind(name: str) -> str:
    """``"topography"`` or ``"image"`` for a name of :data:`MODALITIES`."""
    from ballistics.instruments import INSTRUMENTS

    return "image" if name == RENDER_RING else INSTRUMENTS[name].kind


#: Cropping styles of ballistics.crop_styles, cycled over the casings of a corpus
#: (3-D: every style; 2-D images: the field-of-view crops a camera gives).
VARIANTS_3D: tuple[str, ...] = (
    "case_head",
    "disc_fov_wide",
    "annulus_pin_invalid",
    "breech_face_pin_present",
    "disc_fov_narrow",
    "breech_face_pin_present+pin_partly_invalid",
)
VARIANTS_2D: tuple[str, ...] = ("case_head", "disc_fov_wide")


def modality_of(name: str) -> str:
    return next(m for m, names in MODALITIES.items() if name in names)


def _instrument_seed(seed: int, name: str) -> int:
    """Each instrument fires its own guns (distinct seeds)."""
    return (seed * 7919 + zlib.crc32(name.encode())) % 100_000


def _x3p_round_trip(scan: Any, length_unit: str) -> Any:
    """Write ``scan`` as an X3P in ``length_unit`` (float32) and read it back with it."""
    import tempfile

    from ballistics.x3p import read_x3p, write_x3p

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scan.x3p"
        write_x3p(path, scan, dtype="F", length_unit=length_unit)
        return read_x3p(path, length_unit=length_unit)


def build_scans(
    name: str, guns: int, shots: int, seed: int, *, styles: bool = True, um_files: bool = True
) -> list[dict[str, Any]]:
    """Fire and record one instrument's corpus in memory: scans and their truth.

    With ``styles`` the casings are cropped in turn to the styles of :data:`VARIANTS_3D`
    (:data:`VARIANTS_2D` for images; :mod:`ballistics.crop_styles`); with ``um_files`` every
    second 3-D scan goes through a micrometre-unit X3P file read back with
    ``length_unit="um"`` (the others through a metre file).
    """
    from dataclasses import replace

    from ballistics.crop_styles import styled_variants
    from ballistics.instruments import INSTRUMENTS, instrument_rng, record
    from ballistics.synth import fire, fired_surface, make_firearms

    kind = instrument_kind(name)
    pixels = RENDER_RING_PIXELS_UM if name == RENDER_RING else INSTRUMENTS[name].pixels_um
    iseed = _instrument_seed(seed, name)
    firearms = make_firearms(guns, seed=iseed, group_fraction=0.5)
    rng = np.random.default_rng([iseed, 0xC0])
    variants = VARIANTS_3D if kind == "topography" else VARIANTS_2D
    out: list[dict[str, Any]] = []
    for fa in firearms:
        for k in range(shots):
            shot_seed = iseed * 1000 + k
            pixel = float(rng.choice(pixels))
            cid = f"{fa.id}-{k + 1:02d}"
            if name == RENDER_RING:
                scan, truth = fire(fa, shot_seed=shot_seed, spacing_m=pixel * 1e-6, casing_id=cid)
            else:
                surface = fired_surface(
                    fa, shot_seed=shot_seed, spacing_m=pixel * 1e-6, casing_id=cid
                )
                scan, truth = record(surface, name, rng=instrument_rng(fa.seed, shot_seed, name))
            variant = "case_head"
            if styles:
                st = styled_variants(
                    scan, truth, seed=shot_seed, variants=(variants[len(out) % len(variants)],)
                )[0]
                scan, variant = st.scan, st.variant
                truth = replace(truth, primer_center=st.primer_center, fp_center=st.fp_center)
            if name == RENDER_RING:
                scan = _render_png(scan, black_holes=bool(len(out) % 2))
            unit = None
            if um_files and kind == "topography":
                unit = "um" if len(out) % 2 else "m"
                scan = _x3p_round_trip(scan, unit)
            out.append(
                {
                    "scan": scan,
                    "truth": truth,
                    "pixel_um": pixel,
                    "variant": variant,
                    "length_unit": unit,
                }
            )
    return out


def _render_png(scan: Any, *, black_holes: bool) -> Any:
    """The ring-light render of a topography written as ``write_corpus`` writes it (16-bit
    PNG; the scan's dropouts in an alpha channel) and read back; with ``black_holes`` the
    dropouts are written black instead, as a tool without alpha would."""
    import tempfile

    from ballistics.io import read_scan
    from ballistics.render import render_ring_light
    from ballistics.synth import png16_with_phys

    img = render_ring_light(scan)
    q = np.round(np.clip(np.nan_to_num(img.masked(), nan=0.0), 0.0, 1.0) * 65535)
    valid = None if black_holes or img.mask.all() else img.mask
    raw = png16_with_phys(q.astype(np.uint16), img.spacing_m, valid=valid)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "render.png"
        path.write_bytes(raw)
        return read_scan(path)


def light_metadata(name: str, truth: Any) -> float | str:
    """What a lab knows of its own light: "ring" for ring and coaxial lights (symmetric
    about the optical axis), the image-frame azimuth for a side light."""
    if name == "side_light":
        return float(truth.light_azimuth_deg)
    return "ring"


def prepare_all(
    scans: list[dict[str, Any]], cand: Candidate, *, name: str = "", light: str = "metadata"
) -> tuple[list[Any], list[dict[str, Any]], list[float]]:
    """Prepare every scan; refusals are kept as None and listed with the message. For 2-D
    images the light is attached too (:func:`ballistics.lighting.attach_light`): from
    :func:`light_metadata` (``light="metadata"``) or detected from the image
    (``light="detect"``)."""
    from ballistics.errors import BallisticsError
    from ballistics.lighting import attach_light
    from ballistics.pipeline import prepare

    prepared: list[Any] = []
    refusals: list[dict[str, Any]] = []
    times: list[float] = []
    for s in scans:
        t = time.perf_counter()
        try:
            p = prepare(s["scan"], **cand.prepare_kwargs())
            if cand.modality == "2-D":
                meta = light_metadata(name, s["truth"]) if light == "metadata" else None
                p = attach_light(s["scan"], p, light=meta)
            prepared.append(p)
        except BallisticsError as exc:
            prepared.append(None)
            refusals.append(
                {
                    "casing_id": s["truth"].casing_id,
                    "variant": s["variant"],
                    "error": type(exc).__name__,
                    "message": str(exc),
                }
            )
        times.append(time.perf_counter() - t)
    return prepared, refusals, times


def detected_lights(scans: list[dict[str, Any]]) -> dict[str, Any]:
    """What :func:`ballistics.lighting.detect_light` says of each image (for the record; the
    comparison uses it only with ``--light detect``)."""
    from ballistics.errors import BallisticsError
    from ballistics.lighting import detect_light
    from ballistics.segment import segment

    kinds: list[str | None] = []
    strengths: list[float | None] = []
    for s in scans:
        try:
            est = detect_light(s["scan"], segment(s["scan"]).as_dict())
        except BallisticsError:
            kinds.append(None)
            strengths.append(None)
            continue
        kinds.append(est.kind)
        strengths.append(None if est.strength is None else round(float(est.strength), 4))
    return {
        "kinds": kinds,
        "strengths": strengths,
        "directional": sum(k == "directional" for k in kinds),
        "ring": sum(k == "ring" for k in kinds),
    }


def segmentation_errors(scans: list[dict[str, Any]], prepared: list[Any]) -> dict[str, Any]:
    """Primer and firing-pin centre errors (pixels of the scan) against the truth, overall
    and per crop variant (a pin not found counts as outside 10 px)."""
    rows = []
    for s, p in zip(scans, prepared, strict=True):
        if p is None:
            continue
        seg = (p.plain if hasattr(p, "plain") else p).segmentation
        tr = s["truth"]
        pin = seg.get("firing_pin_center")
        rows.append(
            (
                s["variant"],
                math.dist(seg["primer_center"], tr.primer_center),
                math.dist(pin, tr.fp_center) if pin is not None else math.inf,
            )
        )

    def summary(sub: list[tuple[str, float, float]]) -> dict[str, Any]:
        a = np.asarray([r[1] for r in sub])
        b = np.asarray([r[2] for r in sub])
        found = b[np.isfinite(b)]
        return {
            "n": len(sub),
            "primer_center_median_px": round(float(np.median(a)), 2) if a.size else None,
            "pin_center_median_px": round(float(np.median(found)), 2) if found.size else None,
            "pin_not_found": int((~np.isfinite(b)).sum()),
            "pin_within_10px": round(float((b <= 10).mean()), 4) if b.size else None,
        }

    out = summary(rows)
    out["per_variant"] = {
        v: summary([r for r in rows if r[0] == v]) for v in sorted({r[0] for r in rows})
    }
    return out


def score_matrix(
    prepared: list[Any], cand: Candidate
) -> tuple[np.ndarray, np.ndarray, list[float], dict[tuple[int, int], list[str]]]:
    """All-pairs scores, CMC counts and flags; 0 for pairs with a refused scan. 2-D pairs
    are compared as the service compares images (:func:`ballistics.lighting.compare_lit`)."""
    from ballistics.compare import CompareParams, compare
    from ballistics.lighting import compare_lit

    params = CompareParams(**cand.compare)
    n = len(prepared)
    score = np.zeros((n, n))
    cmc = np.zeros((n, n))
    flags: dict[tuple[int, int], list[str]] = {}
    times = []
    for i, j in itertools.combinations(range(n), 2):
        if prepared[i] is None or prepared[j] is None:
            continue
        t = time.perf_counter()
        if cand.modality == "2-D":
            ic = compare_lit(prepared[i], prepared[j], params=params)
            c, f = ic.comparison, list(ic.flags) + list(ic.comparison.flags)
        else:
            c = compare(prepared[i], prepared[j], params=params)
            f = list(c.flags)
        times.append(time.perf_counter() - t)
        score[i, j] = score[j, i] = c.score
        cmc[i, j] = cmc[j, i] = c.cmc
        if f:
            flags[(i, j)] = f
    return score, cmc, times, flags


#: The flag that says a side-lit pair could not be compared (ballistics.lighting).
LIGHT_FLAG = "light_directions_incompatible"


def metrics(
    score: np.ndarray,
    labels: list[str],
    groups: list[str],
    refused: set[int],
    flags: dict[tuple[int, int], list[str]] | None = None,
) -> dict[str, Any]:
    """Pair AUC (refusals as score 0, and over scored pairs only), the AUC over pairs not
    flagged ``light_directions_incompatible``, flag counts, and top-1/top-10 retrieval (each
    casing as the query against all others of its instrument)."""
    flags = flags or {}
    n = len(labels)
    pos, neg, pos_s, neg_s, sub, pos_u, neg_u = [], [], [], [], [], [], []
    counts: dict[str, list[int]] = {}
    for i, j in itertools.combinations(range(n), 2):
        same = labels[i] == labels[j]
        (pos if same else neg).append(score[i, j])
        f = flags.get((i, j), [])
        for name in f:
            counts.setdefault(name, [0, 0])[0 if same else 1] += 1
        if LIGHT_FLAG not in f:
            (pos_u if same else neg_u).append(score[i, j])
        if i not in refused and j not in refused:
            (pos_s if same else neg_s).append(score[i, j])
            if not same and groups[i] and groups[i] == groups[j]:
                sub.append(score[i, j])
    s = score.copy()
    np.fill_diagonal(s, -np.inf)
    ranks = []
    for i in range(n):
        if not any(labels[j] == labels[i] for j in range(n) if j != i):
            continue
        if i in refused:
            ranks.append(n)  # a refused query finds nothing
            continue
        order = np.argsort(-s[i], kind="stable")
        ranks.append(next(r for r, j in enumerate(order) if labels[j] == labels[i]) + 1)
    r = np.asarray(ranks)
    return {
        "auc": round(auc(pos, neg), 4),
        "auc_scored_only": round(auc(pos_s, neg_s), 4),
        "auc_unflagged": round(auc(pos_u, neg_u), 4) if pos_u and neg_u else None,
        "auc_vs_same_group": round(auc(pos_s, sub), 4) if sub else None,
        "known_matches": len(pos),
        "known_non_matches": len(neg),
        "same_group_non_matches": len(sub),
        "flags_matches_non_matches": counts,
        "light_flagged": counts.get(LIGHT_FLAG, [0, 0]),
        "top1": round(float((r <= 1).mean()), 4),
        "top10": round(float((r <= 10).mean()), 4),
        "queries": int(r.size),
        "score_matches": quantiles(pos_s),
        "score_non_matches": quantiles(neg_s),
    }


def choose(results: dict[str, dict[str, Any]], others: list[str], modality: str) -> str:
    """The candidate with the best mean AUC on ``others`` (ties: top-10, then order), among
    the candidates that were run on all of them."""
    cands = [c for c in CANDIDATES[modality] if all(c.name in results[o] for o in others)]

    def key(c: Candidate) -> tuple[float, float, int]:
        a = float(np.mean([results[o][c.name]["auc"] for o in others]))
        t = float(np.mean([results[o][c.name]["top10"] for o in others]))
        return (-a, -t, cands.index(c))

    return min(cands, key=key).name


def loio(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for modality, names in MODALITIES.items():
        present = [n for n in names if n in results]
        default = CANDIDATES[modality][0].name
        for left in present:
            others = [n for n in present if n != left]
            if not others:
                continue
            pick = choose(results, others, modality)
            r = results[left][pick]
            rows.append(
                {
                    "modality": modality,
                    "left_out": left,
                    "chosen_on": others,
                    "chosen": pick,
                    "auc": r["auc"],
                    "auc_unflagged": r["auc_unflagged"],
                    "light_flagged": r["light_flagged"],
                    "top10": r["top10"],
                    "top1": r["top1"],
                    "default": default,
                    "default_auc": results[left][default]["auc"],
                    "default_top10": results[left][default]["top10"],
                }
            )
    return rows


def markdown(report: dict[str, Any]) -> str:
    out = []
    for modality, cands in CANDIDATES.items():
        names = [n for n in report["instruments"] if modality_of(n) == modality]
        if not names:
            continue
        cands = tuple(
            c for c in cands if any(c.name in report["instruments"][n]["candidates"] for n in names)
        )
        out.append(
            "| instrument | pixels (um) | scans | refused | primer / pin err (px, median) | "
            + " | ".join(f"{c.name} AUC / top-10" for c in cands)
            + " |"
        )
        out.append("|---" * (5 + len(cands)) + "|")
        for name in names:
            r = report["instruments"][name]
            seg = r["segmentation"]
            cells = []
            for c in cands:
                if c.name not in r["candidates"]:
                    cells.append("-")
                    continue
                m = r["candidates"][c.name]
                fl = m["light_flagged"]
                extra = f" ({fl[0]}/{fl[1]} flagged)" if sum(fl) else ""
                cells.append(f"{m['auc']:.4f} / {m['top10']:.3f}{extra}")
            out.append(
                f"| {name} | {', '.join(str(p) for p in r['pixels_um'])} | {r['scans']} | "
                f"{r['refused']} | {seg['primer_center_median_px']} / "
                f"{seg['pin_center_median_px']} | " + " | ".join(cells) + " |"
            )
        out.append("")
    out.append(
        "| modality | left out | chosen on | chosen | AUC | AUC unflagged | flagged (match / "
        "non-match) | top-10 | top-1 | default AUC | default top-10 |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in report["loio"]:
        fl = r["light_flagged"]
        out.append(
            f"| {r['modality']} | {r['left_out']} | {', '.join(r['chosen_on'])} | {r['chosen']} | "
            f"{r['auc']:.4f} | {r['auc_unflagged']:.4f} | {fl[0]} / {fl[1]} | {r['top10']:.3f} | "
            f"{r['top1']:.3f} | {r['default_auc']:.4f} | {r['default_top10']:.3f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    from ballistics.instruments import INSTRUMENTS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 guns x 2 shots per instrument")
    ap.add_argument("--guns", type=int, help="firearms per instrument (default 6)")
    ap.add_argument("--shots", type=int, help="shots per firearm (default 3)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--instruments", help="comma-separated subset of the instruments")
    ap.add_argument("--candidates", help="comma-separated subset of the candidates (default: all)")
    ap.add_argument("--no-styles", action="store_true", help="raw case-head scans only")
    ap.add_argument("--no-um-files", action="store_true", help="no X3P round trips")
    ap.add_argument(
        "--light",
        choices=("metadata", "detect"),
        default="metadata",
        help="2-D light: the instrument's (ring, or the side light's azimuth) or detected",
    )
    ap.add_argument("--out", help="JSON output path")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    guns = args.guns or (3 if args.quick else 6)
    shots = args.shots or (2 if args.quick else 3)
    known = [*INSTRUMENTS, RENDER_RING]
    names = args.instruments.split(",") if args.instruments else known
    for n in names:
        if n not in known:
            ap.error(f"unknown instrument {n!r}; choose from {', '.join(known)}")
    keep = set(args.candidates.split(",")) if args.candidates else None
    t0 = time.time()
    report: dict[str, Any] = {
        "command": "python benchmarks/instruments_loio.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "guns": guns,
        "shots": shots,
        "seed": args.seed,
        "styles": not args.no_styles,
        "um_files": not args.no_um_files,
        "light": args.light,
        "candidates": {m: [asdict(c) for c in cs] for m, cs in CANDIDATES.items()},
        "instruments": {},
    }
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        t_inst = time.time()
        modality = modality_of(name)
        cands = [c for c in CANDIDATES[modality] if keep is None or c.name in keep]
        cands = cands or [CANDIDATES[modality][0]]
        scans = build_scans(
            name, guns, shots, args.seed, styles=not args.no_styles, um_files=not args.no_um_files
        )
        labels = [s["truth"].firearm_id for s in scans]
        groups = [s["truth"].group or "" for s in scans]
        entry: dict[str, Any] = {
            "kind": instrument_kind(name),
            "pixels_um": sorted({s["pixel_um"] for s in scans}),
            "scans": len(scans),
            "casings": [s["truth"].casing_id for s in scans],
            "variants": [s["variant"] for s in scans],
            "length_units": [s["length_unit"] for s in scans],
            "firearms": labels,
            "groups": groups,
            "generate_s": round(time.time() - t_inst, 1),
            "candidates": {},
        }
        if modality == "2-D":
            entry["light_detected"] = detected_lights(scans)
        for cand in cands:
            prepared, refusals, ptimes = prepare_all(scans, cand, name=name, light=args.light)
            refused = {i for i, p in enumerate(prepared) if p is None}
            t = time.time()
            score, cmc, ctimes, flags = score_matrix(prepared, cand)
            m = metrics(score, labels, groups, refused, flags)
            m.update(
                refused=len(refused),
                refusals=refusals,
                prepare_median_s=round(float(np.median(ptimes)), 3),
                compare_median_ms=round(1000 * float(np.median(ctimes)), 1) if ctimes else None,
                compare_total_s=round(time.time() - t, 1),
                scores=np.round(score, 4).tolist(),
                cmc=cmc.astype(int).tolist(),
                flags={f"{i},{j}": f for (i, j), f in flags.items()},
            )
            if modality == "2-D":
                m["lights_detected"] = [None if p is None else p.light.kind for p in prepared]
            if cand is cands[0]:
                entry["segmentation"] = segmentation_errors(scans, prepared)
                entry["refused"] = len(refused)
            entry["candidates"][cand.name] = m
            print(
                f"{name:>18} {cand.name:>12}: AUC {m['auc']:.4f} (scored {m['auc_scored_only']:.4f},"
                f" unflagged {m['auc_unflagged']}) top-10 {m['top10']:.3f} top-1 {m['top1']:.3f}"
                f" refused {len(refused)} light-flagged {m['light_flagged']}"
                f" [{m['compare_total_s']} s]",
                flush=True,
            )
        entry["seconds"] = round(time.time() - t_inst, 1)
        report["instruments"][name] = entry
        results[name] = entry["candidates"]
    report["loio"] = loio(results)
    report["wall_s"] = round(time.time() - t0, 1)
    out = (
        Path(args.out)
        if args.out
        else ROOT
        / "benchmarks"
        / "results"
        / ("instruments_loio-quick.json" if args.quick else "instruments_loio.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print()
    print(markdown(report))
    print(f"\nwall {report['wall_s']} s; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
