"""Segmentation accuracy per cropping style, instrument model, pixel spacing and pin kind.

Seeded synthetic casings are recorded by every instrument model -- the scanner of
:func:`ballistics.synth.fire` (``"generic"``, with :func:`ballistics.render.render_ring_light`
renders as ``"render_ring"``) and each model of :data:`ballistics.instruments.INSTRUMENTS`
(3-D: confocal, focus variation, photometric stereo; 2-D: two ring lights, a side light,
coaxial light) -- cut into every cropping style of :mod:`ballistics.crop_styles`, and the
generic 3-D crops are also written as micrometre X3P files and read back with
``length_unit="um"``. :func:`ballistics.segment.segment` runs on each and is scored against
the ground truth.

The scoring is independent of where the scans come from: :func:`measure` takes any iterable
of :class:`Case` (a scan and its truth), so other sources plug in by building cases from
their own scans::

    records = measure(Case(scan, primer, pin, "round", group={"instrument": "mine"})
                      for scan, primer, pin in my_scans)
    rows = summarise(records, keys=("instrument",))

Usage::

    python benchmarks/segmentation_styles.py [--casings 6] [--seed 2026]
        [--spacings-um 2.5 3.125 6.25 7.5] [--instruments generic confocal ...]

writes ``benchmarks/results/segmentation_styles.json`` and
``benchmarks/RESULTS-segmentation.md``. The seed is held out: the segmentation's parameters
were set while looking at seeds 3, 5, 7 and 11 (and at the misses of 4049, the previous
held-out seed).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ballistics.crop_styles import VARIANTS, StyledScan, styled_variants  # noqa: E402
from ballistics.errors import SegmentationError  # noqa: E402
from ballistics.instruments import INSTRUMENTS, instrument_rng, record  # noqa: E402
from ballistics.io import read_scan  # noqa: E402
from ballistics.render import render_ring_light  # noqa: E402
from ballistics.scan import Scan  # noqa: E402
from ballistics.segment import segment  # noqa: E402
from ballistics.synth import Firearm, fire, fired_surface, make_firearms  # noqa: E402
from ballistics.x3p import write_x3p  # noqa: E402

SPACINGS_UM: tuple[float, ...] = (2.5, 3.125, 6.25, 7.5)
TARGETS = {"primer_median_px": 3.0, "pin_median_px": 5.0, "pin_within_10px": 0.97, "shape": 0.95}
"""Targets of issue 9 (per style, spacing and kind)."""

VARIANTS_2D: tuple[str, ...] = ("case_head", "disc_fov_wide")
"""Crops also rendered as 2-D ring-light images."""

INSTRUMENT_NAMES: tuple[str, ...] = ("generic", *INSTRUMENTS)
"""``"generic"`` (the scanner of :func:`ballistics.synth.fire`, plus its ring-light renders
``"render_ring"``) and every model of :data:`ballistics.instruments.INSTRUMENTS`."""


@dataclass(frozen=True, eq=False)
class Case:
    """One scan to segment and its ground truth (pixels of ``scan``).

    ``group`` labels the case for :func:`summarise` (e.g. variant, spacing, kind,
    instrument); ``expected_style`` and ``pin_expected`` are optional checks.
    """

    scan: Scan
    primer_center: tuple[float, float]
    fp_center: tuple[float, float]
    fp_shape: str
    group: dict[str, Any] = field(default_factory=dict)
    pin_expected: bool = True
    expected_style: str | None = None


def case_from_styled(st: StyledScan, **group: Any) -> Case:
    return Case(
        st.scan,
        st.primer_center,
        st.fp_center,
        st.fp_shape,
        {"variant": st.variant, **group},
        st.pin_expected,
        st.style,
    )


def measure(cases: Iterable[Case]) -> list[dict[str, Any]]:
    """Segment every case; one record per case (errors in pixels, None where undefined)."""
    out = []
    for c in cases:
        t0 = time.perf_counter()
        rec: dict[str, Any] = dict(c.group)
        rec.update(pin_expected=c.pin_expected, expected_style=c.expected_style)
        try:
            seg = segment(c.scan)
        except SegmentationError as exc:
            rec.update(refused=True, error=str(exc), seconds=time.perf_counter() - t0)
            out.append(rec)
            continue
        found = seg.firing_pin_found and seg.firing_pin_center is not None
        rec.update(
            refused=False,
            seconds=time.perf_counter() - t0,
            primer_err_px=math.dist(seg.primer_center, c.primer_center),
            pin_found=found,
            pin_err_px=math.dist(seg.firing_pin_center, c.fp_center)
            if found and seg.firing_pin_center is not None
            else None,
            shape_ok=(seg.firing_pin_shape == c.fp_shape) if found else None,
            style=seg.style,
            confidence=seg.confidence,
            notes=list(seg.notes),
        )
        out.append(rec)
    return out


def _median(x: Sequence[float]) -> float | None:
    return float(np.median(x)) if len(x) else None


def summarise(
    records: Sequence[dict[str, Any]], keys: Sequence[str] = ("variant", "spacing_um", "kind")
) -> list[dict[str, Any]]:
    """Aggregate records by ``keys``: n, refusals, centre errors, pin rates, shape accuracy."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    rows = []
    for key, rs in groups.items():
        ok = [r for r in rs if not r["refused"]]
        ep = [r["primer_err_px"] for r in ok]
        exp = [r for r in ok if r["pin_expected"]]
        found = [r for r in exp if r["pin_found"]]
        ef = [r["pin_err_px"] for r in found]
        absent = [r for r in ok if not r["pin_expected"]]
        styled = [r for r in ok if r.get("expected_style")]
        row = dict(zip(keys, key, strict=True))
        row.update(
            n=len(rs),
            refused=len(rs) - len(ok),
            primer_median_px=_median(ep),
            primer_p90_px=float(np.percentile(ep, 90)) if ep else None,
            pin_median_px=_median(ef),
            # a pin that should be found and is not counts as a miss (> 10 px)
            pin_within_10px=(sum(e <= 10 for e in ef) / len(exp)) if exp else None,
            shape=(float(np.mean([r["shape_ok"] for r in found])) if found else None),
            pin_found_rate=(len(found) / len(exp)) if exp else None,
            pin_false_found=(sum(r["pin_found"] for r in absent) / len(absent)) if absent else None,
            style_agreement=(
                float(np.mean([r["style"] == r["expected_style"] for r in styled]))
                if styled
                else None
            ),
            confidence_mean=float(np.mean([r["confidence"] for r in ok])) if ok else None,
            seconds_mean=float(np.mean([r["seconds"] for r in rs])),
        )
        row["meets_targets"] = _meets(row)
        rows.append(row)
    return rows


