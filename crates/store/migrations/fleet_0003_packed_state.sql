-- The fleet, version 3: a system's state is kept as opaque bytes in `packed` (the fleet
-- writes a compact binary form, about a quarter of the JSON's size and several times faster
-- to read). Adding a column rewrites nothing, however large the fleet: a system saved
-- before keeps its JSON in `state` until it is next saved, and a row with `packed` set has
-- '' there.
ALTER TABLE systems ADD COLUMN packed BLOB;
