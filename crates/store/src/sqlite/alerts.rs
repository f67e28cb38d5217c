//! SQL for alerts: their recipients' rows, the dispatch table, acknowledgements, webhooks
//! and dead letters.

use domain::PartyId;
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::engine::backend;
use super::pipeline::eui;
use super::{classify, micros, mpxn, party_id, ts};
use crate::{AlertRecord, DeadLetter, PushResult, StoreError, Webhook};

const ALERT_COLS: &str = "seq, party, recipient_as, device, device_seq, mpxn, at, code, detail, data, received_at";

type RawAlert =
    (i64, String, String, Option<String>, Option<i64>, Option<String>, i64, i64, String, Option<String>, i64);

fn raw_alert(r: &Row<'_>) -> rusqlite::Result<RawAlert> {
    r.try_into()
}

fn into_alert(r: RawAlert) -> Result<AlertRecord, StoreError> {
    let (seq, party, recipient_as, device, device_seq, m, at, code, detail, data, received_at) = r;
    Ok(AlertRecord {
        seq,
        party: party_id(party)?,
        recipient_as,
        device: device.as_deref().map(eui).transpose()?,
        device_seq: device_seq.map(|s| s as u64),
        mpxn: m.as_deref().map(mpxn).transpose()?,
        at: ts(at)?,
        code: u16::try_from(code)
            .map_err(|_| StoreError::Backend(format!("stored alert code {code} is not 16 bits")))?,
        detail,
        data,
        received_at: ts(received_at)?,
    })
}

/// Store alerts, each once: a device's alert numbered at or below its mark is stored
/// already (devices deliver in order, and again only from their first undelivered alert).
pub(super) fn record_alerts(conn: &Connection, alerts: &[AlertRecord]) -> Result<u64, StoreError> {
    use std::collections::HashMap;
    let mut marks: HashMap<String, i64> = HashMap::new();
    {
        let mut get = conn.prepare_cached("SELECT last_seq FROM alert_marks WHERE device = ?1").map_err(backend)?;
        for a in alerts {
            if let (Some(d), Some(_)) = (a.device, a.device_seq)
                && let std::collections::hash_map::Entry::Vacant(e) = marks.entry(d.to_plain())
            {
                let mark: i64 = get.query_row([e.key()], |r| r.get(0)).optional().map_err(backend)?.unwrap_or(0);
                e.insert(mark);
            }
        }
    }
    let mut s = conn
        .prepare_cached(
            "INSERT INTO alerts (party, recipient_as, device, device_seq, mpxn, at, code, detail, data, received_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .map_err(backend)?;
    let mut new = 0;
    let mut highest: HashMap<String, i64> = HashMap::new();
    for a in alerts {
        let device = a.device.map(|d| d.to_plain());
        if let (Some(d), Some(n)) = (&device, a.device_seq) {
            let n = n as i64;
            if n <= marks[d] {
                continue;
            }
            let h = highest.entry(d.clone()).or_insert(n);
            *h = (*h).max(n);
        }
        s.execute(params![
            a.party.as_str(),
            a.recipient_as,
            device,
            a.device_seq.map(|s| s as i64),
            a.mpxn.map(|m| m.to_string()),
            micros(a.at),
            i64::from(a.code),
            a.detail,
            a.data,
            micros(a.received_at),
        ])
        .map_err(backend)?;
        new += 1;
    }
    let mut set = conn
        .prepare_cached(
            "INSERT INTO alert_marks (device, last_seq) VALUES (?1, ?2) \
             ON CONFLICT (device) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
        )
        .map_err(backend)?;
    for (d, n) in highest {
        set.execute(params![d, n]).map_err(backend)?;
    }
    Ok(new)
}

pub(super) fn alerts_after(
    conn: &Connection,
    party: &PartyId,
    after: i64,
    limit: usize,
) -> Result<Vec<AlertRecord>, StoreError> {
    let mut s = conn
        .prepare_cached(&format!(
            "SELECT {ALERT_COLS} FROM alerts WHERE party = ?1 AND seq > ?2 ORDER BY seq LIMIT {limit}"
        ))
        .map_err(backend)?;
    let rows = s.query_map(params![party.as_str(), after], raw_alert).map_err(backend)?;
    rows.map(|r| r.map_err(backend).and_then(into_alert)).collect()
}

pub(super) fn routes(conn: &Connection) -> Result<Vec<(String, String)>, StoreError> {
    let mut s =
        conn.prepare_cached("SELECT code, recipient FROM alert_routes ORDER BY code, recipient").map_err(backend)?;
    let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(backend)?;
    rows.map(|r| r.map_err(backend)).collect()
}

pub(super) fn set_routes(conn: &Connection, code: &str, recipients: &[String]) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM alert_routes WHERE code = ?1")
        .and_then(|mut s| s.execute([code]))
        .map_err(backend)?;
    let mut s = conn.prepare_cached("INSERT INTO alert_routes (code, recipient) VALUES (?1, ?2)").map_err(backend)?;
    for r in recipients {
        s.execute(params![code, r]).map_err(classify)?;
    }
    Ok(())
}

pub(super) fn ack(conn: &Connection, party: &PartyId, up_to: i64, at: Timestamp) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO alert_acks (party, acked_seq, at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (party) DO UPDATE SET acked_seq = max(acked_seq, excluded.acked_seq), at = excluded.at",
    )
    .and_then(|mut s| s.execute(params![party.as_str(), up_to, micros(at)]))
    .map_err(backend)?;
    acked(conn, party)
}

