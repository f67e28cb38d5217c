//! GBCS UTRNs (R-PAY-3, R-PAY-4): the known answer of `reference/gbcs-utrn.md` with the DCC
//! Boxed test keys, bit for bit; and properties of the device side: every issued UTRN
//! credits exactly once, replays, altered digits, other devices and counters outside the
//! window are refused.

use domain::Eui64;
use domain::crypto::{KeyAgreementKey, derive_p256_scalar, p256_point_from_pem};
use domain::utrn::{self, CounterCache, UtrnError, ValueClass};
use proptest::prelude::*;

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/reference/dccboxed-test-keys/");

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{KEYS}{name}")).unwrap_or_else(|e| panic!("test key {name}: {e}"))
}

fn eui(s: &str) -> Eui64 {
    Eui64::parse(s).unwrap()
}

#[test]
fn the_reference_known_answer_with_the_dcc_boxed_test_keys() {
    let supplier = KeyAgreementKey::from_pem(&read("90b3d51f30010000-pp-ka.key")).unwrap();
    let device_point = p256_point_from_pem(&read("00db1234567890a0-ka.pem")).unwrap();
    let z = supplier.shared_secret(&device_point).unwrap();
    let got =
        utrn::generate(&z, eui("90B3D51F30010000"), eui("00DB1234567890A0"), 0x1_0000_0000, ValueClass::Pounds, 100)
            .unwrap();
    assert_eq!(got, "73943333457189043313");
    // The supplier's certificate carries the public half of the key used above.
    let supplier_point = p256_point_from_pem(&read("90b3d51f30010000-pp-ka.pem")).unwrap();
    assert_eq!(supplier_point, supplier.public_point());
}

#[test]
fn values_and_counters_outside_the_rules_are_refused() {
    let z = [7u8; 32];
    let (o, t) = (eui("90B3D51F30010000"), eui("00DB1234567890A0"));
    assert_eq!(utrn::generate(&z, o, t, 1 << 32, ValueClass::Pennies, 8192), Err(UtrnError::Value(8192)));
    assert!(utrn::generate(&z, o, t, 1 << 32, ValueClass::Pennies, 8191).is_ok());
    assert_eq!(utrn::generate(&z, o, t, (1 << 32) + 1, ValueClass::Pennies, 1), Err(UtrnError::Counter((1 << 32) + 1)));
    assert_eq!(utrn::generate(&z, o, t, 0, ValueClass::Pennies, 1), Err(UtrnError::Counter(0)));
    for bad in ["7394333345718904331", "7394333345718904331x", ""] {
        assert_eq!(utrn::decode(bad), Err(UtrnError::Format), "{bad}");
    }
    assert_eq!(utrn::decode("73943333457189043314"), Err(UtrnError::CheckDigit));
    assert_eq!(utrn::decode("7394 3333 4571 8904 3313").map(|d| d.value), Ok(100), "spaces as printed");
}

/// A supplier and two devices with keys derived from a seed.
struct Parties {
    supplier: KeyAgreementKey,
    device: KeyAgreementKey,
    other: KeyAgreementKey,
}

fn parties(seed: u64) -> Parties {
    let k =
        |label: &str| KeyAgreementKey::from_scalar(&derive_p256_scalar(format!("{label}{seed}").as_bytes())).unwrap();
    Parties { supplier: k("supplier"), device: k("device"), other: k("other") }
}

