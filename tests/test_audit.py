"""The keyed audit log: append, resume, and detection of every kind of tampering.

The attacks are the ones an unkeyed SHA-256 chain lets through (issue 10, item 3): delete a
middle record and re-chain, append a forged record, truncate and rewrite the head, truncate
then let one new call append. Each is done the way an attacker without the key would: re-hash
with plain SHA-256 (what the old ``verify`` accepted) or re-MAC with a key of their own.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from server.audit import (
    GENESIS,
    AuditIntegrityError,
    AuditKeyError,
    AuditLog,
    generate_key,
    head_mac,
    load_key,
    record_hash,
    record_mac,
    verify,
)
from server.cli import main

KEY = hashlib.sha256(b"tests/test_audit.py").digest()
ATTACKER = hashlib.sha256(b"not the key").digest()


def _log(d: Path, n: int = 5) -> Path:
    log = AuditLog.in_dir(d, KEY)
    for i in range(n):
        log.append(user=f"u{i}", agency="A", method="GetCasing", targets=[f"C{i}"])
    log.close()
    return log.path


def _recs(p: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in p.read_text().splitlines()]


def _write(p: Path, recs: list[dict[str, Any]]) -> None:
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))


def _rechain(recs: list[dict[str, Any]], key: bytes | None) -> list[dict[str, Any]]:
    """Renumber and re-chain as an attacker would: with their own key, or unkeyed SHA-256."""
    out, prev = [], GENESIS
    for i, r in enumerate(recs, start=1):
        r = {k: v for k, v in r.items() if k not in ("mac", "hash", "prev_mac", "prev_hash")}
        r["seq"] = i
        if key is None:
            r["prev_hash"] = prev
            r["hash"] = prev = record_hash(r)
        else:
            r["prev_mac"] = prev
            r["mac"] = prev = record_mac(key, r)
        out.append(r)
    return out


def _write_head(p: Path, seq: int, last: str, key: bytes | None) -> None:
    head: dict[str, Any] = {"seq": seq, "mac": last}
    if key is not None:
        head["head_mac"] = head_mac(key, seq, last)
    p.with_name(p.name + ".head").write_text(json.dumps(head))


def test_intact_and_resumed(tmp_path: Path) -> None:
    p = _log(tmp_path, 3)
    log = AuditLog(p, KEY)  # reopening verifies, then continues the chain
    rec = log.append(user="x", agency="A", method="Search", outcome="NOT_FOUND", peer="ipv4:x")
    log.close()
    assert rec["seq"] == 4 and rec["peer"] == "ipv4:x"
    assert rec["prev_mac"] == _recs(p)[2]["mac"]
    assert rec["mac"] == record_mac(KEY, rec)
    v = verify(p, KEY)
    assert v.ok and v.count == 4 and v.last_mac == rec["mac"]
    assert "4 records" in verify(tmp_path, KEY).message  # a data dir is accepted too


def test_wrong_key_fails(tmp_path: Path) -> None:
    p = _log(tmp_path)
    v = verify(p, ATTACKER)
    assert not v.ok and v.first_bad_seq == 1 and "MAC" in v.message


def test_changed_record(tmp_path: Path) -> None:
    p = _log(tmp_path)
    recs = _recs(p)
    recs[2]["outcome"] = "PERMISSION_DENIED"
    _write(p, recs)
    v = verify(p, KEY)
    assert not v.ok and v.first_bad_seq == 3 and "changed or forged" in v.message


@pytest.mark.parametrize("attacker_key", [None, ATTACKER], ids=["sha256", "own-key"])
def test_delete_middle_record_and_rechain(tmp_path: Path, attacker_key: bytes | None) -> None:
    p = _log(tmp_path)
    recs = _rechain(_recs(p)[:2] + _recs(p)[3:], attacker_key)
    _write(p, recs)
    _write_head(p, len(recs), recs[-1].get("mac") or recs[-1]["hash"], attacker_key)
    v = verify(p, KEY)
    assert not v.ok, v.message


@pytest.mark.parametrize("attacker_key", [None, ATTACKER], ids=["sha256", "own-key"])
def test_forged_append(tmp_path: Path, attacker_key: bytes | None) -> None:
    p = _log(tmp_path)
    recs = _recs(p)
    forged = {**recs[-1], "seq": 6, "user": "mallory", "prev_mac": recs[-1]["mac"]}
    forged.pop("mac")
    if attacker_key is None:
        forged["hash"] = record_hash(forged)
    else:
        forged["mac"] = record_mac(attacker_key, forged)
    _write(p, [*recs, forged])
    v = verify(p, KEY)
    assert not v.ok and v.first_bad_seq == 6, v.message


@pytest.mark.parametrize("attacker_key", [None, ATTACKER], ids=["unsigned", "own-key"])
def test_truncate_and_rewrite_head(tmp_path: Path, attacker_key: bytes | None) -> None:
    p = _log(tmp_path)
    recs = _recs(p)[:3]
    _write(p, recs)
    assert not verify(p, KEY).ok  # the head still says 5
    _write_head(p, 3, recs[-1]["mac"], attacker_key)
    v = verify(p, KEY)
    assert not v.ok and "head" in v.message, v.message


def test_truncate_then_one_new_call(tmp_path: Path) -> None:
    p = _log(tmp_path)
    log = AuditLog(p, KEY)  # a running server holds the log open
    recs = _recs(p)[:3]
    _write(p, recs)  # truncated behind its back
    log.append(user="x", agency="A", method="GetCasing")  # one new call
    log.close()
    v = verify(p, KEY)
    assert not v.ok and v.first_bad_seq == 4, v.message
    # and the next start-up refuses to append to it
    with pytest.raises(AuditIntegrityError, match="fails verification"):
        AuditLog(p, KEY)


def test_truncated_log_refused_at_start_up(tmp_path: Path) -> None:
    p = _log(tmp_path)
    _write(p, _recs(p)[:2])
    with pytest.raises(AuditIntegrityError, match="cut off the end"):
        AuditLog(p, KEY)
    p.unlink()  # removing the whole log leaves the head: still refused
    with pytest.raises(AuditIntegrityError, match="missing"):
        AuditLog(p, KEY)


def test_crash_between_log_and_head_is_not_tampering(tmp_path: Path) -> None:
    """A record fsync'ed but the head not yet replaced (killed in between) verifies."""
    p = _log(tmp_path, 3)
    head = p.with_name(p.name + ".head").read_text()
    log = AuditLog(p, KEY)
    log.append(user="x", agency="A", method="GetCasing")
    log.close()
    p.with_name(p.name + ".head").write_text(head)  # the head of 3 records
    v = verify(p, KEY)
    assert v.ok and v.count == 4, v.message
    log = AuditLog(p, KEY)
    assert log.append(user="y", agency="A", method="GetCasing")["seq"] == 5
    log.close()


