//! The three facts about a certificate that certificate selection and
//! expiry warnings need — its DNS names (subjectAltName `dNSName` entries)
//! and its validity window — read straight from the DER.
//!
//! Why by hand: rustls and webpki do not expose a leaf's name list or its
//! dates, and a full X.509 parser (x509-parser) would add about ten crates
//! for three fields. This reader only walks the outer structure of RFC 5280
//! §4.1 with bounds-checked TLV reads; rustls/webpki still do all the
//! verification that matters (they parse the same certificate when the key
//! is checked against it, and clients verify the chain).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What Portico reads from a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// subjectAltName DNS names, lowercased, in certificate order
    /// (wildcards like `*.example.com` included as written).
    pub dns_names: Vec<String>,
    /// Start of validity, seconds since the Unix epoch (may be negative).
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
}

impl LeafInfo {
    /// `not_after` as a time, for logs.
    pub fn not_after_time(&self) -> SystemTime {
        to_system_time(self.not_after)
    }

    /// `not_before` as a time, for logs.
    pub fn not_before_time(&self) -> SystemTime {
        to_system_time(self.not_before)
    }
}

fn to_system_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// Why a certificate could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed X.509 certificate: {0}")]
pub struct X509Error(&'static str);

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// `[0] EXPLICIT` version.
const VERSION: u8 = 0xa0;
/// `[3] EXPLICIT` extensions.
const EXTENSIONS: u8 = 0xa3;
/// `[2] IMPLICIT IA5String` dNSName inside a GeneralName.
const DNS_NAME: u8 = 0x82;
/// 2.5.29.17, id-ce-subjectAltName.
const SAN_OID: &[u8] = &[0x55, 0x1d, 0x11];

/// Reads the DNS names and validity of a DER certificate.
pub fn parse_leaf(der: &[u8]) -> Result<LeafInfo, X509Error> {
    let mut outer = Der::new(der);
    let cert = outer.expect(SEQUENCE, "certificate is not a SEQUENCE")?;
    if !outer.is_empty() {
        return Err(X509Error("trailing data after the certificate"));
    }
    let mut cert = Der::new(cert);
    let mut tbs = Der::new(cert.expect(SEQUENCE, "tbsCertificate is not a SEQUENCE")?);

    if tbs.peek() == Some(VERSION) {
        tbs.read()?;
    }
    tbs.expect(INTEGER, "serial number missing")?;
    tbs.expect(SEQUENCE, "signature algorithm missing")?;
    tbs.expect(SEQUENCE, "issuer missing")?;
    let mut validity = Der::new(tbs.expect(SEQUENCE, "validity missing")?);
    let not_before = read_time(&mut validity)?;
    let not_after = read_time(&mut validity)?;
    tbs.expect(SEQUENCE, "subject missing")?;
    tbs.expect(SEQUENCE, "subject public key missing")?;

    let mut dns_names = Vec::new();
    // Optional issuerUniqueID [1], subjectUniqueID [2], extensions [3].
    while !tbs.is_empty() {
        let (tag, body) = tbs.read()?;
        if tag != EXTENSIONS {
            continue;
        }
        let mut list = Der::new(Der::new(body).expect(SEQUENCE, "extensions are not a SEQUENCE")?);
        while !list.is_empty() {
            let mut ext = Der::new(list.expect(SEQUENCE, "extension is not a SEQUENCE")?);
            let oid = ext.expect(OID, "extension without an OID")?;
            if ext.peek() == Some(BOOLEAN) {
                ext.read()?;
            }
            let value = ext.expect(OCTET_STRING, "extension without a value")?;
            if oid == SAN_OID {
                read_dns_names(value, &mut dns_names)?;
            }
        }
    }
    Ok(LeafInfo {
        dns_names,
        not_before,
        not_after,
    })
}

fn read_dns_names(value: &[u8], out: &mut Vec<String>) -> Result<(), X509Error> {
    let mut names = Der::new(Der::new(value).expect(SEQUENCE, "subjectAltName is not a SEQUENCE")?);
    while !names.is_empty() {
        let (tag, body) = names.read()?;
        if tag != DNS_NAME {
            // IP addresses, URIs, emails: SNI never carries them.
            continue;
        }
        let name = std::str::from_utf8(body).map_err(|_| X509Error("dNSName is not ASCII"))?;
        if !name.is_ascii() {
            return Err(X509Error("dNSName is not ASCII"));
        }
        out.push(name.to_ascii_lowercase());
    }
    Ok(())
}

fn read_time(d: &mut Der<'_>) -> Result<i64, X509Error> {
    let (tag, body) = d.read()?;
    let text = std::str::from_utf8(body).map_err(|_| X509Error("validity time is not ASCII"))?;
    // RFC 5280 §4.1.2.5: UTCTime YYMMDDHHMMSSZ (years 1950–2049) and
    // GeneralizedTime YYYYMMDDHHMMSSZ, always in UTC with seconds.
    let (year, rest) = match (tag, text.len()) {
        (UTC_TIME, 13) => {
            let yy = digits(&text[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (GENERALIZED_TIME, 15) => (digits(&text[..4])?, &text[4..]),
        _ => {
            return Err(X509Error(
                "validity time is neither UTCTime nor GeneralizedTime in UTC",
            ));
        }
    };
    if !rest.ends_with('Z') {
        return Err(X509Error("validity time is not in UTC"));
    }
    let month = digits(&rest[0..2])?;
    let day = digits(&rest[2..4])?;
    let hour = digits(&rest[4..6])?;
    let min = digits(&rest[6..8])?;
    let sec = digits(&rest[8..10])?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return Err(X509Error("validity time is out of range"));
    }
    let days = days_from_civil(year, month, day);
    Ok(days * 86_400 + hour * 3_600 + min * 60 + sec)
}

fn digits(s: &str) -> Result<i64, X509Error> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(X509Error("validity time has a non-digit"));
    }
    s.parse()
        .map_err(|_| X509Error("validity time has a non-digit"))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A cursor over DER TLVs. Only definite lengths up to 4 bytes (DER forbids
/// indefinite ones; certificates are far below 4 GiB).
struct Der<'a> {
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Der { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// The next TLV's tag and contents.
    fn read(&mut self) -> Result<(u8, &'a [u8]), X509Error> {
        let truncated = X509Error("truncated");
        let (&tag, rest) = self.rest.split_first().ok_or(truncated)?;
        if tag & 0x1f == 0x1f {
            return Err(X509Error("multi-byte tags are not used in certificates"));
        }
        let (&first, mut rest) = rest.split_first().ok_or(truncated)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return Err(X509Error("bad length"));
            }
            let (bytes, after) = rest.split_at(n);
            rest = after;
            bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
        };
        if rest.len() < len {
            return Err(truncated);
        }
        let (body, after) = rest.split_at(len);
        self.rest = after;
        Ok((tag, body))
    }

    fn expect(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], X509Error> {
        match self.read() {
            Ok((t, body)) if t == tag => Ok(body),
            _ => Err(X509Error(what)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[&str], from: (i32, u8, u8), to: (i32, u8, u8)) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        p.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        p.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_names_and_both_time_encodings() {
        // 2049 is a UTCTime, 2050 and later a GeneralizedTime (RFC 5280).
        let der = cert(
            &["Example.COM", "*.example.com", "127.0.0.1"],
            (1999, 12, 31),
            (2050, 1, 2),
        );
        let info = parse_leaf(&der).unwrap();
        assert_eq!(
            info.dns_names,
            ["example.com", "*.example.com"],
            "lowercased; the IP SAN is skipped"
        );
        assert_eq!(info.not_before, 946_598_400);
        assert_eq!(info.not_after, 2_524_694_400);
        let der = cert(&["a.test"], (2020, 2, 29), (2049, 3, 1));
        let info = parse_leaf(&der).unwrap();
        assert_eq!(info.not_before, 1_582_934_400);
        assert_eq!(info.not_after, 2_498_169_600);
    }

    #[test]
    fn no_san_means_no_names() {
        let der = cert(&[], (2000, 1, 1), (2100, 1, 1));
        assert!(parse_leaf(&der).unwrap().dns_names.is_empty());
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let der = cert(&["a.test"], (2000, 1, 1), (2100, 1, 1));
        for cut in 0..der.len() {
            assert!(parse_leaf(&der[..cut]).is_err(), "truncated at {cut}");
        }
        assert!(parse_leaf(b"hello").is_err());
        assert!(parse_leaf(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(parse_leaf(&trailing).is_err());
    }

    #[test]
    fn civil_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }
}
