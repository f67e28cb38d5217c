//! A meter's prepayment account (R-PAY-5): credit in, charges out, in integer pence with no
//! drift. Charges are kept exactly, in millionths of a penny (µp): each complete half hour's
//! energy at the rate in force (time of use by London local time), and each London day's
//! standing charge at the day's start. The balance is always
//! `credited − ⌊charged / 10⁶⌋` (partial pennies are never rounded against the customer),
//! so it never drifts from the sum of its events.
//!
//! Emergency credit: when the balance falls below the configured threshold it becomes
//! available (0x8119); the consumer (keypad) or the supplier (SRV 2.5) activates it
//! (0x81AB), and supply then stays on until the balance reaches minus the limit (0x81AA
//! emergency credit exhausted). A top-up that brings the balance above zero repays it and
//! ends it.
//!
//! Debt (SRV 2.3 sets it) is recovered at each London midnight at the configured daily rate,
//! at most the weekly cap per week (Monday to Sunday), never more than is owed; recovery is
//! a charge like any other, so the balance still never drifts (0x81A9 when it is all paid).
//!
//! Thresholds: combined credit (balance plus any active emergency credit) falling below the
//! low-credit threshold raises 0x810D once (again after a top-up lifts it above); running out
//! raises 0x8F0F and disables supply, unless the half hour ends in a non-disablement period
//! (then supply goes off at the first half hour outside one, if credit is still exhausted). A
//! top-up that restores credit arms the supply (0x8F32); the consumer restores it. While
//! supply is off no energy is charged; the standing charge and debt recovery still are.

use domain::product::{PaymentMode, Product};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::consumption::Consumption;
use crate::system::Supply;

/// µp (millionths of a penny) in a penny.
pub const UNITS_PER_PENNY: i64 = 1_000_000;
/// Events a meter keeps for its supplier and display.
pub const EVENTS_KEPT: usize = 64;
/// GBCS alerts raised by the account.
pub const ALERT_LOW_CREDIT: u16 = 0x810D;
pub const ALERT_DISABLEMENT_THRESHOLD: u16 = 0x8F0F;
pub const ALERT_SUPPLY_ARMED: u16 = 0x8F32;
pub const ALERT_CREDIT_ADDED: u16 = 0x810E;
pub const ALERT_EMERGENCY_CREDIT_AVAILABLE: u16 = 0x8119;
pub const ALERT_EMERGENCY_CREDIT_ACTIVATED: u16 = 0x81AB;
pub const ALERT_EMERGENCY_CREDIT_EXHAUSTED: u16 = 0x81AA;
pub const ALERT_DEBT_CLEARED: u16 = 0x81A9;

const HALF_HOUR_SECS: i64 = 1800;

/// Something the meter noticed, with the GBCS alert it raises.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MeterEvent {
    /// Numbers the meter's events 1, 2, 3 ...: the order they reach the hub in.
    #[serde(default)]
    pub seq: u64,
    pub at: Timestamp,
    pub alert: u16,
    pub detail: String,
    /// More about it (a held change's result carries its request, reading and product).
    #[serde(default, deserialize_with = "crate::system::json_text::opt::deserialize")]
    pub data: Option<serde_json::Value>,
}

/// JSON leaves absent data out (reads show events); binary forms have no field names to
/// tell a missing field by, so they write every field, and the data as its JSON text.
impl Serialize for MeterEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let leave_out = s.is_human_readable() && self.data.is_none();
        let mut st = s.serialize_struct("MeterEvent", if leave_out { 4 } else { 5 })?;
        st.serialize_field("seq", &self.seq)?;
        st.serialize_field("at", &self.at)?;
        st.serialize_field("alert", &self.alert)?;
        st.serialize_field("detail", &self.detail)?;
        if leave_out {
            st.skip_field("data")?;
        } else {
            st.serialize_field("data", &self.data.as_ref().map(crate::system::json_text::Ref))?;
        }
        st.end()
    }
}

