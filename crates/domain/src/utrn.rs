//! GBCS UTRNs (Unique Transaction Reference Numbers, GBCS section 14): the 20-digit
//! prepayment top-up codes a supplier issues for one device, which the meter accepts once,
//! whether sent remotely (SRV 2.2) or typed on the keypad. The algorithm follows
//! `reference/gbcs-utrn.md` bit for bit:
//!
//! - PTUT (64 bits): counter bits 41..32 (10 bits) at 56–47, the value class at 46–45, the
//!   value (13 bits) at 44–32, and the last 4 bytes of an AES-128-GCM tag at 31–0.
//! - The MAC key is the first 16 bytes of SHA-256(00000001 ‖ Z ‖ OtherInfo), Z the ECDH
//!   P-256 secret of the supplier's prepayment key and the device's key-agreement key.
//! - UTRN = decimal(7394156990786306048 + PTUT) (19 digits) ‖ a Verhoeff-variant check digit.
//!
//! The device keeps the last [`CACHE_COUNTERS`] counters it accepted and rebuilds a UTRN's
//! full counter from its 10 bits around the highest of them. A counter in the cache is a
//! duplicate; so is one below every counter of a full cache (decided here: the cache keeps
//! the highest counters, so anything that left it is below all of them, and a UTRN that
//! left the cache never credits again; the price is that a UTRN more than 100 top-ups older
//! than the newest, never entered, is refused too).

use std::collections::VecDeque;

use crate::Eui64;
use crate::crypto::{aes128_gcm_tag, sha256};

/// Largest value a UTRN carries (13 bits).
pub const VALUE_MAX: u16 = 8191;
/// Counters the device remembers (anti-replay).
pub const CACHE_COUNTERS: usize = 100;
/// Added to the PTUT to make the 19-digit PPTD.
const PPTD_OFFSET: u64 = 7_394_156_990_786_306_048;

/// Alert: the UTRN was accepted before (GBCS 0x8F51 "Duplicate UTRN entered").
pub const ALERT_DUPLICATE: u16 = 0x8F51;
/// Alert: the MAC does not verify (GBCS 0x8F63 "UTRN not Authentic").
pub const ALERT_NOT_AUTHENTIC: u16 = 0x8F63;
/// Alert: meant for another device (GBCS 0x8F64 "UTRN not for this Device"). A UTRN for
/// another device fails its MAC here, so the device reports it as not authentic; the code
/// is kept for hubs that can tell the two apart.
pub const ALERT_NOT_FOR_DEVICE: u16 = 0x8F64;

/// How a UTRN's value is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueClass {
    Pennies,
    Pounds,
}

impl ValueClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueClass::Pennies => "pennies",
            ValueClass::Pounds => "pounds",
        }
    }

    pub fn parse(s: &str) -> Option<ValueClass> {
        match s {
            "pennies" => Some(ValueClass::Pennies),
            "pounds" => Some(ValueClass::Pounds),
            _ => None,
        }
    }

    fn bits(self) -> u64 {
        match self {
            ValueClass::Pennies => 0,
            ValueClass::Pounds => 1,
        }
    }

    /// The credit in pence.
    pub fn pence(self, value: u16) -> u64 {
        match self {
            ValueClass::Pennies => u64::from(value),
            ValueClass::Pounds => u64::from(value) * 100,
        }
    }
}

/// Why a UTRN could not be made or was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UtrnError {
    #[error("value {0} is outside 0..=8191")]
    Value(u32),
    #[error("counter {0:#x} is not a whole multiple of 2^32 below 2^64")]
    Counter(u64),
    #[error("a UTRN is 20 decimal digits")]
    Format,
    #[error("the check digit is wrong (a digit was mistyped)")]
    CheckDigit,
    #[error("not a UTRN: its digits do not decode to a top-up")]
    Range,
    #[error("duplicate UTRN: counter {0:#x} was accepted before")]
    Duplicate(u64),
    #[error("UTRN not authentic for this device and supplier")]
    NotAuthentic,
}

impl UtrnError {
    /// The GBCS alert a device raises for this refusal, if any.
    pub fn alert(&self) -> Option<u16> {
        match self {
            UtrnError::Duplicate(_) => Some(ALERT_DUPLICATE),
            UtrnError::NotAuthentic | UtrnError::CheckDigit | UtrnError::Format | UtrnError::Range => {
                Some(ALERT_NOT_AUTHENTIC)
            }
            UtrnError::Value(_) | UtrnError::Counter(_) => None,
        }
    }
}

