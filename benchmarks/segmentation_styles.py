"""Segmentation accuracy per cropping style, pixel spacing and firing-pin kind.

Seeded synthetic casings (:func:`ballistics.synth.fire`) are cut into every cropping style of
:mod:`ballistics.crop_styles` and, for 2-D, rendered under a ring light
(:func:`ballistics.render.render_ring_light`); :func:`ballistics.segment.segment` runs on each
and is scored against the ground truth.

The scoring is independent of where the scans come from: :func:`measure` takes any iterable
of :class:`Case` (a scan and its truth), so instrument models (confocal, focus variation,
photometric stereo; other lights) plug in by building cases from their own scans::

    records = measure(Case(scan, primer, pin, "round", group={"instrument": "confocal"})
                      for scan, primer, pin in my_scans)
    rows = summarise(records, keys=("instrument",))

Usage::

    python benchmarks/segmentation_styles.py [--casings 10] [--seed 2026]

writes ``benchmarks/results/segmentation_styles.json`` and
``benchmarks/RESULTS-segmentation.md``. The seed is held out: the segmentation's parameters
were set while looking at seeds 3, 5, 7 and 11 only.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
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
from ballistics.render import render_ring_light  # noqa: E402
from ballistics.scan import Scan  # noqa: E402
from ballistics.segment import segment  # noqa: E402
from ballistics.synth import Firearm, fire, make_firearms  # noqa: E402

SPACINGS_UM: tuple[float, ...] = (2.5, 3.125, 6.25, 7.5)
TARGETS = {"primer_median_px": 3.0, "pin_median_px": 5.0, "pin_within_10px": 0.97, "shape": 0.95}
"""Targets of issue 9 (per style, spacing and kind)."""

VARIANTS_2D: tuple[str, ...] = ("case_head", "disc_fov_wide")
"""Crops also rendered as 2-D ring-light images."""


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


def synthetic_cases(
    spacing_um: float, casings: int, seed: int, *, image: bool = True
) -> Iterator[Case]:
    """Every crop variant (3-D) and ring-light renders (2-D) of ``casings`` seeded shots.

    Half the firearms have round, half elongated firing pins (drawn until both are there).
    """
    firearms = make_firearms(max(8 * casings, 40), seed=seed)
    rounds = [fa for fa in firearms if fa.fp_shape == "round"]
    longs = [fa for fa in firearms if fa.fp_shape == "elongated"]
    chosen: list[Firearm] = []
    for i in range(casings):
        pool = (rounds if i % 2 == 0 else longs) or firearms
        chosen.append(pool[(i // 2) % len(pool)])
    for i, fa in enumerate(chosen):
        shot = seed * 1000 + i
        scan, tr = fire(fa, shot_seed=shot, spacing_m=spacing_um * 1e-6)
        group = {"spacing_um": spacing_um, "pin": fa.fp_shape, "casing": tr.casing_id}
        for st in styled_variants(scan, tr, seed=shot):
            yield case_from_styled(st, kind="3d", **group)
            if image and st.variant in VARIANTS_2D:
                img = render_ring_light(st.scan)
                c = case_from_styled(st, kind="2d_ring", **group)
                yield replace(c, scan=img, expected_style="image")


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


def write_report(rows: list[dict[str, Any]], path: Path, meta: dict[str, Any]) -> None:
    cols = (
        ("variant", "style / variant"),
        ("spacing_um", "um"),
        ("kind", "kind"),
        ("pin", "pin"),
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
    lines = [
        "# Segmentation per cropping style, spacing and firing-pin kind",
        "",
        "Script `benchmarks/segmentation_styles.py`; raw output "
        "`benchmarks/results/segmentation_styles.json`.",
        f"Command (on {meta['date']}, {meta['machine']}):",
        "",
        "```",
        meta["command"],
        "```",
        "",
        f"Seed {meta['seed']} (held out: the segmentation was tuned looking at seeds 3, 5, 7 and "
        f"11 only); {meta['casings']} casings per spacing, alternately round and elongated "
        "pins; every casing cut into each crop of `ballistics.crop_styles.VARIANTS` (3-D) and "
        f"the {', '.join(VARIANTS_2D)} crops rendered under a ring light (2-D). Errors are "
        "distances in pixels of the scan between the found and the true centre. "
        "*pin <= 10 px* counts a pin that should be found but is not as a miss; *pin found "
        "(absent)* is the share of scans without a pin where one was reported. Targets "
        "(issue 9): no refusal, primer median <= 3 px, pin median <= 5 px, >= 97 % of pins "
        "within 10 px, shape >= 95 %.",
        "",
        "## By style, spacing and pin kind",
        "",
        "| " + " | ".join(c[1] for c in cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k)) for k, _ in cols) + " |")
    path.write_text("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--casings", type=int, default=10, help="casings per spacing")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--spacings-um", type=float, nargs="+", default=list(SPACINGS_UM))
    ap.add_argument("--no-image", action="store_true", help="skip the 2-D renders")
    ap.add_argument("--out", default=str(ROOT / "benchmarks"))
    args = ap.parse_args(argv)
    from _common import machine  # type: ignore[import-not-found]

    t0 = time.time()
    records: list[dict[str, Any]] = []
    for sp in args.spacings_um:
        cases = synthetic_cases(sp, args.casings, args.seed, image=not args.no_image)
        recs = measure(cases)
        records += recs
        print(f"{sp} um: {len(recs)} scans, {time.time() - t0:.0f} s", flush=True)
    order = {v: i for i, v in enumerate(VARIANTS)}
    rows = summarise(records, keys=("variant", "spacing_um", "kind", "pin"))
    rows.sort(key=lambda r: (r["kind"], order.get(r["variant"], 99), r["spacing_um"], r["pin"]))
    overall = summarise(records, keys=("variant", "kind"))
    overall.sort(key=lambda r: (r["kind"], order.get(r["variant"], 99)))
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": str(machine()),
        "command": "python benchmarks/segmentation_styles.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "seed": args.seed,
        "casings": args.casings,
        "wall_seconds": time.time() - t0,
    }
    out = Path(args.out)
    (out / "results").mkdir(parents=True, exist_ok=True)
    (out / "results" / "segmentation_styles.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "overall": overall, "records": records}, indent=1)
    )
    write_report(overall + rows, out / "RESULTS-segmentation.md", meta)
    print(json.dumps(overall, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
