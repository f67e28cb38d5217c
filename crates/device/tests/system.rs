//! A smart metering system driven directly, with no hub in between: devices verify critical
//! commands themselves (R-SR-2), keep their own data windows (R-COS-4), and do what each SRV
//! says.

use device::system::{HAN_LOG_MAX, Meter, Supply};
use device::{
    Access, Command, Installation, LoadShape, Outcome, RefusalCode, RequestId, Requester, System, TrustAnchor,
};
use domain::crypto::{SigningKey, SystemRandom};
use domain::{Eui64, Fuel};
use jiff::Timestamp;
use serde_json::{Value, json};

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

const SUPPLIER: Eui64 = Eui64::from_u64(0x90B3_D51F_3001_0000);
const CHF: Eui64 = Eui64::from_u64(0x00DB_1234_5678_9000);

struct Home {
    system: System,
    key: SigningKey,
    counter: u64,
}

fn install() -> Home {
    let key = SigningKey::generate(&SystemRandom::new()).unwrap();
    let system = System::install(Installation {
        seed: 11,
        at: t("2025-06-01T10:00:00Z"),
        comms_hub: CHF,
        electricity: Some(LoadShape::Domestic),
        gas_annual_quantity_kwh: Some(12_000),
        ihd: true,
        ppmid: false,
        additional: 0,
        supplier: TrustAnchor { originator: SUPPLIER, spki: key.public_key_spki().into(), prepayment: None },
        cos_key: None,
        manufacturer: None,
    });
    Home { system, key, counter: 0 }
}

fn eui(h: &Home, fuel: Fuel) -> Eui64 {
    h.system.meter_for(fuel).unwrap().eui
}

const SUPPLIER_ACCESS: Access = Access { requester: Requester::Supplier, from: None, to: None };

impl Home {
    fn command(&mut self, srv: &str, target: Eui64, body: Value) -> Vec<u8> {
        self.counter += 1;
        Command {
            id: RequestId { originator: SUPPLIER, target, counter: self.counter },
            srv: srv.into(),
            execute_at: None,
            body: serde_json::to_vec(&body).unwrap(),
        }
        .encode()
    }

    fn signed(&mut self, srv: &str, target: Eui64, body: Value, now: &str) -> Outcome {
        let bytes = self.command(srv, target, body);
        let sig = self.key.sign(&SystemRandom::new(), &bytes).unwrap();
        self.system.handle(t(now), &bytes, Some(&sig), SUPPLIER_ACCESS)
    }

    fn plain(&mut self, srv: &str, target: Eui64, body: Value, now: &str, access: Access) -> Outcome {
        let bytes = self.command(srv, target, body);
        self.system.handle(t(now), &bytes, None, access)
    }

    fn commission_all(&mut self) {
        let euis: Vec<Eui64> = self.system.devices.iter().map(|d| d.eui).collect();
        for e in euis {
            assert!(matches!(self.signed("8.1.1", e, json!({}), "2025-06-01T11:00:00Z"), Outcome::Done(_)));
        }
    }
}

fn code(o: &Outcome) -> Option<RefusalCode> {
    match o {
        Outcome::Refused { code, .. } => Some(*code),
        Outcome::Done(_) => None,
    }
}

fn done(o: Outcome) -> Value {
    match o {
        Outcome::Done(v) => v,
        Outcome::Refused { code, reason } => panic!("refused {code:?}: {reason}"),
    }
}

