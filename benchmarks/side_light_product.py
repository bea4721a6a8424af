"""2-D side and ring lights through the product: files, ``ballistics ingest``, ``ballistics
search``.

Usage::

    python benchmarks/side_light_product.py --set report                 # lights detected
    python benchmarks/side_light_product.py --set report --lights metadata

The casings, light models, light azimuths and camera seeds are those of
``benchmarks/side_light.py`` (same set, same seed), but nothing is called directly: each image
is written as a file with its pixel size (``--format tiff``, the default: float32 with NaN
where the topography had scanner dropouts, the very images of side_light.py; ``--format png``:
16-bit PNG as a lab's camera writes it, rendered from the surface with its dropouts filled,
since a PNG cannot mark pixels invalid and a camera has no scanner dropouts), the folder is stored with ``ballistics ingest --manifest`` (``--lights metadata``:
the manifest's ``light`` / ``light_azimuth_deg`` columns carry the true light; default: the
columns are empty and the light is detected), and every casing is searched with
``ballistics search --casing-id ID --json`` (default ``--rerank`` and ``--compare``: with 18
casings every candidate is fully compared). Reported per light model: pair AUC of the scores
the searches return (pair i < j: the score in casing i's search), top-1 / top-10 retrieval,
the flagged pairs (``light_directions_incompatible``, ``light_kinds_differ``) and the pairs
marked ``low_confidence`` for any reason.

Writes ``benchmarks/results/side-light-product-<set>[-metadata].json``; stores go to
``benchmarks/_data/side-light-product/`` (ignored by git).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ballistics import lighting
from ballistics.scan import Scan
from ballistics.synth import fire, make_firearms, png16_with_phys
from benchmarks._common import ROOT, auc, machine, rank_metrics
from benchmarks.side_light import SETS, LightModel
from server.cli import main as cli

RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / "_data" / "side-light-product"


def _png(path: Path, img: Scan) -> None:
    """16-bit PNG with the pixel size; the image must be valid everywhere (a PNG has no
    "invalid": a NaN would become a black pixel that the comparison reads as shading)."""
    if not img.mask.all():
        raise ValueError("a PNG cannot say which pixels are invalid; render a filled surface")
    q = np.round(np.clip(img.data, 0.0, 1.0) * 65535).astype(np.uint16)
    path.write_bytes(png16_with_phys(q, img.spacing_m))


def _tif(path: Path, img: Scan) -> None:
    """float32 TIFF, NaN where the image is invalid, resolution in pixels per centimetre."""
    import tifffile

    ppcm = 0.01 / img.spacing_m[0]
    data = np.where(img.mask, img.data, np.nan).astype(np.float32)
    tifffile.imwrite(path, data, resolution=(ppcm, ppcm), resolutionunit="CENTIMETER")


def _filled(scan: Scan) -> Scan:
    """The topography with its dropouts filled by the nearest valid height and every pixel
    valid: what a camera sees (a 2-D image has no scanner dropouts)."""
    from scipy import ndimage

    idx = ndimage.distance_transform_edt(~scan.mask, return_distances=False, return_indices=True)
    return scan.evolve(
        "fill_dropouts", {}, data=scan.data[tuple(idx)], mask=np.ones(scan.shape, bool)
    )


def _cli_json(argv: list[str]) -> list[dict[str, Any]]:
    """Run ``ballistics ARGV`` in this process; its JSON lines (exit status must be 0)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli(argv)
    if status != 0:
        raise RuntimeError(f"ballistics {' '.join(argv)}: exit status {status}")
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def run_model(
    model: LightModel,
    casings: list[tuple[Scan, Any]],
    seed: int,
    lights: str,
    work: Path,
    fmt: str = "tiff",
) -> dict[str, Any]:
    """Write, ingest and search every casing under one light model."""
    shutil.rmtree(work, ignore_errors=True)
    scans = work / "scans"
    scans.mkdir(parents=True)
    # The azimuths and camera seeds of benchmarks/side_light.py's run_model, in its order.
    rng = np.random.default_rng([seed, 0x11647])
    rows = []
    t0 = time.perf_counter()
    for k, (scan, truth) in enumerate(casings):
        az = float(rng.uniform(0.0, 360.0))
        name = f"{truth.casing_id}.{'tif' if fmt == 'tiff' else 'png'}"
        if fmt == "tiff":  # the very images of benchmarks/side_light.py
            _tif(scans / name, model.render(scan, az, seed * 1000 + k))
        else:
            _png(scans / name, model.render(_filled(scan), az, seed * 1000 + k))
        light, light_az = "", ""
        if lights == "metadata":
            light, light_az = ("", f"{az:.4f}") if model.kind == "side" else ("ring", "")
        rows.append([name, truth.casing_id, truth.firearm_id, light, light_az])
    with open(scans / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "casing_id", "firearm_id", "light", "light_azimuth_deg"])
        w.writerows(rows)
    t_write = time.perf_counter() - t0
    store = work / "store"
    t1 = time.perf_counter()
    (report,) = _cli_json(
        ["ingest", str(scans), "--data-dir", str(store), "--manifest", str(scans / "manifest.csv"), "--json"]
    )  # fmt: skip
    t_ingest = time.perf_counter() - t1
    ids = [r[1] for r in rows]
    labels = [r[2] for r in rows]
    n = len(ids)
    scores = np.full((n, n), -np.inf)
    results: dict[tuple[int, int], dict[str, Any]] = {}
    t2 = time.perf_counter()
    for i, cid in enumerate(ids):
        for c in _cli_json(["search", "--casing-id", cid, "--data-dir", str(store), "--top", str(n), "--json"]):  # fmt: skip
            if c["rank"] is None or c["score"] is None:
                continue
            j = ids.index(c["casing_id"])
            scores[i, j] = c["score"]
            results[(i, j)] = c
    t_search = time.perf_counter() - t2
    pairs = []
    for i in range(n):
        for j in range(i + 1, n):
            c = results.get((i, j))
            pairs.append(
                {
                    "a": ids[i],
                    "b": ids[j],
                    "same_gun": labels[i] == labels[j],
                    "score": None if c is None else c["score"],
                    "flags": [] if c is None else c["flags"],
                    "low_confidence": None if c is None else c["low_confidence"],
                }
            )
    scored = [q for q in pairs if q["score"] is not None]
    light_flagged = [q for q in scored if set(q["flags"]) & set(lighting.LIGHT_FLAGS)]
    low = [q for q in scored if q["low_confidence"]]
    unflagged = [q for q in scored if q not in light_flagged]

    def pair_auc(qs: list[dict[str, Any]]) -> float:
        return round(
            auc([q["score"] for q in qs if q["same_gun"]], [q["score"] for q in qs if not q["same_gun"]]),
            4,
        )  # fmt: skip

    # The light each stored casing got (from its inspect-equivalent: the stored surface).
    from index.store import Store

    st = Store(store)
    try:
        stored = {
            r.casing_id: lighting.light_of(lighting.load_prepared(st.load_surface(r.id) or b""))
            for r in st.list_casings(None)
        }
    finally:
        st.close()
    kinds_ok = sum(
        1 for e in stored.values() if e is not None and e.directional == (model.kind == "side")
    )
    return {
        "model": model.name,
        "kind": model.kind,
        "description": model.description,
        "lights": lights,
        "casings": n,
        "ingest": {k: (len(v) if isinstance(v, list) else v) for k, v in report.items()},
        "pairs": len(pairs),
        "pairs_scored": len(scored),
        "match_pairs": sum(q["same_gun"] for q in pairs),
        "auc": pair_auc(scored),
        "auc_unflagged": pair_auc(unflagged),
        "light_flagged": len(light_flagged),
        "light_flagged_match": sum(q["same_gun"] for q in light_flagged),
        "low_confidence": len(low),
        "low_confidence_match": sum(q["same_gun"] for q in low),
        "matches_below_0.6_not_low_confidence": sum(
            q["same_gun"] and q["score"] < lighting.DECISIVE_SCORE and not q["low_confidence"]
            for q in scored
        ),
        "retrieval": rank_metrics(scores, labels, top=10),
        "light_kind_right": kinds_ok,
        "stored_lights": {k: None if e is None else e.as_dict() for k, e in stored.items()},
        "seconds": {
            "write": round(t_write, 1),
            "ingest": round(t_ingest, 1),
            "search_all": round(t_search, 1),
            "search_median": round(t_search / n, 2),
        },
        "pair_scores": pairs,
    }


