"""End to end on synthetic scans with the real pipeline (skipped until it is importable)."""

from __future__ import annotations

import importlib.util

import pytest

from index.ingest import ingest_paths
from index.service import Catalog


def _pipeline_ready() -> bool:
    names = ("compare", "descriptors", "io", "pipeline", "synth")
    return all(importlib.util.find_spec(f"ballistics.{n}") is not None for n in names)


@pytest.mark.slow
@pytest.mark.skipif(not _pipeline_ready(), reason="ballistics pipeline not complete yet")
def test_ingest_and_search_synthetic_scans(tmp_path):
    from ballistics.synth import write_corpus

    src = write_corpus(tmp_path / "corpus", guns=3, shots=2, seed=7).parent
    files = sorted(src.rglob("*.x3p"))
    assert len(files) == 6
    with Catalog.open(tmp_path / "data") as cat:
        rep = ingest_paths(cat, files, progress=False)
        assert len(rep.added) == 6, rep.failed
        assert cat.check()
        # files are named G<seed>-<gun>-<shot>: the other shot of the same gun should lead
        by_name = {cat.get(c).filename: c for c in rep.added}
        q = files[0].name
        sibling = by_name[q[: q.rindex("-")] + "-02.x3p"] if q.endswith("-01.x3p") else None
        res = cat.search(by_name[q], top=3, rerank_k=5)
        assert res.combined and not res.partial
        assert res.combined[0].score is not None and res.combined[0].rescored
        assert by_name[q] not in {c.casing_id for c in res.combined}
        if sibling is not None:
            assert res.combined[0].casing_id == sibling
