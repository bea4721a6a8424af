"""`make demo`: the main job end to end, on the embedded store, over gRPC on loopback.

What it does, in a fresh folder ``out/demo-<timestamp>/``:

1. writes an auth file (tokens for three agencies, each with a submitter, an examiner and an
   admin; only token hashes are stored), the example tokens themselves in ``tokens.txt``
   (mode 0600, marked as demo-only, so the README's server commands can be followed by hand)
   and a sharing policy: Riverside PD (state-north) and
   Lakeside Sheriff (state-south) search each other, Federal Lab X (federal) only itself;
2. starts ``ballistics serve`` on 127.0.0.1 (a free port) and waits for health SERVING;
3. submits the Fadul scans from ../shared/data/real (referenced in place, never copied): the
   "known" casings as Riverside PD (one incident per slide), the lettered "questioned" casings
   as Lakeside Sheriff, all but one held back; and a synthetic corpus as Federal Lab X;
4. submits the held-back casing as a new Lakeside case and prints its ranked candidate list,
   with the ground truth ("same slide as query") from MANIFEST.tsv next to each candidate;
5. records an examiner's hit on the top candidate, prints the cross-jurisdiction link graph,
   writes the comparison picture;
6. shows that Federal Lab X cannot see Riverside data and Riverside cannot see Federal data;
7. opens the examiner's review page (``serve --http-port``) as Lakeside's examiner over HTTP
   and checks it shows the new casing's search;
8. stops the server (SIGTERM), runs ``ballistics audit verify`` and prints a summary, ending
   with how to start the review page and the examiner's login token (demo only).

Without the real data it says so and uses synthetic casings for everything (``--synthetic``
forces that; ``--quick`` is the small synthetic run the test suite uses). Exit status 0 when
every step and check passed, 1 otherwise (the message names the step).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python scripts/demo.py` puts scripts/, not the repo, on the path
    sys.path.insert(0, str(REPO))

REAL_DATA = REPO.parent / "shared" / "data" / "real"
FADUL_DIR = REAL_DATA / "csafe-cartridgeCaseScans" / "fadul"
FADUL_MANIFEST = REAL_DATA / "csafe-cartridgeCaseScans" / "MANIFEST.tsv"
# Held back and submitted last as the "new" casing. Slide 1 has one lettered casing (F), so the
# only same-slide casings in the store are Riverside's known ones: a hit links two agencies.
FADUL_QUERY = "Fadul_F.x3p"
MARKER = ".ballistics-demo"

RIVERSIDE, LAKESIDE, FEDERAL = "Riverside PD", "Lakeside Sheriff", "Federal Lab X"
AGENCIES = {RIVERSIDE: "state-north", LAKESIDE: "state-south", FEDERAL: "federal"}
SHARING = {"state-north": ["state-south"], "state-south": ["state-north"], "federal": []}
TOKENS_FILE = "tokens.txt"
USERS = {  # agency -> role -> user name
    RIVERSIDE: {"submitter": "r.tech", "examiner": "r.examiner", "admin": "r.admin"},
    LAKESIDE: {"submitter": "l.tech", "examiner": "l.examiner", "admin": "l.admin"},
    FEDERAL: {"submitter": "f.tech", "examiner": "f.examiner", "admin": "f.admin"},
}


class DemoError(Exception):
    """A step failed; the message says which and why."""


@dataclass
class Item:
    """One scan to submit: where it is, its ground-truth firearm, its role in the demo."""

    path: Path
    firearm: str
    role: str  # "known" (Riverside), "questioned" (Lakeside), "query", "federal"
    incident: str = ""


@dataclass
class Result:
    """What the demo produced, for the summary and for tests."""

    data_source: str = ""
    out_dir: Path | None = None
    address: str = ""
    review_url: str = ""
    examiner_token: str = ""
    query_casing: str = ""
    query_incident: str = ""
    candidates: list[dict[str, Any]] = field(default_factory=list)
    top_same_source: bool | None = None
    links: dict[str, Any] = field(default_factory=dict)
    png: Path | None = None
    federal_sees: list[str] = field(default_factory=list)
    riverside_sees: list[str] = field(default_factory=list)
    audit: dict[str, Any] = field(default_factory=dict)
    timings: list[tuple[str, float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    unit: str = "firearm"  # what the ground truth calls a source: "slide" for Fadul


def say(msg: str = "") -> None:
    print(msg, flush=True)


@contextlib.contextmanager
def step(result: Result, name: str) -> Iterator[None]:
    say(f"\n== {name}")
    t0 = time.monotonic()
    try:
        yield
    except DemoError as e:
        raise DemoError(f"step '{name}' failed: {e}") from e
    except Exception as e:  # anything unexpected: name the step, keep the cause
        raise DemoError(f"step '{name}' failed: {type(e).__name__}: {e}") from e
    finally:
        result.timings.append((name, time.monotonic() - t0))
    say(f"   ({result.timings[-1][1]:.1f} s)")


# --------------------------------------------------------------------------- the command line


def ballistics_cmd() -> list[str]:
    """The installed ``ballistics`` script next to this Python, else ``python -m server.cli``."""
    exe = Path(sys.executable).with_name("ballistics")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "server.cli"]


def cli_env(token: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("BALLISTICS_TOKEN", None)
    if token:
        env["BALLISTICS_TOKEN"] = token  # not on the command line, where `ps` would show it
    return env


def cli(
    args: Sequence[str],
    *,
    token: str | None = None,
    expect: int = 0,
    timeout: float = 300.0,
    what: str = "",
) -> subprocess.CompletedProcess[str]:
    """Run ``ballistics ARGS``; show the command; raise DemoError on an unexpected status."""
    shown = " ".join(a if " " not in a else repr(a) for a in args)
    say(f"   $ ballistics {shown}")
    p = subprocess.run(
        [*ballistics_cmd(), *args],
        cwd=REPO,
        env=cli_env(token),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if p.returncode != expect:
        detail = (p.stderr.strip() or p.stdout.strip())[-800:]
        raise DemoError(
            f"{what or 'ballistics ' + args[0]}: exit {p.returncode} (expected {expect}): {detail}"
        )
    return p


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


# --------------------------------------------------------------------------- set-up


def fresh_dir(out: Path | None) -> Path:
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = REPO / "out" / f"demo-{stamp}"
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise DemoError(f"{out} exists, is not empty and is not a demo folder; not wiping it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by scripts/demo.py; safe to delete\n")
    return out


TOKENS_WARNING = (
    "# EXAMPLE tokens made by scripts/demo.py for this demo folder only. Anyone who can read"
    " this file can act as these users: never use them for real casework (make real tokens"
    " with 'ballistics auth add-user'; they are shown once and never written down)."
)


def write_tokens_file(path: Path, rows: list[tuple[str, str, str, str]]) -> None:
    """The demo's example tokens, tab-separated (agency, role, user, token), mode 0600."""
    lines = [TOKENS_WARNING, "# agency\trole\tuser\ttoken"]
    lines += ["\t".join(r) for r in rows]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    path.chmod(0o600)


