-- Version 4: the same table as migrations/sqlite/0004_firearm_status.sql.
CREATE TABLE firearm_status_changes(
    firearm_id TEXT NOT NULL REFERENCES firearms(firearm_id),
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    previous TEXT NOT NULL,
    comment TEXT NOT NULL,
    changed_at TEXT NOT NULL,
    changed_by TEXT NOT NULL,
    PRIMARY KEY(firearm_id, seq));
