"""Command handlers that talk to a running service (and ``serve``, which runs it).

Each handler takes the parsed arguments and returns an exit status: 0 ok, 2 bad input, usage or
a refusal by the service (one line ``ballistics: <STATUS>: <details>`` on stderr), 1 internal
failure (``audit verify``: the log was tampered with).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message

from .client import Client
from .output import candidate_from_proto, compare_from_proto, message_dict

SCAN_SUFFIXES = {".x3p", ".png", ".tif", ".tiff", ".jpg", ".jpeg"}
Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """A problem with the command line or local files; reported as one line, exit 2."""


def _err(msg: str) -> None:
    print(f"ballistics: {msg}", file=sys.stderr)


def _handles_errors(fn: Handler) -> Handler:
    @functools.wraps(fn)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            details = e.details() if hasattr(e, "details") else str(e)
            name = code.name if code is not None else "ERROR"
            _err(f"{name}: {details}")
            return 2
        except UsageError as e:
            _err(str(e))
            return 2
        except OSError as e:
            _err(f"{e.filename or ''}: {e.strerror or e}".lstrip(": "))
            return 2

    return wrapper


def _to_dict(msg: Message) -> dict[str, Any]:
    return message_dict(msg)  # proto field names; false and zero fields kept


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, sort_keys=True))


def _client(args: argparse.Namespace) -> Client:
    if not getattr(args, "server", None):
        raise UsageError("--server HOST:PORT is required")
    token = getattr(args, "token", None) or os.environ.get("BALLISTICS_TOKEN")
    if not token:
        raise UsageError("no token: give --token or set BALLISTICS_TOKEN")
    try:
        return Client(
            args.server,
            token,
            tls_ca=getattr(args, "tls_ca", None),
            tls_cert=getattr(args, "tls_cert", None),
            tls_key=getattr(args, "tls_key", None),
        )
    except ValueError as e:
        raise UsageError(str(e)) from e


def _spacing_m(args: argparse.Namespace) -> float:
    um = getattr(args, "spacing_um", None)
    if um is None:
        return 0.0
    if not um > 0:
        raise UsageError("--spacing-um must be positive (micrometres, e.g. 3.125)")
    return float(um) * 1e-6


def _length_unit(args: argparse.Namespace) -> str:
    """``--length-unit`` for the wire: "" for metres (the proto default), else the unit."""
    unit = getattr(args, "length_unit", None) or "m"
    return "" if unit == "m" else str(unit)


def _light(args: argparse.Namespace) -> dict[str, Any]:
    """``--light`` / ``--light-azimuth-deg`` as request fields (``light``, and
    ``light_azimuth_deg`` only when given); {} when neither was given."""
    from ballistics.errors import BallisticsError
    from ballistics.light import LightRequest

    kind, az = getattr(args, "light", None), getattr(args, "light_azimuth_deg", None)
    if isinstance(kind, list) or isinstance(az, list):  # compare's A/B form: casing ids here
        raise UsageError(
            "--light applies to files; with --server, compare takes stored casing ids whose "
            "lights were recorded when they were submitted (give --light to submit instead)"
        )
    try:
        req = LightRequest(kind or "auto", az)
    except BallisticsError as e:
        raise UsageError(f"--light {kind or 'auto'} --light-azimuth-deg {az}: {e}") from e
    if req.is_auto:
        return {}
    out: dict[str, Any] = {"light": req.kind}
    if req.azimuth_deg is not None:
        out["light_azimuth_deg"] = req.azimuth_deg
    return out


# --------------------------------------------------------------------------- human output


def _opt(msg: Any, name: str, fmt: str) -> str:
    """An optional proto field formatted with ``fmt``, or "-" when unset (unknown)."""
    return format(getattr(msg, name), fmt) if msg.HasField(name) else "-"


def _fmt_candidates(resp: Any) -> list[str]:
    lines = []
    for lst in [resp.combined, *resp.regions]:
        if not lst.candidates:
            continue
        lines.append(f"  {lst.region}:")
        lines.append(
            "    rank  casing                score   cmc  non-match freq  incident / agency"
        )
        for c in lst.candidates:
            if c.rescored:  # unknown values are unset on the wire and shown as "-", never 0
                score = (
                    f"{_opt(c, 'score', '6.3f'):>6} {_opt(c, 'cmc', 'd'):>5}"
                    f"  {_opt(c, 'non_match_frequency', '.3g'):>14}"
                )
            else:  # not fully compared: no score to show, only that it was not compared
                score = f"{'-':>6} {'-':>5}  {'not compared':>14}"
            where = f"  @{c.server}" if c.server else ""  # a peer's candidate (opaque ref)
            lines.append(
                f"    {c.rank:>4}  {c.casing_id:<20} {score}  {c.incident_id or '-'} / {c.agency}"
                + where
            )
            if c.low_confidence:  # a low score on a poor scan is not "different gun"
                lines.append(f"          LOW-CONFIDENCE: {'; '.join(c.low_confidence_reasons)}")
    if not lines:
        lines.append("  no candidates")
    for o in resp.peers:  # a federated search: how each peer server answered
        lines.append(f"  peer {o.server}: {o.state} ({o.candidates} candidates) {o.detail}")
    for c in resp.identical:
        lines.append(
            f"  same file: casing {c.casing_id} ({c.agency}, incident {c.incident_id or '-'})"
            " holds the query's very file (same SHA-256); not ranked"
        )
    if resp.partial:
        lines.append(f"  ({_partial_text(resp)})")
    if resp.screened_out:
        lines.append(f"  ({resp.screened_out} candidates screened out before the full comparison)")
    return lines


def _print_casing(c: Any) -> None:
    print(
        f"{c.casing_id}  agency={c.agency} incident={c.incident_id or '-'}"
        f" calibre={c.calibre or '-'} date={c.acquisition_date or '-'}"
        f" file={c.file_name or '-'} sha256={c.sha256[:16]}"
    )


# --------------------------------------------------------------------------- commands


def cmd_serve(args: argparse.Namespace) -> int:
    from index.errors import CatalogLockedError

    from .app import (
        ServerStartError,
        create_server,
        open_audit,
        open_backend,
        serve_until_signalled,
    )
    from .audit import AuditIntegrityError, AuditKeyError
    from .auth import AuthConfigError, Authenticator, tls_from_options
    from .policy import PolicyError, SharingPolicy

    if not args.auth:
        _err("refusing to start without --auth (a tokens file); see server/auth.py")
        return 2
    from index.vectors_milvus import VectorsURIError, parse_vectors_uri

    vectors = getattr(args, "vectors", None)
    try:
        parse_vectors_uri(vectors)
    except VectorsURIError as e:
        _err(f"--vectors: {e}")
        return 2
    from .interceptors import limits_from_args

    try:
        limits = limits_from_args(args)
    except ValueError as e:
        _err(str(e))
        return 2
    try:
        tls = tls_from_options(args.tls_cert, args.tls_key, args.tls_ca, args.require_client_cert)
        auth = Authenticator.from_file(args.auth)
        policy = SharingPolicy.from_file(args.policy) if args.policy else SharingPolicy.isolated()
    except (AuthConfigError, PolicyError) as e:
        _err(str(e))
        return 2
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        from .commands_index import store_config

        catalog_cfg: dict[str, str] = store_config(args)
        if vectors:
            catalog_cfg["vectors"] = vectors
        backend, close = open_backend(data_dir, limits, catalog_cfg or None)
    except CatalogLockedError as e:
        _err(f"{e}; is another server running on it?")
        return 2
    except Exception as e:
        _err(f"cannot open the store in {data_dir}: {type(e).__name__}: {e}")
        return 1
    try:
        audit = open_audit(
            data_dir,
            args.audit_key_file,
            backend,
            accept_unkeyed=args.accept_unkeyed_audit_log,
        )
    except (AuditKeyError, AuditIntegrityError) as e:
        _err(f"refusing to serve: {e}")
        close()
        return 2
    node = None
    if getattr(args, "federation", None):  # peers and agreements (server/federation.py)
        from .federation import FederationNode
        from .federation_config import FederationConfig, FederationConfigError

        try:
            fed_cfg = FederationConfig.from_file(args.federation)
            fed_cfg.check_credentials()
        except FederationConfigError as e:
            _err(str(e))
            audit.close()
            close()
            return 2
        node = FederationNode(
            fed_cfg, backend.catalog, policy=policy, audit=audit, data_dir=data_dir
        )
    try:
        server, port = create_server(
            backend,
            f"{args.host}:{args.port}",
            auth=auth,
            policy=policy,
            audit=audit,
            tls=tls,
            limits=limits,
            federation=node,
        )
    except (ServerStartError, AuthConfigError) as e:
        _err(str(e))
        if node is not None:
            node.close()
        audit.close()
        close()
        return 2
    if node is not None:
        print(
            f"ballistics: federation {node.config.name!r} on {node.config.listen_host}:"
            f"{node.port} (mutual TLS), peers {', '.join(sorted(node.config.peers))}",
            file=sys.stderr,
            flush=True,
        )
    web = None
    if getattr(args, "http_port", None) is not None:
        from .web import create_web_server

        assert server.service is not None
        try:
            web = create_web_server(
                server.service, args.host, args.http_port, tls=tls, intel=server.intel
            )
        except OSError as e:
            _err(
                f"cannot serve the review page on {args.host}:{args.http_port}: {e}"
                " (is the port in use? pick another --http-port, or 0 for any free port)"
            )
            if node is not None:
                node.close()
            audit.close()
            close()
            return 2
        print(f"ballistics: review page on {web.url}", file=sys.stderr, flush=True)
    print(
        f"ballistics: serving on {args.host}:{port} (data dir {data_dir},"
        f" {'TLS' if tls else 'plaintext'}); SIGTERM or Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    worker = None
    if not args.no_correlate:  # leads for examiners, in the background (index/correlate.py)
        from index.correlate import CorrelationWorker

        from .commands_leads import correlation_config

        try:
            cfg = correlation_config(args)
        except ValueError as e:
            _err(str(e))
            audit.close()
            close()
            return 2
        worker = CorrelationWorker(backend.catalog, policy=policy, config=cfg)
        worker.start()
    try:
        serve_until_signalled(server)
    finally:
        if web is not None:
            web.stop()
        if worker is not None:
            worker.stop()
        if node is not None:
            node.close()
        audit.close()
        close()
    print("ballistics: stopped", file=sys.stderr)
    return 0


def _scan_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in SCAN_SUFFIXES)
        if not files:
            raise UsageError(f"{path}: no scan files ({', '.join(sorted(SCAN_SUFFIXES))})")
        return files
    raise UsageError(f"{path}: no such file or directory")


class _Progress:
    """A one-line progress bar on stderr (only for folders)."""

    def __init__(self, total_bytes: int, n_files: int, enabled: bool) -> None:
        self.total, self.n, self.enabled = max(1, total_bytes), n_files, enabled
        self.done_bytes, self.done_files = 0, 0

    def chunk(self, n: int) -> None:
        self.done_bytes += n
        self.draw()

    def file_done(self) -> None:
        self.done_files += 1
        self.draw()

    def draw(self) -> None:
        if not self.enabled:
            return
        frac = min(1.0, self.done_bytes / self.total)
        bar = "#" * int(frac * 30)
        sys.stderr.write(
            f"\r[{bar:<30}] {self.done_files}/{self.n} files"
            f" {self.done_bytes / 1e6:7.1f}/{self.total / 1e6:.1f} MB"
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


@_handles_errors
def cmd_submit(args: argparse.Namespace) -> int:
    path = Path(args.path)
    files = _scan_files(path)
    meta: dict[str, Any] = {
        "incident_id": args.incident or "",
        "agency_case_number": args.case_number or "",
        "calibre": args.caliber or "",
        "acquisition_date": args.date or "",
        "place": args.place or "",
        "pixel_spacing_m": _spacing_m(args),
        "length_unit": _length_unit(args),
        **_light(args),
    }
    progress = _Progress(sum(f.stat().st_size for f in files), len(files), path.is_dir())
    failed = 0
    test_fire_of = getattr(args, "test_fire_of", None)
    with _client(args) as client:
        if test_fire_of:  # before any upload: an unknown or unseen firearm stops here
            client.get_firearm(test_fire_of)
        for f in files:
            try:
                resp = client.submit(f, on_chunk=progress.chunk, search=not args.no_search, **meta)
                if test_fire_of:  # the recovering agency's test fire (Intelligence service)
                    client.add_test_fire(test_fire_of, resp.casing_id)
            except grpc.RpcError as e:
                code = e.code()
                bad_file = code in (
                    grpc.StatusCode.INVALID_ARGUMENT,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                )
                if not path.is_dir() or not bad_file:
                    progress.close()
                    raise
                failed += 1  # one bad file in a folder: report it and go on
                sys.stderr.write("\n")
                _err(f"{f}: {code.name}: {e.details()}")
                continue
            finally:
                progress.file_done()
            if args.json:
                extra = {"test_fire_of": test_fire_of} if test_fire_of else {}
                _print_json({"file": str(f), **_to_dict(resp), **extra})
            elif not path.is_dir():
                print(f"{resp.casing_id}  sha256={resp.sha256}  {resp.size_bytes:,} bytes")
                if test_fire_of:
                    print(f"test fire of firearm {test_fire_of}")
                if resp.HasField("search"):
                    print("\n".join(_fmt_candidates(resp.search)))
    progress.close()
    if path.is_dir() and not args.json:
        print(f"submitted {len(files) - failed} of {len(files)} files from {path}")
    return 2 if failed else 0


@_handles_errors
def cmd_search(args: argparse.Namespace) -> int:
    if getattr(args, "rescue", None) is not None:
        raise UsageError("--rescue applies to a local search (--data-dir), not to --server")
    with _client(args) as client:
        if args.file:
            resp = client.search(
                file=args.file,
                calibre=args.caliber or "",
                max_results=args.top,
                pixel_spacing_m=_spacing_m(args),
                length_unit=_length_unit(args),
                **_light(args),
                scope=getattr(args, "scope", None) or "local",
            )
        else:
            if _length_unit(args):
                raise UsageError(
                    "--length-unit applies to --file; a stored casing was read when submitted"
                )
            if _light(args):
                raise UsageError(
                    "--light applies to --file; a stored casing's light was recorded when it "
                    "was submitted"
                )
            resp = client.search(
                args.casing_id,
                calibre=args.caliber or "",
                max_results=args.top,
                scope=getattr(args, "scope", None) or "local",
            )
    if args.json:  # one object per candidate per line, the keys of a local search
        for c in [*resp.combined.candidates, *resp.identical]:
            print(json.dumps(candidate_from_proto(c)))
        _notes_to_stderr(resp)
    else:
        print(f"candidates for {args.casing_id or args.file}:")
        print("\n".join(_fmt_candidates(resp)))
    return 0


def _peers_not_ok(resp: Any) -> list[str]:
    """Peers of a federated search that were asked and did not answer in full."""
    return [o.server for o in resp.peers if o.state not in ("ok", "not_asked")]


def _partial_text(resp: Any) -> str:
    """Why a search is partial: peers that did not answer, or re-ranking cut at the deadline
    (``partial`` is set for either; a peer's failure never fails the search)."""
    down = _peers_not_ok(resp)
    if down:
        return f"partial: no full answer from peer(s) {', '.join(down)} (see the peer lines)"
    return f"partial: re-ranking stopped at the deadline after {resp.scored} comparisons"


def _notes_to_stderr(resp: Any) -> None:
    """What a JSON candidate list cannot say: nothing found, a partial or screened run, and
    how each peer of a federated search answered."""
    if not resp.combined.candidates:
        _err("no candidates: the store holds nothing this account may search")
    for o in resp.peers:
        _err(f"peer {o.server}: {o.state} ({o.candidates} candidates) {o.detail}".rstrip())
    if resp.partial:
        _err(_partial_text(resp))
    if resp.screened_out:
        _err(f"{resp.screened_out} candidates screened out before the full comparison")


@_handles_errors
def cmd_compare(args: argparse.Namespace) -> int:
    if args.pairs or not (args.a and args.b):
        raise UsageError("with --server, compare takes two casing ids (A B); --pairs is local only")
    if _length_unit(args):
        raise UsageError(
            "--length-unit applies to files; with --server, compare takes stored casing ids "
            "(give --length-unit to submit instead)"
        )
    if getattr(args, "light", None) or getattr(args, "light_azimuth_deg", None):
        _light(args)  # refuses: casing ids carry the lights recorded at submission
    with _client(args) as client:
        resp = client.compare(
            args.a, args.b, picture=bool(args.png), server_b=getattr(args, "peer", None) or ""
        )
    if args.png:
        Path(args.png).write_bytes(resp.png)
    if args.json:  # the keys of a local compare (server/output.py)
        d = compare_from_proto(resp)
        if args.png:
            d["png_path"] = args.png
        print(json.dumps(d))
    else:
        print(
            f"{resp.casing_a} vs {resp.casing_b}: score {resp.score:.3f}, CMC {resp.cmc},"
            f" rotation {resp.rotation_deg:.1f} deg, shift ({resp.dx_m * 1e6:.1f},"
            f" {resp.dy_m * 1e6:.1f}) um,"
            f" non-match frequency {_opt(resp, 'non_match_frequency', '.3g')}"
        )
        for region, s in sorted(resp.region_scores.items()):
            print(f"  {region}: {s:.3f}")
        for reason in resp.low_confidence_reasons:
            print(f"  LOW-CONFIDENCE: {reason}")
        if args.png:
            print(f"  picture: {args.png}")
    return 0


@_handles_errors
def cmd_decide(args: argparse.Namespace) -> int:
    with _client(args) as client:
        d = client.decide(
            args.casing_id,
            args.candidate_id,
            args.verdict,
            args.comment,
            candidate_server=getattr(args, "peer", None) or "",
        )
    if args.json:
        _print_json(_to_dict(d))
    else:
        sup = f" (supersedes {d.supersedes})" if d.supersedes else ""
        print(
            f"decision {d.decision_id}: {args.verdict} {d.casing_id} ~ {d.candidate_id}"
            f" by {d.examiner} ({d.agency}) at {d.time}{sup}"
        )
    return 0


@_handles_errors
def cmd_links(args: argparse.Namespace) -> int:
    with _client(args) as client:
        g = client.links(casing_id=args.casing_id, incident_id=args.incident_id)
    if args.json:
        _print_json(_to_dict(g))
        return 0
    print(f"{len(g.nodes)} incident(s), {len(g.edges)} confirmed hit(s)")
    for n in g.nodes:
        print(
            f"  incident {n.incident_id} ({n.agency}, {n.jurisdiction}):"
            f" {', '.join(n.casing_ids) or '-'}"
        )
    for e in g.edges:
        print(
            f"  {e.incident_a} -- {e.incident_b}: hit {e.casing_a} ~ {e.casing_b}"
            f" by {e.examiner} ({e.agency}) at {e.time}"
        )
    return 0


@_handles_errors
def cmd_casings(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.casing_id:
            c = client.get(args.casing_id)
            if args.json:
                _print_json(_to_dict(c))
            else:
                _print_casing(c)
            return 0
        resp = client.list()
    if args.json:
        for c in resp.casings:
            _print_json(_to_dict(c))
    else:
        for c in resp.casings:
            _print_casing(c)
        print(f"{len(resp.casings)} casing(s)")
    return 0


@_handles_errors
def cmd_delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        resp = client.delete(args.casing_id, args.reason)
    if args.json:
        _print_json(_to_dict(resp))
    else:
        print(f"deleted {resp.casing_id}" if resp.deleted else f"{resp.casing_id} not deleted")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from .audit import (
        HEAD_SUFFIX,
        LOG_NAME,
        AuditKeyError,
        default_key_path,
        generate_key,
        load_key,
        verify,
    )

    key_path = Path(args.audit_key_file) if args.audit_key_file else default_key_path()
    if args.action == "keygen":
        try:
            generate_key(key_path)
        except AuditKeyError as e:
            _err(str(e))
            return 2
        print(f"wrote a new audit key to {key_path} (mode 0600); back it up, outside the data dir")
        return 0
    if not args.data_dir:
        _err("audit verify needs --data-dir (the server's data directory)")
        return 2
    d = Path(args.data_dir)
    if not (d / LOG_NAME).exists() and not (d / (LOG_NAME + HEAD_SUFFIX)).exists():
        # Nothing to verify is not "intact" and not "tampered": bad input (exit 2).
        why = (
            "no such folder"
            if not d.is_dir()
            else f"a server writes {LOG_NAME} on its first call; ingest and local search do not"
        )
        message = f"no audit log in {d}: nothing to verify ({why})"
        if args.json:
            _print_json({"ok": False, "first_bad_seq": None, "message": message})
        _err(message)
        return 2
    try:
        key = load_key(key_path, data_dir=args.data_dir)
    except AuditKeyError as e:
        _err(str(e))
        return 2
    v = verify(Path(args.data_dir), key)
    if args.json:
        _print_json(
            {
                "ok": v.ok,
                "first_bad_seq": v.first_bad_seq,
                "message": v.message,
                "count": v.count,
                "last_mac": v.last_mac,
            }
        )
    elif v.ok:
        print(v.message)
    else:
        _err(f"audit log NOT intact: {v.message}")
    return 0 if v.ok else 1