def write_auth_and_policy(out: Path) -> tuple[Path, Path, dict[tuple[str, str], str]]:
    from server.auth import new_token_entry, write_auth_file

    tokens: dict[tuple[str, str], str] = {}
    entries = []
    rows = []
    for agency, roles in USERS.items():
        for role, user in roles.items():
            token, entry = new_token_entry(user, agency, role)
            tokens[(agency, role)] = token
            entries.append(entry)
            rows.append((agency, role, user, token))
    auth = out / "auth.json"
    write_auth_file(auth, entries)
    write_tokens_file(out / TOKENS_FILE, rows)
    policy = out / "policy.json"
    policy.write_text(json.dumps({"agencies": AGENCIES, "jurisdictions": SHARING}, indent=2) + "\n")
    return auth, policy, tokens


def fadul_items() -> list[Item]:
    items = []
    with FADUL_MANIFEST.open(newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            path = FADUL_MANIFEST.parent / row["file"]
            name = path.name
            if name == FADUL_QUERY:
                items.append(Item(path, row["firearm_id"], "query", "LSO-2024-0117"))
            elif row["role"] == "known":
                slide = int(re.match(r"Fadul_(\d+)-", name).group(1))  # type: ignore[union-attr]
                items.append(Item(path, row["firearm_id"], "known", f"RPD-2011-{slide:03d}"))
            else:
                letter = path.stem.split("_", 1)[1]
                items.append(Item(path, row["firearm_id"], "questioned", f"LSO-2011-{letter}"))
    return items


def synthetic_items(folder: Path, *, guns: int, shots: int, seed: int, role: str) -> list[Item]:
    """Write a synthetic corpus. For the shared jurisdictions: shots 1..n-1 of every gun are
    Riverside's known casings, the last shot Lakeside's (the first gun's last shot is the query).
    """
    from ballistics.synth import write_corpus

    manifest = write_corpus(folder, guns=guns, shots=shots, seed=seed)
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    items = []
    first_gun = rows[0]["firearm_id"]
    for row in rows:
        path, gun = folder / row["file"], row["firearm_id"]
        if role == "federal":
            items.append(Item(path, gun, "federal", "FED-2024-001"))
        elif not row["casing_id"].endswith(f"-{shots:02d}"):
            items.append(Item(path, gun, "known", f"RPD-{gun}"))
        elif gun == first_gun:
            items.append(Item(path, gun, "query", "LSO-2024-0117"))
        else:
            items.append(Item(path, gun, "questioned", f"LSO-{gun}"))
    return items


# --------------------------------------------------------------------------- the server


class RunningServer:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path, address: str) -> None:
        self.proc, self.log, self.address = proc, log, address
        self.review_url = ""

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise DemoError(f"server did not stop within {timeout:.0f} s of SIGTERM") from None
        return int(self.proc.returncode)


