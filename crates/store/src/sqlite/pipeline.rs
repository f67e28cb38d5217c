//! SQL for the inventory and the request pipeline.

use domain::{Eui64, Mpxn, PartyId};
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::engine::backend;
use super::{classify, micros, mpxn, party_id, ts};
use crate::{
    AuditRecord, Completion, DeviceRecord, DueRequests, Effect, EnrolledHome, NewPremises, PremisesRecord,
    RequestRecord, RequestStatus, ResponseOutcome, ResponseRecord, StoreError, ThresholdRecord,
};

pub(super) fn eui(s: &str) -> Result<Eui64, StoreError> {
    Eui64::parse(s).map_err(|e| StoreError::Backend(format!("stored EUI-64 is unreadable: {e}")))
}

pub(super) const DEVICE_COLS: &str =
    "eui, premises_id, kind, installed_at, commissioned_at, mpxn, trusted_supplier, on_han, joined_to";

type RawDevice = (String, i64, String, i64, Option<i64>, Option<String>, Option<String>, bool, String);

pub(super) fn raw_device(r: &Row<'_>) -> rusqlite::Result<RawDevice> {
    r.try_into()
}

fn eui_list(text: &str) -> Result<Vec<Eui64>, StoreError> {
    let list: Vec<String> = serde_json::from_str(text)
        .map_err(|e| StoreError::Backend(format!("stored list of EUI-64s is unreadable: {e}")))?;
    list.iter().map(|e| eui(e)).collect()
}

fn eui_list_text(list: &[Eui64]) -> String {
    serde_json::to_string(&list.iter().map(|e| e.to_plain()).collect::<Vec<_>>()).expect("strings serialise")
}

pub(super) fn into_device(
    (e, premises_id, kind, installed, commissioned, m, trusted, on_han, joined): RawDevice,
) -> Result<DeviceRecord, StoreError> {
    Ok(DeviceRecord {
        eui: eui(&e)?,
        premises_id,
        kind,
        installed_at: ts(installed)?,
        commissioned_at: commissioned.map(ts).transpose()?,
        mpxn: m.as_deref().map(mpxn).transpose()?,
        trusted_supplier: trusted.map(party_id).transpose()?,
        on_han,
        joined_to: eui_list(&joined)?,
    })
}

/// Join a premises' displays, PPMID and additional devices to every one of its meters, as
/// the installer does.
fn join_as_installed(conn: &Connection, premises_id: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE devices SET joined_to = (SELECT json_group_array(m.eui) FROM devices m \
         WHERE m.premises_id = devices.premises_id AND m.kind IN ('electricity-meter', 'gas-meter')) \
         WHERE premises_id = ?1 AND kind IN ('in-home-display', 'ppmid', 'additional')",
    )
    .and_then(|mut s| s.execute([premises_id]))
    .map_err(backend)?;
    Ok(())
}

/// A device fitted at a premises after installation: on no HAN yet.
pub(super) fn add_device(
    conn: &Connection,
    premises_id: i64,
    e: Eui64,
    kind: &str,
    at: Timestamp,
) -> Result<DeviceRecord, StoreError> {
    conn.prepare_cached(&format!(
        "INSERT INTO devices ({DEVICE_COLS}) VALUES (?1, ?2, ?3, ?4, ?4, NULL, NULL, 0, '[]')"
    ))
    .and_then(|mut s| s.execute(params![e.to_plain(), premises_id, kind, micros(at)]))
    .map_err(|err| match classify(err) {
        StoreError::Conflict(_) => StoreError::Conflict(format!("device {e} is already installed")),
        other => other,
    })?;
    device(conn, e)?.ok_or_else(|| StoreError::NotFound(format!("device {e}")))
}

