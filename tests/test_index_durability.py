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
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from index.search import Query
from index.service import Catalog
from index.testing import FakeEngine

# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py: store_engine).
pytestmark = pytest.mark.usefixtures("store_engine")

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
        # a PostgreSQL round trip per commit: give each child as many commits between kills
        time.sleep(rng.uniform(0.0, 0.5 if os.environ.get("BALLISTICS_STORE") else 0.25))
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
                # its surface file was durable before the commit (hash checked on read)
                loaded = cat.engine.load(cat.store.load_surface(rec.id))
                for region, v in loaded.items():
                    np.testing.assert_array_equal(v, descs[region])
                res = cat.search(Query(descs, descs), top=1, rerank_k=5)
                assert res.combined[0].casing_id == cid
    assert len(acked) > 20  # the children did get work done between kills
    assert np.unique(acked).size == len(acked)


SERVER_CHILD = r"""
import sys, threading
from pathlib import Path
from index.service import Catalog, CatalogConfig
from index.testing import FakeEngine
from server.app import CatalogBackend, create_server, open_audit
from server.auth import Authenticator
from server.policy import SharingPolicy
from server.service import ServiceLimits
data, auth, key = sys.argv[1:4]
cat = Catalog.open(data, CatalogConfig(snapshot_every=5), engine=FakeEngine())
backend = CatalogBackend(cat)
audit = open_audit(Path(data), key, backend)  # verifies the log, reconciles stored casings
server, port = create_server(
    backend, "127.0.0.1:0", auth=Authenticator.from_file(auth),
    policy=SharingPolicy.isolated(), audit=audit, limits=ServiceLimits(spool_dir=data),
)
server.start()
print(port, flush=True)
threading.Event().wait()
"""


def _start_server(data: Path, auth: Path, key: Path) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen(
        [sys.executable, "-c", SERVER_CHILD, str(data), str(auth), str(key)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert p.stdout is not None
    line = p.stdout.readline().strip()
    assert line.isdigit(), f"server child did not start (exit {p.poll()})"
    return p, int(line)


def test_sigkill_server_during_parallel_submits_every_casing_audited(tmp_path):
    """The server SIGKILLed 8 times while 4 clients submit: no acknowledged casing is lost, and
    every stored casing has an audit record (issue 10, item 7) -- those committed by a call the
    kill cut short get theirs from the STARTED record and the start-up reconciliation."""
    import grpc

    from server.audit import generate_key, load_key, targets_of_log, verify
    from server.auth import new_token_entry, write_auth_file
    from server.client import Client

    rng = random.Random(4321)
    data = tmp_path / "data"
    key = generate_key(tmp_path / "audit.key")
    token, entry = new_token_entry("sub", "PD-North", "submitter")
    write_auth_file(tmp_path / "auth.json", [entry])
    acked: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()
    for cycle in range(8):
        p, port = _start_server(data, tmp_path / "auth.json", key)
        stop = threading.Event()

        def submitter(k: int, port: int = port, cycle: int = cycle, stop=stop) -> None:
            with Client(f"127.0.0.1:{port}", token, timeout=10) as c:
                for i in range(100000):
                    if stop.is_set():
                        return
                    content = b"\x89PNG\r\n\x1a\n" + f"casing {cycle} {k} {i}".encode()
                    try:
                        r = c.submit(content + b"\x00" * 64, file_name="x.png")
                    except grpc.RpcError as e:
                        if e.code() is not grpc.StatusCode.UNAVAILABLE:
                            errors.append(f"{e.code()}: {e.details()}")
                        return  # the server is gone
                    with lock:
                        acked.append(r.casing_id)

        threads = [threading.Thread(target=submitter, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.3, 1.2))
        p.send_signal(signal.SIGKILL)
        p.wait()
        stop.set()
        for t in threads:
            t.join(15)
        assert p.stdout is not None
        p.stdout.close()
    p, _ = _start_server(data, tmp_path / "auth.json", key)  # the restart reconciles the last kill
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.stdout is not None
    p.stdout.close()

    with Catalog.open(data, engine=FakeEngine()) as cat:
        stored = [r.casing_id for r in cat.store.list_casings(limit=10**6)]
    assert errors == []
    assert len(acked) > 8  # the clients got work done between kills
    assert set(acked) <= set(stored)
    audited = targets_of_log(data / "audit.log")
    assert [c for c in stored if c not in audited] == []
    v = verify(data, load_key(key))
    assert v.ok, v.message
