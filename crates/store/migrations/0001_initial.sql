-- meterhub schema, version 1: parties and their API tokens, the registry, hub state.
-- Times are INTEGER microseconds since the Unix epoch (UTC).

CREATE TABLE parties (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    roles       TEXT NOT NULL,            -- role codes joined with commas, e.g. 'IS,GS'
    originator  TEXT NOT NULL UNIQUE,     -- EUI-64, 16 upper-case hex digits
    signing_key BLOB,                     -- ECDSA P-256 SubjectPublicKeyInfo DER
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE api_tokens (
    id         TEXT PRIMARY KEY,          -- public token id, shown in listings
    party_id   TEXT NOT NULL REFERENCES parties(id),
    label      TEXT NOT NULL,
    hash       BLOB NOT NULL UNIQUE,      -- SHA-256 of the secret token; the secret is never stored
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;
CREATE INDEX api_tokens_by_party ON api_tokens(party_id);

CREATE TABLE metering_points (
    mpxn       TEXT PRIMARY KEY,
    fuel       TEXT NOT NULL CHECK (fuel IN ('electricity', 'gas')),
    created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Effective-dated registration versions. Append-only: the version in force at T is the one
-- with the greatest (effective_from, seq) with effective_from <= T.
CREATE TABLE registrations (
    seq                 INTEGER PRIMARY KEY,
    mpxn                TEXT NOT NULL,       -- a metering_points row always exists first (checked in code)
    effective_from      INTEGER NOT NULL,
    supplier            TEXT NOT NULL,
    export_supplier     TEXT,
    shipper             TEXT,
    network_operator    TEXT NOT NULL,
    meter_type          TEXT NOT NULL CHECK (meter_type IN ('traditional', 'smart-compliant')),
    payment_mode        TEXT CHECK (payment_mode IN ('credit', 'prepayment')),
    annual_quantity_kwh INTEGER,
    recorded_at         INTEGER NOT NULL,
    recorded_by         TEXT NOT NULL
) STRICT;
-- The rowid (seq) is part of every index entry, so ties on effective_from order by seq.
CREATE INDEX registrations_by_mpxn ON registrations(mpxn, effective_from);

-- Effective-dated enrolment of the smart metering system in the hub. Append-only.
CREATE TABLE enrolments (
    seq            INTEGER PRIMARY KEY,
    mpxn           TEXT NOT NULL REFERENCES metering_points(mpxn),
    effective_from INTEGER NOT NULL,
    enrolled       INTEGER NOT NULL CHECK (enrolled IN (0, 1)),
    recorded_at    INTEGER NOT NULL,
    recorded_by    TEXT NOT NULL
) STRICT;
CREATE INDEX enrolments_by_mpxn ON enrolments(mpxn, effective_from);

CREATE TRIGGER registrations_no_update BEFORE UPDATE ON registrations
BEGIN SELECT RAISE(ABORT, 'registrations are append-only'); END;
CREATE TRIGGER registrations_no_delete BEFORE DELETE ON registrations
BEGIN SELECT RAISE(ABORT, 'registrations are append-only'); END;
CREATE TRIGGER enrolments_no_update BEFORE UPDATE ON enrolments
BEGIN SELECT RAISE(ABORT, 'enrolments are append-only'); END;
CREATE TRIGGER enrolments_no_delete BEFORE DELETE ON enrolments
BEGIN SELECT RAISE(ABORT, 'enrolments are append-only'); END;

-- Small named values the hub keeps across restarts (e.g. the simulated clock).
CREATE TABLE hub_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
