-- Version 2: row-level security per agency (PostgreSQL: migrations/postgresql/0002). SQLite
-- has no row-level security: an embedded store is opened by one process that is its own
-- single user, and the sharing policy (server/policy.py) is the only line. Nothing to do;
-- the version is recorded so both engines count the same versions.
SELECT 1;
