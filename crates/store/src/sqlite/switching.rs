//! SQL for switches, changes of tenancy and notices.

use domain::switching::{Stage, Switch};
use domain::{Mpxn, PartyId};
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::engine::backend;
use super::{classify, micros, mpxn, party_id, ts};
use crate::{GrantEnd, NewTenancy, Notice, StoreError, SwitchEvent, SwitchRecord, SwitchUpdate, TenancyRecord};

const SWITCH_COLS: &str =
    "seq, mpxn, incoming, incoming_shipper, outgoing, version, state, work, created_at, updated_at";

type RawSwitch = (i64, String, String, Option<String>, String, i64, String, Option<String>, i64, i64);

fn raw_switch(r: &Row<'_>) -> rusqlite::Result<RawSwitch> {
    r.try_into()
}

fn into_switch(r: RawSwitch) -> Result<SwitchRecord, StoreError> {
    let (seq, m, incoming, shipper, outgoing, version, state, work, created_at, updated_at) = r;
    let state: Switch = serde_json::from_str(&state).map_err(|e| super::corrupt(&format!("switch {seq}"), e))?;
    Ok(SwitchRecord {
        seq,
        mpxn: mpxn(&m)?,
        incoming: party_id(incoming)?,
        incoming_shipper: super::opt_party_id(shipper)?,
        outgoing: party_id(outgoing)?,
        state,
        version,
        work,
        created_at: ts(created_at)?,
        updated_at: ts(updated_at)?,
    })
}

fn state_json(s: &Switch) -> String {
    serde_json::to_string(s).expect("a switch serialises")
}

pub(super) fn switch(conn: &Connection, seq: i64) -> Result<Option<SwitchRecord>, StoreError> {
    conn.prepare_cached(&format!("SELECT {SWITCH_COLS} FROM switches WHERE seq = ?1"))
        .and_then(|mut s| s.query_row([seq], raw_switch).optional())
        .map_err(backend)?
        .map(into_switch)
        .transpose()
}

fn insert_event(conn: &Connection, switch_seq: i64, e: &SwitchEvent) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO switch_events (switch_seq, at, recorded_at, actor, party, event, from_stage, to_stage, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut s| {
        s.execute(params![
            switch_seq,
            micros(e.at),
            micros(e.recorded_at),
            e.actor,
            e.party.as_ref().map(PartyId::as_str),
            e.event,
            e.from.map(Stage::as_str),
            e.to.as_str(),
            e.detail
        ])
    })
    .map_err(backend)?;
    Ok(())
}

pub(super) fn insert_switch(
    conn: &Connection,
    s: &SwitchRecord,
    first: &SwitchEvent,
) -> Result<SwitchRecord, StoreError> {
    conn.prepare_cached(
        "INSERT INTO switches (mpxn, process, incoming, incoming_shipper, outgoing, stage, deadline, version, state, \
         work, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9, ?10, ?10)",
    )
    .and_then(|mut st| {
        st.execute(params![
            s.mpxn.to_string(),
            s.state.process.as_str(),
            s.incoming.as_str(),
            s.incoming_shipper.as_ref().map(PartyId::as_str),
            s.outgoing.as_str(),
            s.state.stage.as_str(),
            s.state.deadline.map(micros),
            state_json(&s.state),
            s.work,
            micros(s.created_at),
        ])
    })
    .map_err(|e| match classify(e) {
        StoreError::Conflict(_) => StoreError::Conflict(format!("{} already has a switch in progress", s.mpxn)),
        other => other,
    })?;
    let seq = conn.last_insert_rowid();
    insert_event(conn, seq, first)?;
    switch(conn, seq)?.ok_or_else(|| StoreError::Backend("inserted switch vanished".into()))
}

