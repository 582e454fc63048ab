//! Kubernetes resource quantities: `500m`, `1`, `0.5`, `2Gi`, `64Mi`, `1k`, `1e3`.
//!
//! The grammar is Kubernetes' (`k8s.io/apimachinery/pkg/api/resource`):
//!
//! ```text
//! quantity ::= sign? number suffix
//! number   ::= digits | digits "." digits? | "." digits
//! suffix   ::= "" | n | u | m | k | M | G | T | P | E        (decimal SI)
//!            | Ki | Mi | Gi | Ti | Pi | Ei                    (binary SI)
//!            | ("e" | "E") sign? digits                       (decimal exponent)
//! ```
//!
//! A [`Quantity`] holds its value exactly, as a signed count of nano-units in an `i128`;
//! no floating point is involved anywhere. Like Kubernetes, parsing rounds a value finer
//! than one nano-unit up (away from zero), so `0.1n` is `1n`. Unlike Kubernetes, values
//! are not capped at 2^63-1: anything whose magnitude is below about 1.7e29 is kept
//! exactly, and larger values are rejected.
//!
//! A quantity remembers which family of suffixes it was written with ([`Format`]) and
//! prints itself in Kubernetes' canonical form for that family: the largest suffix that
//! loses no precision and leaves no fractional digits (`1.5` prints as `1500m`, `1.5Gi` as
//! `1536Mi`, `2048Ki` as `2Mi`). Equality, ordering and hashing look at the value only,
//! so `1Ki == 1024`.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How many nano-units make one unit.
const NANOS_PER_UNIT: i128 = 1_000_000_000;
/// How many nano-units make one milli-unit.
const NANOS_PER_MILLI: i128 = 1_000_000;
/// More significant digits than this are refused rather than carried through the
/// arithmetic; no real quantity comes close.
const MAX_SIGNIFICANT_DIGITS: usize = 64;
/// Decimal exponents are clamped to this magnitude while parsing: anything beyond it is
/// already out of range (or rounds to the smallest non-zero value).
const MAX_EXPONENT: i64 = 10_000;

/// The family of suffixes a quantity was written with, reused when it is printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Format {
    /// Powers of 1000: `m`, `k`, `M`, ... (and no suffix at all).
    #[default]
    DecimalSI,
    /// Powers of 1024: `Ki`, `Mi`, `Gi`, ...
    BinarySI,
    /// A power of ten written as `e<n>`: `1e3`, `5e-3`.
    DecimalExponent,
}

/// Why a string is not a quantity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string was empty.
    #[error("quantity is empty: write a number with an optional suffix, such as 500m, 1 or 2Gi")]
    Empty,
    /// The string does not start with a (signed) number.
    #[error(
        "quantity {0:?} is not a number with an optional suffix: write it like 500m, 1.5, 2Gi or 1e3"
    )]
    Syntax(String),
    /// The number is followed by something that is not a known suffix.
    #[error(
        "quantity {input:?} has an unknown suffix {suffix:?}: use one of n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or an exponent such as e3"
    )]
    UnknownSuffix {
        /// The whole input.
        input: String,
        /// The part after the number.
        suffix: String,
    },
    /// The number has more significant digits than wk keeps.
    #[error("quantity {0:?} has more than 64 significant digits: shorten it")]
    TooPrecise(String),
    /// The magnitude is too large to hold exactly.
    #[error("quantity {0:?} is too large: its magnitude must stay below 1.7e29")]
    OutOfRange(String),
}

/// A Kubernetes resource quantity, held exactly. See the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct Quantity {
    /// The value in nano-units (10^-9).
    nanos: i128,
    format: Format,
}

impl Quantity {
    /// Parses a quantity in Kubernetes' grammar, such as `500m`, `2Gi` or `1e3`.
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        if s.is_empty() {
            return Err(QuantityError::Empty);
        }
        let bytes = s.as_bytes();
        let mut pos = 0;
        let negative = match bytes[0] {
            b'-' => {
                pos = 1;
                true
            }
            b'+' => {
                pos = 1;
                false
            }
            _ => false,
        };
        let int_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        let int_part = &s[int_start..pos];
        let mut frac_part = "";
        if pos < bytes.len() && bytes[pos] == b'.' {
            pos += 1;
            let frac_start = pos;
            while pos < bytes.len() && bytes[pos].is_ascii_digit() {
                pos += 1;
            }
            frac_part = &s[frac_start..pos];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(QuantityError::Syntax(s.to_owned()));
        }
        // Everything consumed so far is ASCII, so `pos` is a character boundary.
        let suffix = &s[pos..];
        let (format, binary_shift, mut exponent) =
            parse_suffix(suffix).ok_or_else(|| QuantityError::UnknownSuffix {
                input: s.to_owned(),
                suffix: suffix.to_owned(),
            })?;