/// A meter's prepayment register: credit, charges, the UTRN anti-replay cache.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepay {
    /// Everything ever credited by UTRNs, pence.
    pub credited_pence: u64,
    /// Everything ever charged, µp.
    #[serde(default)]
    pub charged_units: i64,
    pub utrn_cache: domain::utrn::CounterCache,
    /// Charges are settled up to this half-hour boundary.
    #[serde(default)]
    pub settled_to: Option<Timestamp>,
    #[serde(default)]
    pub low_credit_alerted: bool,
    /// Emergency credit is in use.
    #[serde(default)]
    pub emergency_credit_active: bool,
    #[serde(default)]
    pub emergency_credit_offered: bool,
    /// The London calendar month being counted for block prices, and its energy so far.
    #[serde(default)]
    pub month: Option<(i16, i8)>,
    #[serde(default)]
    pub month_wh: i64,
    /// Debt still to recover, pence.
    #[serde(default)]
    pub debt_pence: i64,
    /// Debt recovered in the current week: (Monday of the week, pence).
    #[serde(default)]
    pub recovered_this_week: Option<(jiff::civil::Date, i64)>,
    #[serde(default)]
    pub events: Vec<MeterEvent>,
    /// The last event number given.
    #[serde(default)]
    pub event_seq: u64,
    /// Events up to this number have reached the hub.
    #[serde(default)]
    pub delivered_seq: u64,
    /// Events that had to be dropped before reaching the hub (the log was full of
    /// undelivered ones).
    #[serde(default)]
    pub events_lost: u64,
}

impl Prepay {
    /// The balance in pence (negative: owed).
    pub fn balance_pence(&self) -> i64 {
        self.credited_pence as i64 - self.charged_units.div_euclid(UNITS_PER_PENNY)
    }

    /// Credit the customer can still use: the balance plus any active emergency credit.
    pub fn combined_credit_pence(&self, product: &Product) -> i64 {
        let ec = match (self.emergency_credit_active, product.emergency_credit) {
            (true, Some(ec)) => ec.limit_pence,
            _ => 0,
        };
        self.balance_pence() + ec
    }

    /// Take emergency credit (the consumer on the keypad, or the supplier with SRV 2.5):
    /// only in prepayment mode, when configured and the balance is below its threshold.
    pub fn activate_emergency_credit(
        &mut self,
        at: Timestamp,
        product: &Product,
        supply: &mut Supply,
    ) -> Result<i64, String> {
        let Some(ec) = product.emergency_credit.filter(|_| product.payment_mode == PaymentMode::Prepayment) else {
            return Err("no emergency credit is configured on this meter".into());
        };
        if self.emergency_credit_active {
            return Err("emergency credit is already in use".into());
        }
        let balance = self.balance_pence();
        if balance >= ec.threshold_pence {
            return Err(format!(
                "emergency credit is offered below {} pence; the balance is {balance}",
                ec.threshold_pence
            ));
        }
        self.emergency_credit_active = true;
        self.event(
            at,
            ALERT_EMERGENCY_CREDIT_ACTIVATED,
            format!("{} pence of emergency credit in use", ec.limit_pence),
        );
        if *supply == Supply::Disabled && self.combined_credit_pence(product) > 0 {
            *supply = Supply::Armed;
            self.event(at, ALERT_SUPPLY_ARMED, "emergency credit: supply armed, ready to be restored".into());
        }
        Ok(self.combined_credit_pence(product))
    }

    /// Adjust the balance (SRV 1.5): a positive adjustment is a credit (arming a supply off
    /// for lack of credit), a negative one a charge.
    pub fn adjust(&mut self, at: Timestamp, pence: i64, supply: &mut Supply, product: &Product) {
        if pence >= 0 {
            self.credit(at, pence as u64, supply, product);
        } else {
            self.charged_units = self.charged_units.saturating_add(pence.unsigned_abs() as i64 * UNITS_PER_PENNY);
        }
    }

    /// Set the debt to recover (SRV 2.3).
    pub fn set_debt(&mut self, pence: i64) {
        self.debt_pence = pence;
    }

    fn event(&mut self, at: Timestamp, alert: u16, detail: String) {
        self.record(at, alert, detail, None);
    }

    /// Record an event for the supplier (the meter keeps the last [`EVENTS_KEPT`]).
    pub fn record(&mut self, at: Timestamp, alert: u16, detail: String, data: Option<serde_json::Value>) {
        if self.events.len() == EVENTS_KEPT {
            // Make room with the oldest event the hub already has; only if none has been
            // delivered does an undelivered one go, and that is counted.
            match self.events.iter().position(|e| e.seq <= self.delivered_seq) {
                Some(i) => {
                    self.events.remove(i);
                }
                None => {
                    self.events.remove(0);
                    self.events_lost += 1;
                }
            }
        }
        self.event_seq += 1;
        self.events.push(MeterEvent { seq: self.event_seq, at, alert, detail, data });
    }

    /// Events not yet delivered to the hub, oldest first.
    pub fn undelivered(&self) -> impl Iterator<Item = &MeterEvent> {
        self.events.iter().filter(|e| e.seq > self.delivered_seq)
    }

