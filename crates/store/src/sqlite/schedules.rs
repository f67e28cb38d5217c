//! SQL for schedules (SRV 5.1/5.2/5.3) and reads distribution (R-RD-1, R-RD-2).

use domain::PartyId;
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::engine::backend;
use super::pipeline::{RawResponse, audit, eui, insert_request, into_response};
use super::{classify, micros, mpxn, party_id, ts};
use crate::{Every, ForwardRecord, ReadRecord, RequestRecord, SCHEDULES_PER_TARGET_MAX, ScheduleRecord, StoreError};

const SCHEDULE_COLS: &str =
    "id, party, srv, target, mpxn, every, first_run, end_at, next_run, runs, created_at, deleted_at";

type RawSchedule =
    (String, String, String, String, Option<String>, String, i64, Option<i64>, Option<i64>, i64, i64, Option<i64>);

fn raw_schedule(r: &Row<'_>) -> rusqlite::Result<RawSchedule> {
    r.try_into()
}

fn into_schedule(r: RawSchedule) -> Result<ScheduleRecord, StoreError> {
    let (id, party, srv, target, m, every, first_run, end, next_run, runs, created_at, deleted_at) = r;
    Ok(ScheduleRecord {
        id,
        party: party_id(party)?,
        srv,
        target: eui(&target)?,
        mpxn: m.as_deref().map(mpxn).transpose()?,
        every: Every::parse(&every)
            .ok_or_else(|| StoreError::Backend(format!("stored schedule period {every:?} is unknown")))?,
        first_run: ts(first_run)?,
        end: end.map(ts).transpose()?,
        next_run: next_run.map(ts).transpose()?,
        runs,
        created_at: ts(created_at)?,
        deleted_at: deleted_at.map(ts).transpose()?,
    })
}

fn query_schedules(
    conn: &Connection,
    sql_where: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<ScheduleRecord>, StoreError> {
    let mut s = conn.prepare_cached(&format!("SELECT {SCHEDULE_COLS} FROM schedules {sql_where}")).map_err(backend)?;
    let rows = s.query_map(params, raw_schedule).map_err(backend)?;
    rows.map(|r| r.map_err(backend).and_then(into_schedule)).collect()
}

pub(super) fn schedule(conn: &Connection, id: &str) -> Result<Option<ScheduleRecord>, StoreError> {
    Ok(query_schedules(conn, "WHERE id = ?1", [id])?.pop())
}

pub(super) fn schedules(
    conn: &Connection,
    party: &PartyId,
    target: Option<domain::Eui64>,
) -> Result<Vec<ScheduleRecord>, StoreError> {
    let mut out = match target {
        Some(t) => query_schedules(
            conn,
            "WHERE party = ?1 AND target = ?2 AND deleted_at IS NULL",
            params![party.as_str(), t.to_plain()],
        )?,
        None => query_schedules(conn, "WHERE party = ?1 AND deleted_at IS NULL", [party.as_str()])?,
    };
    out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(out)
}

pub(super) fn due_schedules(
    conn: &Connection,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<ScheduleRecord>, StoreError> {
    query_schedules(
        conn,
        &format!(
            "WHERE next_run IS NOT NULL AND next_run <= ?1 AND deleted_at IS NULL ORDER BY next_run LIMIT {limit}"
        ),
        [micros(now)],
    )
}

/// Applied as the effect of a 5.1 response.
pub(super) fn insert_schedule(conn: &Connection, s: &ScheduleRecord) -> Result<(), StoreError> {
    let live: i64 = conn
        .prepare_cached("SELECT count(*) FROM schedules WHERE party = ?1 AND target = ?2 AND deleted_at IS NULL")
        .and_then(|mut st| st.query_row(params![s.party.as_str(), s.target.to_plain()], |r| r.get(0)))
        .map_err(backend)?;
    if live >= SCHEDULES_PER_TARGET_MAX {
        return Err(StoreError::Conflict(format!(
            "party {} already has {live} live schedules on device {} (at most {SCHEDULES_PER_TARGET_MAX}); \
             delete one first (SRV 5.3)",
            s.party, s.target
        )));
    }
    conn.prepare_cached(&format!(
        "INSERT INTO schedules ({SCHEDULE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
    ))
    .and_then(|mut st| {
        st.execute(params![
            s.id,
            s.party.as_str(),
            s.srv,
            s.target.to_plain(),
            s.mpxn.map(|m| m.to_string()),
            s.every.as_str(),
            micros(s.first_run),
            s.end.map(micros),
            s.next_run.map(micros),
            s.runs,
            micros(s.created_at),
            s.deleted_at.map(micros),
        ])
    })
    .map_err(|e| match classify(e) {
        StoreError::Conflict(_) => StoreError::Conflict(format!("schedule {} already exists", s.id)),
        other => other,
    })?;
    Ok(())
}

/// Applied as the effect of a 5.3 response.
pub(super) fn delete_schedule(conn: &Connection, id: &str, party: &PartyId, at: Timestamp) -> Result<(), StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE schedules SET deleted_at = ?1, next_run = NULL WHERE id = ?2 AND party = ?3 AND deleted_at IS NULL",
        )
        .and_then(|mut s| s.execute(params![micros(at), id, party.as_str()]))
        .map_err(backend)?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("party {party} has no live schedule {id}")));
    }
    Ok(())
}