pub(super) fn acked(conn: &Connection, party: &PartyId) -> Result<i64, StoreError> {
    conn.prepare_cached("SELECT acked_seq FROM alert_acks WHERE party = ?1")
        .and_then(|mut s| s.query_row([party.as_str()], |r| r.get::<_, i64>(0)).optional())
        .map(|v| v.unwrap_or(0))
        .map_err(backend)
}

const WEBHOOK_COLS: &str = "party, url, secret, set_at, attempts, next_at, last_error";

type RawWebhook = (String, String, String, i64, i64, Option<i64>, Option<String>);

fn into_webhook(r: RawWebhook) -> Result<Webhook, StoreError> {
    let (party, url, secret, set_at, attempts, next_at, last_error) = r;
    Ok(Webhook {
        party: party_id(party)?,
        url,
        secret,
        set_at: ts(set_at)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_at: next_at.map(ts).transpose()?,
        last_error,
    })
}

pub(super) fn set_webhook(conn: &Connection, w: &Webhook) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO webhooks ({WEBHOOK_COLS}) VALUES (?1, ?2, ?3, ?4, 0, NULL, NULL)"
    ))
    .and_then(|mut s| s.execute(params![w.party.as_str(), w.url, w.secret, micros(w.set_at)]))
    .map_err(classify)?;
    Ok(())
}

pub(super) fn webhook(conn: &Connection, party: &PartyId) -> Result<Option<Webhook>, StoreError> {
    conn.prepare_cached(&format!("SELECT {WEBHOOK_COLS} FROM webhooks WHERE party = ?1"))
        .and_then(|mut s| s.query_row([party.as_str()], |r| r.try_into()).optional())
        .map_err(backend)?
        .map(into_webhook)
        .transpose()
}

pub(super) fn delete_webhook(conn: &Connection, party: &PartyId) -> Result<bool, StoreError> {
    conn.prepare_cached("DELETE FROM webhooks WHERE party = ?1")
        .and_then(|mut s| s.execute([party.as_str()]))
        .map(|n| n > 0)
        .map_err(backend)
}

pub(super) fn due_webhooks(conn: &Connection, now: Timestamp, limit: usize) -> Result<Vec<Webhook>, StoreError> {
    let mut s = conn
        .prepare_cached(&format!(
            "SELECT {WEBHOOK_COLS} FROM webhooks w WHERE (next_at IS NULL OR next_at <= ?1) AND EXISTS ( \
             SELECT 1 FROM alerts a WHERE a.party = w.party \
             AND a.seq > coalesce((SELECT acked_seq FROM alert_acks k WHERE k.party = w.party), 0)) \
             ORDER BY coalesce(next_at, 0), party LIMIT {limit}"
        ))
        .map_err(backend)?;
    let rows = s.query_map([micros(now)], |r| r.try_into()).map_err(backend)?;
    rows.map(|r| r.map_err(backend).and_then(into_webhook)).collect()
}

pub(super) fn push_result(conn: &Connection, party: &PartyId, r: &PushResult, at: Timestamp) -> Result<(), StoreError> {
    let reset = |conn: &Connection| {
        conn.prepare_cached("UPDATE webhooks SET attempts = 0, next_at = NULL WHERE party = ?1")
            .and_then(|mut s| s.execute([party.as_str()]))
            .map_err(backend)
    };
    match r {
        PushResult::Delivered { up_to } => {
            ack(conn, party, *up_to, at)?;
            reset(conn)?;
        }
        PushResult::Failed { attempts, next_at, error } => {
            conn.prepare_cached("UPDATE webhooks SET attempts = ?1, next_at = ?2, last_error = ?3 WHERE party = ?4")
                .and_then(|mut s| s.execute(params![attempts, micros(*next_at), error, party.as_str()]))
                .map_err(backend)?;
        }
        PushResult::DeadLettered { seqs, attempts, reason } => {
            let mut s = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO alert_dead_letters (alert_seq, party, at, attempts, reason) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(backend)?;
            for seq in seqs {
                s.execute(params![seq, party.as_str(), micros(at), attempts, reason]).map_err(classify)?;
            }
            if let Some(last) = seqs.iter().max() {
                ack(conn, party, *last, at)?;
            }
            reset(conn)?;
            conn.prepare_cached("UPDATE webhooks SET last_error = ?1 WHERE party = ?2")
                .and_then(|mut s| s.execute(params![reason, party.as_str()]))
                .map_err(backend)?;
        }
    }
    Ok(())
}

pub(super) fn dead_letters(
    conn: &Connection,
    party: &PartyId,
    after: i64,
    limit: usize,
) -> Result<Vec<DeadLetter>, StoreError> {
    let mut s = conn
        .prepare_cached(&format!(
            "SELECT alert_seq, party, at, attempts, reason FROM alert_dead_letters \
             WHERE party = ?1 AND alert_seq > ?2 ORDER BY alert_seq LIMIT {limit}"
        ))
        .map_err(backend)?;
    let rows = s
        .query_map(params![party.as_str(), after], |r| -> rusqlite::Result<(i64, String, i64, i64, String)> {
            r.try_into()
        })
        .map_err(backend)?;
    rows.map(|r| {
        let (alert_seq, party, at, attempts, reason) = r.map_err(backend)?;
        Ok(DeadLetter {
            alert_seq,
            party: party_id(party)?,
            at: ts(at)?,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            reason,
        })
    })
    .collect()
}
