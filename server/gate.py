"""Audit what gRPC refuses before a handler runs: the concurrency limit and undecodable requests.

The servicer (:mod:`server.service`) audits every call it handles. Two refusals happen inside
gRPC, before any handler: ``RESOURCE_EXHAUSTED`` when ``maximum_concurrent_rpcs`` calls are
already active, and a request message that does not decode. :class:`RefusalAuditor` is a server
interceptor that sees both and records them (method, outcome, the reason).

Interceptors run on gRPC's polling thread, under the server's lock; a synchronous fsync there
would stall every call. Records are therefore queued and written by one background thread
(bounded queue; a burst beyond it is counted and the count written with the next record).

The concurrency refusal is predicted from the server's own counters, read the way gRPC itself
decides (``grpc._server`` state: ``active_rpc_count >= maximum_concurrent_rpcs``, checked under
the same lock). If a future grpcio renames those counters the probe says "not refused" and logs
once: refusals then go unrecorded, calls are unaffected.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import grpc

from .audit import AuditLog

log = logging.getLogger("ballistics.server")

QUEUE_SIZE = 1000


class RefusalAuditor(grpc.ServerInterceptor):
    """Server interceptor recording gRPC-layer refusals in the audit log (asynchronously)."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit
        self._server_state: Any = None
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(QUEUE_SIZE)
        self._dropped = 0
        self._dropped_lock = threading.Lock()
        self._warned = False
        self._thread = threading.Thread(target=self._writer, name="audit-refusals", daemon=True)
        self._thread.start()

    def attach(self, server: grpc.Server) -> None:
        """Let the probe read the server's concurrency counters (see the module docstring)."""
        self._server_state = getattr(server, "_state", None)

    # -- the probe ---------------------------------------------------------------------------
    def _over_limit(self) -> bool:
        state = self._server_state
        try:
            limit = state.maximum_concurrent_rpcs
            return limit is not None and int(state.active_rpc_count) >= int(limit)
        except AttributeError:
            if not self._warned:
                self._warned = True
                log.warning("audit: cannot read grpc's concurrency counters; refusals unrecorded")
            return False

    # -- grpc.ServerInterceptor --------------------------------------------------------------
    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        method = str(getattr(handler_call_details, "method", "") or "").rsplit("/", 1)[-1]
        if handler is None:
            return None
        if self._over_limit():
            self._record(
                method,
                "RESOURCE_EXHAUSTED",
                "refused by the server's concurrent-call limit before any handler ran",
            )
        deserializer = handler.request_deserializer
        if deserializer is None:
            return handler
        return _with_deserializer(handler, self._checked(deserializer, method))

    def _checked(self, deserializer: Callable[[bytes], Any], method: str) -> Callable[[bytes], Any]:
        def deserialize(data: bytes) -> Any:
            try:
                return deserializer(data)
            except Exception as exc:
                self._record(
                    method,
                    "UNDECODABLE",
                    f"request of {len(data):,} bytes does not decode ({type(exc).__name__});"
                    " refused before any handler ran",
                )
                raise

        return deserialize

    # -- the writer --------------------------------------------------------------------------
    def _record(self, method: str, outcome: str, detail: str) -> None:
        rec = {"method": method, "outcome": outcome, "detail": detail}
        try:
            self._queue.put_nowait(rec)
        except queue.Full:
            with self._dropped_lock:
                self._dropped += 1

    def _writer(self) -> None:
        while True:
            rec = self._queue.get()
            if rec is None:
                return
            with self._dropped_lock:
                dropped, self._dropped = self._dropped, 0
            if dropped:
                rec["detail"] += f" ({dropped} more refusals in a burst, not recorded one by one)"
            try:
                self.audit.append(user="", agency="", targets=(), **rec)
            except Exception:
                log.exception("audit: could not record a gRPC-layer refusal")
            finally:
                self._queue.task_done()

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until queued records are written (tests; shutdown)."""
        done = threading.Event()

        def wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        done.wait(timeout)

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(5.0)


def _with_deserializer(
    handler: grpc.RpcMethodHandler, deserializer: Callable[[bytes], Any]
) -> grpc.RpcMethodHandler:
    """The same handler with another request deserializer."""
    kinds = {
        (False, False): (grpc.unary_unary_rpc_method_handler, handler.unary_unary),
        (False, True): (grpc.unary_stream_rpc_method_handler, handler.unary_stream),
        (True, False): (grpc.stream_unary_rpc_method_handler, handler.stream_unary),
        (True, True): (grpc.stream_stream_rpc_method_handler, handler.stream_stream),
    }
    make, behavior = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(
        behavior,
        request_deserializer=deserializer,
        response_serializer=handler.response_serializer,
    )