def start_server(
    data_dir: Path, auth: Path, policy: Path, log: Path, timeout: float, key: Path
) -> RunningServer:
    from server.client import Client

    args = ["serve", "--data-dir", str(data_dir), "--port", "0", "--host", "127.0.0.1"]
    args += ["--http-port", "0"]
    args += ["--auth", str(auth), "--policy", str(policy), "--audit-key-file", str(key)]
    say(f"   $ ballistics {' '.join(args)}")
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [*ballistics_cmd(), *args], cwd=REPO, env=cli_env(), stdout=fh, stderr=fh
        )
    srv = RunningServer(proc, log, "")
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:  # the port: `serve --port 0` logs the one it bound
            if proc.poll() is not None:
                raise DemoError(f"server exited with {proc.returncode}: {tail(log)}")
            text = log.read_text(errors="replace")
            m = re.search(r"serving on ([\d.]+:\d+)", text)
            if m:
                srv.address = m.group(1)
                web = re.search(r"review page on (https?://\S+)", text)
                srv.review_url = web.group(1) if web else ""
                break
            time.sleep(0.1)
        else:
            raise DemoError(f"server did not report its port within {timeout:.0f} s: {tail(log)}")
        with Client(srv.address, None) as c:
            status = ""
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise DemoError(f"server exited with {proc.returncode}: {tail(log)}")
                with contextlib.suppress(Exception):
                    status = c.health(timeout=2.0)
                if status == "SERVING":
                    return srv
                time.sleep(0.2)
        raise DemoError(f"health was not SERVING within {timeout:.0f} s (last: {status or '-'})")
    except BaseException:
        with contextlib.suppress(DemoError):
            srv.stop(10)
        raise


def tail(log: Path, n: int = 600) -> str:
    try:
        return log.read_text(errors="replace")[-n:].strip() or "(no output)"
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- the demo


def submit_many(address: str, token: str, items: list[Item], agency: str) -> dict[Path, str]:
    """Submit files (no search after each), two at a time; returns path -> casing id."""
    from server.client import Client

    done: dict[Path, str] = {}
    tty = sys.stdout.isatty()

    def one(client: Client, it: Item) -> tuple[Path, str]:
        resp = client.submit(
            it.path,
            incident_id=it.incident,
            agency_case_number=it.incident,
            calibre="9mm",
            acquisition_date="2011-01-24" if it.firearm.startswith("fadul") else "",
            place="",
            search=False,
            timeout=120,
        )
        return it.path, resp.casing_id

    with Client(address, token) as client, ThreadPoolExecutor(2) as pool:
        for i, (path, cid) in enumerate(pool.map(lambda it: one(client, it), items), 1):
            done[path] = cid
            if tty:
                print(f"\r   {agency}: {i}/{len(items)} submitted", end="", flush=True)
            elif i % 10 == 0 or i == len(items):
                say(f"   {agency}: {i}/{len(items)} submitted")
    if tty:
        say()
    return done


