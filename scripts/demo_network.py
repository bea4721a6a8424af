"""Three sovereign servers on loopback searching each other under agreements (`make demo-network`).

A, B and C each have their own data dir, audit log, tokens and certificates (made here with
``server.federation_pki``); every call between them is real gRPC over mutual TLS. A and B
share agreement AB-2025 (9mm, pictures released); B and C share BC-2025 (scores only); A and C
have none. The demo shows, with the real pipeline on synthetic scans:

1. a casing stored in A is found in B by a federated search from A; C is never asked;
2. the latency of that federated search against a local one (medians of repeated runs);
3. pictures: B releases a comparison picture to A (AB-2025 says pictures), C refuses one to B
   (BC-2025 says scores), naming the agreement;
4. a hit confirmed in A is recorded in B (and again: recorded once).

    python scripts/demo_network.py [--out out/demo-network] [--repeats 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.app import limited_engine  # noqa: E402
from server.client import Client  # noqa: E402
from server.federation_local import (  # noqa: E402
    audit_records,
    base_config,
    prepare,
    start,
)
from server.service import ServiceLimits  # noqa: E402

AB = {
    "id": "AB-2025",
    "calibres": ["9mm"],
    "date_from": "2020-01-01",
    "date_to": "2030-12-31",
    "release": "pictures",
}
BC = {"id": "BC-2025", "release": "scores"}


def say(msg: str) -> None:
    print(msg, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "out" / "demo-network"))
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each search")
    ap.add_argument("--json", help="also write the measurements to this JSON file")
    args = ap.parse_args(argv)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    from ballistics.synth import write_corpus

    say("== synthetic scans (4 guns x 2 shots, seed 11)")
    manifest = write_corpus(out / "corpus", guns=4, shots=2, seed=11)
    rows = list(csv.DictReader(manifest.read_text().splitlines()))
    scans = {(r["firearm_id"], i % 2): manifest.parent / r["file"] for i, r in enumerate(rows)}
    guns = sorted({g for g, _ in scans})

    say("== certificates and configs (each server its own CA)")
    a = prepare(out, "A", ["PD-A"])
    b = prepare(out, "B", ["PD-B"])
    c = prepare(out, "C", ["PD-C"])
    ca, cb, cc = base_config(a), base_config(b), base_config(c)
    ca["peers"] = [b.peer_entry(a), c.peer_entry(a)]  # A knows C's address: no agreement
    ca["agreements"] = [{**AB, "peer": "B", "send_agencies": ["PD-A"]}]
    cb["peers"] = [a.peer_entry(b), c.peer_entry(b)]
    cb["agreements"] = [
        {**AB, "peer": "A", "send_agencies": ["PD-B"]},
        {**BC, "peer": "C", "send_agencies": ["PD-B"]},
    ]
    cc["peers"] = [b.peer_entry(c)]
    cc["agreements"] = [{**BC, "peer": "B", "send_agencies": ["PD-C"]}]
    servers = [a, b, c]
    try:
        for srv, cfg in ((a, ca), (b, cb), (c, cc)):
            start(srv, cfg, engine=limited_engine(ServiceLimits()))
            say(
                f"   {srv.name}: Matching {srv.address}, Federation 127.0.0.1:{srv.fed_port} (mTLS)"
            )

        say(
            "== casings: A holds gun 0 shot 0 and guns 1-3 shot 1; B holds gun 0 shot 1 and"
            " guns 1-2 shot 0; C holds gun 3 shot 0"
        )
        md = {"caliber": "9mm", "date": "2024-06-01"}

        def ingest(srv, agency: str, key: tuple[str, int], incident: str) -> str:
            data = scans[key].read_bytes()
            rec = srv.catalog.ingest_bytes(
                data, scans[key].name, {**md, "agency": agency, "incident": incident}
            )
            return str(rec.casing_id)

        qa = ingest(a, "PD-A", (guns[0], 0), "A-INC-1")
        for i in (1, 2, 3):  # A's local search then compares 3 candidates, as B's does
            ingest(a, "PD-A", (guns[i], 1), f"A-INC-{i + 1}")
        b_same = ingest(b, "PD-B", (guns[0], 1), "B-INC-7")
        ingest(b, "PD-B", (guns[1], 0), "B-INC-8")
        ingest(b, "PD-B", (guns[2], 0), "B-INC-9")
        ingest(c, "PD-C", (guns[3], 0), "C-INC-3")

        say("== 1. federated search from A (PD-A), scope all")
        with Client(a.address, a.token["PD-A"], timeout=60) as cl:
            resp = cl.search(qa, scope="all", max_results=5)
        for o in resp.peers:
            say(f"   peer {o.server}: {o.state} {o.agreement_id} {o.detail}")
        for x in resp.combined.candidates:
            where = f"@{x.server} ({x.agreement_id})" if x.server else "@A (local)"
            score = f"{x.score:.3f}" if x.HasField("score") else "-"
            say(f"   {x.rank}. {x.casing_id} {where} score {score} incident {x.incident_id or '-'}")
        top = next(x for x in resp.combined.candidates if x.server == "B")
        found = (
            resp.combined.candidates[0].server == "B"
            and b.node.store.casing_of_ref(top.casing_id, "A") == b_same
        )
        say(f"   top candidate is B's casing of the same gun: {found}")
        c_calls = [r for r in audit_records(c) if r["method"].startswith("Federation.")]
        asked_c = any("A" in r["user"] for r in c_calls)
        say(f"   C's audit log holds a call from A: {asked_c}")

        say(f"== 2. latency, {args.repeats} runs each (the real pipeline, loopback)")
        times: dict[str, list[float]] = {"local": [], "federated": []}
        with Client(a.address, a.token["PD-A"], timeout=120) as cl:
            for _ in range(args.repeats):
                for scope in ("local", "all"):
                    t0 = time.perf_counter()
                    cl.search(qa, scope=scope, max_results=5)
                    times["local" if scope == "local" else "federated"].append(
                        time.perf_counter() - t0
                    )
        med = {k: statistics.median(v) for k, v in times.items()}
        say(
            f"   local (A: 3 candidates compared) median {med['local']:.3f} s; federated"
            f" (A + B in parallel: 3 + 3) median {med['federated']:.3f} s"
        )

        say("== 3. pictures only where the agreement says")
        with Client(a.address, a.token["PD-A"], timeout=60) as cl:
            cmp = cl.compare(qa, top.casing_id, server_b="B")
        png = out / "A-vs-B-picture.png"
        png.write_bytes(cmp.png)
        say(f"   AB-2025 (pictures): B released a {len(cmp.png)}-byte picture -> {png}")
        with Client(b.address, b.token["PD-B"], timeout=60) as cl:
            r = cl.search(b_same, scope="C", max_results=3)
            c_cands = [x for x in r.combined.candidates if x.server == "C"]
            refusal = "(C returned no candidate)"
            if c_cands:
                try:
                    cl.compare(b_same, c_cands[0].casing_id, server_b="C")
                    refusal = "NOT REFUSED"
                except grpc.RpcError as e:
                    refusal = f"{e.code().name}: {e.details()}"
        say(f"   BC-2025 (scores): {len(c_cands)} score(s) from C; a picture: {refusal}")

        say("== 4. a hit confirmed in A is recorded in B")
        with Client(a.address, a.token["PD-A"], timeout=60) as cl:
            d1 = cl.decide(qa, top.casing_id, "hit", "confirmed on the casts", candidate_server="B")
            d2 = cl.decide(qa, top.casing_id, "hit", "confirmed on the casts", candidate_server="B")
        b_hits = [h for h in b.node.store.hits() if h.hit_id == d1.decision_id]
        say(
            f"   hit {d1.decision_id}: recorded in A {len(a.node.store.hits())}x,"
            f" in B {len(b_hits)}x (decided twice; same id: {d1.decision_id == d2.decision_id})"
        )
        inbox = b.node.store.incoming()
        say(
            f"   B's contact point queue (NCP-B): {len(inbox)} request(s) from abroad;"
            f" states {sorted({r['state'] for r in inbox})}"
        )
        fed_a = [r for r in audit_records(a) if r["method"].startswith("Federation.")]
        fed_b = [r for r in audit_records(b) if r["method"].startswith("Federation.")]
        say(f"   audit: {len(fed_a)} federation records in A, {len(fed_b)} in B")
        ok = (
            found
            and not asked_c
            and len(b_hits) == 1
            and refusal.startswith(("PERMISSION_DENIED", "(C returned"))
        )
        result = {
            "command": "python scripts/demo_network.py " + " ".join(argv or sys.argv[1:]),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {platform.machine()} python {platform.python_version()}",
            "corpus": "write_corpus(guns=4, shots=2, seed=11); A: 4 casings, B: 3",
            "search_s": times,
            "median_s": med,
            "found_in_b": found,
            "c_asked": asked_c,
            "hits_in_b": len(b_hits),
            "c_picture": refusal,
            "ok": ok,
        }
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        say("== demo-network " + ("OK" if ok else "FAILED"))
        return 0 if ok else 1
    finally:
        for srv in servers:
            srv.close()


if __name__ == "__main__":
    sys.exit(main())
