"""PostgreSQL store of record: what only a shared server store has to get right.

Row-level security per agency, migrations recorded once, idempotent submits racing from two
processes' connections, correlation jobs taken with SKIP LOCKED by several workers (and given
back when a worker dies), and two ``ballistics serve`` processes on one database: concurrent
submits, one server SIGKILLed mid-work, no acknowledged casing lost, no correlation job lost
or run twice, and both servers answering the same search with the same list.
The store's common semantics run on both engines in test_index_store.py and neighbours.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _store(url: str, files: Path):
    from index.store import open_store

    return open_store(files, url)


def _add(store, data: bytes, agency: str = "A", **kw):
    return store.add_casing(
        original=data,
        agency=agency,
        descriptors={"breech_face": np.full(4, 0.5, np.float32)},
        extractor_version="v1",
        surface=b"s" * 50,
        **kw,
    )


def test_migrations_recorded_once_on_both_engines(tmp_path: Path, pg_url: str) -> None:
    from index.migrations import migrations
    from index.store import Store

    n = len(migrations("postgresql"))
    assert n == len(migrations("sqlite")) >= 2  # the same versions on both engines
    for open_ in (lambda: _store(pg_url, tmp_path / "pg"), lambda: Store(tmp_path / "lite")):
        for _ in range(2):  # a second open applies nothing
            s = open_()
            rows = s._conn().execute("SELECT version FROM schema_migrations ORDER BY 1")
            assert [int(r[0]) for r in rows] == list(range(1, n + 1))
            s.close()


def test_row_level_security_is_a_second_line(tmp_path: Path, pg_url: str) -> None:
    import psycopg

    s = _store(pg_url, tmp_path)
    a, _ = _add(s, b"a1", "A", incident="I1")
    b, _ = _add(s, b"b1", "B", incident="I1")
    a2, _ = _add(s, b"a2", "A")
    with s.acting_for("A", {"A"}):
        assert [r.casing_id for r in s.list_casings()] == [a.casing_id, a2.casing_id]
        assert s.incident_owners("I1") == ["A"]
        # a bug that asked for another agency's casing finds nothing
        with pytest.raises(Exception, match="no casing"):
            s.get_casing(b.casing_id)
        # nor may the session write another agency's casing, whatever the SQL says
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            _add(s, b"b2", "B")
        n = s._conn().execute("UPDATE casings SET caliber = 'x' WHERE agency = 'B'").rowcount
        assert n == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            s.record_decision(a.casing_id, a2.casing_id, "hit", examiner="e", agency="B")
        s.record_decision(a.casing_id, a2.casing_id, "hit", examiner="e", agency="A")
    with s.acting_for("A", set()):  # may read nobody's: an empty list restricts, never lifts
        assert s.list_casings() == []
    # outside, the service's own session sees everything; casings are never hard-deleted
    assert len(s.list_casings()) == 3
    assert s._conn().execute("DELETE FROM casings").rowcount == 0
    assert s.get_casing(b.casing_id).agency == "B"
    s.close()


def test_idempotent_submit_races_across_connections(tmp_path: Path, pg_url: str) -> None:
    """Two stores (as two processes would) add the same bytes for the same agency at once:
    one record, both callers get it; the change log has one 'add' per created casing, in
    commit order."""
    stores = [_store(pg_url, tmp_path) for _ in range(4)]
    results: list = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        for i in range(15):
            rec, _ = _add(stores[k], f"scan-{i}".encode(), "A")
            with lock:
                results.append((i, rec))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    by_scan: dict[int, set[int]] = {}
    for i, rec in results:
        by_scan.setdefault(i, set()).add(rec.id)
    assert all(len(ids) == 1 for ids in by_scan.values())
    assert sum(rec.created for _, rec in results) == 15
    changes = stores[0].changes_since(0)
    assert [c.kind for c in changes] == ["add"] * 15
    assert [c.seq for c in changes] == sorted(c.seq for c in changes)
    for s in stores:
        s.close()


def test_jobs_taken_by_many_workers_once_and_given_back_when_one_dies(
    tmp_path: Path, pg_url: str
) -> None:
    s0 = _store(pg_url, tmp_path)
    for i in range(12):
        _add(s0, f"j{i}".encode())
    w1, w2 = _store(pg_url, tmp_path), _store(pg_url, tmp_path)
    taken1 = [w1.take_job("w1") for _ in range(3)]
    taken2 = [w2.take_job("w2") for _ in range(3)]
    assert None not in taken1 + taken2 and not set(taken1) & set(taken2)  # SKIP LOCKED
    # a live worker's jobs are never requeued by another
    assert w2.requeue_running_jobs() == 0 and s0.job_counts()["running"] == 6
    w1.finish_job(taken1[0], [], n_screened=0, n_compared=0)
    w1.close()  # the worker's connection goes: its two other jobs' locks with it
    assert w2.requeue_running_jobs() == 2
    counts = s0.job_counts()
    assert counts == {"pending": 8, "running": 3, "done": 1, "failed": 0}
    seen = set(taken2)
    while (j := w2.take_job("w2")) is not None:
        assert j not in seen
        seen.add(j)
        w2.finish_job(j, [], n_screened=0, n_compared=0)
    for j in taken2:
        w2.finish_job(j, [], n_screened=0, n_compared=0)
    assert s0.job_counts() == {"pending": 0, "running": 0, "done": 12, "failed": 0}
    w2.close()
    s0.close()


def test_catalogs_of_two_processes_see_each_others_casings(tmp_path: Path, pg_url: str) -> None:
    from index.service import Catalog, CatalogConfig
    from index.testing import FakeEngine

    cfg = CatalogConfig(store=pg_url, files_dir=str(tmp_path / "files"))
    with (
        Catalog.open(tmp_path / "a", cfg, engine=FakeEngine()) as a,
        Catalog.open(tmp_path / "b", cfg, engine=FakeEngine()) as b,
    ):
        recs = [
            (a if i % 2 else b).ingest_bytes(f"FAKE:{g}:{i}".encode(), f"{g}{i}.x3p", {})
            for g in range(3)
            for i in range(3)
        ]
        b.delete(recs[0].casing_id, "test")
        for r in recs[1:]:
            la = [c.casing_id for c in a.search(r.casing_id, top=4).combined]
            lb = [c.casing_id for c in b.search(r.casing_id, top=4).combined]
            assert la == lb and recs[0].casing_id not in la
        assert a.check() and b.check()


# -- two `ballistics serve` processes on one PostgreSQL -----------------------------------------
def _serve(
    data: Path, url: str, files: Path, auth: Path, key: Path, *extra: str
) -> tuple[subprocess.Popen, int]:
    """``ballistics serve`` on the shared store (the fake pipeline), with ``extra`` options;
    returns (process, port)."""
    log = data.with_suffix(".log")
    n_started = log.read_text().count("serving on") if log.exists() else 0
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BALLISTICS_INDEX_ENGINE": "index.testing:FakeScreenEngine",
    }
    argv = [
        sys.executable,
        "-c",
        "import sys; from server.cli import main; sys.exit(main(sys.argv[1:]))",
        "serve",
        "--data-dir",
        str(data),
        "--store",
        url,
        "--files",
        str(files),
        "--auth",
        str(auth),
        "--audit-key-file",
        str(key),
        "--port",
        "0",
        "--lead-max-nmf",  # the fake pipeline's same-gun pairs (as test_leads.py)
        "0.3",
        *extra,
    ]
    log = data.with_suffix(".log")
    with open(log, "a") as err:  # a file, not a pipe: nobody has to keep reading it
        p = subprocess.Popen(argv, stderr=err, text=True, env=env, cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and p.poll() is None:
        m = re.findall(r"serving on 127\.0\.0\.1:(\d+)", log.read_text())
        if len(m) > n_started:
            return p, int(m[-1])
        time.sleep(0.1)
    p.kill()
    raise AssertionError(f"server did not start: {log.read_text()}")


@pytest.mark.slow
def test_two_servers_one_postgresql_sigkill_mid_work(tmp_path: Path, pg_url: str) -> None:
    import grpc

    from index.testing import PNG_MAGIC
    from server.audit import generate_key
    from server.auth import new_token_entry, write_auth_file
    from server.client import Client

    rng = random.Random(15)
    files = tmp_path / "files"
    key = generate_key(tmp_path / "audit.key")
    sub_token, sub = new_token_entry("sub", "PD-North", "submitter")
    ex_token, ex = new_token_entry("ex", "PD-North", "examiner")
    write_auth_file(tmp_path / "auth.json", [sub, ex])
    args = (pg_url, files, tmp_path / "auth.json", key)
    pa, port_a = _serve(tmp_path / "a", *args)
    pb, port_b = _serve(tmp_path / "b", *args)
    acked: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def submitter(k: int, port: int) -> None:
        with Client(f"127.0.0.1:{port}", sub_token, timeout=20) as c:
            for i in range(10**6):
                if stop.is_set():
                    return
                body = PNG_MAGIC + f"FAKE:{i % 4}:{k}-{i}".encode()
                try:
                    r = c.submit(body, file_name="x.png", search=False)
                except grpc.RpcError as e:
                    if e.code() is not grpc.StatusCode.UNAVAILABLE:
                        errors.append(f"{e.code()}: {e.details()}")
                    return  # that server is gone
                with lock:
                    acked.append(r.casing_id)

    threads = [
        threading.Thread(target=submitter, args=(k, (port_a, port_b)[k % 2])) for k in range(4)
    ]
    try:
        for t in threads:
            t.start()
        time.sleep(rng.uniform(1.5, 2.5))
        pa.send_signal(signal.SIGKILL)  # mid-submit and, likely, mid-correlation-job
        pa.wait()
        time.sleep(1.0)  # B's clients keep submitting alone
        stop.set()
        for t in threads:
            t.join(30)
        pa, port_a = _serve(tmp_path / "a", *args)  # A comes back on the same store
        assert errors == []
        assert len(acked) > 10
        with (
            Client(f"127.0.0.1:{port_a}", ex_token, timeout=30) as ca,
            Client(f"127.0.0.1:{port_b}", ex_token, timeout=30) as cb,
        ):
            listed = {r.casing_id for r in cb.list(limit=10**5).casings}
            assert set(acked) <= listed  # no acknowledged casing lost
            for cid in rng.sample(acked, 3):
                ra, rb = ca.search(cid, max_results=8), cb.search(cid, max_results=8)
                la = [(c.casing_id, round(c.score, 9)) for c in ra.combined.candidates]
                lb = [(c.casing_id, round(c.score, 9)) for c in rb.combined.candidates]
                assert la == lb and len(la) == 8
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # both servers' workers drain the queue
                jobs = cb.leads(limit=1).jobs
                if jobs.pending == 0 and jobs.running == 0:
                    break
                time.sleep(0.5)
    finally:
        stop.set()
        for p in (pa, pb):
            p.send_signal(signal.SIGKILL)
            p.wait()
    s = _store(pg_url, files)
    try:
        counts = s.job_counts()
        assert counts["pending"] == counts["running"] == counts["failed"] == 0
        assert counts["done"] == s.count_live()  # no job lost
        con = s._conn()
        n_rows = con.execute("SELECT COUNT(*) FROM leads").fetchone()[0]
        n_leads = con.execute("SELECT COALESCE(SUM(n_leads), 0) FROM correlation_jobs").fetchone()
        assert n_leads[0] == n_rows  # each lead recorded by exactly one finished job
        assert n_rows > 0
    finally:
        s.close()


WORKER = r"""
import sys
from index.correlate import CorrelationConfig, CorrelationWorker
from index.service import Catalog, CatalogConfig
from index.testing import FakeScreenEngine
eng = FakeScreenEngine()
eng.score_delay_s = 0.02  # a comparison that takes time, so kills land mid-job
cfg = CatalogConfig(store=sys.argv[2], files_dir=sys.argv[3])
cat = Catalog.open(sys.argv[1], cfg, engine=eng)
w = CorrelationWorker(
    cat,
    config=CorrelationConfig(lead_max_nmf=0.3, max_attempts=1000),
    on_done=lambda o: print(o.casing, flush=True),
)
print("ready", flush=True)
w.drain()
print("drained", flush=True)
w.stop()
cat.close()
"""


def _fill(cat) -> None:
    from index.testing import PNG_MAGIC

    for g in range(8):
        for s in range(4):
            body = PNG_MAGIC + f"FAKE:{g}:{s}".encode()
            cat.ingest_bytes(body, f"g{g}s{s}.png", {"casing_id": f"g{g}s{s}"})


@pytest.mark.slow
def test_two_workers_sigkill_mid_job_no_job_lost_or_run_twice(
    tmp_path: Path, pg_url: str, pg_url_2: str
) -> None:
    from index.correlate import CorrelationConfig, CorrelationWorker
    from index.service import Catalog, CatalogConfig
    from index.testing import FakeScreenEngine

    files = tmp_path / "files"
    with Catalog.open(
        tmp_path / "fill",
        CatalogConfig(store=pg_url, files_dir=str(files)),
        engine=FakeScreenEngine(),
    ) as cat:
        _fill(cat)
    ref_cfg = CatalogConfig(store=pg_url_2, files_dir=str(tmp_path / "ref-files"))
    with Catalog.open(tmp_path / "ref", ref_cfg, engine=FakeScreenEngine()) as cat:
        _fill(cat)  # the same queue, drained by one worker never killed
        w = CorrelationWorker(cat, config=CorrelationConfig(lead_max_nmf=0.3))
        w.drain()
        w.stop()
        expected = {frozenset((ld.casing_a, ld.casing_b)) for ld in cat.store.list_leads()}
    assert len(expected) == 8 * 6

    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start(name: str) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(tmp_path / name), pg_url, str(files)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        return p

    rng = random.Random(20261205)
    finished: list[str] = []  # jobs acknowledged by either worker (printed after the commit)
    steady = start("w2")  # runs throughout, beside a worker killed again and again
    kills = 0
    for _ in range(6):
        p = start("w1")
        time.sleep(rng.uniform(0.1, 0.4))
        p.send_signal(signal.SIGKILL)
        out, _ = p.communicate()
        lines = out.split("\n")
        kills += "drained" not in lines
        finished += [ln for ln in lines[:-1] if ln.isdigit()]  # a torn last line: not acked
    p = start("w1")  # the last one finishes, taking back what the killed left running
    for q in (p, steady):
        out, _ = q.communicate(timeout=300)
        finished += [ln for ln in out.split("\n") if ln.isdigit()]
    assert kills >= 3
    assert len(finished) == len(set(finished))  # no job finished twice, by either worker
    s = _store(pg_url, files)
    try:
        assert s.job_counts() == {"pending": 0, "running": 0, "done": 32, "failed": 0}
        assert len(finished) == len(set(finished)) == 32
        got = {frozenset((ld.casing_a, ld.casing_b)) for ld in s.list_leads()}
        assert got == expected  # no lead lost
        con = s._conn()
        assert con.execute("SELECT COUNT(*) FROM leads").fetchone()[0] == len(expected)
        n_leads = con.execute("SELECT SUM(n_leads) FROM correlation_jobs").fetchone()[0]
        assert n_leads == len(expected)  # each job's leads recorded by one finish
        retaken = con.execute("SELECT COUNT(*) FROM correlation_jobs WHERE attempts > 1")
        assert retaken.fetchone()[0] >= 1  # some kill did land mid-job
    finally:
        s.close()


def test_cli_store_option_two_data_dirs_one_store(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """`ingest` from one machine's data dir, `search` and `leads` from another's: the store and
    the files are the shared ones named by --store and --files."""
    import json

    from server.cli import main as cli_main

    monkeypatch.delenv("BALLISTICS_STORE", raising=False)
    monkeypatch.setenv("BALLISTICS_INDEX_ENGINE", "index.testing:FakeEngine")
    src = tmp_path / "src"
    src.mkdir()
    for g in range(3):
        for s in range(2):
            (src / f"g{g}s{s}.x3p").write_bytes(f"FAKE:{g}:{s}".encode())
    shared = ["--store", pg_url, "--files", str(tmp_path / "files")]
    assert cli_main(["ingest", str(src), "--data-dir", str(tmp_path / "a"), *shared, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["added"]) == 6
    q = ["search", "--file", str(src / "g1s0.x3p"), "--json", "--top", "2"]
    assert cli_main([*q, "--data-dir", str(tmp_path / "b"), *shared]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[-1]["identical_file"] and rows[0]["rank"] == 1
    assert not (tmp_path / "a" / "store.sqlite").exists()
    assert not (tmp_path / "b" / "store.sqlite").exists()
    assert cli_main(["leads", "--data-dir", str(tmp_path / "c"), *shared, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["jobs"]["pending"] == 6


def test_serve_on_postgresql_and_milvus_answers_as_faiss(tmp_path: Path, pg_url: str) -> None:
    """The whole service on both external engines: ``serve --store postgresql://...
    --vectors milvus-lite://...`` stores, lists and searches, and answers a search with the
    same list as a server on the same store keeping its own FAISS replica."""
    pytest.importorskip("milvus_lite", reason="needs milvus-lite (the dev extra)")
    from index.testing import PNG_MAGIC
    from server.audit import generate_key
    from server.auth import new_token_entry, write_auth_file
    from server.client import Client

    files = tmp_path / "files"
    key = generate_key(tmp_path / "audit.key")
    sub_token, sub = new_token_entry("sub", "PD-North", "submitter")
    ex_token, ex = new_token_entry("ex", "PD-North", "examiner")
    write_auth_file(tmp_path / "auth.json", [sub, ex])
    args = (pg_url, files, tmp_path / "auth.json", key)
    milvus_uri = f"milvus-lite://{tmp_path / 'milvus' / 'vectors.db'}"
    pm, port_m = _serve(tmp_path / "m", *args, "--vectors", milvus_uri, "--no-correlate")
    pf, port_f = _serve(tmp_path / "f", *args, "--no-correlate")
    try:
        with (
            Client(f"127.0.0.1:{port_m}", sub_token, timeout=30) as cm,
            Client(f"127.0.0.1:{port_m}", ex_token, timeout=30) as em,
            Client(f"127.0.0.1:{port_f}", ex_token, timeout=30) as ef,
        ):
            ids = [
                cm.submit(
                    PNG_MAGIC + f"FAKE:{i % 4}:{i}".encode(), file_name="x.png", search=False
                ).casing_id
                for i in range(16)
            ]
            assert {r.casing_id for r in em.list(limit=100).casings} == set(ids)
            for cid in ids[:4]:
                rm = em.search(cid, max_results=6)
                rf = ef.search(cid, max_results=6)
                lm = [(c.casing_id, round(c.score, 9)) for c in rm.combined.candidates]
                lf = [(c.casing_id, round(c.score, 9)) for c in rf.combined.candidates]
                assert lm == lf and len(lm) == 6
                assert cid not in {c for c, _ in lm}
    finally:
        for p in (pm, pf):
            p.send_signal(signal.SIGKILL)
            p.wait()
    assert (tmp_path / "milvus" / "vectors.db").exists()  # the vectors really went to Milvus
    assert not (tmp_path / "m" / "index").exists() or not list(
        (tmp_path / "m" / "index").glob("*.faiss")
    )
