//! The planning cache: what every service request is planned from, twice (at submission and
//! again at execution): a metering point's registration and enrolment histories and its
//! linked meter, and devices by EUI. Read from the database in one read transaction per
//! metering point, and kept in memory until what they were read from changes.
//!
//! Metering points are kept packed (postcard, with party ids and device kinds as indexes
//! into a table of the texts seen): 86 bytes for a generated home's meter, about 216 with
//! the map's own overhead, so a national fleet's 32 million fit in about 7 GiB and a hub
//! plans from memory. The number kept is bounded ([`super::SqliteOptions::planning_entries`]);
//! beyond it the least recently used goes. A thread fills it after open and after every bulk
//! change ([`spawn_warmer`]); the last few thousand used are also kept decoded ([`Entry`]).
//!
//! Correctness rests on the engine telling the cache of every change, per key
//! (`engine::Changes`): the writer names the metering points and devices each commit
//! changed just before the commit and again after it, before any writer hears its write is
//! done, so a caller never reads back less than it wrote; a commit by anyone else drops
//! everything. A read that races a change must not keep what it read: every invalidation
//! takes a new generation and marks the shards it touched with it, and an entry read under
//! an older generation (taken before the read began) is not kept in a shard marked since.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use domain::registry::{EnrolmentVersion, MeterType, PaymentMode, RegistrationData, RegistrationVersion};
use domain::{Eui64, Mpxn, PartyId};
use jiff::Timestamp;
use lru::LruCache;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::{DeviceRecord, StoreError};

use super::engine::{Changed, Invalidate, backend};

/// Metering points kept at most, by default: 4 Mi, about 0.9 GiB when full.
pub const PLANNING_ENTRIES_DEFAULT: usize = 4 << 20;
/// Devices kept by EUI (those asked for by EUI, and meters looked up by their metering point
/// for the requests that will run on them). Entries need only outlive the few milliseconds
/// between a request's submission and its execution.
const DEVICE_ENTRIES: usize = 4096;
/// Entries dropped all at once beyond which they are freed on a thread of their own.
const DROP_INLINE_MAX: usize = 100_000;
/// Each map is split into this many independently locked shards.
const SHARDS: usize = 64;
/// Histories longer than this are read each time rather than kept (they are rare: one
/// version per change of supplier or of registration data).
const VERSIONS_KEPT_MAX: usize = 64;

/// What the store knows about one metering point.
#[derive(Debug, PartialEq)]
pub(crate) struct MpxnFacts {
    /// In recording order (`seq`).
    pub registrations: Vec<RegistrationVersion>,
    /// In recording order (`seq`).
    pub enrolments: Vec<EnrolmentVersion>,
    /// The meter linked to it.
    pub meter: Option<DeviceRecord>,
}

/// The version in force at `at` as known at `known_at` (all that was recorded, if `None`):
/// the latest effective one, the last recorded among equals. As the store's SQL picks it.
fn in_force<T>(
    versions: &[T],
    at: Timestamp,
    known_at: Option<Timestamp>,
    key: impl Fn(&T) -> (Timestamp, i64, Timestamp),
) -> Option<&T> {
    versions
        .iter()
        .filter(|v| {
            let (from, _, recorded) = key(v);
            from <= at && known_at.is_none_or(|k| recorded <= k)
        })
        .max_by_key(|v| {
            let (from, seq, _) = key(v);
            (from, seq)
        })
}

impl MpxnFacts {
    pub(crate) fn registration_at(&self, at: Timestamp, known_at: Option<Timestamp>) -> Option<RegistrationVersion> {
        in_force(&self.registrations, at, known_at, |r| (r.effective_from, r.seq, r.recorded_at)).cloned()
    }

    pub(crate) fn enrolment_at(&self, at: Timestamp, known_at: Option<Timestamp>) -> Option<EnrolmentVersion> {
        in_force(&self.enrolments, at, known_at, |e| (e.effective_from, e.seq, e.recorded_at)).cloned()
    }

    fn keepable(&self) -> bool {
        self.registrations.len() <= VERSIONS_KEPT_MAX && self.enrolments.len() <= VERSIONS_KEPT_MAX
    }
}

/// Read one metering point's facts in one read transaction.
pub(crate) fn load(conn: &Connection, m: Mpxn) -> Result<MpxnFacts, StoreError> {
    super::engine::in_snapshot(conn, || load_in_snapshot(conn, m))
}

