-- meterhub schema, version 5: prepayment. The hub issues UTRNs for suppliers (R-PAY-3): it
-- keeps each supplier's prepayment key-agreement key, a strictly increasing UTRN counter per
-- (supplier, meter), and every top-up once per payment reference (R-PAY-2).

CREATE TABLE prepayment_keys (
    party        TEXT PRIMARY KEY REFERENCES parties(id),
    private_key  BLOB NOT NULL,           -- PKCS#8 DER; never leaves the hub
    public_point BLOB NOT NULL,           -- uncompressed P-256 point, given to meters
    created_at   INTEGER NOT NULL
) STRICT;

CREATE TABLE utrn_counters (
    supplier TEXT NOT NULL,
    meter    TEXT NOT NULL,
    last     INTEGER NOT NULL,            -- the last counter issued, in units of 2^32
    PRIMARY KEY (supplier, meter)
) STRICT, WITHOUT ROWID;

CREATE TABLE top_ups (
    seq               INTEGER PRIMARY KEY,
    psp               TEXT NOT NULL,
    payment_reference TEXT NOT NULL,
    customer_id       TEXT NOT NULL,
    mpxn              TEXT NOT NULL,
    supplier          TEXT NOT NULL,
    meter             TEXT NOT NULL,
    amount_pence      INTEGER NOT NULL CHECK (amount_pence > 0),
    counter           INTEGER NOT NULL,
    utrn              TEXT NOT NULL UNIQUE,
    request_id        TEXT NOT NULL REFERENCES requests(id),
    at                INTEGER NOT NULL,
    UNIQUE (psp, payment_reference)
) STRICT;

CREATE TRIGGER top_ups_no_update BEFORE UPDATE ON top_ups
BEGIN SELECT RAISE(ABORT, 'top-ups are append-only'); END;
CREATE TRIGGER top_ups_no_delete BEFORE DELETE ON top_ups
BEGIN SELECT RAISE(ABORT, 'top-ups are append-only'); END;
