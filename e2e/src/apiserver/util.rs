//! Small helpers: time stamps, random names, query strings.

use std::collections::BTreeMap;

use rustls::crypto::ring::default_provider;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Now as the apiserver writes timestamps: RFC 3339, UTC, whole seconds.
pub fn now_rfc3339() -> String {
    let now = OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&Rfc3339).unwrap_or_default()
}

/// Now with milliseconds, for the request log.
pub fn now_rfc3339_millis() -> String {
    let now = OffsetDateTime::now_utc();
    let ms = now.nanosecond() / 1_000_000 * 1_000_000;
    let now = now.replace_nanosecond(ms).unwrap_or(now);
    now.format(&Rfc3339).unwrap_or_default()
}

/// `n` random bytes from the system RNG (through ring, which rustls already uses).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    default_provider()
        .secure_random
        .fill(&mut buf)
        .expect("system random number generator");
    buf
}

/// Random lowercase hex of `2 * bytes` characters.
pub fn random_hex(bytes: usize) -> String {
    random_bytes(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A random version-4 UUID, as `metadata.uid`.
pub fn new_uid() -> String {
    let mut b = random_bytes(16);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The 5-character suffix `generateName` gets (same alphabet as the real server).
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    random_bytes(5)
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Percent-decodes a query component (`+` is a space).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a query string; a repeated key keeps its last value.
pub fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_queries() {
        let q = parse_query("labelSelector=app%3Dweb%2Ctier+in+(a)&limit=5&watch");
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        assert_eq!(q["limit"], "5");
        assert_eq!(q["watch"], "");
        assert_eq!(percent_decode("a%2"), "a%2");
    }

    #[test]
    fn uids_look_like_uuids() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(u.as_bytes()[14], b'4');
        assert_ne!(u, new_uid());
        assert!(now_rfc3339().ends_with('Z'));
        assert_eq!(name_suffix().len(), 5);
    }
}