def screen_ranks(store_dir: Path) -> dict[str, Any]:
    """Where the search's screen (stage 2: rotation-aligned spectra of the flattened images)
    ranks each query's same-gun casings among all others, from a store this script built:
    what a ``--compare K`` below the store size would keep. No comparison is run."""
    from index.engine import BallisticsEngine
    from index.search import SCREEN_KEY
    from index.store import Store

    eng = BallisticsEngine()
    version = str(eng.extractor_version)
    st = Store(store_dir)
    try:
        recs = st.list_casings(None)
        ids = [r.id for r in recs]
        sigs = st.vectors_of(ids, SCREEN_KEY, version)
        gun = {r.id: st.metadata_of(r.id).get("firearm_id") for r in recs}
    finally:
        st.close()
    ranks = []
    for q in ids:
        others = [i for i in ids if i != q]
        scores = eng.screen(sigs[q], np.stack([sigs[i] for i in others]))
        order = [others[k] for k in np.argsort(-scores, kind="stable")]
        ranks += [order.index(i) + 1 for i in others if gun[i] == gun[q]]
    r = np.asarray(ranks)
    return {
        "same_gun_pairs_ranked": int(r.size),
        "rank_median": float(np.median(r)),
        "rank_max": int(r.max()),
        "kept_at": {str(k): round(float(np.mean(r <= k)), 4) for k in (2, 5, 10)},
        "of_candidates": len(ids) - 1,
    }


