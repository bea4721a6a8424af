-- Version 3: crime-gun intelligence (index/intel.py), the same tables as
-- migrations/sqlite/0003_intelligence.sql (REAL -> DOUBLE PRECISION, casing ids BIGINT).
-- Not under row-level security (0002): firearm records are read through the sharing policy
-- in index/intel.py, which hides other agencies' records and counts what it hides.
CREATE TABLE firearms(
    firearm_id TEXT PRIMARY KEY,
    agency TEXT NOT NULL,
    make TEXT, model TEXT, caliber TEXT, serial_number TEXT,
    recovered_on TEXT, place TEXT, lat DOUBLE PRECISION, lon DOUBLE PRECISION,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL);
CREATE INDEX firearms_agency ON firearms(agency);
CREATE TABLE test_fires(
    casing BIGINT PRIMARY KEY REFERENCES casings(id),
    firearm_id TEXT NOT NULL REFERENCES firearms(firearm_id),
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL);
CREATE INDEX test_fires_firearm ON test_fires(firearm_id);
CREATE TABLE trace_requests(
    trace_id TEXT PRIMARY KEY,
    firearm_id TEXT NOT NULL REFERENCES firearms(firearm_id),
    requested_of TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    status TEXT NOT NULL,
    outcome TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL);
CREATE INDEX trace_requests_firearm ON trace_requests(firearm_id);
CREATE TABLE incident_locations(
    agency TEXT NOT NULL,
    incident TEXT NOT NULL,
    lat DOUBLE PRECISION NOT NULL,
    lon DOUBLE PRECISION NOT NULL,
    PRIMARY KEY(agency, incident));
