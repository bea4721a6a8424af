"""Search stages 1-2 (descriptor search + screen) on a synthetic 100k-casing catalog.

What this measures: everything ``Catalog.search`` does on an N-casing store *except* the full
registration comparisons (stage 3). A real 100k store (~1.2 MB of stored surface per casing,
~125 GB; hours of scan preparation) cannot be built here, so the store holds no surfaces and
its descriptors and screening signatures are synthetic:

* ``breech_face`` descriptors (dim ``DESCRIPTOR_DIMS["breech_face"]`` = 144): a seeded
  Gaussian mixture, L2-normalised, with the parameters of ``benchmarks/search_core.py``
  (2,000 centres; clustered like real descriptors, not uniform);
* screening signatures under ``index.search.SCREEN_KEY``: seeded *random* (32, 128) float32
  arrays, zero-mean per row and unit L2 norm (the shape, dtype and normalisation of
  ``ballistics.screen.signature``; the values are noise, not spectra of scans). Their cost to
  load and score does not depend on their values;
* metadata: 10 agencies and 7 calibres with unequal shares, dates, firing-pin shapes;
  no incidents, no originals (``sha256`` of a synthetic name), no surfaces.

Build (once, cached in ``benchmarks/_data/stages-100k/n<N>-seed<S>``): rows go in through the
Store's own SQL schema (the statements of ``Store.add_casing``) in transactions of 5,000 rows,
because one ``add_casing`` per casing with ``synchronous=FULL`` fsyncs every commit (the rate
of 200 real ``add_casing`` calls is measured and reported). Then ``Catalog.open`` builds the
FAISS index from the store (the rule's structure: ``IDMap2,Flat`` at 100k rows since 2026-12-05,
``IDMap2,HNSW32,Flat`` when RESULTS-search-stages-100k.md was measured) and snapshots it, and
``Catalog.check()`` verifies that store and index hold the same ids. The build runs FAISS on one
thread; run it under ``nice`` (``--build-only``) on a shared machine.

Timing (``--queries`` stored casings, seeded choice), per filter setting (none; agencies ~30 %;
calibre 9 mm ~46 %; calibre .38 Special ~5 %; agencies ~30 % and 9 mm), two ways per query:

1. the stage functions of ``index.search`` that ``Searcher.search`` chains, called one by one
   and timed: ``query`` (``Catalog.make_query`` of a casing id:
   record, descriptors, surface lookup), ``filter_ids`` (SQL for the filter), ``faiss``
   (``FaissIndex.search`` top ``rerank_k`` + 1), ``records`` (``Store.get_many`` of the
   candidates), ``signatures`` (``Store.vectors_of`` under ``SCREEN_KEY``) and ``screen``
   (``BallisticsEngine.screen`` and the keep-best-``compare_k`` cut);
2. ``Catalog.search`` itself (real engine), wall time. Stage 3 is dispatched for the
   ``compare_k`` kept candidates but each finds no stored surface and raises ``LookupError``
   (counted in ``n_errors``): so this total is stages 1-2 plus the stage-3 bookkeeping,
   without any comparison. The replayed top 10 (by screen score) must equal
   ``Catalog.search``'s; the script checks it.

Modes: ``warm`` (the whole SQLite file read into the page cache first) and ``cold`` (before
every timed call the store file is dropped from the page cache with
``posix_fadvise(POSIX_FADV_DONTNEED)`` - per file, no root, other processes' cache untouched -
and SQLite's connection cache is shrunk; the FAISS index stays in process memory, as in a
running server). Residency before / after eviction is checked with ``mincore``.

Usage::

    nice -n 19 .venv/bin/python benchmarks/search_stages_100k.py --build-only
    .venv/bin/python benchmarks/search_stages_100k.py --casings 100000 --queries 50

Writes ``benchmarks/results/search-stages-100k.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import ROOT, machine

DATA = ROOT / "benchmarks" / "_data" / "stages-100k"
E2E = ROOT / "benchmarks" / "results" / "search-e2e.json"
BATCH = 5000
CLUSTERS = 2000
SPREAD = 0.06  # as search_core.py: per-coordinate sd = SPREAD / sqrt(dim) * 4

AGENCIES = {  # share of casings
    "agency-01": 0.20,
    "agency-02": 0.15,
    "agency-03": 0.12,
    "agency-04": 0.11,
    "agency-05": 0.10,
    "agency-06": 0.09,
    "agency-07": 0.08,
    "agency-08": 0.06,
    "agency-09": 0.05,
    "agency-10": 0.04,
}
AGENCY_SUBSET = frozenset({"agency-02", "agency-05", "agency-09"})  # 15 + 10 + 5 = 30 %
CALIBRES = {
    "9mm Luger": 0.46,
    ".40 S&W": 0.17,
    ".45 ACP": 0.12,
    ".380 ACP": 0.10,
    ".22 LR": 0.07,
    ".38 Special": 0.05,
    "10mm Auto": 0.03,
}
STAGES = ("query", "filter_ids", "faiss", "records", "signatures", "screen")


def mixture(
    n: int, dim: int, centres: np.ndarray, spread: float, rng: np.random.Generator
) -> np.ndarray:
    """As ``benchmarks/search_core.py``: centre + Gaussian noise, L2-normalised."""
    lab = rng.integers(0, len(centres), n)
    x = centres[lab] + np.float32(spread) * rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32, copy=False)  # NumPy 2: a float64 scalar would promote


def random_signatures(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 32, 128) float32 noise, zero-mean per row, unit L2 norm: the *form* of
    ``ballistics.screen.signature``, not its content."""
    from ballistics.screen import SIGNATURE_SHAPE

    s = rng.standard_normal((n, *SIGNATURE_SHAPE), dtype=np.float32)
    s -= s.mean(axis=2, keepdims=True)
    s /= np.linalg.norm(s.reshape(n, -1), axis=1)[:, None, None]
    return s


