-- meterhub schema, version 2: the smart metering inventory and the service request pipeline.

-- Premises and the devices installed there, as the hub knows them (the inventory). The
-- devices' own state belongs to the fleet, not to these tables.
CREATE TABLE premises (
    id           INTEGER PRIMARY KEY,
    comms_hub    TEXT NOT NULL UNIQUE,     -- EUI-64, 16 upper-case hex digits
    installed_at INTEGER NOT NULL,
    installed_by TEXT NOT NULL REFERENCES parties(id)
) STRICT;

CREATE TABLE devices (
    eui             TEXT PRIMARY KEY,
    premises_id     INTEGER NOT NULL REFERENCES premises(id),
    kind            TEXT NOT NULL,
    installed_at    INTEGER NOT NULL,
    commissioned_at INTEGER,
    mpxn            TEXT                  -- set when the MPxN is linked (SRV 6.20.1)
) STRICT;
CREATE INDEX devices_by_premises ON devices(premises_id);
-- Not a partial index: SQLite would re-prepare every `mpxn = ?` query to check it applies.
-- NULLs are distinct in a UNIQUE index, so unlinked devices do not collide.
CREATE UNIQUE INDEX devices_by_mpxn ON devices(mpxn);

-- Request-id counters: handed out in blocks, so a restart skips numbers but never reuses one.
CREATE TABLE originator_counters (
    originator TEXT PRIMARY KEY,
    reserved   INTEGER NOT NULL
) STRICT;

-- Service requests: one row each, whose status moves forward; every move is audited.
CREATE TABLE requests (
    seq          INTEGER PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,     -- originatorEUI:targetEUI:counter
    party        TEXT NOT NULL,
    srv          TEXT NOT NULL,
    target       TEXT NOT NULL,            -- device EUI-64
    mpxn         TEXT,
    body         TEXT NOT NULL,            -- canonical JSON
    precommand   BLOB NOT NULL,            -- the exact bytes the device receives (and a signer signs)
    signature    BLOB,
    submitted_at INTEGER NOT NULL,
    execute_at   INTEGER,
    status       TEXT NOT NULL,
    status_at    INTEGER NOT NULL,
    note         TEXT
) STRICT;
-- No partial indexes: SQLite re-prepares any query with a bound parameter on a table that
-- has one, to check whether it applies.
CREATE INDEX requests_by_status ON requests(status, execute_at);
CREATE INDEX requests_by_party ON requests(party, seq);

-- Responses, once each, never changed.
CREATE TABLE responses (
    seq        INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE REFERENCES requests(id),
    party      TEXT NOT NULL,
    at         INTEGER NOT NULL,
    outcome    TEXT NOT NULL CHECK (outcome IN ('done', 'device-refused', 'failed')),
    body       TEXT NOT NULL
) STRICT;
CREATE INDEX responses_by_party ON responses(party, seq);

-- The audit log: every acknowledgement, status change and response. Append-only.
CREATE TABLE audit (
    seq        INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    party      TEXT NOT NULL,
    event      TEXT NOT NULL,
    detail     TEXT NOT NULL
) STRICT;
CREATE INDEX audit_by_request ON audit(request_id, seq);

CREATE TRIGGER responses_no_update BEFORE UPDATE ON responses
BEGIN SELECT RAISE(ABORT, 'responses are append-only'); END;
CREATE TRIGGER responses_no_delete BEFORE DELETE ON responses
BEGIN SELECT RAISE(ABORT, 'responses are append-only'); END;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

-- Anomaly detection thresholds (R-SR-5): a party's own per SRV, or the hub's ('*') for all
-- parties together. Requests beyond one are quarantined.
CREATE TABLE anomaly_thresholds (
    party         TEXT NOT NULL,           -- party id, or '*' for hub-wide
    srv           TEXT NOT NULL,
    window_secs   INTEGER NOT NULL CHECK (window_secs > 0),
    max_requests  INTEGER NOT NULL CHECK (max_requests >= 0),
    set_at        INTEGER NOT NULL,
    PRIMARY KEY (party, srv)
) STRICT;
