//! What every handler can reach, and who may call it.
//!
//! Owns: [`AppState`] (the services a handler uses, built once by the wiring in `lib.rs`) and
//! the bearer-token checks: admin, ingest and tenant access. It sits at the bottom of the
//! handlers layer, beside the error shape, so that every handler imports it downwards.
//! Must not touch: routes (that is `http`) or the stores' layout.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use tokio::sync::Notify;

use super::error::ApiError;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::health::HealthBook;
use crate::ingest::Ingest;
use crate::live::{Live, Reloader};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::serve::ConnectionStats;
use crate::store::Store;
use crate::telemetry::Telemetry;
use crate::tenants::{Tenant, Tenants, TokenError, TokenSet};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The running generation of the config file, plugins and tokens (see `live`).
    pub live: Arc<Live>,
    pub reloader: Arc<Reloader>,
    pub store: Store,
    /// Tells the dispatcher that new deliveries are due.
    pub wake: Arc<Notify>,
    pub endpoints: Arc<Registry>,
    pub dispatcher: Dispatcher,
    pub metrics: Arc<Metrics>,
    /// "Now" for ingest's timestamps: the same clock dispatch schedules by.
    pub clock: SharedClock,
    /// Open inbound connections, kept by `serve`.
    pub connections: Arc<ConnectionStats>,
    /// Endpoint health: ingest skips disabled endpoints; the API shows and changes it.
    pub health: Arc<HealthBook>,
    pub tenants: Arc<Tenants>,
    /// Turns a validated event into a committed one (see `ingest`).
    pub ingest: Arc<Ingest>,
    /// Traces (a no-op when off).
    pub telemetry: Telemetry,
    /// Event types' JSON Schemas, for `[event_types] validate`.
    pub schemas: Arc<crate::schemas::Schemas>,
    /// The OpenAPI document served at `/openapi.json`, built by `http::router` from its route
    /// table (empty until then).
    pub openapi: Arc<str>,
}

impl AppState {
    /// The running configuration (one request uses one snapshot).
    pub fn config(&self) -> Arc<Config> {
        self.live.config()
    }

    /// An admin token, or 401.
    pub fn admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        check(&self.live.get().admin_tokens, headers)
    }

    /// An ingest token, or 401.
    pub fn ingester(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        check(&self.live.get().ingest_tokens, headers)
    }
}

/// Checks the `Authorization: Bearer` header against every token of `tokens`.
fn check(tokens: &TokenSet, headers: &HeaderMap) -> Result<(), ApiError> {
    if tokens.matches(bearer(headers)?) {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "the bearer token is not valid for this route"))
    }
}

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing `Authorization: Bearer <token>` header")
        })
}

impl AppState {
    /// Who may use a tenant's routes: an admin token, or a token of that tenant. Another
    /// tenant's token gets the same 404 as a tenant that does not exist, so ids do not leak.
    pub fn tenant_access(&self, headers: &HeaderMap, tenant: &str) -> Result<Arc<Tenant>, ApiError> {
        let presented = bearer(headers)?;
        let missing = || ApiError::not_found(format!("no tenant with id {tenant:?}"));
        if !self.live.get().admin_tokens.matches(presented) {
            match self.tenants.check_token(presented, self.clock.now_ms()) {
                Ok(t) if t.tenant == tenant => {}
                Ok(_) => return Err(missing()),
                Err(TokenError::Expired) => {
                    return Err(ApiError::new(StatusCode::UNAUTHORIZED, "token_expired", "this token has expired"));
                }
                Err(TokenError::Unknown) => {
                    return Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "the bearer token is not valid for this route (revoked, or never issued)",
                    ));
                }
            }
        }
        self.tenants.get(tenant).ok_or_else(missing)
    }
}
