-- meterhub schema, version 3: schedules the hub runs (SRV 5.1/5.2/5.3) and reads forwarded
-- from suppliers to network operators (supplier hub principle, R-RD-1).

-- A recurring read the hub runs for a party. Its id is the id of the 5.1 request that made it.
CREATE TABLE schedules (
    id          TEXT PRIMARY KEY,
    party       TEXT NOT NULL,
    srv         TEXT NOT NULL,             -- the read it runs
    target      TEXT NOT NULL,             -- device EUI-64
    mpxn        TEXT,
    every       TEXT NOT NULL CHECK (every IN ('day', 'week')),
    first_run   INTEGER NOT NULL,
    end_at      INTEGER,                   -- no run after this instant
    next_run    INTEGER,                   -- NULL once finished or deleted
    runs        INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    deleted_at  INTEGER
) STRICT;
CREATE INDEX schedules_due ON schedules(next_run);
CREATE INDEX schedules_by_party ON schedules(party, target);

-- A scheduled run is an ordinary request that names its schedule.
ALTER TABLE requests ADD COLUMN schedule_id TEXT;

-- Per-day read batches find a day's first response through this index.
CREATE INDEX responses_by_party_at ON responses(party, at);

-- Reads a supplier forwarded to a network operator. Append-only.
CREATE TABLE read_forwards (
    seq        INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL REFERENCES requests(id),
    from_party TEXT NOT NULL,
    to_party   TEXT NOT NULL,
    at         INTEGER NOT NULL,
    UNIQUE (request_id, to_party)
) STRICT;
CREATE INDEX read_forwards_by_recipient ON read_forwards(to_party, seq);

CREATE TRIGGER read_forwards_no_update BEFORE UPDATE ON read_forwards
BEGIN SELECT RAISE(ABORT, 'forwarded reads are append-only'); END;
CREATE TRIGGER read_forwards_no_delete BEFORE DELETE ON read_forwards
BEGIN SELECT RAISE(ABORT, 'forwarded reads are append-only'); END;