def candidate_rows(resp: dict[str, Any]) -> list[dict[str, Any]]:
    combined = resp.get("combined") or {}
    return list(combined.get("candidates") or [])


def run(opts: argparse.Namespace) -> Result:
    result = Result()
    t_start = time.monotonic()
    out = fresh_dir(Path(opts.out) if opts.out else None)
    result.out_dir = out
    data_dir = out / "data"
    say(f"demo folder: {out}")

    with step(result, "data"):
        synthetic = opts.synthetic or opts.quick
        if not synthetic and FADUL_MANIFEST.is_file() and FADUL_DIR.is_dir():
            items = fadul_items()
            missing = [it.path for it in items if not it.path.is_file()]
            if missing:
                raise DemoError(f"{len(missing)} Fadul files listed in the manifest are missing")
            result.data_source = f"Fadul scans at {FADUL_DIR} (referenced in place)"
        else:
            if not synthetic:
                say(f"   real data not found at {REAL_DATA}: using synthetic casings instead")
            guns, shots = (2, 3) if opts.quick else (6, 3)
            say(f"   writing a synthetic corpus ({guns} guns x {shots} shots) ...")
            items = synthetic_items(
                out / "synthetic-shared", guns=guns, shots=shots, seed=11, role="shared"
            )
            result.data_source = f"synthetic ({guns} guns x {shots} shots, seed 11)"
        fg, fs = (2, 1) if opts.quick else (6, 2)
        say(f"   writing Federal Lab X's synthetic corpus ({fg} guns x {fs} shots) ...")
        fed_dir = out / "synthetic-federal"
        items += synthetic_items(fed_dir, guns=fg, shots=fs, seed=99, role="federal")
        by_role: dict[str, list[Item]] = {}
        for it in items:
            by_role.setdefault(it.role, []).append(it)
        (query,) = by_role["query"]
        truth = {it.path: it.firearm for it in items}
        for role, its in sorted(by_role.items()):
            result.counts[role] = len(its)
        say(f"   source: {result.data_source}")
        say(
            f"   {len(by_role['known'])} known -> {RIVERSIDE}, {len(by_role['questioned'])}"
            f" questioned -> {LAKESIDE}, {len(by_role['federal'])} -> {FEDERAL},"
            f" held back as the new casing: {query.path.name} ({query.firearm})"
        )

    with step(result, "auth file and sharing policy"):
        auth, policy, tokens = write_auth_and_policy(out)
        say(f"   {auth}: 9 users (submitter, examiner, admin in each agency); token hashes only")
        say(f"   {out / TOKENS_FILE}: the 9 example tokens (0600; demo only, see its first line)")
        say(f"   {policy}: " + json.dumps({"agencies": AGENCIES, "jurisdictions": SHARING}))
        # the audit log's HMAC key lives outside the data dir (whoever can rewrite the log must
        # not be able to re-sign it)
        audit_key = out / "audit.key"
        cli(["audit", "keygen", "--audit-key-file", str(audit_key)], what="audit keygen")

    srv: RunningServer | None = None
    try:  # the server is always stopped: SIGTERM, then wait (see finally)
        with step(result, "start the server"):
            srv = start_server(
                data_dir, auth, policy, out / "server.log", opts.start_timeout, audit_key
            )
            result.address = srv.address
            say(f"   health SERVING at {srv.address} (log: {srv.log})")
        remote = ["--server", srv.address]

        ids: dict[Path, str] = {}
        with step(result, f"submit {RIVERSIDE}'s known casings (one incident per firearm)"):
            ids |= submit_many(
                srv.address, tokens[(RIVERSIDE, "submitter")], by_role["known"], RIVERSIDE
            )
        with step(result, f"submit {LAKESIDE}'s questioned casings (held one back)"):
            ids |= submit_many(
                srv.address, tokens[(LAKESIDE, "submitter")], by_role["questioned"], LAKESIDE
            )
        with step(result, f"submit {FEDERAL}'s synthetic corpus (one folder upload)"):
            p = cli(
                [
                    "submit",
                    str(fed_dir),
                    "--incident",
                    "FED-2024-001",
                    "--caliber",
                    "9mm",
                    "--no-search",
                    "--json",
                    *remote,
                ],
                token=tokens[(FEDERAL, "submitter")],
            )
            for rec in json_lines(p.stdout):
                ids[Path(rec["file"])] = rec["casing_id"]
            n_fed = sum(1 for it in by_role["federal"] if it.path in ids)
            if n_fed != len(by_role["federal"]):
                raise DemoError(f"federal upload stored {n_fed} of {len(by_role['federal'])}")
            say(f"   {n_fed} casings stored for {FEDERAL}")
        firearm_of = {cid: truth[path] for path, cid in ids.items()}
        name_of = {cid: path.name for path, cid in ids.items()}

        with step(result, f"a new casing from {LAKESIDE}: submit and search"):
            p = cli(
                [
                    "submit",
                    str(query.path),
                    "--incident",
                    query.incident,
                    "--case-number",
                    "LSO-24-0117-E3",
                    "--caliber",
                    "9mm",
                    "--place",
                    "Lakeside",
                    "--json",
                    *remote,
                ],
                token=tokens[(LAKESIDE, "submitter")],
            )
            (sub,) = json_lines(p.stdout)
            qid = sub["casing_id"]
            result.query_casing, result.query_incident = qid, query.incident
            firearm_of[qid], name_of[qid] = query.firearm, query.path.name
            cands = candidate_rows(sub.get("search") or {})[:10]
            unit = result.unit = "slide" if query.firearm.startswith("fadul") else "firearm"
            result.candidates = cands
            say(f"   casing {qid} ({query.path.name}), sha256 {sub['sha256'][:16]}...")
            say("   ranked candidates (ground truth from the manifest, for checking only):")
            say(
                f"   {'rank':>4}  {'casing id':<17} {'file':<22} {'agency':<17}"
                f" {'score':>6} {'CMC':>4} {'non-match freq':>14}  same {unit} as query"
            )
            for c in cands:
                cid = c["casing_id"]
                same = "yes" if firearm_of.get(cid) == query.firearm else "no"
                say(
                    f"   {c.get('rank', 0):>4}  {cid:<17} {name_of.get(cid, '?'):<22}"
                    f" {c.get('agency', ''):<17} {c.get('score', 0.0):6.3f}"
                    f" {c.get('cmc', 0):>4} {c.get('non_match_frequency', 0.0):14.3g}  {same}"
                )
            if not cands:
                raise DemoError("the new casing's candidate list is empty")
            top = cands[0]
            result.top_same_source = firearm_of.get(top["casing_id"]) == query.firearm
            if not result.top_same_source:
                result.failures.append(
                    f"top candidate {top['casing_id']} is not from the query's firearm"
                )
            if top.get("agency") != RIVERSIDE:
                result.failures.append(f"top candidate belongs to {top.get('agency')!r}")

        examiner = tokens[(LAKESIDE, "examiner")]
        with step(result, f"{LAKESIDE}'s examiner confirms the top candidate as a hit"):
            p = cli(
                [
                    "decide",
                    qid,
                    top["casing_id"],
                    "--verdict",
                    "hit",
                    "--comment",
                    "breech-face marks agree; confirmed on the comparison microscope",
                    *remote,
                ],
                token=examiner,
            )
            say("   " + p.stdout.strip())

        with step(result, "cross-jurisdiction link graph"):
            p = cli(["links", "--casing-id", qid, *remote], token=examiner)
            say("\n".join("   " + line for line in p.stdout.strip().splitlines()))
            (result.links,) = json_lines(
                cli(["links", "--casing-id", qid, "--json", *remote], token=examiner).stdout
            )
            incidents = {n["incident_id"] for n in result.links.get("nodes", [])}
            if incidents != {query.incident, top.get("incident_id")}:
                raise DemoError(f"link graph has incidents {sorted(incidents)}")

        with step(result, "comparison picture of the query and the top candidate"):
            png = out / "comparison.png"
            p = cli(["compare", qid, top["casing_id"], "--png", str(png), *remote], token=examiner)
            say("\n".join("   " + line for line in p.stdout.strip().splitlines()))
            if not png.is_file() or png.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
                raise DemoError(f"{png} is not a PNG file")
            result.png = png
            say(f"   picture written: {png} ({png.stat().st_size:,} bytes)")

        with step(result, "sharing: who can see whose data"):
            fed_any = ids[by_role["federal"][0].path]
            riv_any = ids[by_role["known"][0].path]
            fed_tok, riv_tok = tokens[(FEDERAL, "examiner")], tokens[(RIVERSIDE, "examiner")]
            # Federal Lab X searches with the very file Lakeside submitted: only its own data.
            p = cli(
                ["search", "--file", str(query.path), "--top", "10", "--json", *remote],
                token=fed_tok,
            )
            rows = json_lines(p.stdout)  # one object per candidate
            result.federal_sees = sorted({c.get("agency", "") for c in rows})
            say(
                f"   {FEDERAL} searching with {query.path.name}:"
                f" candidates from {result.federal_sees}"
            )
            p = cli(
                ["casings", riv_any, "--json", *remote],
                token=fed_tok,
                expect=2,
                what=f"{FEDERAL} reading a {RIVERSIDE} casing",
            )
            say(f"   {FEDERAL} reading {RIVERSIDE}'s casing {riv_any}: {p.stderr.strip()}")
            p = cli(
                ["search", "--casing-id", riv_any, "--top", "10", "--json", *remote],
                token=riv_tok,
            )
            rows = json_lines(p.stdout)
            result.riverside_sees = sorted({c.get("agency", "") for c in rows})
            say(
                f"   {RIVERSIDE} searching with its own casing:"
                f" candidates from {result.riverside_sees}"
            )
            p = cli(
                ["casings", fed_any, "--json", *remote],
                token=riv_tok,
                expect=2,
                what=f"{RIVERSIDE} reading a {FEDERAL} casing",
            )
            say(f"   {RIVERSIDE} reading {FEDERAL}'s casing {fed_any}: {p.stderr.strip()}")
            if result.federal_sees != [FEDERAL] and result.federal_sees:
                raise DemoError(f"{FEDERAL} saw candidates from {result.federal_sees}")
            if FEDERAL in result.riverside_sees:
                raise DemoError(f"{RIVERSIDE} saw {FEDERAL} candidates")
            if LAKESIDE not in result.riverside_sees:
                result.failures.append(f"{RIVERSIDE} did not see {LAKESIDE} data it may search")
        with step(result, f"the review page, as {LAKESIDE}'s examiner"):
            page = review_page_check(srv.review_url, examiner, qid)
            say(f"   {srv.review_url} (logged in by token in a POST form; session cookie)")
            say(f"   the new casing's search shows {page} candidate rows")
            result.examiner_token = examiner

        with step(result, "stop the server (SIGTERM, graceful)"):
            rc = srv.stop()
            say(f"   server exited with status {rc}")
            if rc != 0:
                raise DemoError(f"server exited with status {rc}: {tail(srv.log)}")
    finally:
        if srv is not None and srv.proc.poll() is None:  # a step failed: stop it all the same
            say("   stopping the server after the failure ...")
            with contextlib.suppress(Exception):
                srv.stop()

    with step(result, "audit log"):
        verify_args = ["audit", "verify", "--data-dir", str(data_dir), "--json"]
        p = cli([*verify_args, "--audit-key-file", str(audit_key)], what="audit verify")
        (result.audit,) = json_lines(p.stdout)
        say(f"   {result.audit.get('message')}")
        if not result.audit.get("ok"):
            raise DemoError(f"audit verify: {result.audit}")

    result.timings.append(("total", time.monotonic() - t_start))
    return result


