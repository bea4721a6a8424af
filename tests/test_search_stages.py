"""The search stages called one by one (as the benchmarks do) give what ``Searcher.search``
gives: same candidates, scores, ranks and counts, with and without screen and filters; and the
candidate planner (stage-1 K from the store size, stage-2 fusion of descriptor and screen)."""

from __future__ import annotations

import concurrent.futures as cf
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from index.search import (
    RERANK_CAP,
    RERANK_FLOOR,
    SCREEN_KEY,
    Query,
    RerankPolicy,
    Screen,
    allowed_ids,
    coarse_candidates,
    compare_candidates,
    compare_one,
    fused_scores,
    live_candidates,
    rank_candidates,
    screen_candidates,
)
from index.service import Catalog, CatalogConfig
from index.store import Filters
from index.testing import FakeEngine


def _catalog(path: Path, with_screen: bool) -> Catalog:
    eng = FakeEngine(with_screen=with_screen, regions=("breech_face", "firing_pin"))
    cat = Catalog.open(path, CatalogConfig(workers=1), engine=eng)
    recs = []
    for g in range(8):
        for s in range(3):
            md = {"casing_id": f"g{g}s{s}", "caliber": "9mm" if g % 2 else "45"}
            md["agency"] = "A" if g % 3 else "B"
            recs.append(cat.ingest_bytes(f"FAKE:{g}:{s}".encode(), f"g{g}s{s}.x3p", md))
    cat.ingest_bytes(b"FAKE:0:0", "dup.x3p", {"agency": "C", "casing_id": "dup"})
    cat.delete("g2s1", "test: a deleted casing is never a candidate")
    return cat


def _staged(cat: Catalog, query: Any, *, top: int, rerank_k: int, keep: int, filters: Any) -> dict:
    """The stages in order, by hand, set up as ``Catalog.search`` sets them up."""
    q = cat.make_query(query)
    screen = None
    if keep and cat.engine.screen is not None:
        version = cat.extractor_version
        screen = Screen(
            cat.engine.screen,
            lambda ids: cat.store.vectors_of(ids, SCREEN_KEY, version),
            max(keep, top),
        )
    allowed = allowed_ids(cat.store, filters, q.rowid)
    coarse = coarse_candidates(cat.indexes, q, allowed, max(rerank_k, top))
    live = live_candidates(cat.store, coarse, q.sha256)
    screened, kept = screen_candidates(screen, q, live.order, coarse.best)
    compare = partial(compare_one, cat.store, q, score_fn=cat.engine.score, load_fn=cat.engine.load)
    with cf.ThreadPoolExecutor(1) as pool:
        compared = compare_candidates(pool, kept, compare, None)
    nmf = partial(cat.engine.non_match_frequency, kind="topography")
    per_region, combined, identical = rank_candidates(
        cat.store, q, coarse, live, screened, compared, top=top, nmf_fn=nmf
    )
    return {
        "combined": [c.as_dict() for c in combined],
        "regions": {r: [c.as_dict() for c in cs] for r, cs in per_region.items()},
        "identical": [c.as_dict() for c in identical],
        "n_candidates": len(live.order),
        "n_screened_out": len(live.order) - len(kept),
        "n_rescored": len(compared.results),
        "plans": coarse.plans,
    }


@pytest.mark.parametrize("with_screen", [False, True])
@pytest.mark.parametrize(
    ("top", "rerank_k", "keep", "filters"),
    [
        (5, 200, 20, None),
        (3, 6, 4, None),
        (10, 200, 20, Filters(caliber="9mm")),
        (4, 200, 0, Filters(agencies=frozenset({"A", "C"}))),
    ],
)
def test_staged_path_equals_search(tmp_path, with_screen, top, rerank_k, keep, filters):
    cat = _catalog(tmp_path, with_screen)
    try:
        for query in ("g0s0", "g3s2", b"FAKE:5:9", b"FAKE:0:0"):
            want = cat.search(query, top=top, rerank_k=rerank_k, compare_k=keep, filters=filters)
            got = _staged(cat, query, top=top, rerank_k=rerank_k, keep=keep, filters=filters)
            w = want.as_dict()
            assert got == {k: w[k] for k in got}
            assert w["combined"], "the synthetic store must give candidates to compare"
            if query == "g0s0" and filters is None:  # the same virtual gun's shots first
                assert {c["casing_id"] for c in w["combined"][:2]} == {"g0s1", "g0s2"}
            if with_screen and keep == 4:
                assert got["n_screened_out"] > 0  # the screen stage really chose
        # the query's own file (stored by two agencies) is reported apart, not ranked
        r = cat.search(b"FAKE:0:0", top=5)
        assert sorted(c.casing_id for c in r.identical) == ["dup", "g0s0"]
    finally:
        cat.close()


# -- the candidate planner -------------------------------------------------------------------


def test_rerank_k_grows_with_the_store_within_floor_and_cap():
    p = RerankPolicy()
    ks = [p.k(n) for n in (0, 50, 1_000, 10_000, 50_000, 100_000, 1_000_000, 4_000_000)]
    assert ks == sorted(ks)  # never shrinks as the store grows
    assert ks[0] == ks[2] == RERANK_FLOOR  # a small store: the floor (nearly all of it)
    assert p.k(100_000) == 2_000  # 2 % of a 100 k store
    assert ks[-1] == RERANK_CAP
    with pytest.raises(ValueError, match="floor <= cap"):
        RerankPolicy(fraction=0.02, floor=500, cap=100)


