-- meterhub schema, version 13: an alert delivered again is recognised by its device's
-- high-water mark (the highest number stored from it) instead of a unique index on
-- (device, number, recipient). Devices deliver in order and again only from their first
-- unacknowledged alert, so the mark says exactly what is stored; the wide unique index cost
-- two thirds of the dispatch's write time (BENCHMARKS.md).
-- The dead letters refer to alerts: set aside while alerts are rebuilt, then put back.
CREATE TABLE dead_letters_v12 AS SELECT alert_seq, party, at, attempts, reason FROM alert_dead_letters;
DROP TABLE alert_dead_letters;
CREATE TABLE alerts_v13 (
    seq          INTEGER PRIMARY KEY,
    party        TEXT NOT NULL,
    recipient_as TEXT NOT NULL,
    device       TEXT,
    device_seq   INTEGER,
    mpxn         TEXT,
    at           INTEGER NOT NULL,
    code         INTEGER NOT NULL,
    detail       TEXT NOT NULL,
    data         TEXT,
    received_at  INTEGER NOT NULL
) STRICT;
INSERT INTO alerts_v13 (seq, party, recipient_as, device, device_seq, mpxn, at, code, detail, data, received_at)
    SELECT seq, party, recipient_as, device, device_seq, mpxn, at, code, detail, data, received_at FROM alerts;
DROP TABLE alerts;
ALTER TABLE alerts_v13 RENAME TO alerts;
CREATE INDEX alerts_by_party ON alerts(party, seq);
CREATE TRIGGER alerts_no_update BEFORE UPDATE ON alerts
BEGIN SELECT RAISE(ABORT, 'alerts are append-only'); END;
CREATE TRIGGER alerts_no_delete BEFORE DELETE ON alerts
BEGIN SELECT RAISE(ABORT, 'alerts are append-only'); END;

CREATE TABLE alert_dead_letters (
    alert_seq INTEGER PRIMARY KEY REFERENCES alerts(seq),
    party     TEXT NOT NULL,
    at        INTEGER NOT NULL,
    attempts  INTEGER NOT NULL,
    reason    TEXT NOT NULL
) STRICT;
INSERT INTO alert_dead_letters (alert_seq, party, at, attempts, reason)
    SELECT alert_seq, party, at, attempts, reason FROM dead_letters_v12;
DROP TABLE dead_letters_v12;
CREATE INDEX dead_letters_by_party ON alert_dead_letters(party, alert_seq);

-- The highest alert number stored from each device.
CREATE TABLE alert_marks (
    device   TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
INSERT INTO alert_marks (device, last_seq)
    SELECT device, max(device_seq) FROM alerts WHERE device IS NOT NULL AND device_seq IS NOT NULL GROUP BY device;
