//! [`Fe`]: an element of the BN254 scalar field, the field of Codex's Poseidon2.

use std::fmt;
use std::ops::{Add, AddAssign};
use std::str::FromStr;

use halo2curves_axiom::bn256::Fr;
use halo2curves_axiom::ff::{Field, PrimeField};

use crate::error::{Error, Result};

/// The modulus `r = 21888242871839275222246405745257275088548364400416034343698204186575808495617`
/// as little-endian 64-bit limbs.
pub const MODULUS: [u64; 4] = [
    0x43e1_f593_f000_0001,
    0x2833_e848_79b9_7091,
    0xb850_45b6_8181_585d,
    0x3064_4e72_e131_a029,
];

/// An element of the BN254 scalar field `F_r`.
///
/// Serialised as Codex does: 32 bytes little-endian, canonical (`< r`); in JSON as a
/// decimal string. It wraps halo2curves' `Fr`, the field the circuit works in, so proof
/// inputs need no conversion.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Fe(pub(crate) Fr);

impl Fe {
    /// Zero.
    pub const ZERO: Fe = Fe(Fr::zero());
    /// One.
    pub const ONE: Fe = Fe(Fr::one());

    /// The element `v`.
    pub fn from_u64(v: u64) -> Self {
        Fe(Fr::from(v))
    }

    /// The element with canonical little-endian limbs `limbs`.
    ///
    /// # Errors
    /// [`Error::NotCanonical`] when the integer is `>= r`.
    pub fn from_limbs(limbs: [u64; 4]) -> Result<Self> {
        if !less_than_modulus(&limbs) {
            return Err(Error::NotCanonical);
        }
        Ok(Fe(Fr::from_raw(limbs)))
    }

    /// The canonical integer as little-endian 64-bit limbs.
    pub fn to_limbs(&self) -> [u64; 4] {
        self.0.into()
    }

    /// Parses Codex's 32-byte little-endian encoding (`fromBytes`).
    ///
    /// # Errors
    /// [`Error::NotCanonical`] when the integer is `>= r`.
    pub fn from_le_bytes(bytes: &[u8; 32]) -> Result<Self> {
        Option::from(Fr::from_repr(*bytes))
            .map(Fe)
            .ok_or(Error::NotCanonical)
    }

    /// Codex's 32-byte little-endian canonical encoding (`toBytes`).
    pub fn to_le_bytes(&self) -> [u8; 32] {
        self.0.to_repr()
    }

    /// An element from at most 31 little-endian bytes (always `< 2^248 < r`).
    pub(crate) fn from_le_bytes_31(bytes: &[u8]) -> Self {
        let mut repr = [0u8; 32];
        let n = bytes.len().min(31);
        repr[..n].copy_from_slice(&bytes[..n]);
        // A value below 2^248 is always canonical.
        Fe(Option::from(Fr::from_repr(repr)).unwrap_or(Fr::ZERO))
    }

    /// Parses a decimal integer (what Codex's circuit-input JSON holds). Leading zeros
    /// are allowed; signs, spaces and other characters are not.
    ///
    /// # Errors
    /// [`Error::InvalidDecimal`] for non-digits or empty text, [`Error::OutOfRange`]
    /// for integers `>= r`. `field` names the value in the error.
    pub fn from_decimal(text: &str, field: &str) -> Result<Self> {
        let limbs = parse_decimal(text, field)?;
        Fe::from_limbs(limbs).map_err(|_| Error::OutOfRange {
            field: field.to_string(),
        })
    }

    /// The lowest `bits` bits (at most 64) of the canonical integer.
    pub fn low_bits(&self, bits: u32) -> u64 {
        let low = self.to_limbs()[0];
        match bits {
            0 => 0,
            64.. => low,
            b => low & ((1u64 << b) - 1),
        }
    }

    /// Whether this is zero.
    pub fn is_zero(&self) -> bool {
        bool::from(self.0.is_zero())
    }

    /// The halo2curves value.
    pub fn to_fr(self) -> Fr {
        self.0
    }
}

impl From<Fr> for Fe {
    fn from(f: Fr) -> Self {
        Fe(f)
    }
}

impl From<Fe> for Fr {
    fn from(f: Fe) -> Self {
        f.0
    }
}

impl From<u64> for Fe {
    fn from(v: u64) -> Self {
        Fe::from_u64(v)
    }
}

impl Add for Fe {
    type Output = Fe;

    fn add(self, rhs: Fe) -> Fe {
        Fe(self.0 + rhs.0)
    }
}

impl AddAssign for Fe {
    fn add_assign(&mut self, rhs: Fe) {
        self.0 += rhs.0;
    }
}