fn load_in_snapshot(conn: &Connection, m: Mpxn) -> Result<MpxnFacts, StoreError> {
    let key = m.to_string();
    // In the order of the (mpxn, effective_from) indexes, which need no sort; then put in
    // recording order here.
    let mut registrations = {
        let sql = format!("SELECT {} FROM registrations WHERE mpxn = ?1 ORDER BY effective_from, seq", super::REG_COLS);
        let mut s = conn.prepare_cached(&sql).map_err(backend)?;
        let rows = s.query_map([&key], super::raw_registration).map_err(backend)?;
        rows.map(|r| r.map_err(backend).and_then(super::RawRegistration::into_version))
            .collect::<Result<Vec<_>, _>>()?
    };
    registrations.sort_by_key(|v| v.seq);
    let mut enrolments = {
        let sql = format!("SELECT {} FROM enrolments WHERE mpxn = ?1 ORDER BY effective_from, seq", super::ENROL_COLS);
        let mut s = conn.prepare_cached(&sql).map_err(backend)?;
        let rows = s.query_map([&key], super::enrolment_row).map_err(backend)?;
        rows.map(|r| r.map_err(backend).and_then(super::into_enrolment)).collect::<Result<Vec<_>, _>>()?
    };
    enrolments.sort_by_key(|v| v.seq);
    let meter = super::pipeline::device_for_mpxn(conn, m)?;
    Ok(MpxnFacts { registrations, enrolments, meter })
}

/// The facts of the (at most) `n` metering points after `after` in key order, in one read
/// transaction: three range scans of the tables' metering point indexes, not three
/// lookups each. Returns the last key read (`None`: there were none).
fn load_range(
    conn: &Connection,
    after: &str,
    n: usize,
) -> Result<Option<(String, Vec<(Mpxn, MpxnFacts)>)>, StoreError> {
    super::engine::in_snapshot(conn, || {
        let keys: Vec<String> = conn
            .prepare_cached("SELECT mpxn FROM metering_points WHERE mpxn > ?1 ORDER BY mpxn LIMIT ?2")
            .and_then(|mut s| s.query_map(rusqlite::params![after, n as i64], |r| r.get(0))?.collect())
            .map_err(backend)?;
        let Some(last) = keys.last().cloned() else { return Ok(None) };
        let mut all: std::collections::BTreeMap<String, MpxnFacts> = keys
            .into_iter()
            .map(|k| (k, MpxnFacts { registrations: Vec::new(), enrolments: Vec::new(), meter: None }))
            .collect();
        let range = rusqlite::params![after, &last];
        let sql = format!(
            "SELECT {} FROM registrations WHERE mpxn > ?1 AND mpxn <= ?2 ORDER BY mpxn, effective_from, seq",
            super::REG_COLS
        );
        let mut s = conn.prepare_cached(&sql).map_err(backend)?;
        for row in s.query_map(range, super::raw_registration).map_err(backend)? {
            let v = row.map_err(backend)?;
            if let Some(f) = all.get_mut(&v.mpxn) {
                f.registrations.push(v.into_version()?);
            }
        }
        let sql = format!(
            "SELECT {} FROM enrolments WHERE mpxn > ?1 AND mpxn <= ?2 ORDER BY mpxn, effective_from, seq",
            super::ENROL_COLS
        );
        let mut s = conn.prepare_cached(&sql).map_err(backend)?;
        for row in s.query_map(range, super::enrolment_row).map_err(backend)? {
            let row = row.map_err(backend)?;
            if let Some(f) = all.get_mut(&row.1) {
                f.enrolments.push(super::into_enrolment(row)?);
            }
        }
        let sql = format!("SELECT {} FROM devices WHERE mpxn > ?1 AND mpxn <= ?2", super::pipeline::DEVICE_COLS);
        let mut s = conn.prepare_cached(&sql).map_err(backend)?;
        for row in s.query_map(range, super::pipeline::raw_device).map_err(backend)? {
            let d = super::pipeline::into_device(row.map_err(backend)?)?;
            if let Some(f) = d.mpxn.map(|m| m.to_string()).and_then(|k| all.get_mut(&k)) {
                f.meter = Some(d);
            }
        }
        let facts = all
            .into_iter()
            .map(|(k, mut f)| {
                f.registrations.sort_by_key(|v| v.seq);
                f.enrolments.sort_by_key(|v| v.seq);
                Ok((super::mpxn(&k)?, f))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Some((last, facts)))
    })
}

/// Metering points read per read transaction while warming.
const WARM_CHUNK: usize = 1024;
/// Warming starts once everything was dropped and nothing more was for this long (a bulk
/// job drops everything at each of its commits).
const WARM_QUIET: std::time::Duration = std::time::Duration::from_millis(500);

/// Fill the cache in the background, in key order, each time everything was dropped (at
/// open, after a bulk job, after another process's commit), until it is full: so that a hub
/// plans from memory from its first requests on, not once it has met each metering point.
/// Requests never wait for it; what it reads under a ticket that a change overtook is not
/// kept (as for any read). Stops when the cache is closed (the store joins it) or dropped.
pub(crate) fn spawn_warmer(
    cache: &Arc<PlanningCache>,
    conn: Connection,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    let cache = Arc::downgrade(cache);
    std::thread::Builder::new()
        .name("meterhub-store-warm".into())
        .spawn(move || warm_loop(&cache, &conn))
        .map_err(|e| StoreError::Backend(format!("cannot start the planning cache's warming thread: {e}")))
}

fn warm_loop(weak: &std::sync::Weak<PlanningCache>, conn: &Connection) {
    // The count of drops the last warming started after.
    let mut warmed = 0;
    loop {
        let Some(cache) = weak.upgrade() else { return };
        let drops = cache.wait_for_drop(warmed, std::time::Duration::from_secs(1));
        if cache.closed() {
            return;
        }
        // Quiet: no more drops for a while (or closed).
        if drops == warmed || cache.wait_for_drop(drops, WARM_QUIET) != drops || cache.closed() {
            continue;
        }
        drop(cache);
        let started = std::time::Instant::now();
        let mut after = String::new();
        let mut kept = 0usize;
        loop {
            let Some(cache) = weak.upgrade() else { return };
            if cache.drops() != drops {
                // Dropped again meanwhile: start over once it is quiet.
                break;
            }
            let ticket = cache.ticket();
            let read = if cache.closed() || cache.full() { Ok(None) } else { load_range(conn, &after, WARM_CHUNK) };
            match read {
                Ok(Some((last, facts))) => {
                    after = last;
                    for (m, f) in facts {
                        kept += usize::from(cache.put_warm(m, ticket, &f));
                    }
                }
                Ok(None) => {
                    tracing::info!(
                        message = "Planning cache warmed.",
                        metering_points = kept,
                        seconds = started.elapsed().as_secs_f64()
                    );
                    cache.warmed.store(drops, Ordering::Release);
                    break;
                }
                Err(e) => {
                    tracing::warn!(message = "Warming the planning cache failed; it fills as requests come.", error = %e);
                    cache.warmed.store(drops, Ordering::Release);
                    break;
                }
            }
        }
        warmed = drops;
    }
}

/// How full the planning cache is and how it has served (`meterhub bench pipeline` prints it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanningStats {
    /// Metering points kept.
    pub entries: usize,
    /// Bytes their packed facts take (not counting the maps' own overhead).
    pub packed_bytes: usize,
    /// Metering point lookups answered from memory, and read from the database.
    pub hits: u64,
    pub misses: u64,
    /// Everything was dropped (at open, by a bulk job) and the warming thread has not yet
    /// filled the cache again.
    pub warming: bool,
}

