//! The planning cache: what every service request is planned from, twice (at submission and
//! again at execution): a metering point's registration and enrolment histories and its
//! linked meter, and devices by EUI. Read from the database in one read transaction per
//! metering point and kept in bounded LRU maps.
//!
//! Correctness rests on the engine's epoch (`engine::Changes`). An entry is tagged with the
//! epoch taken *before* its read and used only while the epoch is unchanged. The epoch moves
//! when this process's writer commits a change to registrations, enrolments or devices
//! (noted by SQLite's update hook, counted in migration 14's counter): just before the
//! commit and again after it, before any writer hears its write is done, so a caller never
//! reads back less than it wrote. A commit by another meterhub process on the same data
//! directory (a local command) is noticed by the checkpointer within its interval (100 ms).
//! A commit by another tool (the sqlite3 shell) moves no counter: no entry is used once it
//! is [`ENTRY_AGE_MAX`] old, so such an edit is seen within a second.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use domain::registry::{EnrolmentVersion, RegistrationVersion};
use domain::{Eui64, Mpxn};
use jiff::Timestamp;
use lru::LruCache;
use rusqlite::Connection;

use crate::{DeviceRecord, StoreError};

use super::engine::backend;

/// Metering points (and, separately, devices) kept at most. Entries need only outlive the
/// few milliseconds between a request's submission and its execution to halve the reads;
/// 4,096 of each cost a few MiB at most, whatever the fleet's size.
pub(crate) const PLANNING_CACHE_ENTRIES: usize = 4096;
/// An entry older than this is read again, whatever the epoch says (see the module note).
pub(crate) const ENTRY_AGE_MAX: std::time::Duration = std::time::Duration::from_secs(1);
/// Histories longer than this are read each time rather than kept (they are rare: one
/// version per change of supplier or of registration data).
const VERSIONS_KEPT_MAX: usize = 64;

/// What the store knows about one metering point.
#[derive(Debug)]
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

/// The epoch an entry was read under, when, and the entry.
type Tagged<T> = (u64, std::time::Instant, Arc<T>);

/// The bounded maps, each entry tagged with the epoch it was read under.
pub(crate) struct PlanningCache {
    mpxns: Mutex<LruCache<Mpxn, Tagged<MpxnFacts>>>,
    devices: Mutex<LruCache<Eui64, Tagged<Option<DeviceRecord>>>>,
}

fn fresh<K: std::hash::Hash + Eq, T>(map: &Mutex<LruCache<K, Tagged<T>>>, k: &K, epoch: u64) -> Option<Arc<T>> {
    let mut map = map.lock().expect("planning cache");
    match map.get(k) {
        Some((tag, read, v)) if *tag == epoch && read.elapsed() < ENTRY_AGE_MAX => Some(v.clone()),
        Some(_) => {
            map.pop(k);
            None
        }
        None => None,
    }
}

impl PlanningCache {
    pub(crate) fn new(entries: usize) -> PlanningCache {
        let cap = NonZeroUsize::new(entries.max(1)).expect("non-zero");
        PlanningCache { mpxns: Mutex::new(LruCache::new(cap)), devices: Mutex::new(LruCache::new(cap)) }
    }

    pub(crate) fn mpxn(&self, m: Mpxn, epoch: u64) -> Option<Arc<MpxnFacts>> {
        fresh(&self.mpxns, &m, epoch)
    }

    /// Keep `facts`, read under `epoch`; its meter is kept by EUI too.
    pub(crate) fn put_mpxn(&self, m: Mpxn, epoch: u64, facts: Arc<MpxnFacts>) {
        if !facts.keepable() {
            return;
        }
        if let Some(meter) = &facts.meter {
            self.put_device(meter.eui, epoch, Some(meter.clone()));
        }
        self.mpxns.lock().expect("planning cache").put(m, (epoch, std::time::Instant::now(), facts));
    }

    pub(crate) fn device(&self, eui: Eui64, epoch: u64) -> Option<Arc<Option<DeviceRecord>>> {
        fresh(&self.devices, &eui, epoch)
    }

    pub(crate) fn put_device(&self, eui: Eui64, epoch: u64, device: Option<DeviceRecord>) {
        self.devices.lock().expect("planning cache").put(eui, (epoch, std::time::Instant::now(), Arc::new(device)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