/// The premises' HAN as the devices said after 8.11 or 8.7/8.8.
fn apply_han(conn: &Connection, h: &crate::HanChange) -> Result<(), StoreError> {
    if let Some(log) = &h.han_log {
        let mut s = conn
            .prepare_cached(
                "UPDATE devices SET on_han = (kind = 'comms-hub' OR eui IN (SELECT value FROM json_each(?1))) \
                             WHERE premises_id = ?2",
            )
            .map_err(backend)?;
        s.execute(params![eui_list_text(log), h.premises_id]).map_err(backend)?;
    }
    if h.joins.is_empty() {
        return Ok(());
    }
    for d in premises_devices(conn, h.premises_id)? {
        if matches!(d.kind.as_str(), "comms-hub" | "electricity-meter" | "gas-meter") {
            continue;
        }
        let mut joined = d.joined_to.clone();
        for (meter, list) in &h.joins {
            joined.retain(|m| m != meter);
            if list.contains(&d.eui) {
                joined.push(*meter);
            }
        }
        if joined != d.joined_to {
            conn.prepare_cached("UPDATE devices SET joined_to = ?1 WHERE eui = ?2")
                .and_then(|mut s| s.execute(params![eui_list_text(&joined), d.eui.to_plain()]))
                .map_err(backend)?;
        }
    }
    Ok(())
}

pub(super) fn install_premises(conn: &Connection, p: &NewPremises) -> Result<PremisesRecord, StoreError> {
    conn.execute(
        "INSERT INTO premises (comms_hub, installed_at, installed_by) VALUES (?1, ?2, ?3)",
        params![p.comms_hub.to_plain(), micros(p.installed_at), p.installed_by.as_str()],
    )
    .map_err(|e| match classify(e) {
        StoreError::Conflict(_) => StoreError::Conflict(format!("comms hub {} is already installed", p.comms_hub)),
        other => other,
    })?;
    let id = conn.last_insert_rowid();
    let mut stmt = conn
        .prepare_cached(&format!(
            "INSERT INTO devices ({DEVICE_COLS}) VALUES (?1, ?2, ?3, ?4, NULL, NULL, NULL, 1, '[]')"
        ))
        .map_err(backend)?;
    for (e, kind) in &p.devices {
        stmt.execute(params![e.to_plain(), id, kind, micros(p.installed_at)]).map_err(|err| match classify(err) {
            StoreError::Conflict(_) => StoreError::Conflict(format!("device {e} is already installed")),
            other => other,
        })?;
    }
    join_as_installed(conn, id)?;
    Ok(PremisesRecord {
        id,
        comms_hub: p.comms_hub,
        installed_at: p.installed_at,
        installed_by: p.installed_by.clone(),
    })
}

pub(super) fn premises(conn: &Connection, id: i64) -> Result<Option<PremisesRecord>, StoreError> {
    let row: Option<(String, i64, String)> = conn
        .prepare_cached("SELECT comms_hub, installed_at, installed_by FROM premises WHERE id = ?1")
        .and_then(|mut s| s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional())
        .map_err(backend)?;
    row.map(|(c, at, by)| {
        Ok(PremisesRecord { id, comms_hub: eui(&c)?, installed_at: ts(at)?, installed_by: party_id(by)? })
    })
    .transpose()
}

pub(super) fn device(conn: &Connection, e: Eui64) -> Result<Option<DeviceRecord>, StoreError> {
    conn.prepare_cached(&format!("SELECT {DEVICE_COLS} FROM devices WHERE eui = ?1"))
        .and_then(|mut s| s.query_row([e.to_plain()], raw_device).optional())
        .map_err(backend)?
        .map(into_device)
        .transpose()
}

pub(super) fn premises_devices(conn: &Connection, premises_id: i64) -> Result<Vec<DeviceRecord>, StoreError> {
    // Sorted here: an ORDER BY would make SQLite re-prepare the statement on every run.
    let mut s =
        conn.prepare_cached(&format!("SELECT {DEVICE_COLS} FROM devices WHERE premises_id = ?1")).map_err(backend)?;
    let rows = s.query_map([premises_id], raw_device).map_err(backend)?;
    let mut out = rows.map(|r| r.map_err(backend).and_then(into_device)).collect::<Result<Vec<_>, _>>()?;
    out.sort_by_key(|d| d.eui);
    Ok(out)
}

pub(super) fn device_for_mpxn(conn: &Connection, m: Mpxn) -> Result<Option<DeviceRecord>, StoreError> {
    conn.prepare_cached(&format!("SELECT {DEVICE_COLS} FROM devices WHERE mpxn = ?1"))
        .and_then(|mut s| s.query_row([m.to_string()], raw_device).optional())
        .map_err(backend)?
        .map(into_device)
        .transpose()
}

