"""server.interceptors: the guard's own refusals (busy workers, too many uploads, the memory
budget) are audited like every other refusal, and the gRPC internals the concurrency probe
reads are still where it reads them."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest

from server.service import ServiceLimits
from tests.test_server_machinery import FakeBackend, _stalled_upload
from tests.test_server_support import Running, running_server


def _records(srv: Running) -> list[dict[str, Any]]:
    assert srv.server.refusals is not None
    srv.server.refusals.flush()
    return [json.loads(x) for x in srv.audit.path.read_text().splitlines()]


def test_upload_slot_refusal_is_audited(tmp_path: Path) -> None:
    data = tmp_path / "data"
    limits = ServiceLimits(spool_dir=str(data), max_concurrent_uploads=1)
    with running_server(FakeBackend(), data, limits=limits) as srv:
        release = threading.Event()
        c1, c2 = srv.client("north_sub"), srv.client("north_sub")
        try:
            first = _stalled_upload(c1, release)
            threading.Event().wait(0.5)  # the first upload holds the only upload slot
            second = _stalled_upload(c2, release)
            with pytest.raises(grpc.RpcError) as e:
                second.result(timeout=10)
            assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            first.cancel()
            release.set()
            c1.close()
            c2.close()
        recs = _records(srv)
    refused = [r for r in recs if r["outcome"] == "RESOURCE_EXHAUSTED"]
    assert [r["method"] for r in refused] == ["SubmitCasing"]
    assert "uploads are in progress" in refused[0]["detail"]
    assert refused[0]["peer"].startswith(("ipv4:127.0.0.1:", "ipv6:"))


def test_busy_workers_refusal_is_audited(tmp_path: Path) -> None:
    backend = FakeBackend()
    backend.submit_delay = 3.0
    data = tmp_path / "data"
    with running_server(backend, data, max_workers=1) as srv:
        srv.server.guard.busy_wait_s = 0.2  # type: ignore[union-attr]
        t = threading.Thread(
            target=lambda: srv.client("north_sub").submit(b"SCAN slow", search=False)
        )
        t.start()
        assert backend.submitting.wait(5)
        with srv.client("north_exam") as c:  # one waits for the worker, one is refused
            waiting = threading.Thread(target=lambda: _quietly(c.list))
            waiting.start()
            threading.Event().wait(0.05)
            with pytest.raises(grpc.RpcError) as e:
                c.list()
            assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "server busy" in (e.value.details() or "")
            waiting.join(10)
        t.join(10)
        recs = _records(srv)
    refused = [r for r in recs if r["outcome"] == "RESOURCE_EXHAUSTED"]
    assert refused and all(r["method"] == "ListCasings" for r in refused)
    assert "workers are in use" in refused[-1]["detail"]


def test_request_over_the_memory_budget_is_refused_and_audited(tmp_path: Path) -> None:
    """A unary request carrying a file reserves its size before the handler runs; over the
    budget it is RESOURCE_EXHAUSTED (not UNKNOWN from an exception in the interceptor)."""
    data = tmp_path / "data"
    limits = ServiceLimits(spool_dir=str(data), memory_budget_bytes=3 * 1024 * 1024)
    with running_server(FakeBackend(), data, limits=limits) as srv:
        with srv.client("north_exam") as c, pytest.raises(grpc.RpcError) as e:
            c.search(file=b"\x89PNG\r\n\x1a\n" + bytes(2 * 1024 * 1024))
        assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, e.value.details()
        assert "memory budget" in (e.value.details() or "")
        recs = _records(srv)
    refused = [r for r in recs if r["outcome"] == "RESOURCE_EXHAUSTED"]
    assert [r["method"] for r in refused] == ["Search"]
    assert "memory budget" in refused[0]["detail"]


def test_grpc_server_state_still_has_the_counters_the_probe_reads() -> None:
    """The concurrency-refusal probe reads ``grpc.Server._state`` (no public API tells an
    interceptor that gRPC will refuse the call). If a grpcio upgrade renames these, this test
    fails and the probe must be updated (calls are unaffected; refusals would go unrecorded)."""
    from concurrent import futures

    from server.interceptors import grpc_concurrency

    server = grpc.server(futures.ThreadPoolExecutor(1), maximum_concurrent_rpcs=3)
    try:
        assert grpc_concurrency(server) == (0, 3)
        state = server._state  # type: ignore[attr-defined]
        state.active_rpc_count = 3
        assert grpc_concurrency(server) == (3, 3)
    finally:
        server.stop(None)


def _quietly(fn: Any) -> None:
    try:
        fn()
    except grpc.RpcError:
        pass
