//! SQL for device alerts.

use domain::PartyId;
use rusqlite::{Connection, Row, params};

use super::engine::backend;
use super::pipeline::eui;
use super::{micros, mpxn, party_id, ts};
use crate::{AlertRecord, StoreError};

const ALERT_COLS: &str = "seq, party, device, device_seq, mpxn, at, code, detail, data, received_at";

type RawAlert = (i64, String, String, i64, Option<String>, i64, i64, String, Option<String>, i64);

fn raw_alert(r: &Row<'_>) -> rusqlite::Result<RawAlert> {
    r.try_into()
}

fn into_alert(r: RawAlert) -> Result<AlertRecord, StoreError> {
    let (seq, party, device, device_seq, m, at, code, detail, data, received_at) = r;
    Ok(AlertRecord {
        seq,
        party: party_id(party)?,
        device: eui(&device)?,
        device_seq: device_seq as u64,
        mpxn: m.as_deref().map(mpxn).transpose()?,
        at: ts(at)?,
        code: u16::try_from(code)
            .map_err(|_| StoreError::Backend(format!("stored alert code {code} is not 16 bits")))?,
        detail,
        data,
        received_at: ts(received_at)?,
    })
}

pub(super) fn record_alerts(conn: &Connection, alerts: &[AlertRecord]) -> Result<u64, StoreError> {
    let mut s = conn
        .prepare_cached(
            "INSERT INTO alerts (party, device, device_seq, mpxn, at, code, detail, data, received_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (device, device_seq) DO NOTHING",
        )
        .map_err(backend)?;
    let mut new = 0;
    for a in alerts {
        new += s
            .execute(params![
                a.party.as_str(),
                a.device.to_plain(),
                a.device_seq as i64,
                a.mpxn.map(|m| m.to_string()),
                micros(a.at),
                i64::from(a.code),
                a.detail,
                a.data,
                micros(a.received_at),
            ])
            .map_err(backend)? as u64;
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