pub(super) fn reserve_counters(conn: &Connection, originator: Eui64, n: u64) -> Result<u64, StoreError> {
    let key = originator.to_plain();
    let reserved: Option<i64> = conn
        .query_row("SELECT reserved FROM originator_counters WHERE originator = ?1", [&key], |r| r.get(0))
        .optional()
        .map_err(backend)?;
    let first = reserved.unwrap_or(0) as u64 + 1;
    let last = first + n - 1;
    conn.execute(
        "INSERT INTO originator_counters (originator, reserved) VALUES (?1, ?2) \
         ON CONFLICT (originator) DO UPDATE SET reserved = excluded.reserved",
        params![key, last as i64],
    )
    .map_err(backend)?;
    Ok(first)
}

pub(super) const REQUEST_COLS: &str = "seq, id, party, srv, target, mpxn, body, precommand, signature, submitted_at, \
                                       execute_at, status, status_at, note, schedule_id";

type RawRequest = (
    i64,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    Vec<u8>,
    Option<Vec<u8>>,
    i64,
    Option<i64>,
    String,
    i64,
    Option<String>,
    Option<String>,
);

pub(super) fn raw_request(r: &Row<'_>) -> rusqlite::Result<RawRequest> {
    r.try_into()
}

pub(super) fn into_request(r: RawRequest) -> Result<RequestRecord, StoreError> {
    let (
        seq,
        id,
        party,
        srv,
        target,
        m,
        body,
        precommand,
        signature,
        submitted,
        execute,
        status,
        status_at,
        note,
        sched,
    ) = r;
    Ok(RequestRecord {
        seq,
        id,
        party: party_id(party)?,
        srv,
        target: eui(&target)?,
        mpxn: m.as_deref().map(mpxn).transpose()?,
        body,
        precommand,
        signature,
        submitted_at: ts(submitted)?,
        execute_at: execute.map(ts).transpose()?,
        status: RequestStatus::parse(&status)
            .ok_or_else(|| StoreError::Backend(format!("stored request status {status:?} is unknown")))?,
        status_at: ts(status_at)?,
        note,
        schedule_id: sched,
    })
}

/// One audit row for the request numbered `request_seq` (whose text id is `request_id`).
pub(super) fn audit(
    conn: &Connection,
    at: Timestamp,
    (request_seq, request_id): (i64, &str),
    party: &PartyId,
    event: &str,
    detail: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO audit (at, request_seq, request_id, party, event, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| s.execute(params![micros(at), request_seq, request_id, party.as_str(), event, detail]))
    .map_err(backend)?;
    Ok(())
}

/// A request id's unique key: its originator and counter (`originatorEUI:targetEUI:counter`;
/// the hub numbers each originator's requests). `None` if the id is not of that form, and so
/// names no stored request. Requests are found by it (migration 16): each originator's
/// counter only grows, so a new key goes at the end of the index, where a text id went
/// anywhere.
pub(super) fn id_key(id: &str) -> Option<(&str, i64)> {
    let mut parts = id.splitn(3, ':');
    let (originator, _target, counter) = (parts.next()?, parts.next()?, parts.next()?);
    Some((originator, counter.parse().ok()?))
}

/// The condition that finds a request by its id (a table aliased `q`), bound to the id's
/// key and the id: `params![originator, counter, id]` from [`id_key`].
pub(super) const BY_ID: &str = "q.id_originator = ?1 AND q.id_counter = ?2 AND q.id = ?3";

/// The number of the request with this id, if there is one.
pub(super) fn request_seq(conn: &Connection, id: &str) -> Result<Option<i64>, StoreError> {
    let Some((originator, counter)) = id_key(id) else { return Ok(None) };
    conn.prepare_cached(&format!("SELECT seq FROM requests q WHERE {BY_ID}"))
        .and_then(|mut s| s.query_row(params![originator, counter, id], |r| r.get(0)).optional())
        .map_err(backend)
}

