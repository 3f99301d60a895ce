//! Primitives shared by both SCRAM roles and by stored-secret handling: the RFC 5802 key schedule,
//! nonce generation, SASLprep and a small tokenizer for `attr=value` messages.
//!
//! Everything here is pure; randomness comes from `rand`'s thread-local CSPRNG, which is seeded from
//! the operating system.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use rand::Rng as _;
use sha2::{Digest as _, Sha256};

use super::ScramError;

/// SHA-256 output size, which is also the size of every SCRAM-SHA-256 key and signature.
pub const KEY_LEN: usize = 32;

/// Raw bytes of randomness in a nonce; 18 bytes encode to 24 base64 characters without padding,
/// the same size PostgreSQL and PgBouncer use.
const NONCE_RAW_LEN: usize = 18;

/// Salt size for secrets we derive on the fly from plain-text passwords (PostgreSQL's default).
pub const SALT_LEN: usize = 16;

/// The only mechanism we implement. `-PLUS` needs TLS channel binding, which pgwarden lacks so far.
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// HMAC-SHA-256 over the concatenation of `parts`.
pub fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; KEY_LEN] {
    // HMAC accepts keys of any length (long keys are hashed), so this cannot fail.
    let mut mac = <Hmac<Sha256>>::new_from_slice(key).expect("HMAC accepts any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Plain SHA-256, the `H()` of RFC 5802.
pub fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    Sha256::digest(data).into()
}

/// The keys derived from a password, as RFC 5802 §3 names them.
pub struct DerivedKeys {
    pub client_key: [u8; KEY_LEN],
    pub stored_key: [u8; KEY_LEN],
    pub server_key: [u8; KEY_LEN],
}

/// Runs the expensive part of SCRAM: PBKDF2 over the (already SASLprepped) password, then the
/// cheap HMACs that split the result into client and server halves.
///
/// Zero iterations are treated as one, because PBKDF2 is undefined for zero and a verifier with
/// zero iterations would not round-trip through its text form.
pub fn derive_keys(prepared_password: &[u8], salt: &[u8], iterations: u32) -> DerivedKeys {
    let mut salted = [0u8; KEY_LEN];
    pbkdf2::pbkdf2_hmac::<Sha256>(prepared_password, salt, iterations.max(1), &mut salted);
    let client_key = hmac(&salted, &[b"Client Key"]);
    let server_key = hmac(&salted, &[b"Server Key"]);
    DerivedKeys {
        client_key,
        stored_key: sha256(&client_key),
        server_key,
    }
}

/// Normalizes a password the way PostgreSQL does before hashing it for SCRAM: SASLprep when the
/// input is valid UTF-8 and passes SASLprep, otherwise the raw bytes. PostgreSQL falls back to the
/// raw bytes rather than rejecting, so we must too, or such passwords would never match.
pub fn prepare_password(password: &[u8]) -> Cow<'_, [u8]> {
    match std::str::from_utf8(password) {
        Ok(text) => match stringprep::saslprep(text) {
            Ok(Cow::Borrowed(same)) => Cow::Borrowed(same.as_bytes()),
            Ok(Cow::Owned(prepared)) => Cow::Owned(prepared.into_bytes()),
            Err(_) => Cow::Borrowed(password),
        },
        Err(_) => Cow::Borrowed(password),
    }
}

/// A fresh printable nonce: base64 of random bytes (base64 never contains `,`).
pub fn random_nonce() -> String {
    let mut raw = [0u8; NONCE_RAW_LEN];
    rand::rng().fill_bytes(&mut raw);
    STANDARD.encode(raw)
}

/// A fresh random salt for secrets built from plain-text passwords.
pub fn random_salt() -> Vec<u8> {
    let mut salt = vec![0u8; SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    salt
}

/// A fresh random 32-byte key.
pub fn random_key() -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    rand::rng().fill_bytes(&mut key);
    key
}

pub fn b64_encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Strict (padded, canonical) base64, as PostgreSQL writes it.
pub fn b64_decode(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}

/// Decodes a base64 value that must hold exactly one SCRAM key or signature.
pub fn b64_decode_key(text: &str) -> Option<[u8; KEY_LEN]> {
    b64_decode(text)?.try_into().ok()
}

/// RFC 5802 `printable`: ASCII 0x21..=0x7E except `,`. Nonces must consist of these.
pub fn is_printable(value: &str) -> bool {
    value
        .bytes()
        .all(|b| (0x21..=0x7E).contains(&b) && b != b',')
}

