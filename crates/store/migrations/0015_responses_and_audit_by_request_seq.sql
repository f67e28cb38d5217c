-- meterhub schema, version 15: responses and the audit log find their request by its number
-- (`request_seq`, the request's row id) instead of its 50-character text id. Request numbers
-- only grow, so each new index entry goes at the end of its index; a text id is random
-- (originator:target:counter), and each new entry dirtied a different page of three
-- indexes, which every commit then wrote to the WAL (about a third of the store's time
-- under load; BENCHMARKS.md). The text id stays in each row, so a row still reads on its
-- own; the request table's unique index on it still finds a request by id.
-- Rebuilt tables lose their indexes and triggers: every one they had is made again below
-- (the schema test compares the lists before and after).

CREATE TABLE responses_v15 (
    seq         INTEGER PRIMARY KEY,
    request_seq INTEGER NOT NULL UNIQUE REFERENCES requests(seq),
    request_id  TEXT NOT NULL,
    party       TEXT NOT NULL,
    at          INTEGER NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('done', 'device-refused', 'failed')),
    body        TEXT NOT NULL
) STRICT;
-- A LEFT JOIN: a response without its request (which the old foreign key forbade) fails
-- the NOT NULL above and so the migration, rather than being dropped.
INSERT INTO responses_v15 (seq, request_seq, request_id, party, at, outcome, body)
    SELECT s.seq, q.seq, s.request_id, s.party, s.at, s.outcome, s.body
    FROM responses s LEFT JOIN requests q ON q.id = s.request_id ORDER BY s.seq;
DROP TABLE responses;
ALTER TABLE responses_v15 RENAME TO responses;
CREATE INDEX responses_by_party ON responses(party, seq);
CREATE INDEX responses_by_party_at ON responses(party, at);

CREATE TABLE audit_v15 (
    seq         INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    request_seq INTEGER NOT NULL REFERENCES requests(seq),
    request_id  TEXT NOT NULL,
    party       TEXT NOT NULL,
    event       TEXT NOT NULL,
    detail      TEXT NOT NULL
) STRICT;
INSERT INTO audit_v15 (seq, at, request_seq, request_id, party, event, detail)
    SELECT a.seq, a.at, q.seq, a.request_id, a.party, a.event, a.detail
    FROM audit a LEFT JOIN requests q ON q.id = a.request_id ORDER BY a.seq;
DROP TABLE audit;
ALTER TABLE audit_v15 RENAME TO audit;
CREATE INDEX audit_by_request ON audit(request_seq, seq);

CREATE TRIGGER responses_no_update BEFORE UPDATE ON responses
BEGIN SELECT RAISE(ABORT, 'responses are append-only'); END;
CREATE TRIGGER responses_no_delete BEFORE DELETE ON responses
BEGIN SELECT RAISE(ABORT, 'responses are append-only'); END;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