pub(super) fn switches(
    conn: &Connection,
    m: Option<Mpxn>,
    party: Option<&PartyId>,
    limit: usize,
) -> Result<Vec<SwitchRecord>, StoreError> {
    let mut s = conn
        .prepare_cached(&format!(
            "SELECT {SWITCH_COLS} FROM switches WHERE (?1 IS NULL OR mpxn = ?1) \
             AND (?2 IS NULL OR incoming = ?2 OR outgoing = ?2 OR incoming_shipper = ?2) ORDER BY seq DESC LIMIT {limit}"
        ))
        .map_err(backend)?;
    let rows =
        s.query_map(params![m.map(|m| m.to_string()), party.map(PartyId::as_str)], raw_switch).map_err(backend)?;
    rows.map(|r| r.map_err(backend).and_then(into_switch)).collect()
}

pub(super) fn due_switches(conn: &Connection, now: Timestamp, limit: usize) -> Result<Vec<SwitchRecord>, StoreError> {
    let mut s = conn
        .prepare_cached(&format!(
            "SELECT {SWITCH_COLS} FROM switches WHERE deadline <= ?1 ORDER BY deadline, seq LIMIT {limit}"
        ))
        .map_err(backend)?;
    let rows = s.query_map([micros(now)], raw_switch).map_err(backend)?;
    rows.map(|r| r.map_err(backend).and_then(into_switch)).collect()
}

fn end_grants(conn: &Connection, ends: &[GrantEnd], at: Timestamp) -> Result<(), StoreError> {
    for e in ends {
        match super::grants::end(conn, e.kind, e.seq, e.valid_to, at, &e.by, &e.reason) {
            // Ended meanwhile by its holder: nothing left to do.
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(other) => return Err(other),
        }
    }
    Ok(())
}

pub(super) fn insert_notices(conn: &Connection, notices: &[Notice]) -> Result<(), StoreError> {
    let mut s = conn
        .prepare_cached(
            "INSERT INTO notices (party, code, mpxn, at, detail, data, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(backend)?;
    for n in notices {
        s.execute(params![
            n.party.as_str(),
            n.code,
            n.mpxn.map(|m| m.to_string()),
            micros(n.at),
            n.detail,
            n.data,
            micros(n.recorded_at)
        ])
        .map_err(backend)?;
    }
    Ok(())
}

pub(super) fn update_switch(conn: &Connection, u: &SwitchUpdate) -> Result<SwitchRecord, StoreError> {
    let changed = conn
        .prepare_cached(
            "UPDATE switches SET stage = ?1, deadline = ?2, version = version + 1, state = ?3, work = ?4, \
             updated_at = ?5 WHERE seq = ?6 AND version = ?7",
        )
        .and_then(|mut s| {
            s.execute(params![
                u.state.stage.as_str(),
                u.state.deadline.map(micros),
                state_json(&u.state),
                u.work,
                micros(u.at),
                u.seq,
                u.expected_version
            ])
        })
        .map_err(classify)?;
    if changed == 0 {
        return Err(match switch(conn, u.seq)? {
            None => StoreError::NotFound(format!("switch {}", u.seq)),
            Some(s) => StoreError::Conflict(format!(
                "switch {} moved on meanwhile (it is {} now); read it again",
                u.seq,
                s.state.stage.as_str()
            )),
        });
    }
    for e in &u.events {
        insert_event(conn, u.seq, e)?;
    }
    if let Some(r) = &u.registration {
        super::insert_new_registration(conn, r)?;
    }
    for r in &u.requests {
        super::pipeline::insert_request(conn, r)?;
    }
    end_grants(conn, &u.grant_ends, u.at)?;
    insert_notices(conn, &u.notices)?;
    switch(conn, u.seq)?.ok_or_else(|| StoreError::Backend("updated switch vanished".into()))
}

type RawEvent = (i64, i64, i64, i64, String, Option<String>, String, Option<String>, String, String);

pub(super) fn switch_events(conn: &Connection, seq: i64) -> Result<Vec<SwitchEvent>, StoreError> {
    let mut s = conn
        .prepare_cached(
            "SELECT seq, switch_seq, at, recorded_at, actor, party, event, from_stage, to_stage, detail \
             FROM switch_events WHERE switch_seq = ?1 ORDER BY seq",
        )
        .map_err(backend)?;
    let rows = s.query_map([seq], |r| -> rusqlite::Result<RawEvent> { r.try_into() }).map_err(backend)?;
    let stage = |s: &str| Stage::parse(s).ok_or_else(|| StoreError::Backend(format!("stored stage {s:?} is unknown")));
    rows.map(|r| {
        let (seq, switch_seq, at, recorded_at, actor, party, event, from, to, detail) = r.map_err(backend)?;
        Ok(SwitchEvent {
            seq,
            switch_seq,
            at: ts(at)?,
            recorded_at: ts(recorded_at)?,
            actor,
            party: super::opt_party_id(party)?,
            event,
            from: from.as_deref().map(stage).transpose()?,
            to: stage(&to)?,
            detail,
        })
    })
    .collect()
}

pub(super) fn record_tenancy(conn: &Connection, t: &NewTenancy) -> Result<TenancyRecord, StoreError> {
    let r = &t.tenancy;
    conn.prepare_cached(
        "INSERT INTO tenancies (mpxn, tenancy_from, history_shared, consent_note, notified_by, recorded_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            r.mpxn.to_string(),
            micros(r.tenancy_from),
            r.history_shared,
            r.consent_note,
            r.notified_by.as_str(),
            micros(r.recorded_at)
        ])
    })
    .map_err(|e| match classify(e) {
        StoreError::Conflict(_) => StoreError::NotFound(format!("metering point {}", r.mpxn)),
        other => other,
    })?;
    let seq = conn.last_insert_rowid();
    end_grants(conn, &t.grant_ends, r.recorded_at)?;
    insert_notices(conn, &t.notices)?;
    super::delivery::insert(conn, seq, &t.deliveries)?;
    Ok(TenancyRecord { seq, ..r.clone() })
}

