//! A tiny JSON string writer shared by the access log and Portico's own error
//! bodies: both are built on the hot path, so they append to one buffer
//! instead of going through a serializer.

/// Appends `s` to `out` as a JSON string literal, quotes included.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0..=0x1f | 0x7f => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match escape {
            Some(e) => out.push_str(e),
            None => {
                use std::fmt::Write;
                let _ = write!(out, "\\u{:04x}", b);
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Appends `"key":"value"` (with a leading comma unless `first`).
pub fn push_field(out: &mut String, key: &str, value: &str) {
    if !out.ends_with('{') {
        out.push(',');
    }
    push_str(out, key);
    out.push(':');
    push_str(out, value);
}

/// Appends `"key":"value"` for a value whose `Display` output needs no
/// escaping (timestamps, IP addresses, hex ids): formatted straight into `out`.
pub fn push_display(out: &mut String, key: &str, value: impl std::fmt::Display) {
    use std::fmt::Write;
    if !out.ends_with('{') {
        out.push(',');
    }
    push_str(out, key);
    out.push_str(":\"");
    let _ = write!(out, "{value}");
    out.push('"');
}

/// Appends `"key":number`.
pub fn push_number(out: &mut String, key: &str, value: impl itoa_like::Number) {
    if !out.ends_with('{') {
        out.push(',');
    }
    push_str(out, key);
    out.push(':');
    value.push_to(out);
}

/// Numbers written without going through `format!`.
pub mod itoa_like {
    use std::fmt::Write;

    /// A value that can be written as a JSON number.
    pub trait Number {
        fn push_to(self, out: &mut String);
    }
    impl Number for u64 {
        fn push_to(self, out: &mut String) {
            let _ = write!(out, "{self}");
        }
    }
    impl Number for u16 {
        fn push_to(self, out: &mut String) {
            let _ = write!(out, "{self}");
        }
    }
    impl Number for f64 {
        fn push_to(self, out: &mut String) {
            let _ = write!(out, "{self:.3}");
        }
    }
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
}
