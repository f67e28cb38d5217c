-- meterhub schema, version 7: device alerts as delivered to their recipient. A device
-- numbers its alerts; (device, number) is unique, so an alert delivered twice (the fleet
-- retries until the hub has it) is stored once, for the recipient chosen the first time.
-- Append-only.
CREATE TABLE alerts (
    seq         INTEGER PRIMARY KEY,
    party       TEXT NOT NULL,            -- the recipient
    device      TEXT NOT NULL,
    device_seq  INTEGER NOT NULL,
    mpxn        TEXT,
    at          INTEGER NOT NULL,         -- when the device raised it
    code        INTEGER NOT NULL,         -- GBCS alert code
    detail      TEXT NOT NULL,
    data        TEXT,                     -- JSON
    received_at INTEGER NOT NULL,
    UNIQUE (device, device_seq)
) STRICT;
CREATE INDEX alerts_by_party ON alerts(party, seq);

CREATE TRIGGER alerts_no_update BEFORE UPDATE ON alerts
BEGIN SELECT RAISE(ABORT, 'alerts are append-only'); END;
CREATE TRIGGER alerts_no_delete BEFORE DELETE ON alerts
BEGIN SELECT RAISE(ABORT, 'alerts are append-only'); END;