// R-SR-2: a critical command reaching the device directly is refused unless the supplier the
// device trusts signed exactly these bytes, once.
#[test]
fn devices_verify_critical_commands_themselves() {
    let mut h = install();
    let meter = eui(&h, Fuel::Electricity);
    let now = "2025-06-01T11:00:00Z";

    let bytes = h.command("8.1.1", meter, json!({}));
    assert_eq!(code(&h.system.handle(t(now), &bytes, None, SUPPLIER_ACCESS)), Some(RefusalCode::SignatureMissing));

    let stranger = SigningKey::generate(&SystemRandom::new()).unwrap();
    let sig = stranger.sign(&SystemRandom::new(), &bytes).unwrap();
    assert_eq!(
        code(&h.system.handle(t(now), &bytes, Some(&sig), SUPPLIER_ACCESS)),
        Some(RefusalCode::SignatureInvalid)
    );

    // The right key, but the bytes altered after signing (the counter bumped).
    let sig = h.key.sign(&SystemRandom::new(), &bytes).unwrap();
    let mut altered = bytes.clone();
    let last = altered.len() - 5;
    altered[last] ^= 1;
    assert!(matches!(
        code(&h.system.handle(t(now), &altered, Some(&sig), SUPPLIER_ACCESS)),
        Some(RefusalCode::SignatureInvalid | RefusalCode::Malformed)
    ));

    // Another originator, even with a valid signature of its own.
    let other = Command {
        id: RequestId { originator: Eui64::from_u64(1), target: meter, counter: 99 },
        srv: "8.1.1".into(),
        execute_at: None,
        body: b"{}".to_vec(),
    }
    .encode();
    let sig_other = h.key.sign(&SystemRandom::new(), &other).unwrap();
    assert_eq!(
        code(&h.system.handle(t(now), &other, Some(&sig_other), SUPPLIER_ACCESS)),
        Some(RefusalCode::UntrustedOriginator)
    );

    // Nothing so far commissioned the meter.
    assert!(!h.system.device(meter).unwrap().commissioned);
    assert!(matches!(h.system.handle(t(now), &bytes, Some(&sig), SUPPLIER_ACCESS), Outcome::Done(_)));
    assert!(h.system.device(meter).unwrap().commissioned);
    // The same signed command again is a replay.
    assert_eq!(code(&h.system.handle(t(now), &bytes, Some(&sig), SUPPLIER_ACCESS)), Some(RefusalCode::Replay));
    // Garbage is refused, never a panic.
    for junk in [&b""[..], b"MHC1", b"MHC1\x05", &bytes[..bytes.len() - 1]] {
        assert_eq!(code(&h.system.handle(t(now), junk, Some(&sig), SUPPLIER_ACCESS)), Some(RefusalCode::Malformed));
    }
}

#[test]
fn uncommissioned_devices_refuse_reads_then_serve_them() {
    let mut h = install();
    let meter = eui(&h, Fuel::Electricity);
    let access = SUPPLIER_ACCESS;
    assert_eq!(
        code(&h.plain("4.1.1", meter, json!({}), "2025-06-02T00:00:00Z", access)),
        Some(RefusalCode::NotCommissioned)
    );
    // Firmware can be read before commissioning.
    let fw = done(h.plain("11.2", meter, json!({}), "2025-06-02T00:00:00Z", access));
    assert_eq!(fw["firmware"], json!("1.0.0"));
    h.commission_all();
    let r1 = done(h.plain("4.1.1", meter, json!({}), "2025-07-01T00:00:00Z", access));
    let r2 = done(h.plain("4.1.1", meter, json!({}), "2025-08-01T00:00:00Z", access));
    assert!(r2["import_wh"].as_u64().unwrap() > r1["import_wh"].as_u64().unwrap());
    let gas = done(h.plain("4.1.1", eui(&h, Fuel::Gas), json!({}), "2025-08-01T00:00:00Z", access));
    assert!(gas["volume_litres"].as_u64().unwrap() > 0);
    let s = done(h.plain("7.4", meter, json!({}), "2025-08-01T00:00:00Z", access));
    assert_eq!(s["supply"], json!("enabled"));
    // SRVs aimed at the wrong kind of device are refused.
    assert_eq!(
        code(&h.plain("4.1.1", CHF, json!({}), "2025-08-01T00:00:00Z", access)),
        Some(RefusalCode::NotSupported)
    );
    assert_eq!(
        code(&h.plain("9.9", meter, json!({}), "2025-08-01T00:00:00Z", access)),
        Some(RefusalCode::NotSupported)
    );
}

