"""The server's interceptors: one enforces the limits, one records what is refused outside
the servicer. (The servicer, :mod:`server.service`, audits every call it handles itself.)

:class:`ServerGuard` - what keeps one client from taking the server down:

- Matching calls run in at most ``workers`` threads (``max_waiting`` more may wait up to
  ``busy_wait_s`` for one); the executor has :data:`HEALTH_THREADS` more, so the health service
  answers while every worker is busy.
- At most ``ServiceLimits.max_concurrent_uploads`` uploads stream at once; more are refused at
  once with ``RESOURCE_EXHAUSTED``, so stalled uploads cannot hold every worker.
- An upload that sends nothing for ``upload_idle_timeout_s``, or less than
  ``upload_min_rate_bytes_s`` on average after ``upload_rate_grace_s``, ends with
  ``DEADLINE_EXCEEDED``; a stream cut by a cancellation is never taken as complete.
- Every call runs inside :meth:`ballistics.limits.MemoryBudget.request`: the scans it decodes
  reserve their declared working memory first, and a file carried in the request reserves its
  size (over the budget: ``RESOURCE_EXHAUSTED``).
- A request (or stream message) that does not parse reaches the handler as
  :class:`~server.validation.Undecodable` and is refused with ``INVALID_ARGUMENT`` (and
  audited by the servicer), not ``INTERNAL`` from the gRPC layer.

Every refusal the guard makes itself (busy workers, upload slots, the budget) is recorded by
the :class:`RefusalAuditor`, with the caller's address.

:class:`RefusalAuditor` - records refusals that happen before or outside any handler:
``RESOURCE_EXHAUSTED`` when gRPC's ``maximum_concurrent_rpcs`` calls are already active, a
request message that does not decode (methods the guard does not cover, e.g. health), and the
guard's refusals. Interceptors run on gRPC's polling thread, under the server's lock; a
synchronous fsync there would stall every call. Records are therefore queued and written by one
background thread (bounded queue; a burst beyond it is counted and the count written with the
next record).

The concurrency refusal is predicted from the server's own counters (:func:`grpc_concurrency`),
read the way gRPC itself decides (``active_rpc_count >= maximum_concurrent_rpcs`` in
``grpc._server``). No public grpcio API tells an interceptor that gRPC is about to refuse the
call (the refusal happens after the interceptors ran, without a handler), and counting calls in
a handler wrapper instead would need a worker thread per refused call - which is what the limit
is there to save. The private read is isolated in :func:`grpc_concurrency`, and
``tests/test_interceptors.py`` fails if a grpcio upgrade renames the counters; at run time the
probe then says "not refused" and logs once: refusals go unrecorded, calls are unaffected.
"""

from __future__ import annotations

import argparse
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf.message import Message

from ballistics.limits import MemoryBudget, MemoryBudgetExceeded, MiB, reserve_working_memory

from .audit import AuditLog, peer_of
from .service import ServiceError, ServiceLimits
from .validation import check_decodable, tolerant, validate_message

log = logging.getLogger("ballistics.server")

#: Executor threads kept for the health service beyond the Matching workers.
HEALTH_THREADS = 2
#: How long the end of a stream waits for a cancellation that raced it (seconds).
CANCEL_GRACE_S = 0.05
MATCHING_PREFIX = "/ballistics.v1.Matching/"
#: The intelligence calls (server.intel_service) share the Matching workers' limits.
GUARDED_PREFIXES = (MATCHING_PREFIX, "/ballistics.v1.Intelligence/")
UPLOAD_METHODS = frozenset({MATCHING_PREFIX + "SubmitCasing"})
#: Refusal records queued for the writer thread at most (a burst beyond it is counted).
QUEUE_SIZE = 1000
_END = object()


# ------------------------------------------------------------------------- the guard


class WorkerGate:
    """At most ``workers`` holders; up to ``max_waiting`` more wait up to a timeout."""

    def __init__(self, workers: int, max_waiting: int = 0) -> None:
        self.workers = workers
        self.max_waiting = max_waiting
        self.active = 0
        self._waiting = 0
        self._cond = threading.Condition()

    def enter(self, timeout: float) -> bool:
        with self._cond:
            if self.active < self.workers:
                self.active += 1
                return True
            if self._waiting >= self.max_waiting:
                return False
            self._waiting += 1
            try:
                end = time.monotonic() + timeout
                while self.active >= self.workers:
                    left = end - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(left)
                self.active += 1
                return True
            finally:
                self._waiting -= 1

    def leave(self) -> None:
        with self._cond:
            self.active -= 1
            self._cond.notify()