def test_search_uses_the_policy_and_honours_an_explicit_rerank_k(tmp_path):
    eng = FakeEngine(with_screen=True, regions=("breech_face",))
    cfg = CatalogConfig(workers=1, rerank_fraction=0.25, rerank_floor=3, rerank_cap=8)
    cat = Catalog.open(tmp_path, cfg, engine=eng)
    try:
        for g in range(10):
            for s in range(2):
                md = {"casing_id": f"g{g}s{s}", "caliber": "9mm"}
                cat.ingest_bytes(f"FAKE:{g}:{s}".encode(), f"g{g}s{s}.x3p", md)
        auto = cat.search("g0s0", top=2, compare_k=2)
        assert auto.rerank_k == 5  # ceil(0.25 x 20 indexed casings), inside [3, 8]
        assert auto.n_candidates == 5
        given = cat.search("g0s0", top=2, rerank_k=11, compare_k=2)
        assert given.rerank_k == 11 and given.n_candidates == 11  # above the cap: honoured
        small = cat.search("g0s0", top=2, rerank_k=1, compare_k=2)
        assert small.rerank_k == 2  # never fewer than top
        nine = cat.search("g0s0", top=2, compare_k=2, filters=Filters(caliber="9mm"))
        assert nine.rerank_k == 5  # the filter's 19 allowed casings (the query excluded)
        assert auto.as_dict()["rerank_k"] == 5
    finally:
        cat.close()


def _planner_case(n: int = 200, seed: int = 5) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores of ``n`` stage-1 candidates, a mate at index 0: far above the crowd by
    descriptor, only in the screen's top ~15 % (the screen alone puts it ~30th)."""
    rng = np.random.default_rng(seed)
    coarse = np.sort(0.5 + 0.02 * rng.exponential(size=n))[::-1].copy()  # stage 1's top n
    screen = rng.normal(0.10, 0.02, size=n)
    coarse[0] = coarse[1] + 0.15  # ~7 tail scales above the next candidate
    screen[0] = np.quantile(screen[1:], 0.85)
    return coarse, screen, 0


def test_a_mate_the_screen_ranks_badly_but_the_descriptor_well_reaches_comparison():
    coarse, screen, mate = _planner_case()
    keep = 20
    assert int((screen > screen[mate]).sum()) >= keep  # the screen alone would drop it
    ids = list(range(100, 100 + len(coarse)))
    sig = {i: np.array([float(v)]) for i, v in zip(ids, screen, strict=True)}
    q = Query({SCREEN_KEY: np.array([1.0])}, None)
    scr = Screen(lambda _q, sigs: np.asarray(sigs)[:, 0], lambda rows: sig, keep)
    coarse_by = dict(zip(ids, coarse.tolist(), strict=True))
    screened, kept = screen_candidates(scr, q, ids, coarse_by)
    assert ids[mate] in kept and len(kept) == keep
    assert screened[ids[mate]] == pytest.approx(screen[mate])  # raw screen score reported
    # no descriptor scores given (e.g. the background correlation): the screen alone
    _, alone = screen_candidates(scr, q, ids)
    assert ids[mate] not in alone
    scr_alone = Screen(scr.score_fn, scr.load_fn, keep, fusion_weight=None)
    assert ids[mate] not in screen_candidates(scr_alone, q, ids, coarse_by)[1]


def test_fusion_keeps_a_screen_outlier_too_and_is_scale_free():
    coarse, screen, _ = _planner_case(seed=9)
    # a candidate ordinary by descriptor (median) but far above the crowd by screen
    j = len(coarse) // 2
    screen[j] = screen.max() + 0.1
    f = fused_scores(coarse, screen)
    assert int((f > f[j]).sum()) < 5
    # per-query calibration: shifting or scaling either score changes nothing
    g = fused_scores(3.0 * coarse + 1.0, 0.5 * screen - 0.2)
    assert np.array_equal(np.argsort(-f, kind="stable"), np.argsort(-g, kind="stable"))
    with pytest.raises(ValueError, match="must match"):
        fused_scores(coarse, screen[:-1])


def test_the_screens_best_always_reach_comparison_whatever_the_descriptor_says():
    """Non-mates the descriptor likes (e.g. the same scanner and crop) must not push out the
    candidates the screen ranks best: stage 2 alternates the screen's and the fused order."""
    rng = np.random.default_rng(11)
    n, keep = 200, 10
    coarse = np.sort(0.5 + 0.02 * rng.exponential(size=n))[::-1].copy()
    screen = rng.normal(0.10, 0.02, size=n)
    coarse[:30] += 0.2  # 30 look-alikes far out by descriptor, ordinary by screen
    best = n - 1  # the descriptor's weakest candidate, the screen's best
    screen[best] = screen.max() + 0.01
    ids = list(range(n))
    f = fused_scores(coarse, screen)
    assert int((f > f[best]).sum()) >= keep  # the fused order alone would drop it
    sig = {i: np.array([float(v)]) for i, v in enumerate(screen)}
    scr = Screen(lambda _q, sigs: np.asarray(sigs)[:, 0], lambda rows: sig, keep)
    q = Query({SCREEN_KEY: np.array([1.0])}, None)
    _, kept = screen_candidates(scr, q, ids, dict(enumerate(coarse.tolist())))
    assert kept[0] == best and len(kept) == keep == len(set(kept))
    by_screen = np.argsort(-screen, kind="stable")[: keep // 2].tolist()
    by_fused = np.argsort(-f, kind="stable")[: keep // 2].tolist()
    assert set(by_screen) <= set(kept) and set(by_fused) <= set(kept)
