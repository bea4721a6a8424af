"""Versioned schema migrations of the store of record, one SQL file per version and engine.

``index/migrations/<engine>/NNNN_name.sql`` (engine ``sqlite`` or ``postgresql``): the same
version numbers in both folders, each file written in its engine's dialect (the dialects
differ in identities, BLOB/BYTEA, trigger syntax and row security: two short files read
better than one file with a translation layer). Applied versions are recorded in the table
``schema_migrations(version, name, applied_at)``; opening a store applies the missing ones in
order, each in one transaction with its record (PostgreSQL: DDL is transactional, and an
advisory lock keeps two servers starting at once from applying a version twice; SQLite:
``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENGINES = ("sqlite", "postgresql")
_DIR = Path(__file__).resolve().parent
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
#: pg_advisory_xact_lock(namespace, key) namespace of the migration lock (store_pg.py uses 1, 2).
PG_LOCK_NAMESPACE = 3

_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations(version INTEGER PRIMARY KEY, "
    "name TEXT NOT NULL, applied_at TEXT NOT NULL)"
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(engine: str) -> list[Migration]:
    """The migrations of ``engine`` in version order (checked: numbered 1, 2, ... with no gap)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown store engine {engine!r}; expected one of {ENGINES}")
    out = []
    for p in sorted((_DIR / engine).glob("*.sql")):
        m = _NAME.match(p.name)
        if m is None:
            raise ValueError(f"migration file {p} is not named NNNN_name.sql")
        out.append(Migration(int(m.group(1)), m.group(2), p.read_text(encoding="utf-8")))
    if [m.version for m in out] != list(range(1, len(out) + 1)):
        raise ValueError(f"migrations of {engine} are not numbered 1..n without gaps: {out}")
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def apply_sqlite(con: Any) -> list[int]:
    """Apply the missing SQLite migrations on ``con`` (autocommit mode); returns the versions
    applied now. Each version's statements and its record commit together."""
    con.execute(_TABLE)
    done = {int(r[0]) for r in con.execute("SELECT version FROM schema_migrations")}
    applied = []
    for m in migrations("sqlite"):
        if m.version in done:
            continue
        # executescript commits whatever is open first, so the transaction is in the script.
        # A concurrent opener that applied it meanwhile: version 1 is IF NOT EXISTS throughout
        # and the record is ON CONFLICT DO NOTHING.
        con.executescript(
            f"BEGIN IMMEDIATE;\n{m.sql}\n;INSERT INTO schema_migrations(version, name, applied_at)"
            f" VALUES ({m.version}, '{m.name}', '{_now()}') ON CONFLICT DO NOTHING;\nCOMMIT;"
        )
        applied.append(m.version)
    return applied


def apply_postgresql(con: Any) -> list[int]:
    """Apply the missing PostgreSQL migrations on a psycopg connection (autocommit mode);
    returns the versions applied now. One transaction under an advisory lock: a second server
    starting at the same moment waits, then finds everything applied."""
    applied = []
    with con.transaction():
        con.execute("SELECT pg_advisory_xact_lock(%s, 0)", (PG_LOCK_NAMESPACE,))
        con.execute(_TABLE)
        done = {int(r[0]) for r in con.execute("SELECT version FROM schema_migrations")}
        for m in migrations("postgresql"):
            if m.version in done:
                continue
            con.execute(m.sql)  # no parameters: several statements in one call are allowed
            con.execute(
                "INSERT INTO schema_migrations(version, name, applied_at) VALUES (%s, %s, %s)",
                (m.version, m.name, _now()),
            )
            applied.append(m.version)
    return applied
