//! Idempotency keys of the Svix-compatible API's POSTs: a repeated `idempotency-key` replays
//! the first successful answer instead of acting twice.
//!
//! Owns: the replies kept in memory per caller (a digest of its `Authorization`), method,
//! path and key, for 24 hours and at most 10,000 of them (the oldest go first). The SDKs send
//! a key with every POST and retry a failed one with the same key, so a create that succeeded
//! but whose answer was lost is not made twice. Messages keep their keys durably through
//! ingest instead (the store's idempotency table), so this layer is not put on them.
//! Must not touch: what a handler does; it only stores and replays answers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// How long a reply is kept, and how many at most.
const KEEP: Duration = Duration::from_secs(24 * 3600);
const MAX: usize = 10_000;
/// Answers larger than this are not kept (none of the routes it covers comes near).
const MAX_BODY: usize = 1 << 20;

/// The kept replies: (caller, method and path, key) → (when, status, body).
#[derive(Default)]
pub struct Replies {
    kept: Mutex<HashMap<[u8; 32], (Instant, StatusCode, Bytes)>>,
}

impl Replies {
    fn get(&self, id: &[u8; 32]) -> Option<(StatusCode, Bytes)> {
        let kept = self.kept.lock().expect("replies lock");
        kept.get(id).filter(|(at, _, _)| at.elapsed() < KEEP).map(|(_, s, b)| (*s, b.clone()))
    }

    fn put(&self, id: [u8; 32], status: StatusCode, body: Bytes) {
        let mut kept = self.kept.lock().expect("replies lock");
        if kept.len() >= MAX {
            kept.retain(|_, (at, _, _)| at.elapsed() < KEEP);
        }
        if kept.len() >= MAX {
            // Full of live replies: the oldest goes (a scan, only at the cap).
            if let Some(oldest) = kept.iter().min_by_key(|(_, (at, _, _))| *at).map(|(k, _)| *k) {
                kept.remove(&oldest);
            }
        }
        kept.insert(id, (Instant::now(), status, body));
    }
}

/// The middleware: replays a kept answer for a repeated key, keeps a new 2xx one.
pub async fn replay(State(replies): State<std::sync::Arc<Replies>>, req: Request, next: Next) -> Response {
    let Some(key) = req.headers().get("idempotency-key").map(|k| k.as_bytes().to_vec()) else {
        return next.run(req).await;
    };
    let mut digest = Sha256::new();
    for part in [
        req.headers().get(header::AUTHORIZATION).map_or(&b""[..], |v| v.as_bytes()),
        req.method().as_str().as_bytes(),
        req.uri().path().trim_end_matches('/').as_bytes(),
        &key,
    ] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part);
    }
    let id: [u8; 32] = digest.finalize().into();
    if let Some((status, body)) = replies.get(&id) {
        return json(status, body);
    }
    let response = next.run(req).await;
    if !response.status().is_success() {
        return response;
    }
    let status = response.status();
    match axum::body::to_bytes(response.into_body(), MAX_BODY).await {
        Ok(body) => {
            replies.put(id, status, body.clone());
            json(status, body)
        }
        Err(e) => super::SvixError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()).into_response(),
    }
}

fn json(status: StatusCode, body: Bytes) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
