"""`ballistics serve --federation FILE` as real processes, set up with the README's commands.

Two servers, A and B, each a `python -m server.cli serve` subprocess with its own data dir,
tokens, sharing policy, audit key and federation config. The certificates, the configs and the
`federation check` / `serve` / `search` command lines are taken from the README section
"Servers that search each other" (B's side is A's with the names swapped, as the README says),
so a wrong or incomplete README fails this test. The stores are filled with `ballistics ingest`
(small synthetic scans, the real pipeline) before the servers start.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import queue
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from server.federation_local import free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START_TIMEOUT_S = 60.0

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("cryptography") is None
    or not all(
        importlib.util.find_spec(f"ballistics.{m}") is not None
        for m in ("pipeline", "descriptors", "compare", "synth")
    ),
    reason="needs cryptography (certificates) and the real pipeline (serve opens it)",
)


# ------------------------------------------------------------------------- the README


@dataclass(frozen=True)
class JoinRecipe:
    """The README's "To join two" block, A's side."""

    pki: dict[str, list[str]]  # server name -> its `python -c ...` command (argv)
    config_text: str  # fed-A.json as written
    policy_text: str  # A's policy.json as written
    commands: dict[str, list[str]]  # "federation check" / "serve" / "search" -> argv


def _readme_recipe() -> JoinRecipe:
    text = README.read_text()
    start = text.index("## Servers that search each other")
    block = text[start:].split("```sh\n", 1)[1].split("\n```", 1)[0]
    pki: dict[str, list[str]] = {}
    commands: dict[str, list[str]] = {}
    for line in block.splitlines():
        if line.startswith("python -c"):
            where = re.search(r"#\s*on (\w+)\s*$", line)
            assert where, f"README: say which server runs {line!r} ('# on A')"
            pki[where.group(1)] = shlex.split(line, comments=True)
        for name in ("federation check", "serve", "search"):
            if line.startswith(f"ballistics {name} "):
                commands.setdefault(name, shlex.split(line, comments=True)[1:])
    files = dict(re.findall(r"cat > (\S+) <<'JSON'\n(.*?)\nJSON\n", block, re.S))
    assert {"fed-A.json", "policy.json"} <= set(files), f"README: heredocs {sorted(files)}"
    assert set(pki) == {"A", "B"}, pki
    assert set(commands) == {"federation check", "serve", "search"}, commands
    return JoinRecipe(pki, files["fed-A.json"], files["policy.json"], commands)


def _mirror(text: str) -> str:
    """A's text as B writes it: the names A and B swapped ("B's mirrors it")."""
    return re.sub(r"\b[AB]\b", lambda m: "B" if m.group(0) == "A" else "A", text)


def _mirror_argv(argv: list[str]) -> list[str]:
    return [_mirror(a) for a in argv]


# ------------------------------------------------------------------------- processes


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("BALLISTICS_TOKEN", None)
    env.pop("BALLISTICS_AUDIT_KEY_FILE", None)
    return env


