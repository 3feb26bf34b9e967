//! Byte sizes as written in config files: `65536`, `64KiB`, `10MiB`, `1GiB`,
//! and decimal `64KB`, `10MB`, `1GB`.
//!
//! Units are case-sensitive and spelled exactly: `10mb` could mean megabits or
//! mebibytes, so we make the user say which.

/// Accepted suffixes with their multiplier. A bare number is bytes.
const UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
];

/// Parses a byte size. `"0"` parses; callers reject zero where a value must
/// be positive. Returns `None` for fractions, signs, spaces, unknown units
/// and values that overflow `u64`.
pub fn parse_size(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    if unit.is_empty() {
        return Some(value);
    }
    let (_, multiplier) = UNITS.iter().find(|(name, _)| *name == unit)?;
    value.checked_mul(*multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_sizes() {
        let cases = [
            ("65536", 65_536),
            ("0", 0),
            ("512B", 512),
            ("64KiB", 65_536),
            ("10MiB", 10 * 1024 * 1024),
            ("1GiB", 1024 * 1024 * 1024),
            ("64KB", 64_000),
            ("10MB", 10_000_000),
            ("1GB", 1_000_000_000),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_size(input), Some(expected), "{input:?}");
        }
    }

    #[test]
    fn invalid_sizes() {
        let cases = [
            "",
            "s",
            "-1",
            "+1",
            "1.5MiB",
            "10x",
            "10 MiB",
            " 10",
            "10kb",
            "10mib",
            "10K",
            "10M",
            "KiB",
            "1TiB",
            "99999999999999999999",
            "18446744073709551615GiB",
        ];
        for input in cases {
            assert_eq!(parse_size(input), None, "{input:?}");
        }
    }
}
