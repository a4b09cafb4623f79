//! Tenants: many customers in one gateway, each with its own signing secret, endpoints,
//! delivery log, scoped tokens, portal links and quotas.
//!
//! Owns: the live set of tenants (the implicit `default` one, `[[tenants]]` from the file, and
//! those created through the API), which secrets sign a tenant's deliveries (rotation overlap
//! included), the ingest quota buckets, the tenant-scoped tokens (kept as SHA-256 only) and the
//! one-time portal codes.
//! Must not touch: storage or HTTP. The API writes records through `store` and then updates
//! this registry; dispatch asks it for signing keys; ingest for the quota.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::config::{Config, TenantLimits, Token};
use crate::endpoint::RateLimit;
use crate::health::Bucket;
use crate::model::DEFAULT_TENANT;
use crate::model::{StoredSecret, TenantRecord, TokenRecord};
use crate::sign::Secret;

/// How long a portal code may wait for its first use, unless the request says otherwise.
pub const PORTAL_CODE_TTL: Duration = Duration::from_secs(600);
/// The longest a portal code may be asked to live.
pub const PORTAL_CODE_MAX: Duration = Duration::from_secs(7 * 86_400);
/// How long the session a portal code is exchanged for lasts.
pub const PORTAL_SESSION: Duration = Duration::from_secs(3600);

/// Where a tenant was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantOrigin {
    /// `default`, or `[[tenants]]`: read-only through the API.
    Config,
    Api {
        created_at_ms: u64,
    },
}

/// One signing secret of a tenant.
#[derive(Debug, Clone)]
pub struct Key {
    pub secret: Secret,
    pub created_at_ms: u64,
    /// Replaced by a newer secret at this time; it signs until the rotation overlap ends.
    pub retired_at_ms: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub name: Option<String>,
    /// JSON text of an object.
    pub metadata: Option<String>,
    /// Newest first.
    pub keys: Vec<Key>,
    /// Older secrets from the file (`previous_secrets`), which sign without an end.
    pub previous: Vec<Secret>,
    pub limits: TenantLimits,
    pub origin: TenantOrigin,
}

impl Tenant {
    /// The secret that signs now, and the others that sign next to it (`webhook-signature`
    /// carries one signature per secret).
    pub fn signing_keys(&self, now_ms: u64, overlap: Duration) -> (&Secret, Vec<Secret>) {
        let live: Vec<&Key> = self
            .keys
            .iter()
            .filter(|k| k.retired_at_ms.is_none_or(|at| now_ms < at + overlap.as_millis() as u64))
            .collect();
        let current = live.iter().find(|k| k.retired_at_ms.is_none()).or(live.first()).expect("a tenant has a key");
        let mut others: Vec<Secret> =
            live.iter().filter(|k| !std::ptr::eq(**k, *current)).map(|k| k.secret.clone()).collect();
        others.extend(self.previous.iter().cloned());
        (&current.secret, others)
    }

    /// The `whpk_` public key of the secret that signs now, if it is an Ed25519 key.
    pub fn public_key(&self) -> Option<String> {
        self.keys.iter().find(|k| k.retired_at_ms.is_none()).and_then(|k| k.secret.public_key())
    }

    /// The fingerprint of the secret that signs now.
    pub fn fingerprint(&self) -> String {
        self.keys.iter().find(|k| k.retired_at_ms.is_none()).map_or_else(String::new, |k| k.secret.fingerprint())
    }