def guarded_upload(messages: Iterator[Any], context: Any, limits: ServiceLimits) -> Iterator[Any]:
    """The request stream of an upload, with the idle timeout, the minimum rate, undecodable
    messages refused, and a cancelled stream refused instead of ending normally.

    The underlying iterator blocks without a timeout, so a daemon thread reads it into a small
    queue (at most a few chunks in memory) and this generator waits on the queue.
    """
    q: queue.Queue[Any] = queue.Queue(maxsize=4)
    stop = threading.Event()
    cancelled = threading.Event()
    context.add_callback(cancelled.set)

    def pump() -> None:
        try:
            for m in messages:
                while not stop.is_set():
                    try:
                        q.put(m, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            item: Any = _END
        except grpc.RpcError:
            item = grpc.StatusCode.CANCELLED
        except Exception as e:  # the transport failed under us
            item = e
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    threading.Thread(target=pump, name="upload-reader", daemon=True).start()
    idle = limits.upload_idle_timeout_s
    rate = limits.upload_min_rate_bytes_s
    start = time.monotonic()
    received = 0
    try:
        while True:
            wait = idle
            if rate > 0:  # by now + wait, at least rate * (t - start - grace) bytes
                wait = min(
                    wait, start + limits.upload_rate_grace_s + received / rate - time.monotonic()
                )
            try:
                item = q.get(timeout=max(wait, 0.0))
            except queue.Empty:
                raise _stalled(idle, wait, received, time.monotonic() - start, limits) from None
            if item is _END:
                if cancelled.wait(CANCEL_GRACE_S) or not context.is_active():
                    raise _cancelled()
                # the spooled upload is read into memory to be decoded
                reserve_working_memory(2 * received, "the upload")
                return
            if item is grpc.StatusCode.CANCELLED:
                raise _cancelled()
            if isinstance(item, Exception):
                raise ServiceError(grpc.StatusCode.UNAVAILABLE, "the upload stream broke") from item
            check_decodable(item)
            if isinstance(item, Message):
                validate_message(item)
                if item.WhichOneof("part") == "chunk":
                    received += len(item.chunk)
            yield item
    finally:
        stop.set()


def _cancelled() -> ServiceError:
    return ServiceError(
        grpc.StatusCode.CANCELLED, "the client cancelled the upload; nothing was stored"
    )


def _stalled(
    idle: float, wait: float, received: int, elapsed: float, limits: ServiceLimits
) -> ServiceError:
    if wait >= idle:
        return ServiceError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"upload stalled: no data for {idle:g} s (server idle timeout, serve "
            "--upload-idle-timeout); nothing was stored",
        )
    return ServiceError(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        f"upload too slow: {received:,} bytes in {elapsed:.1f} s, below the minimum rate of "
        f"{limits.upload_min_rate_bytes_s:,.0f} bytes/s (serve --upload-min-rate-kbs); "
        "nothing was stored",
    )


class ServerGuard(grpc.ServerInterceptor):
    """Wraps every Matching handler with the slots, the budget, the upload stream guard and the
    tolerant deserializer; its refusals go to ``refusals`` (see the module docstring)."""

    def __init__(
        self,
        limits: ServiceLimits,
        *,
        workers: int,
        max_waiting: int,
        busy_wait_s: float = 2.0,
        refusals: RefusalAuditor | None = None,
    ) -> None:
        self.limits = limits
        self.budget = MemoryBudget(limits.memory_budget_bytes)
        self.workers = WorkerGate(workers, max_waiting)
        self.uploads = WorkerGate(max(1, limits.max_concurrent_uploads))
        self.busy_wait_s = busy_wait_s
        self.refusals = refusals

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(GUARDED_PREFIXES):
            return handler
        upload = method in UPLOAD_METHODS
        name = _method_name(handler_call_details)
        if handler.unary_unary is not None:
            return handler._replace(
                unary_unary=self._wrap(handler.unary_unary, name, upload=False),
                request_deserializer=tolerant(handler.request_deserializer),
            )
        if handler.stream_unary is not None:
            return handler._replace(
                stream_unary=self._wrap(handler.stream_unary, name, upload=upload),
                request_deserializer=tolerant(handler.request_deserializer),
            )
        return handler

    def _refuse(
        self, context: grpc.ServicerContext, method: str, code: grpc.StatusCode, message: str
    ) -> None:
        """Record the refusal, then end the call with it (``context.abort`` raises)."""
        if self.refusals is not None:
            self.refusals.record(method, code.name, message, peer_of(context))
        context.abort(code, message)

    def _wrap(self, behaviour: Callable[[Any, Any], Any], method: str, *, upload: bool) -> Callable:
        busy = grpc.StatusCode.RESOURCE_EXHAUSTED

        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            if not self.workers.enter(self.busy_wait_s):
                self._refuse(
                    context,
                    method,
                    busy,
                    f"server busy: all {self.workers.workers} workers are in use; retry shortly",
                )
            try:
                if upload and not self.uploads.enter(0.0):
                    self._refuse(
                        context,
                        method,
                        busy,
                        f"server busy: {self.uploads.workers} uploads are in progress (serve "
                        "--max-uploads); retry shortly",
                    )
                try:
                    with self.budget.request():
                        if upload:
                            request = guarded_upload(request, context, self.limits)
                        elif isinstance(request, Message):
                            # a file carried in the request is held while it is processed
                            size = request.ByteSize()
                            if size > MiB:
                                try:
                                    reserve_working_memory(2 * size, "the request")
                                except MemoryBudgetExceeded as exc:
                                    self._refuse(context, method, busy, str(exc))
                        return behaviour(request, context)
                finally:
                    if upload:
                        self.uploads.leave()
            finally:
                self.workers.leave()

        return guarded


