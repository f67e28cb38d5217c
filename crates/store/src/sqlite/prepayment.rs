//! SQL for prepayment: suppliers' prepayment keys, UTRN counters, top-ups.

use domain::{Eui64, PartyId};
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::engine::backend;
use super::pipeline::{eui, insert_request};
use super::{classify, micros, mpxn, party_id, ts};
use crate::{RequestRecord, StoreError, TopUpRecord};

pub(super) fn prepayment_key(conn: &Connection, party: &PartyId) -> Result<Option<(Vec<u8>, Vec<u8>)>, StoreError> {
    conn.prepare_cached("SELECT private_key, public_point FROM prepayment_keys WHERE party = ?1")
        .and_then(|mut s| s.query_row([party.as_str()], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(backend)
}

pub(super) fn keep_prepayment_key(
    conn: &Connection,
    party: &PartyId,
    private_key: &[u8],
    public_point: &[u8],
    at: Timestamp,
) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
    conn.prepare_cached(
        "INSERT INTO prepayment_keys (party, private_key, public_point, created_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (party) DO NOTHING",
    )
    .and_then(|mut s| s.execute(params![party.as_str(), private_key, public_point, micros(at)]))
    .map_err(|e| match classify(e) {
        StoreError::Conflict(_) => StoreError::NotFound(format!("party {party}")),
        other => other,
    })?;
    prepayment_key(conn, party)?.ok_or_else(|| StoreError::Backend("kept key vanished".into()))
}

pub(super) fn next_utrn_counter(conn: &Connection, supplier: &PartyId, meter: Eui64) -> Result<u64, StoreError> {
    let next: i64 = conn
        .prepare_cached(
            "INSERT INTO utrn_counters (supplier, meter, last) VALUES (?1, ?2, 1) \
             ON CONFLICT (supplier, meter) DO UPDATE SET last = last + 1 RETURNING last",
        )
        .and_then(|mut s| s.query_row(params![supplier.as_str(), meter.to_plain()], |r| r.get(0)))
        .map_err(backend)?;
    Ok(next as u64)
}

const TOP_UP_COLS: &str = "seq, psp, payment_reference, customer_id, mpxn, supplier, meter, amount_pence, counter, \
                           utrn, request_id, at";

type RawTopUp = (i64, String, String, String, String, String, String, i64, i64, String, String, i64);

fn raw_top_up(r: &Row<'_>) -> rusqlite::Result<RawTopUp> {
    r.try_into()
}

fn into_top_up(r: RawTopUp) -> Result<TopUpRecord, StoreError> {
    let (seq, psp, payment_reference, customer_id, m, supplier, meter, amount, counter, utrn, request_id, at) = r;
    Ok(TopUpRecord {
        seq,
        psp: party_id(psp)?,
        payment_reference,
        customer_id,
        mpxn: mpxn(&m)?,
        supplier: party_id(supplier)?,
        meter: eui(&meter)?,
        amount_pence: amount as u64,
        counter: counter as u64,
        utrn,
        request_id,
        at: ts(at)?,
    })
}

pub(super) fn top_up(conn: &Connection, psp: &PartyId, reference: &str) -> Result<Option<TopUpRecord>, StoreError> {
    conn.prepare_cached(&format!("SELECT {TOP_UP_COLS} FROM top_ups WHERE psp = ?1 AND payment_reference = ?2"))
        .and_then(|mut s| s.query_row(params![psp.as_str(), reference], raw_top_up).optional())
        .map_err(backend)?
        .map(into_top_up)
        .transpose()
}

pub(super) fn insert_top_up(
    conn: &Connection,
    t: &TopUpRecord,
    request: &RequestRecord,
) -> Result<TopUpRecord, StoreError> {
    let request_seq = insert_request(conn, request)?;
    conn.prepare_cached(
        "INSERT INTO top_ups (psp, payment_reference, customer_id, mpxn, supplier, meter, amount_pence, counter, utrn, \
         request_seq, request_id, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .and_then(|mut s| {
        s.execute(params![
            t.psp.as_str(),
            t.payment_reference,
            t.customer_id,
            t.mpxn.to_string(),
            t.supplier.as_str(),
            t.meter.to_plain(),
            t.amount_pence as i64,
            t.counter as i64,
            t.utrn,
            request_seq,
            t.request_id,
            micros(t.at),
        ])
    })
    .map_err(|e| match classify(e) {
        StoreError::Conflict(_) => {
            StoreError::Conflict(format!("payment reference {:?} is already used", t.payment_reference))
        }
        other => other,
    })?;
    top_up(conn, &t.psp, &t.payment_reference)?.ok_or_else(|| StoreError::Backend("inserted top-up vanished".into()))
}

pub(super) fn payment_endpoint(conn: &Connection, party: &PartyId) -> Result<Option<(String, u32)>, StoreError> {
    conn.prepare_cached("SELECT url, timeout_ms FROM payment_endpoints WHERE party = ?1")
        .and_then(|mut s| s.query_row([party.as_str()], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(backend)
}

pub(super) fn set_payment_endpoint(
    conn: &Connection,
    party: &PartyId,
    endpoint: Option<&(String, u32)>,
    at: Timestamp,
) -> Result<(), StoreError> {
    match endpoint {
        Some((url, timeout_ms)) => conn
            .prepare_cached(
                "INSERT INTO payment_endpoints (party, url, timeout_ms, set_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (party) DO UPDATE SET url = excluded.url, timeout_ms = excluded.timeout_ms, \
                 set_at = excluded.set_at",
            )
            .and_then(|mut s| s.execute(params![party.as_str(), url, timeout_ms, micros(at)]))
            .map_err(classify)?,
        None => conn
            .prepare_cached("DELETE FROM payment_endpoints WHERE party = ?1")
            .and_then(|mut s| s.execute([party.as_str()]))
            .map_err(backend)?,
    };
    Ok(())
}