def data_dir(n: int, seed: int) -> Path:
    return DATA / f"n{n}-seed{seed}"


# -- page cache ------------------------------------------------------------------------------


def store_files(d: Path) -> list[Path]:
    return [p for p in (d / "store.sqlite", d / "store.sqlite-wal") if p.exists()]


def evict(paths: list[Path]) -> None:
    """Drop these files' clean pages from the page cache (per file; needs no privileges)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident_fraction(path: Path) -> float | None:
    """Share of the file's pages in the page cache (mmap + mincore), None if unavailable."""
    size = path.stat().st_size
    if size == 0:
        return 1.0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    page = os.sysconf("SC_PAGE_SIZE")
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
        if addr is None or addr == ctypes.c_void_p(-1).value:
            return None
        try:
            vec = (ctypes.c_ubyte * ((size + page - 1) // page))()
            if libc.mincore(addr, size, vec) != 0:
                return None
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)
    return round(float((np.frombuffer(vec, dtype=np.uint8) & 1).mean()), 4)


def read_through(paths: list[Path]) -> tuple[int, float]:
    """Read whole files (fills the page cache); returns (bytes, seconds)."""
    n = 0
    t = time.perf_counter()
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while chunk := f.read(16 << 20):
                n += len(chunk)
    return n, time.perf_counter() - t


# -- build -----------------------------------------------------------------------------------


def probe_add_casing(d: Path, n: int, version: str, seed: int) -> dict[str, Any]:
    """Time ``Store.add_casing`` (synchronous=FULL, one commit each) for ``n`` casings."""
    from ballistics.descriptors import DESCRIPTOR_DIMS
    from index.search import SCREEN_KEY
    from index.store import Store

    shutil.rmtree(d, ignore_errors=True)
    rng = np.random.default_rng([seed, 9])
    dim = DESCRIPTOR_DIMS["breech_face"]
    bf = rng.standard_normal((n, dim), dtype=np.float32)
    bf /= np.linalg.norm(bf, axis=1, keepdims=True)
    sig = random_signatures(n, rng)
    st = Store(d)
    try:
        t = time.perf_counter()
        for i in range(n):
            st.add_casing(
                original=None,
                sha256=hashlib.sha256(f"probe:{i}".encode()).hexdigest(),
                agency="agency-01",
                descriptors={"breech_face": bf[i], SCREEN_KEY: sig[i].ravel()},
                extractor_version=version,
                caliber="9mm Luger",
            )
        s = time.perf_counter() - t
    finally:
        st.close()
        shutil.rmtree(d, ignore_errors=True)
    return {
        "casings": n,
        "seconds": round(s, 2),
        "per_casing_ms": round(1e3 * s / n, 2),
        "projected_s_for_100k": round(s / n * 100_000),
    }


def build(d: Path, n: int, seed: int, probe: int) -> dict[str, Any]:
    """Build (or reuse) the synthetic catalog; returns the build record (BUILD.json)."""
    import faiss

    from ballistics.descriptors import DESCRIPTOR_DIMS
    from index.engine import BallisticsEngine
    from index.search import SCREEN_KEY
    from index.service import Catalog
    from index.store import Store

    marker = d / "BUILD.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("casings") == n and info.get("seed") == seed and info.get("check"):
            return dict(info)
    shutil.rmtree(d, ignore_errors=True)  # a partial build
    version = BallisticsEngine().extractor_version
    dim = int(DESCRIPTOR_DIMS["breech_face"])
    info: dict[str, Any] = {
        "casings": n,
        "seed": seed,
        "extractor_version": version,
        "dim": dim,
        "clusters": CLUSTERS,
        "spread": SPREAD,
        "agencies": AGENCIES,
        "calibres": CALIBRES,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if probe:
        info["add_casing_probe"] = probe_add_casing(
            d.parent / "probe-add-casing", probe, version, seed
        )
        print("add_casing probe:", info["add_casing_probe"], flush=True)

    Store(d).close()  # the schema, exactly as the store creates it
    con = sqlite3.connect(d / "store.sqlite", isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")  # build only; the store itself runs FULL
    con.execute("PRAGMA foreign_keys=ON")
    centres = np.random.default_rng([seed, 0]).standard_normal(
        (CLUSTERS, dim), dtype=np.float32
    ) / np.float32(np.sqrt(dim))
    spread = SPREAD / np.sqrt(dim) * 4
    ag_names, ag_p = list(AGENCIES), np.array(list(AGENCIES.values()))
    cal_names, cal_p = list(CALIBRES), np.array(list(CALIBRES.values()))
    day0 = dt.date(2015, 1, 1).toordinal()
    con.executemany(
        "INSERT OR IGNORE INTO agencies(id, name) VALUES (?, ?)", [(a, a) for a in ag_names]
    )
    t_ins = time.perf_counter()
    gen_s = 0.0
    for b, s in enumerate(range(0, n, BATCH)):
        m = min(BATCH, n - s)
        t = time.perf_counter()
        rng = np.random.default_rng([seed, 1, b])
        bf = mixture(m, dim, centres, spread, rng)
        sig = random_signatures(m, rng).reshape(m, -1)
        assert bf.dtype == np.float32 and bf.shape == (m, dim), (bf.dtype, bf.shape)
        assert sig.dtype == np.float32 and sig.shape == (m, 4096), (sig.dtype, sig.shape)
        ag = rng.choice(len(ag_names), m, p=ag_p / ag_p.sum())
        cal = rng.choice(len(cal_names), m, p=cal_p / cal_p.sum())
        days = rng.integers(0, 3650, m)
        elong = rng.random(m) < 0.15
        gen_s += time.perf_counter() - t
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        ids = range(s + 1, s + m + 1)
        casings = [
            (
                i,
                hashlib.sha256(f"casing:{seed}:{i}".encode()).hexdigest()[:16],
                f"EX-{i:06d}",
                None,
                cal_names[cal[j]],
                "elongated" if elong[j] else "round",
                dt.date.fromordinal(day0 + int(days[j])).isoformat(),
                ag_names[ag[j]],
                hashlib.sha256(f"synthetic-original:{seed}:{i}".encode()).hexdigest(),
                f"casing-{i:06d}.x3p",
                "x3p",
                6.25e-6,
                now,
            )
            for j, i in enumerate(ids)
        ]
        con.execute("BEGIN IMMEDIATE")
        con.executemany(
            "INSERT INTO casings(id, casing_id, exhibit_id, incident, caliber, firing_pin_shape,"
            " acquisition_date, agency, sha256, filename, format, spacing_m, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            casings,
        )
        # per casing in add_casing's order: breech_face, then the signature
        con.executemany(
            "INSERT INTO descriptors(casing, region, extractor_version, dim, vector) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                row
                for j, i in enumerate(ids)
                for row in (
                    (i, "breech_face", version, dim, bf[j].tobytes()),
                    (i, SCREEN_KEY, version, sig.shape[1], sig[j].tobytes()),
                )
            ),
        )
        con.executemany(
            "INSERT INTO changes(kind, casing, time) VALUES ('add', ?, ?)",
            [(i, now) for i in ids],
        )
        con.execute("COMMIT")
        print(f"\rinsert {s + m}/{n}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    info["insert"] = {
        "method": f"executemany through the Store's schema, {BATCH} casings per transaction, "
        "synchronous=NORMAL",
        "seconds": round(time.perf_counter() - t_ins, 1),
        "of_which_generation_s": round(gen_s, 1),
    }
    print("inserted:", info["insert"], flush=True)

    faiss.omp_set_num_threads(1)  # shared machine: the index build on one core
    t = time.perf_counter()
    with Catalog.open(d, engine=BallisticsEngine()) as cat:
        info["first_open_s"] = round(time.perf_counter() - t, 1)
        info["repairs_first_open"] = dict(cat.repairs)
        t = time.perf_counter()
        info["check"] = bool(cat.check())
        info["check_s"] = round(time.perf_counter() - t, 2)
        info["stats"] = cat.stats()
    print("first open (index build):", info["first_open_s"], "s; check", info["check"], flush=True)
    t = time.perf_counter()
    with Catalog.open(d, engine=BallisticsEngine()) as cat:
        info["reopen_s"] = round(time.perf_counter() - t, 2)
        info["repairs_reopen"] = dict(cat.repairs)
        info["check"] = info["check"] and bool(cat.check())
    info["files"] = {
        p.relative_to(d).as_posix(): p.stat().st_size
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.name != "LOCK"
    }
    info["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if not info["check"]:
        raise SystemExit(f"Catalog.check() failed after the build: {info}")
    marker.write_text(json.dumps(info, indent=1))
    return info


# -- timing ----------------------------------------------------------------------------------


def settings() -> dict[str, Any]:
    from index.store import Filters

    return {
        "none": None,
        "agencies_30pct": Filters(agencies=AGENCY_SUBSET),
        "calibre_9mm": Filters(caliber="9mm Luger"),
        "calibre_38spl": Filters(caliber=".38 Special"),
        "agencies_30pct+calibre_9mm": Filters(agencies=AGENCY_SUBSET, caliber="9mm Luger"),
    }


def replay(cat: Any, casing_id: str, filters: Any, rerank_k: int, keep: int, top: int) -> dict:
    """Stages 1-2 of ``Searcher.search``: its stage functions called one by one (as
    ``Catalog.search`` sets them up), each timed."""
    from index.search import (
        SCREEN_KEY,
        Screen,
        allowed_ids,
        coarse_candidates,
        live_candidates,
        screen_candidates,
    )

    store = cat.store
    ms: dict[str, float] = {}
    t = time.perf_counter()
    q = cat.make_query(casing_id)
    ms["query"] = time.perf_counter() - t

    t = time.perf_counter()
    allowed = allowed_ids(store, filters, q.rowid)
    ms["filter_ids"] = time.perf_counter() - t

    t = time.perf_counter()
    coarse = coarse_candidates(cat.indexes, q, allowed, rerank_k)
    ms["faiss"] = time.perf_counter() - t

    t = time.perf_counter()
    live = live_candidates(store, coarse, q.sha256)
    ms["records"] = time.perf_counter() - t

    sigs: dict[int, Any] = {}
    ms["signatures"] = 0.0

    def load_signatures(ids: list[int]) -> dict[int, Any]:  # timed apart from the scoring
        t_sig = time.perf_counter()
        sigs.update(store.vectors_of(ids, SCREEN_KEY, cat.extractor_version))
        ms["signatures"] = time.perf_counter() - t_sig
        return sigs

    t = time.perf_counter()
    screen = Screen(cat.engine.screen, load_signatures, keep)
    screened, kept = screen_candidates(screen, q, live.order, coarse.best)
    ms["screen"] = time.perf_counter() - t - ms["signatures"]

    ranking = sorted(live.order, key=lambda i: (-screened[i], -coarse.best[i]))[:top]
    return {
        "ms": {k: 1e3 * v for k, v in ms.items()},
        "allowed": None if allowed is None else len(allowed),
        "plan": coarse.plans.get("breech_face"),
        "n_candidates": len(live.order),
        "n_signatures": len(sigs),
        "n_kept": len(kept),
        "top": [live.records[i].casing_id for i in ranking],
    }


def summary(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, float)
    return {
        "median_ms": round(float(np.median(a)), 3),
        "p90_ms": round(float(np.percentile(a, 90)), 3),
        "mean_ms": round(float(a.mean()), 3),
        "max_ms": round(float(a.max()), 3),
    }


def query_plans(cat: Any) -> dict[str, list[str]]:
    """SQLite's EXPLAIN QUERY PLAN for the statements stages 1-2 run."""
    from index.search import SCREEN_KEY

    con = cat.store._conn()
    v = cat.extractor_version
    ids = list(range(1, 201))
    stmts = {
        "filter_ids agencies": (
            "SELECT id FROM casings WHERE deleted = 0 AND agency IN (?,?,?) ORDER BY id",
            sorted(AGENCY_SUBSET),
        ),
        "filter_ids calibre": (
            "SELECT id FROM casings WHERE deleted = 0 AND caliber = ? ORDER BY id",
            ["9mm Luger"],
        ),
        "get_many": (f"SELECT id FROM casings WHERE id IN ({','.join('?' * 200)})", ids),
        "vectors_of": (
            "SELECT casing, vector FROM descriptors WHERE region = ? AND extractor_version = ?"
            f" AND casing IN ({','.join('?' * 200)})",
            [SCREEN_KEY, v, *ids],
        ),
        "descriptors_of": (
            "SELECT region, vector FROM descriptors WHERE casing = ? AND extractor_version = ?",
            [1, v],
        ),
        "load_surface": ("SELECT codec, data FROM surfaces WHERE casing = ?", [1]),
    }
    return {
        name: [str(r[-1]) for r in con.execute("EXPLAIN QUERY PLAN " + sql, params)]
        for name, (sql, params) in stmts.items()
    }


def run_mode(
    cat: Any,
    mode: str,
    queries: list[str],
    sets: dict[str, Any],
    args: argparse.Namespace,
    files: list[Path],
) -> dict[str, Any]:
    keep = max(cat.config.compare_k, args.top)
    rows: dict[str, list[dict]] = {name: [] for name in sets}
    mismatches = 0

    def cold() -> None:
        if mode == "cold":
            cat.store._conn().execute("PRAGMA shrink_memory")  # SQLite's own page cache
            evict(files)

    for q in queries:
        for name, f in sets.items():  # interleaved: machine noise hits every setting alike
            cold()
            r = replay(cat, q, f, args.rerank, keep, args.top)
            cold()
            t = time.perf_counter()
            res = cat.search(q, top=args.top, rerank_k=args.rerank, filters=f)
            r["catalog_search_ms"] = 1e3 * (time.perf_counter() - t)
            r["n_errors"] = res.n_errors
            r["n_rescored"] = res.n_rescored
            r["n_screened_out"] = res.n_screened_out
            r["partial"] = res.partial
            same = [c.casing_id for c in res.combined] == r.pop("top")
            mismatches += not same
            rows[name].append(r)
    out: dict[str, Any] = {"top10_mismatches_replay_vs_catalog": mismatches, "settings": {}}
    for name, rs in rows.items():
        stages = {s: summary([r["ms"][s] for r in rs]) for s in STAGES}
        stages["stages_1_2_sum"] = summary([sum(r["ms"].values()) for r in rs])
        out["settings"][name] = {
            "allowed_rows": (
                None
                if rs[0]["allowed"] is None
                else [min(r["allowed"] for r in rs), max(r["allowed"] for r in rs)]
            ),
            "faiss_plan": sorted({str(r["plan"]) for r in rs}),
            "n_candidates": sorted({r["n_candidates"] for r in rs}),
            "n_signatures": sorted({r["n_signatures"] for r in rs}),
            "n_kept_for_stage3": sorted({r["n_kept"] for r in rs}),
            "stage3_n_errors_no_surface": sorted({r["n_errors"] for r in rs}),
            "stage3_n_rescored": sorted({r["n_rescored"] for r in rs}),
            "partial": any(r["partial"] for r in rs),
            "stages": stages,
            "catalog_search": summary([r["catalog_search_ms"] for r in rs]),
        }
    return out


def sensitivity_400(cat: Any, queries: list[str]) -> dict[str, Any]:
    """Warm: loading + screening 400 candidates (two indexed regions' union at worst)."""
    from index.search import SCREEN_KEY

    idx = cat.indexes["breech_face"]
    load, score = [], []
    for q in queries:
        qq = cat.make_query(q)
        _, ids = idx.search(qq.descriptors["breech_face"], 400)
        order = [int(i) for i in ids[0] if i >= 0]
        t = time.perf_counter()
        sigs = cat.store.vectors_of(order, SCREEN_KEY, cat.extractor_version)
        load.append(1e3 * (time.perf_counter() - t))
        t = time.perf_counter()
        cat.engine.screen(qq.descriptors[SCREEN_KEY], np.stack([sigs[i] for i in order]))
        score.append(1e3 * (time.perf_counter() - t))
    return {"signatures": summary(load), "screen": summary(score)}


def faiss_threads_check(cat: Any, queries: list[str], rerank_k: int) -> dict[str, Any]:
    """Warm, unfiltered FAISS search alone with OpenMP at 2 threads (the default here) and 1,
    interleaved: single-query latency on a shared machine."""
    import faiss

    idx = cat.indexes["breech_face"]
    vecs = [cat.make_query(q).descriptors["breech_face"] for q in queries]
    before = faiss.omp_get_max_threads()
    lat: dict[int, list[float]] = {before: [], 1: []}
    try:
        for _ in range(3):
            for v in vecs:
                for n in lat:
                    faiss.omp_set_num_threads(n)
                    t = time.perf_counter()
                    idx.search(v, rerank_k + 1)
                    lat[n].append(1e3 * (time.perf_counter() - t))
    finally:
        faiss.omp_set_num_threads(before)
    return {f"omp_threads_{n}": summary(v) for n, v in lat.items()}


def filter_anatomy(cat: Any, sets: dict[str, Any], repeats: int = 10) -> dict[str, Any]:
    """Warm: ``Store.filter_ids`` against the same WHERE as ``SELECT COUNT(*)`` (SQLite's scan
    without handing rows to Python) - where the filter time goes."""
    con = cat.store._conn()
    out = {}
    for name, f in sets.items():
        if f is None:
            continue
        where, params = f.where()
        a, b = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            con.execute(f"SELECT COUNT(*) FROM casings WHERE {where}", params).fetchone()
            a.append(1e3 * (time.perf_counter() - t))
            t = time.perf_counter()
            cat.store.filter_ids(f)
            b.append(1e3 * (time.perf_counter() - t))
        out[name] = {"sql_count_only": summary(a), "filter_ids": summary(b)}
    return out


def compose(res: dict[str, Any]) -> dict[str, Any] | None:
    """Estimate: this run's stages 1-2 at N + the 40-comparison stage measured on real scans."""
    if not E2E.exists():
        return None
    e2e = json.loads(E2E.read_text())
    s40 = e2e.get("settings", {}).get("40")
    if not s40:
        return None
    out: dict[str, Any] = {
        "kind": "ESTIMATE (sum of medians of two separate measurements; not a measurement)",
        "e2e_source": "benchmarks/results/search-e2e.json settings['40']",
        "e2e_store_casings": e2e.get("store_casings"),
        "e2e_machine": e2e.get("machine"),
        "e2e_compare_k_40_median_s": s40["median_s"],
        "e2e_compare_k_40_p90_s": s40["p90_s"],
    }
    for mode in ("warm", "cold"):
        if not isinstance(res.get(mode), dict):  # not run (--no-cold: a note instead)
            continue
        for name in ("none", "agencies_30pct"):
            m = res[mode]["settings"][name]["catalog_search"]["median_ms"] / 1e3
            out[f"{mode}_{name}_estimate_median_s"] = round(s40["median_s"] + m, 3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--casings", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rerank", type=int, default=200, help="rerank_k: descriptor candidates")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--probe", type=int, default=200, help="Store.add_casing calls to time")
    ap.add_argument("--cold", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/search-stages-100k.json"))
    args = ap.parse_args(argv)

    d = data_dir(args.casings, args.seed)
    t = time.perf_counter()
    info = build(d, args.casings, args.seed, args.probe)
    print(f"store ready in {time.perf_counter() - t:.1f}s: {d}", flush=True)
    if args.build_only:
        return 0

    from index.engine import BallisticsEngine
    from index.service import Catalog

    res: dict[str, Any] = {
        "command": "python "
        + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "casings": args.casings,
        "queries": args.queries,
        "seed": args.seed,
        "rerank_k": args.rerank,
        "top": args.top,
        "synthetic": {
            "breech_face": f"Gaussian mixture, {CLUSTERS} centres, dim {info['dim']}, "
            "L2-normalised (search_core.py's mixture)",
            "screen_signature": "seeded random (32, 128) float32, zero-mean per row, unit L2 "
            "norm - NOT from scans",
            "surfaces": "none stored: stage 3 finds no surface (LookupError per kept candidate)",
            "agencies": AGENCIES,
            "calibres": CALIBRES,
        },
        "build": info,
    }
    files = store_files(d)
    t = time.perf_counter()
    cat = Catalog.open(d, engine=BallisticsEngine())
    res["open_s"] = round(time.perf_counter() - t, 2)
    res["repairs"] = dict(cat.repairs)
    try:
        res["config"] = {
            "compare_k": cat.config.compare_k,
            "ef_search": cat.config.ef_search,
            "workers": cat._searcher.workers,
            "factory": cat.indexes["breech_face"].factory,
        }
        res["sqlite_query_plans"] = query_plans(cat)
        sets = settings()
        rng = np.random.default_rng([args.seed, 7])
        rowids = rng.choice(np.arange(1, args.casings + 1), size=args.queries + 1, replace=False)
        recs = cat.store.get_many(int(i) for i in rowids)
        ids = [recs[int(i)].casing_id for i in rowids]
        warmup, queries = ids[0], ids[1:]
        res["filter_rows"] = {
            name: (None if f is None else len(cat.store.filter_ids(f))) for name, f in sets.items()
        }

        # warm: whole store file in the page cache
        evict(files)
        res["resident_after_evict"] = resident_fraction(files[0])
        nbytes, secs = read_through(files)
        res["sequential_cold_read"] = {
            "bytes": nbytes,
            "seconds": round(secs, 2),
            "MB_per_s": round(nbytes / 1e6 / secs, 1),
        }
        res["resident_after_read"] = resident_fraction(files[0])
        for f in sets.values():
            cat.search(warmup, top=args.top, rerank_k=args.rerank, filters=f)
        print("warm ...", flush=True)
        res["warm"] = run_mode(cat, "warm", queries, sets, args, files)
        res["warm_sensitivity_400_candidates"] = sensitivity_400(cat, queries)
        res["warm_filter_ids_anatomy"] = filter_anatomy(cat, sets)
        res["warm_faiss_omp_threads"] = faiss_threads_check(cat, queries, args.rerank)
        if args.cold:
            print("cold ...", flush=True)
            res["cold"] = run_mode(cat, "cold", queries, sets, args, files)
            evict(files)
            res["resident_after_cold_evict_check"] = resident_fraction(files[0])
        else:
            res["cold"] = "skipped (--no-cold)"
    finally:
        cat.close()
    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    res["composed_estimate"] = compose(res)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    brief = {
        mode: {
            name: {
                "stages_1_2": s["stages"]["stages_1_2_sum"]["median_ms"],
                "catalog_search": s["catalog_search"]["median_ms"],
                "plan": s["faiss_plan"],
            }
            for name, s in res[mode]["settings"].items()
        }
        for mode in ("warm", "cold")
        if isinstance(res.get(mode), dict)
    }
    print(json.dumps(brief, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