#[test]
fn set_mpxn_checks_the_fuel() {
    let mut h = install();
    h.commission_all();
    let (e, g) = (eui(&h, Fuel::Electricity), eui(&h, Fuel::Gas));
    let a = SUPPLIER_ACCESS;
    assert_eq!(
        code(&h.plain("6.20.1", e, json!({"mpxn": "3938424403"}), "2025-06-02T00:00:00Z", a)),
        Some(RefusalCode::InvalidBody)
    );
    done(h.plain("6.20.1", e, json!({"mpxn": "1312345678907"}), "2025-06-02T00:00:00Z", a));
    done(h.plain("6.20.1", g, json!({"mpxn": "3938424403"}), "2025-06-02T00:00:00Z", a));
    assert_eq!(h.system.meter(e).unwrap().mpxn.as_deref(), Some("1312345678907"));
}

// R-COS-4 (device side): the supplier never gets data from before its period on the meter;
// the hub's window narrows further; the meter keeps 3 months of profile, 13 of daily log.
#[test]
fn reads_stay_inside_every_window() {
    let mut h = install();
    h.commission_all();
    let meter = eui(&h, Fuel::Electricity);
    let now = "2026-01-10T00:00:00Z";
    // Pretend the supplier's period here began on 1 December.
    h.system.meters.iter_mut().for_each(|m: &mut Meter| m.supplier_data_from = t("2025-12-01T00:00:00Z"));
    let v = done(h.plain("4.8.1", meter, json!({"from": "2025-06-01T00:00:00Z"}), now, SUPPLIER_ACCESS));
    assert_eq!(v["from"], json!("2025-12-01T00:00:00Z"));
    assert_eq!(v["half_hours"].as_array().unwrap().len(), 40 * 48);
    // The network operator is not held to the supplier's period, only to what the meter keeps.
    let dno = Access { requester: Requester::NetworkOperator, from: None, to: None };
    let v = done(h.plain("4.8.1", meter, json!({"from": "2025-06-01T00:00:00Z"}), now, dno));
    assert_eq!(v["from"], json!("2025-10-10T00:00:00Z"), "92 days of profile");
    // The hub's entitlement narrows the window further.
    let narrow = Access { requester: Requester::Supplier, from: None, to: Some(t("2025-12-02T00:00:00Z")) };
    let v = done(h.plain("4.8.1", meter, json!({}), now, narrow));
    assert_eq!(v["half_hours"].as_array().unwrap().len(), 48);
    let v = done(h.plain("4.17", meter, json!({"from": "2025-01-01T00:00:00Z"}), now, dno));
    let days = v["days"].as_array().unwrap();
    assert_eq!(days.first().unwrap()[0], json!("2025-06-02"), "from installation, first whole day");
    assert_eq!(days.last().unwrap()[0], json!("2026-01-09"));
    // The daily log and the profile are the same data.
    let day: u64 = days.last().unwrap()[1].as_u64().unwrap();
    let hh =
        done(h.plain("4.8.1", meter, json!({"from": "2026-01-09T00:00:00Z", "to": "2026-01-10T00:00:00Z"}), now, dno));
    let sum: u64 = hh["half_hours"].as_array().unwrap().iter().map(|p| p[1].as_u64().unwrap()).sum();
    assert_eq!(sum, day);
}

