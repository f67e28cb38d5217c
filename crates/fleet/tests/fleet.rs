//! The fleet as a transport: devices keep their state across restarts, a command delivered
//! twice runs once, and memory is bounded by the cache, not the fleet size.

use std::sync::Arc;

use device::{Access, Command, LoadShape, Outcome, RequestId, Requester, TrustAnchor};
use domain::Eui64;
use domain::crypto::{SigningKey, SystemRandom};
use fleet::Fleet;
use hub::ManualClock;
use hub::transport::{DeviceMessage, DeviceTransport, InstallOrder};
use serde_json::json;
use store::sqlite::{Durability, SqliteFleetStore, SqliteOptions};

const SUPPLIER: Eui64 = Eui64::from_u64(0x90B3_D51F_3001_0001);

fn open(dir: &std::path::Path, cache: usize) -> (Arc<SqliteFleetStore>, Fleet) {
    let store = Arc::new(
        SqliteFleetStore::open(dir, SqliteOptions { durability: Durability::Normal, readers: 1, ..Default::default() })
            .unwrap(),
    );
    let clock = Arc::new(ManualClock::new("2026-01-05T09:00:00Z".parse().unwrap()));
    (store.clone(), Fleet::new(store, clock, 3, cache))
}

fn order(key: &SigningKey) -> InstallOrder {
    InstallOrder {
        electricity: Some(LoadShape::Domestic),
        gas_annual_quantity_kwh: None,
        ihd: true,
        ppmid: false,
        additional: 0,
        supplier: TrustAnchor { originator: SUPPLIER, spki: key.public_key_spki().into(), prepayment: None },
        cos_key: None,
        manufacturer: None,
    }
}

fn message(
    key: &SigningKey,
    srv: &str,
    target: Eui64,
    counter: u64,
    body: serde_json::Value,
    sign: bool,
) -> DeviceMessage {
    let bytes = Command {
        id: RequestId { originator: SUPPLIER, target, counter },
        srv: srv.into(),
        execute_at: None,
        body: body.to_string().into_bytes(),
    }
    .encode();
    let signature = sign.then(|| key.sign(&SystemRandom::new(), &bytes).unwrap());
    DeviceMessage {
        target,
        bytes,
        signature,
        access: Access { requester: Requester::Supplier, from: None, to: None },
        image: None,
    }
}

#[tokio::test]
async fn state_survives_a_restart_and_a_redelivered_command_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate(&SystemRandom::new()).unwrap();
    let (chf, installed) = {
        let (store, fleet) = open(dir.path(), 4);
        let installed = fleet.install(order(&key)).await.unwrap();
        let chf = installed.comms_hub;
        for (i, (eui, _)) in installed.devices.iter().enumerate() {
            let out = fleet.send(message(&key, "8.1.1", *eui, 1 + i as u64, json!({}), true)).await.unwrap();
            assert!(matches!(out, Outcome::Done(_)), "{out:?}");
        }
        store.close().await;
        (chf, installed)
    };
    // Reopened with a cache of one system: everything comes back from the database.
    let (store, fleet) = open(dir.path(), 1);
    let system = fleet.system(chf).await.unwrap();
    assert!(system.devices.iter().all(|d| d.commissioned));
    assert_eq!(system.devices.len(), installed.devices.len());

    // The same HAN log change delivered twice (as after a hub crash): one effect, one answer.
    let add = message(&key, "8.11", chf, 100, json!({"add": ["00-00-00-00-00-00-AB-01"]}), false);
    let first = fleet.send(add.clone()).await.unwrap();
    let again = fleet.send(add).await.unwrap();
    assert_eq!(first, again);
    let log = fleet.system(chf).await.unwrap().han_log;
    assert_eq!(log.iter().filter(|e| e.to_string() == "00-00-00-00-00-00-AB-01").count(), 1);
    // A signed critical command delivered again is answered as before, not run again; an
    // older counter the device no longer remembers is refused as a replay.
    let meter = installed.devices[1].0;
    let again = fleet.send(message(&key, "8.1.1", meter, 2, json!({}), true)).await.unwrap();
    assert!(matches!(again, Outcome::Done(_)), "{again:?}");
    let stale = fleet.send(message(&key, "7.4", meter, 1, json!({}), false)).await.unwrap();
    assert!(matches!(stale, Outcome::Done(_)), "non-critical reads carry no replay check: {stale:?}");
    let old = fleet.send(message(&key, "8.1.1", meter, 1, json!({}), true)).await.unwrap();
    assert!(matches!(old, Outcome::Refused { code: device::RefusalCode::Replay, .. }), "{old:?}");

    // A second system evicts the first from the one-slot cache; both still answer.
    let other = fleet.install(order(&key)).await.unwrap();
    assert_ne!(other.comms_hub, chf);
    let out = fleet.send(message(&key, "11.2", other.comms_hub, 1, json!({}), false)).await.unwrap();
    assert!(matches!(out, Outcome::Done(_)));
    assert_eq!(fleet.system(chf).await.unwrap().han_log, log);
    assert!(matches!(
        fleet.send(message(&key, "11.2", Eui64::from_u64(42), 1, json!({}), false)).await,
        Err(hub::transport::TransportError::Unreachable(_))
    ));
    store.close().await;
}

/// A change that cannot be saved is forgotten: memory never runs ahead of the database, and
/// a read that changes nothing needs no save at all.
#[tokio::test]
async fn a_change_that_cannot_be_saved_is_undone_and_a_read_needs_no_save() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate(&SystemRandom::new()).unwrap();
    let (store, fleet) = open(dir.path(), 4);
    let chf = fleet.install(order(&key)).await.unwrap().comms_hub;
    let commissioned = fleet.send(message(&key, "8.1.1", chf, 1, json!({}), true)).await.unwrap();
    assert!(matches!(commissioned, Outcome::Done(_)), "{commissioned:?}");
    let add = |counter: u64, eui: &str| message(&key, "8.11", chf, counter, json!({"add": [eui]}), false);
    let added = fleet.send(add(2, "00-00-00-00-00-00-AB-01")).await.unwrap();
    assert!(matches!(added, Outcome::Done(_)), "{added:?}");
    let saved = fleet.system(chf).await.unwrap();
    // The fleet's database stops taking writes (as on a full disk): the change is refused
    // and undone, while a read, which changes nothing, still answers.
    store.close().await;
    let refused = fleet.send(add(3, "00-00-00-00-00-00-AB-02")).await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(fleet.system(chf).await.unwrap(), saved, "memory ran ahead of the database");
    let read = fleet.send(message(&key, "11.2", chf, 4, json!({}), false)).await.unwrap();
    assert!(matches!(read, Outcome::Done(_)), "{read:?}");
}