/// One independently locked part of a map, and the last generation that invalidated in it.
/// Its map grows as it is filled (an `LruCache` made with a capacity allocates it all at
/// once), up to `cap`.
struct Shard<K: Hash + Eq, V, H = ()> {
    map: LruCache<K, V>,
    cap: usize,
    invalidated: u64,
    /// Kept beside the map, oldest first: for metering points, the decoded copies (see
    /// [`Hot`]).
    hot: std::collections::VecDeque<H>,
}

impl<K: Hash + Eq, V, H> Shard<K, V, H> {
    /// `k`'s value. While the shard is under half its bound nothing is near being pushed out,
    /// so the order of use is left as it is: moving an entry to the front of the list touches
    /// its two neighbours as well, cold memory when lookups are spread over a whole fleet.
    /// Past half, each lookup keeps the order again.
    fn look(&mut self, k: &K) -> Option<&V> {
        if self.map.len() * 2 < self.cap { self.map.peek(k) } else { self.map.get(k) }
    }

    /// Keep `v`, pushing out the least recently used beyond the bound.
    fn put(&mut self, k: K, v: V) {
        if self.map.put(k, v).is_none() && self.map.len() > self.cap {
            self.map.pop_lru();
        }
    }
}

fn shards<K: Hash + Eq, V, H>(entries: usize) -> Box<[Mutex<Shard<K, V, H>>]> {
    let cap = entries.div_ceil(SHARDS).max(1);
    (0..SHARDS)
        .map(|_| Mutex::new(Shard { map: LruCache::unbounded(), cap, invalidated: 0, hot: Default::default() }))
        .collect()
}

fn shard_of<K: Hash>(k: &K) -> usize {
    let mut h = std::hash::DefaultHasher::new();
    k.hash(&mut h);
    (h.finish() % SHARDS as u64) as usize
}

/// Texts that repeat across metering points (party ids, device kinds), each stored once;
/// packed entries hold their index.
#[derive(Default)]
struct Texts {
    inner: RwLock<TextTable>,
}

#[derive(Default)]
struct TextTable {
    /// By index: the text, and the party id it spells if it is one (checked once, and then
    /// shared by every entry unpacked).
    all: Vec<(String, Option<PartyId>)>,
    by_text: HashMap<String, u32>,
}

impl Texts {
    fn index(&self, text: &str) -> u32 {
        if let Some(i) = self.inner.read().expect("texts").by_text.get(text) {
            return *i;
        }
        let mut inner = self.inner.write().expect("texts");
        let TextTable { all, by_text } = &mut *inner;
        *by_text.entry(text.to_string()).or_insert_with(|| {
            all.push((text.to_string(), PartyId::parse(text).ok()));
            (all.len() - 1) as u32
        })
    }
}

/// The packed form of [`MpxnFacts`] (its metering point is the key). Timestamps are
/// microseconds.
#[derive(Serialize, Deserialize)]
struct Packed {
    registrations: Vec<PackedRegistration>,
    enrolments: Vec<PackedEnrolment>,
    meter: Option<PackedDevice>,
}

