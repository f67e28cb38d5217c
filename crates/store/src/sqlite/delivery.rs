//! SQL for deliveries (commands the hub follows until a device answers).

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::engine::backend;
use super::pipeline::eui;
use super::{classify, micros, mpxn, party_id, ts};
use crate::{DeliveryRecord, DeliveryState, DeliveryUpdate, NewDelivery, StoreError};

const COLS: &str = "seq, purpose, subject, party, srv, target, mpxn, body, run_at, request_id, attempts, state, \
                    detail, due_at, version, updated_at";

type Raw = (
    i64,
    String,
    i64,
    String,
    String,
    String,
    String,
    String,
    i64,
    String,
    i64,
    String,
    Option<String>,
    Option<i64>,
    i64,
    i64,
);

fn raw(r: &Row<'_>) -> rusqlite::Result<Raw> {
    r.try_into()
}

fn record(r: Raw) -> Result<DeliveryRecord, StoreError> {
    let (seq, purpose, subject, party, srv, target, m, body, run_at, request_id, attempts, state, detail, due, v, at) =
        r;
    Ok(DeliveryRecord {
        seq,
        purpose,
        subject,
        party: party_id(party)?,
        srv,
        target: eui(&target)?,
        mpxn: mpxn(&m)?,
        body,
        run_at: ts(run_at)?,
        request_id,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        state: DeliveryState::parse(&state)
            .ok_or_else(|| StoreError::Backend(format!("stored delivery {seq} has state {state}")))?,
        detail,
        due_at: due.map(ts).transpose()?,
        version: v,
        updated_at: ts(at)?,
    })
}

/// Record deliveries with their first tries, serving `subject`.
pub(super) fn insert(conn: &Connection, subject: i64, list: &[NewDelivery]) -> Result<(), StoreError> {
    for n in list {
        super::pipeline::insert_request(conn, &n.request)?;
        let d = &n.delivery;
        conn.prepare_cached(
            "INSERT INTO deliveries (purpose, subject, party, srv, target, mpxn, body, run_at, request_id, attempts, \
             state, detail, due_at, version, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 1, ?14)",
        )
        .and_then(|mut s| {
            s.execute(params![
                d.purpose,
                subject,
                d.party.as_str(),
                d.srv,
                d.target.to_string(),
                d.mpxn.to_string(),
                d.body,
                micros(d.run_at),
                n.request.id,
                d.attempts,
                d.state.as_str(),
                d.detail,
                d.due_at.map(micros),
                micros(d.updated_at),
            ])
        })
        .map_err(classify)?;
    }
    Ok(())
}

fn load(conn: &Connection, seq: i64) -> Result<Option<DeliveryRecord>, StoreError> {
    conn.prepare_cached(&format!("SELECT {COLS} FROM deliveries WHERE seq = ?1"))
        .and_then(|mut s| s.query_row([seq], raw).optional())
        .map_err(backend)?
        .map(record)
        .transpose()
}

pub(super) fn due(conn: &Connection, now: Timestamp, limit: usize) -> Result<Vec<DeliveryRecord>, StoreError> {
    let mut s = conn
        .prepare_cached(&format!(
            "SELECT {COLS} FROM deliveries WHERE due_at IS NOT NULL AND due_at <= ?1 ORDER BY due_at, seq LIMIT {limit}"
        ))
        .map_err(backend)?;
    let rows = s.query_map([micros(now)], raw).map_err(backend)?;
    rows.map(|r| record(r.map_err(backend)?)).collect()
}

pub(super) fn of_subject(conn: &Connection, purpose: &str, subject: i64) -> Result<Vec<DeliveryRecord>, StoreError> {
    let mut s = conn
        .prepare_cached(&format!("SELECT {COLS} FROM deliveries WHERE purpose = ?1 AND subject = ?2 ORDER BY seq"))
        .map_err(backend)?;
    let rows = s.query_map(params![purpose, subject], raw).map_err(backend)?;
    rows.map(|r| record(r.map_err(backend)?)).collect()
}

pub(super) fn update(conn: &Connection, u: &DeliveryUpdate) -> Result<DeliveryRecord, StoreError> {
    if let Some(r) = &u.request {
        super::pipeline::insert_request(conn, r)?;
    }
    let changed = conn
        .prepare_cached(
            "UPDATE deliveries SET request_id = COALESCE(?1, request_id), attempts = ?2, state = ?3, detail = ?4, \
             due_at = ?5, version = version + 1, updated_at = ?6 WHERE seq = ?7 AND version = ?8",
        )
        .and_then(|mut s| {
            s.execute(params![
                u.request.as_ref().map(|r| r.id.as_str()),
                u.attempts,
                u.state.as_str(),
                u.detail,
                u.due_at.map(micros),
                micros(u.at),
                u.seq,
                u.version
            ])
        })
        .map_err(classify)?;
    if changed == 0 {
        return Err(match load(conn, u.seq)? {
            None => StoreError::NotFound(format!("delivery {}", u.seq)),
            Some(_) => StoreError::Conflict(format!("delivery {} moved on meanwhile; read it again", u.seq)),
        });
    }
    super::switching::insert_notices(conn, &u.notices)?;
    load(conn, u.seq)?.ok_or_else(|| StoreError::NotFound(format!("delivery {}", u.seq)))
}
