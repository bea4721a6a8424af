"""End to end on synthetic scans with the real pipeline: ingest, stored metadata, search."""

from __future__ import annotations

import csv

import pytest

from index.ingest import ingest_paths
from index.service import Catalog


@pytest.mark.slow
def test_ingest_and_search_synthetic_scans(tmp_path):
    from ballistics.synth import write_corpus

    manifest = write_corpus(tmp_path / "corpus", guns=3, shots=2, seed=7)
    rows = list(csv.DictReader(manifest.read_text().splitlines()))
    files = [manifest.parent / r["file"] for r in rows]
    truth = {f.name: r for f, r in zip(files, rows, strict=True)}
    assert len(files) == 6
    with Catalog.open(tmp_path / "data") as cat:
        rep = ingest_paths(cat, files, progress=False)
        assert len(rep.added) == 6, rep.failed
        assert cat.check()
        by_name = {cat.get(c).filename: c for c in rep.added}
        for name, cid in by_name.items():
            # Segmentation's firing-pin class is stored for filtering.
            assert cat.get(cid).firing_pin_shape == truth[name]["fp_shape"]
        for name, cid in by_name.items():
            res = cat.search(cid, top=3, rerank_k=5)
            assert res.combined and not res.partial
            top = res.combined[0]
            assert top.score is not None and top.rescored
            assert cid not in {c.casing_id for c in res.combined}
            top_name = cat.get(top.casing_id).filename
            assert truth[top_name]["firearm_id"] == truth[name]["firearm_id"], (name, top_name)