/// Turns a SCRAM message into text. Messages are UTF-8 by RFC 5802, and an embedded NUL would
/// make us disagree with PostgreSQL's C-string view of the same bytes, so both are rejected.
pub fn message_str(data: &[u8]) -> Result<&str, ScramError> {
    let text = std::str::from_utf8(data).map_err(|_| ScramError::Malformed("not valid UTF-8"))?;
    if text.is_empty() {
        return Err(ScramError::Malformed("empty message"));
    }
    if text.contains('\0') {
        return Err(ScramError::Malformed("message contains a NUL byte"));
    }
    Ok(text)
}

/// Splits one `a=value` item into its attribute letter and value.
pub fn split_attr(item: &str) -> Result<(u8, &str), ScramError> {
    let bytes = item.as_bytes();
    match bytes {
        [attr, b'=', ..] if attr.is_ascii_alphabetic() => Ok((*attr, &item[2..])),
        _ => Err(ScramError::Malformed(
            "expected an attribute of the form a=value",
        )),
    }
}

/// Reads the next item of `items`, which must be attribute `attr`, and returns its value.
pub fn expect_attr<'a>(
    items: &mut impl Iterator<Item = &'a str>,
    attr: u8,
    missing: &'static str,
) -> Result<&'a str, ScramError> {
    let item = items.next().ok_or(ScramError::Malformed(missing))?;
    match split_attr(item)? {
        (found, value) if found == attr => Ok(value),
        _ => Err(ScramError::Malformed(missing)),
    }
}

/// Makes text that came from a peer safe to put in a one-line log message: control characters are
/// escaped and the length is bounded so a hostile peer cannot flood our logs.
pub fn sanitize_peer_text(text: &str) -> String {
    const MAX_CHARS: usize = 200;
    let mut out: String = text
        .chars()
        .take(MAX_CHARS)
        .flat_map(char::escape_default)
        .collect();
    if text.chars().count() > MAX_CHARS {
        out.push_str("...");
    }
    out
}

/// XOR of two keys: how a proof hides the client key and how the server recovers it.
pub fn xor(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b.iter())) {
        *o = x ^ y;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_is_printable_and_unique() {
        let a = random_nonce();
        let b = random_nonce();
        assert_eq!(a.len(), 24);
        assert!(is_printable(&a));
        assert_ne!(a, b);
    }

    #[test]
    fn printable_rejects_comma_space_and_non_ascii() {
        assert!(is_printable("abc~!"));
        assert!(!is_printable("a,b"));
        assert!(!is_printable("a b"));
        assert!(!is_printable("é"));
    }

    #[test]
    fn saslprep_maps_soft_hyphen_and_falls_back_on_prohibited() {
        // U+00AD is "mapped to nothing" by SASLprep.
        assert_eq!(&*prepare_password("I\u{AD}X".as_bytes()), b"IX");
        // U+0007 is prohibited: the raw bytes are used instead of failing.
        assert_eq!(&*prepare_password(b"a\x07b"), b"a\x07b");
        // Invalid UTF-8 is also passed through.
        assert_eq!(&*prepare_password(b"\xff\xfe"), b"\xff\xfe");
    }

    #[test]
    fn split_attr_requires_letter_and_equals() {
        assert_eq!(split_attr("r=abc").ok(), Some((b'r', "abc")));
        assert_eq!(split_attr("s=").ok(), Some((b's', "")));
        assert!(split_attr("r").is_err());
        assert!(split_attr("").is_err());
        assert!(split_attr("1=x").is_err());
        assert!(split_attr("rr=x").is_err());
    }

    #[test]
    fn message_str_rejects_bad_input() {
        assert!(message_str(b"").is_err());
        assert!(message_str(b"\xff").is_err());
        assert!(message_str(b"a\0b").is_err());
        assert_eq!(message_str(b"n,,").ok(), Some("n,,"));
    }

    #[test]
    fn sanitize_escapes_and_truncates() {
        assert_eq!(sanitize_peer_text("a\nb"), "a\\nb");
        let long = "x".repeat(500);
        assert_eq!(sanitize_peer_text(&long).len(), 203);
    }

    #[test]
    fn b64_key_requires_exact_length() {
        assert!(b64_decode_key(&b64_encode(&[1u8; 32])).is_some());
        assert!(b64_decode_key(&b64_encode(&[1u8; 31])).is_none());
        assert!(b64_decode_key("not base64!").is_none());
    }
}
