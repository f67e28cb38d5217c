//! SQL for firmware images and campaigns.

use domain::PartyId;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::engine::backend;
use super::pipeline::eui;
use super::{classify, micros, party_id, ts};
use crate::{CampaignDevice, CampaignRecord, CampaignStep, FirmwareImage, StoreError};

const IMAGE_COLS: &str = "hash, manufacturer, manifest, signature, size, uploaded_at";

fn image(r: &Row<'_>) -> rusqlite::Result<(String, String, String, Vec<u8>, i64, i64)> {
    r.try_into()
}

fn into_image(r: (String, String, String, Vec<u8>, i64, i64)) -> Result<FirmwareImage, StoreError> {
    let (hash, manufacturer, manifest, signature, size, at) = r;
    Ok(FirmwareImage {
        hash,
        manufacturer: party_id(manufacturer)?,
        manifest,
        signature,
        size: size as u64,
        uploaded_at: ts(at)?,
    })
}

pub(super) fn insert_image(conn: &Connection, i: &FirmwareImage, bytes: &[u8]) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "INSERT INTO firmware_images ({IMAGE_COLS}, image) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            i.hash,
            i.manufacturer.as_str(),
            i.manifest,
            i.signature,
            i.size as i64,
            micros(i.uploaded_at),
            bytes
        ])
    })
    .map_err(|e| match classify(e) {
        StoreError::Conflict(_) => StoreError::Conflict(format!("image {} is uploaded already", i.hash)),
        other => other,
    })?;
    Ok(())
}

pub(super) fn image_of(conn: &Connection, hash: &str) -> Result<Option<FirmwareImage>, StoreError> {
    conn.prepare_cached(&format!("SELECT {IMAGE_COLS} FROM firmware_images WHERE hash = ?1"))
        .and_then(|mut s| s.query_row([hash], image).optional())
        .map_err(backend)?
        .map(into_image)
        .transpose()
}

pub(super) fn image_bytes(conn: &Connection, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
    conn.prepare_cached("SELECT image FROM firmware_images WHERE hash = ?1")
        .and_then(|mut s| s.query_row([hash], |r| r.get(0)).optional())
        .map_err(backend)
}

pub(super) fn images(conn: &Connection) -> Result<Vec<FirmwareImage>, StoreError> {
    let mut s = conn
        .prepare_cached(&format!("SELECT {IMAGE_COLS} FROM firmware_images ORDER BY uploaded_at DESC LIMIT 1000"))
        .map_err(backend)?;
    let rows = s.query_map([], image).map_err(backend)?;
    rows.map(|r| r.map_err(backend).and_then(into_image)).collect()
}

const CAMPAIGN_COLS: &str = "seq, party, image_hash, urgency, wave_size, failure_rate_max, state, waves_sent, detail, \
                             version, created_at, updated_at";

type RawCampaign = (i64, String, String, String, i64, f64, String, i64, Option<String>, i64, i64, i64);

fn campaign_row(r: &Row<'_>) -> rusqlite::Result<RawCampaign> {
    r.try_into()
}

fn into_campaign(r: RawCampaign) -> Result<CampaignRecord, StoreError> {
    let (seq, party, image_hash, urgency, wave_size, failure_rate_max, state, waves_sent, detail, version, c, u) = r;
    Ok(CampaignRecord {
        seq,
        party: party_id(party)?,
        image_hash,
        urgency,
        wave_size: wave_size as u32,
        failure_rate_max,
        state,
        waves_sent: waves_sent as u32,
        detail,
        version,
        created_at: ts(c)?,
        updated_at: ts(u)?,
    })
}

pub(super) fn insert_campaign(
    conn: &Connection,
    c: &CampaignRecord,
    devices: &[domain::Eui64],
) -> Result<CampaignRecord, StoreError> {
    conn.prepare_cached(
        "INSERT INTO firmware_campaigns (party, image_hash, urgency, wave_size, failure_rate_max, state, waves_sent, \
         detail, version, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, 1, ?8, ?8)",
    )
    .and_then(|mut s| {
        s.execute(params![
            c.party.as_str(),
            c.image_hash,
            c.urgency,
            c.wave_size,
            c.failure_rate_max,
            c.state,
            c.detail,
            micros(c.created_at)
        ])
    })
    .map_err(classify)?;
    let seq = conn.last_insert_rowid();
    let mut s = conn
        .prepare_cached("INSERT INTO campaign_devices (campaign_seq, idx, device) VALUES (?1, ?2, ?3)")
        .map_err(backend)?;
    for (i, d) in devices.iter().enumerate() {
        s.execute(params![seq, i as i64, d.to_plain()]).map_err(classify)?;
    }
    campaign(conn, seq)?.ok_or_else(|| StoreError::NotFound(format!("campaign {seq}")))
}

