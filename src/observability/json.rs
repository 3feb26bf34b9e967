//! A tiny JSON string writer shared by the access log and Portico's own error
//! bodies: both are built on the hot path, so they append to one buffer
//! instead of going through a serializer.

/// Appends `s` to `out` as a JSON string literal, quotes included.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    push_escaped(out, s);
    out.push('"');
}

/// Whether byte `b` must be escaped inside a JSON string (as Portico
/// writes them: DEL too, so that logs stay printable).
#[inline]
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f
}

/// Whether any of the eight bytes in `w` needs escaping: the bit tricks of
/// "Bit Twiddling Hacks" (a byte below 0x20, or equal to `"`, `\\` or DEL),
/// exact for the whole word, not for which byte.
#[inline]
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH != 0;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH != 0;
    below_space
        || has_zero(w ^ (ONES * 0x22))
        || has_zero(w ^ (ONES * 0x5c))
        || has_zero(w ^ (ONES * 0x7f))
}

/// Where the first byte to escape is, from `from` on: eight bytes at a
/// time until a word has one, then byte by byte.
#[inline]
fn next_escape(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        if word_needs_escape(w) {
            break;
        }
        i += 8;
    }
    bytes[i..]
        .iter()
        .position(|&b| needs_escape(b))
        .map(|off| i + off)
}

