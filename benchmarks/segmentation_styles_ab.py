"""Segmentation per style and instrument, before and after a change of the segmentation.

Builds the cases of ``benchmarks/segmentation_styles.py`` (every cropping style, every 3-D
instrument and 2-D light, the given spacings) once per seed and scores each twice: with the
current :func:`ballistics.segment.segment` and with ``ballistics/segment.py`` as it was at the
git revision ``--before-rev`` (loaded as a module of its own, beside the current one), so
"before" and "after" see the very same scans, and the synthesis (most of the run time) is
paid once. With ``--only-2d`` the 3-D instruments are not recorded and no 3-D case is
scored (for a change of the 2-D path only: 3-D cases never run it).

Usage::

    python benchmarks/segmentation_styles_ab.py --seeds 5113 7741 --casings 3
        [--spacings-um 6.25 7.5 3.125 2.5] [--before-rev 8546fb3] [--only-2d] [--out out/ab]

writes ``<out>/segmentation_styles_ab.json`` (records and per-style tables, before and after)
after every seed and spacing. The micrometre X3P round trip is not run (3-D only).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import segmentation_styles as ss  # noqa: E402

from ballistics.instruments import INSTRUMENTS  # noqa: E402


def _segment_at(rev: str) -> Callable[..., Any]:
    """:func:`segment` of ``ballistics/segment.py`` at git revision ``rev``, as a module of its
    own in the ``ballistics`` package (same helpers, constants of that revision)."""
    src = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:ballistics/segment.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    name = f"ballistics._segment_at_{rev}"
    mod = types.ModuleType(name)
    mod.__package__ = "ballistics"
    sys.modules[name] = mod  # dataclasses look their module up
    # our own repository's source, at a revision the user names
    exec(compile(src, f"{rev}:ballistics/segment.py", "exec"), mod.__dict__)
    fn: Callable[..., Any] = mod.segment
    return fn


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[5113, 7741])
    ap.add_argument("--casings", type=int, default=3, help="casings per spacing and seed")
    ap.add_argument("--spacings-um", type=float, nargs="+", default=[6.25, 7.5, 3.125, 2.5])
    ap.add_argument(
        "--before-rev", default="8546fb3", help="git revision of the 'before' (main, prep-7)"
    )
    ap.add_argument(
        "--only-2d", action="store_true", help="record and score 2-D cases only (2-D change)"
    )
    ap.add_argument("--out", default=str(ROOT / "out" / "ab"))
    ap.add_argument(
        "--report",
        metavar="JSON",
        help="only print the markdown tables of an earlier run's JSON (--seeds is then ignored)",
    )
    args = ap.parse_args(argv)
    if args.report:
        print(report(json.loads(Path(args.report).read_text())))
        return 0
    after_fn = ss.segment
    before_fn = _segment_at(args.before_rev)
    instruments = [
        n
        for n in ss.INSTRUMENT_NAMES
        if not args.only_2d or n == "generic" or INSTRUMENTS[n].kind == "image"
    ]
    t0 = time.time()
    recs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    done: list[tuple[int, float]] = []
    for seed in args.seeds:
        for sp in args.spacings_um:
            for c in ss.synthetic_cases(
                sp, args.casings, seed, um_x3p=False, instruments=instruments
            ):
                if args.only_2d and c.group["kind"] != "2d":
                    continue
                (after,) = ss.measure([c])
                ss.segment = before_fn
                try:
                    (before,) = ss.measure([c])
                finally:
                    ss.segment = after_fn
                recs["after"].append({**after, "seed": seed})
                recs["before"].append({**before, "seed": seed})
            done.append((seed, sp))
            print(f"seed {seed}, {sp} um: {time.time() - t0:.0f} s", flush=True)
            _write(recs, args, argv, done, time.time() - t0)
    return 0


def _write(
    recs: dict[str, list[dict[str, Any]]],
    args: argparse.Namespace,
    argv: Sequence[str] | None,
    done: list[tuple[int, float]],
    wall: float,
) -> None:
    from _common import machine  # type: ignore[import-not-found]

    k_main = ("kind", "instrument", "unit", "variant")
    k_inst = ("kind", "instrument", "unit", "spacing_um")
    tables = {
        version: {
            "by_style_and_instrument": ss.summarise(r, k_main),
            "by_style_instrument_seed": ss.summarise(r, (*k_main, "seed")),
            "by_instrument_and_spacing": ss.summarise(r, k_inst),
        }
        for version, r in recs.items()
    }
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": str(machine()),
        "command": "python benchmarks/segmentation_styles_ab.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "seeds": args.seeds,
        "casings": args.casings,
        "done_seed_spacing_um": done,
        "before_rev": args.before_rev,
        "only_2d": args.only_2d,
        "wall_seconds": wall,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "segmentation_styles_ab.json").write_text(
        json.dumps({"meta": meta, "tables": tables, "records": recs}, indent=1)
    )


def _cell(b: Any, a: Any) -> str:
    fb, fa = ss._fmt(b), ss._fmt(a)
    return fa if fb == fa else f"{fb} -> {fa}"


def report(res: dict[str, Any]) -> str:
    """Markdown: per style and instrument (all seeds), each metric as "before -> after" where
    they differ; then the rows missing a target, per seed, after the change."""
    keys = ("kind", "instrument", "unit", "variant")
    cols = (
        ("n", "n"),
        ("refused", "refused"),
        ("primer_median_px", "primer med px"),
        ("pin_median_px", "pin med px"),
        ("pin_within_10px", "pin <= 10 px"),
        ("shape", "shape ok"),
        ("pin_false_found", "pin found (absent)"),
        ("meets_targets", "targets"),
    )
    t = res["tables"]
    before = {tuple(r[k] for k in keys): r for r in t["before"]["by_style_and_instrument"]}
    lines = [
        "| kind | instrument | style / variant | " + " | ".join(c[1] for c in cols) + " |",
        "|" + "---|" * (3 + len(cols)),
    ]
    vorder = {v: i for i, v in enumerate(ss.VARIANTS)}
    iorder = {v: i for i, v in enumerate((*ss.INSTRUMENT_NAMES, "render_ring"))}

    def order(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["kind"], iorder.get(r["instrument"], 99), vorder.get(r["variant"], 99))

    for r in sorted(t["after"]["by_style_and_instrument"], key=order):
        b = before[tuple(r[k] for k in keys)]
        cells = [_cell(b[k], r[k]) for k, _ in cols]
        lines.append(
            f"| {r['kind']} | {r['instrument']} | {r['variant']} | " + " | ".join(cells) + " |"
        )
    out = ["Before -> after, all seeds together:", "", *lines, ""]
    for version in ("before", "after"):
        rows = t[version]["by_style_instrument_seed"]
        miss = ss._misses(rows, (*keys, "seed"))
        out += [f"Rows missing a target per seed, {version}:", ""]
        out += miss if miss else ["None."]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
