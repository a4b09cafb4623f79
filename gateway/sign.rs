//! Webhook signatures: Attendee's `X-Webhook-Signature` and Standard Webhooks' `webhook-*`.
//!
//! Owns: secret parsing and every HMAC we compute, for signing and for verifying (the `listen`
//! receiver and the tests verify with the same recipes).
//! Must not touch: clocks, I/O or logging. Timestamps come in as arguments, so every signature is
//! a pure function of its inputs and the test vectors pin it down.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// A signing key: the raw bytes behind the base64 text users see. `Debug` never shows the bytes,
/// so a secret cannot reach a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SecretError {
    #[error("is not valid base64")]
    NotBase64,
    #[error("decodes to {0} bytes; at least {MIN_SECRET_BYTES} random bytes are required")]
    TooShort(usize),
}

/// Both recipes use HMAC-SHA256; a key shorter than its output weakens it, so we insist on 32.
pub const MIN_SECRET_BYTES: usize = 32;

impl Secret {
    /// Parses `base64` or `whsec_<base64>` without a length rule (test vectors use short keys).
    pub fn parse_any_length(text: &str) -> Result<Secret, SecretError> {
        let b64 = text.strip_prefix("whsec_").unwrap_or(text);
        B64.decode(b64.trim()).map(Secret).map_err(|_| SecretError::NotBase64)
    }

    /// Parses a configured secret: base64 (optionally `whsec_`-prefixed) of at least 32 bytes.
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let s = Self::parse_any_length(text)?;
        if s.0.len() < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort(s.0.len()));
        }
        Ok(s)
    }

    /// A short, non-reversible name for the secret (the first 8 hex digits of its SHA-256), so
    /// people can tell which secret is in use without it being printed.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(&self.0);
        digest.iter().take(4).map(|b| format!("{b:02x}")).collect::<String>()
    }

    /// A new secret of 32 bytes from the operating system's CSPRNG.
    pub fn generate() -> Secret {
        Secret(random_bytes::<32>().to_vec())
    }

    /// The secret as Standard Webhooks receivers are given it.
    pub fn to_whsec(&self) -> String {
        format!("whsec_{}", B64.encode(&self.0))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length")
    }
}

/// `X-Webhook-Signature`: base64 HMAC-SHA256 of the canonical body, no prefix, no timestamp.
pub fn attendee_signature(secret: &Secret, body: &[u8]) -> String {
    let mut mac = secret.mac();
    mac.update(body);
    B64.encode(mac.finalize().into_bytes())
}

/// One Standard Webhooks signature entry, `v1,<base64>`, over `"{id}.{timestamp}.{body}"`.
pub fn standard_signature(secret: &Secret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = secret.mac();
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// The signature headers of one attempt, in the order they are sent.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedHeaders {
    pub x_webhook_signature: String,
    pub webhook_id: String,
    pub webhook_timestamp: String,
    pub webhook_signature: String,
}

