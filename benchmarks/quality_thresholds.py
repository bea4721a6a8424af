"""The quality record (``ballistics.quality``) on good and deliberately poor scans.

Usage::

    python benchmarks/quality_thresholds.py synth --seed 21 --guns 4   # where thresholds were chosen
    python benchmarks/quality_thresholds.py synth --seed 33 --guns 4   # held out
    python benchmarks/quality_thresholds.py fadul                      # held out, real

Synthetic variants of each gun's shot: ``good``; ``no_contact`` (the same shot with no
breech-face marks transferred); ``noise_0.5um`` / ``noise_1um`` / ``noise_2um`` (white noise
added); ``dropouts_0.5`` / ``dropouts_0.6`` (``fire(dropout_frac=...)``). Prints one line per
scan and writes ``benchmarks/results/quality-<dataset>[-seed].json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import ROOT, fadul_files, machine

KEYS = ("valid_fraction", "texture_rms", "noise_rms", "snr", "contact_coverage")


def synth_variants(seed: int, guns: int) -> list[tuple[str, str, Any]]:
    from ballistics.scan import Scan
    from ballistics.synth import fire, make_firearms

    out = []
    for gi, gun in enumerate(make_firearms(guns, seed=seed)):
        shot = 100 + gi
        good, _ = fire(gun, shot_seed=shot)
        out.append((f"g{gi}", "good", good))
        blank, _ = fire(dataclasses.replace(gun, texture_amplitude_m=0.0), shot_seed=shot)
        out.append((f"g{gi}", "no_contact", blank))
        rng = np.random.default_rng([seed, gi])
        for rms in (0.5e-6, 1e-6, 2e-6):
            d = good.data + rng.normal(0.0, rms, good.shape)
            out.append(
                (
                    f"g{gi}",
                    f"noise_{rms * 1e6:g}um",
                    Scan(d, good.mask, good.spacing_m, "topography"),
                )
            )
        for frac in (0.5, 0.6):
            out.append(
                (f"g{gi}", f"dropouts_{frac}", fire(gun, shot_seed=shot, dropout_frac=frac)[0])
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset", choices=["synth", "fadul"])
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--guns", type=int, default=4)
    args = ap.parse_args()

    from ballistics.io import read_scan
    from ballistics.pipeline import prepare

    if args.dataset == "synth":
        items = synth_variants(args.seed, args.guns)
        name = f"quality-synth-seed{args.seed}"
    else:
        items = [(f.stem, "fadul", f) for f in fadul_files()[0]]
        name = "quality-fadul"
    rows = []
    t0 = time.perf_counter()
    for scan_id, variant, src in items:
        row: dict[str, Any] = {"scan": scan_id, "variant": variant}
        try:
            scan = read_scan(src) if isinstance(src, Path) else src
            q = prepare(scan).quality or {}
            row |= {k: q.get(k) for k in KEYS} | {"reasons": q.get("reasons", [])}
            row["low_confidence"] = bool(q.get("low_confidence"))
        except Exception as exc:  # a refused scan is reported, not hidden
            row["error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
        vals = " ".join(f"{k} {row.get(k)}" for k in KEYS)
        print(
            f"{scan_id:12} {variant:13} low={row.get('low_confidence')} {vals} {row.get('reasons') or row.get('error', '')}"
        )
    out = {
        "command": "python " + " ".join(sys.argv),
        "machine": machine(),
        "elapsed_s": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }
    path = ROOT / "benchmarks" / "results" / f"{name}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