        // The value is <digits> * 10^exponent * 2^binary_shift; strip the zeros that do not
        // carry information so that only significant digits enter the arithmetic.
        exponent -= frac_part.len() as i64;
        let digits: String = int_part.chars().chain(frac_part.chars()).collect();
        let digits = digits.trim_start_matches('0');
        let significant = digits.trim_end_matches('0');
        exponent += (digits.len() - significant.len()) as i64;
        if significant.is_empty() {
            return Ok(Quantity { nanos: 0, format });
        }
        if significant.len() > MAX_SIGNIFICANT_DIGITS {
            return Err(QuantityError::TooPrecise(s.to_owned()));
        }

        let mut n = BigUint::from_decimal(significant);
        for _ in 0..binary_shift / 10 {
            n.mul_small(1024);
        }
        // Scale to nano-units: multiply by 10^(exponent + 9), or divide and round up.
        let scale = exponent.clamp(-MAX_EXPONENT, MAX_EXPONENT) + 9;
        let mut inexact = false;
        if scale >= 0 {
            for _ in 0..scale {
                n.mul_small(10);
                if n.limbs.len() > 4 {
                    return Err(QuantityError::OutOfRange(s.to_owned()));
                }
            }
        } else {
            for _ in 0..-scale {
                if n.is_zero() {
                    break;
                }
                inexact |= n.div_small(10) != 0;
            }
        }
        let magnitude = n
            .to_u128()
            .and_then(|m| m.checked_add(u128::from(inexact)))
            .and_then(|m| i128::try_from(m).ok())
            .ok_or_else(|| QuantityError::OutOfRange(s.to_owned()))?;
        let nanos = if negative { -magnitude } else { magnitude };
        Ok(Quantity { nanos, format })
    }

    /// A quantity of `nanos` nano-units, printed in `format`.
    pub fn from_nanos(nanos: i128, format: Format) -> Quantity {
        Quantity { nanos, format }
    }

    /// A quantity of `milli` milli-units (such as millicores), or `None` on overflow.
    pub fn from_milli(milli: i128) -> Option<Quantity> {
        milli.checked_mul(NANOS_PER_MILLI).map(|nanos| Quantity {
            nanos,
            format: Format::DecimalSI,
        })
    }

    /// Parses the string of a `k8s-openapi` quantity.
    pub fn from_k8s(
        q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
    ) -> Result<Quantity, QuantityError> {
        Quantity::parse(&q.0)
    }

    /// The canonical string as a `k8s-openapi` quantity.
    pub fn to_k8s(&self) -> k8s_openapi::apimachinery::pkg::api::resource::Quantity {
        k8s_openapi::apimachinery::pkg::api::resource::Quantity(self.to_string())
    }

    /// The exact value in nano-units.
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// The family of suffixes the quantity prints with.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The value in milli-units, rounded away from zero like Kubernetes' `MilliValue`
    /// (`0.1m` is 1, `-1.5m` is -2). For CPU this is millicores.
    pub fn milli_value(&self) -> i128 {
        div_away_from_zero(self.nanos, NANOS_PER_MILLI)
    }

    /// The value in whole units, rounded away from zero like Kubernetes' `Value`
    /// (`1500m` is 2). For memory this is bytes, for CPU whole cores.
    pub fn value(&self) -> i128 {
        div_away_from_zero(self.nanos, NANOS_PER_UNIT)
    }

    /// Whether the value is below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// Whether the value is zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// The sum, printed in `self`'s format, or `None` on overflow.
    pub fn checked_add(&self, other: &Quantity) -> Option<Quantity> {
        self.nanos.checked_add(other.nanos).map(|nanos| Quantity {
            nanos,
            format: self.format,
        })
    }

    /// The difference, printed in `self`'s format, or `None` on overflow.
    pub fn checked_sub(&self, other: &Quantity) -> Option<Quantity> {
        self.nanos.checked_sub(other.nanos).map(|nanos| Quantity {
            nanos,
            format: self.format,
        })
    }

    /// The canonical mantissa and suffix, as Kubernetes' `CanonicalizeBytes` picks them.
    fn canonical(&self) -> (i128, String) {
        if self.nanos == 0 {
            return (0, String::new());
        }
        if self.format == Format::BinarySI
            && self.nanos.unsigned_abs() >= 1024 * NANOS_PER_UNIT.unsigned_abs()
            && self.nanos % NANOS_PER_UNIT == 0
        {
            let mut mantissa = self.nanos / NANOS_PER_UNIT;
            let mut power = 0;
            while power < BINARY_SUFFIXES.len() && mantissa % 1024 == 0 {
                mantissa /= 1024;
                power += 1;
            }
            let suffix = if power == 0 {
                ""
            } else {
                BINARY_SUFFIXES[power - 1]
            };
            return (mantissa, suffix.to_owned());
        }
        // Decimal: drop trailing zeros into the exponent, then step the exponent down to a
        // multiple of three. That only restores zeros just removed, so it cannot overflow.
        let mut mantissa = self.nanos;
        let mut exponent: i32 = -9;
        while mantissa % 10 == 0 {
            mantissa /= 10;
            exponent += 1;
        }
        while exponent.rem_euclid(3) != 0 {
            mantissa *= 10;
            exponent -= 1;
        }
        if self.format == Format::DecimalExponent {
            let suffix = if exponent == 0 {
                String::new()
            } else {
                format!("e{exponent}")
            };
            return (mantissa, suffix);
        }
        // Decimal SI (and binary values that are small or fractional, as in Kubernetes).
        while exponent > 18 {
            mantissa *= 1000;
            exponent -= 3;
        }
        let suffix = match exponent {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            _ => "E",
        };
        (mantissa, suffix.to_owned())
    }
}

