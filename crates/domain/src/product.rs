//! Product (tariff) configuration on a meter (R-PM-1, R-PM-2): the tariff, the standing
//! charge, the payment mode and the prepayment settings, and the changes the SRVs make to
//! them. The hub checks a change's form ([`Change::parse`]); the meter checks that the
//! configuration it would produce is consistent ([`Product::check`]) and applies a change
//! whole or not at all.
//!
//! Units: prices in thousandths of a penny (`mp`) per kWh or per day, money in whole pence,
//! times of day as `HH:MM` on half-hour boundaries in London local time.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Rates in a time-of-use tariff, at most.
pub const RATES_MAX: usize = 8;
/// Switching times in a day, at most.
pub const SWITCHES_MAX: usize = 48;
/// Largest block threshold, kWh in a month.
pub const BLOCK_THRESHOLD_MAX_KWH: i64 = 10_000_000;
/// Block thresholds, at most.
pub const BLOCKS_MAX: usize = 4;
/// Non-disablement periods, at most.
pub const NON_DISABLEMENT_MAX: usize = 8;
/// Largest emergency credit a meter offers, pence.
pub const EMERGENCY_CREDIT_MAX_PENCE: i64 = 5_000;
/// Largest debt recovery rate, pence a day.
pub const DEBT_RATE_MAX_PENCE: i64 = 10_000;
/// Largest price, mp per kWh (£10 a kWh) or per day.
pub const PRICE_MAX_MP: i64 = 1_000_000;

pub use crate::registry::PaymentMode;

/// A switch to another rate at a time of day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Switch {
    /// `HH:MM`, on a half hour.
    pub at: String,
    /// Index into the rates.
    pub rate: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tariff {
    /// Prices per kWh, mp. One rate is a single-rate tariff; more is time of use.
    pub rates_mp_per_kwh: Vec<i64>,
    /// When each rate starts, for time of use (empty for a single rate).
    #[serde(default)]
    pub switching: Vec<Switch>,
    /// Optional blocks: once the calendar month's consumption (London months) passes the
    /// k-th threshold (kWh), energy costs the k-th block rate whatever the time of day.
    #[serde(default)]
    pub block_thresholds_kwh: Vec<i64>,
    #[serde(default)]
    pub block_rates_mp_per_kwh: Vec<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmergencyCredit {
    /// Credit the customer may take when the balance runs low, pence.
    pub limit_pence: i64,
    /// Balance below which it is offered, pence.
    pub threshold_pence: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebtRecovery {
    pub rate_pence_per_day: i64,
    pub cap_pence_per_week: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Period {
    pub from: String,
    pub to: String,
}

/// Everything a meter's product holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub tariff: Tariff,
    pub standing_charge_mp_per_day: i64,
    pub payment_mode: PaymentMode,
    pub emergency_credit: Option<EmergencyCredit>,
    pub debt_recovery: Option<DebtRecovery>,
    pub low_credit_threshold_pence: Option<i64>,
    /// Times supply is never disabled for lack of credit (nights, say).
    pub non_disablement: Vec<Period>,
}

impl Default for Product {
    /// As a meter leaves the factory: credit mode, one rate, no prices yet.
    fn default() -> Product {
        Product {
            tariff: Tariff {
                rates_mp_per_kwh: vec![0],
                switching: Vec::new(),
                block_thresholds_kwh: Vec::new(),
                block_rates_mp_per_kwh: Vec::new(),
            },
            standing_charge_mp_per_day: 0,
            payment_mode: PaymentMode::Credit,
            emergency_credit: None,
            debt_recovery: None,
            low_credit_threshold_pence: None,
            non_disablement: Vec::new(),
        }
    }
}

/// A change an SRV makes. Fields left out of a prepayment change keep their values;
/// `emergency_credit`, `debt_recovery` and `low_credit_threshold_pence` given as `null`
/// are cleared, and `non_disablement: []` clears the periods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "srv")]
pub enum Change {
    /// SRV 1.1.1: the tariff's structure and prices, and the standing charge.
    #[serde(rename = "1.1.1")]
    Tariff { tariff: Tariff, standing_charge_mp_per_day: i64 },
    /// SRV 1.2.1: prices only, same structure.
    #[serde(rename = "1.2.1")]
    Prices { rates_mp_per_kwh: Vec<i64>, standing_charge_mp_per_day: Option<i64> },
    /// SRV 1.6.
    #[serde(rename = "1.6")]
    PaymentMode { payment_mode: PaymentMode },
    /// SRV 2.1.
    #[serde(rename = "2.1")]
    Prepay {
        #[serde(default, skip_serializing_if = "Option::is_none", with = "present")]
        emergency_credit: Option<Option<EmergencyCredit>>,
        #[serde(default, skip_serializing_if = "Option::is_none", with = "present")]
        debt_recovery: Option<Option<DebtRecovery>>,
        #[serde(default, skip_serializing_if = "Option::is_none", with = "present")]
        low_credit_threshold_pence: Option<Option<i64>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        non_disablement: Option<Vec<Period>>,
    },
}

/// "Left out" (`None`) and "given as null" (`Some(None)`) mean different things in a
/// change; stored changes (a meter's held ones) must keep the difference.
mod present {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(v: &Option<Option<T>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

/// SRVs that change the product.
pub const PRODUCT_SRVS: &[&str] = &["1.1.1", "1.2.1", "1.6", "2.1"];

/// A rule a change or configuration broke: the field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct ProductError {
    pub field: String,
    pub rule: String,
}

fn err(field: impl Into<String>, rule: impl Into<String>) -> ProductError {
    ProductError { field: field.into(), rule: rule.into() }
}

/// Minutes after midnight of an `HH:MM` on a half hour (24:00 allowed as a period's end).
fn half_hour(field: &str, s: &str, allow_end: bool) -> Result<u32, ProductError> {
    let bad = || err(field, "a time of day HH:MM on a half hour (00:00, 00:30 ... 23:30)");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    let minutes = h * 60 + m;
    if (m != 0 && m != 30) || minutes > 24 * 60 || (minutes == 24 * 60 && !allow_end) {
        return Err(bad());
    }
    Ok(minutes)
}

fn object<'a>(v: &'a Value, allowed: &[&str]) -> Result<&'a serde_json::Map<String, Value>, ProductError> {
    let o = v.as_object().ok_or_else(|| err("body", "a JSON object"))?;
    if let Some(k) = o.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(err(format!("body.{k}"), format!("unknown field; this SRV takes: {}", allowed.join(", "))));
    }
    Ok(o)
}

