-- meterhub schema, version 19: each hour's mark also holds the party's last response of that
-- hour (`last_seq`, the highest number), so a search by time ends where the period's
-- responses end.
--
-- A search for a party's reads over a period pages by number from the first mark of the
-- period's first hour (version 18). Times are not in number order, so it could not stop at
-- the first response after the period: a page that was not filled read on to the party's
-- last response. Fetching an old day's batch read every response the party had since.
-- Now the search reads only numbers from the lowest first mark to the highest last mark of
-- the period's hours, which hold every response in the period whatever order they were
-- written in.
--
-- The marks are made again from the responses stored, as version 18 made them.
CREATE TABLE response_marks_v19 (
    party     TEXT NOT NULL,
    hour      INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    PRIMARY KEY (party, hour),
    CHECK (first_seq <= last_seq)
) STRICT, WITHOUT ROWID;
INSERT INTO response_marks_v19 (party, hour, first_seq, last_seq)
    SELECT party, at / 3600000000, min(seq), max(seq) FROM responses GROUP BY party, at / 3600000000;
DROP TABLE response_marks;
ALTER TABLE response_marks_v19 RENAME TO response_marks;
