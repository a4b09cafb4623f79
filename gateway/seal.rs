//! Secrets at rest: the optional `[signing] main_key` and the sealed form in which endpoint and
//! tenant signing secrets are stored when it is set.
//!
//! Owns: the key's format (32 bytes, base64), the sealed text (`sealed:v1:<key id>:<base64 of
//! nonce and ciphertext>`, XChaCha20-Poly1305 with a random 24-byte nonce), and telling sealed
//! text from clear. Pure: no storage, no config parsing beyond the key itself.
//! Must not touch: where secrets are stored or read (that is `store`, which seals on write and
//! opens on read), or how they sign (that is `sign`).

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::Digest as _;

const PREFIX: &str = "sealed:v1:";
const NONCE_LEN: usize = 24;

/// The key that seals stored secrets.
#[derive(Clone)]
pub struct MainKey {
    cipher: XChaCha20Poly1305,
    /// The first 8 hex digits of the key's SHA-256: names the key in sealed text and errors
    /// without revealing it.
    id: String,
}

impl std::fmt::Debug for MainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MainKey({})", self.id)
    }
}

/// Why sealed text could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("a stored secret is sealed with main key {0}, but no [signing] main_key is set")]
    NoKey(String),
    #[error("a stored secret is sealed with main key {found}, but [signing] main_key is key {configured}")]
    WrongKey { found: String, configured: String },
    #[error("a stored secret sealed with main key {0} is damaged (it does not authenticate)")]
    Damaged(String),
}

impl MainKey {
    /// A key from its base64 text (32 bytes; `openssl rand -base64 32` makes one).
    pub fn parse(text: &str) -> Result<MainKey, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| "the main key is not valid base64 (make one with `openssl rand -base64 32`)".to_owned())?;
        let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!("the main key must be 32 bytes, not {} (`openssl rand -base64 32`)", b.len())
        })?;
        let id = sha2::Sha256::digest(key).iter().take(4).map(|b| format!("{b:02x}")).collect();
        let cipher = XChaCha20Poly1305::new_from_slice(&key).expect("32 bytes is the key size");
        Ok(MainKey { cipher, id })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `secret`: a fresh random nonce each time, so equal secrets seal differently.
    pub fn seal(&self, secret: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the operating system's random source");
        let sealed =
            self.cipher.encrypt(&XNonce::from(nonce), secret.as_bytes()).expect("sealing a short secret cannot fail");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&sealed);
        format!("{PREFIX}{}:{}", self.id, base64::engine::general_purpose::STANDARD_NO_PAD.encode(blob))
    }

    /// Opens sealed text (clear text is returned as it is).
    pub fn open(&self, stored: &str) -> Result<String, SealError> {
        open(Some(self), stored)
    }
}

/// Whether `stored` is sealed text.
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

/// Opens `stored` with `key`: clear text is returned as it is; sealed text needs the key it was
/// sealed with.
pub fn open(key: Option<&MainKey>, stored: &str) -> Result<String, SealError> {
    let Some(rest) = stored.strip_prefix(PREFIX) else { return Ok(stored.to_owned()) };
    let (id, blob) = rest.split_once(':').unwrap_or((rest, ""));
    let Some(key) = key else { return Err(SealError::NoKey(id.to_owned())) };
    if id != key.id {
        return Err(SealError::WrongKey { found: id.to_owned(), configured: key.id.clone() });
    }
    let damaged = || SealError::Damaged(id.to_owned());
    let blob = base64::engine::general_purpose::STANDARD_NO_PAD.decode(blob).map_err(|_| damaged())?;
    if blob.len() < NONCE_LEN {
        return Err(damaged());
    }
    let (nonce, sealed) = blob.split_at(NONCE_LEN);
    let nonce = XNonce::try_from(nonce).map_err(|_| damaged())?;
    let clear = key.cipher.decrypt(&nonce, sealed).map_err(|_| damaged())?;
    String::from_utf8(clear).map_err(|_| damaged())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const OTHER: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

    #[test]
    fn sealed_secrets_open_with_their_key_only() {
        let key = MainKey::parse(KEY).unwrap();
        let secret = "whsec_c2VjcmV0LXRleHQtb2YtYS10ZW5hbnQ=";
        let a = key.seal(secret);
        let b = key.seal(secret);
        assert!(is_sealed(&a) && a != b, "fresh nonces: {a} / {b}");
        assert!(!a.contains("c2VjcmV0"), "{a}");
        assert_eq!(key.open(&a).unwrap(), secret);
        assert_eq!(open(Some(&key), secret).unwrap(), secret, "clear text passes");
        assert_eq!(open(None, &a), Err(SealError::NoKey(key.id().to_owned())));
        let other = MainKey::parse(OTHER).unwrap();
        assert!(matches!(other.open(&a), Err(SealError::WrongKey { .. })));
        // One flipped character no longer authenticates.
        let mut tampered = a.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(key.open(&String::from_utf8(tampered).unwrap()), Err(SealError::Damaged(key.id().to_owned())));
        assert!(!format!("{key:?}").contains(KEY));
    }

    #[test]
    fn keys_are_32_bytes_of_base64() {
        assert!(MainKey::parse("not base64!").unwrap_err().contains("base64"));
        assert!(MainKey::parse("AAEC").unwrap_err().contains("32 bytes"));
        assert_eq!(MainKey::parse(KEY).unwrap().id().len(), 8);
    }
}
