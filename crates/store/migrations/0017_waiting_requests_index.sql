-- meterhub schema, version 17: the status index holds only requests that wait.
--
-- Requests wait in three statuses (queued, awaiting-signature, quarantined) and end in
-- three (completed, cancelled, deleted). The index of requests by status served the
-- dispatcher's search for due queued requests and a party's listing of its waiting
-- requests, yet held every request ever made: each completion moved its entry from
-- `queued` to `completed`, one deletion and one insertion, and the index grew with the
-- history. Now it holds waiting requests only: a completion deletes the entry and adds
-- none, and the index stays as small as the queue (a few pages, always in memory).
--
-- The condition is written with OR, not IN: SQLite uses a partial index only for a query
-- whose terms imply its condition, and it sees that `status = 'queued'` implies an OR that
-- has it as one side; it does not see into an IN list. A query for an ending status finds
-- no index and scans (nothing in the hub asks for one).

DROP INDEX requests_by_status;
CREATE INDEX requests_waiting ON requests(status, execute_at)
    WHERE status = 'queued' OR status = 'awaiting-signature' OR status = 'quarantined';
