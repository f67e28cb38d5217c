-- meterhub schema, version 9: commands the hub must get to a device on a party's behalf.
-- A change of tenancy's SRV 3.2 today: each is retried with backoff until the device
-- answers, and given up after a bounded number of tries, its party told either way.
CREATE TABLE deliveries (
    seq         INTEGER PRIMARY KEY,
    purpose     TEXT NOT NULL,             -- what it serves: 'tenancy'
    subject     INTEGER NOT NULL,          -- the seq of what it serves (the tenancy)
    party       TEXT NOT NULL,             -- on whose behalf
    srv         TEXT NOT NULL,
    target      TEXT NOT NULL,             -- device EUI-64
    mpxn        TEXT NOT NULL,
    body        TEXT NOT NULL,             -- canonical JSON, the same every try
    run_at      INTEGER NOT NULL,          -- when the command first runs
    request_id  TEXT NOT NULL,             -- the current try
    attempts    INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'refused', 'failed')),
    detail      TEXT,
    due_at      INTEGER,                   -- when the hub looks again; NULL once settled
    version     INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX deliveries_due ON deliveries(due_at) WHERE due_at IS NOT NULL;
CREATE INDEX deliveries_by_subject ON deliveries(purpose, subject);
