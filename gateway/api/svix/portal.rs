//! Svix's app portal access: a link to Hookgate's portal (the dashboard scoped to the
//! application's tenant) and an application-scoped token.
//!
//! Owns: `POST /api/v1/auth/app-portal-access/{app_id}` (`expiry` in seconds, default an hour;
//! an inline `application` is created when missing).
//! Must not touch: how portal codes and tokens work: it calls the native tenant handlers.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::{Result, SvixError, answer, native, object};
use crate::api::state::AppState;
use crate::api::tenants;

/// `POST /api/v1/auth/app-portal-access/{app_id}`: `{url, token}`.
pub async fn access(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(app): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    st.admin(&headers)?;
    let o = object(&body)?;
    if st.tenants.get(&app).is_none() {
        let Some(Value::Object(a)) = o.get("application") else {
            return Err(SvixError::not_found(format!("no application with id {app:?}")));
        };
        let mut a = a.clone();
        a.insert("uid".into(), Value::String(app.clone()));
        let body = axum::body::Bytes::from(Value::Object(a).to_string());
        super::apps::create(State(st.clone()), headers.clone(), Query(Default::default()), body).await?;
    }
    let expiry = match o.get("expiry") {
        None | Some(Value::Null) => 3600,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|s| (1..=7 * 86_400).contains(&s)) => {
            n.as_u64().unwrap_or(3600)
        }
        Some(_) => return Err(SvixError::invalid("`expiry` must be a number of seconds from 1 to 604800")),
    };
    let ttl = axum::body::Bytes::from(json!({ "expires_in": format!("{expiry}s") }).to_string());
    let (_, token) =
        native(tenants::create_token(State(st.clone()), headers.clone(), Path(app.clone()), ttl.clone()).await).await?;
    // The portal's link works once and within ten minutes at most, whatever the token's life.
    let link_ttl = axum::body::Bytes::from(json!({ "expires_in": format!("{}s", expiry.min(600)) }).to_string());
    let (_, link) = native(tenants::create_portal_link(State(st), headers, Path(app), link_ttl).await).await?;
    Ok(answer(StatusCode::OK, json!({ "url": link["url"], "token": token["token"] })))
}
