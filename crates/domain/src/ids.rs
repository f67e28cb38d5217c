//! Identifiers that can only be built valid: MPAN (electricity), MPRN (gas), EUI-64 (devices
//! and parties). Parsing returns an [`IdError`] naming the identifier, the input and the rule
//! it broke (R-REG-3).

use std::fmt;
use std::str::FromStr;

/// Which kind of identifier an [`IdError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Mpan,
    Mprn,
    Mpxn,
    Eui64,
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdKind::Mpan => "MPAN",
            IdKind::Mprn => "MPRN",
            IdKind::Mpxn => "MPxN",
            IdKind::Eui64 => "EUI-64",
        })
    }
}

/// The rule an identifier broke. `code()` is stable and machine-readable; `Display` explains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdRule {
    /// Wrong number of characters; the text says which lengths are allowed.
    Length { expected: &'static str, found: usize },
    /// A character that is not allowed at that position.
    Character { position: usize, found: char, expected: &'static str },
    /// MPAN distributor id (first two digits of the core) outside 10..=36.
    DistributorId { found: u8 },
    /// MPAN check digit does not match the weighted sum of the first 12 digits.
    CheckDigit { expected: u8, found: u8 },
    /// Full-form MPAN top line: profile class outside 00..=08.
    ProfileClass { found: u8 },
    /// EUI-64 hyphens must separate every byte or be absent.
    HyphenLayout,
}

impl IdRule {
    /// Stable rule name used in API error bodies (`rule` field).
    pub fn code(&self) -> &'static str {
        match self {
            IdRule::Length { .. } => "length",
            IdRule::Character { .. } => "character",
            IdRule::DistributorId { .. } => "distributor-id",
            IdRule::CheckDigit { .. } => "check-digit",
            IdRule::ProfileClass { .. } => "profile-class",
            IdRule::HyphenLayout => "hyphen-layout",
        }
    }
}

impl fmt::Display for IdRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdRule::Length { expected, found } => {
                write!(f, "length: must be {expected}, found {found} characters")
            }
            IdRule::Character { position, found, expected } => {
                write!(f, "character: position {} is {found:?}, expected {expected}", position + 1)
            }
            IdRule::DistributorId { found } => {
                write!(f, "distributor-id: the first two digits ({found:02}) must be a distributor id 10-36")
            }
            IdRule::CheckDigit { expected, found } => {
                write!(f, "check-digit: the 13th digit is {found} but the MPAN check-digit rule gives {expected}")
            }
            IdRule::ProfileClass { found } => {
                write!(f, "profile-class: the top line's profile class ({found:02}) must be 00-08")
            }
            IdRule::HyphenLayout => {
                f.write_str("hyphen-layout: write 16 hex digits, either plain or as 8 hyphen-separated pairs")
            }
        }
    }
}

/// A refused identifier: which kind, what was given, which rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {input:?}: {rule}")]
pub struct IdError {
    pub kind: IdKind,
    pub input: String,
    pub rule: IdRule,
}

impl IdError {
    fn new(kind: IdKind, input: &str, rule: IdRule) -> IdError {
        // Bound what we echo back: an attacker-sized input is cut.
        let input: String = input.chars().take(64).collect();
        IdError { kind, input, rule }
    }
}

/// How strictly MPANs are checked. The check digit is enforced by default; industry test
/// data (including the DCC's own) uses MPANs that fail it, so it can be relaxed (R-REG-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRules {
    pub mpan_check_digit: bool,
}

impl Default for IdRules {
    fn default() -> Self {
        IdRules { mpan_check_digit: true }
    }
}

impl IdRules {
    pub const STRICT: IdRules = IdRules { mpan_check_digit: true };
    pub const RELAXED: IdRules = IdRules { mpan_check_digit: false };
}

const MPAN_WEIGHTS: [u32; 12] = [3, 5, 7, 13, 17, 19, 23, 29, 31, 37, 41, 43];

fn digits(kind: IdKind, s: &str) -> Result<Vec<u8>, IdError> {
    s.chars()
        .enumerate()
        .map(|(position, c)| {
            c.to_digit(10)
                .map(|d| d as u8)
                .ok_or_else(|| IdError::new(kind, s, IdRule::Character { position, found: c, expected: "a digit 0-9" }))
        })
        .collect()
}

fn to_u64(d: &[u8]) -> u64 {
    d.iter().fold(0u64, |acc, &x| acc * 10 + u64::from(x))
}

/// The MPAN check digit for the first 12 digits of a core.
pub fn mpan_check_digit(first12: &[u8; 12]) -> u8 {
    let sum: u32 = first12.iter().zip(MPAN_WEIGHTS).map(|(&d, w)| u32::from(d) * w).sum();
    ((sum % 11) % 10) as u8
}

/// An MPAN core: 13 digits, distributor id 10..=36, check digit valid (unless relaxed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mpan(u64);

impl Mpan {
    /// Parse a 13-digit core with the default (strict) rules.
    pub fn parse(s: &str) -> Result<Mpan, IdError> {
        Mpan::parse_with(s, IdRules::STRICT)
    }

