//! Identifier tables (R-REG-3): every example from `data/reference/mpxn-examples.md`, the
//! long form, the relaxed check digit, MPRNs and EUI-64s in every accepted spelling.

use domain::ids::{IdKind, IdRule, MprnCheck};
use domain::{Eui64, FullMpan, IdRules, Mpan, Mprn, Mpxn};

// R-REG-3
#[test]
fn mpan_cores_table() {
    // (input, Ok(canonical) | Err(rule code))
    let table: &[(&str, Result<&str, &str>)] = &[
        ("2499999999991", Ok("2499999999991")),
        ("1312345678907", Ok("1312345678907")),
        ("1030006718997", Ok("1030006718997")),
        ("1700053058802", Ok("1700053058802")),
        ("1000071051506", Ok("1000071051506")),
        ("2499999999990", Err("check-digit")),
        ("8699999999991", Err("distributor-id")),
        ("1234567890123", Err("check-digit")),
        ("0912345678901", Err("distributor-id")),
        ("131234567890", Err("length")),
        ("13123456789070", Err("length")),
        ("13123456789O7", Err("character")),
        ("", Err("length")),
        (" 312345678907", Err("character")),
    ];
    for (input, want) in table {
        let got = Mpan::parse(input).map(|m| m.to_string()).map_err(|e| {
            assert_eq!(e.kind, IdKind::Mpan, "{input}");
            assert_eq!(e.input, *input);
            e.rule.code()
        });
        assert_eq!(got.as_deref().map_err(|e| *e), *want, "MPAN {input:?}");
    }
}

// R-REG-3
#[test]
fn mpan_error_names_identifier_and_rule() {
    let e = Mpan::parse("2499999999990").unwrap_err();
    assert_eq!(e.rule, IdRule::CheckDigit { expected: 1, found: 0 });
    let text = e.to_string();
    assert!(text.contains("MPAN"), "{text}");
    assert!(text.contains("2499999999990"), "{text}");
    assert!(text.contains("check-digit"), "{text}");
}

// R-REG-3: the DCC's own test data fails the check digit; a switch relaxes it.
#[test]
fn relaxed_rules_accept_industry_test_data_but_keep_other_rules() {
    for input in ["1312345678111", "1312345678333"] {
        assert_eq!(Mpan::parse(input).unwrap_err().rule.code(), "check-digit");
        let m = Mpan::parse_with(input, IdRules::RELAXED).unwrap();
        assert_eq!(m.to_string(), input);
        assert!(!m.check_digit_valid());
    }
    assert_eq!(Mpan::parse_with("8699999999991", IdRules::RELAXED).unwrap_err().rule.code(), "distributor-id");
    assert_eq!(Mpan::parse_with("13123456781", IdRules::RELAXED).unwrap_err().rule.code(), "length");
}

// R-REG-3
#[test]
fn full_mpan_long_form() {
    let full = FullMpan::parse_with("001112221312345678907", IdRules::STRICT).unwrap();
    assert_eq!(full.top_line.profile_class, 0);
    assert_eq!(full.top_line.meter_timeswitch_code, 111);
    assert_eq!(full.top_line.line_loss_factor_class, 222);
    assert_eq!(full.core.to_string(), "1312345678907");
    assert_eq!(full.to_string(), "001112221312345678907");
    let table: &[(&str, &str)] = &[
        ("001112221312345678900", "check-digit"),
        ("091112221312345678907", "profile-class"),
        ("00111222131234567890", "length"),
        ("0011122213123456789x7", "character"),
    ];
    for (input, rule) in table {
        assert_eq!(FullMpan::parse_with(input, IdRules::STRICT).unwrap_err().rule.code(), *rule, "{input}");
    }
}

