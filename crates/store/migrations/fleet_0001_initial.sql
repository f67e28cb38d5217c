-- The simulated fleet's own state: one row per smart metering system (the devices at one
-- premises), its state as JSON, and an index from every device to its system.
CREATE TABLE systems (
    id        INTEGER PRIMARY KEY,
    comms_hub TEXT NOT NULL UNIQUE,
    state     TEXT NOT NULL
) STRICT;

CREATE TABLE device_index (
    eui       TEXT PRIMARY KEY,
    system_id INTEGER NOT NULL REFERENCES systems(id)
) STRICT, WITHOUT ROWID;

CREATE TABLE fleet_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