const ORIGINATOR: &str = "90B3D51F30010000";
const TARGET: &str = "00DB1234567890A0";
const OTHER: &str = "00DB1234567890A1";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every issued UTRN credits exactly once, in any order within the window; a replay is
    /// refused as a duplicate; the credits add up to what was issued.
    #[test]
    fn every_issued_utrn_credits_exactly_once(
        seed in 0u64..1000,
        values in prop::collection::vec((0u32..=8191, any::<bool>()), 1..40),
        shuffle in any::<u64>(),
    ) {
        let p = parties(seed);
        let (o, t) = (eui(ORIGINATOR), eui(TARGET));
        let z_supplier = p.supplier.shared_secret(&p.device.public_point()).unwrap();
        let z_device = p.device.shared_secret(&p.supplier.public_point()).unwrap();
        prop_assert_eq!(z_supplier, z_device);
        let issued: Vec<(String, u64)> = values
            .iter()
            .enumerate()
            .map(|(i, (v, pounds))| {
                let class = if *pounds { ValueClass::Pounds } else { ValueClass::Pennies };
                let u = utrn::generate(&z_supplier, o, t, (i as u64 + 1) << 32, class, *v).unwrap();
                (u, class.pence(*v as u16))
            })
            .collect();
        // Entered in a shuffled order (a customer keeps receipts and types them later).
        let mut order: Vec<usize> = (0..issued.len()).collect();
        let mut x = shuffle | 1;
        for i in (1..order.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut cache = CounterCache::new();
        let mut credited = 0u64;
        for &i in &order {
            let a = cache.accept(&z_device, o, t, &issued[i].0).unwrap();
            credited += a.pence();
        }
        prop_assert_eq!(credited, issued.iter().map(|(_, p)| p).sum::<u64>());
        for (u, _) in &issued {
            prop_assert!(matches!(cache.accept(&z_device, o, t, u), Err(UtrnError::Duplicate(_))));
        }
    }

    /// Altered digits, another device's UTRN and another supplier's key are refused, and
    /// refusing them changes nothing.
    #[test]
    fn forgeries_are_refused_and_change_nothing(seed in 0u64..1000, value in 0u32..=8191, pos in 0usize..20, delta in 1u8..10) {
        let p = parties(seed);
        let (o, t, other) = (eui(ORIGINATOR), eui(TARGET), eui(OTHER));
        let z = p.supplier.shared_secret(&p.device.public_point()).unwrap();
        let z_device = p.device.shared_secret(&p.supplier.public_point()).unwrap();
        let genuine = utrn::generate(&z, o, t, 1 << 32, ValueClass::Pennies, value).unwrap();
        let mut cache = CounterCache::new();

        // One digit changed: the check digit or the MAC catches it.
        let mut digits: Vec<u8> = genuine.bytes().collect();
        digits[pos] = b'0' + (digits[pos] - b'0' + delta) % 10;
        let altered = String::from_utf8(digits).unwrap();
        prop_assert!(cache.accept(&z_device, o, t, &altered).is_err());

        // Made for another device (its own key): not authentic here.
        let z_other = p.supplier.shared_secret(&p.other.public_point()).unwrap();
        let for_other = utrn::generate(&z_other, o, other, 1 << 32, ValueClass::Pennies, value).unwrap();
        prop_assert_eq!(cache.accept(&z_device, o, t, &for_other), Err(UtrnError::NotAuthentic));
        prop_assert_eq!(UtrnError::NotAuthentic.alert(), Some(0x8F63));
        prop_assert_eq!(cache.counters().count(), 0, "refusals leave the cache as it was");

        // The genuine one still works after the refusals.
        prop_assert_eq!(cache.accept(&z_device, o, t, &genuine).map(|a| a.value as u32), Ok(value));
    }

    /// A counter far outside the window of the last accepted one is read as another counter,
    /// whose MAC fails.
    #[test]
    fn counters_outside_the_window_are_refused(seed in 0u64..200, jump in 513u64..1000) {
        let p = parties(seed);
        let (o, t) = (eui(ORIGINATOR), eui(TARGET));
        let z = p.supplier.shared_secret(&p.device.public_point()).unwrap();
        let mut cache = CounterCache::new();
        cache.accept(&z, o, t, &utrn::generate(&z, o, t, 1 << 32, ValueClass::Pounds, 5).unwrap()).unwrap();
        let far = utrn::generate(&z, o, t, (1 + jump + 1024) << 32, ValueClass::Pounds, 5).unwrap();
        prop_assert_eq!(cache.accept(&z, o, t, &far), Err(UtrnError::NotAuthentic));
    }
}

#[test]
fn the_cache_keeps_the_last_hundred_counters() {
    let p = parties(1);
    let (o, t) = (eui(ORIGINATOR), eui(TARGET));
    let z = p.supplier.shared_secret(&p.device.public_point()).unwrap();
    let mut cache = CounterCache::new();
    let all: Vec<String> =
        (1..=150u64).map(|n| utrn::generate(&z, o, t, n << 32, ValueClass::Pennies, 1).unwrap()).collect();
    for u in &all {
        cache.accept(&z, o, t, u).unwrap();
    }
    assert_eq!(cache.counters().count(), utrn::CACHE_COUNTERS);
    assert!(matches!(cache.accept(&z, o, t, &all[149]), Err(UtrnError::Duplicate(_))));
    // One that aged out of the cache does not credit again.
    assert!(matches!(cache.accept(&z, o, t, &all[0]), Err(UtrnError::Duplicate(_))));
    assert_eq!(cache.counters().count(), utrn::CACHE_COUNTERS);
}

/// Accepted out of order (a later receipt typed before an earlier one arrives), a counter
/// that leaves the cache is still never accepted again.
#[test]
fn out_of_order_acceptance_never_lets_a_counter_credit_twice() {
    let p = parties(2);
    let (o, t) = (eui(ORIGINATOR), eui(TARGET));
    let z = p.supplier.shared_secret(&p.device.public_point()).unwrap();
    let make = |n: u64| utrn::generate(&z, o, t, n << 32, ValueClass::Pennies, 1).unwrap();
    let mut cache = CounterCache::new();
    // 2 before 1, then 99 more: 101 accepted, one has left the cache.
    cache.accept(&z, o, t, &make(2)).unwrap();
    cache.accept(&z, o, t, &make(1)).unwrap();
    for n in 3..=101 {
        cache.accept(&z, o, t, &make(n)).unwrap();
    }
    for n in 1..=101 {
        assert!(matches!(cache.accept(&z, o, t, &make(n)), Err(UtrnError::Duplicate(_))), "counter {n} credited twice");
    }
}

proptest! {
    /// Whatever is typed on a keypad: a decoded top-up or a refusal, never a panic; and a
    /// UTRN a supplier made always decodes to the value and class it was made with.
    #[test]
    fn anything_typed_is_decoded_or_refused(typed in "[0-9 -]{0,30}") {
        let _ = utrn::decode(&typed);
    }

    #[test]
    fn made_utrns_decode_to_what_they_carry(n in 1u64..1_000_000, value in 0u32..=8191, pounds in any::<bool>()) {
        let class = if pounds { ValueClass::Pounds } else { ValueClass::Pennies };
        let u = utrn::generate(&[9u8; 32], eui(ORIGINATOR), eui(TARGET), n << 32, class, value).unwrap();
        let d = utrn::decode(&u).unwrap();
        prop_assert_eq!((d.value as u32, d.class, d.counter_bits as u64), (value, class, n & 0x3FF));
    }
}