    /// Parse a 13-digit core.
    pub fn parse_with(s: &str, rules: IdRules) -> Result<Mpan, IdError> {
        let len = s.chars().count();
        if len != 13 {
            return Err(IdError::new(
                IdKind::Mpan,
                s,
                IdRule::Length { expected: "13 digits (an MPAN core)", found: len },
            ));
        }
        let d = digits(IdKind::Mpan, s)?;
        Mpan::from_digits(s, &d, rules)
    }

    fn from_digits(input: &str, d: &[u8], rules: IdRules) -> Result<Mpan, IdError> {
        debug_assert_eq!(d.len(), 13);
        let distributor = d[0] * 10 + d[1];
        if !(10..=36).contains(&distributor) {
            return Err(IdError::new(IdKind::Mpan, input, IdRule::DistributorId { found: distributor }));
        }
        let first12: [u8; 12] = d[..12].try_into().expect("13 digits");
        let expected = mpan_check_digit(&first12);
        if rules.mpan_check_digit && expected != d[12] {
            return Err(IdError::new(IdKind::Mpan, input, IdRule::CheckDigit { expected, found: d[12] }));
        }
        Ok(Mpan(to_u64(d)))
    }

    /// The distributor id (first two digits).
    pub fn distributor_id(self) -> u8 {
        (self.0 / 100_000_000_000) as u8
    }

    /// Whether the check digit is right (always true for MPANs parsed strictly).
    pub fn check_digit_valid(self) -> bool {
        let s = self.to_string();
        let d: Vec<u8> = s.bytes().map(|b| b - b'0').collect();
        let first12: [u8; 12] = d[..12].try_into().expect("13 digits");
        mpan_check_digit(&first12) == d[12]
    }
}

impl fmt::Display for Mpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:013}", self.0)
    }
}

impl FromStr for Mpan {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mpan::parse(s)
    }
}

/// The top line of a full (21-digit) MPAN: profile class, meter time-switch code, line loss
/// factor class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MpanTopLine {
    pub profile_class: u8,
    pub meter_timeswitch_code: u16,
    pub line_loss_factor_class: u16,
}

/// A full MPAN: the 8-digit top line followed by the 13-digit core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FullMpan {
    pub top_line: MpanTopLine,
    pub core: Mpan,
}

impl FullMpan {
    pub fn parse_with(s: &str, rules: IdRules) -> Result<FullMpan, IdError> {
        let len = s.chars().count();
        if len != 21 {
            return Err(IdError::new(
                IdKind::Mpan,
                s,
                IdRule::Length { expected: "21 digits (a full MPAN with its top line)", found: len },
            ));
        }
        let d = digits(IdKind::Mpan, s)?;
        let profile_class = d[0] * 10 + d[1];
        if profile_class > 8 {
            return Err(IdError::new(IdKind::Mpan, s, IdRule::ProfileClass { found: profile_class }));
        }
        let top_line = MpanTopLine {
            profile_class,
            meter_timeswitch_code: to_u64(&d[2..5]) as u16,
            line_loss_factor_class: to_u64(&d[5..8]) as u16,
        };
        let core = Mpan::from_digits(s, &d[8..], rules)?;
        Ok(FullMpan { top_line, core })
    }
}

impl fmt::Display for FullMpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.top_line;
        write!(f, "{:02}{:03}{:03}{}", t.profile_class, t.meter_timeswitch_code, t.line_loss_factor_class, self.core)
    }
}

/// Outcome of the advisory MPRN check-digit rule (reported, never enforced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MprnCheck {
    Pass,
    Fail { expected: u8, found: u8 },
}

/// A gas meter point reference number: 6 to 10 digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mprn {
    value: u64,
    len: u8,
}

impl Mprn {
    pub fn parse(s: &str) -> Result<Mprn, IdError> {
        let len = s.chars().count();
        if !(6..=10).contains(&len) {
            return Err(IdError::new(IdKind::Mprn, s, IdRule::Length { expected: "6 to 10 digits", found: len }));
        }
        let d = digits(IdKind::Mprn, s)?;
        Ok(Mprn { value: to_u64(&d), len: len as u8 })
    }

    /// The advisory check (`reference/mpxn-examples.md`): the last two digits, read as a
    /// number, equal `sum(d[i] * (n - i)) mod 11` over the `n` digits before them.
    pub fn advisory_check(&self) -> MprnCheck {
        let s = self.to_string();
        let d: Vec<u32> = s.bytes().map(|b| u32::from(b - b'0')).collect();
        let n = d.len() - 2;
        let sum: u32 = d[..n].iter().enumerate().map(|(i, &x)| x * (n - i) as u32).sum();
        let expected = (sum % 11) as u8;
        let found = (d[n] * 10 + d[n + 1]) as u8;
        if expected == found { MprnCheck::Pass } else { MprnCheck::Fail { expected, found } }
    }
}

impl fmt::Display for Mprn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:0width$}", self.value, width = usize::from(self.len))
    }
}

impl FromStr for Mprn {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mprn::parse(s)
    }
}

/// The fuel of a metering point, implied by its identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fuel {
    Electricity,
    Gas,
}

