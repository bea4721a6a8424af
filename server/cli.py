"""The ``ballistics`` command line: one parser, handlers in small modules.

Local commands work on files or on the embedded store (``--data-dir``); the same command names
with ``--server`` talk to a running service over gRPC. Exit status: 0 ok, 2 bad input or usage
(one line on stderr per problem, never a traceback), 1 internal failure.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

# Handlers live in modules named for their side of the service; each takes the parsed args and
# returns an exit status. Imported lazily so `ballistics inspect` does not load gRPC or FAISS.
_HANDLERS: dict[str, str] = {
    "inspect": "server.commands_local:cmd_inspect",
    "synth": "server.commands_local:cmd_synth",
    "describe": "server.commands_local:cmd_describe",
    "compare": "server.commands_local:cmd_compare",
    "compare-remote": "server.commands_remote:cmd_compare",
    "ingest": "server.commands_index:cmd_ingest",
    "search": "server.commands_index:cmd_search",
    "search-remote": "server.commands_remote:cmd_search",
    "serve": "server.commands_remote:cmd_serve",
    "submit": "server.commands_remote:cmd_submit",
    "decide": "server.commands_remote:cmd_decide",
    "links": "server.commands_remote:cmd_links",
    "casings": "server.commands_remote:cmd_casings",
    "delete": "server.commands_remote:cmd_delete",
    "audit": "server.commands_remote:cmd_audit",
}


def _remote_options(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--server",
        required=required,
        help="address of a running service (host:port); without it the command runs locally",
    )
    p.add_argument("--token", help="bearer token for the service (or env BALLISTICS_TOKEN)")
    p.add_argument("--tls-ca", help="CA certificate (PEM) to verify the server; enables TLS")
    p.add_argument("--tls-cert", help="client certificate (PEM) for mutual TLS")
    p.add_argument("--tls-key", help="client private key (PEM) for mutual TLS")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="ballistics", description="Cartridge-case scan matching: pipeline, index, service."
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("inspect", help="read and segment scans; print what was found")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object per line per file")
    p.add_argument(
        "--spacing-um", type=float, help="pixel spacing for 2-D images without resolution tags"
    )

    p = sub.add_parser("synth", help="write a seeded synthetic corpus with ground truth")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--guns", type=int, required=True, help="number of virtual firearms")
    p.add_argument("--shots", type=int, required=True, help="casings fired per firearm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--png", action="store_true", help="also write 2-D oblique-light renders")
    p.add_argument(
        "--instrument",
        metavar="NAME",
        help="record with an instrument model of ballistics.instruments (confocal, "
        "focus_variation, photometric_stereo, ring_low, ring_high, side_light, coaxial); "
        "default: the generic scanner",
    )

    p = sub.add_parser("describe", help="print the index descriptor(s) of a scan")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true")
    p.add_argument("--spacing-um", type=float)

    p = sub.add_parser("compare", help="compare two casings (or a CSV of pairs)")
    p.add_argument("a", nargs="?", metavar="A", help="scan file, or casing id with --server")
    p.add_argument("b", nargs="?", metavar="B")
    p.add_argument("--pairs", metavar="PAIRS.csv", help="CSV with columns a,b (file paths)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--png", metavar="OUT.png", help="write the aligned comparison picture")
    p.add_argument("--spacing-um", type=float)
    p.add_argument("--workers", type=int, default=0, help="processes for --pairs (0: all cores)")
    _remote_options(p)

    p = sub.add_parser("ingest", help="add casings to the embedded store")
    p.add_argument("paths", nargs="+", metavar="DIR_OR_FILES")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--manifest", help="CSV: file,casing_id,incident_id,caliber,agency,date")
    p.add_argument("--agency", default="local", help="submitting agency (default: local)")
    p.add_argument("--caliber", help="calibre for every file (e.g. 9mm)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("search", help="ranked candidate list for a stored casing or a file")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--casing-id")
    g.add_argument("--file")
    p.add_argument("--data-dir", help="embedded store (local search)")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--caliber")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--rerank", type=int, default=200, help="descriptor candidates per region (stage 1)"
    )
    p.add_argument(
        "--compare",
        type=int,
        default=None,
        metavar="N",
        help="candidates the screen keeps for the full comparison (0: all; default 20)",
    )
    _remote_options(p)

    p = sub.add_parser("serve", help="run the gRPC service on the embedded store")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--port", type=int, default=50051)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--auth", help="tokens file (JSON); without it the server refuses to start")
    p.add_argument("--policy", help="sharing policy file (JSON)")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--tls-ca", help="CA for client certificates")
    p.add_argument("--require-client-cert", action="store_true")

    p = sub.add_parser("submit", help="upload a casing (or a folder of them) to the service")
    p.add_argument("path", metavar="FILE_OR_DIR")
    p.add_argument("--incident")
    p.add_argument("--case-number")
    p.add_argument("--caliber")
    p.add_argument("--date", help="acquisition date YYYY-MM-DD")
    p.add_argument("--place")
    p.add_argument("--spacing-um", type=float)
    p.add_argument("--no-search", action="store_true")
    p.add_argument("--json", action="store_true")
    _remote_options(p, required=True)

    p = sub.add_parser("decide", help="record an examiner's verdict on a candidate")
    p.add_argument("casing_id")
    p.add_argument("candidate_id")
    p.add_argument("--verdict", required=True, choices=["hit", "excluded", "inconclusive"])
    p.add_argument("--comment", default="")
    p.add_argument("--json", action="store_true")
    _remote_options(p, required=True)

    p = sub.add_parser("links", help="linked incidents of a casing or incident")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--casing-id")
    g.add_argument("--incident-id")
    p.add_argument("--json", action="store_true")
    _remote_options(p, required=True)

    p = sub.add_parser("casings", help="list or get stored casings")
    p.add_argument("casing_id", nargs="?")
    p.add_argument("--json", action="store_true")
    _remote_options(p, required=True)

    p = sub.add_parser("delete", help="delete an erroneous submission (admin)")
    p.add_argument("casing_id")
    p.add_argument("--reason", required=True)
    p.add_argument("--json", action="store_true")
    _remote_options(p, required=True)

    p = sub.add_parser("audit", help="audit log tools")
    p.add_argument("action", choices=["verify"])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--json", action="store_true")
    return ap


def _resolve(name: str) -> Callable[[argparse.Namespace], int]:
    module, func = _HANDLERS[name].split(":")
    handler: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), func)
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    name = args.command
    if name in ("compare", "search") and getattr(args, "server", None):
        name += "-remote"
    try:
        return _resolve(name)(args)
    except KeyboardInterrupt:
        print("ballistics: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