# ------------------------------------------------------------------------- refusal auditor


def grpc_concurrency(server: Any) -> tuple[int, int | None]:
    """(active calls, ``maximum_concurrent_rpcs``) of a ``grpc.Server``, read from its private
    ``_state`` (see the module docstring for why). AttributeError when grpcio changed them."""
    state = server._state
    limit = state.maximum_concurrent_rpcs
    return int(state.active_rpc_count), None if limit is None else int(limit)


class RefusalAuditor(grpc.ServerInterceptor):
    """Records refusals made outside the servicer in the audit log (asynchronously)."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit
        self._server: Any = None
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(QUEUE_SIZE)
        self._dropped = 0
        self._dropped_lock = threading.Lock()
        self._warned = False
        self._thread = threading.Thread(target=self._writer, name="audit-refusals", daemon=True)
        self._thread.start()

    def attach(self, server: grpc.Server) -> None:
        """Let the probe read the server's concurrency counters (see the module docstring)."""
        self._server = server

    def _over_limit(self) -> bool:
        if self._server is None:
            return False
        try:
            active, limit = grpc_concurrency(self._server)
        except AttributeError:
            if not self._warned:
                self._warned = True
                log.warning("audit: cannot read grpc's concurrency counters; refusals unrecorded")
            return False
        return limit is not None and active >= limit

    # -- grpc.ServerInterceptor --------------------------------------------------------------
    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        method = _method_name(handler_call_details)
        if handler is None:
            return None
        if self._over_limit():
            self.record(
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
                self.record(
                    method,
                    "UNDECODABLE",
                    f"request of {len(data):,} bytes does not decode ({type(exc).__name__});"
                    " refused before any handler ran",
                )
                raise

        return deserialize

    # -- the writer --------------------------------------------------------------------------
    def record(self, method: str, outcome: str, detail: str, peer: str = "") -> None:
        """Queue one refusal record (never blocks; see the module docstring)."""
        rec = {"method": method, "outcome": outcome, "detail": detail, "peer": peer}
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


def _method_name(details: Any) -> str:
    """``SubmitCasing`` from ``/ballistics.v1.Matching/SubmitCasing``."""
    return str(getattr(details, "method", "") or "").rsplit("/", 1)[-1]


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


# ------------------------------------------------------------------------- serve options


def add_serve_limit_options(p: argparse.ArgumentParser) -> None:
    """``serve`` flags for the limits of this module (defaults: :class:`ServiceLimits`)."""
    d = ServiceLimits()
    g = p.add_argument_group("limits")
    g.add_argument(
        "--max-pixels",
        type=int,
        default=d.max_pixels,
        help=f"largest scan accepted, in pixels (default {d.max_pixels:,}: 4000 x 4000)",
    )
    g.add_argument(
        "--memory-budget-mb",
        type=int,
        default=d.memory_budget_bytes // MiB,
        help="working memory shared by concurrent requests; over it a request is refused "
        f"with RESOURCE_EXHAUSTED (default {d.memory_budget_bytes // MiB} MiB)",
    )
    g.add_argument(
        "--upload-idle-timeout",
        type=float,
        default=d.upload_idle_timeout_s,
        help=f"seconds an upload may send nothing (default {d.upload_idle_timeout_s:g})",
    )
    g.add_argument(
        "--upload-min-rate-kbs",
        type=float,
        default=d.upload_min_rate_bytes_s / 1024,
        help="minimum average upload rate in KiB/s after the first "
        f"{d.upload_rate_grace_s:g} s (default {d.upload_min_rate_bytes_s / 1024:g}; 0: none)",
    )
    g.add_argument(
        "--max-uploads",
        type=int,
        default=d.max_concurrent_uploads,
        help=f"uploads streaming at once (default {d.max_concurrent_uploads})",
    )


def limits_from_args(args: argparse.Namespace) -> ServiceLimits:
    """The :class:`ServiceLimits` the ``serve`` flags ask for."""
    for name in ("max_pixels", "memory_budget_mb", "max_uploads"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive")
    if args.upload_idle_timeout <= 0 or args.upload_min_rate_kbs < 0:
        raise ValueError("--upload-idle-timeout must be > 0 and --upload-min-rate-kbs >= 0")
    return ServiceLimits(
        max_pixels=args.max_pixels,
        memory_budget_bytes=args.memory_budget_mb * MiB,
        upload_idle_timeout_s=args.upload_idle_timeout,
        upload_min_rate_bytes_s=args.upload_min_rate_kbs * 1024,
        max_concurrent_uploads=args.max_uploads,
    )
