-- Version 1: the schema of the SQLite store of record (index/store.py), as it stood when
-- versioned migrations began. Every statement is IF NOT EXISTS, so a store created before
-- migrations were recorded takes it as applied without change.
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS agencies(
    id TEXT PRIMARY KEY, name TEXT, jurisdiction TEXT);
-- Incidents are scoped per agency: (agency, id). Two agencies' "2024-001" are two incidents,
-- and a casing always belongs to an incident of its own agency.
CREATE TABLE IF NOT EXISTS incidents(
    agency TEXT NOT NULL REFERENCES agencies(id), id TEXT NOT NULL, case_number TEXT,
    date TEXT, place TEXT, PRIMARY KEY(agency, id));
CREATE TABLE IF NOT EXISTS casings(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    casing_id TEXT NOT NULL UNIQUE,
    exhibit_id TEXT,
    incident TEXT,
    caliber TEXT,
    firing_pin_shape TEXT,
    acquisition_date TEXT,
    agency TEXT NOT NULL REFERENCES agencies(id),
    sha256 TEXT NOT NULL,
    filename TEXT,
    format TEXT,
    spacing_m REAL,
    created_at TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    deleted_reason TEXT,
    deleted_at TEXT,
    superseded_by INTEGER REFERENCES casings(id),
    FOREIGN KEY(agency, incident) REFERENCES incidents(agency, id));
CREATE UNIQUE INDEX IF NOT EXISTS casings_live_sha_agency
    ON casings(sha256, agency) WHERE deleted = 0;
CREATE INDEX IF NOT EXISTS casings_class ON casings(caliber, firing_pin_shape);
-- Covers every search filter (the sharing policy filters by agency on every remote search), so
-- filter_ids reads this small index instead of the table.
CREATE INDEX IF NOT EXISTS casings_filter
    ON casings(deleted, agency, caliber, firing_pin_shape, acquisition_date);
CREATE INDEX IF NOT EXISTS casings_incident ON casings(incident);
CREATE TABLE IF NOT EXISTS descriptors(
    casing INTEGER NOT NULL REFERENCES casings(id),
    region TEXT NOT NULL,
    extractor_version TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY(casing, region, extractor_version));
CREATE INDEX IF NOT EXISTS descriptors_region ON descriptors(region, extractor_version);
-- Legacy: surfaces stored inside SQLite (empty once _migrate_surface_blobs has run).
CREATE TABLE IF NOT EXISTS surfaces(
    casing INTEGER PRIMARY KEY REFERENCES casings(id), codec TEXT NOT NULL, data BLOB NOT NULL);
-- The prepared surface of a casing: a file under surfaces/ named by the SHA-256 of its bytes
-- (index.blobs). codec: how the file's bytes encode what Engine.load takes ('raw': as is).
-- Casings with identical surfaces share one file; it is removed with the last row using it.
CREATE TABLE IF NOT EXISTS surface_files(
    casing INTEGER PRIMARY KEY REFERENCES casings(id), codec TEXT NOT NULL,
    sha256 TEXT NOT NULL, size INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS surface_files_sha ON surface_files(sha256);
-- The scan's quality record (JSON, ballistics.quality); no row: casing stored before quality
-- records existed (unknown, not zero). Kept apart from the surface so a search can attach it
-- to every candidate without decompressing surfaces.
CREATE TABLE IF NOT EXISTS qualities(
    casing INTEGER PRIMARY KEY REFERENCES casings(id), record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decisions(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    casing INTEGER NOT NULL REFERENCES casings(id),
    candidate INTEGER NOT NULL REFERENCES casings(id),
    verdict TEXT NOT NULL CHECK(verdict IN ('hit', 'excluded', 'inconclusive')),
    comment TEXT NOT NULL DEFAULT '',
    examiner TEXT NOT NULL,
    agency TEXT,
    time TEXT NOT NULL,
    supersedes INTEGER REFERENCES decisions(id));
CREATE INDEX IF NOT EXISTS decisions_pair ON decisions(casing, candidate);
CREATE INDEX IF NOT EXISTS decisions_candidate ON decisions(candidate);
CREATE TRIGGER IF NOT EXISTS decisions_append_only_u BEFORE UPDATE ON decisions
    BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END;
CREATE TRIGGER IF NOT EXISTS decisions_append_only_d BEFORE DELETE ON decisions
    BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END;
-- Free-form metadata per casing from an ingest manifest's extra columns (e.g. firearm_id,
-- the ground truth of a validation run); never used for search filtering.
CREATE TABLE IF NOT EXISTS casing_metadata(
    casing INTEGER NOT NULL REFERENCES casings(id),
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY(casing, key));
CREATE TABLE IF NOT EXISTS changes(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK(kind IN ('add', 'delete', 'reextract')),
    casing INTEGER,
    time TEXT NOT NULL);
-- Background correlation (index/correlate.py): one job per casing, written in the same
-- transaction as the casing, so no stored casing can miss its job. 'running' jobs of a process
-- that died are put back to 'pending' when a worker starts (requeue_running_jobs).
CREATE TABLE IF NOT EXISTS correlation_jobs(
    casing INTEGER PRIMARY KEY REFERENCES casings(id),
    state TEXT NOT NULL DEFAULT 'pending'
        CHECK(state IN ('pending', 'running', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    worker TEXT,
    error TEXT,
    n_screened INTEGER,
    n_compared INTEGER,
    n_leads INTEGER);
CREATE INDEX IF NOT EXISTS correlation_jobs_state ON correlation_jobs(state, casing);
-- A lead: a pair whose full comparison passed the lead threshold. One row per unordered pair
-- (casing_a < casing_b: row ids), so a retaken job can never double it. Its state is not kept
-- here: it is the pair's latest examiner decision (decisions table, the Decide path).
CREATE TABLE IF NOT EXISTS leads(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    casing_a INTEGER NOT NULL REFERENCES casings(id),
    casing_b INTEGER NOT NULL REFERENCES casings(id),
    job INTEGER NOT NULL REFERENCES casings(id),
    score REAL,
    cmc REAL,
    non_match_frequency REAL,
    screen_score REAL,
    low_confidence INTEGER NOT NULL DEFAULT 0,
    low_confidence_reasons TEXT NOT NULL DEFAULT '[]',
    flags TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    CHECK(casing_a < casing_b),
    UNIQUE(casing_a, casing_b));
CREATE INDEX IF NOT EXISTS leads_b ON leads(casing_b);
