"""Ingest manifests as labs have them: CSV or TSV, extra columns kept as metadata (``firearm_id``
as ground truth), a warning for unknown ones; ``ingest --spacing-um``; an empty folder and
Ctrl-C said out loud."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from index.engine import Processed
from index.ingest import read_manifest
from index.service import Catalog
from index.testing import FakeEngine
from server.cli import main

from .conftest import FADUL_DIR, fadul_files

ROOT = Path(__file__).resolve().parents[1]
ENGINE = "tests.test_manifest:SpacingEngine"


class SpacingEngine(FakeEngine):
    """The fake pipeline, keeping the pixel spacing it was given (so a test can see it)."""

    def process(self, data: bytes, filename: str | None, spacing_m: float | None) -> Processed:
        p = super().process(data, filename, spacing_m)
        p.spacing_m = spacing_m if spacing_m is not None else 6.25e-6
        return p


class SlowEngine(FakeEngine):
    """The fake pipeline at about a real casing's pace (for Ctrl-C mid-ingest)."""

    def process(self, data: bytes, filename: str | None, spacing_m: float | None) -> Processed:
        time.sleep(0.15)
        return super().process(data, filename, spacing_m)


def _scans(folder: Path, n: int = 4) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"c{i}.x3p"
        p.write_bytes(f"FAKE:{i % 2}:{i}".encode())
        out.append(p)
    return out


def _write(path: Path, rows: list[list[str]], sep: str) -> Path:
    path.write_text("".join(sep.join(r) + "\n" for r in rows), encoding="utf-8")
    return path


_ROWS = [
    ["file", "firearm_id", "casing_id", "Incident", "calibre", "Examiner Notes", "spacing_um"],
    ["scans/c0.x3p", "gun-A", "EX-0", "INC-1", "9mm", "rusty, dented", "2.5"],
    ["scans/c1.x3p", "gun-B", "EX-1", "INC-1", "9mm", "", ""],
]


def _ingest(tmp_path: Path, manifest: Path, *extra: str) -> tuple[int, Path]:
    data = tmp_path / "data"
    rc = main(["ingest", str(tmp_path / "scans"), "--data-dir", str(data), "--manifest",
               str(manifest), "--agency", "Lab-1", *extra])  # fmt: skip
    return rc, data


@pytest.mark.parametrize(("name", "sep"), [("m.tsv", "\t"), ("m.csv", ","), ("m.txt", ";"),
                                           ("tabs-but-named.csv", "\t")])  # fmt: skip
