//! Human-friendly scalar values used in config files: byte sizes (`16MiB`), durations
//! (`10s`, `1h30m`) and the WAL fsync policy (`always` | `never` | a duration).
//!
//! Each type serializes back to the form a person would write, because the serialized
//! built-in defaults are the bottom layer of the figment merge.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// `expected "a", "b" or "c", got "d"`: the message for a value outside a fixed set.
pub(crate) fn expected_one_of(options: &[&str], got: &str) -> String {
    let quoted: Vec<String> = options.iter().map(|option| format!("{option:?}")).collect();
    let expected = match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.join(""),
    };
    format!("expected {expected}, got {got:?}")
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// Units accepted after a size number, matched case-insensitively. Decimal units are
/// powers of 1000 and binary units powers of 1024, as in Kubernetes and most tools.
const SIZE_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("b", 1),
    ("k", 1_000),
    ("kb", 1_000),
    ("ki", KIB),
    ("kib", KIB),
    ("m", 1_000_000),
    ("mb", 1_000_000),
    ("mi", MIB),
    ("mib", MIB),
    ("g", 1_000_000_000),
    ("gb", 1_000_000_000),
    ("gi", GIB),
    ("gib", GIB),
    ("t", 1_000_000_000_000),
    ("tb", 1_000_000_000_000),
    ("ti", TIB),
    ("tib", TIB),
];

const SIZE_EXPECTED: &str = "a size like \"16MiB\", \"512KB\" or a number of bytes";

/// A number of bytes, written in config files as `16MiB`, `512KB`, `1.5GiB` or a plain
/// integer (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ByteSize(pub(crate) u64);

impl ByteSize {
    pub(crate) const fn mib(n: u64) -> Self {
        ByteSize(n * MIB)
    }

    pub(crate) const fn gib(n: u64) -> Self {
        ByteSize(n * GIB)
    }

    pub(crate) fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ByteSize {
    /// Prints the largest binary unit that divides the size exactly, so defaults read
    /// back the way they are documented (`16MiB`, not `16777216`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        for (unit, factor) in [("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)] {
            if bytes != 0 && bytes.is_multiple_of(factor) {
                return write!(f, "{}{unit}", bytes / factor);
            }
        }
        write!(f, "{bytes}")
    }
}

/// Parses `16MiB`, `512 KB`, `1.5GiB` or `1048576`. Fractions are rounded down to whole
/// bytes.
pub(crate) fn parse_size(input: &str) -> Result<u64, String> {
    let text = input.trim();
    let number_len = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_len);
    let unit = unit.trim();
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(format!("expected {SIZE_EXPECTED}, got {input:?}"));
    }
    let Some(&(_, factor)) = SIZE_UNITS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(unit))
    else {
        return Err(format!(
            "unknown size unit {unit:?} in {input:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
        ));
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if fraction.contains('.') {
        return Err(format!("expected {SIZE_EXPECTED}, got {input:?}"));
    }
    let too_large = || format!("{input:?} is too large (at most {} bytes)", u64::MAX);
    // u128 keeps `whole * factor` and the scaled fraction exact before the range check.
    let whole: u128 = whole.parse().map_err(|_| too_large())?;
    let mut bytes = whole
        .checked_mul(u128::from(factor))
        .ok_or_else(too_large)?;
    if !fraction.is_empty() {
        // Digits beyond 1e-18 of a TiB are far below one byte; ignoring them keeps the
        // arithmetic in range.
        let digits = &fraction[..fraction.len().min(18)];
        let numerator: u128 = digits.parse().map_err(|_| too_large())?;
        let denominator = 10u128.pow(u32::try_from(digits.len()).unwrap_or(18));
        bytes += numerator * u128::from(factor) / denominator;
    }
    u64::try_from(bytes).map_err(|_| too_large())
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0 != 0 && self.0.is_multiple_of(KIB) {
            serializer.collect_str(self)
        } else {
            serializer.serialize_u64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;

        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(SIZE_EXPECTED)
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(value))
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<ByteSize, E> {
                u64::try_from(value)
                    .map(ByteSize)
                    .map_err(|_| E::invalid_value(Unexpected::Signed(value), &self))
            }

            fn visit_u128<E: de::Error>(self, value: u128) -> Result<ByteSize, E> {
                u64::try_from(value)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("{value} is too large")))
            }

            fn visit_i128<E: de::Error>(self, value: i128) -> Result<ByteSize, E> {
                u64::try_from(value)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("expected {SIZE_EXPECTED}, got {value}")))
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<ByteSize, E> {
                parse_size(value).map(ByteSize).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(SizeVisitor)
    }
}

const DURATION_EXPECTED: &str = "a duration like \"10s\", \"5m\" or \"1h30m\"";

/// Parses a humantime duration (`10s`, `100ms`, `1h30m`) with a message that shows the
/// accepted form.
pub(crate) fn parse_duration(input: &str) -> Result<Duration, String> {
    humantime::parse_duration(input.trim())
        .map_err(|error| format!("expected {DURATION_EXPECTED}, got {input:?} ({error})"))
}