pub(super) fn campaign(conn: &Connection, seq: i64) -> Result<Option<CampaignRecord>, StoreError> {
    conn.prepare_cached(&format!("SELECT {CAMPAIGN_COLS} FROM firmware_campaigns WHERE seq = ?1"))
        .and_then(|mut s| s.query_row([seq], campaign_row).optional())
        .map_err(backend)?
        .map(into_campaign)
        .transpose()
}

pub(super) fn campaigns(
    conn: &Connection,
    party: Option<&PartyId>,
    limit: usize,
) -> Result<Vec<CampaignRecord>, StoreError> {
    let mut s = conn
        .prepare_cached(&format!(
            "SELECT {CAMPAIGN_COLS} FROM firmware_campaigns WHERE ?1 IS NULL OR party = ?1 ORDER BY seq DESC LIMIT {limit}"
        ))
        .map_err(backend)?;
    let rows = s.query_map([party.map(PartyId::as_str)], campaign_row).map_err(backend)?;
    rows.map(|r| r.map_err(backend).and_then(into_campaign)).collect()
}

pub(super) fn running(conn: &Connection, limit: usize) -> Result<Vec<CampaignRecord>, StoreError> {
    let mut s = conn
        .prepare_cached(&format!(
            "SELECT {CAMPAIGN_COLS} FROM firmware_campaigns WHERE state = 'running' \
             ORDER BY urgency = 'routine', seq LIMIT {limit}"
        ))
        .map_err(backend)?;
    let rows = s.query_map([], campaign_row).map_err(backend)?;
    rows.map(|r| r.map_err(backend).and_then(into_campaign)).collect()
}

type RawDevice = (i64, i64, String, Option<i64>, Option<String>, Option<String>, Option<String>);

pub(super) fn devices(conn: &Connection, seq: i64) -> Result<Vec<CampaignDevice>, StoreError> {
    let mut s = conn
        .prepare_cached(
            "SELECT campaign_seq, idx, device, wave, request_id, outcome, detail FROM campaign_devices \
             WHERE campaign_seq = ?1 ORDER BY idx",
        )
        .map_err(backend)?;
    let rows = s.query_map([seq], |r| -> rusqlite::Result<RawDevice> { r.try_into() }).map_err(backend)?;
    rows.map(|r| {
        let (campaign_seq, idx, device, wave, request_id, outcome, detail) = r.map_err(backend)?;
        Ok(CampaignDevice {
            campaign_seq,
            idx,
            device: eui(&device)?,
            wave: wave.map(|w| w as u32),
            request_id,
            outcome,
            detail,
        })
    })
    .collect()
}

pub(super) fn step(conn: &Connection, st: &CampaignStep) -> Result<CampaignRecord, StoreError> {
    let changed = conn
        .prepare_cached(
            "UPDATE firmware_campaigns SET state = ?1, waves_sent = ?2, detail = ?3, version = version + 1, \
             updated_at = ?4 WHERE seq = ?5 AND version = ?6",
        )
        .and_then(|mut s| s.execute(params![st.state, st.waves_sent, st.detail, micros(st.at), st.seq, st.version]))
        .map_err(backend)?;
    if changed == 0 {
        return Err(match campaign(conn, st.seq)? {
            None => StoreError::NotFound(format!("campaign {}", st.seq)),
            Some(_) => StoreError::Conflict(format!("campaign {} moved on meanwhile; read it again", st.seq)),
        });
    }
    let mut sent = conn
        .prepare_cached("UPDATE campaign_devices SET wave = ?1, request_id = ?2 WHERE campaign_seq = ?3 AND idx = ?4")
        .map_err(backend)?;
    for (idx, wave, r) in &st.sent {
        if let Some(r) = r {
            super::pipeline::insert_request(conn, r)?;
        }
        sent.execute(params![wave, r.as_ref().map(|r| r.id.as_str()), st.seq, idx]).map_err(backend)?;
    }
    let mut out = conn
        .prepare_cached("UPDATE campaign_devices SET outcome = ?1, detail = ?2 WHERE campaign_seq = ?3 AND idx = ?4")
        .map_err(backend)?;
    for (idx, outcome, detail) in &st.outcomes {
        out.execute(params![outcome, detail, st.seq, idx]).map_err(classify)?;
    }
    campaign(conn, st.seq)?.ok_or_else(|| StoreError::NotFound(format!("campaign {}", st.seq)))
}
