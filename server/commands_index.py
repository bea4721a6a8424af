"""CLI handlers for the embedded store: ``ballistics ingest`` and ``ballistics search``.

Exit status: 0 ok, 2 bad input (one line on stderr), 1 internal failure.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from index.errors import CatalogLockedError, NotFoundError
from index.ingest import read_manifest
from index.store import Filters

from .output import candidate_from_local

if TYPE_CHECKING:
    from index.engine import Engine


def _fail(msg: str, code: int = 2) -> int:
    print(f"ballistics: {msg}", file=sys.stderr)
    return code


def _engine() -> Engine | None:
    """The pipeline engine (None: the catalog's default, the real pipeline);
    ``BALLISTICS_INDEX_ENGINE=module:Class`` swaps it (tests)."""
    spec = os.environ.get("BALLISTICS_INDEX_ENGINE")
    if not spec:
        return None
    mod, cls = spec.split(":")
    return getattr(importlib.import_module(mod), cls)()


def cmd_ingest(args: argparse.Namespace) -> int:
    """``ballistics ingest``: 0 when something was stored (or already was), 2 bad input or
    nothing usable, 130 on Ctrl-C (what was stored stays; a re-run resumes)."""
    from index.ingest import SCAN_SUFFIXES, IngestInterrupted, expand_paths, ingest_paths
    from index.service import Catalog

    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        return _fail(f"no such file or folder: {missing[0]}")
    empty = [p for p in args.paths if Path(p).is_dir() and not expand_paths([p])]
    if empty:
        return _fail(
            f"{empty[0]}: no scan files in this folder (looked for"
            f" {', '.join(sorted(SCAN_SUFFIXES))}, also in sub-folders)"
        )
    if args.manifest and not Path(args.manifest).is_file():
        return _fail(f"no such manifest: {args.manifest}")
    um = getattr(args, "spacing_um", None)
    if um is not None and not (math.isfinite(um) and um > 0):
        return _fail(f"--spacing-um must be a positive number of micrometres; got {um}")
    from ballistics.light import LightRequest

    try:
        light = LightRequest.from_options(args.light, args.light_azimuth_deg)
    except ValueError as e:
        return _fail(str(e))
    try:
        manifest = read_manifest(args.manifest) if args.manifest else None
        with Catalog.open(args.data_dir, store_config(args), engine=_engine()) as cat:
            rep = ingest_paths(
                cat,
                args.paths,
                manifest=manifest,
                agency=args.agency,
                caliber=args.caliber,
                spacing_um=um,
                progress=not getattr(args, "json", False),
                length_unit=getattr(args, "length_unit", None) or "m",
                light=light,
            )
    except CatalogLockedError as e:
        return _fail(str(e))
    except IngestInterrupted as e:
        r = e.report
        print(
            f"\nballistics: interrupted: {len(r.added)} casings stored in this run"
            f" ({len(r.existing)} already stored, {r.skipped_done} done before, {len(r.failed)}"
            f" failed); everything stored stays. Run the same command again to resume: done"
            " files are skipped without being read.",
            file=sys.stderr,
        )
        return 130
    except (ValueError, OSError, UnicodeDecodeError) as e:  # bad manifest
        return _fail(str(e).splitlines()[0])
    if getattr(args, "json", False):
        print(json.dumps(rep.as_dict()))
    else:
        print(
            f"added {len(rep.added)}, already stored {len(rep.existing)}, "
            f"skipped (done before) {rep.skipped_done}, failed {len(rep.failed)}"
        )
    return 0 if not rep.failed or rep.added or rep.existing or rep.skipped_done else 2


def store_config(args: argparse.Namespace) -> dict[str, str]:
    """The ``--store`` / ``--files`` options as :class:`index.service.CatalogConfig` fields
    (empty: the default, SQLite in the data dir or ``BALLISTICS_STORE``)."""
    out = {}
    if getattr(args, "store", None):
        out["store"] = str(args.store)
    if getattr(args, "files", None):
        out["files_dir"] = str(args.files)
    return out


def _reextract_if_needed(data_dir: str, store_kw: dict[str, str] | None = None) -> bool:
    """A store written by an older descriptor version is re-described once, before a read-only
    search would find no current descriptors; False (with a message) when that cannot be done."""
    from index.engine import BallisticsEngine
    from index.service import Catalog, CatalogConfig
    from index.store import open_store

    kw = store_kw or {}
    # The store alone answers this; opening a Catalog would load every index snapshot twice.
    version = str((_engine() or BallisticsEngine()).extractor_version)
    store = open_store(data_dir, kw.get("store"), files_dir=kw.get("files_dir"))
    try:
        missing = len(store.casings_missing_version(version))
    finally:
        store.close()
    if not missing:
        return True
    print(
        f"re-describing {missing} stored casings for descriptor version {version} (once)...",
        file=sys.stderr,
    )
    try:
        with Catalog.open(
            data_dir, CatalogConfig.from_mapping(kw), engine=_engine()
        ):  # re-extracts
            return True
    except CatalogLockedError:
        _fail(
            f"{missing} casings in {data_dir} were described by an older extractor and the store "
            "is held by another process (a running server re-describes them at its start-up); "
            "stop it and search again"
        )
        return False


def cmd_search(args: argparse.Namespace) -> int:
    from index.service import Catalog, CatalogConfig

    if not args.data_dir:
        return _fail("search needs --data-dir (or --server for a remote search)")
    if args.top <= 0 or (args.rerank is not None and args.rerank <= 0):
        return _fail("--top and --rerank must be positive")
    if args.compare is not None and args.compare < 0:
        return _fail("--compare must be >= 0 (0: compare every candidate)")
    if args.rescue is not None and args.rescue < 0:
        return _fail("--rescue must be >= 0 (0: no rescue; e.g. 150)")
    if not args.file and (getattr(args, "length_unit", None) or "m") != "m":
        return _fail("--length-unit applies to --file; a stored casing was read when ingested")
    from ballistics.light import LightRequest

    try:
        light = LightRequest.from_options(args.light, args.light_azimuth_deg)
    except ValueError as e:
        return _fail(str(e))
    if not args.file and not light.is_auto:
        return _fail("--light applies to --file; a stored casing's light was recorded at ingest")
    from index.store import open_store, store_exists

    skw = store_config(args)
    if not store_exists(args.data_dir, skw.get("store")):
        return _fail(f"no store in {args.data_dir} (run 'ballistics ingest' first)")
    store = open_store(args.data_dir, skw.get("store"), files_dir=skw.get("files_dir"))
    try:
        n_live = store.count_live()
    finally:
        store.close()
    if n_live == 0:
        return _fail(
            f"the store in {args.data_dir} holds no casings, so there is nothing to search"
            " (add some with 'ballistics ingest')"
        )
    query: str | bytes
    if args.file:
        try:
            query = Path(args.file).read_bytes()
        except OSError as e:
            return _fail(f"cannot read {args.file}: {e.strerror or e}")
    else:
        query = args.casing_id
    try:
        if not _reextract_if_needed(args.data_dir, skw):
            return 2
        cfg = CatalogConfig.from_mapping({"read_only": True, **skw})
        with Catalog.open(args.data_dir, cfg, engine=_engine()) as cat:
            res = cat.search(
                query,
                top=args.top,
                rerank_k=args.rerank,
                compare_k=args.compare,
                rescue_head=args.rescue,
                filters=Filters(caliber=args.caliber) if args.caliber else None,
                length_unit=getattr(args, "length_unit", None) or "m",
                light=light,
            )
            # what background correlation found for a stored casing, compared or not here
            lead_ids = (
                []
                if args.file
                else [
                    ld.casing_b if ld.casing_a == args.casing_id else ld.casing_a
                    for ld in cat.store.list_leads(casing=args.casing_id)
                ]
            )
    except NotFoundError as e:
        return _fail(str(e).strip("'\""))
    except ValueError as e:
        return _fail(str(e).splitlines()[0] if str(e) else "bad input")
    if args.json:  # one object per candidate per line, the keys of a remote search
        for c in [*res.combined, *res.identical]:
            print(json.dumps(candidate_from_local(c)))
        if not res.combined:
            print("ballistics: no candidates (none passed the filters)", file=sys.stderr)
        if res.partial:
            print("ballistics: partial: deadline reached before every candidate", file=sys.stderr)
        return 0
    if not res.combined:
        print("no candidates (none passed the filters)")
    if res.query_quality and res.query_quality.get("low_confidence"):
        print("query scan LOW-CONFIDENCE: " + "; ".join(res.query_quality.get("reasons") or []))
    if res.partial:
        print("(partial: deadline reached before every candidate was re-scored)")
    print(
        f"{'rank':>4}  {'casing_id':<20} {'score':>8} {'screen':>7} {'coarse':>7} {'cmc':>5}  "
        "incident"
    )
    for c in res.combined:
        score = "-" if c.score is None else f"{c.score:.4f}"
        screen = "-" if c.screen_score is None else f"{c.screen_score:.4f}"
        cmc = "-" if c.cmc is None else f"{c.cmc:g}"
        print(
            f"{c.rank:>4}  {c.casing_id:<20} {score:>8} {screen:>7} {c.coarse_score:7.4f} "
            f"{cmc:>5}  {c.incident or ''}"
        )
        if c.low_confidence:  # a low score on a poor scan is not "different gun"
            print(f"      LOW-CONFIDENCE: {'; '.join(c.low_confidence_reasons)}")
    for c in res.identical:
        print(
            f"same file: casing {c.casing_id} ({c.agency}, incident {c.incident or '-'}) holds"
            " the query's very file (same SHA-256); not ranked"
        )
    if lead_ids:
        shown = {c.casing_id for c in res.combined}
        apart = [c for c in lead_ids if c not in shown]
        print(
            f"background correlation: {len(lead_ids)} lead(s) for this casing"
            + (f", {len(apart)} not in the list above ({', '.join(apart[:5])})" if apart else "")
            + f"; ballistics leads --casing-id {args.casing_id}"
        )
    if res.n_rescued:
        print(
            f"({res.n_rescued} candidate(s) set aside by the screen were compared too: the"
            " rescue's coarse sweep ranked them best)"
        )
    if res.n_screened_out:
        print(
            f"({res.n_screened_out} of {res.n_candidates} candidates screened out before the "
            "full comparison; --compare 0 compares all)"
        )
    return 0
