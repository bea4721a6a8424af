"""The same file stored twice: within an agency one casing (idempotent); across agencies each
agency keeps its own casing, and a search lists a visible byte-identical copy apart
(``identical_file``), never ranked as a match, never revealing copies the caller may not see;
a search by a stored casing never returns that casing itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from index.service import Catalog
from index.store import Filters
from index.testing import FakeEngine
from tests.test_server_support import Running, catalog_server

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _scan(i: int) -> bytes:
    return PNG_MAGIC + f"FAKE-ish casing {i}".encode() + b"\x00" * 32


def _fill(cat: Catalog) -> tuple[bytes, str, str]:
    """Six casings of agency A, then file 0 again by agency B; returns (file, id_A, id_B)."""
    ids = [cat.ingest_bytes(f"FAKE:{i % 3}:{i}".encode(), f"{i}.x3p", {"agency": "A"}) for i in
           range(6)]  # fmt: skip
    data = b"FAKE:0:0"
    again = cat.ingest_bytes(data, "0.x3p", {"agency": "A"})
    assert not again.created and again.casing_id == ids[0].casing_id  # same agency: idempotent
    other = cat.ingest_bytes(data, "copy.x3p", {"agency": "B"})
    assert other.created and other.casing_id != ids[0].casing_id  # another agency: its own
    assert other.sha256 == ids[0].sha256
    return data, ids[0].casing_id, other.casing_id


def test_search_lists_a_byte_identical_file_apart_and_never_itself(tmp_path: Path) -> None:
    with Catalog.open(tmp_path / "d", engine=FakeEngine()) as cat:
        data, a0, b0 = _fill(cat)
        by_file = cat.search(data, top=10)
        ranked = [c.casing_id for c in by_file.combined]
        assert a0 not in ranked and b0 not in ranked
        assert sorted(c.casing_id for c in by_file.identical) == sorted([a0, b0])
        assert all(c.identical_file and c.score is None for c in by_file.identical)
        assert all(not c.identical_file for c in by_file.combined)
        assert by_file.combined[0].score is not None and by_file.combined[0].score < 0.999
        for region in by_file.regions.values():
            assert {c.casing_id for c in region}.isdisjoint({a0, b0})

        by_id = cat.search(a0, top=10)
        assert a0 not in [c.casing_id for c in by_id.combined]  # never itself
        assert [c.casing_id for c in by_id.identical] == [b0]
        assert b0 not in [c.casing_id for c in by_id.combined]

        # Only what the filter lets through: A alone sees only its own copy.
        only_a = cat.search(data, top=10, filters=Filters(agencies=frozenset({"A"})))
        assert [c.casing_id for c in only_a.identical] == [a0]
        assert {c.agency for c in only_a.combined} == {"A"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Running]:
    with catalog_server(tmp_path) as (srv, _):
        yield srv


def test_service_duplicates_across_agencies(served: Running) -> None:
    srv = served
    dup = _scan(0)
    with srv.client("north_exam") as n, srv.client("south_exam") as s, srv.client("east_exam") as e:
        for i in range(1, 4):
            n.submit(_scan(i), search=False)
        first = n.submit(dup, search=False)
        assert n.submit(dup, search=False).casing_id == first.casing_id  # idempotent
        mine = s.submit(dup)  # South may search North: the copy is listed apart, not ranked
        assert mine.casing_id != first.casing_id
        assert [c.casing_id for c in mine.search.identical] == [first.casing_id]
        (c,) = mine.search.identical
        assert c.identical_file and c.rank == 0 and c.agency == "PD-North"
        ranked = [x.casing_id for x in mine.search.combined.candidates]
        assert first.casing_id not in ranked and mine.casing_id not in ranked
        assert not any(x.identical_file for x in mine.search.combined.candidates)

        by_file = n.search(file=dup, max_results=10)
        assert {x.casing_id for x in by_file.identical} == {first.casing_id, mine.casing_id}
        # East shares with nobody: its own copy only, nothing about North's or South's.
        east = e.submit(dup)
        assert not east.search.identical and not east.search.combined.candidates
        assert [x.casing_id for x in e.search(file=dup).identical] == [east.casing_id]