impl Fuel {
    pub fn as_str(self) -> &'static str {
        match self {
            Fuel::Electricity => "electricity",
            Fuel::Gas => "gas",
        }
    }
}

impl fmt::Display for Fuel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Fuel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "electricity" => Ok(Fuel::Electricity),
            "gas" => Ok(Fuel::Gas),
            _ => Err("must be \"electricity\" or \"gas\"".to_string()),
        }
    }
}

/// An MPAN core or an MPRN. The form tells them apart: 13 or 21 digits is an MPAN (a full
/// MPAN is reduced to its core), 6 to 10 digits is an MPRN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mpxn {
    Electricity(Mpan),
    Gas(Mprn),
}

impl Mpxn {
    pub fn parse(s: &str) -> Result<Mpxn, IdError> {
        Mpxn::parse_with(s, IdRules::STRICT)
    }

    pub fn parse_with(s: &str, rules: IdRules) -> Result<Mpxn, IdError> {
        match s.chars().count() {
            13 => Mpan::parse_with(s, rules).map(Mpxn::Electricity),
            21 => FullMpan::parse_with(s, rules).map(|m| Mpxn::Electricity(m.core)),
            6..=10 => Mprn::parse(s).map(Mpxn::Gas),
            found => Err(IdError::new(
                IdKind::Mpxn,
                s,
                IdRule::Length {
                    expected: "an MPAN core (13 digits), a full MPAN (21 digits) or an MPRN (6 to 10 digits)",
                    found,
                },
            )),
        }
    }

    pub fn fuel(&self) -> Fuel {
        match self {
            Mpxn::Electricity(_) => Fuel::Electricity,
            Mpxn::Gas(_) => Fuel::Gas,
        }
    }
}

impl fmt::Display for Mpxn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mpxn::Electricity(m) => m.fmt(f),
            Mpxn::Gas(m) => m.fmt(f),
        }
    }
}

/// A 64-bit extended unique identifier (devices, and parties as originators). Accepts 16 hex
/// digits, plain or as 8 hyphen-separated pairs, any case; prints `00-DB-12-34-56-78-90-A0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Eui64(u64);

impl Eui64 {
    pub const fn from_u64(v: u64) -> Eui64 {
        Eui64(v)
    }

    pub const fn as_u64(self) -> u64 {
        self.0
    }

    pub fn parse(s: &str) -> Result<Eui64, IdError> {
        let len = s.chars().count();
        let hex: String = match len {
            16 => s.to_string(),
            23 => {
                for (i, c) in s.chars().enumerate() {
                    if i % 3 == 2 && c != '-' {
                        return Err(IdError::new(IdKind::Eui64, s, IdRule::HyphenLayout));
                    }
                }
                s.chars().enumerate().filter(|(i, _)| i % 3 != 2).map(|(_, c)| c).collect()
            }
            found => {
                let rule = if s.contains('-') {
                    IdRule::HyphenLayout
                } else {
                    IdRule::Length { expected: "16 hex digits (or 23 characters with hyphens)", found }
                };
                return Err(IdError::new(IdKind::Eui64, s, rule));
            }
        };
        let mut v: u64 = 0;
        for (i, c) in hex.chars().enumerate() {
            let digit = c.to_digit(16).ok_or_else(|| {
                // Report the position in the caller's input, hyphens included.
                let position = if len == 23 { i + i / 2 } else { i };
                IdError::new(
                    IdKind::Eui64,
                    s,
                    IdRule::Character { position, found: c, expected: "a hex digit 0-9, A-F" },
                )
            })?;
            v = (v << 4) | u64::from(digit);
        }
        Ok(Eui64(v))
    }

    /// 16 upper-case hex digits without separators.
    pub fn to_plain(self) -> String {
        format!("{:016X}", self.0)
    }
}

impl fmt::Display for Eui64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written out by hand: it is in every request id, and eight `{:02X}` arguments took
        // about 2% of the request pipeline's CPU.
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let mut out = [b'-'; 23];
        for (i, byte) in self.0.to_be_bytes().into_iter().enumerate() {
            out[3 * i] = HEX[usize::from(byte >> 4)];
            out[3 * i + 1] = HEX[usize::from(byte & 0x0F)];
        }
        f.write_str(std::str::from_utf8(&out).expect("ASCII hex digits and hyphens"))
    }
}

impl FromStr for Eui64 {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Eui64::parse(s)
    }
}

/// Text (`90-B3-D5-1F-30-01-00-02`) in human-readable formats such as JSON; the bare 64-bit
/// number in binary ones (the fleet's stored device state).
impl serde::Serialize for Eui64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() { s.collect_str(self) } else { s.serialize_u64(self.as_u64()) }
    }
}

impl<'de> serde::Deserialize<'de> for Eui64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Eui64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an EUI-64 such as 90-B3-D5-1F-30-01-00-02")
            }
            // Parsed from the borrowed text: no copy of it is made.
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Eui64, E> {
                Eui64::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Eui64, E> {
                Ok(Eui64::from_u64(v))
            }
        }
        if d.is_human_readable() { d.deserialize_str(Visitor) } else { d.deserialize_u64(Visitor) }
    }
}
