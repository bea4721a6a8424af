"""Crash safety: an ingest process SIGKILLed at random points, 20 times.

After every restart: each casing the child acknowledged (printed after the commit returned)
is present, the FAISS row count equals the store's, the id sets match, and each acknowledged
casing finds itself first.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from index.search import Query
from index.service import Catalog
from index.testing import FakeEngine

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys
from index.service import Catalog, CatalogConfig
from index.testing import FakeEngine
cycle = int(sys.argv[2])
cat = Catalog.open(sys.argv[1], CatalogConfig(snapshot_every=5), engine=FakeEngine())
print("ready", flush=True)
for i in range(100000):
    rec = cat.ingest_bytes(f"FAKE:{cycle}_{i}:0".encode(), f"c{cycle}_{i}.x3p", {})
    print(rec.casing_id, flush=True)
"""


def test_sigkill_during_ingest_never_loses_acknowledged_casings(tmp_path):
    rng = random.Random(1234)
    data = tmp_path / "data"
    acked: list[str] = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for cycle in range(20):
        p = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(data), str(cycle)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.25))
        p.send_signal(signal.SIGKILL)
        out, _ = p.communicate()
        lines = out.split("\n")
        acked += [ln for ln in lines[:-1] if ln]  # a torn last line was not acknowledged

        with Catalog.open(data, engine=FakeEngine()) as cat:
            live = cat.store.count_live()
            idx = cat.indexes.get("breech_face")
            assert live >= len(acked)
            assert (idx.count() if idx else 0) == live
            assert cat.check()
            for cid in acked if cycle % 5 == 4 else acked[-10:]:
                rec = cat.get(cid)
                descs = cat.store.descriptors_of(rec.id, cat.extractor_version)
                res = cat.search(Query(descs, descs), top=1, rerank_k=5)
                assert res.combined[0].casing_id == cid
    assert len(acked) > 20  # the children did get work done between kills
    assert np.unique(acked).size == len(acked)
