//! Durations as written in config files: an integer and a unit, `250ms`,
//! `30s`, `2m`, `1h`.
//!
//! Deliberately narrower than `humantime`: no fractions, no compound values
//! (`1h30m`), no spaces, no bare numbers. A bare `30` is the classic "seconds
//! or milliseconds?" mistake, so it is rejected and the error shows the fix.

use std::time::Duration;

/// Units we accept, with their length in milliseconds.
const UNITS: &[(&str, u64)] = &[("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)];

/// Parses `"<digits><unit>"` with unit `ms`, `s`, `m` or `h`.
///
/// `"0s"` parses; callers reject zero where a value must be positive.
/// Returns `None` for anything else, including values that overflow.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = s.split_at(split);
    // `u64::from_str` would accept a leading `+`; digits-only is checked above.
    if digits.is_empty() {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    let (_, millis_per_unit) = UNITS.iter().find(|(name, _)| *name == unit)?;
    value
        .checked_mul(*millis_per_unit)
        .map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_durations() {
        let cases = [
            ("250ms", Duration::from_millis(250)),
            ("0ms", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("30s", Duration::from_secs(30)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("007s", Duration::from_secs(7)),
            ("86400s", Duration::from_secs(86400)),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_duration(input), Some(expected), "{input:?}");
        }
    }

    #[test]
    fn invalid_durations() {
        let cases = [
            "",
            "10",
            "-1s",
            "+1s",
            "1.5s",
            "10x",
            "s",
            "ms",
            " 10s",
            "10s ",
            "10 s",
            "1h30m",
            "10S",
            "10sec",
            "10us",
            "1d",
            "99999999999999999999s",
            "18446744073709551615h",
        ];
        for input in cases {
            assert_eq!(parse_duration(input), None, "{input:?}");
        }
    }
}