pub(super) fn record_hub_request(
    conn: &Connection,
    r: &RequestRecord,
    c: &crate::Completion,
) -> Result<i64, StoreError> {
    let seq = insert_request(conn, r)?;
    // Just inserted: no need to look it up again.
    super::pipeline::record_completion(conn, c, seq)?;
    Ok(seq)
}

pub(super) fn record_schedule_run(
    conn: &Connection,
    schedule_id: &str,
    run_at: Timestamp,
    request: &RequestRecord,
    next: Option<Timestamp>,
) -> Result<i64, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE schedules SET next_run = ?1, runs = runs + 1 \
             WHERE id = ?2 AND next_run = ?3 AND deleted_at IS NULL",
        )
        .and_then(|mut s| s.execute(params![next.map(micros), schedule_id, micros(run_at)]))
        .map_err(backend)?;
    if n == 0 {
        return Err(StoreError::Conflict(format!("schedule {schedule_id} has no run due at {run_at}")));
    }
    let seq = insert_request(conn, request)?;
    audit(conn, request.submitted_at, (seq, &request.id), &request.party, "scheduled", schedule_id)?;
    Ok(seq)
}

const READ_COLS: &str = "s.seq, s.request_id, s.party, s.at, s.outcome, s.body, q.srv, q.target, q.mpxn, q.schedule_id";

/// A party's reads over a period (`?3` to `?4`), by number after `?2` and up to `?5`.
pub(super) fn reads_between_sql() -> String {
    format!(
        "SELECT {READ_COLS} FROM responses s JOIN requests q ON q.seq = s.request_seq \
         WHERE s.party = ?1 AND s.seq > ?2 AND s.seq <= ?5 AND s.at >= ?3 AND s.at < ?4 ORDER BY s.seq"
    )
}

fn raw_read(r: &Row<'_>) -> rusqlite::Result<(RawResponse, String, String, Option<String>, Option<String>)> {
    Ok(((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?), r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?))
}

fn into_read(
    (resp, srv, target, m, schedule_id): (RawResponse, String, String, Option<String>, Option<String>),
) -> Result<ReadRecord, StoreError> {
    Ok(ReadRecord {
        response: into_response(resp)?,
        srv,
        target: eui(&target)?,
        mpxn: m.as_deref().map(mpxn).transpose()?,
        schedule_id,
    })
}