PRODUCT_SUMMARY = """\
## Through the product (`benchmarks/side_light_product.py`)

Written by hand from the tables below (held-back set `report` only, the two side-light models;
each image written as a file, stored with `ballistics ingest --manifest`, every casing searched
with `ballistics search --casing-id ID --json`; the pair score is the one the search returns).

- **The product path reproduces the library.** With the very images of `side_light.py`
  (`--format tiff`, NaN where the scanner had dropouts): pair AUC **0.970** (`side-gloss-25`)
  and **0.994** (`side-dim-40`); `side_light.py` re-run with today's code (set
  `report-rerun` below): 0.970 and 0.994, pair scores within 0.006 (median). As 16-bit PNGs
  rendered from the filled surface (`--format png`, what a camera writes): 0.961 and 0.993.
  Lights given in the manifest (`--lights metadata`): 0.967 and 0.994. Top-1 retrieval
  0.94-1.00, top-10 1.00 everywhere.
- **What the light-aware path buys since the multi-hypothesis registration.** The AUC of the
  *plain* comparison rose from 0.723 / 0.743 (the table of set `report`, measured before that
  merge) to 0.989 / 0.961 (set `report-rerun`): non-matches now score below 0.07, so
  even weak same-gun scores rank above them. But those scores stay weak: plain, 15 of 18
  same-gun pairs score below 0.6 on both models (median 0.19-0.20); light-aware, 7 and 4
  (median 1.04 and 1.21), which is what an examiner reads and what the non-match frequency is
  computed from. Against that, the light-aware AUC on `side-gloss-25` (0.970) is below the
  plain one (0.989): its lowest same-gun pairs involve the image detected as ring-lit
  (`light_kinds_differ`) and pairs whose pseudo-heights register poorly.
- **Flags.** Detected lights: 32 pairs flagged on `side-gloss-25` (3 same-gun; 17 of them
  `light_kinds_differ` from the one image detected as ring-lit), 16 on `side-dim-40` (1
  same-gun; as PNGs one of its images is detected as ring-lit too: 32). Every flagged pair
  is `low_confidence`. Three same-gun pairs per model score
  below 0.6 with `low_confidence` false: a low score that still reads as evidence.
  `low_confidence` is set on 90-109 of 153 pairs, mostly `weak_registration` on
  different-gun pairs (a known gap of that flag).
- **The screen does not know the light.** Stage 2 of the search (rotation-aligned spectra of
  the flattened image) ranks a query's same-gun casings in its top 5 of 17 for 64-75 % of
  them and in its top 10 for 83-89 %: with 18 casings every candidate is compared (default
  `--compare 20`), but in a large store, where the screen keeps 20 of 200, side-lit matches
  would be lost before the comparison. Use `--compare 0` for side-lit queries until the
  screen accounts for the light.
- **Speed.** A side-lit search compares pseudo-heights over the full circle: 6-12 s per
  search of 17 candidates on this shared 2-core VM (about 0.7 s of wall time per candidate).
- A first PNG run wrote the scanner's dropouts as black pixels (the file format has no
  "invalid"): AUC 0.815 on `side-gloss-25`, the black blobs dominating the flattened images
  (`results/side-light-product-report-png-with-black-dropouts.json`, made by an earlier
  version of this script). A lab's camera has no such dropouts; a 2-D file with holes should
  mark them (alpha channel or float NaN).
"""


