//! The fleet: hosts the simulated smart metering systems, drives them with the hub's clock,
//! keeps their state in its own database, and connects them to the hub through the
//! [`hub::transport::DeviceTransport`] trait. Memory stays bounded however large the fleet:
//! systems live in the database and a bounded cache holds the busy ones.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use device::wire::RequestId;
use device::{Command, Installation, Outcome, System};
use domain::Eui64;
use hub::Clock;
use hub::transport::{
    AlertSink, ConsumerAction, DeviceAlert, DeviceMessage, DeviceTransport, InstallOrder, Installed, TransportError,
};
use lru::LruCache;
use serde::{Deserialize, Serialize};
use store::FleetStore;

/// Systems kept in memory at once.
pub const CACHE_SYSTEMS_DEFAULT: usize = 10_000;
/// Device-to-system links kept in memory (about 40 bytes each).
const SYSTEM_IDS_CACHED: usize = 16_384;
/// State-changing answers a system remembers, so a command delivered again is not run again.
pub const REMEMBERED_ANSWERS_MAX: usize = 8;
/// Set in the EUIs of devices fitted after installation (see [`Fleet::fit`]).
const FITTED_EUI_BIT: u64 = 1 << 47;
/// Stripes of the per-system load lock.
const LOADING_STRIPES: usize = 64;
/// Systems woken by one round of [`Fleet::wake_due`] in [`Fleet::run_wakeups`].
pub const WAKE_BATCH_MAX: usize = 512;
/// EUI-64 slots per system: comms hub, electricity and gas meter, IHD, PPMID, 3 additional.
const EUIS_PER_SYSTEM: u64 = 8;

/// A home for [`Fleet::install_commissioned`].
#[derive(Debug, Clone)]
pub struct BulkHome {
    pub order: InstallOrder,
    pub electricity_mpxn: Option<domain::Mpxn>,
    pub gas_mpxn: Option<domain::Mpxn>,
}

/// A system as persisted: its devices and the answers it remembers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stored {
    system: System,
    /// (request id, answer), oldest first. As JSON text in the packed form: postcard can
    /// read neither an adjacently tagged enum nor a value of unknown shape back.
    #[serde(with = "device::system::json_text")]
    answered: VecDeque<(String, Outcome)>,
}

type Entry = Arc<tokio::sync::Mutex<Stored>>;

/// How a system's state is stored: a format byte, then the state. `{` begins the JSON of
/// systems saved before fleet schema version 3 (read, never written); [`PACKED_V1`] is
/// followed by the postcard encoding of [`Stored`] (a compact binary serde format: field
/// order, no names). Postcard has no field names, so any change to the stored types (a
/// field added, moved or retyped; an enum variant reordered) needs a new format byte and a
/// conversion from the old one; the test `stored_state_format_is_unchanged` fails until
/// that is done.
const PACKED_V1: u8 = 1;

fn encode(stored: &Stored) -> Result<Vec<u8>, TransportError> {
    let mut out = Vec::with_capacity(1536);
    out.push(PACKED_V1);
    postcard::to_extend(stored, out).map_err(failed)
}

/// The loader lock (of [`LOADING_STRIPES`]) that system `id` is read from the database under.
fn loading_stripe(id: i64) -> usize {
    id.rem_euclid(LOADING_STRIPES as i64) as usize
}

fn decode(id: i64, bytes: &[u8]) -> Result<Stored, TransportError> {
    let unreadable = |e: &dyn std::fmt::Display| failed(format!("system {id} state is unreadable: {e}"));
    match bytes.first() {
        Some(b'{') => serde_json::from_slice(bytes).map_err(|e| unreadable(&e)),
        Some(&PACKED_V1) => postcard::from_bytes(&bytes[1..]).map_err(|e| unreadable(&e)),
        Some(other) => Err(unreadable(&format!("unknown format byte {other}"))),
        None => Err(unreadable(&"it is empty")),
    }
}

pub struct Fleet {
    store: Arc<dyn FleetStore>,
    clock: Arc<dyn Clock>,
    seed: u64,
    cache: Mutex<LruCache<i64, Entry>>,
    /// Entries pushed out of a full cache while still held (every cached one was in use):
    /// found here again rather than loaded a second time, as two copies of one system would
    /// lose one's changes. Holds only those, and forgets each once nobody holds it.
    evicted_in_use: Mutex<std::collections::HashMap<i64, std::sync::Weak<tokio::sync::Mutex<Stored>>>>,
    /// One loader at a time per system (striped by id), so a load cannot cache a state that
    /// another task's command saved after the load read it.
    loading: Vec<tokio::sync::Mutex<()>>,
    /// Which system each device belongs to (never changes once installed), for the busiest.
    system_ids: Mutex<LruCache<Eui64, i64>>,
    installing: tokio::sync::Mutex<()>,
    /// Where devices' alerts go (the hub), once attached.
    alert_sink: std::sync::OnceLock<Arc<dyn AlertSink>>,
    /// Injected WAN outages: a system is unreachable by the hub until the instant (a
    /// simulation control, kept in memory only).
    outages: Mutex<std::collections::HashMap<i64, jiff::Timestamp>>,
    /// Injected download damage: the next n firmware images to a system arrive corrupted.
    damaged_downloads: Mutex<std::collections::HashMap<i64, u32>>,
    /// Systems read from the database one at a time, read ahead of their round, and the
    /// read transactions the latter took (see [`Fleet::reads`]).
    read_alone: std::sync::atomic::AtomicU64,
    read_ahead: std::sync::atomic::AtomicU64,
    read_ahead_transactions: std::sync::atomic::AtomicU64,
}

/// How a fleet has read systems from its database since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetReads {
    /// Systems read one at a time: a command to a system neither cached nor read ahead.
    pub alone: u64,
    /// Systems read ahead of their dispatch round, several to a transaction.
    pub ahead: u64,
    /// The read transactions those took.
    pub ahead_transactions: u64,
}

