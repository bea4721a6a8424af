"""The upload path: each upload is hashed once (while it is spooled), the scan is read from the
spool (never copied whole into memory by the service), and the response reports the
segmentation the ingest computed instead of decoding the stored surface again."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from index.service import Catalog
from index.testing import FakeEngine
from tests.test_server_support import Running, catalog_server

# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py: store_engine).
pytestmark = pytest.mark.usefixtures("store_engine")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class HashCounter:
    """Counts how many bytes of ``content`` go through SHA-256 (constructor or update)."""

    def __init__(self, content: bytes) -> None:
        self.content = content
        self.hashed = 0
        self._sha256 = hashlib.sha256

    def _seen(self, data: Any) -> None:
        b = bytes(data)
        if len(b) >= 1024 and b in self.content:
            self.hashed += len(b)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        counter = self
        if args:
            self._seen(args[0])
        h = self._sha256(*args, **kwargs)

        class Counted:
            def update(self, data: Any) -> None:
                counter._seen(data)
                h.update(data)

            def __getattr__(self, name: str) -> Any:
                return getattr(h, name)

        return Counted()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Running, Catalog, FakeEngine]]:
    engine = FakeEngine()
    with catalog_server(tmp_path, engine) as (srv, catalog):
        yield srv, catalog, engine


def test_submit_hashes_once_reads_the_spool_and_reports_ingest_segmentation(
    served: tuple[Running, Catalog, FakeEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, catalog, engine = served
    rng = np.random.default_rng(7)
    upload = PNG_MAGIC + rng.bytes(300_000)  # several chunks
    counter = HashCounter(upload)
    monkeypatch.setattr(hashlib, "sha256", counter)
    sources: list[Any] = []
    process = engine.process

    def spy_process(source: Any, *args: Any, **kwargs: Any) -> Any:
        sources.append(source)
        return process(source, *args, **kwargs)

    def no_load(surface: bytes) -> Any:
        raise AssertionError("the stored surface was decoded again after the ingest")

    monkeypatch.setattr(engine, "process", spy_process)
    monkeypatch.setattr(engine, "load", no_load)
    with srv.client("north_exam") as c:
        resp = c.submit(upload, incident_id="N-1", search=False)
    monkeypatch.undo()

    assert counter.hashed == len(upload)  # once, while spooled (it was four times)
    assert len(sources) == 1 and isinstance(sources[0], Path)  # the reader read the spool
    assert resp.sha256 == hashlib.sha256(upload).hexdigest()
    seg = json.loads(resp.segmentation.summary_json)
    assert seg == engine.process(upload, None, None).segmentation  # what the ingest computed
    assert resp.segmentation.firing_pin_shape == seg["firing_pin_shape"]
    rec = catalog.get(resp.casing_id)
    assert catalog.store.read_object(rec.sha256) == upload  # the spool was copied in whole


def test_duplicate_submit_is_not_processed_again(
    served: tuple[Running, Catalog, FakeEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same file again from the same agency computes nothing: the stored casing is
    returned (its segmentation decoded from the store, the one case that needs it)."""
    srv, _, engine = served
    upload = PNG_MAGIC + b"duplicate" * 200
    calls = []
    process = engine.process

    def spy_process(source: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(source)
        return process(source, *args, **kwargs)

    monkeypatch.setattr(engine, "process", spy_process)
    with srv.client("north_exam") as c:
        first = c.submit(upload, search=False)
        again = c.submit(upload, search=False)
    assert again.casing_id == first.casing_id and again.sha256 == first.sha256
    assert len(calls) == 1


def test_ingest_file_refuses_a_digest_that_is_not_a_sha256(tmp_path: Path) -> None:
    """The digest is trusted for content addressing: a blank or malformed one would file a
    second scan under the first one's address and return the first as already stored."""
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    first.write_bytes(PNG_MAGIC + b"a" * 64)
    second.write_bytes(PNG_MAGIC + b"b" * 64)
    with Catalog.open(tmp_path / "store", engine=FakeEngine()) as cat:
        good = hashlib.sha256(first.read_bytes()).hexdigest()
        rec = cat.ingest_file(first, "a.png", sha256=good).record
        for bad in ("", "x" * 64, good.upper(), good[:-1]):
            with pytest.raises(ValueError, match="64-hex-digit"):
                cat.ingest_file(second, "b.png", sha256=bad)
        assert cat.ingest_file(first, "a.png", sha256=good).record.casing_id == rec.casing_id