/// Binary suffixes by power of 1024, starting at 1024^1.
const BINARY_SUFFIXES: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

/// Maps a suffix to its format, its power of two and its power of ten.
fn parse_suffix(suffix: &str) -> Option<(Format, u32, i64)> {
    let decimal = |e| Some((Format::DecimalSI, 0, e));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        _ => {
            if let Some(i) = BINARY_SUFFIXES.iter().position(|b| *b == suffix) {
                return Some((Format::BinarySI, 10 * (i as u32 + 1), 0));
            }
            let rest = suffix.strip_prefix(['e', 'E'])?;
            let (negative, digits) = match rest.as_bytes().first()? {
                b'-' => (true, &rest[1..]),
                b'+' => (false, &rest[1..]),
                _ => (false, rest),
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // Saturate: exponents beyond MAX_EXPONENT behave alike.
            let magnitude = digits.bytes().fold(0i64, |acc, b| {
                (acc * 10 + i64::from(b - b'0')).min(MAX_EXPONENT + 1)
            });
            Some((
                Format::DecimalExponent,
                0,
                if negative { -magnitude } else { magnitude },
            ))
        }
    }
}

/// `n / d` rounded away from zero.
fn div_away_from_zero(n: i128, d: i128) -> i128 {
    let q = n / d;
    match (n % d).cmp(&0) {
        Ordering::Equal => q,
        Ordering::Greater => q + 1,
        Ordering::Less => q - 1,
    }
}

/// Just enough of an unsigned big integer to scale a parsed number exactly.
struct BigUint {
    /// Little-endian 32-bit limbs, without leading zero limbs.
    limbs: Vec<u32>,
}

impl BigUint {
    fn from_decimal(digits: &str) -> BigUint {
        let mut n = BigUint { limbs: Vec::new() };
        for b in digits.bytes() {
            n.mul_small(10);
            n.add_small(u32::from(b - b'0'));
        }
        n
    }

    fn is_zero(&self) -> bool {
        self.limbs.is_empty()
    }

    fn mul_small(&mut self, m: u32) {
        let mut carry = 0u64;
        for limb in &mut self.limbs {
            let v = u64::from(*limb) * u64::from(m) + carry;
            *limb = v as u32;
            carry = v >> 32;
        }
        if carry != 0 {
            self.limbs.push(carry as u32);
        }
    }

    fn add_small(&mut self, a: u32) {
        let mut carry = u64::from(a);
        for limb in &mut self.limbs {
            if carry == 0 {
                return;
            }
            let v = u64::from(*limb) + carry;
            *limb = v as u32;
            carry = v >> 32;
        }
        if carry != 0 {
            self.limbs.push(carry as u32);
        }
    }

