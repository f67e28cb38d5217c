//! SQL for consents and appointments (relationships the registry does not hold).

use domain::{Mpxn, PartyId};
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::engine::backend;
use super::{classify, micros, mpxn, party_id, ts};
use crate::{GrantKind, GrantRecord, StoreError};

fn table(kind: GrantKind) -> (&'static str, &'static str, &'static str) {
    // (table, party column, appointer column or NULL)
    match kind {
        GrantKind::Consent => ("consents", "party", "NULL"),
        GrantKind::Appointment => ("appointments", "agent", "appointer"),
    }
}

fn cols(kind: GrantKind) -> String {
    let (_, party, appointer) = table(kind);
    format!(
        "seq, mpxn, {party}, {appointer}, valid_from, valid_to, recorded_at, recorded_by, ended_at, ended_by, end_reason"
    )
}

type RawGrant =
    (i64, String, String, Option<String>, i64, Option<i64>, i64, String, Option<i64>, Option<String>, Option<String>);

fn raw_grant(r: &Row<'_>) -> rusqlite::Result<RawGrant> {
    r.try_into()
}

fn into_grant(kind: GrantKind, r: RawGrant) -> Result<GrantRecord, StoreError> {
    let (seq, m, party, appointer, from, to, recorded_at, recorded_by, ended_at, ended_by, end_reason) = r;
    Ok(GrantRecord {
        seq,
        kind,
        mpxn: mpxn(&m)?,
        party: party_id(party)?,
        appointer: appointer.map(party_id).transpose()?,
        valid_from: ts(from)?,
        valid_to: to.map(ts).transpose()?,
        recorded_at: ts(recorded_at)?,
        recorded_by: party_id(recorded_by)?,
        ended_at: ended_at.map(ts).transpose()?,
        ended_by: ended_by.map(party_id).transpose()?,
        end_reason,
    })
}

fn load(conn: &Connection, kind: GrantKind, seq: i64) -> Result<Option<GrantRecord>, StoreError> {
    let (t, _, _) = table(kind);
    conn.prepare_cached(&format!("SELECT {} FROM {t} WHERE seq = ?1", cols(kind)))
        .and_then(|mut s| s.query_row([seq], raw_grant).optional())
        .map_err(backend)?
        .map(|r| into_grant(kind, r))
        .transpose()
}

pub(super) fn insert(conn: &Connection, g: &GrantRecord) -> Result<GrantRecord, StoreError> {
    let (m, party, from, to) = (g.mpxn.to_string(), g.party.as_str(), micros(g.valid_from), g.valid_to.map(micros));
    let (at, by) = (micros(g.recorded_at), g.recorded_by.as_str());
    let done = match (g.kind, &g.appointer) {
        (GrantKind::Consent, _) => conn
            .prepare_cached(
                "INSERT INTO consents (mpxn, party, valid_from, valid_to, recorded_at, recorded_by) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| s.execute(params![m, party, from, to, at, by])),
        (GrantKind::Appointment, Some(appointer)) => conn
            .prepare_cached(
                "INSERT INTO appointments (mpxn, agent, appointer, valid_from, valid_to, recorded_at, recorded_by) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut s| s.execute(params![m, party, appointer.as_str(), from, to, at, by])),
        (GrantKind::Appointment, None) => {
            return Err(StoreError::Conflict("an appointment names the supplier it is for".into()));
        }
    };
    done.map_err(|e| match classify(e) {
        StoreError::Conflict(_) => StoreError::NotFound(format!("metering point {}", g.mpxn)),
        other => other,
    })?;
    let seq = conn.last_insert_rowid();
    load(conn, g.kind, seq)?.ok_or_else(|| StoreError::Backend("inserted row vanished".into()))
}

pub(super) fn end(
    conn: &Connection,
    kind: GrantKind,
    seq: i64,
    valid_to: Timestamp,
    at: Timestamp,
    by: &PartyId,
    reason: &str,
) -> Result<GrantRecord, StoreError> {
    let Some(g) = load(conn, kind, seq)? else {
        return Err(StoreError::NotFound(format!("{} {seq}", kind.as_str())));
    };
    if g.ended_at.is_some() {
        return Err(StoreError::Conflict(format!("{} {seq} was already ended", kind.as_str())));
    }
    // Never later than an end it already had; never before it began.
    let valid_to = g.valid_to.map_or(valid_to, |t| t.min(valid_to)).max(g.valid_from);
    let (t, _, _) = table(kind);
    conn.prepare_cached(&format!(
        "UPDATE {t} SET valid_to = ?1, ended_at = ?2, ended_by = ?3, end_reason = ?4 WHERE seq = ?5"
    ))
    .and_then(|mut s| s.execute(params![micros(valid_to), micros(at), by.as_str(), reason, seq]))
    .map_err(backend)?;
    load(conn, kind, seq)?.ok_or_else(|| StoreError::Backend("ended row vanished".into()))
}

pub(super) fn list(conn: &Connection, kind: GrantKind, m: Mpxn) -> Result<Vec<GrantRecord>, StoreError> {
    let (t, _, _) = table(kind);
    let mut s = conn.prepare_cached(&format!("SELECT {} FROM {t} WHERE mpxn = ?1", cols(kind))).map_err(backend)?;
    let rows = s.query_map([m.to_string()], raw_grant).map_err(backend)?;
    let mut out = rows.map(|r| r.map_err(backend).and_then(|r| into_grant(kind, r))).collect::<Result<Vec<_>, _>>()?;
    out.sort_by_key(|g| g.seq);
    Ok(out)
}