pub(super) fn insert_request(conn: &Connection, r: &RequestRecord) -> Result<i64, StoreError> {
    let (originator, counter) = id_key(&r.id).ok_or_else(|| {
        // The hub makes every id: one of another form is a bug.
        StoreError::Backend(format!("request id {:?} is not originatorEUI:targetEUI:counter", r.id))
    })?;
    conn.prepare_cached(
        "INSERT INTO requests (id, party, srv, target, mpxn, body, precommand, signature, submitted_at, execute_at, \
         status, status_at, note, schedule_id, id_originator, id_counter) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )
    .and_then(|mut s| {
        s.execute(params![
            r.id,
            r.party.as_str(),
            r.srv,
            r.target.to_plain(),
            r.mpxn.map(|m| m.to_string()),
            r.body,
            r.precommand,
            r.signature,
            micros(r.submitted_at),
            r.execute_at.map(micros),
            r.status.as_str(),
            micros(r.status_at),
            r.note,
            r.schedule_id,
            originator,
            counter,
        ])
    })
    .map_err(|e| match classify(e) {
        StoreError::Conflict(_) => StoreError::Conflict(format!("request {} already exists", r.id)),
        other => other,
    })?;
    let seq = conn.last_insert_rowid();
    audit(conn, r.submitted_at, (seq, &r.id), &r.party, "accepted", r.status.as_str())?;
    Ok(seq)
}

fn load_request(conn: &Connection, id: &str) -> Result<Option<RequestRecord>, StoreError> {
    let Some((originator, counter)) = id_key(id) else { return Ok(None) };
    conn.prepare_cached(&format!("SELECT {REQUEST_COLS} FROM requests q WHERE {BY_ID}"))
        .and_then(|mut s| s.query_row(params![originator, counter, id], raw_request).optional())
        .map_err(backend)?
        .map(into_request)
        .transpose()
}

const RESPONSE_COLS: &str = "seq, request_id, party, at, outcome, body";

pub(super) type RawResponse = (i64, String, String, i64, String, String);

pub(super) fn raw_response(r: &Row<'_>) -> rusqlite::Result<(i64, String, String, i64, String, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

pub(super) fn into_response(
    (seq, request_id, party, at, outcome, body): (i64, String, String, i64, String, String),
) -> Result<ResponseRecord, StoreError> {
    Ok(ResponseRecord {
        seq,
        request_id,
        party: party_id(party)?,
        at: ts(at)?,
        outcome: ResponseOutcome::parse(&outcome)
            .ok_or_else(|| StoreError::Backend(format!("stored outcome {outcome:?} is unknown")))?,
        body,
    })
}

pub(super) fn request(
    conn: &Connection,
    id: &str,
) -> Result<Option<(RequestRecord, Option<ResponseRecord>)>, StoreError> {
    let Some(req) = load_request(conn, id)? else { return Ok(None) };
    let resp = conn
        .prepare_cached(&format!("SELECT {RESPONSE_COLS} FROM responses WHERE request_seq = ?1"))
        .and_then(|mut s| s.query_row([req.seq], raw_response).optional())
        .map_err(backend)?
        .map(into_response)
        .transpose()?;
    Ok(Some((req, resp)))
}

pub(super) fn transition(
    conn: &Connection,
    id: &str,
    from: &[RequestStatus],
    to: RequestStatus,
    at: Timestamp,
    note: Option<String>,
    signature: Option<Vec<u8>>,
) -> Result<RequestRecord, StoreError> {
    let Some(mut req) = load_request(conn, id)? else {
        return Err(StoreError::NotFound(format!("request {id}")));
    };
    if !from.contains(&req.status) {
        return Err(StoreError::Conflict(format!("request {id} is {}", req.status.as_str())));
    }
    if signature.is_some() {
        req.signature = signature;
    }
    conn.prepare_cached("UPDATE requests SET status = ?1, status_at = ?2, note = ?3, signature = ?4 WHERE seq = ?5")
        .and_then(|mut s| s.execute(params![to.as_str(), micros(at), note, req.signature, req.seq]))
        .map_err(backend)?;
    audit(conn, at, (req.seq, id), &req.party, to.as_str(), note.as_deref().unwrap_or(""))?;
    req.status = to;
    req.status_at = at;
    req.note = note;
    Ok(req)
}

/// Requests to run now, as inserted, from their commit until the dispatcher's search takes
/// them. Reading back and parsing a row just written was most of the search's cost; each is
/// taken once, so a request searched for again (its round failed) is read from its row.
///
/// A request's row changes only by moving out of `queued` (a transition or a completion),
/// never to another `queued` row, so a kept copy is what the row holds for as long as the
/// search can find it there; a transition forgets the copy all the same. Other processes
/// sharing the database change requests only that way too. Bounded: beyond
/// [`FRESH_MAX`] the lowest numbers go, and are read from their rows. (A copy can be left
/// over, never taken: a search that ran between the commit and the keeping read the row.
/// The bound pushes it out in time.)
#[derive(Default)]
pub(crate) struct Fresh {
    kept: std::sync::Mutex<std::collections::BTreeMap<i64, RequestRecord>>,
}

/// Requests kept by [`Fresh`] at most (a few megabytes).
const FRESH_MAX: usize = 8192;

impl Fresh {
    /// Keep `r`, just committed, if it is to run now.
    pub(crate) fn keep(&self, r: &RequestRecord) {
        if r.status != RequestStatus::Queued || r.execute_at.is_some() {
            return;
        }
        let mut kept = self.kept.lock().expect("fresh requests");
        kept.insert(r.seq, r.clone());
        if kept.len() > FRESH_MAX {
            kept.pop_first();
        }
    }

    fn take(&self, seq: i64) -> Option<RequestRecord> {
        self.kept.lock().expect("fresh requests").remove(&seq)
    }

    pub(super) fn forget(&self, seq: i64) {
        self.take(seq);
    }
}

pub(super) fn due_requests(
    conn: &Connection,
    fresh: &Fresh,
    now: Timestamp,
    limit: usize,
    except: &std::collections::HashSet<i64>,
    from_seq: i64,
) -> Result<DueRequests, StoreError> {
    // Two steps, in one snapshot: the due requests' numbers from the waiting index alone
    // (it holds execute_at, and the row id), then whole rows only for those not excepted.
    // Under load most due requests are already being dispatched, and reading their rows
    // (bodies, pre-commands) cost more than the rest of the round. The numbers come in two
    // parts merged here in order: requests to run now (no execution time) come from the
    // index already in number order; due future-dated ones are sorted. One query with an OR
    // made SQLite sort every queued request's number in a temporary B-tree each round.
    super::engine::in_snapshot(conn, || {
        let mut dated: Vec<i64> = conn
            .prepare_cached("SELECT seq FROM requests WHERE status = 'queued' AND execute_at <= ?1")
            .and_then(|mut s| s.query_map(params![micros(now)], |r| r.get(0))?.collect())
            .map_err(backend)?;
        dated.sort_unstable();
        let mut dated = dated.into_iter().peekable();
        let mut heads = conn
            .prepare_cached(
                "SELECT seq FROM requests WHERE status = 'queued' AND execute_at IS NULL AND seq >= ?1 ORDER BY seq",
            )
            .map_err(backend)?;
        let mut row =
            conn.prepare_cached(&format!("SELECT {REQUEST_COLS} FROM requests WHERE seq = ?1")).map_err(backend)?;
        let mut now_seqs = heads.query([from_seq]).map_err(backend)?;
        let mut next_now = next_seq(&mut now_seqs)?;
        let mut out = DueRequests::default();
        while out.requests.len() < limit {
            let seq = match (next_now, dated.peek().copied()) {
                (None, None) => break,
                (Some(n), Some(d)) if d < n => dated.next().expect("peeked"),
                (None, Some(_)) => dated.next().expect("peeked"),
                (Some(n), _) => {
                    next_now = next_seq(&mut now_seqs)?;
                    out.looked_to = Some(n);
                    n
                }
            };
            if except.contains(&seq) {
                continue;
            }
            if let Some(r) = fresh.take(seq) {
                out.requests.push(r);
                out.kept += 1;
            } else if let Some(raw) = row.query_row([seq], raw_request).optional().map_err(backend)? {
                out.requests.push(into_request(raw)?);
            }
        }
        Ok(out)
    })
}

/// The next request number a `SELECT seq ...` gives, if any.
fn next_seq(rows: &mut rusqlite::Rows<'_>) -> Result<Option<i64>, StoreError> {
    rows.next().map_err(backend)?.map(|r| r.get(0)).transpose().map_err(backend)
}

pub(super) fn complete_one(conn: &Connection, c: &Completion) -> Result<(), StoreError> {
    let not_found = || StoreError::NotFound(format!("request {}", c.request_id));
    let seq = match c.request_seq {
        Some(seq) => seq,
        None => request_seq(conn, &c.request_id)?.ok_or_else(not_found)?,
    };
    // The status moves first, and only if it is not `completed` already: one statement both
    // finds the request and keeps a completion heard twice from being recorded twice.
    let moved = conn
        .prepare_cached(
            "UPDATE requests SET status = 'completed', status_at = ?1 \
             WHERE seq = ?2 AND id = ?3 AND status <> 'completed'",
        )
        .and_then(|mut s| s.execute(params![micros(c.at), seq, c.request_id]))
        .map_err(backend)?;
    if moved == 1 {
        return record_answer(conn, c, seq);
    }
    // Not moved: completed already (nothing to do), or no request has this number and id.
    conn.prepare_cached("SELECT seq FROM requests WHERE seq = ?1 AND id = ?2")
        .and_then(|mut s| s.query_row(params![seq, c.request_id], |r| r.get::<_, i64>(0)).optional())
        .map_err(backend)?
        .map(|_| ())
        .ok_or_else(not_found)
}

/// Record that the request numbered `seq`, known not to be completed yet, is: its status,
/// then [`record_answer`].
pub(super) fn record_completion(conn: &Connection, c: &Completion, seq: i64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE requests SET status = 'completed', status_at = ?1 WHERE seq = ?2")
        .and_then(|mut s| s.execute(params![micros(c.at), seq]))
        .map_err(backend)?;
    record_answer(conn, c, seq)
}

/// Apply a completion's effects and record its response and audit line for the request
/// numbered `seq`, whose status has just been set to `completed`.
fn record_answer(conn: &Connection, c: &Completion, seq: i64) -> Result<(), StoreError> {
    for effect in &c.effects {
        match effect {
            Effect::Commissioned { eui, at } => {
                conn.prepare_cached(
                    "UPDATE devices SET commissioned_at = ?1 WHERE eui = ?2 AND commissioned_at IS NULL",
                )
                .and_then(|mut s| s.execute(params![micros(*at), eui.to_plain()]))
                .map_err(backend)?;
            }
            Effect::Linked { eui, mpxn, at, by } => {
                conn.prepare_cached("UPDATE devices SET mpxn = ?1 WHERE eui = ?2")
                    .and_then(|mut s| s.execute(params![mpxn.to_string(), eui.to_plain()]))
                    .map_err(|e| match classify(e) {
                        StoreError::Conflict(_) => {
                            StoreError::Conflict(format!("{mpxn} is already linked to another device"))
                        }
                        other => other,
                    })?;
                conn.prepare_cached(
                    "INSERT INTO enrolments (mpxn, effective_from, enrolled, recorded_at, recorded_by) \
                     VALUES (?1, ?2, 1, ?2, ?3)",
                )
                .and_then(|mut s| s.execute(params![mpxn.to_string(), micros(*at), by.as_str()]))
                .map_err(|e| match classify(e) {
                    StoreError::Conflict(_) => StoreError::NotFound(format!("metering point {mpxn}")),
                    other => other,
                })?;
            }
            Effect::ScheduleCreated(sc) => super::schedules::insert_schedule(conn, sc)?,
            Effect::ScheduleDeleted { id, party, at } => super::schedules::delete_schedule(conn, id, party, *at)?,
            Effect::Han(h) => apply_han(conn, h)?,
            Effect::CredentialsMoved(moved) => {
                let mut s =
                    conn.prepare_cached("UPDATE devices SET trusted_supplier = ?1 WHERE eui = ?2").map_err(backend)?;
                for d in &moved.devices {
                    s.execute(params![moved.supplier.as_str(), d.to_plain()]).map_err(backend)?;
                }
            }
        }
    }
    conn.prepare_cached(
        "INSERT INTO responses (request_seq, request_id, party, at, outcome, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| s.execute(params![seq, c.request_id, c.party.as_str(), micros(c.at), c.outcome.as_str(), c.body]))
    .map_err(classify)?;
    let response_seq = conn.last_insert_rowid();
    // The party's first and last responses of the hour mark where a search by time starts
    // and ends. Numbers only grow (responses are never deleted), so the first response
    // written keeps its mark and each later one becomes the last; min and max keep the
    // marks right even if they did not.
    conn.prepare_cached(
        "INSERT INTO response_marks (party, hour, first_seq, last_seq) VALUES (?1, ?2, ?3, ?3) \
         ON CONFLICT (party, hour) DO UPDATE SET first_seq = min(first_seq, excluded.first_seq), \
         last_seq = max(last_seq, excluded.last_seq)",
    )
    .and_then(|mut s| s.execute(params![c.party.as_str(), response_hour(micros(c.at)), response_seq]))
    .map_err(backend)?;
    audit(conn, c.at, (seq, &c.request_id), &c.party, "completed", c.outcome.as_str())
}

/// The hour of `response_marks` that a response at `micros` (since the epoch) is marked in:
/// divided by an hour's toward zero, as migrations 18 and 19 computed them. Any division
/// that never goes down as time goes up would do: a response at or after an instant is then
/// in that instant's hour or a later one (where a search by time starts), and a response
/// before an instant in the hour of the microsecond before it or an earlier one (where it
/// ends).
pub(super) fn response_hour(micros: i64) -> i64 {
    micros / 3_600_000_000
}

/// A completion whose effect cannot be applied is recorded as a failure instead: each one
/// with effects runs in its own savepoint. One without effects writes only its response
/// and needs none (a nested savepoint's release costs time in proportion to everything
/// the batch has journalled before it).
pub(super) fn complete_requests(conn: &Connection, completions: &[Completion]) -> Result<(), StoreError> {
    for c in completions {
        if c.effects.is_empty() {
            complete_one(conn, c)?;
            continue;
        }
        conn.execute_batch("SAVEPOINT completion").map_err(backend)?;
        match complete_one(conn, c) {
            Ok(()) => conn.execute_batch("RELEASE completion").map_err(backend)?,
            Err(e) => {
                conn.execute_batch("ROLLBACK TO completion; RELEASE completion").map_err(backend)?;
                // The device did it, but the hub could not apply the effect: say so.
                let failed = Completion {
                    outcome: ResponseOutcome::Failed,
                    body: serde_json_string(&format!("the hub could not record the response: {e}")),
                    effects: Vec::new(),
                    ..c.clone()
                };
                complete_one(conn, &failed)?;
            }
        }
    }
    Ok(())
}

fn serde_json_string(reason: &str) -> String {
    // {"error": reason} with the reason escaped.
    let escaped: String = reason
        .chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c if c.is_control() => vec![' '],
            c => vec![c],
        })
        .collect();
    format!("{{\"error\":\"{escaped}\"}}")
}

pub(super) fn responses_after(
    conn: &Connection,
    party: &PartyId,
    after: i64,
    limit: usize,
) -> Result<Vec<ResponseRecord>, StoreError> {
    let mut s = conn
        .prepare_cached(&format!(
            "SELECT {RESPONSE_COLS} FROM responses WHERE party = ?1 AND seq > ?2 ORDER BY seq LIMIT {limit}"
        ))
        .map_err(backend)?;
    let rows = s.query_map(params![party.as_str(), after], raw_response).map_err(backend)?;
    rows.map(|r| r.map_err(backend).and_then(into_response)).collect()
}

pub(super) fn audit_trail(conn: &Connection, request_id: &str) -> Result<Vec<AuditRecord>, StoreError> {
    // A request's number never changes and its audit rows are only appended: the two reads
    // need not share a snapshot.
    let Some(request_seq) = request_seq(conn, request_id)? else { return Ok(Vec::new()) };
    let mut s = conn
        .prepare_cached(
            "SELECT seq, at, request_id, party, event, detail FROM audit WHERE request_seq = ?1 ORDER BY seq",
        )
        .map_err(backend)?;
    let rows = s
        .query_map([request_seq], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .map_err(backend)?;
    rows.map(|r| {
        let (seq, at, request_id, party, event, detail) = r.map_err(backend)?;
        Ok(AuditRecord { seq, at: ts(at)?, request_id, party: party_id(party)?, event, detail })
    })
    .collect()
}

pub(super) fn requests_in_status(
    conn: &Connection,
    party: &PartyId,
    status: RequestStatus,
    limit: usize,
) -> Result<Vec<RequestRecord>, StoreError> {
    // The status is written into the statement (one of the enum's fixed texts), so that the
    // planner sees which it is: quarantined requests have an index by party (migration 16);
    // those in another waiting status are found through the index of waiting requests
    // (migration 17), among all in that status.
    let mut s = conn
        .prepare_cached(&format!(
            "SELECT {REQUEST_COLS} FROM requests WHERE party = ?1 AND status = '{}' ORDER BY seq LIMIT {limit}",
            status.as_str()
        ))
        .map_err(backend)?;
    let rows = s.query_map(params![party.as_str()], raw_request).map_err(backend)?;
    rows.map(|r| r.map_err(backend).and_then(into_request)).collect()
}

const HUB_WIDE: &str = "*";

pub(super) fn thresholds(conn: &Connection) -> Result<Vec<ThresholdRecord>, StoreError> {
    let mut s = conn
        .prepare_cached(
            "SELECT party, srv, window_secs, max_requests, set_at FROM anomaly_thresholds ORDER BY party, srv",
        )
        .map_err(backend)?;
    let rows = s
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })
        .map_err(backend)?;
    rows.map(|r| {
        let (party, srv, window_secs, max_requests, set_at) = r.map_err(backend)?;
        let party = if party == HUB_WIDE { None } else { Some(party_id(party)?) };
        Ok(ThresholdRecord { party, srv, window_secs, max_requests, set_at: ts(set_at)? })
    })
    .collect()
}

