-- Where each party's responses of each hour begin: the first response (lowest number) of a
-- party whose time falls in an hour (`at`, microseconds since the epoch, divided by
-- 3,600,000,000 toward zero). A search by time (a party's reads over a period) starts at
-- the first mark of the period's first hour, then pages by number and filters by time.
-- This replaces the index of responses by party and time, which cost every response an
-- insert into a large index; a response now costs a lookup in this small table (and an
-- insert, once an hour per party).
CREATE TABLE response_marks (
    party     TEXT NOT NULL,
    hour      INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    PRIMARY KEY (party, hour)
) STRICT, WITHOUT ROWID;
INSERT INTO response_marks (party, hour, first_seq)
    SELECT party, at / 3600000000, min(seq) FROM responses GROUP BY party, at / 3600000000;
DROP INDEX responses_by_party_at;
