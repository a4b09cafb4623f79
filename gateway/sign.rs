//! Webhook signatures: Attendee's `X-Webhook-Signature` and Standard Webhooks' `webhook-*`,
//! symmetric (`v1,`: HMAC-SHA256 under a `whsec_` secret) or asymmetric (`v1a,`: Ed25519 under a
//! `whsk_` secret key, verified with its `whpk_` public key).
//!
//! Owns: secret parsing and every signature we compute, for signing and for verifying (the
//! `listen` receiver and the tests verify with the same recipes).
//! Must not touch: clocks, I/O or logging. Timestamps come in as arguments, so every signature is
//! a pure function of its inputs and the test vectors pin it down.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, Verifier as _};
use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// A signing key: the raw bytes behind the base64 text users see, or an Ed25519 key pair.
/// `Debug` never shows the bytes, so a secret cannot reach a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Key);

#[derive(Clone, PartialEq, Eq)]
enum Key {
    /// `whsec_` (or bare base64): HMAC-SHA256, both recipes.
    Hmac(Vec<u8>),
    /// `whsk_`: Ed25519, Standard Webhooks' `v1a` only (Attendee's recipe is HMAC).
    Ed25519(Box<ed25519_dalek::SigningKey>),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Key::Hmac(bytes) => write!(f, "Secret(<{} bytes redacted>)", bytes.len()),
            Key::Ed25519(_) => write!(f, "Secret(<Ed25519 key redacted>)"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SecretError {
    #[error("is not valid base64")]
    NotBase64,
    #[error("decodes to {0} bytes; at least {MIN_SECRET_BYTES} random bytes are required")]
    TooShort(usize),
    #[error("is a whsk_ key of {0} bytes; an Ed25519 secret key is 32 bytes (or 64: the key and its public half)")]
    Ed25519Length(usize),
    #[error("is a whsk_ key whose public half does not match its secret half")]
    Ed25519Mismatch,
    #[error("is a public key (whpk_): Hookgate signs with the secret key (whsk_), receivers verify with whpk_")]
    PublicKey,
}

/// Both recipes use HMAC-SHA256; a key shorter than its output weakens it, so we insist on 32.
pub const MIN_SECRET_BYTES: usize = 32;

impl Secret {
    /// Parses `base64` or `whsec_<base64>` without a length rule (test vectors use short keys),
    /// or a `whsk_<base64>` Ed25519 secret key.
    pub fn parse_any_length(text: &str) -> Result<Secret, SecretError> {
        let text = text.trim();
        if text.starts_with("whpk_") {
            return Err(SecretError::PublicKey);
        }
        if let Some(b64) = text.strip_prefix("whsk_") {
            let bytes = B64.decode(b64).map_err(|_| SecretError::NotBase64)?;
            // The key is its 32-byte seed (RFC 8032); libraries that keep the public half next
            // to it write 64 bytes, which must agree.
            let key = match bytes.len() {
                32 => ed25519_dalek::SigningKey::from_bytes(bytes.as_slice().try_into().expect("32 bytes")),
                64 => ed25519_dalek::SigningKey::from_keypair_bytes(bytes.as_slice().try_into().expect("64 bytes"))
                    .map_err(|_| SecretError::Ed25519Mismatch)?,
                n => return Err(SecretError::Ed25519Length(n)),
            };
            return Ok(Secret(Key::Ed25519(Box::new(key))));
        }
        let b64 = text.strip_prefix("whsec_").unwrap_or(text);
        B64.decode(b64).map(|b| Secret(Key::Hmac(b))).map_err(|_| SecretError::NotBase64)
    }

    /// Parses a configured secret: base64 (optionally `whsec_`-prefixed) of at least 32 bytes,
    /// or a `whsk_` Ed25519 secret key.
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let s = Self::parse_any_length(text)?;
        if let Key::Hmac(bytes) = &s.0
            && bytes.len() < MIN_SECRET_BYTES
        {
            return Err(SecretError::TooShort(bytes.len()));
        }
        Ok(s)
    }

    /// A short, non-reversible name for the secret (the first 8 hex digits of the SHA-256 of its
    /// bytes; of its public key for Ed25519, so a receiver holding only `whpk_` can compute it),
    /// so people can tell which secret is in use without it being printed.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        let digest = match &self.0 {
            Key::Hmac(bytes) => sha2::Sha256::digest(bytes),
            Key::Ed25519(key) => sha2::Sha256::digest(key.verifying_key().to_bytes()),
        };
        digest.iter().take(4).map(|b| format!("{b:02x}")).collect::<String>()
    }

    /// A new HMAC secret of 32 bytes from the operating system's CSPRNG.
    pub fn generate() -> Secret {
        Secret(Key::Hmac(random_bytes::<32>().to_vec()))
    }

    /// A new Ed25519 secret key, its seed from the operating system's CSPRNG.
    pub fn generate_ed25519() -> Secret {
        Secret(Key::Ed25519(Box::new(ed25519_dalek::SigningKey::from_bytes(&random_bytes::<32>()))))
    }

    /// The secret as Standard Webhooks producers write it: `whsec_…`, or `whsk_…` (the 32-byte
    /// seed) for an Ed25519 key.
    pub fn to_whsec(&self) -> String {
        match &self.0 {
            Key::Hmac(bytes) => format!("whsec_{}", B64.encode(bytes)),
            Key::Ed25519(key) => format!("whsk_{}", B64.encode(key.to_bytes())),
        }
    }

    /// What receivers verify `v1a` signatures with, `whpk_…`; `None` for an HMAC secret, which
    /// has no public half.
    pub fn public_key(&self) -> Option<String> {
        match &self.0 {
            Key::Hmac(_) => None,
            Key::Ed25519(key) => Some(format!("whpk_{}", B64.encode(key.verifying_key().to_bytes()))),
        }
    }

    fn mac(&self) -> Option<HmacSha256> {
        match &self.0 {
            // HMAC accepts keys of any length, so this cannot fail.
            Key::Hmac(bytes) => Some(HmacSha256::new_from_slice(bytes).expect("HMAC takes any key length")),
            Key::Ed25519(_) => None,
        }
    }
}

