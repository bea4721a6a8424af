"""Shared fixtures: where the real data lives, and a note when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
FADUL_DIR = REAL_DATA / "csafe-cartridgeCaseScans" / "fadul"
NBIDE_DIR = REAL_DATA / "nist-nbide-via-xhtai-cartridges"


def fadul_files() -> list[Path]:
    return sorted(FADUL_DIR.glob("*.x3p")) if FADUL_DIR.is_dir() else []


@pytest.fixture(scope="session")
def fadul_paths() -> list[Path]:
    files = fadul_files()
    if not files:
        pytest.skip(f"real Fadul scans not found at {FADUL_DIR}; synthetic tests still run")
    return files


@pytest.fixture(scope="session")
def nbide_paths() -> list[Path]:
    files = sorted(NBIDE_DIR.glob("*.png")) if NBIDE_DIR.is_dir() else []
    if not files:
        pytest.skip(f"real NBIDE images not found at {NBIDE_DIR}")
    return files


# -- the store engines: every test using `store_engine` runs on SQLite and on PostgreSQL ------
@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL cluster for the session (skips when the server isn't installed)."""
    from tests.pgserver import INSTALL_HINT, PgCluster, find_bindir

    bindir = find_bindir()
    if bindir is None:
        pytest.skip(INSTALL_HINT)
    cluster = PgCluster(bindir)
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster):
    """A fresh, empty PostgreSQL database for one test (dropped after it)."""
    url = pg_cluster.create_database()
    yield url
    pg_cluster.drop_database(url)


@pytest.fixture
def pg_url_2(pg_cluster):
    """A second fresh database, for a test that needs two independent stores."""
    url = pg_cluster.create_database()
    yield url
    pg_cluster.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_engine(request, monkeypatch, tmp_path):
    """Run the test on each store engine: SQLite in the test's data directory, or a fresh
    PostgreSQL database chosen through ``BALLISTICS_STORE`` (so subprocesses the test starts
    use it too; :func:`index.store.open_store`). Yields the engine's name."""
    if request.param == "sqlite":
        monkeypatch.delenv("BALLISTICS_STORE", raising=False)
    else:
        monkeypatch.setenv("BALLISTICS_STORE", request.getfixturevalue("pg_url"))
    yield request.param
    if request.param == "postgresql":  # the test really ran on PostgreSQL
        assert not list(tmp_path.rglob("store.sqlite")), "a SQLite store was opened"
