"""The real server on a loopback port over the real embedded store (index.Catalog: SQLite +
FAISS). Part 1 wires the catalog with index.testing.FakeEngine (no image processing) so every
RPC, status code, limit and refusal runs through the real store and FAISS filter; part 2 runs
the real pipeline on real and synthetic scans (skipped until ballistics.pipeline exists)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from index.service import Catalog
from index.testing import FakeEngine
from server.app import CatalogBackend, ServerStartError, create_server, open_backend
from server.audit import generate_key, load_key, verify
from server.auth import Authenticator
from server.cli import main as cli_main
from server.policy import SharingPolicy
from server.service import ServiceLimits
from tests.test_server_support import Running, running_server, scratch_audit

# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py: store_engine).
pytestmark = pytest.mark.usefixtures("store_engine")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[1]


def _code(e: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    return e.value.code()


def fake_scan(i: int) -> bytes:
    """Passes the format sniff (PNG magic); FakeEngine turns it into a random descriptor."""
    return PNG_MAGIC + f"casing {i}".encode() + b"\x00" * 64


def _stored(catalog: Catalog) -> int:
    return int(catalog.stats()["casings"])


def _objects(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "objects").rglob("*") if p.is_file()]


@pytest.fixture
def real(tmp_path: Path) -> Iterator[tuple[Running, Catalog]]:
    data = tmp_path / "data"
    catalog = Catalog.open(data, engine=FakeEngine())
    try:
        with running_server(
            CatalogBackend(catalog),
            data,
            limits=ServiceLimits(spool_dir=str(tmp_path)),
        ) as srv:
            yield srv, catalog
    finally:
        catalog.close()


def test_every_rpc_through_the_catalog(real: tuple[Running, Catalog]) -> None:
    srv, catalog = real
    with srv.client("north_exam") as n, srv.client("south_exam") as s:
        a = n.submit(fake_scan(1), incident_id="N-1", calibre="9mm", acquisition_date="2024-03-01")
        assert a.casing_id and len(a.sha256) == 64 and a.HasField("search")
        b = s.submit(fake_scan(2), incident_id="S-1", calibre="9mm", acquisition_date="2024-03-02")
        assert [c.casing_id for c in b.search.combined.candidates] == [a.casing_id]
        assert b.search.combined.candidates[0].agency == "PD-North"
        got = n.get(a.casing_id)
        assert (got.incident_id, got.calibre, got.acquisition_date) == ("N-1", "9mm", "2024-03-01")
        assert {c.casing_id for c in n.list().casings} == {a.casing_id, b.casing_id}
        assert [c.casing_id for c in n.list(incident_id="S-1").casings] == [b.casing_id]
        res = n.search(a.casing_id, calibre="9mm", date_from="2024-03-02")
        assert [c.casing_id for c in res.combined.candidates] == [b.casing_id]
        assert len(n.search(a.casing_id, calibre="45acp").combined.candidates) == 0
        assert [x.region for x in res.regions] == ["breech_face"]
        by_file = n.search(file=fake_scan(3))
        assert len(by_file.combined.candidates) == 2
        assert _stored(catalog) == 2  # searching by file stored nothing
        cmp = n.compare(a.casing_id, b.casing_id)
        assert -1.0 <= cmp.score <= 1.0 and "breech_face" in cmp.region_scores
        d1 = n.decide(a.casing_id, b.casing_id, "inconclusive", "look again")
        d2 = n.decide(a.casing_id, b.casing_id, "hit", "confirmed")
        assert d2.supersedes == d1.decision_id and d2.examiner == "north_exam"
        g = n.links(casing_id=a.casing_id)
        assert {x.incident_id for x in g.nodes} == {"N-1", "S-1"}
        assert {x.jurisdiction for x in g.nodes} == {"north", "south"}
        assert len(g.edges) == 1 and g.edges[0].examiner == "north_exam"
        assert len(s.links(incident_id="S-1").edges) == 1
    with srv.client("north_admin") as adm:
        assert adm.delete(a.casing_id, "wrong exhibit").deleted
        with pytest.raises(grpc.RpcError) as e:
            adm.get(a.casing_id)
        assert _code(e) is grpc.StatusCode.NOT_FOUND
    assert _stored(catalog) == 1
    v = verify(srv.audit.path, load_key(srv.key_file))
    assert v.ok, v.message


def test_cross_tenant_through_faiss_filter(real: tuple[Running, Catalog]) -> None:
    srv, _ = real
    ids = {}
    for user, i in (("north_exam", 1), ("south_exam", 2), ("east_exam", 3)):
        with srv.client(user) as c:
            ids[user] = c.submit(fake_scan(i), incident_id=f"I-{i}", search=False).casing_id
    with srv.client("east_exam") as c:
        assert len(c.search(ids["east_exam"]).combined.candidates) == 0
        assert len(c.search(file=fake_scan(9)).combined.candidates) == 1  # only its own
        for call in (
            lambda: c.get(ids["north_exam"]),
            lambda: c.compare(ids["east_exam"], ids["north_exam"]),
            lambda: c.decide(ids["east_exam"], ids["south_exam"], "hit"),
            lambda: c.links(incident_id="I-1"),
        ):
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert _code(e) is grpc.StatusCode.NOT_FOUND  # as for an unknown id: no oracle
    with srv.client("north_exam") as c:
        found = {x.agency for x in c.search(file=fake_scan(9)).combined.candidates}
        assert found == {"PD-North", "PD-South"}
    with srv.client(None) as c, pytest.raises(grpc.RpcError) as e:
        c.search(file=fake_scan(9))
    assert _code(e) is grpc.StatusCode.UNAUTHENTICATED


def test_status_codes_real_store(real: tuple[Running, Catalog]) -> None:
    srv, catalog = real
    with srv.client("north_admin") as c:
        for call, code in [
            (lambda: c.get("no-such-casing"), grpc.StatusCode.NOT_FOUND),
            (lambda: c.links(incident_id="no-such-incident"), grpc.StatusCode.NOT_FOUND),
            (lambda: c.compare("x", "y"), grpc.StatusCode.NOT_FOUND),
            (lambda: c.submit(b"not a scan at all"), grpc.StatusCode.INVALID_ARGUMENT),
            (lambda: c.submit(b"PK\x03\x04 truncated zip"), grpc.StatusCode.OK),
            (lambda: c.search(file=b"garbage"), grpc.StatusCode.INVALID_ARGUMENT),
        ]:
            if code is grpc.StatusCode.OK:
                continue  # FakeEngine accepts any sniffable content; the real pipeline test below
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert _code(e) is code, e.value
    assert _stored(catalog) == 0 and _objects(srv.data_dir) == []


def _write_random(path: Path, n_bytes: int) -> None:
    with open(path, "wb") as fh:
        for _ in range(n_bytes // (1 << 20)):
            fh.write(os.urandom(1 << 20))


def test_50mb_upload_bounded_memory_nothing_stored(
    real: tuple[Running, Catalog], tmp_path: Path
) -> None:
    srv, catalog = real
    big = tmp_path / "big.x3p"
    _write_random(big, 50 * (1 << 20))
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        t0 = time.monotonic()
        with srv.client("north_sub") as c, pytest.raises(grpc.RpcError) as e:
            c.submit(big)  # streamed from disk in 64 KiB chunks
        elapsed = time.monotonic() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert _code(e) is grpc.StatusCode.INVALID_ARGUMENT  # random bytes are not a scan
    assert "unrecognised file content" in e.value.details()
    # client + server in this process: far below the 50 MB a joined upload would need
    assert peak < 16 * (1 << 20), f"peak Python memory {peak / 2**20:.1f} MiB"
    assert elapsed < 60
    assert _stored(catalog) == 0 and _objects(srv.data_dir) == []
    assert list(tmp_path.glob("upload-*")) == []  # spool file removed


def test_upload_cap_real_store(tmp_path: Path) -> None:
    data = tmp_path / "data"
    catalog = Catalog.open(data, engine=FakeEngine())
    limits = ServiceLimits(max_upload_bytes=1 << 20, spool_dir=str(tmp_path))
    try:
        with running_server(CatalogBackend(catalog), data, limits=limits) as srv:
            with srv.client("north_sub") as c:
                with pytest.raises(grpc.RpcError) as e:
                    c.submit(PNG_MAGIC + b"\x00" * (2 << 20))
                assert _code(e) is grpc.StatusCode.RESOURCE_EXHAUSTED
                assert c.submit(fake_scan(1)).casing_id
            assert _stored(catalog) == 1
    finally:
        catalog.close()
    assert list(tmp_path.glob("upload-*")) == []


def test_deadline_stops_reranking(real: tuple[Running, Catalog]) -> None:
    """A client deadline bounds the server's re-ranking: the call ends near the deadline
    (partial result or DEADLINE_EXCEEDED), not after every slow comparison has run."""
    import time

    srv, catalog = real
    with srv.client("north_sub") as c:
        for i in range(1, 7):
            c.submit(fake_scan(i), search=False)
        catalog.engine.score_delay_s = 0.5  # six candidates: 3 s of re-ranking in full
        t = time.monotonic()
        try:
            res = c.search(file=fake_scan(99), timeout=1.0)
            assert res.partial
        except grpc.RpcError as e:
            assert e.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - t < 2.0


def test_health_and_port_conflict(real: tuple[Running, Catalog], tmp_path: Path) -> None:
    srv, catalog = real
    with srv.client(None) as c:
        assert c.health() == "SERVING"
    audit = scratch_audit(tmp_path)
    with pytest.raises(ServerStartError, match="in use"):
        create_server(
            CatalogBackend(catalog),
            f"127.0.0.1:{srv.port}",
            auth=Authenticator([]),
            policy=SharingPolicy(),
            audit=audit,
        )
    audit.close()


def test_audit_chain_and_tamper_cli(real: tuple[Running, Catalog]) -> None:
    srv, _ = real
    with srv.client("north_sub") as c:
        c.submit(fake_scan(1), search=False)
        with pytest.raises(grpc.RpcError):
            c.get("missing")
    with srv.client(None) as c, pytest.raises(grpc.RpcError):
        c.list()
    recs = [json.loads(x) for x in srv.audit.path.read_text().splitlines()]
    assert [r["outcome"] for r in recs] == ["STARTED", "OK", "NOT_FOUND", "UNAUTHENTICATED"]
    assert recs[0]["user"] == "north_sub" and recs[0]["method"] == "SubmitCasing"
    verify_cmd = ["audit", "verify", "--data-dir", str(srv.data_dir)]
    verify_cmd += ["--audit-key-file", str(srv.key_file)]
    assert cli_main(verify_cmd) == 0
    lines = srv.audit.path.read_text().splitlines()
    lines[2] = lines[2].replace("NOT_FOUND", "OK")
    srv.audit.path.write_text("\n".join(lines) + "\n")
    assert cli_main(verify_cmd) == 1


# --- the command line against the real server ----------------------------------------------


def test_cli_client_commands(
    real: tuple[Running, Catalog], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    srv, _ = real
    folder = tmp_path / "scans"
    folder.mkdir()
    for i in range(3):
        (folder / f"s{i}.png").write_bytes(fake_scan(i))
    (folder / "broken.png").write_bytes(b"garbage")
    # --token=... : a random token may start with "-", which argparse would take for an option
    base = ["--server", srv.address, f"--token={srv.tokens['north_admin']}"]
    assert cli_main(["submit", str(folder), "--incident", "N-9", "--json", *base]) == 2
    out, err = capsys.readouterr()
    ids = [json.loads(x)["casing_id"] for x in out.splitlines()]
    assert len(ids) == 3 and "broken.png: INVALID_ARGUMENT" in err and "3/4 files" in err
    assert cli_main(["search", "--casing-id", ids[0], "--json", *base]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]  # one per candidate
    assert {c["casing_id"] for c in rows} == set(ids[1:])
    assert cli_main(["search", "--casing-id", ids[0], *base]) == 0
    assert "rank" in capsys.readouterr().out
    png = tmp_path / "cmp.png"
    assert cli_main(["compare", ids[0], ids[1], "--png", str(png), *base]) == 0
    assert "score" in capsys.readouterr().out and png.exists()
    assert cli_main(["decide", ids[0], ids[1], "--verdict", "hit", *base]) == 0
    assert "hit" in capsys.readouterr().out
    assert cli_main(["links", "--casing-id", ids[0], "--json", *base]) == 0
    assert json.loads(capsys.readouterr().out)["nodes"][0]["incident_id"] == "N-9"
    assert cli_main(["casings", *base]) == 0
    assert "3 casing(s)" in capsys.readouterr().out
    assert cli_main(["casings", ids[2], "--json", *base]) == 0
    assert json.loads(capsys.readouterr().out)["casing_id"] == ids[2]
    assert cli_main(["delete", ids[2], "--reason", "duplicate", *base]) == 0
    capsys.readouterr()
    # refusals: one line, exit 2
    assert cli_main(["casings", ids[2], *base]) == 2
    assert capsys.readouterr().err.startswith("ballistics: NOT_FOUND: ")
    bad = ["--server", srv.address, "--token=wrong"]
    assert cli_main(["casings", *bad]) == 2
    err = capsys.readouterr().err
    assert err == "ballistics: UNAUTHENTICATED: invalid token\n"
    assert cli_main(["submit", str(folder / "s0.png"), *base[:2]]) == 2  # no token
    assert "BALLISTICS_TOKEN" in capsys.readouterr().err


def test_serve_command_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path / "d")
    assert cli_main(["serve", "--data-dir", d]) == 2
    assert "--auth" in capsys.readouterr().err
    (tmp_path / "auth.json").write_text("[]")
    assert (
        cli_main(
            [
                "serve",
                "--data-dir",
                d,
                "--auth",
                str(tmp_path / "auth.json"),
                "--require-client-cert",
            ]
        )
        == 2
    )
    assert "--tls-ca" in capsys.readouterr().err


@pytest.mark.skipif(
    not all(
        importlib.util.find_spec(f"ballistics.{m}") is not None
        for m in ("pipeline", "descriptors", "compare")
    ),
    reason="`serve` opens the catalog with the real pipeline, not in the tree yet",
)
def test_serve_subprocess_sigterm(tmp_path: Path) -> None:
    """`ballistics serve` as a real process: health SERVING, SIGTERM stops it cleanly."""
    from server.auth import new_token_entry, write_auth_file
    from server.client import Client

    tok, entry = new_token_entry("u", "PD-North", "admin")
    write_auth_file(tmp_path / "auth.json", [entry])
    data = tmp_path / "data"
    generate_key(tmp_path / "audit.key")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            "--data-dir",
            str(data),
            "--auth",
            str(tmp_path / "auth.json"),
            "--port",
            "0",
            "--audit-key-file",
            str(tmp_path / "audit.key"),
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "serving on" in line, line
        port = int(line.split("serving on ")[1].split(" ")[0].rsplit(":", 1)[1])
        with Client(f"127.0.0.1:{port}", tok) as c:
            assert c.health() == "SERVING"
            assert len(c.list().casings) == 0
        proc.terminate()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert verify(data, load_key(tmp_path / "audit.key")).ok


# --- part 2: the real pipeline ----------------------------------------------------------------

HAVE_PIPELINE = all(
    importlib.util.find_spec(f"ballistics.{m}") is not None
    for m in ("pipeline", "descriptors", "compare")
)
needs_pipeline = pytest.mark.skipif(
    not HAVE_PIPELINE, reason="ballistics.pipeline/descriptors/compare not in the tree yet"
)


@pytest.fixture
def pipeline_server(tmp_path: Path) -> Iterator[tuple[Running, CatalogBackend]]:
    data = tmp_path / "data"
    backend, close = open_backend(data, ServiceLimits(spool_dir=str(tmp_path)))
    try:
        with running_server(backend, data, limits=ServiceLimits(spool_dir=str(tmp_path))) as srv:
            yield srv, backend
    finally:
        close()


@needs_pipeline
@pytest.mark.slow
def test_real_scans_submit_search_compare(
    pipeline_server: tuple[Running, CatalogBackend], fadul_paths: list[Path], tmp_path: Path
) -> None:
    srv, backend = pipeline_server
    by_name = {p.stem: p for p in fadul_paths}
    picks = ["Fadul_1-1", "Fadul_1-2", "Fadul_2-1", "Fadul_3-1"]
    ids = {}
    with srv.client("north_exam") as c:
        for name in picks:
            r = c.submit(by_name[name], incident_id=name, calibre="9mm", search=False)
            assert r.segmentation.primer_radius_px > 0
            # The segmentation's firing-pin class is stored, so the class filter can use it.
            assert backend.catalog.get(r.casing_id).firing_pin_shape in ("round", "elongated")
            ids[name] = r.casing_id
        res = c.search(ids["Fadul_1-1"], max_results=3)
        assert res.combined.candidates[0].casing_id == ids["Fadul_1-2"]
        by_file = c.search(file=by_name["Fadul_1-2"], max_results=3)
        assert by_file.combined.candidates[0].casing_id in (ids["Fadul_1-1"], ids["Fadul_1-2"])
        cmp = c.compare(ids["Fadul_1-1"], ids["Fadul_1-2"])
        assert cmp.score > c.compare(ids["Fadul_1-1"], ids["Fadul_2-1"], picture=False).score
        assert cmp.png.startswith(PNG_MAGIC)
    assert int(backend.catalog.stats()["casings"]) == 4


@needs_pipeline
def test_real_pipeline_bad_scans(
    pipeline_server: tuple[Running, CatalogBackend], tmp_path: Path
) -> None:
    srv, backend = pipeline_server
    with srv.client("north_sub") as c:
        for content in (b"PK\x03\x04 truncated zip", PNG_MAGIC + b"broken png"):
            with pytest.raises(grpc.RpcError) as e:
                c.submit(content)
            assert _code(e) is grpc.StatusCode.INVALID_ARGUMENT
    assert int(backend.catalog.stats()["casings"]) == 0
    assert _objects(srv.data_dir) == []


@needs_pipeline
def test_real_pipeline_pixel_cap(tmp_path: Path) -> None:
    from ballistics import synth

    data = tmp_path / "data"
    limits = ServiceLimits(max_pixels=10_000, spool_dir=str(tmp_path))
    backend, close = open_backend(data, limits)
    corpus = tmp_path / "corpus"
    synth.write_corpus(corpus, guns=1, shots=1, seed=0)
    scan = next(corpus.rglob("*.x3p"))
    try:
        with running_server(backend, data, limits=limits) as srv, srv.client("north_sub") as c:
            with pytest.raises(grpc.RpcError) as e:
                c.submit(scan)
            assert _code(e) is grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        close()
