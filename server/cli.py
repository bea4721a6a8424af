"""The ``ballistics`` command line: one parser, handlers in small modules.

Local commands work on files or on the embedded store (``--data-dir``); the same command names
with ``--server`` talk to a running service over gRPC. Exit status: 0 ok, 2 bad input or usage
(one line on stderr per problem, never a traceback; also for nothing to do: a folder without
scans, an empty store, no audit log), 1 internal failure, 130 interrupted (Ctrl-C).
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
    "correlate": "server.commands_leads:cmd_correlate",
    "leads": "server.commands_leads:cmd_leads",
    "leads-remote": "server.commands_leads:cmd_leads_remote",
    "auth": "server.commands_auth:cmd_auth",
    "federation": "server.commands_federation:cmd_federation",
    "firearm": "server.commands_intel:cmd_firearm",
    "locate": "server.commands_intel:cmd_locate",
    "series": "server.commands_intel:cmd_series",
    "report": "server.commands_intel:cmd_report",
}

#: Roles of the auth file (server.auth.ROLES; repeated so the parser does not import gRPC).
ROLES = ("submitter", "examiner", "admin")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written; every option with a real default says it ("(default: X)")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and default not in (None, False, "", argparse.SUPPRESS)
            and "%(default)" not in text
        ):
            text += " (default: %(default)s)"
        return text


def _example(*lines: str) -> str:
    return "example:\n" + "\n".join(f"  {line}" for line in lines)


def add_serve_limit_options(p: argparse.ArgumentParser) -> None:
    from .interceptors import add_serve_limit_options as add

    add(p)


def _remote_options(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--server",
        required=required,
        metavar="HOST[:PORT]",
        help="address of a running service (port 50051 when not given)"
        + ("" if required else "; without it the command runs locally"),
    )
    p.add_argument(
        "--token", help="bearer token for the service (or env BALLISTICS_TOKEN); --token=T"
    )
    p.add_argument("--tls-ca", help="CA certificate (PEM) to verify the server; enables TLS")
    p.add_argument("--tls-cert", help="client certificate (PEM) for mutual TLS")
    p.add_argument("--tls-key", help="client private key (PEM) for mutual TLS")


_SPACING_HELP = "pixel spacing in micrometres, for 2-D images without resolution tags"
_JSON_HELP = "one JSON object per line"


def _store_options(p: argparse.ArgumentParser) -> None:
    """--store / --files: where the store of record lives (index.store.open_store)."""
    p.add_argument(
        "--store",
        metavar="URL",
        help="store of record: postgresql://user@host:port/db (shared by several servers and"
        " workers; the data dir then keeps this process's index snapshots, lock and audit log);"
        " default: SQLite in --data-dir (or the BALLISTICS_STORE environment variable)",
    )
    p.add_argument(
        "--files",
        metavar="DIR",
        help="with --store postgresql://...: the folder of originals and surfaces that every"
        " server and worker mounts (default: BALLISTICS_FILES, else --data-dir)",
    )


def _length_unit_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--length-unit",
        choices=["m", "um"],
        default="m",
        help="unit of X3P increments and heights: m (the standard, default) or um for files "
        "that write micrometres there; never guessed",
    )


#: ``--light`` choices (ballistics.lighting.LIGHT_KINDS plus auto; repeated here so the parser
#: does not import the pipeline).
LIGHTS = ("auto", "ring", "side", "coaxial")


def _light_options(p: argparse.ArgumentParser, *, pair: bool = False) -> None:
    """``--light`` and ``--light-azimuth-deg`` of 2-D images (ignored, with a warning, for 3-D
    scans). ``pair``: each may be given twice, for A then B (once: both)."""
    both = " (give it twice for A then B; once: both)" if pair else ""
    action = "append" if pair else "store"
    p.add_argument(
        "--light",
        choices=LIGHTS,
        action=action,
        help="light of a 2-D image: auto (detect ring or side light, default), ring, side "
        "(azimuth from --light-azimuth-deg, else detected) or coaxial; metadata overrides "
        "detection" + both,
    )
    p.add_argument(
        "--light-azimuth-deg",
        type=float,
        action=action,
        metavar="DEG",
        help="a side light's direction in the image: degrees counter-clockwise from the +column "
        "axis (x = column, y = row), where the light comes from; implies --light side" + both,
    )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="ballistics",
        description="Cartridge-case scan matching: pipeline, index, service.",
        formatter_class=_HelpFormatter,
        epilog="'ballistics COMMAND --help' shows each command's options, defaults and an"
        " example.\nExit status: 0 ok, 2 bad input, usage or a refusal, 1 internal failure,"
        " 130 interrupted.",
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, *example: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            description=help,
            formatter_class=_HelpFormatter,
            epilog=_example(*example),
        )

    p = command(
        "inspect",
        "read and segment scans; print what was found",
        "ballistics inspect scans/Fadul_1-1.x3p --json",
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object per line per file")
    p.add_argument("--spacing-um", type=float, help=_SPACING_HELP)
    _length_unit_option(p)
    _light_options(p)

    p = command(
        "synth",
        "write a seeded synthetic corpus with ground truth (manifest.csv)",
        "ballistics synth out/corpus --guns 5 --shots 2 --seed 1",
    )
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--guns", type=int, required=True, help="number of virtual firearms")
    p.add_argument("--shots", type=int, required=True, help="casings fired per firearm")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same corpus)")
    p.add_argument("--png", action="store_true", help="also write 2-D oblique-light renders")
    p.add_argument(
        "--instrument",
        metavar="NAME",
        help="record with an instrument model of ballistics.instruments (confocal, "
        "focus_variation, photometric_stereo, ring_low, ring_high, side_light, coaxial); "
        "default: the generic scanner",
    )

    p = command(
        "describe",
        "print the index descriptor(s) of a scan",
        "ballistics describe scans/Fadul_1-1.x3p --json",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--spacing-um", type=float, help=_SPACING_HELP)
    _length_unit_option(p)
    _light_options(p)

    p = command(
        "compare",
        "compare two casings (or a CSV of pairs)",
        "ballistics compare a.x3p b.x3p --png out/ab.png",
        "ballistics compare --pairs pairs.csv --workers 2 --json",
        "ballistics compare CASING_A CASING_B --server 127.0.0.1 --json   # stored casings",
    )
    p.add_argument("a", nargs="?", metavar="A", help="scan file, or casing id with --server")
    p.add_argument("b", nargs="?", metavar="B", help="scan file, or casing id with --server")
    p.add_argument("--pairs", metavar="PAIRS.csv", help="CSV with columns a,b (file paths)")
    p.add_argument("--json", action="store_true", help=_JSON_HELP)
    p.add_argument("--png", metavar="OUT.png", help="write the aligned comparison picture")
    p.add_argument("--spacing-um", type=float, help=_SPACING_HELP)
    p.add_argument("--workers", type=int, default=0, help="processes for --pairs (0: all cores)")
    p.add_argument(
        "--peer",
        metavar="SERVER",
        help="with --server: B is this peer server's candidate (its opaque ref); the picture or"
        " surface comes from the peer if the agreement releases it",
    )
    _length_unit_option(p)
    _light_options(p, pair=True)
    _remote_options(p)

    p = command(
        "ingest",
        "add casings to the embedded store (resumable: a re-run skips what was stored)",
        "ballistics ingest scans/ --data-dir data/store --manifest scans/MANIFEST.tsv",
    )
    p.add_argument("paths", nargs="+", metavar="DIR_OR_FILES")
    p.add_argument("--data-dir", required=True, help="the store's folder (created if absent)")
    _store_options(p)
    p.add_argument(
        "--manifest",
        help="CSV or TSV with a header; columns file (required), casing_id, incident_id,"
        " caliber, agency, date, spacing_um, light, light_azimuth_deg, ...; other columns"
        " (e.g. firearm_id) are kept as metadata",
    )
    p.add_argument("--agency", default="local", help="submitting agency")
    p.add_argument("--caliber", help="calibre for every file (e.g. 9mm)")
    p.add_argument("--spacing-um", type=float, help=_SPACING_HELP + " (every file)")
    p.add_argument("--json", action="store_true", help="one JSON report object")
    _length_unit_option(p)
    _light_options(p)

    p = command(
        "search",
        "ranked candidate list for a stored casing or a file",
        "ballistics search --file q.x3p --data-dir data/store --top 5 --json",
        "ballistics search --casing-id 3f2a... --server 127.0.0.1:50051",
    )
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--casing-id", help="a stored casing (never listed as its own candidate)")
    g.add_argument("--file", help="a scan file (not stored)")
    p.add_argument("--data-dir", help="embedded store (local search)")
    _store_options(p)
    p.add_argument("--top", type=int, default=10, help="candidates to list")
    p.add_argument("--caliber", help="only casings of this calibre")
    p.add_argument("--json", action="store_true", help="one JSON object per candidate per line")
    p.add_argument(
        "--rerank",
        type=int,
        default=None,
        metavar="K",
        help="descriptor candidates per region (stage 1; default: 2%% of the casings searched,"
        " at least 200, at most 4000)",
    )
    p.add_argument(
        "--compare",
        type=int,
        default=None,
        metavar="N",
        help="candidates stage 2 keeps for the full comparison, taken alternately by screen"
        " score and by screen and descriptor scores fused (0: all; default 20)",
    )
    p.add_argument(
        "--rescue",
        type=int,
        default=None,
        metavar="HEAD",
        help="a thorough local search: stage 2's order up to position HEAD is also scored by"
        " the comparison's coarse sweep (~20 ms a candidate) and its best 2 beyond --compare"
        " are compared too (default: none; try 150)",
    )
    p.add_argument(
        "--scope",
        default="local",
        metavar="local|all|PEER[,PEER]",
        help="with --server: also ask peer servers under agreements (all, or named ones);"
        " their candidates are marked with their server",
    )
    _length_unit_option(p)
    _light_options(p)
    _remote_options(p)

    p = command(
        "serve",
        "run the gRPC service on the embedded store",
        "ballistics serve --data-dir data/store --auth auth.json --policy policy.json",
    )
    p.add_argument("--data-dir", required=True, help="the store's folder (created if absent)")
    _store_options(p)
    p.add_argument("--port", type=int, default=50051, help="TCP port (0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    p.add_argument(
        "--http-port",
        type=int,
        default=None,
        metavar="P",
        help="also serve the examiner's review page on this port (0: any free port), on --host;"
        " HTTPS with the same certificate under TLS. Same tokens, roles, policy and audit log",
    )
    p.add_argument(
        "--auth",
        help="tokens file (JSON; 'ballistics auth add-user' makes it);"
        " without it the server refuses to start",
    )
    p.add_argument("--policy", help="sharing policy file (JSON); without it: agencies isolated")
    p.add_argument("--tls-cert", help="server certificate (PEM); enables TLS")
    p.add_argument("--tls-key", help="server private key (PEM)")
    p.add_argument("--tls-ca", help="CA for client certificates")
    p.add_argument(
        "--require-client-cert", action="store_true", help="refuse clients without a certificate"
    )
    p.add_argument(
        "--vectors",
        metavar="URI",
        default=None,
        help="vector engine: 'faiss' (default: embedded, snapshots in --data-dir),"
        " 'milvus://HOST:19530[/DB][?prefix=NAME]' (token from $BALLISTICS_MILVUS_TOKEN)"
        " or 'milvus-lite:///path/vectors.db' (docs/deployment.md)",
    )
    add_serve_limit_options(p)
    _audit_key_option(p)
    p.add_argument(
        "--accept-unkeyed-audit-log",
        action="store_true",
        help="accept (once) an audit log written before keying and seal it with a keyed record",
    )
    p.add_argument(
        "--no-correlate",
        action="store_true",
        help="do not run the background correlation worker (new casings' jobs stay pending)",
    )
    _correlation_options(p)
    p.add_argument(
        "--federation",
        metavar="FILE",
        help="federation config (JSON): this server's name, contact point, peers and"
        " agreements; opens the mutual-TLS port peers call (see server/federation_config.py)",
    )

    p = command(
        "federation",
        "a federated server's records: `inbox` (requests from peers, the national contact"
        " point's queue), `hits` (confirmed hits across borders), `check` (validate a config)",
        "ballistics federation inbox --data-dir data/A --json",
        "ballistics federation check --config federation.json",
    )
    p.add_argument("action", choices=["inbox", "hits", "check"], help="what to show")
    p.add_argument("--data-dir", help="the server's store folder (inbox, hits)")
    p.add_argument("--config", help="the federation config to check")
    p.add_argument("--limit", type=int, default=100, help="inbox: at most this many requests")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = command(
        "correlate",
        "run the background correlation jobs of an embedded store now, without a server: each "
        "new casing screened against the stored ones it may be paired with, the best compared, "
        "leads recorded (see index/correlate.py)",
        "ballistics correlate --data-dir data/store",
        "ballistics correlate --data-dir data/store --once --json",
    )
    p.add_argument("--data-dir", required=True, help="the store's folder")
    _store_options(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--once", action="store_true", help="run one job and exit")
    g.add_argument("--max-jobs", type=int, metavar="N", help="run at most N jobs")
    g.add_argument(
        "--follow",
        action="store_true",
        help="keep running, taking new jobs as they come, until SIGTERM or Ctrl-C (a worker"
        " beside servers on a shared --store postgresql://...)",
    )
    p.add_argument(
        "--backfill",
        action="store_true",
        help="first queue a job for every stored casing that has none (stored before jobs)",
    )
    p.add_argument(
        "--policy",
        help="sharing policy file (JSON), as `serve` uses it: only casings some agency may see "
        "together are paired; without it every casing is paired with every other",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per finished job")
    _correlation_options(p)

    p = command(
        "leads",
        "list the leads background correlation found (pairs to review), with the queue's progress",
        "ballistics leads --data-dir data/store --state new --json",
        "ballistics leads --server 127.0.0.1 --casing-id 3f2a... --json",
    )
    p.add_argument("--data-dir", help="embedded store (local list)")
    _store_options(p)
    p.add_argument(
        "--state",
        choices=["new", "reviewed", "confirmed", "excluded"],
        help="only leads in this state (the pair's latest decision: none, inconclusive, hit, "
        "excluded)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=0,
        help="at most this many leads (0: 100, as the service answers; the service caps at 1000)",
    )
    p.add_argument("--offset", type=int, default=0, help="skip this many")
    p.add_argument("--casing-id", help="only the leads of this casing (one you may see)")
    p.add_argument("--agency", help="local: only the leads this agency may see (see --policy)")
    p.add_argument("--policy", help="local: sharing policy for --agency (default: isolated)")
    p.add_argument("--json", action="store_true", help='one JSON object {"jobs", "leads"}')
    _remote_options(p)

    p = command(
        "submit",
        "upload a casing (or a folder of them) to the service",
        "BALLISTICS_TOKEN=... ballistics submit scan.x3p --server 127.0.0.1 --incident INC-1",
    )
    p.add_argument("path", metavar="FILE_OR_DIR")
    p.add_argument("--incident", help="incident id the casing belongs to")
    p.add_argument("--case-number", help="the agency's case number")
    p.add_argument("--caliber", help="calibre (e.g. 9mm)")
    p.add_argument("--date", help="acquisition date YYYY-MM-DD")
    p.add_argument("--place", help="where the casing was found")
    p.add_argument("--spacing-um", type=float, help=_SPACING_HELP)
    p.add_argument("--no-search", action="store_true", help="store only; do not search")
    p.add_argument(
        "--test-fire-of",
        metavar="FIREARM_ID",
        help="each casing is a test fire of this firearm of your agency (firearm test-fire)",
    )
    _length_unit_option(p)
    _light_options(p)
    p.add_argument("--json", action="store_true", help="one JSON object per file per line")
    _remote_options(p, required=True)

    p = command(
        "decide",
        "record an examiner's verdict on a candidate",
        "ballistics decide CASING CANDIDATE --verdict hit --server 127.0.0.1",
    )
    p.add_argument("casing_id", help="the queried casing")
    p.add_argument("candidate_id", help="the candidate judged")
    p.add_argument("--verdict", required=True, choices=["hit", "excluded", "inconclusive"])
    p.add_argument("--comment", default="", help="free text kept with the decision")
    p.add_argument(
        "--peer",
        metavar="SERVER",
        help="the candidate is this peer server's (its opaque ref): a hit is recorded here and"
        " notified to the peer",
    )
    p.add_argument("--json", action="store_true", help="one JSON object")
    _remote_options(p, required=True)

    p = command(
        "links",
        "linked incidents of a casing or incident",
        "ballistics links --incident-id INC-1 --server 127.0.0.1 --json",
    )
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--casing-id", help="start from this casing")
    g.add_argument("--incident-id", help="start from this incident")
    p.add_argument("--json", action="store_true", help="one JSON object")
    _remote_options(p, required=True)

    p = command(
        "casings",
        "list or get stored casings",
        "ballistics casings --server 127.0.0.1 --json",
    )
    p.add_argument("casing_id", nargs="?", help="one casing (default: list all visible)")
    p.add_argument("--json", action="store_true", help="one JSON object per casing per line")
    _remote_options(p, required=True)

    p = command(
        "delete",
        "delete an erroneous submission (admin)",
        "ballistics delete CASING --reason 'wrong exhibit' --server 127.0.0.1",
    )
    p.add_argument("casing_id", help="the casing to delete (kept for audit)")
    p.add_argument("--reason", required=True, help="why (recorded in the audit log)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    _remote_options(p, required=True)

    p = command(
        "audit",
        "audit log tools: `verify` the keyed chain and signed head (exit 1 if broken), `keygen`"
        " a new audit key (never overwrites one)",
        "ballistics audit keygen --audit-key-file ~/.config/ballistics/audit.key",
        "ballistics audit verify --data-dir data/store",
    )
    p.add_argument("action", choices=["verify", "keygen"], help="what to do")
    p.add_argument("--data-dir", help="the server's store folder (verify)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    _audit_key_option(p)

    p = command(
        "auth",
        "manage the tokens file: add a user (token shown once), list, revoke",
        "ballistics auth add-user --auth auth.json --user alice --agency PD-North --role examiner",
        "ballistics auth list --auth auth.json",
        "ballistics auth revoke --auth auth.json --user alice",
    )
    asub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text, ex in (
        (
            "add-user",
            "add a user with a fresh token; prints the token once (the file keeps its SHA-256)",
            "ballistics auth add-user --auth auth.json --user alice --agency PD-North"
            " --role examiner",
        ),
        ("list", "list users (never tokens)", "ballistics auth list --auth auth.json --json"),
        ("revoke", "remove a user's token", "ballistics auth revoke --auth auth.json --user bob"),
    ):
        a = asub.add_parser(
            name, help=text, description=text, formatter_class=_HelpFormatter, epilog=_example(ex)
        )
        a.add_argument("--auth", required=True, help="the tokens file (JSON, mode 0600)")
        if name != "list":
            a.add_argument("--user", required=True, help="user name")
        if name == "add-user":
            a.add_argument("--agency", required=True, help="the user's agency")
            a.add_argument("--role", required=True, choices=list(ROLES))
        if name == "list":
            a.add_argument("--json", action="store_true", help="one JSON object per user")
    _intel_parsers(command)
    return ap


def _intel_local_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="local: read the embedded store instead of a server")
    p.add_argument("--agency", help="local: whose view (required with --data-dir)")
    p.add_argument("--policy", help="local: sharing policy for --agency (default: isolated)")


#: ``index.intel.FIREARM_STATUSES`` and ``TRACE_STATUSES``, written out so that the CLI starts
#: without importing the store (tests/test_intel_api.py checks that they agree).
FIREARM_STATUSES = ("recovered", "seized", "test_fired", "traced", "returned", "destroyed")
TRACE_STATUSES = ("requested", "completed", "no_result", "refused")


def _intel_parsers(command: Callable[..., argparse.ArgumentParser]) -> None:
    """``firearm``, ``locate``, ``series``, ``report`` (server/commands_intel.py)."""
    p = command(
        "firearm",
        "recovered firearms: add, show (its JSON is the export form), status (returned,"
        " destroyed, ...: kept with who, when and why), test-fire (mark a submitted casing as"
        " its test fire), trace (record a trace request), trace-result",
        "ballistics firearm add --make Glock --model 17 --caliber 9mm --serial ABC123"
        " --recovered-on 2025-03-04 --place 'Elm St' --server 127.0.0.1",
        "ballistics firearm test-fire F-0123456789ab CASING --server 127.0.0.1",
        "ballistics firearm show F-0123456789ab --json --server 127.0.0.1",
        "ballistics firearm status F-0123456789ab --status destroyed --comment 'court order"
        " 2026/118' --server 127.0.0.1",
        "ballistics firearm trace F-0123456789ab --requested-of 'National tracing centre'"
        " --server 127.0.0.1",
        "ballistics firearm trace-result T-0123456789ab --status completed --outcome"
        " 'first retail buyer: ...' --server 127.0.0.1",
    )
    fsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, text: str) -> argparse.ArgumentParser:
        a = fsub.add_parser(name, help=text, description=text, formatter_class=_HelpFormatter)
        a.add_argument("--json", action="store_true", help="one JSON object (the firearm)")
        _remote_options(a)
        return a

    a = action("add", "record a recovered or seized firearm of your agency")
    a.add_argument("--id", dest="firearm_id", help="its id (default: F-<12 hex digits>)")
    a.add_argument("--make")
    a.add_argument("--model")
    a.add_argument("--caliber", help="calibre (e.g. 9mm)")
    a.add_argument("--serial", help="serial number")
    a.add_argument("--recovered-on", help="recovery date YYYY-MM-DD")
    a.add_argument("--place", help="where it was recovered")
    a.add_argument("--lat", type=float, help="latitude (WGS84 degrees)")
    a.add_argument("--lon", type=float, help="longitude (WGS84 degrees)")
    a.add_argument(
        "--status",
        default="recovered",
        choices=FIREARM_STATUSES,
    )
    a = action("show", "a firearm with its test fires and traces (--json: the export form)")
    a.add_argument("firearm_id")
    _intel_local_options(a)
    a = action("status", "change a firearm's status, saying why (every change is kept)")
    a.add_argument("firearm_id")
    a.add_argument(
        "--status",
        required=True,
        choices=FIREARM_STATUSES,
    )
    a.add_argument("--comment", required=True, help="why (e.g. the court order or receipt)")
    a = action("test-fire", "mark a casing your agency submitted as a test fire of the firearm")
    a.add_argument("firearm_id")
    a.add_argument("casing_ids", nargs="+", metavar="CASING_ID")
    a = action("trace", "record a trace request (nothing outside is called)")
    a.add_argument("firearm_id")
    a.add_argument("--requested-of", required=True, help="who was asked to trace it")
    a.add_argument("--date", help="request date YYYY-MM-DD (default: today)")
    a = action("trace-result", "record a trace request's status and outcome")
    a.add_argument("trace_id")
    a.add_argument("--status", required=True, choices=TRACE_STATUSES)
    a.add_argument("--outcome", default="", help="free text: last legal owner, transfer chain")

    p = command(
        "locate",
        "record the coordinates of one of your incidents (for series maps)",
        "ballistics locate INC-1 --lat 40.71 --lon -74.00 --server 127.0.0.1",
    )
    p.add_argument("incident_id")
    p.add_argument("--lat", type=float, required=True, help="latitude (WGS84 degrees)")
    p.add_argument("--lon", type=float, required=True, help="longitude (WGS84 degrees)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    _remote_options(p)

    p = command(
        "series",
        "incidents linked by confirmed hits (leads apart): list them, or one series as you may"
        " see it, with its timeline, places, agencies, firearm and evidence",
        "ballistics series --server 127.0.0.1",
        "ballistics series --incident-id INC-1 --html s.html --png s.png --csv s.csv"
        " --server 127.0.0.1",
        "ballistics series --data-dir data/store --agency PD-North --policy policy.json --json",
    )
    p.add_argument("series_id", nargs="?", help="one series (S-...); none: list them")
    p.add_argument("--incident-id", help="the series of this incident")
    p.add_argument("--casing-id", help="the series of this casing")
    p.add_argument("--firearm-id", help="the series of this firearm")
    p.add_argument("--html", metavar="OUT.html", help="write the printable report")
    p.add_argument("--png", metavar="OUT.png", help="write the map and timeline picture")
    p.add_argument("--csv", metavar="OUT.csv", help="write the evidence list")
    p.add_argument("--json", action="store_true", help="one JSON object (per series when listing)")
    _intel_local_options(p)
    _remote_options(p)

    p = command(
        "report",
        "the hub's report per jurisdiction and period: acquisitions, leads, hits, hours to lead"
        " and to hit against the 48-hour goal, links across jurisdictions, firearms",
        "ballistics report --from 2025-01-01 --to 2025-12-31 --png hub.png --server 127.0.0.1",
    )
    p.add_argument("--from", dest="date_from", help="first day YYYY-MM-DD (inclusive)")
    p.add_argument("--to", dest="date_to", help="last day YYYY-MM-DD (inclusive)")
    p.add_argument("--jurisdiction", action="append", help="only this jurisdiction (repeatable)")
    p.add_argument("--png", metavar="OUT.png", help="write the chart")
    p.add_argument("--csv", metavar="OUT.csv", help="write the table")
    p.add_argument("--json", action="store_true", help="one JSON object")
    _intel_local_options(p)
    _remote_options(p)


def _correlation_options(p: argparse.ArgumentParser) -> None:
    """The documented parameters of index.correlate.CorrelationConfig."""
    p.add_argument(
        "--compare-fraction",
        type=float,
        metavar="F",
        help="fraction of the screened casings fully compared, taken alternately by screen "
        "and descriptor order (default 0.05; at least 20, at most 2000)",
    )
    p.add_argument(
        "--rescue-factor",
        type=float,
        metavar="R",
        help="beyond those compared, R times as many more are scored by the comparison's"
        " coarse rotation sweep and its best 20 compared too (default 1.0; 0: no rescue)",
    )
    p.add_argument(
        "--lead-max-nmf",
        type=float,
        metavar="X",
        help="a compared pair is a lead when its non-match frequency is at most X (default 0.01)",
    )
    p.add_argument(
        "--lead-min-cmc",
        type=int,
        metavar="N",
        help="... or, with no non-match frequency for that kind of scan, when its CMC count "
        "is at least N (default 6)",
    )


def _audit_key_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--audit-key-file",
        metavar="PATH",
        help="HMAC key of the audit log, kept outside the data dir (default:"
        " $BALLISTICS_AUDIT_KEY_FILE, else ~/.config/ballistics/audit.key;"
        " make one with `ballistics audit keygen`)",
    )


def _resolve(name: str) -> Callable[[argparse.Namespace], int]:
    module, func = _HANDLERS[name].split(":")
    handler: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), func)
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    name = args.command
    if name in ("compare", "search", "leads") and getattr(args, "server", None):
        name += "-remote"
    elif getattr(args, "scope", "local") != "local" or getattr(args, "peer", None):
        if name in ("search", "compare"):  # peers are asked by a federated server only
            print(f"ballistics {name}: --scope/--peer need --server", file=sys.stderr)
            return 2
    try:
        return _resolve(name)(args)
    except KeyboardInterrupt:
        print("ballistics: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
