-- The fleet, version 2: when each system next has something to do on its own (a held change
-- taking effect, a prepayment account crossing a threshold), so the fleet can wake it then
-- rather than wait for a command. NULL: nothing to do until told.
ALTER TABLE systems ADD COLUMN wake_at INTEGER;
CREATE INDEX systems_by_wake ON systems(wake_at);
-- Systems saved before this version are woken once, to work out their own next time.
UPDATE systems SET wake_at = 0;
