-- meterhub schema, version 8: change of supplier and change of tenancy.
--
-- A switch is a persisted state machine: `state` is the whole pure state (JSON of
-- domain::switching::Switch), `stage` and `deadline` are copies the scheduler queries, and
-- `version` moves by one on every step, so two steps can never both apply. Each step is
-- also a row of `switch_events`, which is append-only: the switch's audit trail.
CREATE TABLE switches (
    seq              INTEGER PRIMARY KEY,
    mpxn             TEXT NOT NULL REFERENCES metering_points(mpxn),
    process          TEXT NOT NULL,            -- electricity | gas-small | gas-large
    incoming         TEXT NOT NULL,            -- the incoming supplier
    incoming_shipper TEXT,                     -- gas: the incoming shipper
    outgoing         TEXT NOT NULL,
    stage            TEXT NOT NULL,
    deadline         INTEGER,                  -- when the clock moves it on
    version          INTEGER NOT NULL,
    state            TEXT NOT NULL,
    work             TEXT,                     -- JSON: the switch instant's work and reading
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
) STRICT;
-- At most one switch in progress per metering point.
CREATE UNIQUE INDEX switches_one_open ON switches(mpxn) WHERE stage NOT IN ('completed', 'withdrawn');
CREATE INDEX switches_by_mpxn ON switches(mpxn, seq);
CREATE INDEX switches_by_deadline ON switches(deadline);

CREATE TABLE switch_events (
    seq         INTEGER PRIMARY KEY,
    switch_seq  INTEGER NOT NULL REFERENCES switches(seq),
    at          INTEGER NOT NULL,              -- the instant the step happened at
    recorded_at INTEGER NOT NULL,              -- when the hub recorded it
    actor       TEXT NOT NULL,
    party       TEXT,
    event       TEXT NOT NULL,
    from_stage  TEXT,
    to_stage    TEXT NOT NULL,
    detail      TEXT NOT NULL
) STRICT;
CREATE INDEX switch_events_by_switch ON switch_events(switch_seq, seq);
CREATE TRIGGER switch_events_no_update BEFORE UPDATE ON switch_events
BEGIN SELECT RAISE(ABORT, 'switch events are append-only'); END;
CREATE TRIGGER switch_events_no_delete BEFORE DELETE ON switch_events
BEGIN SELECT RAISE(ABORT, 'switch events are append-only'); END;

-- The supplier whose credentials a device holds since a change of supplier (SRV 6.23);
-- NULL = still the installing supplier's.
ALTER TABLE devices ADD COLUMN trusted_supplier TEXT;

-- Changes of tenancy as the supplier notified them (R-COT-1, R-COT-4). Append-only.
CREATE TABLE tenancies (
    seq             INTEGER PRIMARY KEY,
    mpxn            TEXT NOT NULL REFERENCES metering_points(mpxn),
    tenancy_from    INTEGER NOT NULL,
    history_shared  INTEGER NOT NULL,          -- the outgoing tenant consented to share history
    consent_note    TEXT,                      -- how that consent was given, for audit
    notified_by     TEXT NOT NULL,
    recorded_at     INTEGER NOT NULL
) STRICT;
CREATE INDEX tenancies_by_mpxn ON tenancies(mpxn, tenancy_from);
CREATE TRIGGER tenancies_no_update BEFORE UPDATE ON tenancies
BEGIN SELECT RAISE(ABORT, 'tenancies are append-only'); END;
CREATE TRIGGER tenancies_no_delete BEFORE DELETE ON tenancies
BEGIN SELECT RAISE(ABORT, 'tenancies are append-only'); END;

-- Hub notices to a party (a change of tenancy ended its consent; a switch it is part of
-- moved). Append-only; read in order with a cursor.
CREATE TABLE notices (
    seq         INTEGER PRIMARY KEY,
    party       TEXT NOT NULL,
    code        TEXT NOT NULL,
    mpxn        TEXT,
    at          INTEGER NOT NULL,
    detail      TEXT NOT NULL,
    data        TEXT,
    recorded_at INTEGER NOT NULL
) STRICT;
CREATE INDEX notices_by_party ON notices(party, seq);
CREATE TRIGGER notices_no_update BEFORE UPDATE ON notices
BEGIN SELECT RAISE(ABORT, 'notices are append-only'); END;
CREATE TRIGGER notices_no_delete BEFORE DELETE ON notices
BEGIN SELECT RAISE(ABORT, 'notices are append-only'); END;
