"""Federation end to end with the real pipeline: two servers, synthetic scans, mutual TLS."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from server.app import limited_engine
from server.client import Client
from server.federation_local import base_config, prepare, start
from server.service import ServiceLimits


@pytest.mark.slow
def test_casing_from_a_found_in_b_with_the_real_pipeline(tmp_path: Path) -> None:
    from ballistics.synth import write_corpus

    manifest = write_corpus(tmp_path / "corpus", guns=2, shots=2, seed=5)
    rows = list(csv.DictReader(manifest.read_text().splitlines()))
    files = [(r["firearm_id"], manifest.parent / r["file"]) for r in rows]
    guns = sorted({g for g, _ in files})
    shots = {g: [f for gg, f in files if gg == g] for g in guns}
    a = prepare(tmp_path, "A", ["PD-A"])
    b = prepare(tmp_path, "B", ["PD-B"])
    ag = {"id": "AB-1", "calibres": ["9mm"], "release": "surface"}
    ca, cb = base_config(a), base_config(b)
    ca["peers"], cb["peers"] = [b.peer_entry(a)], [a.peer_entry(b)]
    ca["agreements"] = [{**ag, "peer": "B", "send_agencies": ["PD-A"]}]
    cb["agreements"] = [{**ag, "peer": "A", "send_agencies": []}]
    try:
        for srv, cfg in ((a, ca), (b, cb)):
            start(srv, cfg, engine=limited_engine(ServiceLimits()))
        md = {"caliber": "9mm", "date": "2024-01-02"}
        q = a.catalog.ingest_bytes(
            shots[guns[0]][0].read_bytes(), "q.x3p", {**md, "agency": "PD-A"}
        ).casing_id
        same = b.catalog.ingest_bytes(
            shots[guns[0]][1].read_bytes(), "s.x3p", {**md, "agency": "PD-B"}
        ).casing_id
        b.catalog.ingest_bytes(shots[guns[1]][0].read_bytes(), "o.x3p", {**md, "agency": "PD-B"})
        with Client(a.address, a.token["PD-A"], timeout=120) as cl:
            resp = cl.search(q, scope="B", max_results=3)
            top = resp.combined.candidates[0]
            assert top.server == "B" and resp.peers[0].state == "ok"
            assert b.node is not None and b.node.store.casing_of_ref(top.casing_id, "A") == same
            assert top.HasField("score") and top.score > resp.combined.candidates[1].score
            # the surface is released: A compares it itself, with its own pipeline
            cmp = cl.compare(q, top.casing_id, server_b="B")
            assert cmp.png.startswith(b"\x89PNG") and cmp.cmc > 0
            assert abs(cmp.score - top.score) < 1e-6  # same pipeline, same pair, same score
    finally:
        for srv in (a, b):
            srv.close()
