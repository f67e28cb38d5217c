//! Product configuration (R-PM-1, R-PM-2) as properties: reading a change never panics on
//! any JSON; a change the form accepts always yields a product; the consistency check is
//! total and deterministic; and the rules in the tables hold.

use domain::product::{Change, PRODUCT_SRVS, PaymentMode, Product};
use proptest::prelude::*;
use serde_json::{Value, json};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-100_000i64..2_000_000).prop_map(|n| json!(n)),
        "[0-9:]{0,6}".prop_map(Value::String),
        "[a-z_]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("tariff".to_string()),
                    Just("rates_mp_per_kwh".to_string()),
                    Just("switching".to_string()),
                    Just("at".to_string()),
                    Just("rate".to_string()),
                    Just("standing_charge_mp_per_day".to_string()),
                    Just("payment_mode".to_string()),
                    Just("emergency_credit".to_string()),
                    Just("limit_pence".to_string()),
                    Just("threshold_pence".to_string()),
                    Just("non_disablement".to_string()),
                    Just("from".to_string()),
                    Just("to".to_string()),
                    "[a-z]{1,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any JSON, any product SRV: a form error naming a field, or a change; applying an
    /// accepted change and checking the result never panics, and judging twice agrees.
    #[test]
    fn reading_and_judging_changes_is_total(srv in prop::sample::select(PRODUCT_SRVS), body in arb_json(), prepay in any::<bool>()) {
        match Change::parse(srv, &body) {
            Err(e) => prop_assert!(e.field == "body" || e.field.starts_with("body.") || e.field == "srv", "{}", e.field),
            Ok(change) => {
                let mode = if prepay { PaymentMode::Prepayment } else { PaymentMode::Credit };
                let base = Product::default().with(&Change::PaymentMode { payment_mode: mode });
                let after = base.with(&change);
                prop_assert_eq!(after.check(), after.check());
                // A change round-trips through its stored form (the meter persists held ones).
                let stored = serde_json::to_string(&change).unwrap();
                prop_assert_eq!(serde_json::from_str::<Change>(&stored).unwrap(), change);
            }
        }
    }
}

