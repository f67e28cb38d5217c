-- meterhub schema, version 6: where a supplier confirms top-ups (R-PAY-2). A supplier with
-- an endpoint is asked over HTTP before a top-up is issued; one without is judged by the
-- hub's stored rules.
CREATE TABLE payment_endpoints (
    party      TEXT PRIMARY KEY REFERENCES parties(id),
    url        TEXT NOT NULL,
    timeout_ms INTEGER NOT NULL CHECK (timeout_ms BETWEEN 100 AND 30000),
    set_at     INTEGER NOT NULL
) STRICT;
