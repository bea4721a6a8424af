"""``ballistics auth add-user | list | revoke``: tokens a new lab can make, shown once, stored
only as SHA-256 in a 0600 file the server accepts."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from server.auth import Authenticator, hash_token, write_auth_file
from server.cli import main


def _add(auth: Path, user: str, agency: str, role: str, capsys) -> str:
    assert main(["auth", "add-user", "--auth", str(auth), "--user", user, "--agency", agency,
                 "--role", role]) == 0  # fmt: skip
    out = capsys.readouterr()
    (token,) = out.out.split()
    assert "shown only this once" in out.err
    return token


def test_add_user_prints_a_token_the_server_accepts(tmp_path: Path, capsys) -> None:
    auth = tmp_path / "auth.json"
    old = os.umask(0o022)  # a permissive umask must not leave the hashes world-readable
    try:
        alice = _add(auth, "alice", "PD-North", "examiner", capsys)
        bob = _add(auth, "bob", "PD-South", "submitter", capsys)
    finally:
        os.umask(old)
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    text = auth.read_text()
    assert alice not in text and bob not in text  # never the token itself
    assert hash_token(alice) in text and hash_token(bob) in text
    who = Authenticator.from_file(auth)
    a, b = who.identify_token(alice), who.identify_token(bob)
    assert a is not None and (a.user, a.agency, a.role) == ("alice", "PD-North", "examiner")
    assert b is not None and (b.user, b.agency, b.role) == ("bob", "PD-South", "submitter")
    assert alice != bob
    assert [p.name for p in tmp_path.iterdir()] == ["auth.json"]  # no temporary file left


def test_add_user_refuses_a_duplicate_and_a_bad_role(tmp_path: Path, capsys) -> None:
    auth = tmp_path / "auth.json"
    _add(auth, "alice", "PD-North", "examiner", capsys)
    before = auth.read_text()
    argv = ["auth", "add-user", "--auth", str(auth), "--user", "alice", "--agency", "X"]
    assert main([*argv, "--role", "admin"]) == 2
    err = capsys.readouterr().err
    assert "already has a token" in err and "auth revoke" in err
    assert auth.read_text() == before
    with pytest.raises(SystemExit) as e:
        main([*argv[:-2], "--agency", "X", "--role", "boss"])
    assert e.value.code == 2
    capsys.readouterr()
    assert main(["auth", "add-user", "--auth", str(auth), "--user", " ", "--agency", "X",
                 "--role", "admin"]) == 2  # fmt: skip
    assert "user must be" in capsys.readouterr().err


def test_list_shows_users_never_secrets(tmp_path: Path, capsys) -> None:
    auth = tmp_path / "auth.json"
    tokens = [_add(auth, u, "Lab", r, capsys) for u, r in (("a1", "admin"), ("s1", "submitter"))]
    assert main(["auth", "list", "--auth", str(auth), "--json"]) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows == [
        {"user": "a1", "agency": "Lab", "role": "admin"},
        {"user": "s1", "agency": "Lab", "role": "submitter"},
    ]
    assert main(["auth", "list", "--auth", str(auth)]) == 0
    human = capsys.readouterr().out
    assert "2 user(s)" in human
    for t in tokens:
        assert t not in out + human and hash_token(t) not in out + human
    assert main(["auth", "list", "--auth", str(tmp_path / "missing.json")]) == 2
    assert "cannot read auth file" in capsys.readouterr().err


def test_revoke_removes_the_token_and_keeps_the_rest(tmp_path: Path, capsys) -> None:
    auth = tmp_path / "auth.json"
    write_auth_file(auth, [], client_certs=[{"cn": "lab1", "agency": "Lab"}])
    keep = _add(auth, "keep", "Lab", "examiner", capsys)
    gone = _add(auth, "gone", "Lab", "admin", capsys)
    assert main(["auth", "revoke", "--auth", str(auth), "--user", "gone"]) == 0
    capsys.readouterr()
    who = Authenticator.from_file(auth)
    assert who.identify_token(gone) is None
    assert who.identify_token(keep) is not None
    assert who.cert_agency("lab1", None) == "Lab"  # client-cert mappings survive a rewrite
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    assert main(["auth", "revoke", "--auth", str(auth), "--user", "gone"]) == 2
    assert "no user 'gone'" in capsys.readouterr().err


def test_a_broken_auth_file_is_not_overwritten(tmp_path: Path, capsys) -> None:
    auth = tmp_path / "auth.json"
    auth.write_text('{"tokens": [{"user": "x"}]}')
    argv = ["--user", "a", "--agency", "b", "--role", "admin"]
    assert main(["auth", "add-user", "--auth", str(auth), *argv]) == 2
    assert "token entry 0 lacks" in capsys.readouterr().err
    assert auth.read_text() == '{"tokens": [{"user": "x"}]}'


def test_demo_writes_usable_example_tokens(tmp_path: Path) -> None:
    import importlib.util
    import sys

    demo_py = Path(__file__).resolve().parents[1] / "scripts" / "demo.py"
    spec = importlib.util.spec_from_file_location("ballistics_demo_tokens", demo_py)
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = demo
    spec.loader.exec_module(demo)

    auth, _, tokens = demo.write_auth_and_policy(tmp_path)
    path = tmp_path / "tokens.txt"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# EXAMPLE tokens") and "never use them" in lines[0]
    rows = [line.split("\t") for line in lines if not line.startswith("#")]
    assert len(rows) == 9
    who = Authenticator.from_file(auth)
    for agency, role, user, token in rows:
        ident = who.identify_token(token)
        assert ident is not None and (ident.agency, ident.role, ident.user) == (agency, role, user)
        assert tokens[(agency, role)] == token