/// Consistency rules, one row each: the change, the mode it lands on, and the field the
/// meter names (or none when consistent).
#[test]
fn consistency_rules_table() {
    let cases: &[(&str, Value, PaymentMode, Option<&str>)] = &[
        (
            "1.1.1",
            json!({"tariff": {"rates_mp_per_kwh": [20000]}, "standing_charge_mp_per_day": 0}),
            PaymentMode::Credit,
            None,
        ),
        (
            "1.1.1",
            json!({"tariff": {"rates_mp_per_kwh": [20000, 9000]}, "standing_charge_mp_per_day": 0}),
            PaymentMode::Credit,
            Some("tariff.switching"),
        ),
        (
            "1.1.1",
            json!({"tariff": {"rates_mp_per_kwh": [20000], "switching": [{"at": "07:00", "rate": 0}]}, "standing_charge_mp_per_day": 0}),
            PaymentMode::Credit,
            Some("tariff.switching"),
        ),
        (
            "1.1.1",
            json!({"tariff": {"rates_mp_per_kwh": [20000, 9000], "switching": [{"at": "07:00", "rate": 0}, {"at": "07:00", "rate": 1}]}, "standing_charge_mp_per_day": 0}),
            PaymentMode::Credit,
            Some("tariff.switching[1].at"),
        ),
        (
            "1.1.1",
            json!({"tariff": {"rates_mp_per_kwh": [20000, 9000], "switching": [{"at": "07:00", "rate": 0}, {"at": "23:00", "rate": 2}]}, "standing_charge_mp_per_day": 0}),
            PaymentMode::Credit,
            Some("tariff.switching[1].rate"),
        ),
        (
            "1.1.1",
            json!({"tariff": {"rates_mp_per_kwh": [20000, 9000, 5000], "switching": [{"at": "07:00", "rate": 0}, {"at": "23:00", "rate": 1}]}, "standing_charge_mp_per_day": 0}),
            PaymentMode::Credit,
            Some("tariff.switching"),
        ),
        (
            "1.1.1",
            json!({"tariff": {"rates_mp_per_kwh": [20000], "block_thresholds_kwh": [100], "block_rates_mp_per_kwh": [25000]}, "standing_charge_mp_per_day": 0}),
            PaymentMode::Credit,
            None,
        ),
        (
            "1.1.1",
            json!({"tariff": {"rates_mp_per_kwh": [20000], "block_thresholds_kwh": [100, 50], "block_rates_mp_per_kwh": [25000, 30000]}, "standing_charge_mp_per_day": 0}),
            PaymentMode::Credit,
            Some("tariff.block_thresholds_kwh"),
        ),
        (
            "1.1.1",
            json!({"tariff": {"rates_mp_per_kwh": [20000], "block_thresholds_kwh": [100], "block_rates_mp_per_kwh": []}, "standing_charge_mp_per_day": 0}),
            PaymentMode::Credit,
            Some("tariff.block_rates_mp_per_kwh"),
        ),
        (
            "2.1",
            json!({"emergency_credit": {"limit_pence": 500, "threshold_pence": 100}}),
            PaymentMode::Credit,
            Some("emergency_credit"),
        ),
        (
            "2.1",
            json!({"emergency_credit": {"limit_pence": 500, "threshold_pence": 100}}),
            PaymentMode::Prepayment,
            None,
        ),
        (
            "2.1",
            json!({"emergency_credit": {"limit_pence": 100, "threshold_pence": 500}}),
            PaymentMode::Prepayment,
            Some("emergency_credit.threshold_pence"),
        ),
        (
            "2.1",
            json!({"debt_recovery": {"rate_pence_per_day": 50, "cap_pence_per_week": 20}}),
            PaymentMode::Prepayment,
            Some("debt_recovery.cap_pence_per_week"),
        ),
        ("2.1", json!({"low_credit_threshold_pence": 100}), PaymentMode::Credit, Some("low_credit_threshold_pence")),
        (
            "2.1",
            json!({"non_disablement": [{"from": "22:00", "to": "24:00"}, {"from": "00:00", "to": "07:00"}]}),
            PaymentMode::Prepayment,
            None,
        ),
        (
            "2.1",
            json!({"non_disablement": [{"from": "22:00", "to": "21:00"}]}),
            PaymentMode::Prepayment,
            Some("non_disablement[0]"),
        ),
        (
            "2.1",
            json!({"non_disablement": [{"from": "01:00", "to": "05:00"}, {"from": "04:00", "to": "06:00"}]}),
            PaymentMode::Prepayment,
            Some("non_disablement[1]"),
        ),
    ];
    for (srv, body, mode, want) in cases {
        let change = Change::parse(srv, body).unwrap_or_else(|e| panic!("{srv} {body}: form refused: {e}"));
        let base = Product::default().with(&Change::PaymentMode { payment_mode: *mode });
        let got = base.with(&change).check().err().map(|e| e.field);
        assert_eq!(got.as_deref(), *want, "{srv} {body} in {mode:?}");
    }
}

/// A held "clear emergency credit" survives being stored and read back (the meter persists
/// held changes): `null` and "left out" stay different.
#[test]
fn cleared_and_left_out_settings_survive_storage() {
    for body in [
        json!({"emergency_credit": null}),
        json!({"low_credit_threshold_pence": 100}),
        json!({"debt_recovery": null, "non_disablement": []}),
    ] {
        let change = Change::parse("2.1", &body).unwrap();
        let stored = serde_json::to_string(&change).unwrap();
        assert_eq!(serde_json::from_str::<Change>(&stored).unwrap(), change, "{body} stored as {stored}");
    }
}