#[test]
fn display_alerts_and_han_log() {
    let mut h = install();
    h.commission_all();
    let meter = eui(&h, Fuel::Electricity);
    let a = SUPPLIER_ACCESS;
    let v = done(h.plain("3.1", meter, json!({"message": "Your new tariff starts Monday"}), "2025-06-02T00:00:00Z", a));
    assert!(v["displayed_on"].is_string());
    assert_eq!(h.system.ihd_view(t("2025-06-02T00:00:00Z"))["message"], json!("Your new tariff starts Monday"));
    assert_eq!(
        code(&h.plain("3.1", meter, json!({"message": "x".repeat(161)}), "2025-06-02T00:00:00Z", a)),
        Some(RefusalCode::InvalidBody)
    );

    done(h.plain("6.22", meter, json!({"alert_code": "0x8F35", "enabled": false}), "2025-06-02T00:00:00Z", a));
    assert_eq!(h.system.meter(meter).unwrap().disabled_alerts, vec![0x8F35]);
    done(h.plain("6.22", meter, json!({"alert_code": "0x8F35", "enabled": true}), "2025-06-02T00:00:00Z", a));
    assert!(h.system.meter(meter).unwrap().disabled_alerts.is_empty());

    let already = h.system.han_log.len();
    let adds: Vec<String> =
        (0..(HAN_LOG_MAX - already) as u64).map(|i| Eui64::from_u64(0xAA00 + i).to_string()).collect();
    done(h.plain("8.11", CHF, json!({"add": adds}), "2025-06-02T00:00:00Z", a));
    assert_eq!(h.system.han_log.len(), HAN_LOG_MAX);
    let full = h.plain("8.11", CHF, json!({"add": ["00-00-00-00-00-00-BB-01"]}), "2025-06-02T00:00:00Z", a);
    assert_eq!(code(&full), Some(RefusalCode::HanLogFull));
    assert_eq!(h.system.han_log.len(), HAN_LOG_MAX, "a refused change leaves the log as it was");
    assert_eq!(h.system.meter(meter).unwrap().supply, Supply::Enabled);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn commands_round_trip(o in any::<u64>(), tg in any::<u64>(), c in any::<u64>(), at in proptest::option::of(1i64..4_000_000_000),
                               srv in "[0-9]{1,2}(\\.[0-9]{1,2}){0,2}", body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let cmd = Command {
                id: RequestId { originator: Eui64::from_u64(o), target: Eui64::from_u64(tg), counter: c },
                srv,
                execute_at: at.map(|s| Timestamp::from_second(s).unwrap()),
                body,
            };
            prop_assert_eq!(Command::decode(&cmd.encode()).unwrap(), cmd.clone());
            let id = cmd.id.to_string();
            prop_assert_eq!(RequestId::parse(&id).unwrap(), cmd.id);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = Command::decode(&bytes);
            let mut with_magic = b"MHC1".to_vec();
            with_magic.extend(&bytes);
            let _ = Command::decode(&with_magic);
        }
    }
}

