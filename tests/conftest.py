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
