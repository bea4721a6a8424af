"""The search stages called one by one (as the benchmarks do) give what ``Searcher.search``
gives: same candidates, scores, ranks and counts, with and without screen and filters."""

from __future__ import annotations

import concurrent.futures as cf
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from index.search import (
    SCREEN_KEY,
    Screen,
    allowed_ids,
    coarse_candidates,
    compare_candidates,
    compare_one,
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
    screened, kept = screen_candidates(screen, q, live.order)
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