    /// Add credit; arms a supply disabled for lack of credit once the balance is positive.
    pub fn credit(&mut self, at: Timestamp, pence: u64, supply: &mut Supply, product: &Product) {
        self.credited_pence += pence;
        self.event(at, ALERT_CREDIT_ADDED, format!("{pence} pence added; balance {} pence", self.balance_pence()));
        if self.emergency_credit_active && self.balance_pence() > 0 {
            // Repaid: it ends, and can be offered again next time.
            self.emergency_credit_active = false;
            self.emergency_credit_offered = false;
        }
        if product.emergency_credit.is_some_and(|ec| self.balance_pence() >= ec.threshold_pence) {
            self.emergency_credit_offered = false;
        }
        if product.low_credit_threshold_pence.is_some_and(|t| self.combined_credit_pence(product) >= t) {
            self.low_credit_alerted = false;
        }
        if *supply == Supply::Disabled && self.combined_credit_pence(product) > 0 {
            *supply = Supply::Armed;
            self.event(at, ALERT_SUPPLY_ARMED, "credit restored: supply armed, ready to be restored".into());
        }
    }

    /// The product changed: emergency credit that is no longer configured ends; leaving
    /// prepayment mode arms a supply that was disabled for lack of credit (credit mode never
    /// disables), and the threshold alerts start afresh.
    pub fn product_changed(&mut self, at: Timestamp, before: &Product, after: &Product, supply: &mut Supply) {
        if after.emergency_credit.is_none() {
            self.emergency_credit_active = false;
            self.emergency_credit_offered = false;
        }
        if before.payment_mode != after.payment_mode {
            self.low_credit_alerted = false;
            self.emergency_credit_offered = false;
            // Prepayment charges run from the change on (a credit period is billed otherwise).
            self.settled_to = Some(half_hour_floor(at));
            if after.payment_mode == PaymentMode::Credit && *supply == Supply::Disabled {
                *supply = Supply::Armed;
                self.event(at, ALERT_SUPPLY_ARMED, "credit mode: supply armed, ready to be restored".into());
            }
        }
    }

    /// Whether the consumer may restore an armed supply now: in credit mode, or with credit.
    pub fn may_restore(&self, product: &Product) -> bool {
        product.payment_mode == PaymentMode::Credit || self.combined_credit_pence(product) > 0
    }

    /// Charge every complete half hour and every London day start in `(settled_to, to]`
    /// with `product` (the one in force throughout; callers split at product changes).
    /// A meter in credit mode only moves its settlement point.
    pub fn accrue(&mut self, consumption: &Consumption, product: &Product, supply: &mut Supply, to: Timestamp) {
        // A credit-mode meter keeps no account: nothing moves (so a read changes no state).
        if product.payment_mode != PaymentMode::Prepayment {
            return;
        }
        let to = half_hour_floor(to);
        let from = match self.settled_to {
            Some(f) if f < to => f,
            Some(_) => return,
            None => {
                self.settled_to = Some(to);
                return;
            }
        };
        self.settled_to = Some(to);
        for (start, wh) in consumption.half_hours(from, to) {
            let local = domain::time::in_london(start);
            let minute = local.hour() as u32 * 60 + local.minute() as u32;
            if minute == 0 {
                self.charged_units += product.standing_charge_mp_per_day * 1000;
                self.recover_debt(start, local.date(), product);
            }
            if *supply == Supply::Enabled {
                let units = self.energy_charge(product, (local.year(), local.month()), minute, wh as i64);
                self.charged_units = self.charged_units.saturating_add(units);
            }
            let end = start + jiff::SignedDuration::from_secs(HALF_HOUR_SECS);
            let balance = self.balance_pence();
            if let Some(ec) = product.emergency_credit
                && !self.emergency_credit_active
                && !self.emergency_credit_offered
                && balance < ec.threshold_pence
            {
                self.emergency_credit_offered = true;
                self.event(
                    end,
                    ALERT_EMERGENCY_CREDIT_AVAILABLE,
                    format!("{} pence of emergency credit available", ec.limit_pence),
                );
            }
            let combined = self.combined_credit_pence(product);
            if let Some(t) = product.low_credit_threshold_pence
                && combined < t
                && !self.low_credit_alerted
            {
                self.low_credit_alerted = true;
                self.event(end, ALERT_LOW_CREDIT, format!("combined credit {combined} pence is below {t} pence"));
            }
            // The London time the half hour ends (not start + 30 minutes: clocks change).
            let end_local = domain::time::in_london(end);
            let end_minute = end_local.hour() as u32 * 60 + end_local.minute() as u32;
            if combined <= 0 && *supply == Supply::Enabled && !protected(product, end_minute) {
                *supply = Supply::Disabled;
                if self.emergency_credit_active {
                    self.event(end, ALERT_EMERGENCY_CREDIT_EXHAUSTED, "emergency credit used up".into());
                }
                self.event(
                    end,
                    ALERT_DISABLEMENT_THRESHOLD,
                    format!("credit exhausted ({balance} pence): supply disabled"),
                );
            }
        }
    }
}

