"""Store of record: idempotency, soft delete, append-only decisions, links, seq."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from index.errors import NotFoundError
from index.store import Filters, Store, open_store

# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py: store_engine).
pytestmark = pytest.mark.usefixtures("store_engine")


def _db_errors() -> tuple[type[Exception], ...]:
    """The database-error classes of both engines (psycopg only when installed)."""
    try:
        import psycopg
    except ImportError:
        return (sqlite3.DatabaseError,)
    return (sqlite3.DatabaseError, psycopg.Error)


def _add(store: Store, data: bytes, **kw):
    v = np.ones(4, np.float32) / 2
    return store.add_casing(
        original=data,
        agency=kw.pop("agency", "A"),
        descriptors={"breech_face": v},
        extractor_version="v1",
        surface=b"s" * 100,
        **kw,
    )


def test_add_is_idempotent_and_content_addressed(tmp_path):
    s = open_store(tmp_path)
    r1, seq1 = _add(s, b"scan-1", caliber="9mm", incident="I1")
    r2, seq2 = _add(s, b"scan-1", caliber="9mm")
    assert r1.created and not r2.created and r1.casing_id == r2.casing_id and seq1 == seq2
    r3, seq3 = _add(s, b"scan-1", agency="B")  # another agency keeps its own record
    assert r3.created and r3.id != r1.id and seq3 == seq1 + 1
    assert s.read_object(r1.sha256) == b"scan-1"
    assert s.object_path(r1.sha256).parent.name == r1.sha256[:2]
    assert s.load_surface(r1.casing_id) == b"s" * 100
    ids, vecs = next(s.iter_vectors("breech_face", "v1"))
    assert list(ids) == [r1.id, r3.id] and vecs.dtype == np.float32
    s.close()


def test_delete_filters_and_changes(tmp_path):
    s = open_store(tmp_path)
    a, _ = _add(s, b"a", caliber="9mm", acquisition_date="2024-01-05")
    b, _ = _add(s, b"b", caliber="45", acquisition_date="2024-03-01")
    assert list(s.filter_ids(Filters(caliber="9mm"))) == [a.id]
    assert list(s.filter_ids(Filters(date_from="2024-02-01"))) == [b.id]
    assert list(s.filter_ids(Filters(agencies=set()))) == []
    d, seq = s.delete_casing(a.casing_id, "wrong exhibit")
    assert d.deleted and d.deleted_reason == "wrong exhibit"
    assert [c.kind for c in s.changes_since(0)] == ["add", "add", "delete"] and seq == 3
    with pytest.raises(NotFoundError, match="no casing with id"):
        s.get_casing(a.casing_id)
    assert s.get_casing(a.casing_id, include_deleted=True).deleted
    with pytest.raises(ValueError):
        s.delete_casing(b.casing_id, " ")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        _add(s, b"c", acquisition_date="5/1/2024")
    r, _ = _add(s, b"a")  # re-adding deleted content creates a new record
    assert r.created and r.id > b.id
    s.close()


def test_decisions_append_only_and_links(tmp_path):
    s = open_store(tmp_path)
    a, _ = _add(s, b"a", incident="I1")
    b, _ = _add(s, b"b", incident="I2")
    c, _ = _add(s, b"c", incident="I3")
    e, _ = _add(s, b"e")
    s.record_decision(a.casing_id, b.casing_id, "hit", examiner="x")
    s.record_decision(b.casing_id, c.casing_id, "hit", examiner="y")
    d3 = s.record_decision(c.casing_id, b.casing_id, "excluded", examiner="z")  # supersedes
    assert d3.supersedes is not None
    g = s.links(casing_id=a.casing_id)
    assert {n["incident"] for n in g["nodes"]} == {"I1", "I2"} and len(g["edges"]) == 1
    s.record_decision(e.casing_id, c.casing_id, "hit", examiner="w")
    g = s.links(incident_id="I3")
    assert {n["incident"] for n in g["nodes"]} == {"I3", f"casing:{e.casing_id}"}
    assert len(s.decisions_for(b.casing_id)) == 3
    with pytest.raises(_db_errors(), match="append-only"):
        s._conn().execute("UPDATE decisions SET verdict = 'hit'")
    with pytest.raises(_db_errors(), match="append-only"):
        s._conn().execute("DELETE FROM decisions")
    with pytest.raises(ValueError):
        s.record_decision(a.casing_id, b.casing_id, "maybe", examiner="x")
    with pytest.raises(NotFoundError):
        s.links(incident_id="nope")
    s.close()