def test_long_values_are_bounded_and_reopen(tmp_path: Path) -> None:
    log = AuditLog.in_dir(tmp_path, KEY)
    long = "A" * 70_000
    rec = log.append(
        user=long, agency="A", method="GetCasing", targets=[long] * 40, detail=long, peer=long
    )
    log.close()
    digest = hashlib.sha256(long.encode()).hexdigest()[:16]
    assert rec["targets"][0] == f"<70000 chars sha256:{digest}>"
    assert len(rec["targets"]) == 16 and rec["targets"][-1] == "<25 more>"
    assert max(len(line) for line in log.path.read_text().splitlines()) < 8000
    AuditLog.in_dir(tmp_path, KEY).close()  # start-up reads it without trouble
    assert verify(tmp_path, KEY).ok


def test_legacy_unkeyed_prefix_is_accepted_and_continued(tmp_path: Path) -> None:
    """A log written before keying (SHA-256 chain) still opens; keyed records follow it."""
    p = tmp_path / "audit.log"
    old = _rechain([{"user": f"u{i}", "method": "GetCasing"} for i in range(3)], None)
    _write(p, old)
    p.with_name("audit.log.head").write_text(json.dumps({"seq": 3, "hash": old[-1]["hash"]}))
    v = verify(p, KEY)  # anyone can write an unkeyed log: not accepted silently
    assert not v.ok and "--accept-unkeyed-audit-log" in v.message
    with pytest.raises(AuditIntegrityError, match="unkeyed"):
        AuditLog(p, KEY)
    v = verify(p, KEY, accept_unkeyed=True)
    assert v.ok and v.legacy == 3 and "not protected" in v.message
    log = AuditLog(p, KEY, accept_unkeyed=True)  # seals the prefix with a keyed record
    rec = log.append(user="x", agency="A", method="Search")
    log.close()
    seal = _recs(p)[3]
    assert seal["method"] == "AuditKeyed" and seal["prev_mac"] == old[-1]["hash"]
    assert rec["seq"] == 5
    v = verify(p, KEY)
    assert v.ok and v.legacy == 3, v.message
    good = _recs(p)
    # an unkeyed record after keyed ones is a forgery
    extra = {"seq": 6, "user": "mallory", "prev_hash": good[-1]["mac"]}
    extra["hash"] = record_hash(extra)
    _write(p, [*good, extra])
    v = verify(p, KEY)
    assert not v.ok and v.first_bad_seq == 6 and "after keyed" in v.message
    # re-chaining the unkeyed prefix breaks the keyed record sealing it
    tampered = [dict(r) for r in good]
    tampered[1]["user"] = "mallory"
    _write(p, _rechain(tampered[:3], None) + tampered[3:])
    assert verify(p, KEY).first_bad_seq == 4


