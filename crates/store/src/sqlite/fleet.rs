//! The fleet's SQLite database (`fleet.sqlite3` in the data directory).

use std::path::Path;

use async_trait::async_trait;
use domain::Eui64;
use rusqlite::{OptionalExtension, params};

use super::classify;
use super::engine::{Engine, SqliteOptions, backend};
use super::schema;
use crate::{FleetStore, StoreError};

pub struct SqliteFleetStore {
    engine: Engine,
}

/// A system's stored state: its packed bytes, or the JSON of one saved before fleet version 3.
fn load_state(c: &rusqlite::Connection, id: i64) -> Result<Option<Vec<u8>>, StoreError> {
    c.prepare_cached("SELECT packed, state FROM systems WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([id], |r| match r.get::<_, Option<Vec<u8>>>(0)? {
                Some(packed) => Ok(packed),
                None => r.get::<_, String>(1).map(String::into_bytes),
            })
            .optional()
        })
        .map_err(backend)
}

impl SqliteFleetStore {
    pub fn open(dir: &Path, opts: SqliteOptions) -> Result<SqliteFleetStore, StoreError> {
        Ok(SqliteFleetStore { engine: Engine::open_file(dir, "fleet.sqlite3", schema::FLEET, None, &opts)? })
    }

    pub async fn close(&self) {
        self.engine.close().await;
    }
}

fn insert_system(
    c: &rusqlite::Connection,
    id: i64,
    comms_hub: Eui64,
    devices: &[Eui64],
    state: &[u8],
) -> Result<(), StoreError> {
    c.prepare_cached("INSERT INTO systems (id, comms_hub, state, packed) VALUES (?1, ?2, '', ?3)")
        .and_then(|mut s| s.execute(params![id, comms_hub.to_plain(), state]))
        .map_err(classify)?;
    let mut s = c.prepare_cached("INSERT INTO device_index (eui, system_id) VALUES (?1, ?2)").map_err(backend)?;
    for e in devices {
        s.execute(params![e.to_plain(), id]).map_err(classify)?;
    }
    Ok(())
}

#[async_trait]
impl FleetStore for SqliteFleetStore {
    async fn next_system_id(&self) -> Result<i64, StoreError> {
        self.engine
            .read(|c| c.query_row("SELECT coalesce(max(id), 0) + 1 FROM systems", [], |r| r.get(0)).map_err(backend))
            .await
    }

    async fn add_system(
        &self,
        id: i64,
        comms_hub: Eui64,
        devices: Vec<Eui64>,
        state: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.engine.write(move |c| insert_system(c, id, comms_hub, &devices, &state)).await
    }

    async fn add_systems(&self, systems: Vec<(i64, Eui64, Vec<Eui64>, Vec<u8>)>) -> Result<(), StoreError> {
        self.engine
            .write_solo(move |c| {
                for (id, chf, devices, state) in &systems {
                    insert_system(c, *id, *chf, devices, state)?;
                }
                Ok(())
            })
            .await
    }

    async fn system_of(&self, eui: Eui64) -> Result<Option<i64>, StoreError> {
        self.engine
            .read(move |c| {
                c.prepare_cached("SELECT system_id FROM device_index WHERE eui = ?1")
                    .and_then(|mut s| s.query_row([eui.to_plain()], |r| r.get(0)).optional())
                    .map_err(backend)
            })
            .await
    }

    async fn load_system(&self, id: i64) -> Result<Option<Vec<u8>>, StoreError> {
        self.engine.read(move |c| load_state(c, id)).await
    }

    async fn load_systems(&self, ids: Vec<i64>) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        // One read transaction for the lot: each read alone begins and ends its own, which
        // costs more than finding the row.
        self.engine
            .read(move |c| {
                super::engine::in_snapshot(c, || {
                    let mut out = Vec::with_capacity(ids.len());
                    for id in ids {
                        if let Some(state) = load_state(c, id)? {
                            out.push((id, state));
                        }
                    }
                    Ok(out)
                })
            })
            .await
    }

    async fn save_system(&self, id: i64, state: Vec<u8>, wake_at: Option<jiff::Timestamp>) -> Result<(), StoreError> {
        self.engine
            .write(move |c| {
                let n = c
                    .prepare_cached("UPDATE systems SET state = '', packed = ?1, wake_at = ?2 WHERE id = ?3")
                    .and_then(|mut s| s.execute(params![state, wake_at.map(super::micros), id]))
                    .map_err(backend)?;
                if n == 1 { Ok(()) } else { Err(StoreError::NotFound(format!("system {id}"))) }
            })
            .await
    }

    async fn add_device(&self, id: i64, eui: Eui64, state: Vec<u8>) -> Result<(), StoreError> {
        self.engine
            .write(move |c| {
                c.prepare_cached("INSERT INTO device_index (eui, system_id) VALUES (?1, ?2)")
                    .and_then(|mut s| s.execute(params![eui.to_plain(), id]))
                    .map_err(classify)?;
                let n = c
                    .prepare_cached("UPDATE systems SET state = '', packed = ?1 WHERE id = ?2")
                    .and_then(|mut s| s.execute(params![state, id]))
                    .map_err(backend)?;
                if n == 1 { Ok(()) } else { Err(StoreError::NotFound(format!("system {id}"))) }
            })
            .await
    }

    async fn due_wakeups(&self, now: jiff::Timestamp, limit: usize) -> Result<Vec<i64>, StoreError> {
        self.engine
            .read(move |c| {
                let mut s = c
                    .prepare_cached(&format!(
                        "SELECT id FROM systems WHERE wake_at IS NOT NULL AND wake_at <= ?1 ORDER BY wake_at LIMIT {limit}"
                    ))
                    .map_err(backend)?;
                let rows = s.query_map([super::micros(now)], |r| r.get(0)).map_err(backend)?;
                rows.collect::<rusqlite::Result<Vec<i64>>>().map_err(backend)
            })
            .await
    }

    async fn fleet_state(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        self.engine
            .read(move |c| {
                c.query_row("SELECT value FROM fleet_state WHERE key = ?1", [key], |r| r.get(0))
                    .optional()
                    .map_err(backend)
            })
            .await
    }

    async fn set_fleet_state(&self, key: &str, value: String) -> Result<(), StoreError> {
        let key = key.to_string();
        self.engine
            .write(move |c| {
                c.execute(
                    "INSERT INTO fleet_state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    params![key, value],
                )
                .map_err(backend)?;
                Ok(())
            })
            .await
    }
}