    /// Divides in place and returns the remainder.
    fn div_small(&mut self, d: u32) -> u32 {
        let mut rem = 0u64;
        for limb in self.limbs.iter_mut().rev() {
            let v = (rem << 32) | u64::from(*limb);
            *limb = (v / u64::from(d)) as u32;
            rem = v % u64::from(d);
        }
        while self.limbs.last() == Some(&0) {
            self.limbs.pop();
        }
        rem as u32
    }

    fn to_u128(&self) -> Option<u128> {
        if self.limbs.len() > 4 {
            return None;
        }
        Some(
            self.limbs
                .iter()
                .rev()
                .fold(0u128, |acc, &l| (acc << 32) | u128::from(l)),
        )
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (mantissa, suffix) = self.canonical();
        f.pad(&format!("{mantissa}{suffix}"))
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

impl TryFrom<&str> for Quantity {
    type Error = QuantityError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Quantity::parse(s)
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl Hash for Quantity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.nanos.hash(state);
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    /// Accepts a string, or an integer as Kubernetes does (`cpu: 2`).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = Quantity;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity such as \"500m\" or \"2Gi\"")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                Quantity::parse(v.trim()).map_err(E::custom)
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity::from_nanos(
                    i128::from(v) * NANOS_PER_UNIT,
                    Format::DecimalSI,
                ))
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity::from_nanos(
                    i128::from(v) * NANOS_PER_UNIT,
                    Format::DecimalSI,
                ))
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_and_prints_canonically() {
        // (input, canonical, milli_value, value)
        let cases: &[(&str, &str, i128, i128)] = &[
            ("500m", "500m", 500, 1),
            ("1", "1", 1000, 1),
            ("0.5", "500m", 500, 1),
            ("2Gi", "2Gi", 2_147_483_648_000, 2_147_483_648),
            ("64Mi", "64Mi", 67_108_864_000, 67_108_864),
            ("1k", "1k", 1_000_000, 1000),
            ("1M", "1M", 1_000_000_000, 1_000_000),
            ("1e3", "1e3", 1_000_000, 1000),
            ("1.5G", "1500M", 1_500_000_000_000, 1_500_000_000),
            ("+1", "1", 1000, 1),
            ("-1", "-1", -1000, -1),
            ("1.5", "1500m", 1500, 2),
            ("1500m", "1500m", 1500, 2),
            ("-1500m", "-1500m", -1500, -2),
            ("1.5Gi", "1536Mi", 1_610_612_736_000, 1_610_612_736),
            ("1.5Ki", "1536", 1_536_000, 1536),
            ("2048Ki", "2Mi", 2_097_152_000, 2_097_152),
            ("1000Mi", "1000Mi", 1_048_576_000_000, 1_048_576_000),
            ("512Ki", "512Ki", 524_288_000, 524_288),
            ("0.5Ki", "512", 512_000, 512),
            (
                "1Ei",
                "1Ei",
                1_152_921_504_606_846_976_000,
                1_152_921_504_606_846_976,
            ),
            (
                "1024Ei",
                "1024Ei",
                1_180_591_620_717_411_303_424_000,
                1_180_591_620_717_411_303_424,
            ),
            ("1000", "1k", 1_000_000, 1000),
            ("1500", "1500", 1_500_000, 1500),
            ("12000", "12k", 12_000_000, 12000),
            ("1234567", "1234567", 1_234_567_000, 1_234_567),
            ("0.1m", "100u", 1, 1),
            ("1n", "1n", 1, 1),
            ("0.1n", "1n", 1, 1),
            ("-0.1n", "-1n", -1, -1),
            ("12e6", "12e6", 12_000_000_000, 12_000_000),
            ("1E3", "1e3", 1_000_000, 1000),
            ("5e-3", "5e-3", 5, 1),
            ("1.5e3", "1500", 1_500_000, 1500),
            (
                "1E",
                "1E",
                1_000_000_000_000_000_000_000,
                1_000_000_000_000_000_000,
            ),
            (
                "1000E",
                "1000E",
                1_000_000_000_000_000_000_000_000,
                1_000_000_000_000_000_000_000,
            ),
            ("0", "0", 0, 0),
            ("0.0", "0", 0, 0),
            ("-0", "0", 0, 0),
            ("0Gi", "0", 0, 0),
            ("0e1000", "0", 0, 0),
            ("1.", "1", 1000, 1),
            (".5", "500m", 500, 1),
            ("007", "7", 7000, 7),
            ("100.000", "100", 100_000, 100),
        ];
        for &(input, canonical, milli, value) in cases {
            let got = q(input);
            assert_eq!(got.to_string(), canonical, "display of {input}");
            assert_eq!(got.milli_value(), milli, "milli_value of {input}");
            assert_eq!(got.value(), value, "value of {input}");
        }
    }

