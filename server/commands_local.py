"""CLI handlers that work on scan files directly: ``inspect``, ``synth``, ``describe`` and
``compare`` (one pair, or a CSV of pairs spread over all cores).

Exit status: 0 ok, 2 bad input (one line on stderr per problem, ``ballistics: FILE: message``),
1 internal failure. Results go to stdout (``--json``: one JSON object per line); progress and
problems go to stderr.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TextIO

from ballistics.errors import BallisticsError
from ballistics.pipeline import PreparedCasing
from ballistics.scan import Scan

#: Pairs handed to a worker at a time by ``compare --pairs``.
_CHUNK = 4


class _BadInput(Exception):
    """A per-file problem already phrased for the user (exit status 2)."""


def _fail(msg: str, code: int = 2) -> int:
    print(f"ballistics: {msg}", file=sys.stderr)
    return code


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "unknown error"


def _message(label: str, exc: object) -> str:
    """The exception's message on one line, without a repeated ``label:`` prefix."""
    msg = _one_line(str(exc))
    for prefix in (f"{label}: ", f"{Path(label).name}: "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    return msg


def _internal(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "out of memory while processing the scan"
    return f"internal error ({type(exc).__name__}): {_one_line(str(exc))}"


def _spacing(args: argparse.Namespace) -> float | None:
    um = getattr(args, "spacing_um", None)
    if um is None:
        return None
    if not (math.isfinite(um) and um > 0):
        raise _BadInput(f"--spacing-um must be a positive number of micrometres; got {um}")
    return float(um) * 1e-6


def _length_unit(args: argparse.Namespace) -> str:
    """The ``--length-unit`` of X3P files (``"m"`` unless given)."""
    return str(getattr(args, "length_unit", None) or "m")


def _light_requests(args: argparse.Namespace, n: int = 1) -> list[Any]:
    """``--light`` / ``--light-azimuth-deg`` as ``n`` ``LightRequest`` s (one per file; a
    pair command may give each option twice, A then B, else once for both).

    Raises
    ------
    _BadInput
        More values than files, or a contradiction (a ring light with an azimuth).
    """
    from ballistics.light import LightRequest

    def values(name: str) -> list[Any]:
        v = getattr(args, name, None)
        out = v if isinstance(v, list) else [v]
        if len(out) > n:
            flag = "--" + name.replace("_", "-")
            raise _BadInput(f"{flag} was given {len(out)} times; give it once (or once per file)")
        return out * n if len(out) == 1 else out

    kinds, azimuths = values("light"), values("light_azimuth_deg")
    out = []
    for kind, az in zip(kinds, azimuths, strict=True):
        try:
            out.append(LightRequest(kind or "auto", az))
        except BallisticsError as exc:
            raise _BadInput(f"--light {kind or 'auto'} --light-azimuth-deg {az}: {exc}") from None
    return out


def _light_ignored(path: str, scan: Scan, light: Any, err: TextIO | None = None) -> None:
    """A light given for a 3-D scan is ignored (a topography has no light): say so once."""
    if scan.kind != "image" and light is not None and not light.is_auto:
        _warn(
            path,
            [f"--light {light.kind} applies to 2-D images; this is a 3-D topography: ignored"],
            err,
        )


def _read(path: str, spacing_m: float | None, length_unit: str = "m") -> tuple[Scan, list[str]]:
    """Read a scan; returns it and the reader's warnings as one-line strings.

    Raises
    ------
    BallisticsError
        Unreadable, unsafe, too large or spacing missing (message names the problem).
    """
    from ballistics.io import read_scan

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            scan = read_scan(path, name=path, spacing_m=spacing_m, length_unit=length_unit)
        except OSError as exc:  # read_scan maps most of these; belt and braces
            raise BallisticsError(f"cannot read: {exc.strerror or exc}") from None
    notes = [_message(path, w.message) for w in caught]
    return scan, notes


def _warn(path: str, notes: Sequence[str], err: TextIO | None = None) -> None:
    for n in notes:
        print(f"ballistics: {path}: warning: {n}", file=err or sys.stderr)


def _prepare_file(
    path: str, spacing_m: float | None, length_unit: str = "m", light: Any = None
) -> PreparedCasing:
    """Read and prepare one file; a 2-D image gets its light (``light``, else detected)."""
    from ballistics.lighting import prepare_scan

    scan, notes = _read(path, spacing_m, length_unit)
    _warn(path, notes)
    _light_ignored(path, scan, light)
    return prepare_scan(scan, light=light)


# --------------------------------------------------------------------------------------
# inspect


def _inspect_record(path: str, scan: Scan, light: Any = None) -> dict[str, Any]:
    from ballistics.lighting import light_of, prepare_scan, resolve_light
    from ballistics.segment import segment

    # The quality record needs the prepared breech face; a scan that segments but cannot be
    # prepared is still inspected, with the reason instead of a record.
    quality: dict[str, Any] | None = None
    quality_error: str | None = None
    est = None
    try:
        prepared = prepare_scan(scan, light=light)
        summary = prepared.segmentation
        quality = prepared.quality
        est = light_of(prepared)
    except BallisticsError as exc:
        summary = segment(scan).as_dict()
        quality_error = _one_line(str(exc))
        if scan.kind == "image":
            est = resolve_light(scan, summary, light)
    rows, cols = scan.shape
    rec: dict[str, Any] = {
        "file": path,
        "kind": scan.kind,
        "spacing_m": [float(scan.spacing_m[0]), float(scan.spacing_m[1])],
        "shape": [int(rows), int(cols)],
        "valid_fraction": round(float(scan.mask.mean()), 6),
        # the unit the file's lengths were read in (X3P only), from the reader's provenance
        "length_unit": next(
            (s.params.get("length_unit") for s in scan.provenance if s.name == "read_x3p"), None
        ),
        **summary,
        "quality": quality,
        # the light of a 2-D image (given or detected); None for a 3-D scan
        "light": None if est is None else est.as_dict(),
    }
    if quality_error is not None:
        rec["quality_error"] = quality_error
    return rec


def _human_quality(q: dict[str, Any] | None, error: str | None = None) -> list[str]:
    """Lines describing a quality record (``ballistics.quality``), flagged when low."""
    if q is None:
        return [f"  quality: not measured ({error or 'no record'})"]
    unit = q.get("texture_unit") or ""
    unit_txt = " um" if unit == "um" else f" ({unit})" if unit else ""
    conf = q.get("segmentation_confidence")
    snr = q.get("snr")
    lines = [
        f"  quality: valid {100 * q.get('valid_fraction', 0.0):.0f} % of the annulus,"
        f" texture {q.get('texture_rms', 0.0):.3g}{unit_txt} RMS,"
        f" noise {q.get('noise_rms', 0.0):.3g}{unit_txt},"
        f" texture/noise {'-' if snr is None else f'{snr:.1f}'},"
        f" contact {100 * q.get('contact_coverage', 0.0):.0f} %,"
        f" segmentation confidence {'-' if conf is None else f'{conf:.2f}'}"
    ]
    lines += [f"  LOW-CONFIDENCE: {r}" for r in q.get("reasons") or []]
    return lines


def _human_light(light: dict[str, Any] | None) -> str:
    """``side light from 40.0 deg (given)`` and the like."""
    if not light:
        return "not recorded"
    src = "given" if light.get("source") == "metadata" else "detected"
    if light.get("azimuth_deg") is None:
        return f"{light['kind']} ({src})"
    az_src = "given" if light.get("azimuth_source") == "metadata" else "detected"
    return f"{light['kind']} light from {light['azimuth_deg']:.1f} deg ({src}, azimuth {az_src})"


def _human_inspect(rec: dict[str, Any]) -> str:
    sy, sx = (v * 1e6 for v in rec["spacing_m"])
    pc, fc = rec["primer_center"], rec.get("firing_pin_center")
    if fc is None:  # unknown is absent: say so rather than print zeros
        pin = "  firing pin: not found"
    else:
        axes = rec.get("firing_pin_axes") or [rec.get("firing_pin_radius") or 0.0] * 2
        pin = (
            f"  firing pin: {rec['firing_pin_shape']}, centre [{fc[0]:.1f}, {fc[1]:.1f}] px,"
            f" axes {axes[0]:.1f} x {axes[1]:.1f} px,"
            f" angle {rec.get('firing_pin_angle_deg') or 0.0:.1f} deg"
        )
    lines = [
        rec["file"],
        f"  {rec['kind']}, {rec['shape'][0]} x {rec['shape'][1]} px at {sy:.4g} x {sx:.4g} um"
        f" (spacing_m [{rec['spacing_m'][0]:.6g}, {rec['spacing_m'][1]:.6g}]),"
        f" valid {100 * rec['valid_fraction']:.1f} %",
        f"  primer: centre [{pc[0]:.1f}, {pc[1]:.1f}] px, radius {rec['primer_radius']:.1f} px",
        pin,
        f"  breech face: {rec.get('breech_face_pixels', 0)} px;"
        f" aperture shear: {'yes' if rec.get('aperture_shear') else 'no'};"
        f" pre-cropped: {'yes' if rec['precropped'] else 'no'}",
        *_human_quality(rec.get("quality"), rec.get("quality_error")),
    ]
    if rec.get("light"):
        lines.append(f"  light: {_human_light(rec['light'])}")
    if "style" in rec:
        lines.append(
            f"  style: {rec['style']}; confidence {rec.get('confidence', 0.0):.2f}"
            + "".join(f"\n  note: {n}" for n in rec.get("notes") or [])
        )
    return "\n".join(lines)


def cmd_inspect(args: argparse.Namespace) -> int:
    """``ballistics inspect FILE [FILE ...] [--json] [--spacing-um X]``."""
    try:
        spacing_m = _spacing(args)
        (light,) = _light_requests(args)
    except _BadInput as exc:
        return _fail(str(exc))
    status = 0
    for path in args.files:
        try:
            scan, notes = _read(path, spacing_m, _length_unit(args))
            _warn(path, notes)
            _light_ignored(path, scan, light)
            rec = _inspect_record(path, scan, light)
        except (BallisticsError, OSError) as exc:
            _fail(f"{path}: {_message(path, exc)}")
            status = max(status, 2)
            continue
        except MemoryError:
            _fail(f"{path}: out of memory while reading or segmenting the scan")
            status = max(status, 2)
            continue
        except Exception as exc:  # a bug, not the file's fault: say so, keep going
            _fail(f"{path}: {_internal(exc)}")
            status = 1 if status == 0 else status
            continue
        if args.json:
            print(json.dumps(rec), flush=True)
        else:
            print(_human_inspect(rec), flush=True)
    return status


# --------------------------------------------------------------------------------------
# synth


def cmd_synth(args: argparse.Namespace) -> int:
    """``ballistics synth OUT_DIR --guns N --shots K [--seed S] [--png] [--instrument NAME]``."""
    from ballistics.synth import write_corpus

    if args.guns < 1 or args.shots < 1:
        return _fail(
            f"--guns and --shots must be >= 1; got --guns {args.guns} --shots {args.shots}"
        )
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        return _fail(f"{out}: exists and is not a folder")
    try:
        manifest = write_corpus(
            out,
            guns=args.guns,
            shots=args.shots,
            seed=args.seed,
            png=bool(args.png),
            instrument=getattr(args, "instrument", None),
        )
    except (BallisticsError, OSError) as exc:
        return _fail(f"{out}: {_one_line(str(exc))}")
    with manifest.open(newline="") as fh:
        n = sum(1 for _ in csv.DictReader(fh))
    kinds = "X3P + PNG" if args.png else "X3P"
    if getattr(args, "instrument", None):
        from ballistics.instruments import INSTRUMENTS

        inst = INSTRUMENTS[args.instrument]
        kinds = f"{'PNG' if inst.kind == 'image' else kinds}, instrument {inst.name}"
    print(
        f"wrote {n} files ({kinds}; {args.guns} firearms x {args.shots} shots, seed {args.seed})"
        f" to {out}; manifest {manifest}"
    )
    return 0


# --------------------------------------------------------------------------------------
# describe


def cmd_describe(args: argparse.Namespace) -> int:
    """``ballistics describe FILE [--json] [--spacing-um X]``."""
    from ballistics.descriptors import EXTRACTOR_VERSION, describe
    from ballistics.lighting import light_of

    path = args.file
    try:
        (light,) = _light_requests(args)
        prepared = _prepare_file(path, _spacing(args), _length_unit(args), light)
        vecs = describe(prepared)
    except _BadInput as exc:
        return _fail(str(exc))
    except (BallisticsError, OSError) as exc:
        return _fail(f"{path}: {_message(path, exc)}")
    except Exception as exc:  # a bug: one line, status 1
        return _fail(f"{path}: {_internal(exc)}", 1)
    descriptors = {k: [round(float(x), 8) for x in v] for k, v in vecs.items()}
    dims = {k: len(v) for k, v in descriptors.items()}
    est = light_of(prepared)
    light_rec = None if est is None else est.as_dict()
    if args.json:
        print(
            json.dumps(
                {
                    "file": path,
                    "extractor_version": EXTRACTOR_VERSION,
                    "descriptors": descriptors,
                    "dims": dims,
                    "light": light_rec,
                }
            )
        )
        return 0
    print(path)
    print(f"extractor_version {EXTRACTOR_VERSION}")
    if light_rec is not None:
        print(f"light: {_human_light(light_rec)}")
    for region, vec in descriptors.items():
        print(f"{region} (dim {dims[region]}):")
        for i in range(0, len(vec), 8):
            print("  " + " ".join(f"{x:9.6f}" for x in vec[i : i + 8]))
    return 0


# --------------------------------------------------------------------------------------
# compare


def _comparison_record(
    comp: Any, kind: str, a: PreparedCasing | None = None, b: PreparedCasing | None = None
) -> dict[str, Any]:
    from ballistics.calibration import describe_frequency, non_match_frequency
    from ballistics.quality import combine

    rec: dict[str, Any] = comp.as_dict()
    rec.setdefault("light", None)  # 3-D: no light (one vocabulary: server/output.py)
    qa = None if a is None else a.quality
    qb = None if b is None else b.quality
    rec["quality"] = {"a": qa, "b": qb}
    low, reasons = combine({"a": qa, "b": qb}, tuple(getattr(comp, "flags", ()) or ()))
    rec["low_confidence"] = low
    rec["low_confidence_reasons"] = reasons
    try:
        freq = non_match_frequency(comp.score, kind=kind)
    except BallisticsError as exc:
        rec["non_match_frequency"] = None
        rec["interpretation"] = f"no non-match reference: {_one_line(str(exc))}"
    else:
        rec["non_match_frequency"] = freq
        rec["interpretation"] = describe_frequency(freq)
    return rec


def _human_compare(a: str, b: str, rec: dict[str, Any]) -> str:
    regions = ", ".join(f"{k} {v:.3f}" for k, v in rec["regions"].items())
    lines = [
        f"{a}  vs  {b}",
        f"  score {rec['score']:.3f} (regions: {regions})",
        f"  CMC {rec['cmc']} (forward {rec['cmc_forward']}, backward {rec['cmc_backward']}"
        f" of {rec['cells_considered']} cells), correlation {rec['correlation']:.3f}",
        f"  pose: rotation {rec['rotation_deg']:.1f} deg, translation"
        f" dx {rec['dx_m'] * 1e6:.1f} um, dy {rec['dy_m'] * 1e6:.1f} um",
    ]
    if rec.get("striation_correlation") is not None:
        lines.append(f"  aperture-shear striation correlation {rec['striation_correlation']:.3f}")
    light = rec.get("light")
    if light:
        how = (
            "compared on the heights recovered from the side-lit shading"
            if light.get("method") == "pseudo_height"
            else "compared on the flattened images"
        )
        rel = light.get("relative_light_deg")
        lines.append(
            f"  light: A {_human_light(light.get('a'))}; B {_human_light(light.get('b'))};"
            f" {how}" + ("" if rel is None else f" (lights {rel:.0f} deg apart on the casing)")
        )
    freq = rec.get("non_match_frequency")
    lines.append(
        f"  {rec['interpretation']}" + (f" (frequency {freq:.3g})" if freq is not None else "")
    )
    # A low score on a poor scan says "cannot tell", not "different gun": say so first.
    lines += [f"  LOW-CONFIDENCE: {r}" for r in rec.get("low_confidence_reasons") or []]
    return "\n".join(lines)


def cmd_compare(args: argparse.Namespace) -> int:
    """``ballistics compare A B [--json] [--png OUT.png]`` or ``compare --pairs PAIRS.csv``."""
    if args.pairs:
        if args.a or args.b:
            return _fail("give either two files A B or --pairs PAIRS.csv, not both")
        if args.png:
            return _fail("--png draws one pair; use it with A B, not with --pairs")
        return _compare_pairs(args)
    if not args.a or not args.b:
        return _fail("compare needs two scan files A B (or --pairs PAIRS.csv)")
    from ballistics.lighting import compare_prepared, picture_surfaces

    try:
        spacing_m = _spacing(args)
        lights = _light_requests(args, 2)
    except _BadInput as exc:
        return _fail(str(exc))
    prepared: list[PreparedCasing] = []
    for path, light in zip((args.a, args.b), lights, strict=True):
        try:
            prepared.append(_prepare_file(path, spacing_m, _length_unit(args), light))
        except (BallisticsError, OSError) as exc:
            return _fail(f"{path}: {_message(path, exc)}")
        except Exception as exc:
            return _fail(f"{path}: {_internal(exc)}", 1)
    try:
        comp = compare_prepared(prepared[0], prepared[1])
    except BallisticsError as exc:
        return _fail(f"{args.a} vs {args.b}: {_one_line(str(exc))}")
    except Exception as exc:
        return _fail(f"{args.a} vs {args.b}: {_internal(exc)}", 1)
    rec = _comparison_record(comp, prepared[0].kind, prepared[0], prepared[1])
    if args.png:
        from ballistics.picture import write_comparison_png

        try:
            pa, pb = picture_surfaces(prepared[0], prepared[1], comp)
            write_comparison_png(
                args.png,
                pa,
                pb,
                comp,
                label_a=f"file {Path(args.a).name}",
                label_b=f"file {Path(args.b).name}",
                kind=prepared[0].kind,
            )
        except OSError as exc:
            return _fail(f"{args.png}: cannot write the picture: {exc.strerror or exc}")
    if args.json:  # the keys of a remote compare (server/output.py), cells included
        cells = comp.as_dict(cells=True).get("cells", [])
        out = {"a": args.a, "b": args.b, **rec, "cells": cells}
        if args.png:
            out["png_path"] = args.png
        print(json.dumps(out))
    else:
        print(_human_compare(args.a, args.b, rec))
        if args.png:
            print(f"  picture: {args.png}")
    return 0


# -- batch of pairs --------------------------------------------------------------------


def _read_pairs(csv_path: Path) -> list[tuple[str, str, str, str]]:
    """(a as written, b as written, a resolved, b resolved) per data row.

    Raises
    ------
    _BadInput
        Unreadable file, missing header columns or an empty cell.
    """
    expected = "expected a header row with columns 'a,b' (scan file paths)"
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            if "a" not in fields or "b" not in fields:
                found = ",".join(reader.fieldnames or []) or "nothing"
                raise _BadInput(f"{csv_path}: {expected}; found {found!r}")
            names = dict(zip(fields, reader.fieldnames or [], strict=True))
            rows = list(reader)
    except FileNotFoundError:
        raise _BadInput(f"{csv_path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise _BadInput(f"{csv_path}: cannot read the pairs: {_one_line(str(exc))}") from None
    base = csv_path.parent
    out = []
    for i, row in enumerate(rows, start=2):
        a = (row.get(names["a"]) or "").strip()
        b = (row.get(names["b"]) or "").strip()
        if not a or not b:
            raise _BadInput(f"{csv_path}: line {i}: both columns a and b need a file path")
        out.append((a, b, str(base / a), str(base / b)))
    return out


def _n_workers(requested: int, jobs: int) -> int:
    if requested > 0:
        n = requested
    else:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            n = os.cpu_count() or 1
    return max(1, min(n, jobs))


class _Progress:
    """One updating line on stderr (``\\r``); redraws at most every 0.2 s."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last = 0.0
        self.shown = False

    def __call__(self, what: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < 0.2:
            return
        self.last = now
        width = 30
        fill = width * done // max(total, 1)
        self.stream.write(f"\r{what} [{'#' * fill}{'.' * (width - fill)}] {done}/{total}  ")
        self.stream.flush()
        self.shown = True

    def end(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = False


# Worker-process state for ``compare --pairs``: the prepared casings, sent once per worker.
_CASINGS: dict[str, PreparedCasing] = {}


def _init_worker(casings: dict[str, PreparedCasing] | None = None) -> None:
    import cv2

    cv2.setNumThreads(1)
    if casings is not None:
        _CASINGS.clear()
        _CASINGS.update(casings)


def _prepare_job(
    job: tuple[str, float | None, str, Any],
) -> tuple[str, PreparedCasing | None, str | None]:
    """Worker: (path, prepared or None, error message or None); warnings on stderr."""
    path, spacing_m, length_unit, light = job
    try:
        return path, _prepare_file(path, spacing_m, length_unit, light), None
    except (BallisticsError, OSError) as exc:
        return path, None, _message(path, exc)
    except MemoryError:
        return path, None, "out of memory while preparing the scan"
    except Exception as exc:
        return path, None, _internal(exc)


def _compare_job(keys: tuple[str, str]) -> tuple[dict[str, Any] | None, str | None, bool]:
    """Worker: (record, error, internal?) for one pair of prepared casings in ``_CASINGS``."""
    from ballistics.lighting import compare_prepared

    try:
        a, b = _CASINGS[keys[0]], _CASINGS[keys[1]]
        return _comparison_record(compare_prepared(a, b), a.kind, a, b), None, False
    except BallisticsError as exc:
        return None, _one_line(str(exc)), False
    except Exception as exc:
        return None, _internal(exc), True


def _run(
    fn: Callable[[Any], Any],
    jobs: Sequence[Any],
    workers: int,
    initargs: tuple[Any, ...] = (),
) -> Iterator[Any]:
    """``map(fn, jobs)`` in input order, in-process for one worker, else over processes."""
    if workers <= 1 or len(jobs) <= 1:
        _init_worker(*initargs)
        yield from map(fn, jobs)
        return
    import multiprocessing

    # spawn: no fork of a process that may hold OpenCV / BLAS threads.
    ctx = multiprocessing.get_context("spawn")
    chunk = max(1, min(_CHUNK, len(jobs) // (workers * 4) or 1))
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=initargs
    ) as pool:
        yield from pool.map(fn, jobs, chunksize=chunk)


def _compare_pairs(args: argparse.Namespace) -> int:
    if args.workers < 0:
        return _fail(f"--workers must be >= 0 (0: all cores); got {args.workers}")
    try:
        spacing_m = _spacing(args)
        (light,) = _light_requests(args)  # --pairs: one light for every file
        pairs = _read_pairs(Path(args.pairs))
    except _BadInput as exc:
        return _fail(str(exc))
    status = 0
    if not pairs:
        return _fail(f"{args.pairs}: no pairs (only a header row)")
    # Each distinct scan is read and prepared once (keyed by its resolved path).
    keys: dict[str, str] = {}
    for _, _, ra, rb in pairs:
        for r in (ra, rb):
            keys.setdefault(r, str(Path(r).resolve()))
    distinct = sorted(set(keys.values()))
    label = {keys[r]: r for r in keys}
    progress = _Progress(sys.stderr)
    casings: dict[str, PreparedCasing] = {}
    errors: dict[str, str] = {}
    workers = _n_workers(args.workers, len(distinct))
    jobs = [(label[k], spacing_m, _length_unit(args), light) for k in distinct]
    progress("preparing scans", 0, len(jobs))
    for i, (k, (_, prepared, err)) in enumerate(
        zip(distinct, _run(_prepare_job, jobs, workers), strict=True), start=1
    ):
        if prepared is not None:
            casings[k] = prepared
        else:
            errors[k] = err or "unusable scan"
            progress.end()
            print(f"ballistics: {label[k]}: {errors[k]}", file=sys.stderr)
            status = 2
        progress("preparing scans", i, len(jobs))
    progress.end()

    todo = [(keys[ra], keys[rb]) for _, _, ra, rb in pairs]
    runnable = [p for p in todo if p[0] in casings and p[1] in casings]
    workers = _n_workers(args.workers, len(runnable))
    # Only the casings that some runnable pair needs travel to the workers.
    needed = {k for p in runnable for k in p}
    results = _run(_compare_job, runnable, workers, ({k: casings[k] for k in needed},))
    progress("comparing pairs", 0, len(todo))
    for i, ((a, b, _, _), (ka, kb)) in enumerate(zip(pairs, todo, strict=True), start=1):
        if ka in casings and kb in casings:
            rec, err, internal = next(results)
            if err is not None:
                status = 1 if internal else max(status, 2)
        else:
            rec, err = (
                None,
                "; ".join(f"{x}: {errors[k]}" for x, k in ((a, ka), (b, kb)) if k in errors),
            )
        if args.json:
            out = {"a": a, "b": b, **rec} if rec is not None else {"a": a, "b": b, "error": err}
            line = json.dumps(out)
        elif rec is not None:
            line = (
                f"{rec['score']:8.3f}  cmc {rec['cmc']:3d}  rot {rec['rotation_deg']:6.1f}"
                f"  nmf {rec['non_match_frequency'] or float('nan'):8.3g}  {a}  {b}"
            )
            if rec.get("low_confidence"):
                line += "  LOW-CONFIDENCE: " + "; ".join(rec["low_confidence_reasons"])
        else:
            line = f"   error  {a}  {b}: {err}"
        print(line, flush=True)
        progress("comparing pairs", i, len(todo))
    progress.end()
    return status