// R-COS-5: SRV 6.23 is obeyed only when signed with the hub's change-of-supplier key the
// devices were installed with; afterwards only the new supplier's critical commands run,
// the old supplier keeps its period, and the same 6.23 again changes nothing.
#[test]
fn change_of_supplier_credentials_need_the_hubs_key() {
    let cos = SigningKey::generate(&SystemRandom::new()).unwrap();
    let mut h = install();
    h.system.cos_key = Some(cos.public_key_spki().into());
    h.commission_all();
    let meter = eui(&h, Fuel::Electricity);
    let incoming = SigningKey::generate(&SystemRandom::new()).unwrap();
    const INCOMING: Eui64 = Eui64::from_u64(0x90B3_D51F_3001_0009);
    let body = json!({"effective_at": "2025-07-01T00:00:00Z",
                      "supplier": {"originator": INCOMING.to_string(), "spki": base64_of(&incoming.public_key_spki())}});
    let cmd = |counter: u64, body: &Value| {
        Command {
            id: RequestId { originator: INCOMING, target: meter, counter },
            srv: "6.23".into(),
            execute_at: None,
            body: serde_json::to_vec(body).unwrap(),
        }
        .encode()
    };
    let now = t("2025-07-01T08:00:00Z");
    let bytes = cmd(1, &body);
    // Unsigned, signed by the old supplier, signed by the incoming supplier: all refused.
    assert_eq!(code(&h.system.handle(now, &bytes, None, SUPPLIER_ACCESS)), Some(RefusalCode::SignatureMissing));
    for key in [&h.key, &incoming] {
        let sig = key.sign(&SystemRandom::new(), &bytes).unwrap();
        assert_eq!(
            code(&h.system.handle(now, &bytes, Some(&sig), SUPPLIER_ACCESS)),
            Some(RefusalCode::SignatureInvalid)
        );
    }
    // Not ahead of the meter's clock.
    let future = json!({"effective_at": "2025-07-02T00:00:00Z", "supplier": body["supplier"]});
    let b = cmd(2, &future);
    let sig = cos.sign(&SystemRandom::new(), &b).unwrap();
    assert_eq!(code(&h.system.handle(now, &b, Some(&sig), SUPPLIER_ACCESS)), Some(RefusalCode::InvalidBody));

    let sig = cos.sign(&SystemRandom::new(), &bytes).unwrap();
    let first = done(h.system.handle(now, &bytes, Some(&sig), SUPPLIER_ACCESS));
    assert_eq!(first["definitive_reading"]["at"], json!("2025-07-01T00:00:00Z"), "{first}");
    assert_eq!(
        done(h.system.handle(now, &bytes, Some(&sig), SUPPLIER_ACCESS)),
        first,
        "the same again changes nothing"
    );
    let m = h.system.meter(meter).unwrap();
    assert_eq!(m.supplier_data_from, t("2025-07-01T00:00:00Z"));
    assert_eq!(m.former_suppliers[0].originator, SUPPLIER);
    // Moving the period back is refused.
    let back = json!({"effective_at": "2025-06-20T00:00:00Z", "supplier": {"originator": SUPPLIER.to_string(), "spki": base64_of(&h.key.public_key_spki())}});
    let b = cmd(3, &back);
    let sig = cos.sign(&SystemRandom::new(), &b).unwrap();
    assert_eq!(code(&h.system.handle(now, &b, Some(&sig), SUPPLIER_ACCESS)), Some(RefusalCode::InvalidBody));
    // The old supplier's signed commands are refused now.
    assert_eq!(
        code(&h.signed("7.2", meter, json!({}), "2025-07-01T09:00:00Z")),
        Some(RefusalCode::UntrustedOriginator)
    );
    // The old supplier wins the customer back: what it sent before is still a replay, and
    // its new commands run.
    let back = json!({"effective_at": "2025-07-01T07:00:00Z",
                      "supplier": {"originator": SUPPLIER.to_string(), "spki": base64_of(&h.key.public_key_spki())}});
    let b = cmd(4, &back);
    let sig = cos.sign(&SystemRandom::new(), &b).unwrap();
    done(h.system.handle(now, &b, Some(&sig), SUPPLIER_ACCESS));
    let stale = Command {
        id: RequestId { originator: SUPPLIER, target: meter, counter: 1 },
        srv: "7.3".into(),
        execute_at: None,
        body: b"{}".to_vec(),
    }
    .encode();
    let stale_sig = h.key.sign(&SystemRandom::new(), &stale).unwrap();
    assert_eq!(code(&h.system.handle(now, &stale, Some(&stale_sig), SUPPLIER_ACCESS)), Some(RefusalCode::Replay));
    assert!(matches!(h.signed("7.3", meter, json!({}), "2025-07-01T09:00:00Z"), Outcome::Done(_)));
    // A tenancy restriction applies to other users, not to the supplier.
    let b = Command {
        id: RequestId { originator: INCOMING, target: meter, counter: 10 },
        srv: "3.2".into(),
        execute_at: None,
        body: serde_json::to_vec(&json!({"tenancy_from": "2025-07-01T06:00:00Z"})).unwrap(),
    }
    .encode();
    done(h.system.handle(now, &b, None, SUPPLIER_ACCESS));
    let other = Access { requester: Requester::OtherUser, from: None, to: None };
    let read = done(h.plain("4.8.1", meter, json!({}), "2025-07-01T09:00:00Z", other));
    assert_eq!(read["from"], json!("2025-07-01T06:00:00Z"), "{read}");

    // R-COS-4: the incoming supplier wins the customer again (A→B→A→B): the old supplier now
    // has two ended periods here and reads either, each alone, by the window it asks for.
    let again = json!({"effective_at": "2025-07-01T08:30:00Z", "supplier": body["supplier"]});
    let b = cmd(11, &again);
    let sig = cos.sign(&SystemRandom::new(), &b).unwrap();
    done(h.system.handle(t("2025-07-01T09:00:00Z"), &b, Some(&sig), SUPPLIER_ACCESS));
    let former = Access { requester: Requester::FormerSupplier, from: None, to: None };
    for (asked, from, to) in [
        (json!({}), "2025-07-01T07:00:00Z", "2025-07-01T08:30:00Z"),
        (json!({"to": "2025-07-01T08:00:00Z"}), "2025-07-01T07:00:00Z", "2025-07-01T08:00:00Z"),
        (json!({"to": "2025-06-30T12:00:00Z"}), "2025-06-01T10:00:00Z", "2025-06-30T12:00:00Z"),
        // Spanning both: only the later one, never the other supplier's period between.
        (
            json!({"from": "2025-06-30T00:00:00Z", "to": "2025-07-01T09:00:00Z"}),
            "2025-07-01T07:00:00Z",
            "2025-07-01T08:30:00Z",
        ),
        (
            json!({"from": "2025-06-30T00:00:00Z", "to": "2025-07-01T03:00:00Z"}),
            "2025-06-30T00:00:00Z",
            "2025-07-01T00:00:00Z",
        ),
    ] {
        let read = done(h.plain("4.8.1", meter, asked.clone(), "2025-07-01T10:00:00Z", former));
        assert_eq!((read["from"].as_str(), read["to"].as_str()), (Some(from), Some(to)), "{asked}: {read}");
    }
    // The incoming supplier, asked as a former one of its first period, gets that period.
    let b = Command {
        id: RequestId { originator: INCOMING, target: meter, counter: 12 },
        srv: "4.8.1".into(),
        execute_at: None,
        body: serde_json::to_vec(&json!({"to": "2025-07-01T05:00:00Z"})).unwrap(),
    }
    .encode();
    let read = done(h.system.handle(t("2025-07-01T10:00:00Z"), &b, None, former));
    assert_eq!(
        (read["from"].as_str(), read["to"].as_str()),
        (Some("2025-07-01T00:00:00Z"), Some("2025-07-01T05:00:00Z"))
    );
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// An image signed by `key` for an electricity meter, with its manifest body for 11.1.
fn firmware(key: &SigningKey, layer: &str, version: &str, supplier: Option<Eui64>) -> (Value, Vec<u8>, String) {
    let bytes: Vec<u8> = format!("{layer} {version} ").bytes().cycle().take(2048).collect();
    let hash: String = domain::crypto::sha256(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    let manifest = device::firmware::Manifest {
        image_hash: hash.clone(),
        layer: if layer == "core" { device::firmware::Layer::Core } else { device::firmware::Layer::Application },
        version: version.into(),
        device_kind: "electricity-meter".into(),
        supplier,
        urgency: device::firmware::Urgency::Routine,
    };
    let sig = key.sign(&SystemRandom::new(), &manifest.signed_bytes()).unwrap();
    (json!({"manifest": manifest, "signature": base64_of(&sig)}), bytes, hash)
}

// R-FLT-3: the supplier-specific application layer belongs to its supplier: it runs while the
// device trusts that supplier, stops at a change of supplier, and another supplier's image is
// refused; the manufacturer's core layer is everyone's.
#[test]
fn a_suppliers_application_layer_stops_at_a_change_of_supplier() {
    let cos = SigningKey::generate(&SystemRandom::new()).unwrap();
    let maker = SigningKey::generate(&SystemRandom::new()).unwrap();
    let mut h = install();
    h.system.cos_key = Some(cos.public_key_spki().into());
    for d in &mut h.system.devices {
        d.manufacturer = Some(TrustAnchor {
            originator: Eui64::from_u64(0xAA),
            spki: maker.public_key_spki().into(),
            prepayment: None,
        });
    }
    h.commission_all();
    let meter = eui(&h, Fuel::Electricity);
    const INCOMING: Eui64 = Eui64::from_u64(0x90B3_D51F_3001_0009);
    let now = "2025-06-10T10:00:00Z";
    let send = |h: &mut Home, body: &Value, image: &[u8]| {
        let bytes = h.command("11.1", meter, body.clone());
        h.system.handle_with_image(t(now), &bytes, None, SUPPLIER_ACCESS, Some(image))
    };
    // Its own application, held then activated.
    let (body, image, hash) = firmware(&maker, "application", "app-1", Some(SUPPLIER));
    done(send(&mut h, &body, &image));
    done(h.signed("11.3", meter, json!({"image_hash": hash}), now));
    let app = h.system.device(meter).unwrap().fw.application.clone().unwrap();
    assert_eq!((app.version.as_str(), app.enabled), ("app-1", true));
    // Another supplier's application is not for this device while it trusts this one.
    let (body, image, _) = firmware(&maker, "application", "app-x", Some(INCOMING));
    assert_eq!(code(&send(&mut h, &body, &image)), Some(RefusalCode::NotEntitled));
    // A core image signed by someone else, or damaged, is refused; the running one is kept.
    let stranger = SigningKey::generate(&SystemRandom::new()).unwrap();
    let (body, image, _) = firmware(&stranger, "core", "9.9.9", None);
    assert_eq!(code(&send(&mut h, &body, &image)), Some(RefusalCode::SignatureInvalid));
    let (body, mut image, _) = firmware(&maker, "core", "1.1.0", None);
    image[0] ^= 1;
    assert_eq!(code(&send(&mut h, &body, &image)), Some(RefusalCode::SignatureInvalid));
    assert_eq!(h.system.device(meter).unwrap().firmware, "1.0.0");

    // The change of supplier: the application stops.
    let body = json!({"effective_at": "2025-06-10T09:00:00Z",
                      "supplier": {"originator": INCOMING.to_string(), "spki": base64_of(&maker.public_key_spki())}});
    let bytes = Command {
        id: RequestId { originator: INCOMING, target: meter, counter: 1 },
        srv: "6.23".into(),
        execute_at: None,
        body: serde_json::to_vec(&body).unwrap(),
    }
    .encode();
    let sig = cos.sign(&SystemRandom::new(), &bytes).unwrap();
    done(h.system.handle(t(now), &bytes, Some(&sig), SUPPLIER_ACCESS));
    let app = h.system.device(meter).unwrap().fw.application.clone().unwrap();
    assert_eq!(
        (app.version.as_str(), app.enabled),
        ("app-1", false),
        "disabled until the new supplier installs its own"
    );
    // The new supplier's own application is accepted now.
    let (body, image, _) = firmware(&maker, "application", "app-x", Some(INCOMING));
    let bytes = Command {
        id: RequestId { originator: INCOMING, target: meter, counter: 2 },
        srv: "11.1".into(),
        execute_at: None,
        body: serde_json::to_vec(&body).unwrap(),
    }
    .encode();
    done(h.system.handle_with_image(t(now), &bytes, None, SUPPLIER_ACCESS, Some(&image)));
}

// R-FLT-3, R-FLT-4: no firmware rollback (an older signed image is refused), and an agent's
// signed activation cannot be replayed after its key is removed and put back.
#[test]
fn firmware_never_rolls_back_and_agent_activations_are_not_replayed() {
    let maker = SigningKey::generate(&SystemRandom::new()).unwrap();
    let agent = SigningKey::generate(&SystemRandom::new()).unwrap();
    const AGENT: Eui64 = Eui64::from_u64(0x90B3_D51F_3001_0042);
    let mut h = install();
    for d in &mut h.system.devices {
        d.manufacturer = Some(TrustAnchor {
            originator: Eui64::from_u64(0xAA),
            spki: maker.public_key_spki().into(),
            prepayment: None,
        });
    }
    h.commission_all();
    let meter = eui(&h, Fuel::Electricity);
    let now = "2025-06-10T10:00:00Z";
    let send = |h: &mut Home, body: &Value, image: &[u8]| {
        let bytes = h.command("11.1", meter, body.clone());
        h.system.handle_with_image(t(now), &bytes, None, SUPPLIER_ACCESS, Some(image))
    };
    let (body, image, hash) = firmware(&maker, "core", "1.10.0", None);
    done(send(&mut h, &body, &image));
    // The supplier names its agent (6.15.1, critical); the agent activates with its own key.
    let anchor = json!({"originator": AGENT.to_string(), "spki": base64_of(&agent.public_key_spki())});
    done(h.signed("6.15.1", meter, json!({"agent": anchor}), now));
    let activation = Command {
        id: RequestId { originator: AGENT, target: meter, counter: 5 },
        srv: "11.3".into(),
        execute_at: None,
        body: serde_json::to_vec(&json!({"image_hash": hash})).unwrap(),
    }
    .encode();
    let sig = agent.sign(&SystemRandom::new(), &activation).unwrap();
    done(h.system.handle(t(now), &activation, Some(&sig), SUPPLIER_ACCESS));
    assert_eq!(h.system.device(meter).unwrap().firmware, "1.10.0");
    // An older image, however well signed, is refused: 1.9.9 < 1.10.0.
    let (body, image, _) = firmware(&maker, "core", "1.9.9", None);
    let o = send(&mut h, &body, &image);
    assert_eq!(code(&o), Some(RefusalCode::InvalidBody), "{o:?}");
    // The agent removed and put back: its old activation is still a replay.
    done(h.signed("6.15.1", meter, json!({"agent": null}), now));
    done(h.signed("6.15.1", meter, json!({"agent": anchor}), now));
    let (body, image, _) = firmware(&maker, "core", "1.10.0", None);
    done(send(&mut h, &body, &image));
    assert_eq!(code(&h.system.handle(t(now), &activation, Some(&sig), SUPPLIER_ACCESS)), Some(RefusalCode::Replay));
    // The agent's key opens nothing but 11.3.
    let disable = Command {
        id: RequestId { originator: AGENT, target: meter, counter: 6 },
        srv: "7.2".into(),
        execute_at: None,
        body: b"{}".to_vec(),
    }
    .encode();
    let sig = agent.sign(&SystemRandom::new(), &disable).unwrap();
    assert_eq!(
        code(&h.system.handle(t(now), &disable, Some(&sig), SUPPLIER_ACCESS)),
        Some(RefusalCode::UntrustedOriginator)
    );
}

/// In JSON (request bodies, reads shown to users) a trust anchor without a prepayment key
/// and an event without data leave the field out, as they always did; the fleet's binary
/// form writes every field instead. Both read back.
#[test]
fn json_leaves_absent_optional_fields_out() {
    let anchor = TrustAnchor {
        originator: Eui64::from_u64(0x90B3_D51F_3001_0002),
        spki: vec![1, 2, 3].into(),
        prepayment: None,
    };
    let text = serde_json::to_value(&anchor).unwrap();
    assert_eq!(text, json!({"originator": "90-B3-D5-1F-30-01-00-02", "spki": "AQID"}));
    assert_eq!(serde_json::from_value::<TrustAnchor>(text).unwrap(), anchor);
    let with_key = TrustAnchor { prepayment: Some(vec![4].into()), ..anchor };
    assert_eq!(serde_json::to_value(&with_key).unwrap()["prepayment"], json!("BA=="));

    let event = device::account::MeterEvent {
        seq: 3,
        at: "2026-01-05T09:00:00Z".parse().unwrap(),
        alert: 0x8F1C,
        detail: "low credit".into(),
        data: None,
    };
    let text = serde_json::to_value(&event).unwrap();
    assert_eq!(text, json!({"seq": 3, "at": "2026-01-05T09:00:00Z", "alert": 0x8F1C, "detail": "low credit"}));
    assert_eq!(serde_json::from_value::<device::account::MeterEvent>(text).unwrap(), event);
    let with_data = device::account::MeterEvent { data: Some(json!({"import_wh": 5})), ..event };
    assert_eq!(serde_json::to_value(&with_data).unwrap()["data"], json!({"import_wh": 5}));
}
