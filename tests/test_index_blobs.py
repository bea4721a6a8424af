"""Prepared surfaces in content-addressed files beside SQLite (index.blobs): layout, hash
checks on read and in Catalog.check, sharing and removal, and the migration of stores whose
surfaces were BLOBs inside SQLite (including a migration SIGKILLed part-way)."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from index.blobs import BlobStore, SurfaceFileError
from index.service import Catalog
from index.store import Store
from index.testing import FakeEngine

ROOT = Path(__file__).resolve().parents[1]


def _add(store: Store, data: bytes, surface: bytes, agency: str = "A"):
    return store.add_casing(
        original=data,
        agency=agency,
        descriptors={"breech_face": np.ones(4, np.float32) / 2},
        extractor_version="v1",
        surface=surface,
    )[0]


def _surface(seed: int, n: int = 5000) -> bytes:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32).tobytes()


def test_surface_is_a_file_named_by_its_hash_and_not_a_blob(tmp_path):
    s = Store(tmp_path)
    surf = _surface(1)
    rec = _add(s, b"scan-1", surf)
    sha = hashlib.sha256(surf).hexdigest()
    path = tmp_path / "surfaces" / sha[:2] / sha[2:4] / sha
    assert path.read_bytes() == surf
    assert s.surface_info(rec.id) == {
        "codec": "raw",
        "sha256": sha,
        "size": len(surf),
        "path": str(path),
    }
    assert s.load_surface(rec.casing_id) == surf
    con = sqlite3.connect(tmp_path / "store.sqlite")
    assert con.execute("SELECT COUNT(*) FROM surfaces").fetchone()[0] == 0
    con.close()
    assert not list((tmp_path / "surfaces").glob("*/*/.*.tmp"))
    s.close()


@pytest.mark.parametrize("damage", ["flip", "truncate", "remove"])
def test_damaged_file_is_a_clear_error_and_check_reports_it(tmp_path, damage):
    with Catalog.open(tmp_path, engine=FakeEngine()) as cat:
        rec = cat.ingest_bytes(b"FAKE:g1:0", "a.x3p", {})
        other = cat.ingest_bytes(b"FAKE:g2:0", "b.x3p", {})
        path = Path(cat.store.surface_info(rec.id)["path"])
        raw = bytearray(path.read_bytes())
        if damage == "flip":
            raw[10] ^= 0xFF
            path.write_bytes(bytes(raw))
        elif damage == "truncate":
            path.write_bytes(bytes(raw[:-3]))
        else:
            path.unlink()
        with pytest.raises(SurfaceFileError) as err:
            cat.store.load_surface(rec.casing_id)
        assert rec.casing_id in str(err.value) and str(path) in str(err.value)
        assert cat.store.load_surface(other.casing_id) is not None  # the others still load
        out = io.StringIO()
        assert not cat.check(out)
        assert rec.casing_id in out.getvalue() and str(path) in out.getvalue()
        # The cheap check (sizes only) misses a flipped byte but not a short or missing file.
        assert cat.check(io.StringIO(), verify_surfaces=False) == (damage == "flip")


def test_shared_file_is_removed_with_its_last_casing(tmp_path):
    s = Store(tmp_path)
    surf = _surface(2)
    a = _add(s, b"same-scan", surf, agency="A")
    b = _add(s, b"same-scan", surf, agency="B")  # another agency's record of the same file
    c = _add(s, b"other-scan", _surface(3))
    path = Path(s.surface_info(a.id)["path"])
    assert s.surface_info(b.id)["path"] == str(path)
    s.delete_casing(a.casing_id, "entered twice")
    assert path.exists() and s.load_surface(b.id) == surf
    assert s.surface_info(a.id) is None
    s.delete_casing(b.casing_id, "withdrawn")
    assert not path.exists()
    # Replacing a surface (re-preparation) removes the file no row uses any more.
    old = Path(s.surface_info(c.id)["path"])
    s.put_surface(c.id, _surface(4))
    assert not old.exists() and s.load_surface(c.id) == _surface(4)
    # Re-adding content whose file was removed writes the file again.
    d = _add(s, b"same-scan", surf, agency="A")
    assert s.load_surface(d.id) == surf
    assert s.check_surfaces() == ([], [])
    s.close()


def test_orphan_files_are_noted_not_failures_and_collected(tmp_path):
    s = Store(tmp_path)
    rec = _add(s, b"scan", _surface(5))
    orphan_sha, _ = BlobStore(tmp_path / "surfaces").put(b"written, then killed before commit")
    problems, notes = s.check_surfaces()
    assert problems == [] and len(notes) == 1 and orphan_sha in notes[0]
    assert s.collect_garbage() == 1
    assert s.check_surfaces() == ([], []) and s.load_surface(rec.id) == _surface(5)
    s.close()


def _legacy_store(data: Path, surfaces: list[bytes]) -> list[int]:
    """A store as the code before surface files wrote it: BLOBs in ``surfaces`` (zlib when
    that was smaller, else raw) and no ``surface_files`` table."""
    s = Store(data)
    ids = [_add(s, f"scan-{i}".encode(), None).id for i in range(len(surfaces))]  # type: ignore[arg-type]
    s.close()
    con = sqlite3.connect(data / "store.sqlite")
    con.execute("DROP TABLE surface_files")
    con.execute("DROP TABLE schema_migrations")  # that code recorded no migration versions
    for rowid, surf in zip(ids, surfaces, strict=True):
        z = zlib.compress(surf, 3)
        codec, blob = ("zlib", z) if len(z) < len(surf) else ("raw", surf)
        con.execute(
            "INSERT INTO surfaces(casing, codec, data) VALUES (?, ?, ?)", (rowid, codec, blob)
        )
    con.commit()
    con.close()
    return ids


def test_old_store_with_blobs_is_migrated_on_open(tmp_path):
    surfaces = [_surface(i) for i in range(5)] + [b"z" * 4000]  # the last one zlib-coded
    ids = _legacy_store(tmp_path, surfaces)
    before = (tmp_path / "store.sqlite").stat().st_size
    s = Store(tmp_path)
    for rowid, surf in zip(ids, surfaces, strict=True):
        assert s.surface_info(rowid)["sha256"] == hashlib.sha256(surf).hexdigest()
        assert s.load_surface(rowid) == surf
    assert s._conn().execute("SELECT COUNT(*) FROM surfaces").fetchone()[0] == 0
    assert s.check_surfaces() == ([], [])
    s.close()
    assert (tmp_path / "store.sqlite").stat().st_size < before  # the BLOBs' pages went back


MIGRATE_CHILD = r"""
import os, signal, sys
from index import blobs
from index.store import Store

