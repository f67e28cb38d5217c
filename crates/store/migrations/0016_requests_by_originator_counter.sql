-- meterhub schema, version 16: a request is found by its originator and counter instead of
-- by a unique index on its text id.
--
-- A request id is originatorEUI:targetEUI:counter, and the hub numbers each originator's
-- requests itself (`originator_counters`), so (originator, counter) is unique and names the
-- request. The text id sorts by target device, so each new request's entry landed on a
-- random page of the id index, and every commit wrote one such page to the WAL per request:
-- the last random index of the pipeline's write path (version 15 removed the others). Each
-- originator's counter only grows, so a new (originator, counter) entry goes at the end of
-- its originator's run. Lookups by text id parse it and match all three (originator,
-- counter and the whole id).
--
-- The tables that referred to requests(id) (forwarded reads, top-ups) need a unique parent
-- key, so they are rebuilt to refer to the request's number, as responses and the audit log
-- already do; they keep the text id. Responses are rebuilt too: their outcome check was an
-- IN list, which SQLite evaluates through a temporary table built for every row written; it
-- is three comparisons now.
--
-- The index of requests by party is kept for quarantined requests only: listing a party's
-- quarantine is what it served, and every request paid to keep it.
--
-- Rebuilt tables lose their indexes and triggers: every one they had is made again below,
-- the party index as said (the schema test compares the lists before and after). Migrations run with foreign keys
-- off and check them all before committing (SQLite's documented way to rebuild a parent
-- table).

CREATE TABLE requests_v16 (
    seq           INTEGER PRIMARY KEY,
    id            TEXT NOT NULL,           -- originatorEUI:targetEUI:counter
    party         TEXT NOT NULL,
    srv           TEXT NOT NULL,
    target        TEXT NOT NULL,           -- device EUI-64
    mpxn          TEXT,
    body          TEXT NOT NULL,           -- canonical JSON
    precommand    BLOB NOT NULL,           -- the exact bytes the device receives (and a signer signs)
    signature     BLOB,
    submitted_at  INTEGER NOT NULL,
    execute_at    INTEGER,
    status        TEXT NOT NULL,
    status_at     INTEGER NOT NULL,
    note          TEXT,
    schedule_id   TEXT,
    id_originator TEXT NOT NULL,           -- the id up to its first colon
    id_counter    INTEGER NOT NULL,        -- the id after its second colon
    UNIQUE (id_originator, id_counter)
) STRICT;
INSERT INTO requests_v16 (seq, id, party, srv, target, mpxn, body, precommand, signature, submitted_at, execute_at,
                          status, status_at, note, schedule_id, id_originator, id_counter)
    SELECT seq, id, party, srv, target, mpxn, body, precommand, signature, submitted_at, execute_at,
           status, status_at, note, schedule_id,
           substr(id, 1, instr(id, ':') - 1),
           CAST(substr(substr(id, instr(id, ':') + 1), instr(substr(id, instr(id, ':') + 1), ':') + 1) AS INTEGER)
    FROM requests ORDER BY seq;

-- A LEFT JOIN: a row whose request is missing fails the NOT NULL and so the migration,
-- rather than being dropped.
CREATE TABLE read_forwards_v16 (
    seq         INTEGER PRIMARY KEY,
    request_seq INTEGER NOT NULL REFERENCES requests(seq),
    request_id  TEXT NOT NULL,
    from_party  TEXT NOT NULL,
    to_party    TEXT NOT NULL,
    at          INTEGER NOT NULL,
    UNIQUE (request_seq, to_party)
) STRICT;
INSERT INTO read_forwards_v16 (seq, request_seq, request_id, from_party, to_party, at)
    SELECT f.seq, q.seq, f.request_id, f.from_party, f.to_party, f.at
    FROM read_forwards f LEFT JOIN requests q ON q.id = f.request_id ORDER BY f.seq;

CREATE TABLE top_ups_v16 (
    seq               INTEGER PRIMARY KEY,
    psp               TEXT NOT NULL,
    payment_reference TEXT NOT NULL,
    customer_id       TEXT NOT NULL,
    mpxn              TEXT NOT NULL,
    supplier          TEXT NOT NULL,
    meter             TEXT NOT NULL,
    amount_pence      INTEGER NOT NULL CHECK (amount_pence > 0),
    counter           INTEGER NOT NULL,
    utrn              TEXT NOT NULL UNIQUE,
    request_seq       INTEGER NOT NULL REFERENCES requests(seq),
    request_id        TEXT NOT NULL,
    at                INTEGER NOT NULL,
    UNIQUE (psp, payment_reference)
) STRICT;
INSERT INTO top_ups_v16 (seq, psp, payment_reference, customer_id, mpxn, supplier, meter, amount_pence, counter, utrn,
                         request_seq, request_id, at)
    SELECT t.seq, t.psp, t.payment_reference, t.customer_id, t.mpxn, t.supplier, t.meter, t.amount_pence, t.counter,
           t.utrn, q.seq, t.request_id, t.at
    FROM top_ups t LEFT JOIN requests q ON q.id = t.request_id ORDER BY t.seq;

CREATE TABLE responses_v16 (
    seq         INTEGER PRIMARY KEY,
    request_seq INTEGER NOT NULL UNIQUE REFERENCES requests(seq),
    request_id  TEXT NOT NULL,
    party       TEXT NOT NULL,
    at          INTEGER NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome = 'done' OR outcome = 'device-refused' OR outcome = 'failed'),
    body        TEXT NOT NULL
) STRICT;
INSERT INTO responses_v16 (seq, request_seq, request_id, party, at, outcome, body)
    SELECT seq, request_seq, request_id, party, at, outcome, body FROM responses ORDER BY seq;

DROP TABLE read_forwards;
DROP TABLE top_ups;
DROP TABLE responses;
DROP TABLE requests;
ALTER TABLE requests_v16 RENAME TO requests;
ALTER TABLE read_forwards_v16 RENAME TO read_forwards;
ALTER TABLE top_ups_v16 RENAME TO top_ups;
ALTER TABLE responses_v16 RENAME TO responses;

CREATE INDEX requests_by_status ON requests(status, execute_at);
-- Only quarantined requests are listed by party (for the party to release or delete); an
-- index of every request by party was written for each one and read for none of the rest.
CREATE INDEX requests_quarantined_by_party ON requests(party, seq) WHERE status = 'quarantined';
CREATE INDEX read_forwards_by_recipient ON read_forwards(to_party, seq);
CREATE INDEX responses_by_party ON responses(party, seq);
CREATE INDEX responses_by_party_at ON responses(party, at);

CREATE TRIGGER read_forwards_no_update BEFORE UPDATE ON read_forwards
BEGIN SELECT RAISE(ABORT, 'forwarded reads are append-only'); END;
CREATE TRIGGER read_forwards_no_delete BEFORE DELETE ON read_forwards
BEGIN SELECT RAISE(ABORT, 'forwarded reads are append-only'); END;
CREATE TRIGGER top_ups_no_update BEFORE UPDATE ON top_ups
BEGIN SELECT RAISE(ABORT, 'top-ups are append-only'); END;
CREATE TRIGGER top_ups_no_delete BEFORE DELETE ON top_ups
BEGIN SELECT RAISE(ABORT, 'top-ups are append-only'); END;
CREATE TRIGGER responses_no_update BEFORE UPDATE ON responses
BEGIN SELECT RAISE(ABORT, 'responses are append-only'); END;
CREATE TRIGGER responses_no_delete BEFORE DELETE ON responses
BEGIN SELECT RAISE(ABORT, 'responses are append-only'); END;
