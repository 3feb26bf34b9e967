//! `x-request-id`: keep a well-formed incoming id, otherwise mint a UUID.
//! Fail-closed: an invalid id is replaced, never forwarded.

use http::header::{Entry, HeaderName};
use http::{HeaderMap, HeaderValue};

use super::headers::never_indexed;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id we keep; longer ones are replaced.
const MAX_LEN: usize = 128;

/// Returns the request's id, replacing the header when it is absent, repeated
/// or malformed. The returned value is what goes upstream, onto the response
/// and into every log line about the request. One lookup in the map,
/// whichever case it is.
pub fn assign(headers: &mut HeaderMap) -> HeaderValue {
    match headers.entry(&X_REQUEST_ID) {
        Entry::Occupied(mut kept)
            if kept.iter().count() == 1 && is_valid(kept.get().as_bytes()) =>
        {
            let id = kept.get_mut();
            never_indexed(id);
            id.clone()
        }
        // Repeated or malformed: replaced, every line of it.
        Entry::Occupied(mut bad) => {
            let id = generate();
            bad.insert(id.clone());
            id
        }
        Entry::Vacant(none) => none.insert(generate()).clone(),
    }
}

/// 1–128 printable ASCII characters without spaces, quotes or backslashes.
pub fn is_valid(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .iter()
            .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\'' && b != b'\\')
}

/// A fresh random (v4) UUID in its hyphenated form.
pub fn generate() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    // The id is cloned for the access log, the in-flight list and the
    // response: owned by one shared allocation, each clone is a reference
    // count (a value copied from a slice would allocate again when first
    // cloned).
    let mut id = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(buf))
        .expect("a UUID is a valid header value");
    never_indexed(&mut id);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(X_REQUEST_ID.clone(), HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn ids_are_marked_never_indexed_whether_kept_or_minted() {
        // Minted: no id, or an invalid one.
        for values in [&[][..], &[&b"bad id"[..]][..]] {
            let mut h = with(values);
            let id = assign(&mut h);
            assert!(id.is_sensitive(), "the minted id");
            assert!(
                h.get(&X_REQUEST_ID).unwrap().is_sensitive(),
                "the forwarded id"
            );
        }
        // Kept: the client's own, as it came, and marked in the map that
        // goes upstream.
        let mut h = with(&[b"abc-123"]);
        let id = assign(&mut h);
        assert_eq!(id.as_bytes(), b"abc-123");
        assert!(id.is_sensitive());
        assert!(h.get(&X_REQUEST_ID).unwrap().is_sensitive());
        assert_eq!(h.get_all(&X_REQUEST_ID).iter().count(), 1);
    }

    #[test]
    fn keeps_valid_ids() {
        for id in [
            &b"abc"[..],
            b"0f8fad5b-d9cb-469f-a165-70867728950e",
            b"a:b/c.d_e~f",
            &[b'x'; 128][..],
        ] {
            let mut h = with(&[id]);
            assert_eq!(assign(&mut h).as_bytes(), id);
            assert_eq!(h.get(&X_REQUEST_ID).unwrap().as_bytes(), id);
        }
    }

    #[test]
    fn replaces_invalid_or_missing_ids() {
        let too_long = [b'x'; 129];
        let cases: Vec<Vec<&[u8]>> = vec![
            vec![],
            vec![b""],
            vec![b"has space"],
            vec![b"quote\"d"],
            vec![b"single'quote"],
            vec![b"back\\slash"],
            vec![b"tab\there"],
            vec![&too_long[..]],
            vec![b"caf\xc3\xa9"],
            vec![b"one", b"two"],
        ];
        for values in cases {
            let mut h = with(&values);
            let id = assign(&mut h);
            assert_eq!(id.len(), 36, "expected a UUID for {values:?}");
            assert!(uuid::Uuid::parse_str(id.to_str().unwrap()).is_ok());
            let all: Vec<_> = h.get_all(&X_REQUEST_ID).iter().collect();
            assert_eq!(all, vec![&id], "the header holds only the new id");
        }
    }
}
