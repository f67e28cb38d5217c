//! The embedded store: SQLite in WAL mode under the data directory.

mod alerts;
mod delivery;
mod engine;
mod facts;
mod firmware;
mod fleet;
mod grants;
mod pipeline;
mod prepayment;
mod schedules;
mod schema;
mod switching;

use std::path::Path;

use async_trait::async_trait;
use domain::registry::{EnrolmentVersion, RegistrationData, RegistrationVersion};
use domain::{Eui64, IdRules, Mpxn, Party, PartyId, Roles};
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, params};

pub use engine::{Durability, SqliteOptions, WRITE_BATCH_MAX, WRITE_QUEUE_MAX};
pub use facts::{PLANNING_ENTRIES_DEFAULT, PlanningStats};
pub use fleet::SqliteFleetStore;
pub use schema::SCHEMA_VERSION;

use crate::{
    AuditRecord, Completion, DeviceRecord, DueRequests, ImportMsg, ImportSummary, MeteringPoint, NewEnrolment,
    NewPremises, NewRegistration, PremisesRecord, RequestRecord, RequestStatus, ResponseRecord, Store, StoreCounts,
    StoreError, ThresholdRecord, TokenRecord,
};
use engine::{Engine, backend};

/// The embedded SQLite store.
pub struct SqliteStore {
    engine: Engine,
    planning: std::sync::Arc<facts::PlanningCache>,
    warmer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    fresh: std::sync::Arc<pipeline::Fresh>,
}

impl SqliteStore {
    /// Open (creating and migrating if needed) the store in `dir`.
    pub fn open(dir: &Path, opts: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let planning = std::sync::Arc::new(facts::PlanningCache::new(opts.planning_entries));
        let engine = Engine::open(dir, &opts, planning.clone())?;
        let warmer = facts::spawn_warmer(&planning, engine.open_reader()?)?;
        Ok(SqliteStore { engine, planning, warmer: std::sync::Mutex::new(Some(warmer)), fresh: Default::default() })
    }

    /// A metering point's planning facts, from the cache while nothing they come from has
    /// changed (see [`facts`]).
    async fn mpxn_facts(&self, m: Mpxn) -> Result<std::sync::Arc<facts::MpxnFacts>, StoreError> {
        if let Some(f) = self.planning.mpxn(m) {
            return Ok(f);
        }
        let ticket = self.planning.ticket();
        let found = std::sync::Arc::new(self.engine.read(move |conn| facts::load(conn, m)).await?);
        self.planning.put_mpxn(m, ticket, found.clone());
        Ok(found)
    }

    /// How the planning cache has served so far (and whether it is warming). It walks every
    /// entry; [`SqliteStore::planning_warming`] alone is cheap.
    pub fn planning_stats(&self) -> PlanningStats {
        self.planning.stats()
    }

    /// Whether the planning cache is being filled after everything was dropped.
    pub fn planning_warming(&self) -> bool {
        self.planning.warming()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.engine.path()
    }

    /// Commit queued writes and stop the writer. Later writes fail with `Closed`.
    pub async fn close(&self) {
        self.planning.close();
        let warmer = self.warmer.lock().expect("warmer").take();
        if let Some(w) = warmer {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
        self.engine.close().await;
    }
}

impl Drop for SqliteStore {
    /// Stops the warming thread (which otherwise notices within a second).
    fn drop(&mut self) {
        self.planning.close();
    }
}

pub(crate) fn micros(t: Timestamp) -> i64 {
    t.as_microsecond()
}

pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("stored {what} is unreadable: {detail}"))
}

pub(crate) fn ts(v: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_microsecond(v).map_err(|e| corrupt("timestamp", e))
}

/// `t` as a row holds it: to the microsecond (see [`micros`]).
fn as_stored(t: Timestamp) -> Timestamp {
    ts(micros(t)).unwrap_or(t)
}

pub(crate) fn party_id(s: String) -> Result<PartyId, StoreError> {
    PartyId::parse(&s).map_err(|e| corrupt("party id", e))
}

pub(crate) fn opt_party_id(s: Option<String>) -> Result<Option<PartyId>, StoreError> {
    s.map(party_id).transpose()
}

pub(crate) fn mpxn(s: &str) -> Result<Mpxn, StoreError> {
    // Stored identifiers were validated on the way in, possibly under relaxed rules.
    Mpxn::parse_with(s, IdRules::RELAXED).map_err(|e| corrupt("MPxN", e))
}

/// Map a failed statement: constraint violations are conflicts the caller can act on.
pub(crate) fn classify(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, msg) = &e
        && f.code == rusqlite::ErrorCode::ConstraintViolation
    {
        let what = match f.extended_code {
            rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => "it refers to something that does not exist".to_string(),
            rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY | rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE => {
                // Keep the column for callers that word their own message; no SQL reaches users.
                let column = msg.as_deref().and_then(|m| m.rsplit(' ').next()).unwrap_or("");
                format!("it already exists [{column}]")
            }
            rusqlite::ffi::SQLITE_CONSTRAINT_TRIGGER => msg.clone().unwrap_or_else(|| "a data rule was broken".into()),
            _ => "a data rule was broken".into(),
        };
        return StoreError::Conflict(what);
    }
    backend(e)
}

const PARTY_COLS: &str = "id, name, roles, originator, signing_key, created_at";

struct RawParty {
    id: String,
    name: String,
    roles: String,
    originator: String,
    signing_key: Option<Vec<u8>>,
    created_at: i64,
}

fn raw_party(r: &Row<'_>, at: usize) -> rusqlite::Result<RawParty> {
    Ok(RawParty {
        id: r.get(at)?,
        name: r.get(at + 1)?,
        roles: r.get(at + 2)?,
        originator: r.get(at + 3)?,
        signing_key: r.get(at + 4)?,
        created_at: r.get(at + 5)?,
    })
}

