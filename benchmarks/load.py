"""Bounded load test of the gRPC service on loopback: N clients x M rounds of submit + search.

    python benchmarks/load.py --clients 8 --rounds 25            # writes benchmarks/RESULTS-load.md
    python benchmarks/load.py --engine real --scans DIR          # the real pipeline on real scans

The server runs in a child process (its own GIL) on 127.0.0.1 with a fresh data directory
(index.Catalog: SQLite + FAISS); each client thread submits a casing, then searches with it,
M times. ``--engine fake`` (default) uses index.testing.FakeEngine, so the figures measure the
service, the store and FAISS, not the image pipeline; ``--engine real`` submits the scan files
of ``--scans`` (cycled) through the real pipeline. Stops by itself; reports throughput,
p50/p99 latency per operation and the error count.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _serve(data_dir: str, engine: str, workers: int, q: Any, stop: Any) -> None:
    from index.service import Catalog
    from server.app import CatalogBackend, create_server, open_backend
    from server.audit import AuditLog, generate_key, load_key
    from server.auth import Authenticator, new_token_entry
    from server.policy import SharingPolicy
    from server.service import ServiceLimits

    limits = ServiceLimits(spool_dir=data_dir)
    backend: Any
    close: Any
    if engine == "fake":
        from index.testing import FakeEngine

        catalog = Catalog.open(Path(data_dir), engine=FakeEngine(dim=64))
        backend, close = CatalogBackend(catalog), catalog.close
    else:
        backend, close = open_backend(Path(data_dir), limits)
    token, entry = new_token_entry("load", "PD-Load", "examiner")
    key_file = Path(data_dir).parent / f"{Path(data_dir).name}.audit.key"
    if not key_file.exists():
        generate_key(key_file)
    audit = AuditLog.in_dir(data_dir, load_key(key_file))
    server, port = create_server(
        backend,
        "127.0.0.1:0",
        auth=Authenticator.from_dict([entry]),
        policy=SharingPolicy.isolated(),
        audit=audit,
        limits=limits,
        max_workers=workers,
        maximum_concurrent_rpcs=max(32, workers * 4),
    )
    server.start()
    q.put((port, token))
    stop.wait()
    server.stop(5)
    audit.close()
    close()


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from server.client import Client

    scans: list[bytes] = []
    if args.engine == "real":
        if not args.scans:
            raise SystemExit("--engine real needs --scans DIR (X3P/PNG files)")
        scans = [p.read_bytes() for p in sorted(Path(args.scans).glob("*.x3p"))][: args.max_scans]
        if not scans:
            raise SystemExit(f"no .x3p files in {args.scans}")
    ctx = mp.get_context("spawn")
    q, stop = ctx.Queue(), ctx.Event()
    with tempfile.TemporaryDirectory(prefix="load-") as data_dir:
        proc = ctx.Process(target=_serve, args=(data_dir, args.engine, args.workers, q, stop))
        proc.start()
        port, token = q.get(timeout=120)
        lat: dict[str, list[float]] = {"submit": [], "search": []}
        errors: list[str] = []
        lock = threading.Lock()

        def client(k: int) -> None:
            with Client(f"127.0.0.1:{port}", token, timeout=args.timeout) as c:
                for i in range(args.rounds):
                    if scans:
                        data = scans[(k * args.rounds + i) % len(scans)]
                    else:
                        data = PNG_MAGIC + f"client {k} round {i}".encode() + os.urandom(2048)
                    for op in ("submit", "search"):
                        t0 = time.perf_counter()
                        try:
                            if op == "submit":
                                cid = c.submit(data, search=False, file_name="load.bin").casing_id
                            else:
                                c.search(cid, max_results=10)
                        except Exception as e:
                            with lock:
                                errors.append(f"{op}: {e}")
                            break
                        with lock:
                            lat[op].append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        stop.set()
        proc.join(60)
    n = sum(len(v) for v in lat.values())
    return {
        "wall_s": wall,
        "requests": n,
        "throughput_rps": n / wall if wall else 0.0,
        "errors": errors,
        "ops": {
            op: {
                "n": len(v),
                "p50_ms": 1e3 * _pct(v, 50),
                "p99_ms": 1e3 * _pct(v, 99),
                "mean_ms": 1e3 * statistics.fmean(v) if v else float("nan"),
            }
            for op, v in lat.items()
        },
    }


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical cores available, {platform.system()}"
        f" {platform.release()}, Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=25, help="submit+search rounds per client")
    ap.add_argument("--workers", type=int, default=8, help="server RPC threads")
    ap.add_argument("--engine", choices=["fake", "real"], default="fake")
    ap.add_argument("--scans", help="folder of scan files for --engine real")
    ap.add_argument("--max-scans", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS-load.md"))
    args = ap.parse_args(argv)
    if args.clients < 1 or args.rounds < 1:
        ap.error("--clients and --rounds must be >= 1")
    r = run(args)
    cmd = "python benchmarks/load.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Load benchmark: the gRPC service on loopback",
        "",
        f"- Command: `{cmd.strip()}`",
        f"- Machine: {_machine()}",
        f"- Engine: {args.engine}"
        + (
            " (index.testing.FakeEngine: service + SQLite store + FAISS, no image pipeline)"
            if args.engine == "fake"
            else f" (real pipeline on {args.scans})"
        ),
        f"- Load: {args.clients} concurrent clients x {args.rounds} rounds of"
        f" (SubmitCasing, then Search by the new casing id); server: {args.workers} RPC threads"
        ", separate process, fresh data directory, every call authenticated and audited (fsync)",
        "",
        f"Wall time {r['wall_s']:.2f} s, {r['requests']} requests,"
        f" **{r['throughput_rps']:.1f} requests/s**, errors: **{len(r['errors'])}**",
        "",
        "| operation | n | p50 (ms) | p99 (ms) | mean (ms) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for op, s in r["ops"].items():
        lines.append(
            f"| {op} | {s['n']} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['mean_ms']:.1f} |"
        )
    if r["errors"]:
        lines += ["", "First errors:", *(f"- {e}" for e in r["errors"][:5])]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)
    return 1 if r["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
