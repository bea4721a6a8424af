"""The hash-chained audit log: append, resume, and detection of every kind of tampering."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from server.audit import AuditLog, record_hash, verify
from server.cli import main


def _log(tmp_path: Path, n: int = 5) -> Path:
    log = AuditLog.in_dir(tmp_path)
    for i in range(n):
        log.append(user=f"u{i}", agency="A", method="GetCasing", targets=[f"C{i}"])
    log.close()
    return log.path


def _lines(p: Path) -> list[str]:
    return p.read_text().splitlines()


def _write(p: Path, lines: list[str]) -> None:
    p.write_text("".join(x + "\n" for x in lines))


def test_intact_and_resumed(tmp_path: Path) -> None:
    p = _log(tmp_path, 3)
    log = AuditLog(p)  # reopening continues the chain
    rec = log.append(user="x", agency="A", method="Search", outcome="NOT_FOUND")
    log.close()
    assert rec["seq"] == 4
    assert rec["prev_hash"] == json.loads(_lines(p)[2])["hash"]
    assert rec["hash"] == record_hash(rec)
    assert verify(p) == (True, None, verify(p)[2])
    assert "4 records" in verify(tmp_path)[2]  # a data dir is accepted too


def test_changed_record(tmp_path: Path) -> None:
    p = _log(tmp_path)
    lines = _lines(p)
    rec = json.loads(lines[2])
    rec["outcome"] = "PERMISSION_DENIED"
    lines[2] = json.dumps(rec)
    _write(p, lines)
    ok, seq, msg = verify(p)
    assert not ok and seq == 3 and "changed" in msg


def test_changed_and_rehashed_record_breaks_the_chain(tmp_path: Path) -> None:
    p = _log(tmp_path)
    lines = _lines(p)
    rec = json.loads(lines[1])
    rec["user"] = "mallory"
    rec["hash"] = record_hash(rec)
    lines[1] = json.dumps(rec)
    _write(p, lines)
    ok, seq, _ = verify(p)
    assert not ok and seq == 3  # record 2 is self-consistent; record 3 no longer chains


@pytest.mark.parametrize(
    ("edit", "bad"),
    [
        (lambda ls: ls[:2] + ls[3:], 3),  # deleted
        (lambda ls: [ls[0], ls[2], ls[1], *ls[3:]], 2),  # reordered
        (lambda ls: [*ls[:2], ls[1], *ls[2:]], 3),  # inserted (duplicate)
        (lambda ls: ls[:-2], 4),  # cut off the end (caught by the head file)
        (lambda ls: [*ls[:2], "{not json", *ls[2:]], 3),  # garbage inserted
    ],
)
def test_tampering_detected(tmp_path: Path, edit, bad: int) -> None:
    p = _log(tmp_path)
    _write(p, edit(_lines(p)))
    ok, seq, msg = verify(p)
    assert not ok and seq == bad, msg


def test_thread_safe(tmp_path: Path) -> None:
    log = AuditLog.in_dir(tmp_path)

    def work(k: int) -> None:
        for i in range(25):
            log.append(user=f"t{k}", agency="A", method="Search", targets=[str(i)])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    ok, _, msg = verify(log.path)
    assert ok and "100 records" in msg


def test_cli_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = _log(tmp_path)
    assert main(["audit", "verify", "--data-dir", str(tmp_path)]) == 0
    assert "intact" in capsys.readouterr().out
    lines = _lines(p)
    lines[1] = lines[1].replace('"u1"', '"u9"')
    _write(p, lines)
    assert main(["audit", "verify", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "record 2" in err and err.startswith("ballistics: ")
    assert main(["audit", "verify", "--data-dir", str(tmp_path), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out == {"ok": False, "first_bad_seq": 2, "message": out["message"]}