// R-REG-3: MPRNs are 6-10 digits; the check-digit rule is advisory (reported, not enforced).
#[test]
fn mprn_table() {
    let table: &[(&str, Result<MprnCheck, &str>)] = &[
        ("3938424403", Ok(MprnCheck::Pass)),
        ("1000999888", Ok(MprnCheck::Fail { expected: 9, found: 88 })),
        ("123456", Ok(MprnCheck::Fail { expected: 9, found: 56 })),
        ("123409", Ok(MprnCheck::Pass)),
        ("12345", Err("length")),
        ("12345678901", Err("length")),
        ("39384244O3", Err("character")),
    ];
    for (input, want) in table {
        let got = Mprn::parse(input).map(|m| {
            assert_eq!(m.to_string(), *input, "round trip keeps leading digits");
            m.advisory_check()
        });
        assert_eq!(got.map_err(|e| e.rule.code()), *want, "MPRN {input:?}");
    }
    // Leading zeros survive.
    assert_eq!(Mprn::parse("0012345").unwrap().to_string(), "0012345");
}

// R-REG-3
#[test]
fn mpxn_tells_fuel_from_form() {
    let table: &[(&str, Result<(&str, &str), &str>)] = &[
        ("1312345678907", Ok(("electricity", "1312345678907"))),
        ("001112221312345678907", Ok(("electricity", "1312345678907"))),
        ("3938424403", Ok(("gas", "3938424403"))),
        ("123456", Ok(("gas", "123456"))),
        ("12345678901", Err("length")),
        ("1312345678900", Err("check-digit")),
    ];
    for (input, want) in table {
        let got = Mpxn::parse(input).map(|m| (m.fuel().as_str(), m.to_string()));
        let got = got.as_ref().map(|(f, s)| (*f, s.as_str())).map_err(|e| e.rule.code());
        assert_eq!(got, *want, "MPxN {input:?}");
    }
}

#[test]
fn eui64_table() {
    let table: &[(&str, Result<&str, &str>)] = &[
        ("00DB1234567890A0", Ok("00-DB-12-34-56-78-90-A0")),
        ("00db1234567890a0", Ok("00-DB-12-34-56-78-90-A0")),
        ("00-DB-12-34-56-78-90-A0", Ok("00-DB-12-34-56-78-90-A0")),
        ("90-b3-d5-1f-30-01-00-00", Ok("90-B3-D5-1F-30-01-00-00")),
        ("00-DB12-34-56-78-90-A0", Err("hyphen-layout")),
        ("00:DB:12:34:56:78:90:A0", Err("hyphen-layout")),
        ("00DB1234567890A", Err("length")),
        ("00DB1234567890AG", Err("character")),
        ("00-DB-12-34-56-78-90-AZ", Err("character")),
    ];
    for (input, want) in table {
        let got = Eui64::parse(input).map(|e| e.to_string());
        assert_eq!(got.as_deref().map_err(|e| e.rule.code()), *want, "EUI-64 {input:?}");
    }
    let e = Eui64::parse("00-DB-12-34-56-78-90-AZ").unwrap_err();
    assert_eq!(e.rule, IdRule::Character { position: 22, found: 'Z', expected: "a hex digit 0-9, A-F" });
    assert_eq!(Eui64::parse("00DB1234567890A0").unwrap().to_plain(), "00DB1234567890A0");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // Any 12 digits with a valid distributor id and the computed check digit parse, and
        // every other 13th digit is refused for the check digit alone.
        #[test]
        fn mpan_check_digit_is_exactly_the_rule(dist in 10u8..=36, rest in proptest::collection::vec(0u8..10, 10), last in 0u8..10) {
            let mut d = vec![dist / 10, dist % 10];
            d.extend(rest);
            let first12: [u8; 12] = d.clone().try_into().unwrap();
            let check = domain::ids::mpan_check_digit(&first12);
            let s: String = d.iter().chain(std::iter::once(&last)).map(|x| char::from(b'0' + x)).collect();
            let parsed = Mpan::parse(&s);
            if last == check {
                prop_assert_eq!(parsed.unwrap().to_string(), s);
            } else {
                prop_assert_eq!(parsed.unwrap_err().rule, IdRule::CheckDigit { expected: check, found: last });
            }
        }

        #[test]
        fn eui64_round_trips(v in any::<u64>()) {
            let e = Eui64::from_u64(v);
            let pairs: Vec<String> = v.to_be_bytes().iter().map(|b| format!("{b:02X}")).collect();
            prop_assert_eq!(e.to_string(), pairs.join("-"));
            prop_assert_eq!(Eui64::parse(&e.to_string()).unwrap(), e);
            prop_assert_eq!(Eui64::parse(&e.to_plain()).unwrap(), e);
            prop_assert_eq!(Eui64::parse(&e.to_plain().to_lowercase()).unwrap(), e);
        }

        // Parsing arbitrary text never panics, and whatever parses prints back canonically.
        #[test]
        fn parsers_never_panic(s in "\\PC{0,30}") {
            if let Ok(m) = Mpxn::parse_with(&s, IdRules::RELAXED) {
                prop_assert!(Mpxn::parse_with(&m.to_string(), IdRules::RELAXED).is_ok());
            }
            let _ = Eui64::parse(&s);
        }
    }
}