#[derive(Serialize, Deserialize)]
struct PackedRegistration {
    seq: i64,
    effective_from: i64,
    supplier: u32,
    export_supplier: Option<u32>,
    shipper: Option<u32>,
    network_operator: u32,
    smart: bool,
    payment_mode: Option<PaymentMode>,
    annual_quantity_kwh: Option<u64>,
    recorded_at: i64,
    recorded_by: u32,
}

#[derive(Serialize, Deserialize)]
struct PackedEnrolment {
    seq: i64,
    effective_from: i64,
    enrolled: bool,
    recorded_at: i64,
    recorded_by: u32,
}

#[derive(Serialize, Deserialize)]
struct PackedDevice {
    eui: u64,
    premises_id: i64,
    kind: u32,
    installed_at: i64,
    commissioned_at: Option<i64>,
    trusted_supplier: Option<u32>,
    on_han: bool,
    joined_to: Vec<u64>,
}

fn pack(f: &MpxnFacts, texts: &Texts) -> Box<[u8]> {
    let party = |p: &PartyId| texts.index(p.as_str());
    let packed = Packed {
        registrations: f
            .registrations
            .iter()
            .map(|r| PackedRegistration {
                seq: r.seq,
                effective_from: r.effective_from.as_microsecond(),
                supplier: party(&r.data.supplier),
                export_supplier: r.data.export_supplier.as_ref().map(party),
                shipper: r.data.shipper.as_ref().map(party),
                network_operator: party(&r.data.network_operator),
                smart: match r.data.meter_type {
                    MeterType::SmartCompliant => true,
                    MeterType::Traditional => false,
                },
                payment_mode: r.data.payment_mode,
                annual_quantity_kwh: r.data.annual_quantity_kwh,
                recorded_at: r.recorded_at.as_microsecond(),
                recorded_by: party(&r.recorded_by),
            })
            .collect(),
        enrolments: f
            .enrolments
            .iter()
            .map(|e| PackedEnrolment {
                seq: e.seq,
                effective_from: e.effective_from.as_microsecond(),
                enrolled: e.enrolled,
                recorded_at: e.recorded_at.as_microsecond(),
                recorded_by: party(&e.recorded_by),
            })
            .collect(),
        meter: f.meter.as_ref().map(|d| PackedDevice {
            eui: d.eui.as_u64(),
            premises_id: d.premises_id,
            kind: texts.index(&d.kind),
            installed_at: d.installed_at.as_microsecond(),
            commissioned_at: d.commissioned_at.map(Timestamp::as_microsecond),
            trusted_supplier: d.trusted_supplier.as_ref().map(party),
            on_han: d.on_han,
            joined_to: d.joined_to.iter().map(|e| e.as_u64()).collect(),
        }),
    };
    postcard::to_stdvec(&packed).expect("packing to memory cannot fail").into_boxed_slice()
}

fn unpack(m: Mpxn, bytes: &[u8], texts: &Texts) -> Result<MpxnFacts, StoreError> {
    let p: Packed = postcard::from_bytes(bytes).map_err(|e| super::corrupt("planning cache entry", e))?;
    let inner = texts.inner.read().expect("texts");
    let entry = |i: u32| inner.all.get(i as usize).ok_or_else(|| super::corrupt("planning cache text", i));
    let text = |i: u32| entry(i).map(|(t, _)| t);
    let party = |i: u32| entry(i)?.1.clone().ok_or_else(|| super::corrupt("planning cache party id", i));
    let ts = super::ts;
    Ok(MpxnFacts {
        registrations: p
            .registrations
            .into_iter()
            .map(|r| {
                Ok(RegistrationVersion {
                    seq: r.seq,
                    mpxn: m,
                    effective_from: ts(r.effective_from)?,
                    data: RegistrationData {
                        supplier: party(r.supplier)?,
                        export_supplier: r.export_supplier.map(party).transpose()?,
                        shipper: r.shipper.map(party).transpose()?,
                        network_operator: party(r.network_operator)?,
                        meter_type: if r.smart { MeterType::SmartCompliant } else { MeterType::Traditional },
                        payment_mode: r.payment_mode,
                        annual_quantity_kwh: r.annual_quantity_kwh,
                    },
                    recorded_at: ts(r.recorded_at)?,
                    recorded_by: party(r.recorded_by)?,
                })
            })
            .collect::<Result<_, StoreError>>()?,
        enrolments: p
            .enrolments
            .into_iter()
            .map(|e| {
                Ok(EnrolmentVersion {
                    seq: e.seq,
                    mpxn: m,
                    effective_from: ts(e.effective_from)?,
                    enrolled: e.enrolled,
                    recorded_at: ts(e.recorded_at)?,
                    recorded_by: party(e.recorded_by)?,
                })
            })
            .collect::<Result<_, StoreError>>()?,
        meter: p
            .meter
            .map(|d| {
                Ok::<_, StoreError>(DeviceRecord {
                    eui: Eui64::from_u64(d.eui),
                    premises_id: d.premises_id,
                    kind: text(d.kind)?.clone(),
                    installed_at: ts(d.installed_at)?,
                    commissioned_at: d.commissioned_at.map(ts).transpose()?,
                    mpxn: Some(m),
                    trusted_supplier: d.trusted_supplier.map(party).transpose()?,
                    on_han: d.on_han,
                    joined_to: d.joined_to.into_iter().map(Eui64::from_u64).collect(),
                })
            })
            .transpose()?,
    })
}