type RawTenancy = (i64, String, i64, bool, Option<String>, String, i64);

pub(super) fn tenancies(conn: &Connection, m: Mpxn) -> Result<Vec<TenancyRecord>, StoreError> {
    let mut s = conn
        .prepare_cached(
            "SELECT seq, mpxn, tenancy_from, history_shared, consent_note, notified_by, recorded_at \
             FROM tenancies WHERE mpxn = ?1 ORDER BY tenancy_from, seq",
        )
        .map_err(backend)?;
    let rows = s.query_map([m.to_string()], |r| -> rusqlite::Result<RawTenancy> { r.try_into() }).map_err(backend)?;
    rows.map(|r| {
        let (seq, m, from, shared, note, by, at) = r.map_err(backend)?;
        Ok(TenancyRecord {
            seq,
            mpxn: mpxn(&m)?,
            tenancy_from: ts(from)?,
            history_shared: shared,
            consent_note: note,
            notified_by: party_id(by)?,
            recorded_at: ts(at)?,
        })
    })
    .collect()
}

type RawNotice = (i64, String, String, Option<String>, i64, String, Option<String>, i64);

pub(super) fn notices_after(
    conn: &Connection,
    party: &PartyId,
    after: i64,
    limit: usize,
) -> Result<Vec<Notice>, StoreError> {
    let mut s = conn
        .prepare_cached(&format!(
            "SELECT seq, party, code, mpxn, at, detail, data, recorded_at FROM notices \
             WHERE party = ?1 AND seq > ?2 ORDER BY seq LIMIT {limit}"
        ))
        .map_err(backend)?;
    let rows = s
        .query_map(params![party.as_str(), after], |r| -> rusqlite::Result<RawNotice> { r.try_into() })
        .map_err(backend)?;
    rows.map(|r| {
        let (seq, party, code, m, at, detail, data, recorded_at) = r.map_err(backend)?;
        Ok(Notice {
            seq,
            party: party_id(party)?,
            code,
            mpxn: m.as_deref().map(mpxn).transpose()?,
            at: ts(at)?,
            detail,
            data,
            recorded_at: ts(recorded_at)?,
        })
    })
    .collect()
}
