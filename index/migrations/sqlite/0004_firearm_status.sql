-- Version 4: a firearm's status changes after it was recorded (returned to its owner,
-- destroyed, ...), one row per change, never updated: who changed it, when and why.
CREATE TABLE IF NOT EXISTS firearm_status_changes(
    firearm_id TEXT NOT NULL REFERENCES firearms(firearm_id),
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    previous TEXT NOT NULL,
    comment TEXT NOT NULL,
    changed_at TEXT NOT NULL,
    changed_by TEXT NOT NULL,
    PRIMARY KEY(firearm_id, seq));