impl SignedHeaders {
    pub fn pairs(&self) -> [(&'static str, &str); 4] {
        [
            ("x-webhook-signature", &self.x_webhook_signature),
            ("webhook-id", &self.webhook_id),
            ("webhook-timestamp", &self.webhook_timestamp),
            ("webhook-signature", &self.webhook_signature),
        ]
    }
}

/// Signs one attempt. `current` signs both recipes; each of `previous` adds a `webhook-signature`
/// entry so receivers still holding an old key keep verifying during a rotation.
///
/// ```
/// use hookgate::sign::{Secret, sign, verify_attendee, verify_standard};
/// let current = Secret::parse("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
/// let body = br#"{"data":{},"idempotency_key":"k","trigger":"t"}"#;
/// let h = sign(&current, &[], "k", 1_700_000_000, body);
/// assert!(verify_attendee(&current, body, &h.x_webhook_signature));
/// assert!(verify_standard(&current, "k", "1700000000", body, &h.webhook_signature));
/// ```
pub fn sign(current: &Secret, previous: &[Secret], msg_id: &str, timestamp: i64, body: &[u8]) -> SignedHeaders {
    let entries: Vec<String> =
        std::iter::once(current).chain(previous).map(|s| standard_signature(s, msg_id, timestamp, body)).collect();
    SignedHeaders {
        x_webhook_signature: attendee_signature(current, body),
        webhook_id: msg_id.to_owned(),
        webhook_timestamp: timestamp.to_string(),
        webhook_signature: entries.join(" "),
    }
}

/// Checks a `webhook-signature` header the way the official verifiers do: any `v1,` entry that
/// matches is enough. The comparison is constant-time through `Mac::verify_slice`.
pub fn verify_standard(secret: &Secret, msg_id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    header.split(' ').any(|entry| {
        let Some(sig) = entry.strip_prefix("v1,") else {
            return false;
        };
        let Ok(sig) = B64.decode(sig) else {
            return false;
        };
        let mut mac = secret.mac();
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(&sig).is_ok()
    })
}

/// Checks an `X-Webhook-Signature` header over the given (canonical) body, in constant time.
pub fn verify_attendee(secret: &Secret, body: &[u8], header: &str) -> bool {
    let Ok(sig) = B64.decode(header.trim()) else {
        return false;
    };
    let mut mac = secret.mac();
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// `N` bytes from the operating system's CSPRNG (secrets, tokens, portal codes).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The OS generator failing is not something to carry on from: no secret is better than a
    // guessable one.
    getrandom::fill(&mut buf).expect("the operating system's random generator works");
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR_SECRET: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn canonical(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/vectors/{name}.canonical", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn attendee_vectors() {
        let secret = Secret::parse(VECTOR_SECRET).unwrap();
        assert_eq!(
            attendee_signature(&secret, &canonical("attendee-a")),
            "TNMtcPtRW6Fk3KQ8x76Jen7fv0tKJiQ5dWbUp57X8rM="
        );
        assert_eq!(
            attendee_signature(&secret, &canonical("attendee-b")),
            "glRtc/ojkKn02HQ/+aISPUGkiWwPoQdqQtlWxh2yF/o="
        );
    }

    #[test]
    fn standard_webhooks_vector() {
        let secret = Secret::parse_any_length("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = canonical("attendee-a");
        let sig = standard_signature(&secret, "msg_2Kx9", 1_700_000_000, &body);
        assert_eq!(sig, "v1,CJY5m6JlsFzG+yAUQbiQDvOoVMsgXRtL7Yv5a0Ig0gk=");
        assert!(verify_standard(&secret, "msg_2Kx9", "1700000000", &body, &sig));
        assert!(!verify_standard(&secret, "msg_2Kx9", "1700000001", &body, &sig));
    }

    #[test]
    fn rotation_signs_with_every_key_and_attendee_with_the_current_one() {
        let current = Secret::parse(VECTOR_SECRET).unwrap();
        let old = Secret::parse(&B64.encode([7u8; 32])).unwrap();
        let h = sign(&current, std::slice::from_ref(&old), "id", 5, b"{}");
        let entries: Vec<&str> = h.webhook_signature.split(' ').collect();
        assert_eq!(entries.len(), 2);
        assert!(verify_standard(&old, "id", "5", b"{}", &h.webhook_signature));
        assert!(verify_standard(&current, "id", "5", b"{}", &h.webhook_signature));
        assert!(verify_attendee(&current, b"{}", &h.x_webhook_signature));
        assert!(!verify_attendee(&old, b"{}", &h.x_webhook_signature));
    }

    #[test]
    fn secrets_are_checked_and_never_printed() {
        assert_eq!(Secret::parse("not base64!"), Err(SecretError::NotBase64));
        assert_eq!(Secret::parse(&B64.encode([1u8; 16])), Err(SecretError::TooShort(16)));
        let s = Secret::parse(&format!("whsec_{VECTOR_SECRET}")).unwrap();
        assert_eq!(s.to_whsec(), format!("whsec_{VECTOR_SECRET}"));
        assert!(!format!("{s:?}").contains("AAEC"));
    }
}