impl RawParty {
    fn into_party(self) -> Result<Party, StoreError> {
        Ok(Party {
            id: party_id(self.id)?,
            name: self.name,
            roles: Roles::parse_codes(&self.roles).map_err(|e| corrupt("roles", e))?,
            originator: Eui64::parse(&self.originator).map_err(|e| corrupt("originator", e))?,
            signing_key_spki: self.signing_key,
            created_at: ts(self.created_at)?,
        })
    }
}

const TOKEN_COLS: &str = "id, party_id, label, hash, created_at, revoked_at";

struct RawToken {
    id: String,
    party: String,
    label: String,
    hash: Vec<u8>,
    created_at: i64,
    revoked_at: Option<i64>,
}

fn raw_token(r: &Row<'_>) -> rusqlite::Result<RawToken> {
    Ok(RawToken {
        id: r.get(0)?,
        party: r.get(1)?,
        label: r.get(2)?,
        hash: r.get(3)?,
        created_at: r.get(4)?,
        revoked_at: r.get(5)?,
    })
}

impl RawToken {
    fn into_record(self) -> Result<TokenRecord, StoreError> {
        Ok(TokenRecord {
            id: self.id,
            party: party_id(self.party)?,
            label: self.label,
            hash: self.hash.as_slice().try_into().map_err(|_| corrupt("token hash", "not 32 bytes"))?,
            created_at: ts(self.created_at)?,
            revoked_at: self.revoked_at.map(ts).transpose()?,
        })
    }
}

const REG_COLS: &str = "seq, mpxn, effective_from, supplier, export_supplier, shipper, network_operator, \
                        meter_type, payment_mode, annual_quantity_kwh, recorded_at, recorded_by";

struct RawRegistration {
    seq: i64,
    mpxn: String,
    effective_from: i64,
    supplier: String,
    export_supplier: Option<String>,
    shipper: Option<String>,
    network_operator: String,
    meter_type: String,
    payment_mode: Option<String>,
    annual_quantity_kwh: Option<i64>,
    recorded_at: i64,
    recorded_by: String,
}

fn raw_registration(r: &Row<'_>) -> rusqlite::Result<RawRegistration> {
    Ok(RawRegistration {
        seq: r.get(0)?,
        mpxn: r.get(1)?,
        effective_from: r.get(2)?,
        supplier: r.get(3)?,
        export_supplier: r.get(4)?,
        shipper: r.get(5)?,
        network_operator: r.get(6)?,
        meter_type: r.get(7)?,
        payment_mode: r.get(8)?,
        annual_quantity_kwh: r.get(9)?,
        recorded_at: r.get(10)?,
        recorded_by: r.get(11)?,
    })
}

impl RawRegistration {
    fn into_version(self) -> Result<RegistrationVersion, StoreError> {
        Ok(RegistrationVersion {
            seq: self.seq,
            mpxn: mpxn(&self.mpxn)?,
            effective_from: ts(self.effective_from)?,
            data: RegistrationData {
                supplier: party_id(self.supplier)?,
                export_supplier: opt_party_id(self.export_supplier)?,
                shipper: opt_party_id(self.shipper)?,
                network_operator: party_id(self.network_operator)?,
                meter_type: self.meter_type.parse().map_err(|e| corrupt("meter type", e))?,
                payment_mode: self
                    .payment_mode
                    .map(|p| p.parse())
                    .transpose()
                    .map_err(|e| corrupt("payment mode", e))?,
                annual_quantity_kwh: self
                    .annual_quantity_kwh
                    .map(u64::try_from)
                    .transpose()
                    .map_err(|e| corrupt("annual quantity", e))?,
            },
            recorded_at: ts(self.recorded_at)?,
            recorded_by: party_id(self.recorded_by)?,
        })
    }
}