impl FleetReads {
    /// What was read after `before` (an earlier reading of the same fleet).
    pub fn since(self, before: FleetReads) -> FleetReads {
        FleetReads {
            alone: self.alone - before.alone,
            ahead: self.ahead - before.ahead,
            ahead_transactions: self.ahead_transactions - before.ahead_transactions,
        }
    }
}

/// How long undelivered alerts wait before the fleet wakes their system to try again.
const ALERT_RETRY: jiff::SignedDuration = jiff::SignedDuration::from_mins(1);

/// When to wake a system: when it next acts on its own, or sooner to retry alerts the hub
/// has not taken yet.
fn wake_at(activity: Option<jiff::Timestamp>, system: &System, now: jiff::Timestamp) -> Option<jiff::Timestamp> {
    let retry = system.has_undelivered_events().then(|| now + ALERT_RETRY);
    match (activity, retry) {
        (Some(a), Some(r)) => Some(a.min(r)),
        (a, r) => a.or(r),
    }
}

fn failed(e: impl std::fmt::Display) -> TransportError {
    TransportError::Failed(e.to_string())
}

impl Fleet {
    pub fn new(store: Arc<dyn FleetStore>, clock: Arc<dyn Clock>, seed: u64, cache_systems: usize) -> Fleet {
        let cap = NonZeroUsize::new(cache_systems.max(1)).expect("non-zero");
        Fleet {
            store,
            clock,
            seed,
            cache: Mutex::new(LruCache::new(cap)),
            evicted_in_use: Mutex::new(std::collections::HashMap::new()),
            loading: (0..LOADING_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            system_ids: Mutex::new(LruCache::new(NonZeroUsize::new(SYSTEM_IDS_CACHED).expect("non-zero"))),
            installing: tokio::sync::Mutex::new(()),
            alert_sink: std::sync::OnceLock::new(),
            outages: Mutex::new(std::collections::HashMap::new()),
            damaged_downloads: Mutex::new(std::collections::HashMap::new()),
            read_alone: Default::default(),
            read_ahead: Default::default(),
            read_ahead_transactions: Default::default(),
        }
    }

    /// How this fleet has read systems from its database so far.
    pub fn reads(&self) -> FleetReads {
        use std::sync::atomic::Ordering::Relaxed;
        FleetReads {
            alone: self.read_alone.load(Relaxed),
            ahead: self.read_ahead.load(Relaxed),
            ahead_transactions: self.read_ahead_transactions.load(Relaxed),
        }
    }

    /// Cut the system holding `eui` off from the hub until `until` (a simulated WAN outage):
    /// commands to any of its devices fail as unreachable, and are not run, until then.
    pub async fn cut_off(&self, eui: Eui64, until: jiff::Timestamp) -> Result<(), TransportError> {
        let id = self.system_id(eui).await.map_err(failed)?.ok_or(TransportError::Unreachable(eui))?;
        self.outages.lock().expect("outages").insert(id, until);
        Ok(())
    }

    /// Simulation: the premises of `eui` loses mains power. Commands fail as unreachable
    /// until it returns; the comms hub reports the loss once it has lasted 3 minutes.
    pub async fn power_off(&self, eui: Eui64) -> Result<(), TransportError> {
        let now = self.clock.now();
        self.apply(eui, None, |s| {
            s.power_off(now);
            Outcome::Done(serde_json::Value::Null)
        })
        .await
        .map(|_| ())
    }

    /// Simulation: power returns at the premises of `eui`; the meter reports the restoration.
    pub async fn power_on(&self, eui: Eui64) -> Result<(), TransportError> {
        let now = self.clock.now();
        self.apply(eui, None, |s| {
            s.power_on(now);
            Outcome::Done(serde_json::Value::Null)
        })
        .await
        .map(|_| ())
    }

    /// Simulation: someone tampers with a meter (a GBCS physical-access alert code).
    pub async fn tamper(&self, meter: Eui64, code: u16) -> Result<Outcome, TransportError> {
        let now = self.clock.now();
        self.apply(meter, None, |s| s.tamper(now, meter, code)).await
    }

    /// Damage the next `n` firmware downloads to the system holding `eui` (one byte of the
    /// image flipped on the way, as a failed comms hub download would leave it): the device
    /// finds the hash wrong and refuses the image.
    pub async fn damage_downloads(&self, eui: Eui64, n: u32) -> Result<(), TransportError> {
        let id = self.system_id(eui).await.map_err(failed)?.ok_or(TransportError::Unreachable(eui))?;
        self.damaged_downloads.lock().expect("damaged").insert(id, n);
        Ok(())
    }

    /// Whether the next download to system `id` arrives damaged (counting it).
    fn damaged(&self, id: i64) -> bool {
        let mut d = self.damaged_downloads.lock().expect("damaged");
        match d.get_mut(&id) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    fn reachable(&self, id: i64, now: jiff::Timestamp) -> bool {
        let mut outages = self.outages.lock().expect("outages");
        match outages.get(&id) {
            Some(until) if *until > now => false,
            Some(_) => {
                outages.remove(&id);
                true
            }
            None => true,
        }
    }

    /// The system a device belongs to. The link never changes once made, so a found one is
    /// kept; a device not (yet) installed is asked about again.
    async fn system_id(&self, eui: Eui64) -> Result<Option<i64>, store::StoreError> {
        if let Some(id) = self.system_ids.lock().expect("system ids").get(&eui) {
            return Ok(Some(*id));
        }
        // The fleet numbers devices by system: the system in whose range the EUI falls is the
        // one to ask first. It is that system's if the system has it, and the index is not
        // read (a system is read anyway to run a command on it, and then stays cached).
        if let Some(id) = self.range_system(eui)
            && let Ok(entry) = self.entry(id).await
            && entry.lock().await.system.devices.iter().any(|d| d.eui == eui)
        {
            self.system_ids.lock().expect("system ids").put(eui, id);
            return Ok(Some(id));
        }
        let found = self.store.system_of(eui).await?;
        if let Some(id) = found {
            self.system_ids.lock().expect("system ids").put(eui, id);
        }
        Ok(found)
    }

    /// The 16-bit prefix of every EUI this fleet gives out, from the seed.
    fn eui_prefix(&self) -> u64 {
        (self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) << 48
    }

    /// The system whose EUI range holds `eui`: installed devices take [`EUIS_PER_SYSTEM`]
    /// slots from the comms hub's EUI, fitted ones ([`FITTED_EUI_BIT`] set)
    /// [`device::system::FITTED_MAX`] (see [`Fleet::fit`]). A candidate only: the system must
    /// still be found to have it.
    fn range_system(&self, eui: Eui64) -> Option<i64> {
        let v = eui.as_u64();
        if v & !0xFFFF_FFFF_FFFF != self.eui_prefix() {
            return None;
        }
        let low = v & 0xFFFF_FFFF_FFFF;
        let id = if low & FITTED_EUI_BIT != 0 {
            (low & !FITTED_EUI_BIT) / device::system::FITTED_MAX
        } else {
            low / EUIS_PER_SYSTEM
        };
        i64::try_from(id).ok().filter(|id| *id > 0)
    }

    /// EUI of the comms hub of system `id`: the fleet's prefix, then the system's first slot.
    fn comms_hub_eui(&self, id: i64) -> Eui64 {
        Eui64::from_u64(self.eui_prefix() | (id as u64 * EUIS_PER_SYSTEM))
    }

    /// The entry of a system, loading it if needed. There is only ever one entry per system
    /// while anyone holds it, so two commands to one system always share its lock.
    async fn entry(&self, id: i64) -> Result<Entry, TransportError> {
        if let Some(e) = self.held_entry(id) {
            return Ok(e);
        }
        let _one_loader = self.loading[loading_stripe(id)].lock().await;
        if let Some(e) = self.held_entry(id) {
            return Ok(e);
        }
        let bytes = self
            .store
            .load_system(id)
            .await
            .map_err(failed)?
            .ok_or_else(|| failed(format!("system {id} is missing")))?;
        self.read_alone.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stored = decode(id, &bytes)?;
        Ok(self.cache_entry(id, Arc::new(tokio::sync::Mutex::new(stored))))
    }

    /// Cache the systems that the devices of a dispatch round belong to and that are not
    /// cached yet, read in one database transaction where [`Fleet::entry`] takes one each.
    /// Under the loader locks of all their stripes, as `entry` reads under one, so that
    /// nobody loads them meanwhile and what is cached is what the database holds. The locks
    /// are taken in stripe order, as every read ahead takes them, and a single load holds
    /// one only: no two wait on each other. A hint: whatever it does not cache, the sends
    /// load themselves.
    async fn prepare_round(&self, targets: &[Eui64]) {
        let (mut ids, room) = {
            let cache = self.cache.lock().expect("cache");
            let ids: Vec<i64> =
                targets.iter().filter_map(|eui| self.range_system(*eui)).filter(|id| !cache.contains(id)).collect();
            (ids, cache.cap().get())
        };
        ids.sort_unstable();
        ids.dedup();
        // More than a quarter of the cache at once would push out what the round needs.
        if ids.len() < 2 || ids.len() > room / 4 {
            return;
        }
        let mut stripes: Vec<usize> = ids.iter().map(|id| loading_stripe(*id)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut loaders = Vec::with_capacity(stripes.len());
        for stripe in stripes {
            loaders.push(self.loading[stripe].lock().await);
        }
        ids.retain(|id| self.held_entry(*id).is_none());
        if ids.is_empty() {
            return;
        }
        let loaded = match self.store.load_systems(ids).await {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::debug!(message = "Systems could not be read ahead of a round.", error = %e);
                return;
            }
        };
        self.read_ahead_transactions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.read_ahead.fetch_add(loaded.len() as u64, std::sync::atomic::Ordering::Relaxed);
        for (id, bytes) in loaded {
            if let Ok(stored) = decode(id, &bytes) {
                let _cached = self.cache_entry(id, Arc::new(tokio::sync::Mutex::new(stored)));
            }
        }
        drop(loaders);
    }

    /// The entry of system `id` if it is cached or still held by someone. One hold of the
    /// cache lock covers the look in both places and the move back into the cache: between
    /// them, another lookup would find the system in neither and load a second copy.
    fn held_entry(&self, id: i64) -> Option<Entry> {
        let mut cache = self.cache.lock().expect("cache");
        if let Some(e) = cache.get(&id) {
            return Some(e.clone());
        }
        let held = self.evicted_in_use.lock().expect("evicted entries").remove(&id).and_then(|w| w.upgrade())?;
        let (entry, out) = self.cache_locked(&mut cache, id, held);
        drop(cache);
        drop(out);
        Some(entry)
    }

    /// Cache `entry` and give back the entry cached for `id`: `entry`, or the one already
    /// there (never two copies of a system).
    fn cache_entry(&self, id: i64, entry: Entry) -> Entry {
        let mut cache = self.cache.lock().expect("cache");
        let (entry, out) = self.cache_locked(&mut cache, id, entry);
        // A system pushed out is freed after the lock is let go, not while other lookups wait.
        drop(cache);
        drop(out);
        entry
    }

    /// [`Fleet::cache_entry`] under the cache lock: evicts the least recently used entry
    /// nobody holds; if every one is held, the one pushed out is remembered in
    /// `evicted_in_use` (under the cache lock, so that a lookup finds a held entry in one
    /// place or the other). Returns the cached entry and what was pushed out, to be dropped
    /// after the lock.
    fn cache_locked(&self, cache: &mut LruCache<i64, Entry>, id: i64, entry: Entry) -> (Entry, Vec<Entry>) {
        if let Some(there) = cache.get(&id) {
            return (there.clone(), vec![entry]);
        }
        let mut out = Vec::new();
        if cache.len() == cache.cap().get() {
            let idle = cache.iter().rev().find(|(_, e)| Arc::strong_count(e) == 1).map(|(k, _)| *k);
            if let Some(e) = idle.and_then(|k| cache.pop(&k)) {
                out.push(e);
            }
        }
        if let Some((pushed, e)) = cache.push(id, entry.clone()) {
            if Arc::strong_count(&e) > 1 {
                let mut evicted = self.evicted_in_use.lock().expect("evicted entries");
                evicted.retain(|_, w| w.strong_count() > 0);
                evicted.insert(pushed, Arc::downgrade(&e));
            }
            out.push(e);
        }
        (entry, out)
    }

    /// Fit many homes at once, their devices already commissioned and their meters linked to
    /// the given MPxNs: the simulation's factory for a large fleet (`meterhub fleet
    /// generate`). One transaction for the lot.
    pub async fn install_commissioned(&self, homes: Vec<BulkHome>) -> Result<Vec<Installed>, TransportError> {
        let _one_at_a_time = self.installing.lock().await;
        let first = self.store.next_system_id().await.map_err(failed)?;
        let now = self.clock.now();
        let mut rows = Vec::with_capacity(homes.len());
        let mut out = Vec::with_capacity(homes.len());
        for (k, home) in homes.into_iter().enumerate() {
            let id = first + k as i64;
            let comms_hub = self.comms_hub_eui(id);
            let mut system = System::install(Installation {
                seed: self.seed ^ (id as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
                at: now,
                comms_hub,
                electricity: home.order.electricity,
                gas_annual_quantity_kwh: home.order.gas_annual_quantity_kwh,
                ihd: home.order.ihd,
                ppmid: home.order.ppmid,
                additional: usize::from(home.order.additional.min(3)),
                supplier: home.order.supplier,
                cos_key: home.order.cos_key,
                manufacturer: home.order.manufacturer,
            });
            system.devices.iter_mut().for_each(|d| d.commissioned = true);
            for meter in &mut system.meters {
                let mpxn = match meter.fuel {
                    domain::Fuel::Electricity => home.electricity_mpxn,
                    domain::Fuel::Gas => home.gas_mpxn,
                };
                meter.mpxn = mpxn.map(|m| m.to_string());
            }
            let devices: Vec<_> = system.devices.iter().map(|d| (d.eui, d.kind)).collect();
            let state = encode(&Stored { system, answered: VecDeque::new() })?;
            rows.push((id, comms_hub, devices.iter().map(|(e, _)| *e).collect(), state));
            out.push(Installed { comms_hub, devices });
        }
        self.store.add_systems(rows).await.map_err(failed)?;
        Ok(out)
    }

    /// The id the next system will get.
    pub async fn next_system_id(&self) -> Result<i64, TransportError> {
        self.store.next_system_id().await.map_err(failed)
    }

    /// What a premises' in-home display shows (the consumer's view; not a hub service).
    pub async fn ihd_view(&self, eui: Eui64) -> Result<serde_json::Value, TransportError> {
        let id = self.system_id(eui).await.map_err(failed)?.ok_or(TransportError::Unreachable(eui))?;
        let entry = self.entry(id).await?;
        let stored = entry.lock().await;
        Ok(stored.system.display_view(self.clock.now(), eui))
    }

    /// The consumer types a UTRN on the meter's keypad (or the PPMID): checked and credited
    /// as a remote top-up is, and persisted the same way.
    pub async fn keypad_entry(&self, meter: Eui64, utrn: &str) -> Result<Outcome, TransportError> {
        let now = self.clock.now();
        self.apply(meter, None, |system| system.keypad_entry(now, meter, utrn)).await
    }

    /// The consumer takes emergency credit on the meter's keypad (or the PPMID).
    pub async fn keypad_emergency_credit(&self, meter: Eui64) -> Result<Outcome, TransportError> {
        let now = self.clock.now();
        self.apply(meter, None, |system| system.keypad_emergency_credit(now, meter)).await
    }

    /// The consumer presses the meter's button to restore an armed supply.
    pub async fn keypad_restore_supply(&self, meter: Eui64) -> Result<Outcome, TransportError> {
        let now = self.clock.now();
        self.apply(meter, None, |system| system.keypad_restore_supply(now, meter)).await
    }

    /// Run `f` on the system holding `eui` and persist any change before answering. With a
    /// request id, the answer is remembered: the same request delivered again gets it back
    /// and is not run twice.
    async fn apply(
        &self,
        eui: Eui64,
        request_id: Option<RequestId>,
        f: impl FnOnce(&mut System) -> Outcome,
    ) -> Result<Outcome, TransportError> {
        let id = self.system_id(eui).await.map_err(failed)?.ok_or(TransportError::Unreachable(eui))?;
        self.apply_id(id, request_id, false, None, f).await
    }

    /// [`Fleet::apply`] on a system by id. `woken`: the fleet woke it, so its wake time is
    /// written even when nothing else changed (else it would be woken again at once).
    async fn apply_id(
        &self,
        id: i64,
        request_id: Option<RequestId>,
        woken: bool,
        over_wan: Option<Eui64>,
        f: impl FnOnce(&mut System) -> Outcome,
    ) -> Result<Outcome, TransportError> {
        let entry = self.entry(id).await?;
        let mut stored = entry.lock().await;
        // A command over the WAN (`over_wan`: its target) finds nothing answering while the
        // premises has no power.
        if let Some(target) = over_wan
            && stored.system.outage.is_some()
        {
            return Err(TransportError::Unreachable(target));
        }
        // The id as text only when there is something to compare it with (most systems
        // remember no answer: a read changes nothing).
        if let Some(rid) = &request_id
            && !stored.answered.is_empty()
        {
            let rid = rid.to_string();
            if let Some((_, answer)) = stored.answered.iter().find(|(r, _)| *r == rid) {
                return Ok(answer.clone());
            }
        }
        let before = stored.system.clone();
        let outcome = f(&mut stored.system);
        let now = self.clock.now();
        let changed = stored.system != before;
        // When the system next acts on its own: worked out once, and only if it is saved.
        let activity = if changed || woken || stored.system.has_undelivered_events() {
            stored.system.next_wake(now)
        } else {
            None
        };
        if changed || woken {
            let answered_before = stored.answered.clone();
            if let Some(rid) = request_id {
                if stored.answered.len() == REMEMBERED_ANSWERS_MAX {
                    stored.answered.pop_front();
                }
                stored.answered.push_back((rid.to_string(), outcome.clone()));
            }
            let state = encode(&stored)?;
            if let Err(e) = self.store.save_system(id, state, wake_at(activity, &stored.system, now)).await {
                // Not saved: forget the change, so memory never runs ahead of the database.
                stored.system = before;
                stored.answered = answered_before;
                return Err(failed(e));
            }
        }
        self.deliver_alerts(id, &mut stored, now, activity).await;
        Ok(outcome)
    }

    /// Wake the systems whose time has come (a held change due, a prepayment account about
    /// to cross a threshold): each settles to now and delivers its alerts. Returns how many
    /// were woken.
    pub async fn wake_due(&self, limit: usize) -> Result<usize, TransportError> {
        let now = self.clock.now();
        let due = self.store.due_wakeups(now, limit).await.map_err(failed)?;
        for id in &due {
            // One system that cannot be woken must not hold up the others.
            if let Err(e) = self
                .apply_id(*id, None, true, None, |system| {
                    system.settle(now);
                    Outcome::Done(serde_json::Value::Null)
                })
                .await
            {
                tracing::warn!(message = "A system could not be woken; it will be tried again.", system = id, error = %e);
            }
        }
        Ok(due.len())
    }

    /// Wake due systems until stopped, checking every `tick` (the simulated clock may jump).
    pub async fn run_wakeups(self: Arc<Self>, tick: std::time::Duration) {
        loop {
            match self.wake_due(WAKE_BATCH_MAX).await {
                Ok(n) if n == WAKE_BATCH_MAX => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(message = "Waking systems failed; retrying.", error = %e),
            }
            tokio::time::sleep(tick).await;
        }
    }

    /// Hand a system's undelivered alerts to the hub, in order; once the hub has them, note
    /// it (and persist that), so they are delivered at least once and, as the hub stores each
    /// once, kept once. A failure is retried at the system's next activity.
    async fn deliver_alerts(
        &self,
        id: i64,
        stored: &mut Stored,
        now: jiff::Timestamp,
        activity: Option<jiff::Timestamp>,
    ) {
        let Some(sink) = self.alert_sink.get() else { return };
        if !stored.system.has_undelivered_events() {
            return;
        }
        let pending = stored.system.undelivered_events();
        let alerts: Vec<DeviceAlert> = pending
            .iter()
            .map(|(device, e)| DeviceAlert {
                device: *device,
                seq: e.seq,
                at: e.at,
                code: e.alert,
                detail: e.detail.clone(),
                data: e.data.clone(),
            })
            .collect();
        if let Err(e) = sink.deliver(alerts).await {
            tracing::warn!(message = "Alerts not delivered; will retry.", system = id, error = %e);
            return;
        }
        for (device, e) in &pending {
            stored.system.mark_delivered(*device, e.seq);
        }
        match encode(stored) {
            Ok(state) => {
                if let Err(e) = self.store.save_system(id, state, wake_at(activity, &stored.system, now)).await {
                    // The hub has them; delivering them again later stores nothing twice.
                    tracing::warn!(message = "Delivery mark not saved.", system = id, error = %e);
                }
            }
            Err(e) => tracing::warn!(message = "Delivery mark not saved.", system = id, error = %e),
        }
    }

    /// A copy of a system's state, for inspection by tests and tools.
    pub async fn system(&self, eui: Eui64) -> Result<System, TransportError> {
        let id = self.system_id(eui).await.map_err(failed)?.ok_or(TransportError::Unreachable(eui))?;
        let entry = self.entry(id).await?;
        let stored = entry.lock().await;
        Ok(stored.system.clone())
    }
}

#[async_trait]
impl DeviceTransport for Fleet {
    async fn install(&self, order: InstallOrder) -> Result<Installed, TransportError> {
        let _one_at_a_time = self.installing.lock().await;
        let id = self.store.next_system_id().await.map_err(failed)?;
        let comms_hub = self.comms_hub_eui(id);
        let system = System::install(Installation {
            seed: self.seed ^ (id as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
            at: self.clock.now(),
            comms_hub,
            electricity: order.electricity,
            gas_annual_quantity_kwh: order.gas_annual_quantity_kwh,
            ihd: order.ihd,
            ppmid: order.ppmid,
            additional: usize::from(order.additional.min(3)),
            supplier: order.supplier,
            cos_key: order.cos_key,
            manufacturer: order.manufacturer,
        });
        let devices: Vec<_> = system.devices.iter().map(|d| (d.eui, d.kind)).collect();
        let stored = Stored { system, answered: VecDeque::new() };
        let state = encode(&stored)?;
        self.store.add_system(id, comms_hub, devices.iter().map(|(e, _)| *e).collect(), state).await.map_err(failed)?;
        tracing::debug!(message = "System installed.", system = id, comms_hub = %comms_hub);
        Ok(Installed { comms_hub, devices })
    }

    async fn fit(&self, at: Eui64, kind: device::DeviceKind) -> Result<Eui64, TransportError> {
        let id = self.system_id(at).await.map_err(failed)?.ok_or(TransportError::Unreachable(at))?;
        let entry = self.entry(id).await?;
        let mut stored = entry.lock().await;
        // Fitted devices' EUIs: the comms hub's prefix, bit 47 set, then the system's own range.
        let base = self.eui_prefix() | FITTED_EUI_BIT | (id as u64 * device::system::FITTED_MAX);
        let fitted = stored.system.devices.iter().filter(|d| d.eui.as_u64() & FITTED_EUI_BIT != 0).count() as u64;
        if fitted >= device::system::FITTED_MAX {
            return Err(failed(format!(
                "at most {} devices are fitted to a premises after installation",
                device::system::FITTED_MAX
            )));
        }
        let eui = Eui64::from_u64(base + fitted);
        let mut next = stored.clone();
        next.system.fit(eui, kind).map_err(failed)?;
        let state = encode(&next)?;
        self.store.add_device(id, eui, state).await.map_err(failed)?;
        *stored = next;
        tracing::debug!(message = "Device fitted.", system = id, device = %eui, kind = ?kind);
        Ok(eui)
    }

    async fn prepare(&self, targets: &[Eui64]) {
        self.prepare_round(targets).await;
    }

    async fn send(&self, m: DeviceMessage) -> Result<Outcome, TransportError> {
        let request_id = Command::decode(&m.bytes).map(|c| c.id).ok();
        let now = self.clock.now();
        let id = self.system_id(m.target).await.map_err(failed)?.ok_or(TransportError::Unreachable(m.target))?;
        if !self.reachable(id, now) {
            return Err(TransportError::Unreachable(m.target));
        }
        let image: Option<std::borrow::Cow<'_, [u8]>> = m.image.as_deref().map(|bytes| {
            if self.damaged(id) {
                let mut copy = bytes.clone();
                if let Some(b) = copy.get_mut(bytes.len() / 2) {
                    *b ^= 0x5A;
                }
                std::borrow::Cow::Owned(copy)
            } else {
                std::borrow::Cow::Borrowed(bytes.as_slice())
            }
        });
        self.apply_id(id, request_id, false, Some(m.target), |system| {
            system.handle_with_image(now, &m.bytes, m.signature.as_deref(), m.access, image.as_deref())
        })
        .await
    }

    fn attach_alert_sink(&self, sink: Arc<dyn AlertSink>) {
        let _ = self.alert_sink.set(sink);
    }

    async fn display(&self, eui: Eui64) -> Result<serde_json::Value, TransportError> {
        self.ihd_view(eui).await
    }

    async fn consumer(&self, meter: Eui64, action: ConsumerAction) -> Result<Outcome, TransportError> {
        match action {
            ConsumerAction::EnterUtrn(utrn) => self.keypad_entry(meter, &utrn).await,
            ConsumerAction::EmergencyCredit => self.keypad_emergency_credit(meter).await,
            ConsumerAction::RestoreSupply => self.keypad_restore_supply(meter).await,
        }
    }

    async fn key_agreement_point(&self, eui: Eui64) -> Result<Vec<u8>, TransportError> {
        self.system(eui).await?.key_agreement_point(eui).ok_or(TransportError::Unreachable(eui))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &[u8] = include_bytes!("testdata/system-saved-as-json.json");
    const PACKED_V1_FIXTURE: &str = "src/testdata/system-packed-v1.bin";

    /// The demo's richest system as the previous build saved it (JSON: two suppliers'
    /// periods, prepayment events carrying data, remembered answers), plus what that run
    /// did not reach: a refusal remembered, a power outage, an agent, firmware held and
    /// pending, a held change of every kind (a prepayment change with fields left out and
    /// fields cleared), activations, an event without data.
    fn rich_system() -> Stored {
        use device::firmware::{Application, Layer, Manifest, PendingActivation, Urgency};
        use device::system::{Activation, PendingChange};
        use domain::product::{Change, EmergencyCredit, Period, Product};
        let at = |s: &str| -> jiff::Timestamp { s.parse().expect("instant") };
        let mut stored = decode(1, JSON).expect("a system saved as JSON before fleet version 3 still reads");
        stored.answered.push_back((
            "90-B3-D5-1F-30-01-00-02:9E-37-00-00-00-00-00-09:77".into(),
            Outcome::Refused {
                code: device::RefusalCode::SignatureInvalid,
                reason: "signature does not verify".into(),
            },
        ));
        stored.system.outage = Some(device::system::Outage { since: at("2026-03-01T12:00:00Z"), reported: true });
        let meter = &mut stored.system.devices[1];
        meter.agent = Some(device::TrustAnchor {
            originator: Eui64::from_u64(0x90B3_D51F_3001_0042),
            spki: vec![48, 89, 1].into(),
            prepayment: None,
        });
        meter.agent_counters.push((Eui64::from_u64(0x90B3_D51F_3001_0041), 17));
        meter.fw.application = Some(Application {
            version: "1.2.0".into(),
            image_hash: "ab".repeat(32),
            supplier: Eui64::from_u64(0x90B3_D51F_3001_0021),
            enabled: false,
        });
        meter.fw.held.push(Manifest {
            image_hash: "cd".repeat(32),
            layer: Layer::Core,
            version: "3.0.0".into(),
            device_kind: "electricity-meter".into(),
            supplier: None,
            urgency: Urgency::Security,
        });
        meter.fw.pending = Some(PendingActivation {
            request_id: "r:9".into(),
            at: at("2026-04-01T00:00:00Z"),
            image_hash: "cd".repeat(32),
        });
        let m = &mut stored.system.meters[0];
        let held = [
            Change::Tariff { tariff: Product::default().tariff, standing_charge_mp_per_day: 41_000 },
            Change::Prices { rates_mp_per_kwh: vec![24_500, 12_000], standing_charge_mp_per_day: None },
            Change::PaymentMode { payment_mode: domain::registry::PaymentMode::Prepayment },
            Change::Prepay {
                emergency_credit: Some(None),
                debt_recovery: None,
                low_credit_threshold_pence: Some(Some(300)),
                non_disablement: Some(vec![Period { from: "00:00".into(), to: "07:00".into() }]),
            },
            Change::Prepay {
                emergency_credit: Some(Some(EmergencyCredit { limit_pence: 1_000, threshold_pence: 100 })),
                debt_recovery: None,
                low_credit_threshold_pence: None,
                non_disablement: None,
            },
        ];
        for (k, change) in held.into_iter().enumerate() {
            let at = at("2026-05-01T00:00:00Z");
            m.pending.push(PendingChange { request_id: format!("r:{k}"), at, seq: k as u64, change });
        }
        m.activations.push(Activation {
            request_id: "r:7".into(),
            srv: "1.1.1".into(),
            at: at("2026-02-20T00:00:00Z"),
            alert: 0x8F66,
            failure: None,
            import_wh: 1_234_567,
            product: Some(Product::default()),
        });
        m.activations.push(Activation {
            request_id: "r:8".into(),
            srv: "2.1".into(),
            at: at("2026-02-21T00:00:00Z"),
            alert: 0x8F67,
            failure: Some("emergency credit above the limit".into()),
            import_wh: 1_234_999,
            product: None,
        });
        m.prepay.record(at("2026-02-22T00:00:00Z"), 0x8F1C, "low credit".into(), None);
        stored
    }

    /// The stored binary form is byte for byte what it was when [`PACKED_V1`] was fixed, and
    /// reads back to the same system. When this fails after a change to the device state's
    /// types, systems already stored would no longer read: give the new form its own format
    /// byte, convert from this one in `decode`, and only then write a new fixture (run with
    /// `METERHUB_BLESS=1`).
    #[test]
    fn stored_state_format_is_unchanged() {
        let stored = rich_system();
        let packed = encode(&stored).expect("encodes");
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(PACKED_V1_FIXTURE);
        if std::env::var_os("METERHUB_BLESS").is_some() {
            std::fs::write(&path, &packed).expect("fixture written");
        }
        let fixture = std::fs::read(&path).expect("the packed fixture exists");
        assert_eq!(fixture[0], PACKED_V1);
        assert!(packed == fixture, "the packed form of the device state changed (see this test's note)");
        assert_eq!(decode(1, &fixture).expect("the fixture reads"), stored);
        // Half the JSON's size here (this system's answers and events carry JSON text);
        // about a quarter for a freshly generated one.
        assert!(fixture.len() * 3 <= JSON.len() * 2, "{} bytes packed against {} as JSON", fixture.len(), JSON.len());
    }

    /// A fleet on a fresh store in a temporary directory (kept while the fleet is used),
    /// caching `cache` systems.
    fn test_fleet(cache: usize) -> (tempfile::TempDir, Fleet) {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = store::sqlite::SqliteOptions {
            durability: store::sqlite::Durability::Normal,
            readers: 1,
            ..Default::default()
        };
        let store = Arc::new(store::sqlite::SqliteFleetStore::open(dir.path(), opts).expect("fleet store"));
        let clock = Arc::new(hub::ManualClock::new("2026-01-05T09:00:00Z".parse().expect("instant")));
        (dir, Fleet::new(store, clock, 3, cache))
    }

    /// A home with every kind of device.
    fn full_home() -> InstallOrder {
        InstallOrder {
            electricity: Some(device::LoadShape::Domestic),
            gas_annual_quantity_kwh: Some(12_000),
            ihd: true,
            ppmid: true,
            additional: 3,
            supplier: device::TrustAnchor {
                originator: Eui64::from_u64(0x90B3_D51F_3001_0001),
                spki: vec![1].into(),
                prepayment: None,
            },
            cos_key: None,
            manufacturer: None,
        }
    }

    /// Every device, installed or fitted later, lies in its own system's EUI range; an EUI of
    /// another fleet (another seed) lies in none.
    #[tokio::test]
    async fn every_device_lies_in_its_systems_eui_range() {
        use hub::transport::DeviceTransport as _;
        let (_dir, fleet) = test_fleet(16);
        let order = full_home();
        for system in 1..=3 {
            let installed = fleet.install(order.clone()).await.expect("installed");
            let fitted = fleet.fit(installed.comms_hub, device::DeviceKind::InHomeDisplay).await.expect("fitted");
            for eui in installed.devices.iter().map(|(e, _)| *e).chain([fitted]) {
                assert_eq!(fleet.range_system(eui), Some(system), "{eui}");
                assert_eq!(fleet.system_id(eui).await.expect("found"), Some(system), "{eui}");
            }
        }
        let foreign = Eui64::from_u64((fleet.eui_prefix() ^ (1 << 60)) | 8);
        assert_eq!(fleet.range_system(foreign), None);
        assert_eq!(fleet.system_id(foreign).await.expect("asked"), None);
    }

    /// A system pushed out of a full cache while a command holds it is not loaded a second
    /// time: the next command to it gets the same entry (and so waits for the first), not a
    /// copy read from the database that would overwrite the first command's change.
    #[tokio::test]
    async fn a_system_in_use_is_never_loaded_twice() {
        use hub::transport::DeviceTransport as _;
        let (_dir, fleet) = test_fleet(1);
        let order = full_home();
        fleet.install(order.clone()).await.expect("system 1");
        fleet.install(order).await.expect("system 2");
        let first = fleet.entry(1).await.expect("system 1");
        let second = fleet.entry(2).await.expect("system 2, pushing system 1 out of the cache of one");
        let again = fleet.entry(1).await.expect("system 1 again");
        assert!(Arc::ptr_eq(&first, &again), "system 1 was loaded a second time while in use");
        assert!(Arc::ptr_eq(&second, &fleet.entry(2).await.expect("system 2 again")));
        drop((first, second, again));
        // Once nobody holds them, systems are loaded afresh and nothing is remembered.
        fleet.entry(1).await.expect("system 1 after");
        fleet.entry(2).await.expect("system 2 after");
        assert!(fleet.evicted_in_use.lock().expect("evicted").values().all(|w| w.strong_count() == 0));
    }

    /// A party's key, in every device that trusts it, is read into one shared copy, in both
    /// stored forms, and across systems read one after another: a cached system holds one
    /// copy of each key, and copying a system copies none. (Keys are shared per thread: the
    /// test runtime has one.)
    #[tokio::test]
    async fn keys_read_from_stored_systems_are_shared() {
        use hub::transport::DeviceTransport as _;
        let (_dir, fleet) = test_fleet(1);
        let mut order = full_home();
        order.supplier.prepayment = Some(vec![4; 65].into());
        order.cos_key = Some(vec![5; 91].into());
        fleet.install(order.clone()).await.expect("system 1");
        fleet.install(order).await.expect("system 2");
        let one = fleet.entry(1).await.expect("system 1").lock().await.system.clone();
        let two = fleet.entry(2).await.expect("system 2").lock().await.system.clone();
        let cos = |s: &System| s.cos_key.clone().expect("installed with the hub's key");
        assert!(Arc::ptr_eq(&cos(&one), &cos(&two)), "a second copy of the hub's key");
        let prepayment = |s: &System| -> Vec<Arc<[u8]>> {
            s.devices.iter().filter_map(|d| d.supplier.as_ref()?.prepayment.clone()).collect()
        };
        let all = [prepayment(&one), prepayment(&two)].concat();
        assert!(all.len() >= 6 && all.iter().all(|k| Arc::ptr_eq(k, &all[0])), "a copy of the prepayment key");
        let spki = |s: &System| s.devices.iter().filter_map(|d| d.supplier.as_ref()).map(|a| a.spki.clone()).collect();
        let (spki_one, spki_two): (Vec<Arc<[u8]>>, Vec<Arc<[u8]>>) = (spki(&one), spki(&two));
        assert!(spki_one.len() >= 3, "the full home's devices trust the supplier: {}", spki_one.len());
        for k in spki_one.iter().chain(&spki_two) {
            assert!(Arc::ptr_eq(k, &spki_one[0]), "a second copy of the supplier's key");
        }
        // A system saved as JSON shares its keys as well: equal keys are one copy.
        let old = decode(1, JSON).expect("reads");
        let keys: Vec<&Arc<[u8]>> = old
            .system
            .devices
            .iter()
            .filter_map(|d| d.supplier.as_ref())
            .flat_map(|a| std::iter::once(&a.spki).chain(&a.prepayment))
            .collect();
        let mut equal = 0;
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                if a == b {
                    equal += 1;
                    assert!(Arc::ptr_eq(a, b), "JSON gave a copy of a key per device");
                }
            }
        }
        assert!(equal > 0, "the fixture's devices share keys");
    }

    /// A round's systems are read ahead, together, and cached: each once, a system already
    /// in use keeps its entry (no second copy of it), an EUI of no system is passed over,
    /// and a round too big for the cache reads nothing ahead.
    #[tokio::test]
    async fn a_round_reads_its_systems_ahead_once_each() {
        use hub::transport::DeviceTransport as _;
        let (_dir, fleet) = test_fleet(64);
        let order = full_home();
        let mut hubs = Vec::new();
        for _ in 1..=6 {
            hubs.push(fleet.install(order.clone()).await.expect("installed").comms_hub);
        }
        let in_use = fleet.entry(1).await.expect("system 1");
        let foreign = Eui64::from_u64((fleet.eui_prefix() ^ (1 << 60)) | 8);
        let mut targets = hubs.clone();
        targets.extend([hubs[2], foreign]);
        fleet.prepare(&targets).await;
        let cached = |id: i64| fleet.cache.lock().expect("cache").contains(&id);
        assert!((1..=6).all(cached), "every system of the round is cached");
        // System 1 was read alone, before; the five others ahead, in one transaction.
        assert_eq!(fleet.reads(), FleetReads { alone: 1, ahead: 5, ahead_transactions: 1 });
        assert!(Arc::ptr_eq(&in_use, &fleet.entry(1).await.expect("system 1 again")), "system 1 was read twice");
        // Sends use what was read: the same entry each time.
        let third = fleet.entry(3).await.expect("system 3");
        fleet.prepare(&hubs).await;
        assert!(Arc::ptr_eq(&third, &fleet.entry(3).await.expect("system 3 again")));
        assert_eq!(fleet.reads(), FleetReads { alone: 1, ahead: 5, ahead_transactions: 1 }, "nothing read again");

        let (_dir, small) = test_fleet(16);
        for _ in 1..=5 {
            small.install(order.clone()).await.expect("installed");
        }
        let hubs: Vec<Eui64> = (1..=5).map(|id| small.comms_hub_eui(id)).collect();
        small.prepare(&hubs).await;
        assert_eq!(small.cache.lock().expect("cache").len(), 0, "five of sixteen is more than a round may take");
        assert_eq!(small.reads(), FleetReads::default());
    }

    /// Bytes that are neither form are refused with the system named, never misread.
    #[test]
    fn an_unknown_state_format_is_refused() {
        for (bytes, says) in
            [(&b""[..], "empty"), (&[9u8, 1, 2][..], "unknown format byte 9"), (&[PACKED_V1, 200][..], "")]
        {
            let e = decode(42, bytes).expect_err("refused");
            assert!(e.to_string().contains("system 42 state is unreadable") && e.to_string().contains(says), "{e}");
        }
    }
}
