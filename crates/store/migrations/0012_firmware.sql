-- meterhub schema, version 12: firmware (R-FLT-3, R-FLT-4). Images as their manufacturer
-- uploaded them (signed manifest and bytes), and campaigns that distribute one image
-- (SRV 11.1) to a list of devices in waves, halting when a wave fails too often.

CREATE TABLE firmware_images (
    hash         TEXT PRIMARY KEY,          -- SHA-256 of the image, hex
    manufacturer TEXT NOT NULL REFERENCES parties(id),
    manifest     TEXT NOT NULL,             -- JSON, as signed
    signature    BLOB NOT NULL,             -- the manufacturer's ECDSA P-256 signature
    size         INTEGER NOT NULL,
    image        BLOB NOT NULL,
    uploaded_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE firmware_campaigns (
    seq              INTEGER PRIMARY KEY,
    party            TEXT NOT NULL REFERENCES parties(id),
    image_hash       TEXT NOT NULL REFERENCES firmware_images(hash),
    urgency          TEXT NOT NULL CHECK (urgency IN ('security', 'routine')),
    wave_size        INTEGER NOT NULL,
    failure_rate_max REAL NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('running', 'halted', 'completed', 'cancelled')),
    waves_sent       INTEGER NOT NULL DEFAULT 0,
    detail           TEXT,
    version          INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
) STRICT;
CREATE INDEX campaigns_running ON firmware_campaigns(state, urgency, seq);

-- Each device of a campaign: its wave once sent, its 11.1 request, and what came of it.
CREATE TABLE campaign_devices (
    campaign_seq INTEGER NOT NULL REFERENCES firmware_campaigns(seq),
    idx          INTEGER NOT NULL,
    device       TEXT NOT NULL,
    wave         INTEGER,
    request_id   TEXT,
    outcome      TEXT CHECK (outcome IN ('received', 'refused', 'failed')),
    detail       TEXT,
    PRIMARY KEY (campaign_seq, idx)
) STRICT;