fn field<T: serde::de::DeserializeOwned>(
    o: &serde_json::Map<String, Value>,
    k: &str,
) -> Result<Option<T>, ProductError> {
    o.get(k).map(|v| serde_json::from_value(v.clone()).map_err(|e| err(format!("body.{k}"), e.to_string()))).transpose()
}

/// `Some(None)` for an explicit `null`, `None` when absent.
fn nullable<T: serde::de::DeserializeOwned>(
    o: &serde_json::Map<String, Value>,
    k: &str,
) -> Result<Option<Option<T>>, ProductError> {
    match o.get(k) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => serde_json::from_value(v.clone())
            .map(|t| Some(Some(t)))
            .map_err(|e| err(format!("body.{k}"), e.to_string())),
    }
}

impl Change {
    /// The form of a change (R-PM-1): the fields the SRV takes, of the right types, each
    /// value within its own range. Consistency with the rest of the product is the meter's
    /// to judge.
    pub fn parse(srv: &str, body: &Value) -> Result<Change, ProductError> {
        let change = match srv {
            "1.1.1" => {
                let o = object(body, &["tariff", "standing_charge_mp_per_day"])?;
                Change::Tariff {
                    tariff: field(o, "tariff")?.ok_or_else(|| err("body.tariff", "required"))?,
                    standing_charge_mp_per_day: field(o, "standing_charge_mp_per_day")?
                        .ok_or_else(|| err("body.standing_charge_mp_per_day", "required"))?,
                }
            }
            "1.2.1" => {
                let o = object(body, &["rates_mp_per_kwh", "standing_charge_mp_per_day"])?;
                Change::Prices {
                    rates_mp_per_kwh: field(o, "rates_mp_per_kwh")?
                        .ok_or_else(|| err("body.rates_mp_per_kwh", "required"))?,
                    standing_charge_mp_per_day: field(o, "standing_charge_mp_per_day")?,
                }
            }
            "1.6" => {
                let o = object(body, &["payment_mode"])?;
                Change::PaymentMode {
                    payment_mode: field(o, "payment_mode")?
                        .ok_or_else(|| err("body.payment_mode", "required: credit or prepayment"))?,
                }
            }
            "2.1" => {
                let o = object(
                    body,
                    &["emergency_credit", "debt_recovery", "low_credit_threshold_pence", "non_disablement"],
                )?;
                if o.is_empty() {
                    return Err(err("body", "give at least one prepayment setting"));
                }
                Change::Prepay {
                    emergency_credit: nullable(o, "emergency_credit")?,
                    debt_recovery: nullable(o, "debt_recovery")?,
                    low_credit_threshold_pence: nullable(o, "low_credit_threshold_pence")?,
                    non_disablement: field(o, "non_disablement")?,
                }
            }
            other => return Err(err("srv", format!("SRV {other} does not change the product"))),
        };
        change.check_form()?;
        Ok(change)
    }

