-- meterhub schema, version 10: the hub's view of each premises' HAN (R-COT-2, R-FLT-5).
-- on_han: on the comms hub's HAN device log (SRV 8.11); joined_to: JSON list of the meters a
-- device is joined to (SRV 8.7). Installation puts every device on the log and joins the
-- displays, PPMID and additional devices to every meter, as existing premises were set up.
ALTER TABLE devices ADD COLUMN on_han INTEGER NOT NULL DEFAULT 1;
ALTER TABLE devices ADD COLUMN joined_to TEXT NOT NULL DEFAULT '[]';
UPDATE devices SET joined_to = (
    SELECT json_group_array(m.eui) FROM devices m
    WHERE m.premises_id = devices.premises_id AND m.kind IN ('electricity-meter', 'gas-meter')
) WHERE kind IN ('in-home-display', 'ppmid', 'additional');