/// Decoded copies kept per shard at most: a request plans twice within milliseconds and looks
/// a metering point up several times each time, so the last few thousand used are kept
/// decoded as well as packed.
const HOT_PER_SHARD: usize = 64;

/// A decoded copy of a metering point's facts, kept beside the packed entries while it is
/// among its shard's [`HOT_PER_SHARD`] most recently decoded. In a short list of its own:
/// looking there touches a few warm cache lines, where the map's entries are spread over
/// memory that is cold when lookups cover a whole fleet.
type Hot = (Mpxn, Arc<MpxnFacts>);

/// A shard of metering points: packed facts by metering point, and the decoded copies.
type MpxnShard = Shard<Mpxn, Box<[u8]>, Hot>;

impl MpxnShard {
    fn hot_copy(&self, m: &Mpxn) -> Option<&Arc<MpxnFacts>> {
        self.hot.iter().rev().find(|(k, _)| k == m).map(|(_, f)| f)
    }

    /// Keep `facts` as `m`'s decoded copy (in place of any it had), dropping the longest-held
    /// copy beyond the bound.
    fn make_hot(&mut self, m: Mpxn, facts: Arc<MpxnFacts>) {
        self.forget_hot(&m);
        self.hot.push_back((m, facts));
        if self.hot.len() > HOT_PER_SHARD {
            self.hot.pop_front();
        }
    }

    fn forget_hot(&mut self, m: &Mpxn) {
        self.hot.retain(|(k, _)| k != m);
    }
}

/// The bounded maps, and the generation that orders invalidations against reads.
pub(crate) struct PlanningCache {
    generation: AtomicU64,
    mpxns: Box<[Mutex<MpxnShard>]>,
    devices: Box<[Mutex<Shard<Eui64, Arc<Option<DeviceRecord>>>>]>,
    texts: Texts,
    hits: AtomicU64,
    misses: AtomicU64,
    /// How many times everything was dropped, for the warming thread to wait on.
    drops: (Mutex<u64>, std::sync::Condvar),
    /// The count of drops the warming thread last finished a pass for.
    warmed: AtomicU64,
    closed: std::sync::atomic::AtomicBool,
}