    /// Each value within its own range (no cross-field rules).
    fn check_form(&self) -> Result<(), ProductError> {
        let price = |f: &str, v: i64| {
            if (0..=PRICE_MAX_MP).contains(&v) {
                Ok(())
            } else {
                Err(err(f, format!("0 to {PRICE_MAX_MP} mp (no negative prices)")))
            }
        };
        match self {
            Change::Tariff { tariff, standing_charge_mp_per_day } => {
                price("body.standing_charge_mp_per_day", *standing_charge_mp_per_day)?;
                if tariff.rates_mp_per_kwh.is_empty() || tariff.rates_mp_per_kwh.len() > RATES_MAX {
                    return Err(err("body.tariff.rates_mp_per_kwh", format!("1 to {RATES_MAX} rates")));
                }
                for (i, r) in tariff.rates_mp_per_kwh.iter().enumerate() {
                    price(&format!("body.tariff.rates_mp_per_kwh[{i}]"), *r)?;
                }
                if tariff.switching.len() > SWITCHES_MAX {
                    return Err(err("body.tariff.switching", format!("at most {SWITCHES_MAX} switches")));
                }
                for (i, s) in tariff.switching.iter().enumerate() {
                    half_hour(&format!("body.tariff.switching[{i}].at"), &s.at, false)?;
                }
                for (i, r) in tariff.block_rates_mp_per_kwh.iter().enumerate() {
                    price(&format!("body.tariff.block_rates_mp_per_kwh[{i}]"), *r)?;
                }
                if tariff.block_thresholds_kwh.len() > BLOCKS_MAX {
                    return Err(err("body.tariff.block_thresholds_kwh", format!("at most {BLOCKS_MAX} blocks")));
                }
                for (i, k) in tariff.block_thresholds_kwh.iter().enumerate() {
                    if !(1..=BLOCK_THRESHOLD_MAX_KWH).contains(k) {
                        return Err(err(
                            format!("body.tariff.block_thresholds_kwh[{i}]"),
                            format!("1 to {BLOCK_THRESHOLD_MAX_KWH} kWh"),
                        ));
                    }
                }
            }
            Change::Prices { rates_mp_per_kwh, standing_charge_mp_per_day } => {
                if rates_mp_per_kwh.is_empty() || rates_mp_per_kwh.len() > RATES_MAX {
                    return Err(err("body.rates_mp_per_kwh", format!("1 to {RATES_MAX} rates")));
                }
                for (i, r) in rates_mp_per_kwh.iter().enumerate() {
                    price(&format!("body.rates_mp_per_kwh[{i}]"), *r)?;
                }
                if let Some(s) = standing_charge_mp_per_day {
                    price("body.standing_charge_mp_per_day", *s)?;
                }
            }
            Change::PaymentMode { .. } => {}
            Change::Prepay { emergency_credit, debt_recovery, low_credit_threshold_pence, non_disablement } => {
                if let Some(Some(ec)) = emergency_credit
                    && !(0..=EMERGENCY_CREDIT_MAX_PENCE).contains(&ec.limit_pence)
                {
                    return Err(err(
                        "body.emergency_credit.limit_pence",
                        format!("0 to {EMERGENCY_CREDIT_MAX_PENCE} pence"),
                    ));
                }
                if let Some(Some(d)) = debt_recovery
                    && !((0..=DEBT_RATE_MAX_PENCE).contains(&d.rate_pence_per_day)
                        && (0..=DEBT_RATE_MAX_PENCE * 7).contains(&d.cap_pence_per_week))
                {
                    return Err(err(
                        "body.debt_recovery",
                        format!(
                            "rate 0 to {DEBT_RATE_MAX_PENCE} pence a day, cap 0 to {} a week",
                            DEBT_RATE_MAX_PENCE * 7
                        ),
                    ));
                }
                if let Some(Some(t)) = low_credit_threshold_pence
                    && *t < 0
                {
                    return Err(err("body.low_credit_threshold_pence", "not negative"));
                }
                if let Some(periods) = non_disablement {
                    if periods.len() > NON_DISABLEMENT_MAX {
                        return Err(err("body.non_disablement", format!("at most {NON_DISABLEMENT_MAX} periods")));
                    }
                    for (i, p) in periods.iter().enumerate() {
                        half_hour(&format!("body.non_disablement[{i}].from"), &p.from, false)?;
                        half_hour(&format!("body.non_disablement[{i}].to"), &p.to, true)?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Product {
    /// The product after `change`, whether or not it is consistent.
    pub fn with(&self, change: &Change) -> Product {
        let mut p = self.clone();
        match change {
            Change::Tariff { tariff, standing_charge_mp_per_day } => {
                p.tariff = tariff.clone();
                p.standing_charge_mp_per_day = *standing_charge_mp_per_day;
            }
            Change::Prices { rates_mp_per_kwh, standing_charge_mp_per_day } => {
                p.tariff.rates_mp_per_kwh = rates_mp_per_kwh.clone();
                if let Some(s) = standing_charge_mp_per_day {
                    p.standing_charge_mp_per_day = *s;
                }
            }
            Change::PaymentMode { payment_mode } => p.payment_mode = *payment_mode,
            Change::Prepay { emergency_credit, debt_recovery, low_credit_threshold_pence, non_disablement } => {
                if let Some(ec) = emergency_credit {
                    p.emergency_credit = *ec;
                }
                if let Some(d) = debt_recovery {
                    p.debt_recovery = *d;
                }
                if let Some(t) = low_credit_threshold_pence {
                    p.low_credit_threshold_pence = *t;
                }
                if let Some(n) = non_disablement {
                    p.non_disablement = n.clone();
                }
            }
        }
        p
    }

    /// The meter's consistency rules (R-PM-2). The first broken one is named.
    pub fn check(&self) -> Result<(), ProductError> {
        let t = &self.tariff;
        let rates = t.rates_mp_per_kwh.len();
        if rates == 0 {
            return Err(err("tariff.rates_mp_per_kwh", "at least one rate"));
        }
        if rates == 1 && !t.switching.is_empty() {
            return Err(err("tariff.switching", "a single-rate tariff has no switching times"));
        }
        if rates > 1 {
            if t.switching.is_empty() {
                return Err(err("tariff.switching", format!("a {rates}-rate tariff needs switching times")));
            }
            let mut last = None;
            for (i, s) in t.switching.iter().enumerate() {
                let at = half_hour(&format!("tariff.switching[{i}].at"), &s.at, false)?;
                if last.is_some_and(|l| at <= l) {
                    return Err(err(
                        format!("tariff.switching[{i}].at"),
                        "switching times in increasing order, each once (time-of-use periods must not overlap)",
                    ));
                }
                last = Some(at);
                if s.rate >= rates {
                    return Err(err(
                        format!("tariff.switching[{i}].rate"),
                        format!("no rate {} (there are {rates})", s.rate),
                    ));
                }
            }
            for r in 0..rates {
                if !t.switching.iter().any(|s| s.rate == r) {
                    return Err(err("tariff.switching", format!("rate {r} is never in force")));
                }
            }
        }
        if t.block_thresholds_kwh.len() != t.block_rates_mp_per_kwh.len() {
            return Err(err("tariff.block_rates_mp_per_kwh", "one block price per block threshold"));
        }
        if t.block_thresholds_kwh.windows(2).any(|w| w[1] <= w[0])
            || t.block_thresholds_kwh.first().is_some_and(|f| *f <= 0)
        {
            return Err(err("tariff.block_thresholds_kwh", "positive and increasing"));
        }
        if self.payment_mode == PaymentMode::Credit {
            if self.emergency_credit.is_some() {
                return Err(err(
                    "emergency_credit",
                    "emergency credit is for prepayment mode; the meter is in credit mode",
                ));
            }
            if self.debt_recovery.is_some() {
                return Err(err("debt_recovery", "debt recovery from credit is for prepayment mode"));
            }
            if self.low_credit_threshold_pence.is_some() {
                return Err(err("low_credit_threshold_pence", "a low-credit threshold is for prepayment mode"));
            }
        }
        if let Some(ec) = self.emergency_credit
            && ec.threshold_pence > ec.limit_pence
        {
            return Err(err("emergency_credit.threshold_pence", "not above the emergency credit limit"));
        }
        if let Some(d) = self.debt_recovery
            && d.cap_pence_per_week < d.rate_pence_per_day
        {
            return Err(err("debt_recovery.cap_pence_per_week", "at least a day's recovery rate"));
        }
        let mut spans = Vec::new();
        for (i, p) in self.non_disablement.iter().enumerate() {
            let from = half_hour(&format!("non_disablement[{i}].from"), &p.from, false)?;
            let to = half_hour(&format!("non_disablement[{i}].to"), &p.to, true)?;
            if to <= from {
                return Err(err(
                    format!("non_disablement[{i}]"),
                    "ends after it starts (split one across midnight in two)",
                ));
            }
            if spans.iter().any(|(f, t)| from < *t && *f < to) {
                return Err(err(format!("non_disablement[{i}]"), "overlaps another non-disablement period"));
            }
            spans.push((from, to));
        }
        Ok(())
    }
}