pub(super) fn reads_between(
    conn: &Connection,
    party: &PartyId,
    srvs: &[&str],
    from: Timestamp,
    to: Timestamp,
    after: i64,
    limit: usize,
) -> Result<Vec<ReadRecord>, StoreError> {
    // Every response in the period is in one of its hours (up to the hour of its last
    // microsecond), so its number lies between the lowest first mark and the highest last
    // mark of those hours, whatever order the responses were written in. Page by number
    // between them, filtering by time.
    if to <= from {
        return Ok(Vec::new());
    }
    let (first_hour, last_hour) =
        (super::pipeline::response_hour(micros(from)), super::pipeline::response_hour(micros(to) - 1));
    let bounds: (Option<i64>, Option<i64>) = conn
        .prepare_cached(
            "SELECT min(first_seq), max(last_seq) FROM response_marks WHERE party = ?1 AND hour >= ?2 AND hour <= ?3",
        )
        .and_then(|mut s| s.query_row(params![party.as_str(), first_hour, last_hour], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(backend)?;
    let (Some(first), Some(last)) = bounds else { return Ok(Vec::new()) };
    let after = after.max(first - 1);
    let mut s = conn.prepare_cached(&reads_between_sql()).map_err(backend)?;
    let rows =
        s.query_map(params![party.as_str(), after, micros(from), micros(to), last], raw_read).map_err(backend)?;
    let mut out = Vec::new();
    for row in rows {
        let read = into_read(row.map_err(backend)?)?;
        if srvs.contains(&read.srv.as_str()) {
            out.push(read);
            if out.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}

pub(super) fn read(conn: &Connection, request_id: &str) -> Result<Option<ReadRecord>, StoreError> {
    let Some((originator, counter)) = super::pipeline::id_key(request_id) else { return Ok(None) };
    conn.prepare_cached(&format!(
        "SELECT {READ_COLS} FROM requests q JOIN responses s ON s.request_seq = q.seq WHERE {}",
        super::pipeline::BY_ID
    ))
    .and_then(|mut s| s.query_row(params![originator, counter, request_id], raw_read).optional())
    .map_err(backend)?
    .map(into_read)
    .transpose()
}

const FORWARD_COLS: &str = "f.seq, f.request_id, f.from_party, f.to_party, f.at";

fn raw_forward(r: &Row<'_>) -> rusqlite::Result<(i64, String, String, String, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn into_forward(
    (seq, request_id, from, to, at): (i64, String, String, String, i64),
) -> Result<ForwardRecord, StoreError> {
    Ok(ForwardRecord { seq, request_id, from: party_id(from)?, to: party_id(to)?, at: ts(at)? })
}

pub(super) fn forward_read(
    conn: &Connection,
    request_id: &str,
    from: &PartyId,
    to: &PartyId,
    at: Timestamp,
) -> Result<ForwardRecord, StoreError> {
    let request_seq = super::pipeline::request_seq(conn, request_id)?
        .ok_or_else(|| StoreError::NotFound(format!("request {request_id}")))?;
    conn.prepare_cached(
        "INSERT INTO read_forwards (request_seq, request_id, from_party, to_party, at) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (request_seq, to_party) DO NOTHING",
    )
    .and_then(|mut s| s.execute(params![request_seq, request_id, from.as_str(), to.as_str(), micros(at)]))
    .map_err(classify)?;
    conn.prepare_cached(&format!(
        "SELECT {FORWARD_COLS} FROM read_forwards f WHERE f.request_seq = ?1 AND f.to_party = ?2"
    ))
    .and_then(|mut s| s.query_row(params![request_seq, to.as_str()], raw_forward))
    .map_err(backend)
    .and_then(into_forward)
}

pub(super) fn forwarded_reads(
    conn: &Connection,
    to: &PartyId,
    after: i64,
    limit: usize,
) -> Result<Vec<(ForwardRecord, ReadRecord)>, StoreError> {
    let mut s = conn
        .prepare_cached(&format!(
            "SELECT {FORWARD_COLS}, {READ_COLS} FROM read_forwards f \
             JOIN requests q ON q.seq = f.request_seq JOIN responses s ON s.request_seq = q.seq \
             WHERE f.to_party = ?1 AND f.seq > ?2 ORDER BY f.seq LIMIT {limit}"
        ))
        .map_err(backend)?;
    let rows = s
        .query_map(params![to.as_str(), after], |r| {
            let f = raw_forward(r)?;
            let read = (
                (r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?),
                r.get(11)?,
                r.get(12)?,
                r.get(13)?,
                r.get(14)?,
            );
            Ok((f, read))
        })
        .map_err(backend)?;
    rows.map(|r| {
        let (f, read) = r.map_err(backend)?;
        Ok((into_forward(f)?, into_read(read)?))
    })
    .collect()
}