    #[test]
    fn remembers_the_format() {
        assert_eq!(q("2Gi").format(), Format::BinarySI);
        assert_eq!(q("2G").format(), Format::DecimalSI);
        assert_eq!(q("2e9").format(), Format::DecimalExponent);
        assert_eq!(q("2").format(), Format::DecimalSI);
    }

    #[test]
    fn compares_by_value() {
        assert_eq!(q("1Ki"), q("1024"));
        assert_eq!(q("1k"), q("1e3"));
        assert_eq!(q("0.5"), q("500m"));
        assert!(q("1Gi") > q("1G"));
        assert!(q("-1") < q("0"));
        assert!(q("-1").is_negative());
        assert!(!q("0").is_negative());
        assert!(q("-0").is_zero());
    }

    #[test]
    fn rejects_malformed_quantities() {
        assert_eq!(Quantity::parse(""), Err(QuantityError::Empty));
        for bad in ["abc", "-", "+", ".", "Gi", "-Gi", " 1", "--1", "+-1"] {
            assert_eq!(
                Quantity::parse(bad),
                Err(QuantityError::Syntax(bad.to_owned())),
                "{bad}"
            );
        }
        for (bad, suffix) in [
            ("1K", "K"),
            ("1 Gi", " Gi"),
            ("1e", "e"),
            ("1e+", "e+"),
            ("1..2", ".2"),
            ("1gi", "gi"),
            ("1Gb", "Gb"),
            ("1e3.5", "e3.5"),
            ("1mm", "mm"),
            ("1µ", "µ"),
        ] {
            assert_eq!(
                Quantity::parse(bad),
                Err(QuantityError::UnknownSuffix {
                    input: bad.to_owned(),
                    suffix: suffix.to_owned()
                }),
                "{bad}"
            );
        }
        assert!(matches!(
            Quantity::parse("1e1000"),
            Err(QuantityError::OutOfRange(_))
        ));
        assert!(matches!(
            Quantity::parse("1e30"),
            Err(QuantityError::OutOfRange(_))
        ));
        assert!(matches!(
            Quantity::parse("200000000000000000000000000000"),
            Err(QuantityError::OutOfRange(_))
        ));
        let many = format!("0.{}", "1".repeat(65));
        assert!(matches!(
            Quantity::parse(&many),
            Err(QuantityError::TooPrecise(_))
        ));
    }

    #[test]
    fn error_messages_say_what_to_do() {
        assert_eq!(
            Quantity::parse("1K").unwrap_err().to_string(),
            "quantity \"1K\" has an unknown suffix \"K\": use one of n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or an exponent such as e3"
        );
        assert_eq!(
            Quantity::parse("abc").unwrap_err().to_string(),
            "quantity \"abc\" is not a number with an optional suffix: write it like 500m, 1.5, 2Gi or 1e3"
        );
    }

    #[test]
    fn tiny_values_round_up_to_one_nano() {
        assert_eq!(q("1e-1000").nanos(), 1);
        assert_eq!(q("-1e-1000").nanos(), -1);
        assert_eq!(
            q("0.0000000000000000000000000000000000000000001Ei").nanos(),
            1
        );
        // 1e-10 Ki = 1.024e-7 = 102.4n, rounded up to 103n.
        assert_eq!(q("0.0000000001Ki").nanos(), 103);
        assert_eq!(q("0.0000000001Ki").to_string(), "103n");
    }

    #[test]
    fn large_values_are_exact() {
        assert_eq!(q("8Ei").value(), 1i128 << 63);
        assert_eq!(q("100000000000000000000").to_string(), "100E");
        assert_eq!(
            q("123456789012345678901").value(),
            123_456_789_012_345_678_901
        );
    }

    #[test]
    fn arithmetic_keeps_the_receivers_format() {
        let sum = q("1Gi").checked_add(&q("1Gi")).unwrap();
        assert_eq!(sum.to_string(), "2Gi");
        let diff = q("1").checked_sub(&q("250m")).unwrap();
        assert_eq!(diff.to_string(), "750m");
        assert_eq!(Quantity::from_milli(1500).unwrap().to_string(), "1500m");
    }