def test_thread_safe(tmp_path: Path) -> None:
    log = AuditLog.in_dir(tmp_path, KEY)

    def work(k: int) -> None:
        for i in range(25):
            log.append(user=f"t{k}", agency="A", method="Search", targets=[str(i)])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    v = verify(log.path, KEY)
    assert v.ok and "100 records" in v.message


def test_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = generate_key(tmp_path / "k" / "audit.key")
    assert (key_file.stat().st_mode & 0o777) == 0o600
    assert len(load_key(key_file)) == 32
    with pytest.raises(AuditKeyError, match="never overwritten"):
        generate_key(key_file)
    with pytest.raises(AuditKeyError, match="audit keygen"):
        load_key(tmp_path / "missing.key")
    with pytest.raises(AuditKeyError, match="inside the data directory"):
        load_key(key_file, data_dir=tmp_path)
    (tmp_path / "short.key").write_text("abcd\n")
    with pytest.raises(AuditKeyError, match="32 hex digits"):
        load_key(tmp_path / "short.key")
    # the documented default: $BALLISTICS_AUDIT_KEY_FILE, else $XDG_CONFIG_HOME/ballistics
    monkeypatch.delenv("BALLISTICS_AUDIT_KEY_FILE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    generate_key(tmp_path / "cfg" / "ballistics" / "audit.key")
    assert load_key() == load_key(tmp_path / "cfg" / "ballistics" / "audit.key")
    monkeypatch.setenv("BALLISTICS_AUDIT_KEY_FILE", str(key_file))
    assert load_key() == load_key(key_file)


def test_cli_keygen_and_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "audit.key"
    data = tmp_path / "data"
    assert main(["audit", "keygen", "--audit-key-file", str(key_file)]) == 0
    assert "wrote a new audit key" in capsys.readouterr().out
    assert main(["audit", "keygen", "--audit-key-file", str(key_file)]) == 2
    assert "never overwritten" in capsys.readouterr().err
    log = AuditLog.in_dir(data, load_key(key_file))
    for i in range(3):
        log.append(user=f"u{i}", agency="A", method="GetCasing")
    log.close()
    cmd = ["audit", "verify", "--data-dir", str(data), "--audit-key-file", str(key_file)]
    assert main(cmd) == 0
    assert "intact" in capsys.readouterr().out
    recs = _recs(log.path)
    recs[1]["user"] = "u9"
    _write(log.path, recs)
    assert main(cmd) == 1
    err = capsys.readouterr().err
    assert "record 2" in err and err.startswith("ballistics: ")
    assert main([*cmd, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and out["first_bad_seq"] == 2
    # without the key: a clear error, exit 2
    missing = ["audit", "verify", "--data-dir", str(data), "--audit-key-file", "/nonexistent"]
    assert main(missing) == 2
    assert "no audit key at /nonexistent" in capsys.readouterr().err


def test_serve_refuses_a_broken_log_or_a_missing_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.auth import new_token_entry, write_auth_file

    _, entry = new_token_entry("u", "PD-North", "admin")
    write_auth_file(tmp_path / "auth.json", [entry])
    data = tmp_path / "data"
    key_file = generate_key(tmp_path / "audit.key")
    serve = ["serve", "--data-dir", str(data), "--auth", str(tmp_path / "auth.json")]
    serve += ["--port", "0"]
    assert main([*serve, "--audit-key-file", str(tmp_path / "none.key")]) == 2
    assert "no audit key" in capsys.readouterr().err
    inside = generate_key(data / "audit.key")
    assert main([*serve, "--audit-key-file", str(inside)]) == 2
    assert "inside the data directory" in capsys.readouterr().err
    os.unlink(inside)
    log = AuditLog.in_dir(data, load_key(key_file))
    for i in range(3):
        log.append(user=f"u{i}", agency="A", method="GetCasing")
    log.close()
    _write(log.path, _recs(log.path)[:2])  # truncated
    assert main([*serve, "--audit-key-file", str(key_file)]) == 2
    err = capsys.readouterr().err
    assert "refusing to serve" in err and "cut off the end" in err


def test_mac_is_keyed_hmac_sha256() -> None:
    rec = {"seq": 1, "user": "u", "prev_mac": GENESIS}
    body = json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()
    assert record_mac(KEY, rec) == hmac.new(KEY, b"record\x00" + body, "sha256").hexdigest()
