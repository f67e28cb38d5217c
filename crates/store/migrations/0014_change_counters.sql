-- meterhub schema, version 14: a counter that moves whenever the facts a service request is
-- planned from change (registrations, enrolments, devices), whoever writes them: this
-- process or another one on the same data directory (a local command). The store keeps
-- those facts in a bounded cache and drops it when the counter moves (BENCHMARKS.md).
CREATE TABLE change_counters (
    name TEXT PRIMARY KEY,
    v    INTEGER NOT NULL
) STRICT;
INSERT INTO change_counters (name, v) VALUES ('planning', 0);

-- Registrations and enrolments are append-only (0001): only inserts change them.
CREATE TRIGGER registrations_planning_changed AFTER INSERT ON registrations
BEGIN UPDATE change_counters SET v = v + 1 WHERE name = 'planning'; END;
CREATE TRIGGER enrolments_planning_changed AFTER INSERT ON enrolments
BEGIN UPDATE change_counters SET v = v + 1 WHERE name = 'planning'; END;
CREATE TRIGGER devices_planning_inserted AFTER INSERT ON devices
BEGIN UPDATE change_counters SET v = v + 1 WHERE name = 'planning'; END;
CREATE TRIGGER devices_planning_updated AFTER UPDATE ON devices
BEGIN UPDATE change_counters SET v = v + 1 WHERE name = 'planning'; END;
CREATE TRIGGER devices_planning_deleted AFTER DELETE ON devices
BEGIN UPDATE change_counters SET v = v + 1 WHERE name = 'planning'; END;