const P: [[u8; 10]; 8] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
];
const D: [[u8; 10]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
];
const INV: [u8; 10] = [1, 2, 6, 7, 5, 8, 3, 0, 9, 4];

/// The GBCS check digit of a string of decimal digits (the 19-digit PPTD).
pub fn check_digit(digits: &str) -> Option<u8> {
    let mut c = 0u8;
    let mut k = 4usize;
    for ch in digits.chars() {
        let d = ch.to_digit(10)? as usize;
        c = D[c as usize][P[k][d] as usize];
        k = (k + 1) % 8;
    }
    Some(INV[c as usize])
}

/// The 16-byte MAC key for one counter (the KDF of GBCS 14).
pub fn mac_key(z: &[u8; 32], originator: Eui64, counter: u64, target: Eui64) -> [u8; 16] {
    let mut input = Vec::with_capacity(4 + 32 + 7 + 8 + 2 + 8 + 8);
    input.extend_from_slice(&[0, 0, 0, 1]);
    input.extend_from_slice(z);
    input.extend_from_slice(&[0x60, 0x85, 0x74, 0x06, 0x08, 0x03, 0x00]);
    input.extend_from_slice(&originator.as_u64().to_be_bytes());
    input.extend_from_slice(&[0x09, 0x01]);
    input.extend_from_slice(&counter.to_be_bytes());
    input.extend_from_slice(&target.as_u64().to_be_bytes());
    let digest = sha256(&input);
    digest[..16].try_into().expect("16 of 32 bytes")
}

/// The last 4 bytes of the GCM tag over the PTUT's high half.
fn mac_tail(z: &[u8; 32], originator: Eui64, target: Eui64, counter: u64, ptut_high: u32) -> u32 {
    let key = mac_key(z, originator, counter, target);
    let mut iv = [0u8; 12];
    iv[..8].copy_from_slice(&originator.as_u64().to_be_bytes());
    let mut aad = Vec::with_capacity(6 + 8 + 8 + 1 + 8 + 4);
    aad.extend_from_slice(&[0x11, 0, 0, 0, 0, 0]);
    aad.extend_from_slice(&originator.as_u64().to_be_bytes());
    aad.extend_from_slice(&target.as_u64().to_be_bytes());
    aad.push(0x01);
    aad.extend_from_slice(&counter.to_be_bytes());
    aad.extend_from_slice(&ptut_high.to_be_bytes());
    let tag = aes128_gcm_tag(&key, &iv, &aad);
    u32::from_be_bytes(tag[12..16].try_into().expect("4 bytes"))
}

fn ptut_high(counter: u64, class: ValueClass, value: u16) -> u32 {
    let high = (((counter >> 32) & 0x3FF) << 15) | (class.bits() << 13) | u64::from(value);
    high as u32
}

/// Make the UTRN for `value` in `class` with `counter` (a multiple of 2^32, strictly
/// increasing per supplier and device), from the ECDH secret `z` of the supplier's
/// prepayment key and the device's key-agreement key.
pub fn generate(
    z: &[u8; 32],
    originator: Eui64,
    target: Eui64,
    counter: u64,
    class: ValueClass,
    value: u32,
) -> Result<String, UtrnError> {
    if value > u32::from(VALUE_MAX) {
        return Err(UtrnError::Value(value));
    }
    if counter & 0xFFFF_FFFF != 0 || counter == 0 {
        return Err(UtrnError::Counter(counter));
    }
    let high = ptut_high(counter, class, value as u16);
    let ptut = (u64::from(high) << 32) | u64::from(mac_tail(z, originator, target, counter, high));
    let pptd = format!("{:019}", PPTD_OFFSET + ptut);
    let check = check_digit(&pptd).expect("decimal digits");
    Ok(format!("{pptd}{check}"))
}

/// What a UTRN's digits carry, before the device checks its MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// The counter's bits 41..32.
    pub counter_bits: u16,
    pub class: ValueClass,
    pub value: u16,
    ptut: u64,
}

