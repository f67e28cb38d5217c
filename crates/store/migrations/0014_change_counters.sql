-- meterhub schema, version 14: a counter that moves whenever the facts a service request is
-- planned from change (registrations, enrolments, devices), whoever writes them: this
-- process or another meterhub process on the same data directory (a local command). Each
-- process's writer sees its own changes to those tables (SQLite's update hook) and moves the
-- counter once in the transaction that made them; the store keeps those facts in a bounded
-- cache and drops it when the counter moves (BENCHMARKS.md). Triggers would move it once per
-- row, and cost bulk loads half their speed.
CREATE TABLE change_counters (
    name TEXT PRIMARY KEY,
    v    INTEGER NOT NULL
) STRICT;
INSERT INTO change_counters (name, v) VALUES ('planning', 0);
