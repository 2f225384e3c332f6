//! Integers as JSON (and the OpenAPI document's JSON Schema) read them: `3` and `3.0` are
//! the same integer, so every integer field of a request accepts an integral number written
//! either way, and refuses a fraction or a value beyond `i64` — never rounding one.
//!
//! Must never: accept a number it would have to round or clamp.

use serde::Deserializer;
use serde::de::{self, Visitor};
use std::fmt;

/// 2^53: past it, a float no longer holds every integer, so `9007199254740993` and
/// `-9223372036854775809` arrive rounded; a float integer is taken only within it.
const EXACT: f64 = 9_007_199_254_740_992.0;

/// The `i64` a float stands for, if it is integral and no larger than 2^53 (beyond, the
/// float may be a rounding of the number sent: write such a number as an integer).
pub fn integral(f: f64) -> Option<i64> {
    (f.fract() == 0.0 && f.abs() <= EXACT).then_some(f as i64)
}

struct IntVisitor;

impl Visitor<'_> for IntVisitor {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::custom(format!("{v} is past the largest integer")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        integral(v).ok_or_else(|| E::custom(format!("{v} is not an integer")))
    }
}

/// Deserializes an integer (`3` or `3.0`).
pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    d.deserialize_any(IntVisitor)
}

struct OptionVisitor;

impl<'de> Visitor<'de> for OptionVisitor {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        int(d).map(Some)
    }
}

/// Deserializes an optional integer (`3`, `3.0` or `null`); use with `#[serde(default)]`.
pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    d.deserialize_option(OptionVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct T {
        #[serde(deserialize_with = "int")]
        n: i64,
        #[serde(default, deserialize_with = "optional")]
        o: Option<i64>,
    }

    fn parse(text: &str) -> Option<(i64, Option<i64>)> {
        serde_json::from_str::<T>(text).ok().map(|t| (t.n, t.o))
    }

    #[test]
    fn integral_numbers_either_way() {
        assert_eq!(parse(r#"{"n": 3}"#), Some((3, None)));
        assert_eq!(parse(r#"{"n": 3.0, "o": -7.0}"#), Some((3, Some(-7))));
        assert_eq!(parse(r#"{"n": 1, "o": null}"#), Some((1, None)));
        assert_eq!(
            parse(r#"{"n": -9223372036854775808}"#).map(|t| t.0),
            Some(i64::MIN)
        );
        assert_eq!(parse(r#"{"n": 1.5}"#), None);
        assert_eq!(parse(r#"{"n": 9223372036854775808}"#), None);
        assert_eq!(parse(r#"{"n": -9223372036854775809}"#), None);
        assert_eq!(parse(r#"{"n": 9.3e18}"#), None);
        assert_eq!(parse(r#"{"n": 1e400}"#), None);
        assert_eq!(parse(r#"{"n": "3"}"#), None);
        assert_eq!(
            parse(r#"{"n": 9007199254740992.0}"#).map(|t| t.0),
            Some(1 << 53)
        );
        assert_eq!(integral(EXACT * 2.0), None);
        // Read exactly (serde_json's `float_roundtrip`): the fast reading made this one
        // -2251799813685247.25, a fraction.
        assert_eq!(
            parse(r#"{"n": -2251799813685247.0}"#).map(|t| t.0),
            Some(-2_251_799_813_685_247)
        );
    }
}