impl fmt::Display for Fe {
    /// The decimal integer.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_decimal(self.to_limbs()))
    }
}

impl fmt::Debug for Fe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fe({self})")
    }
}

impl FromStr for Fe {
    type Err = Error;

    /// Parses a decimal integer below `r`.
    fn from_str(s: &str) -> Result<Self> {
        Fe::from_decimal(s, "field element")
    }
}

pub(crate) fn less_than_modulus(limbs: &[u64; 4]) -> bool {
    for i in (0..4).rev() {
        if limbs[i] != MODULUS[i] {
            return limbs[i] < MODULUS[i];
        }
    }
    false
}

/// Parses decimal digits into a 256-bit integer.
pub(crate) fn parse_decimal(text: &str, field: &str) -> Result<[u64; 4]> {
    let invalid = || Error::InvalidDecimal {
        field: field.to_string(),
    };
    if text.is_empty() {
        return Err(invalid());
    }
    let mut limbs = [0u64; 4];
    for c in text.bytes() {
        if !c.is_ascii_digit() {
            return Err(invalid());
        }
        let mut carry = u128::from(c - b'0');
        for limb in &mut limbs {
            let v = u128::from(*limb) * 10 + carry;
            *limb = v as u64;
            carry = v >> 64;
        }
        if carry != 0 {
            return Err(Error::OutOfRange {
                field: field.to_string(),
            });
        }
    }
    Ok(limbs)
}

/// Prints a 256-bit integer in decimal.
fn to_decimal(mut limbs: [u64; 4]) -> String {
    const CHUNK: u64 = 10_000_000_000_000_000_000; // 10^19
    let mut parts = Vec::new();
    while limbs != [0; 4] {
        let mut rem = 0u128;
        for limb in limbs.iter_mut().rev() {
            let v = (rem << 64) | u128::from(*limb);
            *limb = (v / u128::from(CHUNK)) as u64;
            rem = v % u128::from(CHUNK);
        }
        parts.push(rem as u64);
    }
    match parts.split_last() {
        None => "0".to_string(),
        Some((most, rest)) => {
            let mut s = most.to_string();
            for p in rest.iter().rev() {
                s.push_str(&format!("{p:019}"));
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: &str = "21888242871839275222246405745257275088548364400416034343698204186575808495617";

    #[test]
    fn decimal_round_trip_and_bounds() {
        for s in ["0", "1", "10", "18446744073709551616", "1234567"] {
            assert_eq!(Fe::from_decimal(s, "t").expect("parse").to_string(), s);
        }
        let r_minus_1 =
            "21888242871839275222246405745257275088548364400416034343698204186575808495616";
        assert_eq!(
            Fe::from_decimal(r_minus_1, "t").expect("r-1").to_string(),
            r_minus_1
        );
        assert!(matches!(
            Fe::from_decimal(R, "t"),
            Err(Error::OutOfRange { .. })
        ));
        assert!(matches!(
            Fe::from_decimal(&"9".repeat(100), "t"),
            Err(Error::OutOfRange { .. })
        ));
        for bad in ["", "-1", "+1", "1 ", "0x10", "1e3", "١"] {
            assert!(
                matches!(
                    Fe::from_decimal(bad, "t"),
                    Err(Error::InvalidDecimal { .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            Fe::from_decimal("0009", "t").expect("zeros"),
            Fe::from_u64(9)
        );
    }

    #[test]
    fn bytes_round_trip_and_reject_r() {
        let x = Fe::from_decimal(
            "21882471761025344482456282050943515707267606647948403374880378562101343146243",
            "t",
        )
        .expect("x");
        assert_eq!(Fe::from_le_bytes(&x.to_le_bytes()).expect("bytes"), x);
        let mut r = [0u8; 32];
        for (i, limb) in MODULUS.iter().enumerate() {
            r[i * 8..i * 8 + 8].copy_from_slice(&limb.to_le_bytes());
        }
        assert!(matches!(Fe::from_le_bytes(&r), Err(Error::NotCanonical)));
        assert!(Fe::from_le_bytes(&[0xff; 32]).is_err());
        r[0] -= 1;
        assert!(Fe::from_le_bytes(&r).is_ok());
        assert_eq!(Fe::from_u64(258).to_le_bytes()[..2], [2, 1]);
    }

    #[test]
    fn low_bits() {
        let x = Fe::from_u64(0x1248_306A_560C_9AC0);
        assert_eq!(x.low_bits(10), 0x2C0);
        assert_eq!(x.low_bits(50), 0x306A_560C_9AC0);
        assert_eq!(x.low_bits(64), 0x1248_306A_560C_9AC0);
        assert_eq!(x.low_bits(0), 0);
    }
}