def _cli(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``ballistics ARGS`` in a fresh interpreter (the installed entry point's module)."""
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class Served:
    """A `ballistics serve` subprocess and everything it wrote on stderr (read by a thread,
    so a chatty server never blocks on a full pipe)."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    port: int = 0
    _q: queue.Queue[str | None] = field(default_factory=queue.Queue)
    _pumping: threading.Thread | None = None

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            self._q.put(line)
        self._q.put(None)

    def wait_serving(self) -> int:
        self._pumping = threading.Thread(target=self._pump, daemon=True)
        self._pumping.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                line = self._q.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            if "serving on" in line:
                self.port = int(line.split("serving on ")[1].split(" ")[0].rsplit(":", 1)[1])
                return self.port
        raise AssertionError(f"serve did not start (exit {self.proc.poll()}): {self.stderr}")

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def stop(self, *, kill: bool = False) -> int:
        """SIGTERM (or SIGKILL) and wait; the exit status."""
        if self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            if self._pumping is not None:
                self._pumping.join(10)  # EOF once the process is gone
            if self.proc.stderr is not None:
                self.proc.stderr.close()


def _serve(argv: list[str], cwd: Path, key: Path) -> Served:
    extra = ["--port", "0", "--audit-key-file", str(key), "--no-correlate"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", *argv, *extra],
        cwd=cwd,
        env=_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return Served(proc)


# ------------------------------------------------------------------------- the network


@dataclass
class Country:
    name: str
    root: Path
    token: str = ""
    fed_port: int = 0
    served: Served | None = None

    @property
    def key(self) -> Path:
        return self.root / "audit.key"  # outside the data dir, as the audit log requires


def _setup_country(name: str, root: Path, recipe: JoinRecipe) -> Country:
    from server.audit import generate_key
    from server.auth import new_token_entry, write_auth_file

    c = Country(name, root)
    root.mkdir(parents=True)
    # 1. the README's certificate command, run by this server in its own folder
    argv = recipe.pki[name]
    assert argv[0] == "python"
    made = subprocess.run(
        [sys.executable, *argv[1:]], cwd=root, env=_env(), capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    token, entry = new_token_entry(f"examiner-{name}", f"PD-{name}", "examiner")
    write_auth_file(root / "auth.json", [entry])
    c.token = token
    # the contact point must see the agencies the country shares (README step 3)
    policy = recipe.policy_text if name == "A" else _mirror(recipe.policy_text)
    assert f"NCP-{name}" in json.loads(policy)["agencies"]
    (root / "policy.json").write_text(policy)
    generate_key(c.key)
    c.fed_port = free_port()
    return c


def _write_config(c: Country, peer: Country, recipe: JoinRecipe) -> dict[str, Any]:
    text = recipe.config_text if c.name == "A" else _mirror(recipe.config_text)
    cfg = json.loads(text)
    # loopback (host, ports) instead of the README's 0.0.0.0:50061 and b.example; a loaded 2-core
    # machine may take longer than the default 10 s for the peer's real-pipeline search
    cfg["listen"].update(host="127.0.0.1", port=c.fed_port)
    (p,) = cfg["peers"]
    assert p["name"] == peer.name
    p["address"] = f"127.0.0.1:{peer.fed_port}"
    cfg["peer_timeout_s"] = 60
    (c.root / f"fed-{c.name}.json").write_text(json.dumps(cfg, indent=1))
    return cfg


def _ingest(c: Country, corpus: Path, rows: list[tuple[str, Path]]) -> None:
    """Store ``rows`` (casing id, scan file) with `ballistics ingest` and a manifest."""
    manifest = corpus / f"manifest-{c.name}.csv"
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "casing_id", "incident_id", "agency", "caliber", "date"])
        for cid, path in rows:
            w.writerow([path.name, cid, f"INC-{cid}", f"PD-{c.name}", "9mm", "2024-05-01"])
    done = _cli(
        ["ingest", *(str(p) for _, p in rows), "--data-dir", str(c.root / "data" / c.name),
         "--manifest", str(manifest), "--json"],
        cwd=c.root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(json.loads(done.stdout)["added"]) == sorted(cid for cid, _ in rows)


def _search(recipe: JoinRecipe, c: Country, casing: str, scope: str) -> tuple[int, Any, str]:
    """The README's search line against ``c``: (exit status, JSON rows, stderr)."""
    argv = [
        {"CASING": casing, "127.0.0.1": f"127.0.0.1:{c.served.port if c.served else 0}"}.get(a, a)
        for a in recipe.commands["search"]
    ]
    argv[argv.index("--scope") + 1] = scope
    done = _cli([*argv, "--token", c.token, "--json", "--top", "5"], cwd=c.root)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return done.returncode, rows, done.stderr


def _audit(c: Country) -> list[dict[str, Any]]:
    path = c.root / "data" / c.name / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Two virtual guns, two shots each, 6.25 um scans (small: seconds to prepare)."""
    from ballistics.synth import write_corpus

    out = tmp_path_factory.mktemp("corpus")
    manifest = write_corpus(out, guns=2, shots=2, seed=5, spacing_choices=[(6.25e-6, 1.0)])
    rows = list(csv.DictReader(manifest.read_text().splitlines()))
    guns: dict[str, list[Path]] = {}
    for r in rows:
        guns.setdefault(r["firearm_id"], []).append(out / r["file"])
    return {g: sorted(v) for g, v in sorted(guns.items())}


@pytest.fixture
def network(tmp_path: Path, corpus: dict[str, list[Path]]) -> Iterator[dict[str, Country]]:
    recipe = _readme_recipe()
    a = _setup_country("A", tmp_path / "A", recipe)
    b = _setup_country("B", tmp_path / "B", recipe)
    # "swap only the *-ca.pem files"
    shutil.copy(a.root / "pki" / "A-ca.pem", b.root / "pki" / "A-ca.pem")
    shutil.copy(b.root / "pki" / "B-ca.pem", a.root / "pki" / "B-ca.pem")
    _write_config(a, b, recipe)
    _write_config(b, a, recipe)
    (g0, g1) = corpus.values()
    folder = g0[0].parent
    _ingest(a, folder, [("A-q", g0[0]), ("A-other", g1[1])])
    _ingest(b, folder, [("B-same", g0[1]), ("B-other", g1[0])])
    try:
        yield {"A": a, "B": b, "recipe": recipe}  # type: ignore[dict-item]
    finally:
        for c in (a, b):
            if c.served is not None:
                c.served.stop(kill=True)


# ------------------------------------------------------------------------- tests


@pytest.mark.slow
def test_two_serve_processes_search_each_other(network: dict[str, Any]) -> None:
    a, b, recipe = network["A"], network["B"], network["recipe"]
    for c in (a, b):  # the README's check, on each side
        argv = recipe.commands["federation check"]
        checked = _cli(argv if c.name == "A" else _mirror_argv(argv), cwd=c.root)
        assert checked.returncode == 0, checked.stderr
        assert "AB-2025" in checked.stdout and "accepts requests" in checked.stdout
    for c in (b, a):  # the README's serve line (B's mirrored)
        argv = recipe.commands["serve"]
        c.served = _serve(argv if c.name == "A" else _mirror_argv(argv), c.root, c.key)
    for c in (b, a):
        assert c.served is not None
        c.served.wait_serving()
        assert f"federation {c.name!r} on 127.0.0.1:{c.fed_port}" in c.served.stderr

    # scope all: B's casing of the same gun comes back marked with its server
    rc, rows, err = _search(recipe, a, "A-q", "all")
    assert rc == 0, err
    assert "peer B: ok" in err, err
    top = rows[0]
    assert top["server"] == "B" and top["agreement_id"] == "AB-2025", rows
    # release "pictures" includes case references: it is B's same-gun casing, by its incident
    assert top["agency"] == "PD-B" and top["incident_id"] == "INC-B-same", rows
    assert top["casing_id"] not in ("B-same", "B-other")  # an opaque reference, not B's id
    assert {r["server"] for r in rows} == {None, "B"}  # A's own casing too, unmarked
    assert any(r["casing_id"] == "A-other" and r["server"] is None for r in rows)
    # a named peer scope; text output marks the peer's candidates with @B
    rc, rows_b, err = _search(recipe, a, "A-q", "B")
    assert rc == 0 and rows_b[0]["server"] == "B", err
    text = _cli(
        ["search", "--casing-id", "A-q", "--scope", "B", "--server",
         f"127.0.0.1:{a.served.port}", "--token", a.token],
        cwd=a.root,
    )  # fmt: skip
    assert text.returncode == 0 and "@B" in text.stdout and "peer B: ok" in text.stdout

    # B's contact point sees the requests from abroad
    inbox = _cli(["federation", "inbox", "--data-dir", "data/B", "--json"], cwd=b.root)
    assert inbox.returncode == 0, inbox.stderr
    requests = [json.loads(line) for line in inbox.stdout.splitlines()]
    assert len(requests) == 3, requests  # the three searches above
    assert all(r["agreement_id"] == "AB-2025" for r in requests), requests
    refs = {c["ref"]: c["casing_id"] for r in requests for c in r["candidates"]}
    assert refs[top["casing_id"]] == "B-same"  # A's top candidate is B's same-gun casing

    # the peer goes down: the search still succeeds, partial, naming B
    assert b.served is not None and b.served.stop() == 0
    rc, rows, err = _search(recipe, a, "A-q", "all")
    assert rc == 0, err
    assert re.search(r"peer B: unavailable", err), err
    assert "partial: no full answer from peer(s) B" in err, err
    assert rows and all(r["server"] is None for r in rows)  # A's own candidates only
    assert a.served is not None and a.served.stop() == 0

    # both audit logs: intact, and every cross-border call with the agreement id
    for c in (a, b):
        v = _cli(["audit", "verify", "--data-dir", f"data/{c.name}", "--audit-key-file",
                  str(c.key), "--json"], cwd=c.root)  # fmt: skip
        assert v.returncode == 0 and json.loads(v.stdout)["ok"], v.stdout + v.stderr
    sent = [r for r in _audit(a) if r["method"] == "Federation.Correlate:out"]
    received = [r for r in _audit(b) if r["method"] == "Federation.Correlate"]
    assert len(received) == 3, received  # the three searches while B was up
    assert len(sent) == 4, sent  # and the fourth, to B while it was down, is audited too
    for r in received:
        assert r["user"] == "peer:A" and "agreement:AB-2025" in r["targets"], r
        request = next(t for t in r["targets"] if t.startswith("request:"))
        assert any(request in s["targets"] and "agreement:AB-2025" in s["targets"] for s in sent)


@pytest.fixture(scope="module")
def lone_a(tmp_path_factory: pytest.TempPathFactory) -> tuple[Country, Country, JoinRecipe]:
    """A's folder set up as the README says (B's only for its CA and port); nothing runs."""
    recipe = _readme_recipe()
    root = tmp_path_factory.mktemp("lone")
    a = _setup_country("A", root / "A", recipe)
    b = _setup_country("B", root / "B", recipe)
    shutil.copy(b.root / "pki" / "B-ca.pem", a.root / "pki" / "B-ca.pem")
    return a, b, recipe


@pytest.mark.parametrize(
    "break_config, message",
    [
        (lambda cfg: cfg["agreements"][0].update(peer="C"), "peer 'C' is not in 'peers'"),
        (lambda cfg: cfg["agreements"][0].update(release="all"), "'release' must be one"),
        (
            lambda cfg: cfg["listen"].update(key="pki/A-client.key"),
            "does not belong to the certificate",
        ),
        (lambda cfg: cfg["peers"][0].update(cert="auth.json"), "is not a PEM certificate file"),
    ],
    ids=["unknown-peer", "bad-release", "key-of-another-cert", "not-a-certificate"],
)
def test_serve_refuses_a_broken_federation_config(
    lone_a: tuple[Country, Country, JoinRecipe], break_config: Any, message: str
) -> None:
    """A config error ends `serve` with status 2 and one line naming it, not a traceback;
    `federation check` says the same before anything starts."""
    a, b, recipe = lone_a
    cfg = _write_config(a, b, recipe)
    break_config(cfg)
    (a.root / "fed-A.json").write_text(json.dumps(cfg))
    checked = _cli(recipe.commands["federation check"], cwd=a.root)
    assert checked.returncode == 2 and message in checked.stderr, checked.stderr
    argv = [*recipe.commands["serve"], "--port", "0", "--audit-key-file", str(a.key)]
    done = _cli([*argv, "--no-correlate"], cwd=a.root, timeout=60)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "serving on" not in done.stderr