def markdown() -> str:
    """The section of RESULTS-side-light.md on the product runs (one table per stored run)."""
    parts = [PRODUCT_SUMMARY]
    for name in ("report", "report-png", "report-metadata", "report-metadata-png"):
        path = RESULTS / f"side-light-product-{name}.json"
        if not path.exists():
            continue
        d = json.loads(path.read_text())
        m = d["machine"]
        parts += [
            f"### Run `{name}`: seed {d['seed']}, {d['guns']} guns x {d['shots']} shots",
            "",
            f"Command: `{d['command']}`; machine: {m['cpu']}, {m['cores']} cores, Python "
            f"{m['python']}; {d['seconds_total']} s in all (shared with other jobs).",
            "",
        ]
        rows = []
        for r in d["models"]:
            ret = r["retrieval"]
            same = sorted(
                q["score"] for q in r["pair_scores"] if q["same_gun"] and q["score"] is not None
            )
            diff = [
                q["score"] for q in r["pair_scores"] if not q["same_gun"] and q["score"] is not None
            ]
            scr = r.get("screen", {}).get("kept_at", {})
            rows.append(
                [
                    f"`{r['model']}`",
                    r.get("format", "png"),
                    r["lights"],
                    f"{r['pairs_scored']}/{r['pairs']} ({r['match_pairs']})",
                    f"**{r['auc']}**",
                    f"{same[len(same) // 2]:.2f} / {sum(x < lighting.DECISIVE_SCORE for x in same)}",
                    f"{max(diff):.3f}",
                    f"{r['light_flagged']} ({r['light_flagged_match']})",
                    r["auc_unflagged"],
                    f"{r['low_confidence']} ({r['low_confidence_match']})",
                    r["matches_below_0.6_not_low_confidence"],
                    f"{ret['top1_rate']} / {ret['top10_rate']}",
                    f"{r['light_kind_right']}/{r['casings']}",
                    r["seconds"]["search_median"],
                    f"{scr.get('5', '-')} / {scr.get('10', '-')}",
                ]
            )
        head = [
            "light model",
            "files",
            "lights",
            "pairs scored (same gun)",
            "pair AUC",
            "same-gun median / below 0.6",
            "highest non-match",
            "light-flagged (same gun)",
            "AUC unflagged",
            "low_confidence (same gun)",
            "same-gun < 0.6 not low_confidence",
            "top-1 / top-10",
            "light kind right",
            "s per search",
            "screen keeps same gun in top 5 / 10 of 17",
        ]
        parts += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        parts += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        parts.append("")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", choices=sorted(SETS), required=True)
    ap.add_argument("--lights", choices=("detected", "metadata"), default="detected")
    ap.add_argument("--models", help="comma-separated subset of the set's model names")
    ap.add_argument(
        "--screen-only",
        action="store_true",
        help="add the screen's same-gun ranks (screen_ranks) to a stored run, from its stores",
    )
    ap.add_argument(
        "--format",
        choices=("tiff", "png"),
        default="tiff",
        help="tiff: float32 with NaN where the scan had dropouts (the images of side_light.py);"
        " png: 16-bit, rendered from the surface with its dropouts filled",
    )
    args = ap.parse_args(argv)
    cfg = SETS[args.set]
    seed = cfg["seed"]
    models = [m for m in cfg["models"] if not args.models or m.name in args.models.split(",")]
    casings = [
        fire(g, shot_seed=seed * 100 + k)
        for g in make_firearms(cfg["guns"], seed=seed)
        for k in range(cfg["shots"])
    ]
    suffix = ("" if args.lights == "detected" else "-metadata") + (
        "" if args.format == "tiff" else "-png"
    )
    path = RESULTS / f"side-light-product-{args.set}{suffix}.json"
    if args.screen_only:
        data = json.loads(path.read_text())
        for r in data["models"]:
            r["screen"] = screen_ranks(WORK / f"{args.set}{suffix}" / r["model"] / "store")
            print(r["model"], r["screen"], flush=True)
        data["screen_command"] = "python benchmarks/side_light_product.py " + " ".join(
            argv or sys.argv[1:]
        )
        path.write_text(json.dumps(data, indent=1))
        return 0
    out: dict[str, Any] = {
        "command": "python benchmarks/side_light_product.py " + " ".join(argv or sys.argv[1:]),
        "set": args.set,
        "seed": seed,
        "guns": cfg["guns"],
        "shots": cfg["shots"],
        "machine": machine(),
        "models": [],
    }
    t0 = time.perf_counter()
    for m in models:
        res = run_model(
            m, casings, seed, args.lights, WORK / f"{args.set}{suffix}" / m.name, args.format
        )
        res["format"] = args.format
        print(
            f"{m.name}: AUC {res['auc']} unflagged {res['auc_unflagged']} light-flagged "
            f"{res['light_flagged']} ({res['light_flagged_match']} same-gun) low-confidence "
            f"{res['low_confidence']} top1 {res['retrieval']['top1_rate']} top10 "
            f"{res['retrieval']['top10_rate']} kinds {res['light_kind_right']}/{res['casings']} "
            f"{res['seconds']}",
            flush=True,
        )
        out["models"].append(res)
        out["seconds_total"] = round(time.perf_counter() - t0, 1)
        RESULTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1))
    print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
