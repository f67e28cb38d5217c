//! The customer identifier printed on prepayment cards and keys (R-PAY-1). GB has no public
//! standard for it, so meterhub defines one that carries the metering point itself, so that
//! the hub finds the registered supplier from the registry alone:
//!
//! ```text
//! 98 F <MPxN digits> C
//! ```
//!
//! - `98`: meterhub's issuer prefix;
//! - `F`: the fuel, `1` electricity (a 13-digit MPAN core follows) or `2` gas (a 6- to
//!   10-digit MPRN follows, its length given by the identifier's length);
//! - `C`: a Luhn check digit over everything before it (ISO/IEC 7812, as on payment cards),
//!   so that a mistyped digit is caught before anything is looked up.
//!
//! Electricity identifiers are 17 digits, gas ones 10 to 14. Spaces and dashes (as printed,
//! in groups of four) are ignored on input.

use std::fmt;

use crate::ids::{IdRules, Mpxn};

const PREFIX: &str = "98";

/// Why a customer identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustomerIdError {
    #[error("only digits (spaces and dashes allowed between groups)")]
    NotDigits,
    #[error("starts with {found:?}: meterhub customer identifiers start with 98")]
    Prefix { found: String },
    #[error("fuel digit {found:?}: 1 (electricity) or 2 (gas)")]
    Fuel { found: char },
    #[error("{found} digits: an electricity identifier has 17, a gas one 10 to 14")]
    Length { found: usize },
    #[error("the check digit is wrong (a digit was mistyped)")]
    CheckDigit,
    #[error("the metering point inside is not valid: {0}")]
    Mpxn(String),
}

/// A customer identifier: a metering point and its check digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CustomerId {
    mpxn: Mpxn,
}

/// The Luhn check digit of a string of decimal digits.
fn luhn(digits: &str) -> u8 {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

impl CustomerId {
    /// The identifier of a metering point.
    pub fn for_mpxn(mpxn: Mpxn) -> CustomerId {
        CustomerId { mpxn }
    }

    pub fn mpxn(&self) -> Mpxn {
        self.mpxn
    }

    /// The digits, without spaces.
    pub fn digits(&self) -> String {
        let fuel = match self.mpxn {
            Mpxn::Electricity(_) => '1',
            Mpxn::Gas(_) => '2',
        };
        let body = format!("{PREFIX}{fuel}{}", self.mpxn);
        let check = luhn(&body);
        format!("{body}{check}")
    }

    /// Read an identifier, checking every rule and naming the first one broken.
    pub fn parse_with(text: &str, rules: IdRules) -> Result<CustomerId, CustomerIdError> {
        let digits: String = text.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CustomerIdError::NotDigits);
        }
        if !digits.starts_with(PREFIX) {
            return Err(CustomerIdError::Prefix { found: digits.chars().take(2).collect() });
        }
        let fuel = digits.chars().nth(2).ok_or(CustomerIdError::Length { found: digits.len() })?;
        let payload_len = match fuel {
            '1' => 13..=13,
            '2' => 6..=10,
            other => return Err(CustomerIdError::Fuel { found: other }),
        };
        let payload_len_found = digits.len().saturating_sub(4);
        if !payload_len.contains(&payload_len_found) {
            return Err(CustomerIdError::Length { found: digits.len() });
        }
        let (body, check) = digits.split_at(digits.len() - 1);
        if luhn(body) != check.as_bytes()[0] - b'0' {
            return Err(CustomerIdError::CheckDigit);
        }
        let mpxn =
            Mpxn::parse_with(&body[3..], rules).map_err(|e| CustomerIdError::Mpxn(format!("{} {}", e.kind, e.rule)))?;
        Ok(CustomerId { mpxn })
    }
}

impl fmt::Display for CustomerId {
    /// Groups of four, as printed on a card.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.digits();
        let groups: Vec<&str> = d.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).expect("ASCII")).collect();
        f.write_str(&groups.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_matches_the_card_standard() {
        // The classic ISO/IEC 7812 example: 7992739871 has check digit 3.
        assert_eq!(luhn("7992739871"), 3);
    }
}