def _meets(row: dict[str, Any]) -> bool:
    if row["refused"]:
        return False
    if row["primer_median_px"] is not None and row["primer_median_px"] > 3.0:
        return False
    if row["pin_found_rate"] is None:  # no pin to find: found-absent must be said
        return not row["pin_false_found"]
    return bool(
        (row["pin_median_px"] or math.inf) <= TARGETS["pin_median_px"]
        and row["pin_within_10px"] >= TARGETS["pin_within_10px"]
        and (row["shape"] or 0.0) >= TARGETS["shape"]
    )


def _pick_firearms(casings: int, seed: int) -> list[Firearm]:
    """``casings`` seeded firearms, alternately round and elongated firing pins."""
    firearms = make_firearms(max(8 * casings, 40), seed=seed)
    rounds = [fa for fa in firearms if fa.fp_shape == "round"]
    longs = [fa for fa in firearms if fa.fp_shape == "elongated"]
    chosen: list[Firearm] = []
    for i in range(casings):
        pool = (rounds if i % 2 == 0 else longs) or firearms
        chosen.append(pool[(i // 2) % len(pool)])
    return chosen


def _um_x3p_roundtrip(scan: Scan, folder: Path) -> Scan:
    """``scan`` written as an X3P in micrometres (float32) and read back with ``length_unit="um"``.

    What a lab whose tool chain writes micrometres in the metre fields sends, read as the
    CLI's ``--length-unit um`` reads it (:func:`ballistics.io.read_scan`).
    """
    path = folder / "scan-um.x3p"
    write_x3p(path, scan, dtype="F", length_unit="um")
    return read_scan(path, length_unit="um")


def synthetic_cases(
    spacing_um: float,
    casings: int,
    seed: int,
    *,
    image: bool = True,
    instruments: Sequence[str] = INSTRUMENT_NAMES,
    um_x3p: bool = True,
    tmp: Path | None = None,
) -> Iterator[Case]:
    """Every crop variant of ``casings`` seeded shots, recorded by every instrument model.

    Half the firearms have round, half elongated firing pins. Per casing and instrument:

    * ``"generic"`` - the scanner of :func:`ballistics.synth.fire`: every crop of
      :data:`VARIANTS` (kind ``"3d"``), the :data:`VARIANTS_2D` crops rendered by
      :func:`ballistics.render.render_ring_light` (kind ``"2d"``), and with ``um_x3p`` every
      3-D crop again written as a micrometre X3P and read back (``unit="um"``).
    * a 3-D model of :data:`ballistics.instruments.INSTRUMENTS` (confocal, focus variation,
      photometric stereo) records :func:`ballistics.synth.fired_surface` of the same shot at
      ``spacing_um``; every crop of :data:`VARIANTS` is cut from that scan.
    * a 2-D model (ring lights, side light, coaxial) images the same surface at
      ``spacing_um``; the :data:`VARIANTS_2D` crops are cut from the image.
    """
    sp_m = spacing_um * 1e-6
    for i, fa in enumerate(_pick_firearms(casings, seed)):
        shot = seed * 1000 + i
        base = {"spacing_um": spacing_um, "pin": fa.fp_shape}
        surface = None
        for name in instruments:
            if name == "generic":
                scan, tr = fire(fa, shot_seed=shot, spacing_m=sp_m)
                kind = "topography"
            else:
                inst = INSTRUMENTS[name]
                kind = inst.kind
                if kind == "image" and not image:
                    continue
                if surface is None:
                    surface = fired_surface(fa, shot_seed=shot, spacing_m=sp_m)
                scan, tr = record(
                    surface,
                    name,
                    rng=instrument_rng(fa.seed, shot, name),
                    params=replace(inst.params, pixel_um=spacing_um),
                )
            group = {**base, "casing": tr.casing_id, "instrument": name, "unit": "m"}
            variants = VARIANTS if kind == "topography" else VARIANTS_2D
            for st in styled_variants(scan, tr, seed=shot, variants=variants):
                if kind == "image":
                    yield replace(case_from_styled(st, kind="2d", **group), expected_style="image")
                    continue
                c = case_from_styled(st, kind="3d", **group)
                yield c
                if name == "generic" and um_x3p and tmp is not None:
                    um = _um_x3p_roundtrip(st.scan, tmp)
                    yield replace(c, scan=um, group={**c.group, "unit": "um"})
                if name == "generic" and image and st.variant in VARIANTS_2D:
                    img = render_ring_light(st.scan)
                    c2 = case_from_styled(st, kind="2d", **{**group, "instrument": "render_ring"})
                    yield replace(c2, scan=img, expected_style="image")


# --------------------------------------------------------------------------------------
# report


def _fmt(v: Any, nd: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


_METRIC_COLS: tuple[tuple[str, str], ...] = (
    ("n", "n"),
    ("refused", "refused"),
    ("primer_median_px", "primer med px"),
    ("primer_p90_px", "primer p90 px"),
    ("pin_median_px", "pin med px"),
    ("pin_within_10px", "pin <= 10 px"),
    ("shape", "shape ok"),
    ("pin_found_rate", "pin found"),
    ("pin_false_found", "pin found (absent)"),
    ("style_agreement", "style ok"),
    ("confidence_mean", "conf"),
    ("meets_targets", "targets"),
)
_KEY_TITLES = {
    "variant": "style / variant",
    "instrument": "instrument",
    "kind": "kind",
    "spacing_um": "um",
    "pin": "pin",
    "unit": "file unit",
}


def _table(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[str]:
    cols = [(k, _KEY_TITLES.get(k, k)) for k in keys] + list(_METRIC_COLS)
    lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k)) for k, _ in cols) + " |")
    return lines


def _misses(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[str]:
    """One line per row that misses a target, saying which."""
    out = []
    for r in rows:
        if r["meets_targets"]:
            continue
        why = []
        if r["refused"]:
            why.append(f"{r['refused']} of {r['n']} refused")
        if (r["primer_median_px"] or 0) > TARGETS["primer_median_px"]:
            why.append(f"primer median {r['primer_median_px']:.1f} px")
        if r["pin_found_rate"] is None:
            if r["pin_false_found"]:
                why.append(f"pin reported on {100 * r['pin_false_found']:.0f} % without one")
        else:
            if (r["pin_median_px"] or math.inf) > TARGETS["pin_median_px"]:
                why.append(f"pin median {_fmt(r['pin_median_px'], 1)} px")
            if r["pin_within_10px"] < TARGETS["pin_within_10px"]:
                why.append(f"{100 * r['pin_within_10px']:.0f} % of pins within 10 px")
            if (r["shape"] or 0.0) < TARGETS["shape"]:
                why.append(f"shape {100 * (r['shape'] or 0):.0f} %")
        label = ", ".join(f"{_fmt(r.get(k))}" for k in keys)
        out.append(f"- {label}: " + "; ".join(why))
    return out


def write_report(
    tables: Sequence[tuple[str, Sequence[str], Sequence[dict[str, Any]]]],
    path: Path,
    meta: dict[str, Any],
) -> None:
    """Markdown report: the method, then one table per (title, keys, rows) of ``tables``;
    the first table's target misses are listed before the tables."""
    lines = [
        "# Segmentation per cropping style, instrument, spacing and firing-pin kind",
        "",
        "Script `benchmarks/segmentation_styles.py`; raw output "
        "`benchmarks/results/segmentation_styles.json`.",
        f"Command (on {meta['date']}, {meta['machine']}; {meta['wall_seconds']:.0f} s wall, "
        "one process):",
        "",
        "```",
        meta["command"],
        "```",
        "",
        f"Seed {meta['seed']} (held out: the segmentation was tuned looking at seeds 3, 5, 7 and "
        "11, and at the misses of 4049, the previous held-out seed); "
        f"{meta['casings']} casings per spacing ({', '.join(map(str, meta['spacings_um']))}"
        " um), alternately round and elongated pins. Each shot is recorded by every instrument: "
        "`generic` is the scanner of `ballistics.synth.fire` (and `render_ring` its "
        "`render_ring_light` renders); the others are the models of "
        "`ballistics.instruments.INSTRUMENTS` recording `ballistics.synth.fired_surface` of the "
        "same shot at the row's pixel spacing. Every 3-D scan is cut into each crop of "
        "`ballistics.crop_styles.VARIANTS`, every 2-D image into the "
        f"{', '.join(VARIANTS_2D)} crops. *file unit um*: the generic 3-D crops written as X3P "
        'files in micrometres (float32) and read back with `length_unit="um"` (the CLI\'s '
        "`--length-unit um`). Errors are distances in pixels of the scan between the found and "
        "the true centre. *pin <= 10 px* counts a pin that should be found but is not as a "
        "miss; *pin found (absent)* is the share of scans without a pin where one was "
        "reported. Targets (issue 9): no refusal, primer median <= 3 px, pin median <= 5 px, "
        ">= 97 % of pins within 10 px, shape >= 95 %.",
        "",
    ]
    title0, keys0, rows0 = tables[0]
    miss = _misses(rows0, keys0)
    lines += [f"## Target misses ({title0.lower()})", ""]
    lines += miss if miss else ["None: every row meets every target."]
    lines.append("")
    for title, keys, rows in tables:
        lines += [f"## {title}", "", *_table(rows, keys), ""]
        if rows is not tables[0][2]:
            more = _misses(rows, keys)
            if more:
                lines += ["Rows missing a target:", "", *more, ""]
    path.write_text("\n".join(lines))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--casings", type=int, default=6, help="casings per spacing")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--spacings-um", type=float, nargs="+", default=list(SPACINGS_UM))
    ap.add_argument(
        "--instruments",
        nargs="+",
        default=list(INSTRUMENT_NAMES),
        choices=INSTRUMENT_NAMES,
        help="instrument models to record with (default: all)",
    )
    ap.add_argument("--no-image", action="store_true", help="skip the 2-D images")
    ap.add_argument("--no-um-x3p", action="store_true", help="skip the micrometre X3P files")
    ap.add_argument("--out", default=str(ROOT / "benchmarks"))
    args = ap.parse_args(argv)
    t0 = time.time()
    records: list[dict[str, Any]] = []
    done: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for sp in args.spacings_um:
            cases = synthetic_cases(
                sp,
                args.casings,
                args.seed,
                image=not args.no_image,
                instruments=args.instruments,
                um_x3p=not args.no_um_x3p,
                tmp=Path(tmp),
            )
            recs = measure(cases)
            records += recs
            done.append(sp)
            print(f"{sp} um: {len(recs)} scans, {time.time() - t0:.0f} s", flush=True)
            # written after every spacing, so that a long run leaves what it has measured
            _write(records, args, argv, done, time.time() - t0)
    return 0


def _write(
    records: list[dict[str, Any]],
    args: argparse.Namespace,
    argv: Sequence[str] | None,
    done: list[float],
    wall: float,
) -> None:
    from _common import machine  # type: ignore[import-not-found]

    vorder = {v: i for i, v in enumerate(VARIANTS)}
    iorder = {v: i for i, v in enumerate((*INSTRUMENT_NAMES, "render_ring"))}

    def order(r: dict[str, Any]) -> tuple[Any, ...]:
        return (
            r.get("kind", ""),
            iorder.get(r.get("instrument"), 99),
            r.get("unit", ""),
            vorder.get(r.get("variant"), 99),
            r.get("spacing_um", 0),
            r.get("pin", ""),
        )

    k_main = ("kind", "instrument", "unit", "variant")
    k_sp = ("kind", "instrument", "unit", "variant", "spacing_um")
    k_pin = ("kind", "variant", "pin")
    k_inst = ("kind", "instrument", "unit", "spacing_um")
    tables = [
        ("By style and instrument", k_main, sorted(summarise(records, k_main), key=order)),
        ("By instrument and spacing", k_inst, sorted(summarise(records, k_inst), key=order)),
        ("By style and firing-pin kind", k_pin, sorted(summarise(records, k_pin), key=order)),
        ("By style, instrument and spacing", k_sp, sorted(summarise(records, k_sp), key=order)),
    ]
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": str(machine()),
        "command": "python benchmarks/segmentation_styles.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "seed": args.seed,
        "casings": args.casings,
        "spacings_um": list(done),
        "spacings_asked_um": list(args.spacings_um),
        "instruments": args.instruments,
        "wall_seconds": wall,
    }
    out = Path(args.out)
    (out / "results").mkdir(parents=True, exist_ok=True)
    (out / "results" / "segmentation_styles.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "tables": {t: {"keys": list(k), "rows": r} for t, k, r in tables},
                "records": records,
            },
            indent=1,
        )
    )
    write_report(tables, out / "RESULTS-segmentation.md", meta)
    for line in _misses(tables[0][2], k_main):
        print(line)


if __name__ == "__main__":
    raise SystemExit(main())