/// The version in force at `at` (greatest `(effective_from, seq)` not after it), as known
/// at `known_at` when given. `cols_from` is "<columns> FROM <table>".
fn in_force<T>(
    conn: &Connection,
    cols_from: &str,
    m: Mpxn,
    at: Timestamp,
    known_at: Option<Timestamp>,
    row: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>, StoreError> {
    let known = if known_at.is_some() { " AND recorded_at <= ?3" } else { "" };
    let sql = format!(
        "SELECT {cols_from} WHERE mpxn = ?1 AND effective_from <= ?2{known} ORDER BY effective_from DESC, seq DESC LIMIT 1"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
    let found = match known_at {
        None => stmt.query_row(params![m.to_string(), micros(at)], row),
        Some(k) => stmt.query_row(params![m.to_string(), micros(at), micros(k)], row),
    };
    found.optional().map_err(backend)
}

const ENROL_COLS: &str = "seq, mpxn, effective_from, enrolled, recorded_at, recorded_by";

fn enrolment_row(r: &Row<'_>) -> rusqlite::Result<(i64, String, i64, bool, i64, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

fn into_enrolment(
    (seq, m, effective_from, enrolled, recorded_at, recorded_by): (i64, String, i64, bool, i64, String),
) -> Result<EnrolmentVersion, StoreError> {
    Ok(EnrolmentVersion {
        seq,
        mpxn: mpxn(&m)?,
        effective_from: ts(effective_from)?,
        enrolled,
        recorded_at: ts(recorded_at)?,
        recorded_by: party_id(recorded_by)?,
    })
}

fn aq(v: Option<u64>) -> Result<Option<i64>, StoreError> {
    v.map(|x| i64::try_from(x).map_err(|_| StoreError::Conflict("annual quantity out of range".into()))).transpose()
}

/// Insert the metering point if new; true when it was created.
fn ensure_metering_point(conn: &Connection, m: &Mpxn, at: Timestamp) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached("INSERT OR IGNORE INTO metering_points (mpxn, fuel, created_at) VALUES (?1, ?2, ?3)")
        .and_then(|mut s| s.execute(params![m.to_string(), m.fuel().as_str(), micros(at)]))
        .map_err(classify)?;
    Ok(n == 1)
}

/// Insert a registration version as recorded; its seq.
fn insert_new_registration(conn: &Connection, r: &NewRegistration) -> Result<i64, StoreError> {
    insert_registration(
        conn,
        &r.mpxn.to_string(),
        micros(r.effective_from),
        &r.data,
        micros(r.recorded_at),
        r.recorded_by.as_str(),
    )
}

fn insert_registration(
    conn: &Connection,
    m: &str,
    effective_from: i64,
    d: &RegistrationData,
    recorded_at: i64,
    recorded_by: &str,
) -> Result<i64, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO registrations (mpxn, effective_from, supplier, export_supplier, shipper, \
             network_operator, meter_type, payment_mode, annual_quantity_kwh, recorded_at, recorded_by) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .map_err(backend)?;
    stmt.execute(params![
        m,
        effective_from,
        d.supplier.as_str(),
        d.export_supplier.as_ref().map(PartyId::as_str),
        d.shipper.as_ref().map(PartyId::as_str),
        d.network_operator.as_str(),
        d.meter_type.as_str(),
        d.payment_mode.map(|p| p.as_str()),
        aq(d.annual_quantity_kwh)?,
        recorded_at,
        recorded_by,
    ])
    .map_err(classify)?;
    Ok(conn.last_insert_rowid())
}

fn is_recorded(conn: &Connection, m: &str, effective_from: i64, d: &RegistrationData) -> Result<bool, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT 1 FROM registrations WHERE mpxn = ?1 AND effective_from = ?2 AND supplier = ?3 \
             AND export_supplier IS ?4 AND shipper IS ?5 AND network_operator = ?6 AND meter_type = ?7 \
             AND payment_mode IS ?8 AND annual_quantity_kwh IS ?9 LIMIT 1",
        )
        .map_err(backend)?;
    stmt.exists(params![
        m,
        effective_from,
        d.supplier.as_str(),
        d.export_supplier.as_ref().map(PartyId::as_str),
        d.shipper.as_ref().map(PartyId::as_str),
        d.network_operator.as_str(),
        d.meter_type.as_str(),
        d.payment_mode.map(|p| p.as_str()),
        aq(d.annual_quantity_kwh)?,
    ])
    .map_err(backend)
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_party(&self, party: Party) -> Result<(), StoreError> {
        self.engine
            .write(move |conn| {
                conn.prepare_cached(&format!("INSERT INTO parties ({PARTY_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"))
                    .and_then(|mut s| {
                        s.execute(params![
                            party.id.as_str(),
                            party.name,
                            party.roles.codes(),
                            party.originator.to_plain(),
                            party.signing_key_spki,
                            micros(party.created_at),
                        ])
                    })
                    .map_err(|e| match classify(e) {
                        StoreError::Conflict(m) if m.contains("[parties.originator]") => StoreError::Conflict(format!(
                            "originator {} is already used by another party",
                            party.originator
                        )),
                        StoreError::Conflict(_) => {
                            StoreError::Conflict(format!("a party with id {} already exists", party.id))
                        }
                        other => other,
                    })?;
                Ok(())
            })
            .await
    }

    async fn party(&self, id: &PartyId) -> Result<Option<Party>, StoreError> {
        let id = id.to_string();
        self.engine
            .read(move |conn| {
                let raw = conn
                    .prepare_cached(&format!("SELECT {PARTY_COLS} FROM parties WHERE id = ?1"))
                    .and_then(|mut s| s.query_row([id], |r| raw_party(r, 0)).optional())
                    .map_err(backend)?;
                raw.map(RawParty::into_party).transpose()
            })
            .await
    }

    async fn parties(&self) -> Result<Vec<Party>, StoreError> {
        self.engine
            .read(move |conn| {
                let mut s =
                    conn.prepare_cached(&format!("SELECT {PARTY_COLS} FROM parties ORDER BY id")).map_err(backend)?;
                let rows = s.query_map([], |r| raw_party(r, 0)).map_err(backend)?;
                rows.map(|r| r.map_err(backend).and_then(RawParty::into_party)).collect()
            })
            .await
    }

    async fn insert_token(&self, token: TokenRecord, per_party_max: usize) -> Result<(), StoreError> {
        self.engine
            .write(move |conn| {
                let held: i64 = conn
                    .query_row("SELECT count(*) FROM api_tokens WHERE party_id = ?1", [token.party.as_str()], |r| {
                        r.get(0)
                    })
                    .map_err(backend)?;
                if held as usize >= per_party_max {
                    return Err(StoreError::Conflict(format!(
                        "party {} already has {per_party_max} tokens (revoked ones count)",
                        token.party
                    )));
                }
                conn.prepare_cached(&format!("INSERT INTO api_tokens ({TOKEN_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"))
                    .and_then(|mut s| {
                        s.execute(params![
                            token.id,
                            token.party.as_str(),
                            token.label,
                            token.hash.as_slice(),
                            micros(token.created_at),
                            token.revoked_at.map(micros),
                        ])
                    })
                    .map_err(|e| match classify(e) {
                        StoreError::Conflict(_) => {
                            StoreError::Conflict("token id collision; issue the token again".into())
                        }
                        other => other,
                    })?;
                Ok(())
            })
            .await
    }

    async fn revoke_token(&self, party: &PartyId, token_id: &str, at: Timestamp) -> Result<bool, StoreError> {
        let (party, token_id) = (party.to_string(), token_id.to_string());
        self.engine
            .write(move |conn| {
                let revoked: Option<Option<i64>> = conn
                    .query_row(
                        "SELECT revoked_at FROM api_tokens WHERE id = ?1 AND party_id = ?2",
                        params![token_id, party],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(backend)?;
                match revoked {
                    None => Err(StoreError::NotFound(format!("party {party} has no token {token_id}"))),
                    Some(Some(_)) => Ok(false),
                    Some(None) => {
                        conn.execute(
                            "UPDATE api_tokens SET revoked_at = ?1 WHERE id = ?2 AND party_id = ?3",
                            params![micros(at), token_id, party],
                        )
                        .map_err(backend)?;
                        Ok(true)
                    }
                }
            })
            .await
    }

    async fn tokens(&self, party: &PartyId) -> Result<Vec<TokenRecord>, StoreError> {
        let party = party.to_string();
        self.engine
            .read(move |conn| {
                let mut s = conn
                    .prepare_cached(&format!(
                        "SELECT {TOKEN_COLS} FROM api_tokens WHERE party_id = ?1 ORDER BY created_at, id"
                    ))
                    .map_err(backend)?;
                let rows = s.query_map([party], raw_token).map_err(backend)?;
                rows.map(|r| r.map_err(backend).and_then(RawToken::into_record)).collect()
            })
            .await
    }

    async fn token_by_hash(&self, hash: [u8; 32]) -> Result<Option<(TokenRecord, Party)>, StoreError> {
        self.engine
            .read(move |conn| {
                let sql = "SELECT t.id, t.party_id, t.label, t.hash, t.created_at, t.revoked_at, \
                           p.id, p.name, p.roles, p.originator, p.signing_key, p.created_at \
                           FROM api_tokens t JOIN parties p ON p.id = t.party_id WHERE t.hash = ?1";
                let row = conn
                    .prepare_cached(sql)
                    .and_then(|mut s| {
                        s.query_row([hash.as_slice()], |r| Ok((raw_token(r)?, raw_party(r, 6)?))).optional()
                    })
                    .map_err(backend)?;
                row.map(|(t, p)| Ok((t.into_record()?, p.into_party()?))).transpose()
            })
            .await
    }

    async fn append_registration(&self, r: NewRegistration) -> Result<RegistrationVersion, StoreError> {
        self.engine
            .write(move |conn| {
                ensure_metering_point(conn, &r.mpxn, r.recorded_at)?;
                let seq = insert_new_registration(conn, &r)?;
                Ok(RegistrationVersion {
                    seq,
                    mpxn: r.mpxn,
                    effective_from: r.effective_from,
                    data: r.data,
                    recorded_at: r.recorded_at,
                    recorded_by: r.recorded_by,
                })
            })
            .await
    }

    async fn append_enrolment(&self, e: NewEnrolment) -> Result<EnrolmentVersion, StoreError> {
        self.engine
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO enrolments (mpxn, effective_from, enrolled, recorded_at, recorded_by) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        e.mpxn.to_string(),
                        micros(e.effective_from),
                        e.enrolled,
                        micros(e.recorded_at),
                        e.recorded_by.as_str()
                    ])
                })
                .map_err(|err| match classify(err) {
                    StoreError::Conflict(_) => StoreError::NotFound(format!("metering point {}", e.mpxn)),
                    other => other,
                })?;
                Ok(EnrolmentVersion {
                    seq: conn.last_insert_rowid(),
                    mpxn: e.mpxn,
                    effective_from: e.effective_from,
                    enrolled: e.enrolled,
                    recorded_at: e.recorded_at,
                    recorded_by: e.recorded_by,
                })
            })
            .await
    }

    async fn metering_point(&self, m: Mpxn) -> Result<Option<MeteringPoint>, StoreError> {
        self.engine
            .read(move |conn| {
                let created: Option<i64> = conn
                    .prepare_cached("SELECT created_at FROM metering_points WHERE mpxn = ?1")
                    .and_then(|mut s| s.query_row([m.to_string()], |r| r.get(0)).optional())
                    .map_err(backend)?;
                created.map(|c| Ok(MeteringPoint { mpxn: m, created_at: ts(c)? })).transpose()
            })
            .await
    }

    async fn registrations_at(
        &self,
        keys: Vec<(Mpxn, Timestamp)>,
    ) -> Result<Vec<Option<RegistrationVersion>>, StoreError> {
        self.engine
            .read(move |conn| {
                let sql = format!("{REG_COLS} FROM registrations");
                keys.iter()
                    .map(|(m, at)| {
                        in_force(conn, &sql, *m, *at, None, raw_registration)?
                            .map(RawRegistration::into_version)
                            .transpose()
                    })
                    .collect()
            })
            .await
    }

    async fn registration_at(
        &self,
        m: Mpxn,
        at: Timestamp,
        known_at: Option<Timestamp>,
    ) -> Result<Option<RegistrationVersion>, StoreError> {
        Ok(self.mpxn_facts(m).await?.registration_at(at, known_at))
    }

    async fn enrolment_at(
        &self,
        m: Mpxn,
        at: Timestamp,
        known_at: Option<Timestamp>,
    ) -> Result<Option<EnrolmentVersion>, StoreError> {
        Ok(self.mpxn_facts(m).await?.enrolment_at(at, known_at))
    }

    async fn registration_and_enrolment_at(
        &self,
        m: Mpxn,
        at: Timestamp,
    ) -> Result<(Option<RegistrationVersion>, Option<EnrolmentVersion>), StoreError> {
        // One lookup of the planning facts, where asking for each was one each.
        let facts = self.mpxn_facts(m).await?;
        Ok((facts.registration_at(at, None), facts.enrolment_at(at, None)))
    }

    async fn registration_history(&self, m: Mpxn) -> Result<Vec<RegistrationVersion>, StoreError> {
        Ok(self.mpxn_facts(m).await?.registrations.clone())
    }

    async fn enrolment_history(&self, m: Mpxn) -> Result<Vec<EnrolmentVersion>, StoreError> {
        self.engine
            .read(move |conn| {
                let mut s = conn
                    .prepare_cached(&format!("SELECT {ENROL_COLS} FROM enrolments WHERE mpxn = ?1 ORDER BY seq"))
                    .map_err(backend)?;
                let rows = s.query_map([m.to_string()], enrolment_row).map_err(backend)?;
                rows.map(|r| r.map_err(backend).and_then(into_enrolment)).collect()
            })
            .await
    }

    async fn import_registrations(
        &self,
        mut rows: tokio::sync::mpsc::Receiver<ImportMsg>,
        recorded_at: Timestamp,
        recorded_by: PartyId,
    ) -> Result<ImportSummary, StoreError> {
        self.engine
            .write_solo(move |conn| {
                let mut summary = ImportSummary::default();
                let (at, by) = (micros(recorded_at), recorded_by.to_string());
                loop {
                    match rows.blocking_recv() {
                        Some(ImportMsg::Rows(chunk)) => {
                            for row in chunk {
                                summary.rows += 1;
                                let m = row.mpxn.to_string();
                                let from = micros(row.effective_from);
                                if ensure_metering_point(conn, &row.mpxn, recorded_at)? {
                                    summary.metering_points_created += 1;
                                } else if is_recorded(conn, &m, from, &row.data)? {
                                    summary.duplicates_skipped += 1;
                                    continue;
                                }
                                insert_registration(conn, &m, from, &row.data, at, &by)
                                    .map_err(|e| StoreError::Conflict(format!("metering point {m}: {e}")))?;
                                summary.registrations_added += 1;
                            }
                        }
                        Some(ImportMsg::Commit) => return Ok(summary),
                        Some(ImportMsg::Abort(reason)) => return Err(StoreError::Conflict(reason)),
                        None => {
                            return Err(StoreError::Backend(
                                "the import's input ended without a commit; nothing was imported".into(),
                            ));
                        }
                    }
                }
            })
            .await
    }

    async fn state(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        self.engine
            .read(move |conn| {
                conn.query_row("SELECT value FROM hub_state WHERE key = ?1", [key], |r| r.get(0))
                    .optional()
                    .map_err(backend)
            })
            .await
    }

    async fn set_state(&self, key: &str, value: String) -> Result<(), StoreError> {
        let key = key.to_string();
        self.engine
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO hub_state (key, value) VALUES (?1, ?2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    params![key, value],
                )
                .map_err(backend)?;
                Ok(())
            })
            .await
    }

    async fn counts(&self) -> Result<StoreCounts, StoreError> {
        self.engine
            .read_heavy(move |conn| {
                let count = |table: &str| -> Result<u64, StoreError> {
                    let n: i64 =
                        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).map_err(backend)?;
                    Ok(n as u64)
                };
                Ok(StoreCounts {
                    parties: count("parties")?,
                    metering_points: count("metering_points")?,
                    registrations: count("registrations")?,
                })
            })
            .await
    }

    async fn install_premises(&self, p: NewPremises) -> Result<PremisesRecord, StoreError> {
        self.engine.write(move |conn| pipeline::install_premises(conn, &p)).await
    }

    async fn enrol_homes(&self, homes: Vec<crate::EnrolledHome>) -> Result<(), StoreError> {
        self.engine.write_solo(move |conn| pipeline::enrol_homes(conn, &homes)).await
    }

    async fn premises(&self, id: i64) -> Result<Option<PremisesRecord>, StoreError> {
        self.engine.read(move |conn| pipeline::premises(conn, id)).await
    }

    async fn device(&self, eui: Eui64) -> Result<Option<DeviceRecord>, StoreError> {
        if let Some(d) = self.planning.device(eui) {
            return Ok((*d).clone());
        }
        let ticket = self.planning.ticket();
        let found = self.engine.read(move |conn| pipeline::device(conn, eui)).await?;
        self.planning.put_device(eui, ticket, found.clone());
        Ok(found)
    }

    async fn devices(&self, euis: Vec<Eui64>) -> Result<Vec<Option<DeviceRecord>>, StoreError> {
        self.engine.read(move |conn| euis.iter().map(|e| pipeline::device(conn, *e)).collect()).await
    }

    async fn add_device(
        &self,
        premises_id: i64,
        e: Eui64,
        kind: &str,
        at: Timestamp,
    ) -> Result<DeviceRecord, StoreError> {
        let kind = kind.to_string();
        self.engine.write(move |conn| pipeline::add_device(conn, premises_id, e, &kind, at)).await
    }

    async fn premises_devices(&self, premises_id: i64) -> Result<Vec<DeviceRecord>, StoreError> {
        self.engine.read(move |conn| pipeline::premises_devices(conn, premises_id)).await
    }

    async fn device_for_mpxn(&self, m: Mpxn) -> Result<Option<DeviceRecord>, StoreError> {
        // The meter is asked for by EUI when its request runs: keep it by EUI too. The ticket
        // is taken before the metering point's facts are looked up, so that a change to the
        // meter since they were read cannot be kept.
        let ticket = self.planning.ticket();
        let meter = self.mpxn_facts(m).await?.meter.clone();
        if let Some(d) = &meter {
            self.planning.put_device(d.eui, ticket, Some(d.clone()));
        }
        Ok(meter)
    }

    async fn reserve_counters(&self, originator: Eui64, n: u64) -> Result<u64, StoreError> {
        assert!(n >= 1, "reserve at least one counter");
        self.engine.write(move |conn| pipeline::reserve_counters(conn, originator, n)).await
    }

    async fn insert_request(&self, mut r: RequestRecord) -> Result<RequestRecord, StoreError> {
        // The row keeps microseconds: so does what is answered and kept (a system clock
        // gives nanoseconds).
        r.submitted_at = as_stored(r.submitted_at);
        r.status_at = as_stored(r.status_at);
        r.execute_at = r.execute_at.map(as_stored);
        // Without a savepoint (see `Engine::write_checked_then`): a conflicting id is refused by
        // the first statement, before anything is written, and answered as a value.
        let fresh = self.fresh.clone();
        self.engine
            .write_checked_then(
                move |conn| match pipeline::insert_request(conn, &r) {
                    Ok(seq) => {
                        r.seq = seq;
                        Ok(Ok(r))
                    }
                    Err(e @ StoreError::Conflict(_)) => Ok(Err(e)),
                    Err(e) => Err(e),
                },
                // Kept at once after the commit: a search for due requests a moment later
                // finds it kept (one between the two reads its row).
                move |written| {
                    if let Ok(r) = written {
                        fresh.keep(r);
                    }
                },
            )
            .await?
    }

    async fn record_hub_request(
        &self,
        mut r: RequestRecord,
        c: crate::Completion,
    ) -> Result<RequestRecord, StoreError> {
        self.engine
            .write(move |conn| {
                r.seq = schedules::record_hub_request(conn, &r, &c)?;
                r.status = crate::RequestStatus::Completed;
                r.status_at = c.at;
                Ok(r)
            })
            .await
    }

    async fn schedule(&self, id: &str) -> Result<Option<crate::ScheduleRecord>, StoreError> {
        let id = id.to_string();
        self.engine.read(move |conn| schedules::schedule(conn, &id)).await
    }

    async fn schedules(
        &self,
        party: &PartyId,
        target: Option<Eui64>,
    ) -> Result<Vec<crate::ScheduleRecord>, StoreError> {
        let party = party.clone();
        self.engine.read(move |conn| schedules::schedules(conn, &party, target)).await
    }

    async fn due_schedules(&self, now: Timestamp, limit: usize) -> Result<Vec<crate::ScheduleRecord>, StoreError> {
        self.engine.read(move |conn| schedules::due_schedules(conn, now, limit)).await
    }

    async fn record_schedule_run(
        &self,
        schedule_id: &str,
        run_at: Timestamp,
        mut request: RequestRecord,
        next: Option<Timestamp>,
    ) -> Result<RequestRecord, StoreError> {
        let id = schedule_id.to_string();
        self.engine
            .write(move |conn| {
                request.seq = schedules::record_schedule_run(conn, &id, run_at, &request, next)?;
                Ok(request)
            })
            .await
    }

    async fn reads_between(
        &self,
        party: &PartyId,
        srvs: &'static [&'static str],
        from: Timestamp,
        to: Timestamp,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<crate::ReadRecord>, StoreError> {
        let party = party.clone();
        self.engine
            .read_heavy(move |conn| schedules::reads_between(conn, &party, srvs, from, to, after_seq, limit))
            .await
    }

    async fn read(&self, request_id: &str) -> Result<Option<crate::ReadRecord>, StoreError> {
        let id = request_id.to_string();
        self.engine.read(move |conn| schedules::read(conn, &id)).await
    }

    async fn forward_read(
        &self,
        request_id: &str,
        from: &PartyId,
        to: &PartyId,
        at: Timestamp,
    ) -> Result<crate::ForwardRecord, StoreError> {
        let (id, from, to) = (request_id.to_string(), from.clone(), to.clone());
        self.engine.write(move |conn| schedules::forward_read(conn, &id, &from, &to, at)).await
    }

    async fn forwarded_reads(
        &self,
        to: &PartyId,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<(crate::ForwardRecord, crate::ReadRecord)>, StoreError> {
        let to = to.clone();
        self.engine.read_heavy(move |conn| schedules::forwarded_reads(conn, &to, after_seq, limit)).await
    }

    async fn insert_grant(&self, g: crate::GrantRecord) -> Result<crate::GrantRecord, StoreError> {
        self.engine.write(move |conn| grants::insert(conn, &g)).await
    }

    async fn end_grant(
        &self,
        kind: crate::GrantKind,
        seq: i64,
        valid_to: Timestamp,
        at: Timestamp,
        by: PartyId,
        reason: String,
    ) -> Result<crate::GrantRecord, StoreError> {
        self.engine.write(move |conn| grants::end(conn, kind, seq, valid_to, at, &by, &reason)).await
    }

    async fn grants(&self, kind: crate::GrantKind, m: Mpxn) -> Result<Vec<crate::GrantRecord>, StoreError> {
        self.engine.read(move |conn| grants::list(conn, kind, m)).await
    }

    async fn prepayment_key(&self, party: &PartyId) -> Result<Option<(Vec<u8>, Vec<u8>)>, StoreError> {
        let party = party.clone();
        self.engine.read(move |conn| prepayment::prepayment_key(conn, &party)).await
    }

    async fn keep_prepayment_key(
        &self,
        party: &PartyId,
        private_key: Vec<u8>,
        public_point: Vec<u8>,
        at: Timestamp,
    ) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
        let party = party.clone();
        self.engine
            .write(move |conn| prepayment::keep_prepayment_key(conn, &party, &private_key, &public_point, at))
            .await
    }

    async fn next_utrn_counter(&self, supplier: &PartyId, meter: Eui64) -> Result<u64, StoreError> {
        let supplier = supplier.clone();
        self.engine.write(move |conn| prepayment::next_utrn_counter(conn, &supplier, meter)).await
    }

    async fn payment_endpoint(&self, party: &PartyId) -> Result<Option<(String, u32)>, StoreError> {
        let party = party.clone();
        self.engine.read(move |conn| prepayment::payment_endpoint(conn, &party)).await
    }

    async fn set_payment_endpoint(
        &self,
        party: &PartyId,
        endpoint: Option<(String, u32)>,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let party = party.clone();
        self.engine.write(move |conn| prepayment::set_payment_endpoint(conn, &party, endpoint.as_ref(), at)).await
    }

    async fn top_up(&self, psp: &PartyId, payment_reference: &str) -> Result<Option<crate::TopUpRecord>, StoreError> {
        let (psp, reference) = (psp.clone(), payment_reference.to_string());
        self.engine.read(move |conn| prepayment::top_up(conn, &psp, &reference)).await
    }

    async fn insert_top_up(
        &self,
        t: crate::TopUpRecord,
        request: RequestRecord,
    ) -> Result<crate::TopUpRecord, StoreError> {
        self.engine.write(move |conn| prepayment::insert_top_up(conn, &t, &request)).await
    }

    async fn record_alerts(&self, alerts: Vec<crate::AlertRecord>) -> Result<u64, StoreError> {
        self.engine.write(move |conn| alerts::record_alerts(conn, &alerts)).await
    }

    async fn alerts_after(
        &self,
        party: &PartyId,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<crate::AlertRecord>, StoreError> {
        let party = party.clone();
        self.engine.read(move |conn| alerts::alerts_after(conn, &party, after_seq, limit)).await
    }

    async fn alert_routes(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.engine.read(alerts::routes).await
    }

    async fn set_alert_routes(&self, code: String, recipients: Vec<String>) -> Result<(), StoreError> {
        self.engine.write(move |conn| alerts::set_routes(conn, &code, &recipients)).await
    }

    async fn ack_alerts(&self, party: &PartyId, up_to: i64, at: Timestamp) -> Result<i64, StoreError> {
        let party = party.clone();
        self.engine.write(move |conn| alerts::ack(conn, &party, up_to, at)).await
    }

    async fn alert_ack(&self, party: &PartyId) -> Result<i64, StoreError> {
        let party = party.clone();
        self.engine.read(move |conn| alerts::acked(conn, &party)).await
    }

    async fn set_webhook(&self, w: crate::Webhook) -> Result<(), StoreError> {
        self.engine.write(move |conn| alerts::set_webhook(conn, &w)).await
    }

    async fn webhook(&self, party: &PartyId) -> Result<Option<crate::Webhook>, StoreError> {
        let party = party.clone();
        self.engine.read(move |conn| alerts::webhook(conn, &party)).await
    }

    async fn delete_webhook(&self, party: &PartyId) -> Result<bool, StoreError> {
        let party = party.clone();
        self.engine.write(move |conn| alerts::delete_webhook(conn, &party)).await
    }

    async fn due_webhooks(&self, now: Timestamp, limit: usize) -> Result<Vec<crate::Webhook>, StoreError> {
        self.engine.read(move |conn| alerts::due_webhooks(conn, now, limit)).await
    }

    async fn push_result(&self, party: &PartyId, result: crate::PushResult, at: Timestamp) -> Result<(), StoreError> {
        let party = party.clone();
        self.engine.write(move |conn| alerts::push_result(conn, &party, &result, at)).await
    }

    async fn dead_letters(
        &self,
        party: &PartyId,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<crate::DeadLetter>, StoreError> {
        let party = party.clone();
        self.engine.read(move |conn| alerts::dead_letters(conn, &party, after_seq, limit)).await
    }

    async fn request(&self, id: &str) -> Result<Option<(RequestRecord, Option<ResponseRecord>)>, StoreError> {
        let id = id.to_string();
        self.engine.read(move |conn| pipeline::request(conn, &id)).await
    }

    async fn transition_request(
        &self,
        id: &str,
        from: &[RequestStatus],
        to: RequestStatus,
        at: Timestamp,
        note: Option<String>,
        signature: Option<Vec<u8>>,
    ) -> Result<RequestRecord, StoreError> {
        let (id, from, fresh) = (id.to_string(), from.to_vec(), self.fresh.clone());
        self.engine
            .write(move |conn| {
                let r = pipeline::transition(conn, &id, &from, to, at, note, signature)?;
                // Whether or not this commits, a search reads the row from now on.
                fresh.forget(r.seq);
                Ok(r)
            })
            .await
    }

    async fn due_requests(
        &self,
        now: Timestamp,
        limit: usize,
        except: std::sync::Arc<std::collections::HashSet<i64>>,
        from_seq: i64,
    ) -> Result<DueRequests, StoreError> {
        let fresh = self.fresh.clone();
        self.engine.read(move |conn| pipeline::due_requests(conn, &fresh, now, limit, &except, from_seq)).await
    }

    async fn complete_requests(&self, completions: Vec<Completion>) -> Result<(), StoreError> {
        self.engine.write(move |conn| pipeline::complete_requests(conn, &completions)).await
    }

    async fn responses_after(
        &self,
        party: &PartyId,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<ResponseRecord>, StoreError> {
        let party = party.clone();
        self.engine.read(move |conn| pipeline::responses_after(conn, &party, after_seq, limit)).await
    }

    async fn requests_in_status(
        &self,
        party: &PartyId,
        status: RequestStatus,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        let party = party.clone();
        self.engine.read(move |conn| pipeline::requests_in_status(conn, &party, status, limit)).await
    }

    async fn insert_switch(
        &self,
        s: crate::SwitchRecord,
        first: crate::SwitchEvent,
        notices: Vec<crate::Notice>,
    ) -> Result<crate::SwitchRecord, StoreError> {
        self.engine
            .write(move |conn| {
                let s = switching::insert_switch(conn, &s, &first)?;
                switching::insert_notices(conn, &notices)?;
                Ok(s)
            })
            .await
    }

    async fn switch(&self, seq: i64) -> Result<Option<crate::SwitchRecord>, StoreError> {
        self.engine.read(move |conn| switching::switch(conn, seq)).await
    }

    async fn switches(
        &self,
        m: Option<Mpxn>,
        party: Option<&PartyId>,
        limit: usize,
    ) -> Result<Vec<crate::SwitchRecord>, StoreError> {
        let party = party.cloned();
        self.engine.read(move |conn| switching::switches(conn, m, party.as_ref(), limit)).await
    }

    async fn due_switches(&self, now: Timestamp, limit: usize) -> Result<Vec<crate::SwitchRecord>, StoreError> {
        self.engine.read(move |conn| switching::due_switches(conn, now, limit)).await
    }

    async fn update_switch(&self, u: crate::SwitchUpdate) -> Result<crate::SwitchRecord, StoreError> {
        self.engine.write(move |conn| switching::update_switch(conn, &u)).await
    }

    async fn switch_events(&self, seq: i64) -> Result<Vec<crate::SwitchEvent>, StoreError> {
        self.engine.read(move |conn| switching::switch_events(conn, seq)).await
    }

    async fn record_tenancy(&self, t: crate::NewTenancy) -> Result<crate::TenancyRecord, StoreError> {
        self.engine.write(move |conn| switching::record_tenancy(conn, &t)).await
    }

    async fn tenancies(&self, m: Mpxn) -> Result<Vec<crate::TenancyRecord>, StoreError> {
        self.engine.read(move |conn| switching::tenancies(conn, m)).await
    }

    async fn insert_firmware_image(&self, image: crate::FirmwareImage, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.engine.write(move |conn| firmware::insert_image(conn, &image, &bytes)).await
    }

    async fn firmware_image(&self, hash: &str) -> Result<Option<crate::FirmwareImage>, StoreError> {
        let hash = hash.to_string();
        self.engine.read(move |conn| firmware::image_of(conn, &hash)).await
    }

    async fn firmware_image_bytes(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let hash = hash.to_string();
        self.engine.read(move |conn| firmware::image_bytes(conn, &hash)).await
    }

    async fn firmware_images(&self) -> Result<Vec<crate::FirmwareImage>, StoreError> {
        self.engine.read(firmware::images).await
    }

    async fn insert_campaign(
        &self,
        c: crate::CampaignRecord,
        devices: Vec<Eui64>,
    ) -> Result<crate::CampaignRecord, StoreError> {
        self.engine.write(move |conn| firmware::insert_campaign(conn, &c, &devices)).await
    }

    async fn campaign(&self, seq: i64) -> Result<Option<crate::CampaignRecord>, StoreError> {
        self.engine.read(move |conn| firmware::campaign(conn, seq)).await
    }

    async fn campaigns(&self, party: Option<PartyId>, limit: usize) -> Result<Vec<crate::CampaignRecord>, StoreError> {
        self.engine.read(move |conn| firmware::campaigns(conn, party.as_ref(), limit)).await
    }

    async fn running_campaigns(&self, limit: usize) -> Result<Vec<crate::CampaignRecord>, StoreError> {
        self.engine.read(move |conn| firmware::running(conn, limit)).await
    }

    async fn campaign_devices(&self, seq: i64) -> Result<Vec<crate::CampaignDevice>, StoreError> {
        self.engine.read(move |conn| firmware::devices(conn, seq)).await
    }

    async fn step_campaign(&self, step: crate::CampaignStep) -> Result<crate::CampaignRecord, StoreError> {
        self.engine.write(move |conn| firmware::step(conn, &step)).await
    }

    async fn due_deliveries(&self, now: Timestamp, limit: usize) -> Result<Vec<crate::DeliveryRecord>, StoreError> {
        self.engine.read(move |conn| delivery::due(conn, now, limit)).await
    }

    async fn update_delivery(&self, u: crate::DeliveryUpdate) -> Result<crate::DeliveryRecord, StoreError> {
        self.engine.write(move |conn| delivery::update(conn, &u)).await
    }

    async fn deliveries(&self, purpose: &str, subject: i64) -> Result<Vec<crate::DeliveryRecord>, StoreError> {
        let purpose = purpose.to_string();
        self.engine.read(move |conn| delivery::of_subject(conn, &purpose, subject)).await
    }

    async fn notices_after(&self, party: &PartyId, after: i64, limit: usize) -> Result<Vec<crate::Notice>, StoreError> {
        let party = party.clone();
        self.engine.read(move |conn| switching::notices_after(conn, &party, after, limit)).await
    }

    async fn thresholds(&self) -> Result<Vec<ThresholdRecord>, StoreError> {
        self.engine.read(pipeline::thresholds).await
    }

    async fn set_threshold(&self, t: ThresholdRecord) -> Result<(), StoreError> {
        self.engine.write(move |conn| pipeline::set_threshold(conn, &t)).await
    }

    async fn remove_threshold(&self, party: Option<PartyId>, srv: &str) -> Result<bool, StoreError> {
        let srv = srv.to_string();
        self.engine.write(move |conn| pipeline::remove_threshold(conn, party.as_ref(), &srv)).await
    }

    async fn audit_trail(&self, request_id: &str) -> Result<Vec<AuditRecord>, StoreError> {
        let id = request_id.to_string();
        self.engine.read(move |conn| pipeline::audit_trail(conn, &id)).await
    }
}

/// Benchmark baseline: seconds to insert `rows` rows of registration-sized data into a bare
/// table (no index but the key) in one transaction, with the same durability. The ratio of
/// the registry import's rate to this shows what validation, indexes and history cost.
pub fn raw_insert_baseline(dir: &Path, rows: u64, durability: Durability) -> Result<std::time::Duration, StoreError> {
    let path = dir.join("baseline.sqlite3");
    let _ = std::fs::remove_file(&path);
    let conn = Connection::open(&path).map_err(backend)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(backend)?;
    conn.pragma_update(None, "synchronous", if durability == Durability::Full { "FULL" } else { "NORMAL" })
        .map_err(backend)?;
    conn.execute_batch(
        "CREATE TABLE t (seq INTEGER PRIMARY KEY, mpxn TEXT NOT NULL, effective_from INTEGER NOT NULL, \
         supplier TEXT NOT NULL, network_operator TEXT NOT NULL, meter_type TEXT NOT NULL, recorded_at INTEGER NOT NULL)",
    )
    .map_err(backend)?;
    let started = std::time::Instant::now();
    conn.execute_batch("BEGIN").map_err(backend)?;
    {
        let mut stmt = conn
            .prepare("INSERT INTO t (mpxn, effective_from, supplier, network_operator, meter_type, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
            .map_err(backend)?;
        for i in 0..rows {
            stmt.execute(params![
                format!("13{i:011}"),
                1_700_000_000_000_000i64,
                "elec-supplier-1",
                "dno-13",
                "smart-compliant",
                1_700_000_000_000_000i64
            ])
            .map_err(backend)?;
        }
    }
    conn.execute_batch("COMMIT").map_err(backend)?;
    let took = started.elapsed();
    drop(conn);
    let _ = std::fs::remove_file(&path);
    Ok(took)
}