/// `#[serde(with = "duration")]` for `std::time::Duration` fields: humantime strings.
pub(crate) mod duration {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        value: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*value))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(DURATION_EXPECTED)
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Duration, E> {
                parse_duration(value).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(DurationVisitor)
    }
}

/// `#[serde(default, with = "option_duration")]` for `Option<Duration>` fields: absent
/// is `None`, otherwise a humantime string.
pub(crate) mod option_duration {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => duration::serialize(value, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        duration::deserialize(deserializer).map(Some)
    }
}

/// The WAL fsync policy as written: `always`, `never`, or a duration meaning "fsync at
/// most this often".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawFsync {
    Always,
    Never,
    Interval(Duration),
}

const FSYNC_EXPECTED: &str = "\"always\", \"never\" or a duration";

impl Serialize for RawFsync {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            RawFsync::Always => serializer.serialize_str("always"),
            RawFsync::Never => serializer.serialize_str("never"),
            RawFsync::Interval(interval) => {
                serializer.collect_str(&humantime::format_duration(*interval))
            }
        }
    }
}

impl<'de> Deserialize<'de> for RawFsync {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FsyncVisitor;

        impl Visitor<'_> for FsyncVisitor {
            type Value = RawFsync;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(FSYNC_EXPECTED)
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<RawFsync, E> {
                let value = value.trim();
                if value.eq_ignore_ascii_case("always") {
                    return Ok(RawFsync::Always);
                }
                if value.eq_ignore_ascii_case("never") {
                    return Ok(RawFsync::Never);
                }
                humantime::parse_duration(value)
                    .map(RawFsync::Interval)
                    .map_err(|_| E::custom(format!("expected {FSYNC_EXPECTED}, got {value:?}")))
            }
        }

        deserializer.deserialize_any(FsyncVisitor)
    }
}

/// `query.metrics_default_step` as written: `auto` (Tempo's rule, from the range) or a
/// fixed duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawStep {
    Auto,
    Fixed(Duration),
}

const STEP_EXPECTED: &str = "\"auto\" or a duration";

impl Serialize for RawStep {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            RawStep::Auto => serializer.serialize_str("auto"),
            RawStep::Fixed(step) => serializer.collect_str(&humantime::format_duration(*step)),
        }
    }
}

impl<'de> Deserialize<'de> for RawStep {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StepVisitor;

        impl Visitor<'_> for StepVisitor {
            type Value = RawStep;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(STEP_EXPECTED)
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<RawStep, E> {
                let value = value.trim();
                if value.eq_ignore_ascii_case("auto") {
                    return Ok(RawStep::Auto);
                }
                humantime::parse_duration(value)
                    .map(RawStep::Fixed)
                    .map_err(|_| E::custom(format!("expected {STEP_EXPECTED}, got {value:?}")))
            }
        }

        deserializer.deserialize_any(StepVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_units_plain_bytes_and_fractions() {
        let cases = [
            ("0", 0),
            ("1048576", 1_048_576),
            ("16MiB", 16 * MIB),
            ("16 MiB", 16 * MIB),
            ("16mib", 16 * MIB),
            ("16Mi", 16 * MIB),
            ("512KB", 512_000),
            ("512k", 512_000),
            ("2KiB", 2048),
            ("1GB", 1_000_000_000),
            ("1.5GiB", 3 * GIB / 2),
            ("1TiB", TIB),
            ("100B", 100),
            (" 7 ", 7),
            ("0.5B", 0),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_size(input), Ok(expected), "{input}");
        }
    }

    #[test]
    fn sizes_reject_garbage_with_the_accepted_forms() {
        for input in ["", "MiB", "-1", "1.2.3MiB", ".5MiB", "5.MiB", "ten"] {
            let error = parse_size(input).expect_err(input);
            assert!(error.contains("expected a size like"), "{input}: {error}");
        }
        let error = parse_size("16XB").expect_err("unknown unit");
        assert!(error.contains("unknown size unit \"XB\""), "{error}");
        let error = parse_size("17000000TiB").expect_err("overflow");
        assert!(error.contains("too large"), "{error}");
        let error = parse_size("99999999999999999999999999999999999999999").expect_err("u128");
        assert!(error.contains("too large"), "{error}");
    }

    #[test]
    fn sizes_print_in_the_largest_exact_binary_unit() {
        assert_eq!(ByteSize::mib(16).to_string(), "16MiB");
        assert_eq!(ByteSize::gib(1).to_string(), "1GiB");
        assert_eq!(ByteSize(1536 * KIB).to_string(), "1536KiB");
        assert_eq!(ByteSize(1000).to_string(), "1000");
        assert_eq!(ByteSize(0).to_string(), "0");
        for size in [ByteSize::mib(16), ByteSize(1536 * KIB), ByteSize(1000)] {
            assert_eq!(parse_size(&size.to_string()), Ok(size.bytes()));
        }
    }

    #[test]
    fn durations_use_humantime_and_name_the_accepted_form() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        let error = parse_duration("10").expect_err("no unit");
        assert!(error.starts_with("expected a duration like"), "{error}");
    }
}
