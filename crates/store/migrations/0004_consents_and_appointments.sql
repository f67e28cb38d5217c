-- meterhub schema, version 4: other users' consumer consent and agents' appointments, per
-- metering point and period. A row is written once; its end can be set once (never moved
-- later, never cleared), with who ended it and why: the table is its own audit trail.

CREATE TABLE consents (
    seq         INTEGER PRIMARY KEY,
    mpxn        TEXT NOT NULL REFERENCES metering_points(mpxn),
    party       TEXT NOT NULL,            -- the other user holding the consumer's consent
    valid_from  INTEGER NOT NULL,
    valid_to    INTEGER,                  -- exclusive; NULL while open-ended
    recorded_at INTEGER NOT NULL,
    recorded_by TEXT NOT NULL,
    ended_at    INTEGER,
    ended_by    TEXT,
    end_reason  TEXT
) STRICT;
CREATE INDEX consents_by_mpxn ON consents(mpxn, valid_from);

CREATE TABLE appointments (
    seq         INTEGER PRIMARY KEY,
    mpxn        TEXT NOT NULL REFERENCES metering_points(mpxn),
    agent       TEXT NOT NULL,
    appointer   TEXT NOT NULL,            -- the supplier the agent acts for
    valid_from  INTEGER NOT NULL,
    valid_to    INTEGER,
    recorded_at INTEGER NOT NULL,
    recorded_by TEXT NOT NULL,
    ended_at    INTEGER,
    ended_by    TEXT,
    end_reason  TEXT
) STRICT;
CREATE INDEX appointments_by_mpxn ON appointments(mpxn, valid_from);

CREATE TRIGGER consents_no_delete BEFORE DELETE ON consents
BEGIN SELECT RAISE(ABORT, 'consents are kept for audit'); END;
CREATE TRIGGER consents_end_once BEFORE UPDATE ON consents
WHEN OLD.ended_at IS NOT NULL OR NEW.mpxn IS NOT OLD.mpxn OR NEW.party IS NOT OLD.party
  OR NEW.valid_from IS NOT OLD.valid_from OR NEW.recorded_at IS NOT OLD.recorded_at
  OR NEW.recorded_by IS NOT OLD.recorded_by OR NEW.ended_at IS NULL
  OR (OLD.valid_to IS NOT NULL AND (NEW.valid_to IS NULL OR NEW.valid_to > OLD.valid_to))
BEGIN SELECT RAISE(ABORT, 'a consent is only ever ended, once, and never extended'); END;
CREATE TRIGGER appointments_no_delete BEFORE DELETE ON appointments
BEGIN SELECT RAISE(ABORT, 'appointments are kept for audit'); END;
CREATE TRIGGER appointments_end_once BEFORE UPDATE ON appointments
WHEN OLD.ended_at IS NOT NULL OR NEW.mpxn IS NOT OLD.mpxn OR NEW.agent IS NOT OLD.agent
  OR NEW.appointer IS NOT OLD.appointer OR NEW.valid_from IS NOT OLD.valid_from
  OR NEW.recorded_at IS NOT OLD.recorded_at OR NEW.recorded_by IS NOT OLD.recorded_by OR NEW.ended_at IS NULL
  OR (OLD.valid_to IS NOT NULL AND (NEW.valid_to IS NULL OR NEW.valid_to > OLD.valid_to))
BEGIN SELECT RAISE(ABORT, 'an appointment is only ever ended, once, and never extended'); END;