# SIGKILL this process after its N-th surface file is written: a kill at a chosen point of the
# migration, whatever the machine's speed (a timed kill landed after the end on a fast one).
kill_after, put = int(sys.argv[2]), blobs.BlobStore.put
count = 0
def counted(self, data):
    global count
    ref = put(self, data)
    count += 1
    if count == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
    return ref
blobs.BlobStore.put = counted
Store(sys.argv[1])
print("done", flush=True)
"""


def test_migration_killed_part_way_loses_no_surface(tmp_path):
    surfaces = [_surface(100 + i, 20000) for i in range(300)]
    ids = _legacy_store(tmp_path, surfaces)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    partial = 0
    # 300 surfaces in batches of 64, each run counting from its own start: kills inside the
    # first batch (nothing moved yet), on its last file (before its commit), after a commit
    for kill_after in (30, 70, 64, 100, 5, 140):
        p = subprocess.run(
            [sys.executable, "-c", MIGRATE_CHILD, str(tmp_path), str(kill_after)],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=300,
        )
        assert p.returncode == -signal.SIGKILL, p.stderr
        con = sqlite3.connect(tmp_path / "store.sqlite", timeout=30)
        left = con.execute("SELECT COUNT(*) FROM surfaces").fetchone()[0]
        moved = con.execute("SELECT COUNT(*) FROM surface_files").fetchone()[0]
        con.close()
        assert left + moved == len(surfaces)  # every surface is in one place or the other
        partial += 0 < left < len(surfaces)
    assert partial >= 1  # at least one kill landed mid-migration
    s = Store(tmp_path)
    for rowid, surf in zip(ids, surfaces, strict=True):
        assert s.load_surface(rowid) == surf
    problems, _ = s.check_surfaces()
    assert problems == []
    s.close()