def review_page_check(url: str, token: str, casing_id: str) -> int:
    """Log in to the review page with ``token`` and open ``casing_id``'s search; returns the
    number of candidate rows shown (DemoError when the page does not answer as it should)."""
    import http.client
    from urllib.parse import urlencode, urlsplit

    if not url:
        raise DemoError("the server did not report its review page address")
    u = urlsplit(url)
    cookie = ""

    def request(method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, str]:
        nonlocal cookie
        conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port or 80, timeout=300)
        headers = {"Cookie": cookie} if cookie else {}
        if form is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, urlencode(form) if form else None, headers)
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", "replace")
        set_cookie = resp.getheader("Set-Cookie")
        if set_cookie:
            cookie = set_cookie.split(";", 1)[0]
        location = resp.getheader("Location") or ""
        conn.close()
        if resp.status == 303 and location.startswith("/"):
            return request("GET", location)
        return resp.status, body

    status, page = request("GET", "/login")
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    if status != 200 or not m:
        raise DemoError(f"the login page answered {status} without a form")
    status, _ = request("POST", "/login", {"csrf": m.group(1), "token": token})
    if status != 200:
        raise DemoError(f"logging in to the review page answered {status}")
    status, page = request("GET", "/search?" + urlencode({"casing_id": casing_id}))
    rows = page.count("class='cand'")
    if status != 200 or casing_id not in page or not rows:
        raise DemoError(f"the review page's search for {casing_id} answered {status}")
    return rows