pub(super) fn set_threshold(conn: &Connection, t: &ThresholdRecord) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO anomaly_thresholds (party, srv, window_secs, max_requests, set_at) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (party, srv) DO UPDATE SET window_secs = excluded.window_secs, \
         max_requests = excluded.max_requests, set_at = excluded.set_at",
        params![
            t.party.as_ref().map_or(HUB_WIDE, |p| p.as_str()),
            t.srv,
            t.window_secs,
            t.max_requests,
            micros(t.set_at)
        ],
    )
    .map_err(classify)?;
    Ok(())
}

pub(super) fn remove_threshold(conn: &Connection, party: Option<&PartyId>, srv: &str) -> Result<bool, StoreError> {
    let n = conn
        .execute(
            "DELETE FROM anomaly_thresholds WHERE party = ?1 AND srv = ?2",
            params![party.map_or(HUB_WIDE, |p| p.as_str()), srv],
        )
        .map_err(backend)?;
    Ok(n == 1)
}

pub(super) fn enrol_homes(conn: &Connection, homes: &[EnrolledHome]) -> Result<(), StoreError> {
    for h in homes {
        let p = install_premises(conn, &h.premises)?;
        let at = micros(h.premises.installed_at);
        conn.prepare_cached("UPDATE devices SET commissioned_at = ?1 WHERE premises_id = ?2")
            .and_then(|mut s| s.execute(params![at, p.id]))
            .map_err(backend)?;
        for (eui, m) in &h.links {
            conn.prepare_cached("UPDATE devices SET mpxn = ?1 WHERE eui = ?2")
                .and_then(|mut s| s.execute(params![m.to_string(), eui.to_plain()]))
                .map_err(|e| match classify(e) {
                    StoreError::Conflict(_) => StoreError::Conflict(format!("{m} is already linked to another device")),
                    other => other,
                })?;
            conn.prepare_cached(
                "INSERT INTO enrolments (mpxn, effective_from, enrolled, recorded_at, recorded_by) VALUES (?1, ?2, 1, ?2, ?3)",
            )
            .and_then(|mut s| s.execute(params![m.to_string(), at, h.premises.installed_by.as_str()]))
            .map_err(|e| match classify(e) {
                StoreError::Conflict(_) => StoreError::NotFound(format!("metering point {m}")),
                other => other,
            })?;
        }
    }
    Ok(())
}
