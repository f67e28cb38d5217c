-- meterhub schema, version 11: alert dispatching (R-FLT-2). An alert reaches every recipient
-- the dispatch table names, as one row each: a recipient reads its own rows in order with a
-- cursor, acknowledges up to a sequence number, and may have them pushed to a webhook.
-- The hub raises its own alerts (quarantine, delivery failures) through the same table.

CREATE TABLE alerts_v11 (
    seq          INTEGER PRIMARY KEY,
    party        TEXT NOT NULL,            -- the recipient
    recipient_as TEXT NOT NULL,            -- why: registered-supplier, network-operator, ...
    device       TEXT,                     -- NULL for a hub alert about no device
    device_seq   INTEGER,                  -- the device's own number; NULL for hub alerts
    mpxn         TEXT,
    at           INTEGER NOT NULL,         -- when it was raised
    code         INTEGER NOT NULL,         -- GBCS alert code, or a hub alert's (below 0x8000)
    detail       TEXT NOT NULL,
    data         TEXT,                     -- JSON
    received_at  INTEGER NOT NULL,
    UNIQUE (device, device_seq, party)
) STRICT;
INSERT INTO alerts_v11 (seq, party, recipient_as, device, device_seq, mpxn, at, code, detail, data, received_at)
    SELECT seq, party, 'registered-supplier', device, device_seq, mpxn, at, code, detail, data, received_at FROM alerts;
DROP TABLE alerts;
ALTER TABLE alerts_v11 RENAME TO alerts;
CREATE INDEX alerts_by_party ON alerts(party, seq);
CREATE TRIGGER alerts_no_update BEFORE UPDATE ON alerts
BEGIN SELECT RAISE(ABORT, 'alerts are append-only'); END;
CREATE TRIGGER alerts_no_delete BEFORE DELETE ON alerts
BEGIN SELECT RAISE(ABORT, 'alerts are append-only'); END;

-- The dispatch table: which recipients each alert code goes to. '*' stands for every code
-- not listed; a code listed with 'none' goes to nobody (the hub filters it). Edited by the
-- hub operator; these rows are the defaults.
CREATE TABLE alert_routes (
    code      TEXT NOT NULL,
    recipient TEXT NOT NULL CHECK (recipient IN ('registered-supplier', 'network-operator', 'consent-holders',
                                                 'hub-operator', 'party-concerned', 'none')),
    PRIMARY KEY (code, recipient)
) STRICT;
INSERT INTO alert_routes (code, recipient) VALUES
    ('*', 'registered-supplier'),
    -- Supply outages and restorations: the network operator and the supplier.
    ('0x8F35', 'network-operator'), ('0x8F35', 'registered-supplier'),
    ('0x8F36', 'network-operator'), ('0x8F36', 'registered-supplier'),
    ('0x8F57', 'network-operator'), ('0x8F57', 'registered-supplier'),
    ('0x8F1D', 'network-operator'), ('0x8F1D', 'registered-supplier'),
    -- Voltage quality: the network operator's.
    ('0x8002', 'network-operator'), ('0x8006', 'network-operator'), ('0x8020', 'network-operator'),
    ('0x8028', 'network-operator'), ('0x8085', 'network-operator'), ('0x8089', 'network-operator'),
    -- Tamper and security: the supplier and the hub operator.
    ('0x8F3F', 'registered-supplier'), ('0x8F3F', 'hub-operator'),
    ('0x8F3D', 'registered-supplier'), ('0x8F3D', 'hub-operator'),
    ('0x8F3E', 'registered-supplier'), ('0x8F3E', 'hub-operator'),
    ('0x8F74', 'registered-supplier'), ('0x8F74', 'hub-operator'),
    ('0x8F75', 'registered-supplier'), ('0x8F75', 'hub-operator'),
    -- Low credit: also the energy services companies the consumer consented to.
    ('0x810D', 'registered-supplier'), ('0x810D', 'consent-holders'),
    -- The hub's own alerts.
    ('hub.quarantine', 'hub-operator'), ('hub.quarantine', 'party-concerned'),
    ('hub.delivery-failed', 'hub-operator'), ('hub.delivery-failed', 'party-concerned'),
    ('hub.command-failed', 'party-concerned'),
    ('hub.firmware-distribution-failed', 'hub-operator'), ('hub.firmware-distribution-failed', 'party-concerned'),
    ('hub.change-of-supplier', 'party-concerned');

-- How far each recipient has acknowledged its alerts (everything up to acked_seq).
CREATE TABLE alert_acks (
    party     TEXT PRIMARY KEY,
    acked_seq INTEGER NOT NULL,
    at        INTEGER NOT NULL
) STRICT;

-- A party's webhook: its unacknowledged alerts are pushed there in order, signed with the
-- secret; a batch failing every try is dead-lettered and the push moves on.
CREATE TABLE webhooks (
    party      TEXT PRIMARY KEY REFERENCES parties(id),
    url        TEXT NOT NULL,
    secret     TEXT NOT NULL,
    set_at     INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,     -- failed tries of the batch at the head
    next_at    INTEGER,                        -- no sooner than this (backoff)
    last_error TEXT
) STRICT;

CREATE TABLE alert_dead_letters (
    alert_seq INTEGER PRIMARY KEY REFERENCES alerts(seq),
    party     TEXT NOT NULL,
    at        INTEGER NOT NULL,
    attempts  INTEGER NOT NULL,
    reason    TEXT NOT NULL
) STRICT;
CREATE INDEX dead_letters_by_party ON alert_dead_letters(party, alert_seq);