/// `X-Webhook-Signature`: base64 HMAC-SHA256 of the canonical body, no prefix, no timestamp.
/// `None` for an Ed25519 key: Attendee's recipe is HMAC only.
pub fn attendee_signature(secret: &Secret, body: &[u8]) -> Option<String> {
    let mut mac = secret.mac()?;
    mac.update(body);
    Some(B64.encode(mac.finalize().into_bytes()))
}

/// The bytes a Standard Webhooks signature covers: `"{id}.{timestamp}.{body}"`.
fn signed_content(msg_id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(msg_id.len() + timestamp.len() + body.len() + 2);
    content.extend_from_slice(msg_id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

/// One Standard Webhooks signature entry over `"{id}.{timestamp}.{body}"`: `v1,<base64>` for an
/// HMAC secret, `v1a,<base64>` (Ed25519) for a `whsk_` key.
pub fn standard_signature(secret: &Secret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    match &secret.0 {
        Key::Hmac(_) => {
            let mut mac = secret.mac().expect("an HMAC key");
            mac.update(msg_id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
        }
        Key::Ed25519(key) => {
            let signature = key.sign(&signed_content(msg_id, &timestamp.to_string(), body));
            format!("v1a,{}", B64.encode(signature.to_bytes()))
        }
    }
}

/// Which signature headers an attempt carries (`[delivery] signature_headers`): Attendee's
/// `X-Webhook-Signature`, Standard Webhooks' `webhook-id`/`-timestamp`/`-signature`, and the same
/// three as Svix names them (`svix-id`/`-timestamp`/`-signature`), for receivers that verify with
/// Svix's libraries. The Standard Webhooks and Svix sets carry the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderSets {
    pub attendee: bool,
    pub webhook: bool,
    pub svix: bool,
}

impl Default for HeaderSets {
    fn default() -> HeaderSets {
        HeaderSets { attendee: true, webhook: true, svix: false }
    }
}

impl HeaderSets {
    /// The names of the sets, as the config file spells them.
    pub const NAMES: [&'static str; 3] = ["attendee", "webhook", "svix"];

    /// Reads a list of set names: at least one, each known, none twice.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<HeaderSets, String> {
        let mut out = HeaderSets { attendee: false, webhook: false, svix: false };
        for name in names {
            let slot = match name {
                "attendee" => &mut out.attendee,
                "webhook" => &mut out.webhook,
                "svix" => &mut out.svix,
                other => {
                    return Err(format!("unknown header set {other:?}: use {}", HeaderSets::NAMES.join(", ")));
                }
            };
            if std::mem::replace(slot, true) {
                return Err(format!("{name:?} is listed twice"));
            }
        }
        if out == (HeaderSets { attendee: false, webhook: false, svix: false }) {
            return Err(format!("name at least one of {}", HeaderSets::NAMES.join(", ")));
        }
        Ok(out)
    }
}

/// The signature headers of one attempt, in the order they are sent.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedHeaders {
    /// `None` when the current key is Ed25519: Attendee's recipe is HMAC only.
    pub x_webhook_signature: Option<String>,
    pub webhook_id: String,
    pub webhook_timestamp: String,
    pub webhook_signature: String,
}

impl SignedHeaders {
    /// The default sets' headers: Attendee's and Standard Webhooks'.
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        self.pairs_for(HeaderSets::default())
    }

    /// The headers of the chosen sets. Attendee's is absent for an Ed25519 key (HMAC only).
    pub fn pairs_for(&self, sets: HeaderSets) -> Vec<(&'static str, &str)> {
        let mut pairs = Vec::with_capacity(7);
        if let (true, Some(attendee)) = (sets.attendee, &self.x_webhook_signature) {
            pairs.push(("x-webhook-signature", attendee.as_str()));
        }
        let standard = [self.webhook_id.as_str(), self.webhook_timestamp.as_str(), self.webhook_signature.as_str()];
        if sets.webhook {
            pairs.extend(["webhook-id", "webhook-timestamp", "webhook-signature"].into_iter().zip(standard));
        }
        if sets.svix {
            pairs.extend(["svix-id", "svix-timestamp", "svix-signature"].into_iter().zip(standard));
        }
        pairs
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
/// assert!(verify_attendee(&current, body, h.x_webhook_signature.as_deref().unwrap()));
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

/// Checks a `webhook-signature` header the way the official verifiers do: any entry of the
/// secret's kind that matches is enough (`v1,` for HMAC, compared in constant time through
/// `Mac::verify_slice`; `v1a,` for Ed25519, checked with the key's public half).
pub fn verify_standard(secret: &Secret, msg_id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let content = signed_content(msg_id, timestamp, body);
    header.split(' ').any(|entry| match &secret.0 {
        Key::Hmac(_) => {
            let Some(sig) = entry.strip_prefix("v1,").and_then(|s| B64.decode(s).ok()) else {
                return false;
            };
            let mut mac = secret.mac().expect("an HMAC key");
            mac.update(&content);
            mac.verify_slice(&sig).is_ok()
        }
        Key::Ed25519(key) => {
            let Some(sig) = entry.strip_prefix("v1a,").and_then(|s| B64.decode(s).ok()) else {
                return false;
            };
            let Ok(sig) = ed25519_dalek::Signature::from_slice(&sig) else {
                return false;
            };
            key.verifying_key().verify(&content, &sig).is_ok()
        }
    })
}

/// Checks an `X-Webhook-Signature` header over the given (canonical) body, in constant time.
/// Always `false` for an Ed25519 key, which never makes one.
pub fn verify_attendee(secret: &Secret, body: &[u8], header: &str) -> bool {
    let Ok(sig) = B64.decode(header.trim()) else {
        return false;
    };
    let Some(mut mac) = secret.mac() else {
        return false;
    };
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
            attendee_signature(&secret, &canonical("attendee-a")).unwrap(),
            "TNMtcPtRW6Fk3KQ8x76Jen7fv0tKJiQ5dWbUp57X8rM="
        );
        assert_eq!(
            attendee_signature(&secret, &canonical("attendee-b")).unwrap(),
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
        let attendee = h.x_webhook_signature.as_deref().unwrap();
        assert!(verify_attendee(&current, b"{}", attendee));
        assert!(!verify_attendee(&old, b"{}", attendee));
    }

    #[test]
    fn secrets_are_checked_and_never_printed() {
        assert_eq!(Secret::parse("not base64!"), Err(SecretError::NotBase64));
        assert_eq!(Secret::parse(&B64.encode([1u8; 16])), Err(SecretError::TooShort(16)));
        let s = Secret::parse(&format!("whsec_{VECTOR_SECRET}")).unwrap();
        assert_eq!(s.to_whsec(), format!("whsec_{VECTOR_SECRET}"));
        assert!(!format!("{s:?}").contains("AAEC"));
    }

    /// Ed25519 (`v1a`): RFC 8032's first test vector pins the key, the public half and the
    /// signature bytes; a switch from HMAC signs with both kinds; no Attendee header is made.
    #[test]
    fn ed25519_signs_v1a() {
        // RFC 8032, section 7.1, TEST 1: secret key and public key.
        let seed = hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
        let public = hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
        let key = Secret::parse(&format!("whsk_{}", B64.encode(&seed))).unwrap();
        assert_eq!(key.public_key().unwrap(), format!("whpk_{}", B64.encode(&public)));
        assert_eq!(key.to_whsec(), format!("whsk_{}", B64.encode(&seed)));
        // The 64-byte form (seed, then public key) is the same key; a wrong public half is refused.
        let both = [seed.clone(), public.clone()].concat();
        assert_eq!(Secret::parse(&format!("whsk_{}", B64.encode(&both))).unwrap(), key);
        let wrong = [seed.clone(), vec![0; 32]].concat();
        assert_eq!(Secret::parse(&format!("whsk_{}", B64.encode(&wrong))), Err(SecretError::Ed25519Mismatch));
        assert_eq!(Secret::parse(&format!("whsk_{}", B64.encode([1u8; 16]))), Err(SecretError::Ed25519Length(16)));
        assert_eq!(Secret::parse(&format!("whpk_{}", B64.encode(&public))), Err(SecretError::PublicKey));

        // RFC 8032 TEST 1 signs the empty message; with an empty id, timestamp and body the
        // signed content is "..", so check the recipe against an independent verifier instead.
        let sig = standard_signature(&key, "msg_1", 1_700_000_000, b"{}");
        let raw = B64.decode(sig.strip_prefix("v1a,").unwrap()).unwrap();
        let verifying = ed25519_dalek::VerifyingKey::from_bytes(public.as_slice().try_into().unwrap()).unwrap();
        let signature = ed25519_dalek::Signature::from_slice(&raw).unwrap();
        assert!(verifying.verify_strict(b"msg_1.1700000000.{}", &signature).is_ok());
        assert!(verify_standard(&key, "msg_1", "1700000000", b"{}", &sig));
        assert!(!verify_standard(&key, "msg_1", "1700000001", b"{}", &sig));

        // Switching from HMAC: the new Ed25519 key and the old secret both sign.
        let old = Secret::parse(VECTOR_SECRET).unwrap();
        let h = sign(&key, std::slice::from_ref(&old), "id", 5, b"{}");
        assert!(h.webhook_signature.starts_with("v1a,") && h.webhook_signature.contains(" v1,"), "{h:?}");
        assert!(verify_standard(&key, "id", "5", b"{}", &h.webhook_signature));
        assert!(verify_standard(&old, "id", "5", b"{}", &h.webhook_signature));
        assert_eq!(h.x_webhook_signature, None);
        assert!(!h.pairs().iter().any(|(name, _)| *name == "x-webhook-signature"));
        assert!(!format!("{key:?}").contains(&B64.encode(&seed)));
        let fresh = Secret::generate_ed25519();
        assert_ne!(fresh, key);
        assert!(fresh.to_whsec().starts_with("whsk_") && fresh.public_key().unwrap().starts_with("whpk_"));
    }

    /// The header sets: names are checked, and each set carries its headers with the same
    /// values (Svix's are Standard Webhooks' under other names).
    #[test]
    fn header_sets_choose_the_headers_sent() {
        assert_eq!(HeaderSets::parse(["webhook", "attendee"]), Ok(HeaderSets::default()));
        assert!(HeaderSets::parse(["svx"]).unwrap_err().contains("unknown header set \"svx\""));
        assert!(HeaderSets::parse(["svix", "svix"]).unwrap_err().contains("twice"));
        assert!(HeaderSets::parse([]).unwrap_err().contains("at least one"));
        let secret = Secret::parse(VECTOR_SECRET).unwrap();
        let h = sign(&secret, &[], "msg_1", 1_700_000_000, b"{}");
        let names = |sets| h.pairs_for(sets).iter().map(|(n, _)| *n).collect::<Vec<_>>();
        let svix = HeaderSets::parse(["svix"]).unwrap();
        assert_eq!(names(svix), ["svix-id", "svix-timestamp", "svix-signature"]);
        assert_eq!(names(HeaderSets::default()).len(), 4);
        assert_eq!(names(HeaderSets::parse(["attendee", "webhook", "svix"]).unwrap()).len(), 7);
        let pairs = h.pairs_for(svix);
        assert_eq!(pairs[2].1, h.webhook_signature);
        assert!(verify_standard(&secret, pairs[0].1, pairs[1].1, b"{}", pairs[2].1));
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
    }
}