def summary(r: Result) -> None:
    say("\n== summary")
    say(f"   data:            {r.data_source}")
    say(f"   casings:         {json.dumps(r.counts, sort_keys=True)}")
    top = r.candidates[0] if r.candidates else {}
    say(
        f"   new casing:      {r.query_casing} -> top candidate {top.get('casing_id', '-')}"
        f" ({top.get('agency', '-')}), same {r.unit} as query: "
        + {True: "yes", False: "NO", None: "-"}[r.top_same_source]
    )
    nodes = r.links.get("nodes", [])
    say(
        "   link graph:      "
        + " -- ".join(f"{n['incident_id']} ({n['agency']}, {n['jurisdiction']})" for n in nodes)
    )
    say(f"   picture:         {r.png}")
    say(f"   {FEDERAL} sees: {r.federal_sees}; {RIVERSIDE} sees: {r.riverside_sees}")
    say(f"   audit:           {'ok' if r.audit.get('ok') else 'NOT ok'}")
    say("   timings:")
    for name, secs in r.timings:
        say(f"     {secs:6.1f} s  {name}")
    say(f"   folder:          {r.out_dir}")
    if r.out_dir is not None:
        d = r.out_dir
        say("   try the service by hand (example tokens in tokens.txt; demo only):")
        say(
            f"     ballistics serve --data-dir {d / 'data'} --auth {d / 'auth.json'}"
            f" --policy {d / 'policy.json'} --audit-key-file {d / 'audit.key'} &"
        )
        say(
            f"     export BALLISTICS_TOKEN=$(awk -F'\\t' '$3==\"l.examiner\" {{print $4}}'"
            f" {d / TOKENS_FILE})"
        )
        say("     ballistics casings --server 127.0.0.1 | tail -1")
        say("   the examiner's review page (start the server with --http-port 8080 as above):")
        say(
            f"     ballistics serve --data-dir {d / 'data'} --auth {d / 'auth.json'}"
            f" --policy {d / 'policy.json'} --audit-key-file {d / 'audit.key'}"
            " --http-port 8080 &"
        )
        say(f"     review page: http://127.0.0.1:8080/search?casing_id={r.query_casing}")
        if r.examiner_token:
            say(
                f"     log in as {USERS[LAKESIDE]['examiner']} ({LAKESIDE}) with the token"
                f" (demo only): {r.examiner_token}"
            )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out",
        help="demo folder (default: out/demo-<timestamp>; a previous demo"
        " folder given here is wiped first)",
    )
    ap.add_argument("--synthetic", action="store_true", help="use synthetic casings only")
    ap.add_argument("--quick", action="store_true", help="small synthetic run (for tests)")
    ap.add_argument("--start-timeout", type=float, default=90.0, help="seconds to wait for SERVING")
    opts = ap.parse_args(argv)
    try:
        result = run(opts)
    except DemoError as e:
        say(f"\ndemo FAILED: {e}")
        return 1
    except KeyboardInterrupt:
        say("\ndemo interrupted")
        return 130
    summary(result)
    if result.failures:
        say("\ndemo finished, but these checks FAILED:")
        for f in result.failures:
            say(f"   - {f}")
        return 1
    say("\ndemo OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