    fn from_record(r: &TenantRecord, defaults: TenantLimits) -> Result<Tenant, String> {
        let keys = r
            .secrets
            .iter()
            .map(|s| {
                Secret::parse(&s.secret)
                    .map(|secret| Key { secret, created_at_ms: s.created_at_ms, retired_at_ms: s.retired_at_ms })
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err("no secret".into());
        }
        Ok(Tenant {
            id: r.id.clone(),
            name: r.name.clone(),
            metadata: r.metadata.clone(),
            keys,
            previous: Vec::new(),
            limits: TenantLimits {
                max_endpoints: r.max_endpoints.unwrap_or(defaults.max_endpoints),
                max_events_per_second: r.max_events_per_second.or(defaults.max_events_per_second),
            },
            origin: TenantOrigin::Api { created_at_ms: r.created_at_ms },
        })
    }
}

/// A new secret for a tenant record: `whsec_` + base64 of 32 random bytes.
pub fn new_secret(now_ms: u64, ed25519: bool) -> StoredSecret {
    let secret = if ed25519 { Secret::generate_ed25519() } else { Secret::generate() };
    StoredSecret { secret: secret.to_whsec(), created_at_ms: now_ms, retired_at_ms: None }
}

/// Rotates a record's secret: the current one retires now, a new one signs from now on (an
/// Ed25519 key when `ed25519` says so, else of the current secret's kind). Secrets retired
/// longer ago than `overlap` are dropped. Returns the new secret's text.
pub fn rotate(record: &mut TenantRecord, now_ms: u64, overlap: Duration, ed25519: Option<bool>) -> String {
    let current_is_ed25519 =
        record.secrets.iter().find(|s| s.retired_at_ms.is_none()).is_some_and(|s| s.secret.starts_with("whsk_"));
    let ed25519 = ed25519.unwrap_or(current_is_ed25519);
    for s in &mut record.secrets {
        s.retired_at_ms.get_or_insert(now_ms);
    }
    record.secrets.retain(|s| s.retired_at_ms.is_some_and(|at| now_ms < at + overlap.as_millis() as u64));
    let fresh = new_secret(now_ms, ed25519);
    let text = fresh.secret.clone();
    record.secrets.insert(0, fresh);
    text
}

/// The live tenants, their ingest buckets, tokens and portal codes.
pub struct Tenants {
    /// `[tenants_defaults]` and `[signing] rotation_overlap`; swapped by a config reload.
    settings: RwLock<(TenantLimits, Duration)>,
    tenants: RwLock<HashMap<String, Arc<Tenant>>>,
    /// API tenants' stored records, for PATCH and rotation.
    records: RwLock<HashMap<String, TenantRecord>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// Token hash → record.
    tokens: RwLock<HashMap<[u8; 32], TokenRecord>>,
    /// Portal code hash → (tenant, expiry).
    codes: Mutex<HashMap<[u8; 32], (String, u64)>>,
    /// Held by an API create from its check that the id is free until the tenant is stored and
    /// live, so that two concurrent creates of one id cannot both succeed (the second would
    /// replace the secret the first was just shown).
    pub creating: tokio::sync::Mutex<()>,
}

/// A token or code's digest: what is stored and compared.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(out)
}

