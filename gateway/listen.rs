//! `hookgate listen`: a local webhook receiver for trying Hookgate out. It prints every request
//! it gets and whether both signatures verify, and answers 200 when they do, 401 when not.
//!
//! Owns: nothing the gateway depends on; it is a receiver, verifying with the same recipes
//! receivers use (the body as sent, or re-canonicalised; Standard Webhooks' 5-minute window).
//! Must not touch: the store or delivery.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;

use crate::json;
use crate::sign::{self, Secret};

/// Standard Webhooks receivers reject timestamps further than this from their clock.
const TOLERANCE_SECS: i64 = 300;

/// The verdict on one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub attendee: Check,
    pub standard: Check,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    Valid,
    Invalid(String),
    Missing,
    /// An Ed25519 key (`whsk_`) makes no Attendee signature: that recipe is HMAC only.
    NotApplicable,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Check::Valid => f.write_str("valid"),
            Check::Invalid(why) => write!(f, "INVALID ({why})"),
            Check::Missing => f.write_str("missing"),
            Check::NotApplicable => f.write_str("none expected (Ed25519 key: v1a only)"),
        }
    }
}

/// Verifies both signature headers of a request, as receivers do.
pub fn verify(secret: &Secret, headers: &HeaderMap, body: &[u8], now: i64) -> Verdict {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let attendee = match h("x-webhook-signature") {
        None if secret.public_key().is_some() => Check::NotApplicable,
        None => Check::Missing,
        Some(sig) => {
            // Receivers written for Attendee re-canonicalise the parsed body; raw-body receivers
            // use the bytes as they are. Hookgate sends canonical bytes, so both agree.
            let canonical = json::parse(body).map(|v| v.to_canonical().into_bytes()).ok();
            if sign::verify_attendee(secret, body, sig)
                || canonical.is_some_and(|c| sign::verify_attendee(secret, &c, sig))
            {
                Check::Valid
            } else {
                Check::Invalid("signature does not match the body".into())
            }
        }
    };
    // Svix's names carry the same values: a delivery with only `svix-*` headers is checked the
    // same way.
    let set = if h("webhook-signature").is_none() && h("svix-signature").is_some() { "svix" } else { "webhook" };
    let h = |suffix: &str| h(&format!("{set}-{suffix}"));
    let standard = match (h("id"), h("timestamp"), h("signature")) {
        (Some(id), Some(ts), Some(sig)) => match ts.parse::<i64>() {
            Err(_) => Check::Invalid(format!("{set}-timestamp is not a number")),
            Ok(t) if (now - t).abs() > TOLERANCE_SECS => Check::Invalid(format!("timestamp is {}s off", now - t)),
            Ok(_) if sign::verify_standard(secret, id, ts, body, sig) => Check::Valid,
            Ok(_) => Check::Invalid("no signature of this key's kind (v1 or v1a) matches".into()),
        },
        (None, None, None) => Check::Missing,
        _ => Check::Invalid(format!("{set}-id, {set}-timestamp and {set}-signature must all be present")),
    };
    Verdict { attendee, standard }
}

/// Serves on `127.0.0.1:port` until interrupted.
pub async fn run(port: u16, secret: Secret) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on 127.0.0.1:{port}: {e}"))?;
    println!(
        "listening on http://127.0.0.1:{port}/ (any path); verifying with the secret whose fingerprint is {}",
        secret.fingerprint()
    );
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let secret = secret.clone();
        async move { receive(&secret, &method, &uri, &headers, &body) }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

fn receive(secret: &Secret, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> impl IntoResponse + use<> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let v = verify(secret, headers, body, now);
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
    println!("\n{method} {} webhook-id={} user-agent={}", uri.path(), h("webhook-id"), h("user-agent"));
    println!("  X-Webhook-Signature: {}", v.attendee);
    println!("  webhook-signature:   {}", v.standard);
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(pretty) => println!("{}", serde_json::to_string_pretty(&pretty).unwrap_or_default()),
        Err(_) => println!("{}", String::from_utf8_lossy(body)),
    }
    // The gateway's `signature_headers` decide which sets come: every set present must verify,
    // and at least one must be there.
    let checks = [&v.attendee, &v.standard];
    let ok = checks.iter().any(|c| **c == Check::Valid) && !checks.iter().any(|c| matches!(c, Check::Invalid(_)));
    if ok { (StatusCode::OK, "verified\n") } else { (StatusCode::UNAUTHORIZED, "signature verification failed\n") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(signed: &sign::SignedHeaders) -> HeaderMap {
        headers_of(signed, sign::HeaderSets::default())
    }

    fn headers_of(signed: &sign::SignedHeaders, sets: sign::HeaderSets) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in signed.pairs_for(sets) {
            h.insert(name, value.parse().unwrap());
        }
        h
    }

    /// Deliveries that carry only Svix's headers are checked through them.
    #[test]
    fn svix_headers_alone_are_checked() {
        let key = Secret::parse("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        let body = br#"{"data":{},"trigger":"t"}"#;
        let signed = sign::sign(&key, &[], "msg_1", 1_700_000_000, body);
        let svix = sign::HeaderSets::parse(["svix"]).unwrap();
        let v = verify(&key, &headers_of(&signed, svix), body, 1_700_000_000);
        assert_eq!((v.attendee, v.standard), (Check::Missing, Check::Valid));
        let v = verify(&key, &headers_of(&signed, svix), b"{}", 1_700_000_000);
        assert!(matches!(v.standard, Check::Invalid(_)));
        let mut partial = headers_of(&signed, svix);
        partial.remove("svix-id");
        assert_eq!(
            verify(&key, &partial, body, 1_700_000_000).standard,
            Check::Invalid("svix-id, svix-timestamp and svix-signature must all be present".into())
        );
    }

    /// With an Ed25519 key, `listen` checks the `v1a` signature and expects no Attendee header.
    #[test]
    fn an_ed25519_key_checks_v1a_only() {
        let key = Secret::generate_ed25519();
        let body = br#"{"data":{},"trigger":"t"}"#;
        let signed = sign::sign(&key, &[], "msg_1", 1_700_000_000, body);
        let v = verify(&key, &headers(&signed), body, 1_700_000_000);
        assert_eq!((v.attendee, v.standard), (Check::NotApplicable, Check::Valid));
        let v = verify(&key, &headers(&signed), br#"{"data":{},"trigger":"x"}"#, 1_700_000_000);
        assert!(matches!(v.standard, Check::Invalid(_)), "{:?}", v.standard);
        let other = Secret::generate_ed25519();
        assert!(matches!(verify(&other, &headers(&signed), body, 1_700_000_000).standard, Check::Invalid(_)));
    }
}