    #[test]
    fn serde_uses_the_canonical_string() {
        let v: Quantity = serde_json::from_str("\"1.5Gi\"").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"1536Mi\"");
        let n: Quantity = serde_json::from_str("2").unwrap();
        assert_eq!(n, q("2"));
        assert!(serde_json::from_str::<Quantity>("\"2 cores\"").is_err());
    }

    #[test]
    fn converts_k8s_quantities() {
        let k = k8s_openapi::apimachinery::pkg::api::resource::Quantity("1.5".into());
        let parsed = Quantity::from_k8s(&k).unwrap();
        assert_eq!(parsed.milli_value(), 1500);
        assert_eq!(parsed.to_k8s().0, "1500m");
    }

    fn any_format() -> impl Strategy<Value = Format> {
        prop_oneof![
            Just(Format::DecimalSI),
            Just(Format::BinarySI),
            Just(Format::DecimalExponent)
        ]
    }

    /// Strings in Kubernetes' grammar, including odd but valid ones.
    fn quantity_string() -> impl Strategy<Value = String> {
        let sign = prop_oneof![Just(""), Just("+"), Just("-")];
        let number = prop_oneof!["[0-9]{1,10}", "[0-9]{1,8}\\.[0-9]{0,12}", "\\.[0-9]{1,12}",];
        let suffix = prop_oneof![
            prop::sample::select(vec![
                "", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi",
                "Ei",
            ])
            .prop_map(str::to_owned),
            (
                prop::sample::select(vec!["e", "E"]),
                prop::sample::select(vec!["", "+", "-"]),
                0..12u32
            )
                .prop_map(|(e, s, n)| format!("{e}{s}{n}")),
        ];
        (sign, number, suffix).prop_map(|(s, n, x)| format!("{s}{n}{x}"))
    }

    proptest! {
        #[test]
        fn display_round_trips(nanos in -(1i128 << 100)..(1i128 << 100), format in any_format()) {
            let q = Quantity::from_nanos(nanos, format);
            let printed = q.to_string();
            let back = Quantity::parse(&printed).unwrap();
            prop_assert_eq!(back, q, "{}", printed);
            // Printing is idempotent: the canonical form is a fixed point.
            prop_assert_eq!(back.to_string(), printed);
        }

        #[test]
        fn parsed_strings_round_trip(s in quantity_string()) {
            let q = Quantity::parse(&s).unwrap();
            let printed = q.to_string();
            prop_assert_eq!(Quantity::parse(&printed).unwrap(), q, "{} printed as {}", s, printed);
        }

        #[test]
        fn integers_with_suffixes_scale_exactly(n in 0i128..1_000_000_000, i in 0usize..16) {
            const SUFFIXES: [(&str, i128); 16] = [
                ("n", 1),
                ("u", 1_000),
                ("m", 1_000_000),
                ("", 1_000_000_000),
                ("k", 1_000_000_000_000),
                ("M", 1_000_000_000_000_000),
                ("G", 1_000_000_000_000_000_000),
                ("T", 1_000_000_000_000_000_000_000),
                ("P", 1_000_000_000_000_000_000_000_000),
                ("E", 1_000_000_000_000_000_000_000_000_000),
                ("Ki", 1_024_000_000_000),
                ("Mi", 1_048_576_000_000_000),
                ("Gi", 1_073_741_824_000_000_000),
                ("Ti", 1_099_511_627_776_000_000_000),
                ("Pi", 1_125_899_906_842_624_000_000_000),
                ("Ei", 1_152_921_504_606_846_976_000_000_000),
            ];
            let (suffix, nanos_per) = SUFFIXES[i];
            let q = Quantity::parse(&format!("{n}{suffix}")).unwrap();
            prop_assert_eq!(q.nanos(), n * nanos_per);
            let neg = Quantity::parse(&format!("-{n}{suffix}")).unwrap();
            prop_assert_eq!(neg.nanos(), -n * nanos_per);
            if nanos_per >= NANOS_PER_UNIT {
                prop_assert_eq!(q.value(), n * (nanos_per / NANOS_PER_UNIT));
            }
        }

        #[test]
        fn milli_value_rounds_away_from_zero(nanos in any::<i64>()) {
            let q = Quantity::from_nanos(i128::from(nanos), Format::DecimalSI);
            let m = q.milli_value();
            // m is the smallest-magnitude integer whose magnitude covers the value.
            prop_assert!((m * NANOS_PER_MILLI).abs() >= q.nanos().abs());
            prop_assert!(((m.abs() - 1).max(0) * NANOS_PER_MILLI) < q.nanos().abs() || m == 0);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = Quantity::parse(&s);
        }
    }
}