impl Prepay {
    /// µp for `wh` consumed in a half hour of `month` starting at `minute` local: at the
    /// time-of-use rate until the month passes a block threshold, then at the block's rate;
    /// a half hour that crosses a threshold is split exactly.
    fn energy_charge(&mut self, product: &Product, month: (i16, i8), minute: u32, wh: i64) -> i64 {
        if self.month != Some(month) {
            self.month = Some(month);
            self.month_wh = 0;
        }
        let t = &product.tariff;
        let mut remaining = wh;
        let mut units = 0i64;
        while remaining > 0 {
            let block = t.block_thresholds_kwh.iter().filter(|k| self.month_wh >= k.saturating_mul(1000)).count();
            let price = match block {
                0 => rate_at(product, minute),
                k => t.block_rates_mp_per_kwh.get(k - 1).copied().unwrap_or(0),
            };
            let room = t.block_thresholds_kwh.get(block).map_or(i64::MAX, |k| k.saturating_mul(1000) - self.month_wh);
            let take = remaining.min(room.max(1));
            units = units.saturating_add(take.saturating_mul(price));
            self.month_wh += take;
            remaining -= take;
        }
        units
    }

    /// At a London midnight: recover debt at the daily rate, within the weekly cap.
    fn recover_debt(&mut self, at: Timestamp, day: jiff::civil::Date, product: &Product) {
        let Some(d) = product.debt_recovery else { return };
        if self.debt_pence <= 0 {
            return;
        }
        let back = i64::from(day.weekday().to_monday_zero_offset());
        let monday = day.checked_sub(jiff::Span::new().days(back)).unwrap_or(day);
        let so_far = match self.recovered_this_week {
            Some((week, pence)) if week == monday => pence,
            _ => 0,
        };
        let take = d.rate_pence_per_day.min(d.cap_pence_per_week - so_far).min(self.debt_pence).max(0);
        if take == 0 {
            return;
        }
        self.charged_units = self.charged_units.saturating_add(take.saturating_mul(UNITS_PER_PENNY));
        self.debt_pence -= take;
        self.recovered_this_week = Some((monday, so_far + take));
        if self.debt_pence == 0 {
            self.event(at, ALERT_DEBT_CLEARED, "debt fully recovered".into());
        }
    }
}

/// The half-hour boundary at or before `t`.
fn half_hour_floor(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second().div_euclid(HALF_HOUR_SECS) * HALF_HOUR_SECS).unwrap_or(t)
}

/// The price in force at a minute of the local day: the last switching time at or before
/// it (wrapping to the day's last switch before the first), mp per kWh.
fn rate_at(product: &Product, minute: u32) -> i64 {
    let t = &product.tariff;
    if t.switching.is_empty() {
        return t.rates_mp_per_kwh.first().copied().unwrap_or(0);
    }
    let at = |s: &domain::product::Switch| {
        let (h, m) = s.at.split_once(':').unwrap_or(("0", "0"));
        h.parse::<u32>().unwrap_or(0) * 60 + m.parse::<u32>().unwrap_or(0)
    };
    let current = t.switching.iter().filter(|s| at(s) <= minute).max_by_key(|s| at(s));
    let current = current.or_else(|| t.switching.iter().max_by_key(|s| at(s)));
    current.and_then(|s| t.rates_mp_per_kwh.get(s.rate)).copied().unwrap_or(0)
}

/// Whether a minute of the local day lies in a non-disablement period.
fn protected(product: &Product, minute: u32) -> bool {
    let parse = |s: &str| {
        let (h, m) = s.split_once(':').unwrap_or(("0", "0"));
        h.parse::<u32>().unwrap_or(0) * 60 + m.parse::<u32>().unwrap_or(0)
    };
    product.non_disablement.iter().any(|p| parse(&p.from) <= minute && minute < parse(&p.to))
}