/// Read a UTRN's digits (spaces and dashes, as printed on receipts, are ignored).
pub fn decode(utrn: &str) -> Result<Decoded, UtrnError> {
    let digits: String = utrn.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    if digits.len() != 20 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(UtrnError::Format);
    }
    let (pptd, check) = digits.split_at(19);
    if check_digit(pptd) != check.parse().ok() {
        return Err(UtrnError::CheckDigit);
    }
    let pptd: u64 = pptd.parse().map_err(|_| UtrnError::Range)?;
    let ptut = pptd.checked_sub(PPTD_OFFSET).ok_or(UtrnError::Range)?;
    if ptut >> 57 != 0 || (ptut >> 45) & 0b11 > 1 {
        return Err(UtrnError::Range);
    }
    Ok(Decoded {
        counter_bits: ((ptut >> 47) & 0x3FF) as u16,
        class: if (ptut >> 45) & 1 == 1 { ValueClass::Pounds } else { ValueClass::Pennies },
        value: ((ptut >> 32) & 0x1FFF) as u16,
        ptut,
    })
}

/// A top-up the device accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub counter: u64,
    pub class: ValueClass,
    pub value: u16,
}

impl Accepted {
    pub fn pence(&self) -> u64 {
        self.class.pence(self.value)
    }
}

/// The device's memory of accepted counters for one supplier (GBCS 14 anti-replay).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CounterCache {
    /// The highest counters accepted, in the order accepted; at most [`CACHE_COUNTERS`].
    accepted: VecDeque<u64>,
}

impl CounterCache {
    pub fn new() -> CounterCache {
        CounterCache::default()
    }

    pub fn counters(&self) -> impl Iterator<Item = u64> + '_ {
        self.accepted.iter().copied()
    }

    /// Rebuild the full counter from its 10 bits, around the highest accepted counter.
    /// `None` if the window would put it below zero (it cannot be genuine).
    pub fn full_counter(&self, r: u16) -> Option<u64> {
        let v = self.accepted.iter().max().map_or(0, |c| c >> 32) as i64;
        let p = v.rem_euclid(1 << 10);
        let q = v - p;
        let r = i64::from(r);
        let s = if r < p - (1 << 9) {
            r + (1 << 10)
        } else if r > p + (1 << 9) {
            r - (1 << 10)
        } else {
            r
        };
        let n = q + s;
        (n > 0 && n < (1 << 32)).then_some((n as u64) << 32)
    }

    /// Record a counter accepted earlier (restoring a device's cache).
    pub fn remember_accepted(&mut self, counter: u64) {
        self.remember(counter);
    }

    /// Keep the highest [`CACHE_COUNTERS`] counters: whatever leaves the cache is below
    /// everything in it, so "below every cached counter" covers all that left.
    fn remember(&mut self, counter: u64) {
        self.accepted.push_back(counter);
        if self.accepted.len() > CACHE_COUNTERS
            && let Some(lowest) = self.accepted.iter().enumerate().min_by_key(|(_, c)| **c).map(|(i, _)| i)
        {
            self.accepted.remove(lowest);
        }
    }

    /// The device side: check a UTRN (typed or received) and, if genuine and new, remember
    /// its counter and return the top-up. `z` is the ECDH secret of the device's key and the
    /// supplier's prepayment public key.
    pub fn accept(
        &mut self,
        z: &[u8; 32],
        originator: Eui64,
        target: Eui64,
        utrn: &str,
    ) -> Result<Accepted, UtrnError> {
        let d = decode(utrn)?;
        let counter = self.full_counter(d.counter_bits).ok_or(UtrnError::NotAuthentic)?;
        let high = ptut_high(counter, d.class, d.value);
        if mac_tail(z, originator, target, counter, high) != d.ptut as u32 {
            return Err(UtrnError::NotAuthentic);
        }
        // In the cache, or older than everything a full cache still holds: a counter that
        // has aged out of the cache must not become acceptable again.
        let aged_out = self.accepted.len() == CACHE_COUNTERS && self.accepted.iter().all(|&c| counter < c);
        if aged_out || self.accepted.contains(&counter) {
            return Err(UtrnError::Duplicate(counter));
        }
        self.remember(counter);
        Ok(Accepted { counter, class: d.class, value: d.value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_digits_of_the_reference_examples() {
        for utrn in ["73943333457189043313", "74301825837596672005"] {
            assert_eq!(check_digit(&utrn[..19]), utrn[19..].parse().ok(), "{utrn}");
        }
    }

    #[test]
    fn the_counter_window_follows_the_highest_accepted_counter() {
        let mut c = CounterCache::new();
        assert_eq!(c.full_counter(1), Some(1 << 32));
        assert_eq!(c.full_counter(0), None, "counter zero is never issued");
        assert_eq!(c.full_counter(600), None, "would fall below zero");
        c.remember(1023 << 32);
        assert_eq!(c.full_counter(1), Some(1025 << 32), "wraps forward past 2^10");
        assert_eq!(c.full_counter(1000), Some(1000 << 32));
    }
}