/// A new bearer token or code: a prefix and 32 random bytes, base64url.
fn new_token(prefix: &str) -> String {
    let bytes = crate::sign::random_bytes::<32>();
    format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Why a tenant token does not open a route.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenError {
    Unknown,
    Expired,
}

impl Tenants {
    /// The default tenant (from `[signing]`), the file's `[[tenants]]`, then the stored ones.
    pub fn new(config: &Config, records: Vec<TenantRecord>, tokens: Vec<TokenRecord>) -> Tenants {
        let mut tenants = HashMap::new();
        let default = Tenant {
            id: DEFAULT_TENANT.into(),
            name: None,
            metadata: None,
            keys: vec![Key { secret: config.signing.secret.clone(), created_at_ms: 0, retired_at_ms: None }],
            previous: config.signing.previous_secrets.clone(),
            limits: TenantLimits { max_endpoints: usize::MAX, max_events_per_second: None },
            origin: TenantOrigin::Config,
        };
        tenants.insert(DEFAULT_TENANT.to_owned(), Arc::new(default));
        for t in &config.tenants {
            let tenant = Tenant {
                id: t.id.clone(),
                name: t.name.clone(),
                metadata: t.metadata.clone(),
                keys: vec![Key { secret: t.secret.clone(), created_at_ms: 0, retired_at_ms: None }],
                previous: t.previous_secrets.clone(),
                limits: t.limits,
                origin: TenantOrigin::Config,
            };
            tenants.insert(t.id.clone(), Arc::new(tenant));
        }
        let mut kept = HashMap::new();
        for r in records {
            match Tenant::from_record(&r, config.tenant_defaults) {
                Ok(t) if !tenants.contains_key(&t.id) => {
                    tenants.insert(t.id.clone(), Arc::new(t));
                    kept.insert(r.id.clone(), r);
                }
                Ok(t) => tracing::warn!(tenant = %t.id, "stored tenant shadows one from the file; ignored"),
                Err(e) => tracing::warn!(tenant = %r.id, error = %e, "stored tenant is invalid; ignored"),
            }
        }
        // A token whose tenant is not here opens nothing, and must not open a tenant added
        // later under the same id.
        let tokens = tokens
            .into_iter()
            .filter(|t| tenants.contains_key(&t.tenant))
            .filter_map(|t| Some((unhex(&t.hash)?, t)))
            .collect();
        Tenants {
            settings: RwLock::new((config.tenant_defaults, config.signing.rotation_overlap)),
            tenants: RwLock::new(tenants),
            records: RwLock::new(kept),
            buckets: Mutex::default(),
            tokens: RwLock::new(tokens),
            codes: Mutex::default(),
            creating: tokio::sync::Mutex::new(()),
        }
    }

    pub fn overlap(&self) -> Duration {
        self.settings.read().expect("tenants lock").1
    }

    pub fn defaults(&self) -> TenantLimits {
        self.settings.read().expect("tenants lock").0
    }

    /// Applies a reloaded file: the default tenant's keys (`[signing]`), the file's
    /// `[[tenants]]` (added, changed, removed), the defaults and the rotation overlap. Tenants
    /// created through the API are untouched.
    ///
    /// A tenant the file no longer has is gone at once, with its credentials: returns the ids
    /// of its tokens (revoked here; the caller deletes them from the store) so that a tenant
    /// added again later under the same id does not inherit them.
    pub fn apply_config(&self, config: &Config) -> Vec<String> {
        let fresh = Tenants::new(config, Vec::new(), Vec::new());
        let from_file = fresh.tenants.into_inner().expect("tenants lock");
        let removed: Vec<String> = {
            let mut tenants = self.tenants.write().expect("tenants lock");
            let before: Vec<String> =
                tenants.values().filter(|t| t.origin == TenantOrigin::Config).map(|t| t.id.clone()).collect();
            tenants.retain(|_, t| t.origin != TenantOrigin::Config);
            for (id, t) in from_file {
                if tenants.contains_key(&id) {
                    tracing::warn!(tenant = %id, "a tenant from the file shadows a stored one; the file's applies");
                }
                tenants.insert(id, t);
            }
            before.into_iter().filter(|id| !tenants.contains_key(id)).collect()
        };
        *self.settings.write().expect("tenants lock") = (config.tenant_defaults, config.signing.rotation_overlap);
        removed.iter().flat_map(|id| self.revoke_credentials(id)).collect()
    }

    /// Revokes every token and unredeemed portal code of `tenant`; returns the tokens' ids.
    fn revoke_credentials(&self, tenant: &str) -> Vec<String> {
        self.codes.lock().expect("tenants lock").retain(|_, (t, _)| t != tenant);
        let mut tokens = self.tokens.write().expect("tenants lock");
        let ids = tokens.values().filter(|t| t.tenant == tenant).map(|t| t.id.clone()).collect();
        tokens.retain(|_, t| t.tenant != tenant);
        ids
    }

    /// Replaces the API tenants and every token with what is stored (another node changed
    /// them). Tenants from the file stay; a stored one they shadow is ignored, as at start.
    pub fn replace_stored(&self, records: Vec<TenantRecord>, tokens: Vec<TokenRecord>) {
        let defaults = self.defaults();
        let mut tenants = self.tenants.write().expect("tenants lock");
        tenants.retain(|_, t| t.origin == TenantOrigin::Config);
        let mut kept = HashMap::new();
        for r in records {
            match Tenant::from_record(&r, defaults) {
                Ok(t) if !tenants.contains_key(&t.id) => {
                    tenants.insert(t.id.clone(), Arc::new(t));
                    kept.insert(r.id.clone(), r);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(tenant = %r.id, error = %e, "stored tenant is invalid; ignored"),
            }
        }
        *self.records.write().expect("tenants lock") = kept;
        *self.tokens.write().expect("tenants lock") = tokens
            .into_iter()
            .filter(|t| tenants.contains_key(&t.tenant))
            .filter_map(|t| Some((unhex(&t.hash)?, t)))
            .collect();
    }

    pub fn get(&self, id: &str) -> Option<Arc<Tenant>> {
        self.tenants.read().expect("tenants lock").get(id).cloned()
    }

    /// Every tenant, by id.
    pub fn list(&self) -> Vec<Arc<Tenant>> {
        let mut all: Vec<_> = self.tenants.read().expect("tenants lock").values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    pub fn record(&self, id: &str) -> Option<TenantRecord> {
        self.records.read().expect("tenants lock").get(id).cloned()
    }

    /// Adds or replaces an API tenant from its (already stored) record.
    pub fn put(&self, record: TenantRecord) -> Result<Arc<Tenant>, String> {
        let t = Arc::new(Tenant::from_record(&record, self.defaults())?);
        self.tenants.write().expect("tenants lock").insert(t.id.clone(), t.clone());
        self.records.write().expect("tenants lock").insert(record.id.clone(), record);
        self.buckets.lock().expect("tenants lock").remove(&t.id);
        Ok(t)
    }

    /// Removes a tenant and revokes its tokens and portal codes at once (the store deletes the
    /// stored tokens in the same operation as the tenant).
    pub fn remove(&self, id: &str) {
        self.tenants.write().expect("tenants lock").remove(id);
        self.records.write().expect("tenants lock").remove(id);
        self.revoke_credentials(id);
    }

    /// The secrets that sign a delivery of `tenant` now; `None` when the tenant is gone. Never
    /// another tenant's (the default's `[signing]` secret is trusted by other receivers).
    pub fn signing_keys(&self, tenant: &str, now_ms: u64) -> Option<(Secret, Vec<Secret>)> {
        let t = self.get(tenant)?;
        let (current, others) = t.signing_keys(now_ms, self.overlap());
        Some((current.clone(), others))
    }

    /// Takes one event from the tenant's ingest quota, or says how long until one is there.
    pub fn admit_event(&self, tenant: &Tenant, now_ms: u64) -> Result<(), Duration> {
        let Some(rate) = tenant.limits.max_events_per_second else { return Ok(()) };
        let limit = RateLimit { count: rate, per: crate::endpoint::RatePer::Second };
        let mut buckets = self.buckets.lock().expect("tenants lock");
        buckets.entry(tenant.id.clone()).or_insert_with(|| Bucket::new(limit, now_ms)).take(now_ms)
    }

    /// Makes a token for `tenant`; returns the token (shown once) and the record to store.
    pub fn issue_token(
        &self,
        tenant: &str,
        now_ms: u64,
        expires_at_ms: Option<u64>,
        portal: bool,
    ) -> (String, TokenRecord) {
        let token = new_token("hgt_");
        let record = TokenRecord {
            id: format!("tok_{}", uuid::Uuid::now_v7().simple()),
            tenant: tenant.to_owned(),
            hash: hex(&digest(&token)),
            created_at_ms: now_ms,
            expires_at_ms,
            portal,
        };
        (token, record)
    }

    /// Makes a stored token usable.
    pub fn add_token(&self, record: TokenRecord) {
        if let Some(hash) = unhex(&record.hash) {
            self.tokens.write().expect("tenants lock").insert(hash, record);
        }
    }

    /// The tenant a presented token opens, if any.
    pub fn check_token(&self, token: &str, now_ms: u64) -> Result<TokenRecord, TokenError> {
        let tokens = self.tokens.read().expect("tenants lock");
        let t = tokens.get(&digest(token)).ok_or(TokenError::Unknown)?;
        if t.expires_at_ms.is_some_and(|at| now_ms >= at) {
            return Err(TokenError::Expired);
        }
        Ok(t.clone())
    }

    pub fn tokens_of(&self, tenant: &str) -> Vec<TokenRecord> {
        let mut out: Vec<_> =
            self.tokens.read().expect("tenants lock").values().filter(|t| t.tenant == tenant).cloned().collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Forgets a token; returns whether it existed for this tenant.
    pub fn revoke(&self, tenant: &str, id: &str) -> bool {
        let mut tokens = self.tokens.write().expect("tenants lock");
        let before = tokens.len();
        tokens.retain(|_, t| !(t.tenant == tenant && t.id == id));
        tokens.len() != before
    }

    /// A one-time portal code for `tenant`, valid until `expires_at_ms`. Codes live in memory:
    /// a restart invalidates the links not yet opened.
    pub fn portal_code(&self, tenant: &str, expires_at_ms: u64, now_ms: u64) -> String {
        let code = new_token("hgp_");
        let mut codes = self.codes.lock().expect("tenants lock");
        codes.retain(|_, (_, exp)| *exp > now_ms);
        codes.insert(digest(&code), (tenant.to_owned(), expires_at_ms));
        code
    }

    /// Redeems a portal code: its tenant, once. A second use, or a use after its expiry, fails.
    pub fn redeem(&self, code: &str, now_ms: u64) -> Result<String, TokenError> {
        let (tenant, exp) =
            self.codes.lock().expect("tenants lock").remove(&digest(code)).ok_or(TokenError::Unknown)?;
        if now_ms >= exp {
            return Err(TokenError::Expired);
        }
        Ok(tenant)
    }
}

/// Accepted bearer tokens, kept as SHA-256 digests so that comparing a presented token takes
/// the same time whatever it shares with a real one.
pub struct TokenSet(Vec<[u8; 32]>);

impl TokenSet {
    pub fn new(tokens: &[Token]) -> TokenSet {
        TokenSet(tokens.iter().map(|t| Sha256::digest(t.0.as_bytes()).into()).collect())
    }

    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        let mut ok = false;
        for t in &self.0 {
            let diff = t.iter().zip(digest.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            ok |= diff == 0;
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> TenantRecord {
        TenantRecord {
            id: "acme".into(),
            name: None,
            metadata: None,
            secrets: vec![new_secret(0, false)],
            max_endpoints: None,
            max_events_per_second: None,
            created_at_ms: 0,
        }
    }

    #[test]
    fn rotation_keeps_the_old_secret_for_the_overlap_then_drops_it() {
        let limits = TenantLimits { max_endpoints: 20, max_events_per_second: None };
        let overlap = Duration::from_secs(10);
        let mut r = record();
        let first = Secret::parse(&r.secrets[0].secret).unwrap();
        rotate(&mut r, 1_000, overlap, None);
        let t = Tenant::from_record(&r, limits).unwrap();
        let (current, others) = t.signing_keys(1_000, overlap);
        assert_ne!(current.fingerprint(), first.fingerprint(), "the new secret signs");
        assert_eq!(others.iter().map(Secret::fingerprint).collect::<Vec<_>>(), [first.fingerprint()]);
        let (_, others) = t.signing_keys(11_000, overlap);
        assert!(others.is_empty(), "dropped after the overlap");
        // A second rotation after the overlap forgets the first secret in the record too.
        rotate(&mut r, 20_000, overlap, None);
        assert_eq!(r.secrets.len(), 2);
    }

    #[test]
    fn portal_codes_work_once_and_expire() {
        let config = Config::parse(
            "[auth]\ningest_tokens = [\"t\"]\n[signing]\nsecret = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n",
            "t.toml",
            std::path::Path::new("/"),
            &|_| None,
        )
        .unwrap();
        let tenants = Tenants::new(&config, vec![record()], vec![]);
        let code = tenants.portal_code("acme", 500, 0);
        assert_eq!(tenants.redeem(&code, 100), Ok("acme".to_owned()));
        assert_eq!(tenants.redeem(&code, 100), Err(TokenError::Unknown), "no replay");
        let late = tenants.portal_code("acme", 500, 0);
        assert_eq!(tenants.redeem(&late, 500), Err(TokenError::Expired));
        let (token, rec) = tenants.issue_token("acme", 0, Some(1_000), false);
        tenants.add_token(rec.clone());
        assert_eq!(tenants.check_token(&token, 999).unwrap().tenant, "acme");
        assert_eq!(tenants.check_token(&token, 1_000), Err(TokenError::Expired));
        assert_eq!(tenants.check_token("hgt_nope", 0), Err(TokenError::Unknown));
        assert!(tenants.revoke("acme", &rec.id));
        assert_eq!(tenants.check_token(&token, 0), Err(TokenError::Unknown));
    }
}