// R-PAY-1: the customer identifier on cards and keys carries the MPxN and a check digit; a
// malformed one is refused with the rule it breaks.
#[test]
fn customer_identifiers_round_trip_and_refusals_name_the_rule() {
    use domain::customer::{CustomerId, CustomerIdError};
    for m in ["1312345678907", "3938424403", "123456"] {
        let mpxn = Mpxn::parse_with(m, IdRules::RELAXED).unwrap();
        let id = CustomerId::for_mpxn(mpxn);
        let printed = id.to_string();
        assert_eq!(CustomerId::parse_with(&printed, IdRules::RELAXED).unwrap().mpxn(), mpxn, "{printed}");
        assert_eq!(CustomerId::parse_with(&id.digits(), IdRules::RELAXED).unwrap(), id);
    }
    let elec = CustomerId::for_mpxn(Mpxn::parse_with("1312345678907", IdRules::STRICT).unwrap()).digits();
    assert_eq!(elec.len(), 17);
    assert!(elec.starts_with("981"));
    // Every single-digit change is caught by the check digit (or an earlier rule).
    for pos in 0..elec.len() {
        for d in b'0'..=b'9' {
            let mut b = elec.clone().into_bytes();
            if b[pos] == d {
                continue;
            }
            b[pos] = d;
            let typo = String::from_utf8(b).unwrap();
            assert!(CustomerId::parse_with(&typo, IdRules::RELAXED).is_err(), "{typo} accepted");
        }
    }
    let cases: &[(&str, CustomerIdError)] = &[
        ("98-13x", CustomerIdError::NotDigits),
        ("", CustomerIdError::NotDigits),
        ("9713123456789079", CustomerIdError::Prefix { found: "97".into() }),
        ("9831312345678907", CustomerIdError::Fuel { found: '3' }),
        ("981131234567890", CustomerIdError::Length { found: 15 }),
        ("9821234", CustomerIdError::Length { found: 7 }),
    ];
    for (text, want) in cases {
        assert_eq!(CustomerId::parse_with(text, IdRules::RELAXED).unwrap_err(), *want, "{text}");
    }
    // A good check digit around an MPAN that fails its own check digit: refused by the MPAN rule.
    let bad_core = "1312345678111";
    let body = format!("981{bad_core}");
    let mut with_check = None;
    for c in 0..10 {
        let candidate = format!("{body}{c}");
        if !matches!(CustomerId::parse_with(&candidate, IdRules::STRICT), Err(CustomerIdError::CheckDigit)) {
            with_check = Some(candidate);
        }
    }
    let e = CustomerId::parse_with(&with_check.unwrap(), IdRules::STRICT).unwrap_err();
    assert!(matches!(e, CustomerIdError::Mpxn(ref m) if m.contains("MPAN check-digit")), "{e}");
}

proptest::proptest! {
    /// Any digits typed as a customer identifier: an identifier or a named refusal, never a
    /// panic; every valid MPxN's identifier reads back to it.
    #[test]
    fn customer_identifiers_never_panic_and_round_trip(typed in "[0-9 -]{0,24}", core in 1_000_000_000_000u64..2_400_000_000_000) {
        use domain::customer::CustomerId;
        let _ = CustomerId::parse_with(&typed, IdRules::RELAXED);
        if let Ok(m) = Mpxn::parse_with(&core.to_string(), IdRules::RELAXED) {
            let id = CustomerId::for_mpxn(m);
            proptest::prop_assert_eq!(CustomerId::parse_with(&id.to_string(), IdRules::RELAXED).unwrap().mpxn(), m);
        }
    }
}