def test_manifest_csv_or_tsv_extra_columns_kept(
    tmp_path: Path, name: str, sep: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("BALLISTICS_INDEX_ENGINE", ENGINE)
    _scans(tmp_path / "scans")
    rows = [[c.replace(",", ";") if sep == "," else c for c in r] for r in _ROWS]
    rc, data = _ingest(tmp_path, _write(tmp_path / name, rows, sep))
    err = capsys.readouterr().err
    assert rc == 0, err
    # one warning, naming the unknown column but not the ground truth
    (warning,) = [line for line in err.splitlines() if "warning" in line]
    assert "examiner_notes" in warning and "firearm_id" not in warning
    with Catalog.open(data, engine=SpacingEngine()) as cat:
        assert cat.store.count_live() == 4
        r0, r1 = cat.get("EX-0"), cat.get("EX-1")
        assert (r0.incident, r0.caliber, r0.agency) == ("INC-1", "9mm", "Lab-1")
        assert r0.spacing_m == pytest.approx(2.5e-6)
        assert cat.store.metadata_of(r0.id) == {
            "firearm_id": "gun-A",
            "examiner_notes": "rusty; dented" if sep == "," else "rusty, dented",
        }
        assert cat.store.metadata_of(r1.id) == {"firearm_id": "gun-B"}  # empty cells: not kept


def test_manifest_without_a_file_column_is_refused(tmp_path: Path, capsys) -> None:
    _scans(tmp_path / "scans")
    bad = _write(tmp_path / "m.tsv", [["path_to_scan", "firearm_id"], ["scans/c0.x3p", "g"]], "\t")
    rc, data = _ingest(tmp_path, bad)
    err = capsys.readouterr().err
    assert rc == 2 and "needs a 'file' column" in err and len(err.strip().splitlines()) == 1
    assert not (data / "store.sqlite").exists()  # refused before the store was touched


def test_ingest_spacing_um_reaches_the_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("BALLISTICS_INDEX_ENGINE", ENGINE)
    _scans(tmp_path / "scans", 2)
    man = _write(tmp_path / "m.csv", [["file", "casing_id", "spacing_um"],
                                      ["scans/c0.x3p", "A", "2.5"], ["scans/c1.x3p", "B", ""]],
                 ",")  # fmt: skip
    rc, data = _ingest(tmp_path, man, "--spacing-um", "3.125")
    assert rc == 0, capsys.readouterr().err
    with Catalog.open(data, engine=SpacingEngine()) as cat:
        assert cat.get("A").spacing_m == pytest.approx(2.5e-6)  # the manifest row wins
        assert cat.get("B").spacing_m == pytest.approx(3.125e-6)  # else the option
    assert main(["ingest", str(tmp_path / "scans"), "--data-dir", str(data),
                 "--spacing-um", "-1"]) == 2  # fmt: skip
    assert "--spacing-um must be a positive number" in capsys.readouterr().err


def test_real_lab_manifest_tsv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    files = fadul_files()[:3]
    if not files:
        pytest.skip(f"real Fadul scans not found at {FADUL_DIR}")
    manifest = FADUL_DIR.parent / "MANIFEST.tsv"
    m = read_manifest(manifest)
    assert m.delimiter == "\t" and m.n_rows == 40 and "firearm_id" not in m.unknown
    monkeypatch.setenv("BALLISTICS_INDEX_ENGINE", ENGINE)
    data = tmp_path / "data"
    rc = main(["ingest", *map(str, files), "--data-dir", str(data), "--manifest", str(manifest)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "source_repo" in err and "37 of 40 rows" in err
    with Catalog.open(data, engine=SpacingEngine()) as cat:
        for f in files:
            row = m.row_for(f)
            assert row is not None
            rec = cat.get(row["casing_id"])
            assert cat.store.metadata_of(rec.id)["firearm_id"] == row["firearm_id"]


# --- silent no-ops and Ctrl-C -----------------------------------------------------------------


def test_ingest_of_a_folder_without_scans_says_so(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "nothing"
    empty.mkdir()
    (empty / "readme.txt").write_text("not a scan")
    rc = main(["ingest", str(empty), "--data-dir", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert rc == 2 and "no scan files in this folder" in err and ".x3p" in err


#: Run the CLI with SIGINT's default handler: a shell's background job inherits SIGINT
#: ignored and Python keeps it so; set here in the child itself (a ``preexec_fn`` can deadlock
#: a child forked from a process with threads).
_CLI_SIGINT_DEFAULT = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'ballistics'; runpy.run_module('server.cli', run_name='__main__')"
)


def _cli(args: list[str], **kw: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "BALLISTICS_INDEX_ENGINE": "tests.test_manifest:SlowEngine",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-c", _CLI_SIGINT_DEFAULT, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_ctrl_c_during_ingest_exits_130_and_a_rerun_resumes(tmp_path: Path) -> None:
    _scans(tmp_path / "scans", 40)
    data = tmp_path / "data"
    args = ["ingest", str(tmp_path / "scans"), "--data-dir", str(data)]
    proc = _cli(args)
    done = data / "ingest-done.tsv"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60:
        if done.exists() and len(done.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        proc.communicate()
        pytest.fail("ingest stored nothing in 60 s")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    stored = len(done.read_text().splitlines())
    assert 3 <= stored < 40
    n = int(err.split("interrupted: ")[1].split()[0])
    assert n in (stored, stored + 1)  # Ctrl-C may land between a commit and its done-list line
    assert "Run the same command again to resume" in err
    assert "Traceback" not in err
    again = _cli([*args, "--json"])
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    rep = json.loads(out)
    assert rep["skipped_done"] == stored and not rep["failed"]
    assert len(rep["added"]) + len(rep["existing"]) == 40 - stored