impl PlanningCache {
    pub(crate) fn new(entries: usize) -> PlanningCache {
        PlanningCache {
            generation: AtomicU64::new(0),
            mpxns: shards(entries),
            devices: shards(DEVICE_ENTRIES),
            texts: Texts::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            drops: (Mutex::new(0), std::sync::Condvar::new()),
            warmed: AtomicU64::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn drops(&self) -> u64 {
        *self.drops.0.lock().expect("planning cache")
    }

    /// Wait (at most `timeout`, and not once closed) until everything was dropped more than
    /// `seen` times.
    fn wait_for_drop(&self, seen: u64, timeout: std::time::Duration) -> u64 {
        let drops = self.drops.0.lock().expect("planning cache");
        *self.drops.1.wait_timeout_while(drops, timeout, |d| *d == seen && !self.closed()).expect("planning cache").0
    }

    /// The store closes: warming stops. (Set under the lock the warming thread waits with,
    /// so that it cannot miss the wake-up.)
    pub(crate) fn close(&self) {
        let _drops = self.drops.0.lock().expect("planning cache");
        self.closed.store(true, Ordering::Release);
        self.drops.1.notify_all();
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Every shard holds as many as it may.
    fn full(&self) -> bool {
        self.mpxns.iter().all(|s| {
            let s = s.lock().expect("planning cache");
            s.map.len() >= s.cap
        })
    }

    /// Keep `facts` read by warming, unless something is kept for `m` already or its shard
    /// is full (warming never pushes out what requests used). Returns whether it was kept.
    fn put_warm(&self, m: Mpxn, ticket: u64, facts: &MpxnFacts) -> bool {
        if !facts.keepable() {
            return false;
        }
        let bytes = pack(facts, &self.texts);
        let mut shard = self.mpxns[shard_of(&m)].lock().expect("planning cache");
        if shard.invalidated > ticket || shard.map.len() >= shard.cap || shard.map.contains(&m) {
            return false;
        }
        shard.map.put(m, bytes);
        true
    }

    /// Taken before reading the database for an entry, and given back with what was read.
    pub(crate) fn ticket(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn mpxn(&self, m: Mpxn) -> Option<Arc<MpxnFacts>> {
        let mut shard = self.mpxns[shard_of(&m)].lock().expect("planning cache");
        if let Some(hot) = shard.hot_copy(&m) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Some(hot.clone());
        }
        let Some(packed) = shard.look(&m) else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        match unpack(m, packed, &self.texts) {
            Ok(f) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                let f = Arc::new(f);
                shard.make_hot(m, f.clone());
                Some(f)
            }
            Err(e) => {
                // Cannot happen short of a bug in packing: read it again.
                drop(shard);
                tracing::error!(message = "A planning cache entry was unreadable; reading the database.", error = %e);
                self.invalidate(&Changed::All);
                None
            }
        }
    }

    /// Keep `facts`, read after `ticket` was taken.
    pub(crate) fn put_mpxn(&self, m: Mpxn, ticket: u64, facts: Arc<MpxnFacts>) {
        if !facts.keepable() {
            return;
        }
        let bytes = pack(&facts, &self.texts);
        let mut shard = self.mpxns[shard_of(&m)].lock().expect("planning cache");
        if shard.invalidated > ticket {
            return;
        }
        shard.put(m, bytes);
        // Just read for a request, which will look it up again.
        shard.make_hot(m, facts);
    }

    pub(crate) fn device(&self, eui: Eui64) -> Option<Arc<Option<DeviceRecord>>> {
        self.devices[shard_of(&eui)].lock().expect("planning cache").look(&eui).cloned()
    }

    pub(crate) fn put_device(&self, eui: Eui64, ticket: u64, device: Option<DeviceRecord>) {
        let mut shard = self.devices[shard_of(&eui)].lock().expect("planning cache");
        if shard.invalidated <= ticket {
            shard.put(eui, Arc::new(device));
        }
    }

    /// Everything was dropped and the warming thread has not yet filled the cache again.
    pub(crate) fn warming(&self) -> bool {
        self.drops() != self.warmed.load(Ordering::Acquire)
    }

    /// (Walks every entry, for the packed size: not for a hot path.)
    pub(crate) fn stats(&self) -> PlanningStats {
        let (mut entries, mut packed_bytes) = (0, 0);
        for shard in &self.mpxns {
            let shard = shard.lock().expect("planning cache");
            entries += shard.map.len();
            packed_bytes += shard.map.iter().map(|(_, e)| e.len()).sum::<usize>();
        }
        PlanningStats {
            entries,
            packed_bytes,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            warming: self.warming(),
        }
    }
}

impl Invalidate for PlanningCache {
    fn invalidate(&self, changed: &Changed) {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let keys = match changed {
            Changed::All => None,
            Changed::Keys(keys) => {
                // Every key must be understood, or everything goes.
                let parsed: Option<Vec<Result<Mpxn, Eui64>>> = keys
                    .iter()
                    .map(|(column, text)| match *column {
                        "mpxn" => super::mpxn(text).ok().map(Ok),
                        "eui" => super::pipeline::eui(text).ok().map(Err),
                        _ => None,
                    })
                    .collect();
                parsed
            }
        };
        let Some(keys) = keys else {
            // Each shard's map is swapped for an empty one under its lock, and the full ones
            // are dropped on a thread of their own: dropping millions of entries takes a while,
            // and this runs on the writer's commit path.
            let mut dropped = Vec::with_capacity(SHARDS);
            for shard in &self.mpxns {
                let mut shard = shard.lock().expect("planning cache");
                dropped.push(std::mem::replace(&mut shard.map, LruCache::unbounded()));
                shard.hot.clear();
                shard.invalidated = shard.invalidated.max(generation);
            }
            for shard in &self.devices {
                let mut shard = shard.lock().expect("planning cache");
                shard.map.clear();
                shard.invalidated = shard.invalidated.max(generation);
            }
            if dropped.iter().map(LruCache::len).sum::<usize>() > DROP_INLINE_MAX {
                let _ = std::thread::Builder::new().name("meterhub-store-drop".into()).spawn(move || drop(dropped));
            }
            *self.drops.0.lock().expect("planning cache") += 1;
            self.drops.1.notify_all();
            return;
        };
        for key in keys {
            match key {
                Ok(m) => {
                    let mut shard = self.mpxns[shard_of(&m)].lock().expect("planning cache");
                    shard.map.pop(&m);
                    shard.forget_hot(&m);
                    shard.invalidated = shard.invalidated.max(generation);
                }
                Err(eui) => {
                    let mut shard = self.devices[shard_of(&eui)].lock().expect("planning cache");
                    shard.map.pop(&eui);
                    shard.invalidated = shard.invalidated.max(generation);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts() -> impl Strategy<Value = Timestamp> {
        (-10i64.pow(15)..10i64.pow(16)).prop_map(|us| Timestamp::from_microsecond(us).unwrap())
    }

    fn party() -> impl Strategy<Value = PartyId> {
        prop::sample::select(vec!["acme", "brightside", "dno-14", "np-ssen"]).prop_map(|p| PartyId::parse(p).unwrap())
    }

    fn facts(m: Mpxn) -> impl Strategy<Value = MpxnFacts> {
        let registration = (
            any::<i64>(),
            ts(),
            (party(), prop::option::of(party()), prop::option::of(party()), party()),
            (any::<bool>(), prop::option::of(prop::sample::select(vec![PaymentMode::Credit, PaymentMode::Prepayment]))),
            prop::option::of(any::<u64>()),
            (ts(), party()),
        )
            .prop_map(move |(seq, from, (supplier, export, shipper, no), (smart, pm), aq, (at, by))| {
                RegistrationVersion {
                    seq,
                    mpxn: m,
                    effective_from: from,
                    data: RegistrationData {
                        supplier,
                        export_supplier: export,
                        shipper,
                        network_operator: no,
                        meter_type: if smart { MeterType::SmartCompliant } else { MeterType::Traditional },
                        payment_mode: pm,
                        annual_quantity_kwh: aq,
                    },
                    recorded_at: at,
                    recorded_by: by,
                }
            });
        let enrolment = (any::<i64>(), ts(), any::<bool>(), ts(), party()).prop_map(move |(seq, from, on, at, by)| {
            EnrolmentVersion { seq, mpxn: m, effective_from: from, enrolled: on, recorded_at: at, recorded_by: by }
        });
        let meter = (
            any::<u64>(),
            any::<i64>(),
            prop::sample::select(vec!["electricity-meter", "gas-meter"]),
            (ts(), prop::option::of(ts())),
            prop::option::of(party()),
            any::<bool>(),
            prop::collection::vec(any::<u64>(), 0..3),
        )
            .prop_map(move |(eui, premises_id, kind, (installed, commissioned), trusted, on_han, joined)| {
                DeviceRecord {
                    eui: Eui64::from_u64(eui),
                    premises_id,
                    kind: kind.to_string(),
                    installed_at: installed,
                    commissioned_at: commissioned,
                    mpxn: Some(m),
                    trusted_supplier: trusted,
                    on_han,
                    joined_to: joined.into_iter().map(Eui64::from_u64).collect(),
                }
            });
        (prop::collection::vec(registration, 0..4), prop::collection::vec(enrolment, 0..4), prop::option::of(meter))
            .prop_map(|(registrations, enrolments, meter)| MpxnFacts { registrations, enrolments, meter })
    }

    fn mpxn(s: &str) -> Mpxn {
        super::super::mpxn(s).unwrap()
    }

    proptest! {
        /// Whatever a metering point's facts, the cache gives back exactly what it was given.
        #[test]
        fn packed_facts_read_back_as_they_were(f in facts(mpxn("1312345678907"))) {
            let texts = Texts::default();
            let packed = pack(&f, &texts);
            let back = unpack(mpxn("1312345678907"), &packed, &texts).unwrap();
            prop_assert_eq!(back, f);
        }
    }

    fn one_registration(m: Mpxn, supplier: &str) -> MpxnFacts {
        let t = Timestamp::from_second(1_700_000_000).unwrap();
        let p = |s: &str| PartyId::parse(s).unwrap();
        MpxnFacts {
            registrations: vec![RegistrationVersion {
                seq: 1,
                mpxn: m,
                effective_from: t,
                data: RegistrationData {
                    supplier: p(supplier),
                    export_supplier: None,
                    shipper: None,
                    network_operator: p("dno-14"),
                    meter_type: MeterType::SmartCompliant,
                    payment_mode: None,
                    annual_quantity_kwh: None,
                },
                recorded_at: t,
                recorded_by: p(supplier),
            }],
            enrolments: Vec::new(),
            meter: None,
        }
    }

    fn supplier(f: &MpxnFacts) -> &str {
        f.registrations[0].data.supplier.as_str()
    }

    /// A read that began before a change to its metering point is not kept (it may hold
    /// what was there before); one that began after is. Changes to other metering points
    /// leave entries alone, and a change of everything drops them all.
    #[test]
    fn what_was_read_before_a_change_is_not_kept() {
        let cache = PlanningCache::new(1024);
        let (a, b) = (mpxn("1312345678907"), mpxn("1700053058802"));
        let before = cache.ticket();
        cache.invalidate(&Changed::Keys(vec![("mpxn", a.to_string())]));
        cache.put_mpxn(a, before, Arc::new(one_registration(a, "acme")));
        assert!(cache.mpxn(a).is_none(), "read before the change, kept after it");
        let after = cache.ticket();
        cache.put_mpxn(a, after, Arc::new(one_registration(a, "brightside")));
        cache.put_mpxn(b, after, Arc::new(one_registration(b, "acme")));
        assert_eq!(supplier(&cache.mpxn(a).unwrap()), "brightside");
        // Kept again from a newer read: its decoded copy is the newer one.
        cache.put_mpxn(a, cache.ticket(), Arc::new(one_registration(a, "acme")));
        assert_eq!(supplier(&cache.mpxn(a).unwrap()), "acme");

        cache.invalidate(&Changed::Keys(vec![("mpxn", a.to_string())]));
        assert!(cache.mpxn(a).is_none());
        assert_eq!(supplier(&cache.mpxn(b).unwrap()), "acme", "another metering point's change dropped it");

        cache.invalidate(&Changed::Keys(vec![("eui", "00000000000000A1".into())]));
        assert!(cache.mpxn(b).is_some(), "a device's own change leaves metering points alone");
        cache.invalidate(&Changed::Keys(vec![("mpxn", "not an mpxn".into())]));
        assert!(cache.mpxn(b).is_none(), "a key it cannot read drops everything");

        cache.put_mpxn(b, cache.ticket(), Arc::new(one_registration(b, "acme")));
        cache.invalidate(&Changed::All);
        assert!(cache.mpxn(b).is_none());
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.packed_bytes), (0, 0));
    }

    /// A decoded copy can outlive its packed entry (pushed out by the bound): it still
    /// answers, and a change to its metering point still drops it.
    #[test]
    fn a_decoded_copy_left_without_its_entry_still_goes_with_a_change() {
        let cache = PlanningCache::new(SHARDS);
        let m = |i: u64| mpxn(&(1_000_000 + i).to_string());
        let a = m(0);
        let b = (1..).map(m).find(|b| shard_of(b) == shard_of(&a)).unwrap();
        cache.put_mpxn(a, cache.ticket(), Arc::new(one_registration(a, "acme")));
        cache.put_mpxn(b, cache.ticket(), Arc::new(one_registration(b, "brightside")));
        assert!(!cache.mpxns[shard_of(&a)].lock().unwrap().map.contains(&a), "one entry per shard: a was pushed out");
        assert_eq!(supplier(&cache.mpxn(a).unwrap()), "acme", "its decoded copy still answers");
        cache.invalidate(&Changed::Keys(vec![("mpxn", a.to_string())]));
        assert!(cache.mpxn(a).is_none(), "a change to it dropped the copy too");
        assert_eq!(supplier(&cache.mpxn(b).unwrap()), "brightside");
    }

    /// The cache holds at most about its capacity, however many metering points pass
    /// through, and counts what it answered.
    #[test]
    fn the_cache_is_bounded_and_counts_its_hits() {
        let cache = PlanningCache::new(SHARDS * 4);
        let m = |i: u64| mpxn(&(1_000_000 + i).to_string());
        for i in 0..10_000 {
            cache.put_mpxn(m(i), cache.ticket(), Arc::new(one_registration(m(i), "acme")));
        }
        let stats = cache.stats();
        assert!(stats.entries <= SHARDS * 4 && stats.entries >= SHARDS * 3, "{stats:?}");
        assert!(stats.packed_bytes > 0 && stats.packed_bytes < stats.entries * 100, "{stats:?}");
        // Decoded copies are bounded apart from the entries (here many more than they).
        let big = PlanningCache::new(SHARDS * HOT_PER_SHARD * 4);
        for i in 0..10_000 {
            big.put_warm(m(i), big.ticket(), &one_registration(m(i), "acme"));
        }
        for i in 0..10_000 {
            assert!(big.mpxn(m(i)).is_some());
        }
        let hot: usize = big.mpxns.iter().map(|s| s.lock().unwrap().hot.len()).sum();
        assert!(hot <= SHARDS * HOT_PER_SHARD && hot > SHARDS * HOT_PER_SHARD / 2, "{hot} decoded copies kept");
        let cache = PlanningCache::new(SHARDS * 4);
        for i in 0..10_000 {
            cache.put_mpxn(m(i), cache.ticket(), Arc::new(one_registration(m(i), "acme")));
        }
        assert!(cache.mpxn(m(9_999)).is_some(), "the most recent is kept");
        assert!(cache.mpxn(m(0)).is_none(), "the oldest went");
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (1, 1));
    }

    /// A lookup keeps the order of use once a shard is half full, so what is looked up stays
    /// and the least recently used goes; under half, lookups leave the order as it is.
    #[test]
    fn a_shard_past_half_keeps_what_is_looked_up() {
        let shard =
            |cap: usize| Shard::<u32, u32> { map: LruCache::unbounded(), cap, invalidated: 0, hot: Default::default() };
        let mut half = shard(4);
        half.put(1, 1);
        half.put(2, 2);
        assert_eq!(half.look(&1), Some(&1));
        for k in 3..=5 {
            half.put(k, k);
        }
        assert_eq!((half.map.contains(&1), half.map.contains(&2)), (true, false), "2 was the least recently used");
        let mut roomy = shard(8);
        for k in 1..=3 {
            roomy.put(k, k);
        }
        assert_eq!(roomy.look(&1), Some(&1));
        for k in 4..=9 {
            roomy.put(k, k);
        }
        assert!(!roomy.map.contains(&1), "looked up while the shard had room: still the oldest");
    }

    /// The in-memory pick agrees with the SQL's `ORDER BY effective_from DESC, seq DESC`
    /// under `recorded_at <= known_at`.
    #[test]
    fn the_version_in_force_is_the_latest_effective_then_the_last_recorded() {
        let t = |s: i64| Timestamp::from_second(s).unwrap();
        // (effective_from, seq, recorded_at)
        let v = [(t(10), 1, t(1)), (t(20), 2, t(2)), (t(20), 3, t(3)), (t(15), 4, t(4))];
        let pick = |at, known| in_force(&v, at, known, |x| *x).map(|x| x.1);
        assert_eq!(pick(t(5), None), None);
        assert_eq!(pick(t(10), None), Some(1));
        assert_eq!(pick(t(17), None), Some(4));
        assert_eq!(pick(t(25), None), Some(3));
        assert_eq!(pick(t(25), Some(t(2))), Some(2));
        assert_eq!(pick(t(17), Some(t(3))), Some(1));
    }
}