/// `s` escaped, without quotes. Runs of plain bytes (nearly every value)
/// are found a word at a time and copied whole.
fn push_escaped(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    while let Some(i) = next_escape(bytes, start) {
        out.push_str(&s[start..i]);
        let b = bytes[i];
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

/// `,"key":` (no comma right after the opening brace). Keys are Portico's
/// own field names: plain ASCII, written as they are.
#[inline]
fn push_key(out: &mut String, key: &str) {
    debug_assert!(!key.bytes().any(needs_escape), "{key:?}");
    if !out.ends_with('{') {
        out.push(',');
    }
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
}

/// Appends `"key":"value"` (with a leading comma unless `first`).
pub fn push_field(out: &mut String, key: &str, value: &str) {
    push_key(out, key);
    push_str(out, value);
}

/// Appends `"key":number`.
pub fn push_number(out: &mut String, key: &str, value: impl itoa_like::Number) {
    push_key(out, key);
    value.push_to(out);
}

/// Numbers written without going through `format!` (whose formatter
/// machinery is most of the cost of a short number on the request path).
pub mod itoa_like {
    /// A value that can be written as a JSON number.
    pub trait Number {
        fn push_to(self, out: &mut String);
    }
    impl Number for u64 {
        fn push_to(self, out: &mut String) {
            push_u64(out, self);
        }
    }
    impl Number for u16 {
        fn push_to(self, out: &mut String) {
            push_u64(out, u64::from(self));
        }
    }
    /// Three decimals, as `{:.3}` would write them (rounded half away from
    /// zero rather than to even: the two differ only in the last digit of
    /// ties). Values out of the range a duration has go through `format!`.
    impl Number for f64 {
        fn push_to(self, out: &mut String) {
            if !(0.0..1e15).contains(&self) {
                use std::fmt::Write;
                let _ = write!(out, "{self:.3}");
                return;
            }
            let thousandths = (self * 1000.0).round() as u64;
            push_u64(out, thousandths / 1000);
            out.push('.');
            let frac = thousandths % 1000;
            out.push(char::from(b'0' + (frac / 100) as u8));
            out.push(char::from(b'0' + (frac / 10 % 10) as u8));
            out.push(char::from(b'0' + (frac % 10) as u8));
        }
    }

    /// Decimal digits of `n`.
    pub fn push_u64(out: &mut String, mut n: u64) {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &d in &buf[i..] {
            out.push(char::from(d));
        }
    }
}

/// Appends an IP address as text: IPv4 digit by digit (the common case,
/// twice per request: the access log and `x-forwarded-for`), IPv6 through
/// its `Display`.
pub fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                itoa_like::push_u64(out, u64::from(octet));
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends `"key":"ip"`.
pub fn push_ip_field(out: &mut String, key: &str, ip: std::net::IpAddr) {
    push_key(out, key);
    out.push('"');
    push_ip(out, ip);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_quotes_backslashes_and_controls() {
        let cases = [
            ("plain", "\"plain\""),
            ("a\"b", "\"a\\\"b\""),
            ("a\\b", "\"a\\\\b\""),
            ("line\nbreak\ttab\r", "\"line\\nbreak\\ttab\\r\""),
            ("\u{1}\u{7f}", "\"\\u0001\\u007f\""),
            ("café ☕", "\"café ☕\""),
        ];
        for (input, want) in cases {
            let mut out = String::new();
            push_str(&mut out, input);
            assert_eq!(out, want, "input {input:?}");
            let back: String = serde_json::from_str(&out).unwrap();
            assert_eq!(back, input);
        }
    }

    #[test]
    fn fields_build_a_valid_object() {
        let mut out = String::from("{");
        push_field(&mut out, "a", "x");
        push_number(&mut out, "n", 42u64);
        push_number(&mut out, "d", 1.5f64);
        out.push('}');
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["a"], "x");
        assert_eq!(v["n"], 42);
        assert_eq!(v["d"], 1.5);
    }

    #[test]
    fn numbers_are_written_as_format_would() {
        for n in [0u64, 7, 10, 99, 100, 65_535, 1_000_000, u64::MAX] {
            let mut out = String::new();
            itoa_like::Number::push_to(n, &mut out);
            assert_eq!(out, n.to_string());
        }
        let cases = [
            (0.0, "0.000"),
            (0.0004, "0.000"),
            (0.0016, "0.002"),
            (1.25, "1.250"),
            (12.3456, "12.346"),
            (999.9996, "1000.000"),
            (30_000.0, "30000.000"),
        ];
        for (ms, want) in cases {
            let mut out = String::new();
            itoa_like::Number::push_to(ms, &mut out);
            assert_eq!(out, want, "{ms}");
            assert_eq!(format!("{ms:.3}"), want, "{ms}: the formatter disagrees");
        }
        let mut odd = String::new();
        itoa_like::Number::push_to(-1.5f64, &mut odd);
        assert_eq!(odd, "-1.500");
    }

    #[test]
    fn ip_addresses_are_written_as_display_would() {
        let ips: [std::net::IpAddr; 5] = [
            [0, 0, 0, 0].into(),
            [127, 0, 0, 1].into(),
            [10, 200, 30, 255].into(),
            "::1".parse().unwrap(),
            "2001:db8::ff00:42:8329".parse().unwrap(),
        ];
        for ip in ips {
            let mut out = String::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string());
        }
        let mut out = String::from("{");
        push_ip_field(&mut out, "client_ip", [192, 0, 2, 1].into());
        assert_eq!(out, "{\"client_ip\":\"192.0.2.1\"");
    }

    #[test]
    fn the_word_at_a_time_scan_finds_every_byte_to_escape_anywhere() {
        for b in 0u8..=0x7f {
            for len in [1, 7, 8, 9, 16, 23] {
                for at in 0..len {
                    let mut v = vec![b'a'; len];
                    v[at] = b;
                    let s = std::str::from_utf8(&v).unwrap();
                    let want = needs_escape(b).then_some(at);
                    assert_eq!(
                        next_escape(s.as_bytes(), 0),
                        want,
                        "{b:#x} at {at} of {len}"
                    );
                }
            }
        }
        // Multi-byte UTF-8 never needs escaping.
        assert_eq!(next_escape("ééééé☕☕".as_bytes(), 0), None);
        let mut out = String::new();
        push_str(&mut out, "0123456789\"abcdefghij\u{1}é");
        assert_eq!(out, "\"0123456789\\\"abcdefghij\\u0001é\"");
    }
}
