-- Version 3: crime-gun intelligence (index/intel.py): recovered firearms, their test fires
-- (stored casings), trace requests and incident coordinates. IF NOT EXISTS: stores written
-- before this migration existed had these tables made by index/intel.py on first use.
CREATE TABLE IF NOT EXISTS firearms(
    firearm_id TEXT PRIMARY KEY,
    agency TEXT NOT NULL,
    make TEXT, model TEXT, caliber TEXT, serial_number TEXT,
    recovered_on TEXT, place TEXT, lat REAL, lon REAL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS firearms_agency ON firearms(agency);
CREATE TABLE IF NOT EXISTS test_fires(
    casing INTEGER PRIMARY KEY REFERENCES casings(id),
    firearm_id TEXT NOT NULL REFERENCES firearms(firearm_id),
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS test_fires_firearm ON test_fires(firearm_id);
CREATE TABLE IF NOT EXISTS trace_requests(
    trace_id TEXT PRIMARY KEY,
    firearm_id TEXT NOT NULL REFERENCES firearms(firearm_id),
    requested_of TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    status TEXT NOT NULL,
    outcome TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS trace_requests_firearm ON trace_requests(firearm_id);
CREATE TABLE IF NOT EXISTS incident_locations(
    agency TEXT NOT NULL,
    incident TEXT NOT NULL,
    lat REAL NOT NULL,
    lon REAL NOT NULL,
    PRIMARY KEY(agency, incident));
