//! The charts' routes: delivery counts and attempt latency over time, for the whole gateway, a
//! tenant or an endpoint, and the overview the dashboard opens on.
//!
//! Owns: `GET /v1/stats`, `GET /v1/stats/overview` (admin) and their tenant-scoped twins under
//! `/v1/tenants/{id}/`, what a window is, and the JSON of a series (dense: one entry per
//! bucket, zeros included, so a chart draws it as is).
//! Must not touch: how buckets are counted or stored (`tally`, `dispatch`, `store`). Every
//! answer is read from the stored buckets (one range read per scope), never from the delivery
//! log; `query_ms` in each answer says what the read cost.

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::error::{ApiError, json_response};
use super::state::AppState;
use crate::endpoint::{internal_id, split_id};
use crate::model::{DEFAULT_TENANT, rfc3339};
use crate::tally::{ALL_SCOPE, Counts, Resolution, endpoint_scope, tenant_scope};

/// The endpoints an overview ranks at most (the rest are not read).
const MAX_RANKED: usize = 2_000;
/// Endpoints listed in each of the overview's rankings.
const TOP: usize = 5;

/// A chart's time range: the last `buckets` buckets of `resolution`, the current one included.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Window {
    name: &'static str,
    resolution: Resolution,
    buckets: u64,
}

impl Window {
    /// `window` (`1h`, `6h`, `24h`, `7d`, `30d`; default `24h`) and an optional `resolution`
    /// (`minute` or `hour`; default: minutes up to a day, hours past it).
    fn parse(params: &HashMap<String, String>) -> Result<Window, ApiError> {
        let name = params.get("window").map_or("24h", String::as_str);
        let (name, span_ms): (&'static str, u64) = match name {
            "1h" => ("1h", 3_600_000),
            "6h" => ("6h", 6 * 3_600_000),
            "24h" => ("24h", 24 * 3_600_000),
            "7d" => ("7d", 7 * 24 * 3_600_000),
            "30d" => ("30d", 30 * 24 * 3_600_000),
            other => {
                return Err(invalid("window", format!("unknown window {other:?}: use 1h, 6h, 24h, 7d or 30d")));
            }
        };
        let resolution = match params.get("resolution").map(String::as_str) {
            None if span_ms <= Resolution::Minute.keep_ms() => Resolution::Minute,
            None | Some("hour") => Resolution::Hour,
            Some("minute") if span_ms <= Resolution::Minute.keep_ms() => Resolution::Minute,
            Some("minute") => {
                return Err(invalid("resolution", "minute buckets are kept for 24 hours: use resolution=hour"));
            }
            Some(other) => {
                return Err(invalid("resolution", format!("unknown resolution {other:?}: use minute or hour")));
            }
        };
        Ok(Window { name, resolution, buckets: span_ms / resolution.bucket_ms() })
    }

    /// `[from, to)` in ms: whole buckets, ending with the one holding `now_ms`.
    fn range(&self, now_ms: u64) -> (u64, u64) {
        let step = self.resolution.bucket_ms();
        let to = self.resolution.bucket_of(now_ms) + step;
        (to.saturating_sub(self.buckets * step), to)
    }
}

fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", format!("{param}: {}", message.into()))
}

/// One bucket's (or a total's) numbers as JSON.
fn counts_json(c: &Counts) -> serde_json::Map<String, Value> {
    let round = |v: Option<f64>| v.map(|v| (v * 10.0).round() / 10.0);
    let ended = c.succeeded + c.failed;
    let mut m = serde_json::Map::new();
    m.insert("succeeded".into(), c.succeeded.into());
    m.insert("failed".into(), c.failed.into());
    m.insert("retried".into(), c.retried.into());
    m.insert("attempts".into(), c.attempts.into());
    m.insert("failure_rate".into(), json!((ended > 0).then(|| c.failed as f64 / ended as f64)));
    m.insert("latency_p50_ms".into(), json!(round(c.latency_quantile(0.5))));
    m.insert("latency_p95_ms".into(), json!(round(c.latency_quantile(0.95))));
    m.insert(
        "latency_mean_ms".into(),
        json!(round((c.attempts > 0).then(|| c.latency_ms_sum as f64 / c.attempts as f64))),
    );
    m
}

/// A scope's series over the window, dense, and its total.
async fn series(st: &AppState, scope: String, w: Window) -> Result<(Vec<Value>, Counts), ApiError> {
    let (from, to) = w.range(st.clock.now_ms());
    let stored = st.store.tally_series(w.resolution, scope, from, to).await.map_err(|e| ApiError::store(&e))?;
    let mut stored = stored.into_iter().peekable();
    let mut total = Counts::default();
    let step = w.resolution.bucket_ms();
    let mut out = Vec::with_capacity(w.buckets as usize);
    for start in (from..to).step_by(step as usize) {
        let c = match stored.peek() {
            Some((at, _)) if *at == start => stored.next().map(|(_, c)| c).unwrap_or_default(),
            _ => Counts::default(),
        };
        total.add(&c);
        let mut m = counts_json(&c);
        m.insert("start".into(), rfc3339(start).into());
        out.push(Value::Object(m));
    }
    Ok((out, total))
}

/// Resolves `?endpoint=` inside a tenant to its internal id, or 404.
fn endpoint_in(st: &AppState, tenant: &str, endpoint: &str) -> Result<String, ApiError> {
    let id = internal_id(tenant, endpoint);
    st.endpoints
        .get(&id)
        .map(|_| id)
        .ok_or_else(|| ApiError::not_found(format!("no endpoint with id {endpoint:?} in tenant {tenant:?}")))
}

/// The answer of a stats route for `tenant` (`None`: the whole gateway).
async fn stats(st: &AppState, tenant: Option<&str>, params: &HashMap<String, String>) -> Result<Response, ApiError> {
    let w = Window::parse(params)?;
    let started = Instant::now();
    let endpoint = match params.get("endpoint") {
        Some(e) => Some(endpoint_in(st, tenant.unwrap_or(DEFAULT_TENANT), e)?),
        None => None,
    };
    let scope = match (&endpoint, tenant) {
        (Some(id), _) => endpoint_scope(id),
        (None, Some(t)) => tenant_scope(t),
        (None, None) => ALL_SCOPE.to_owned(),
    };
    st.dispatcher.flush_tally().await;
    let (buckets, total) = series(st, scope, w).await?;
    let (from, to) = w.range(st.clock.now_ms());
    let body = json!({
        "tenant": tenant,
        "endpoint": endpoint.as_deref().map(|id| split_id(id).1),
        "window": w.name,
        "resolution": w.resolution.as_str(),
        "bucket_seconds": w.resolution.bucket_ms() / 1000,
        "since": rfc3339(from),
        "until": rfc3339(to),
        "buckets": buckets,
        "totals": counts_json(&total),
        "query_ms": started.elapsed().as_secs_f64() * 1000.0,
    });
    Ok(json_response(StatusCode::OK, body.to_string()))
}

/// `GET /v1/stats?window=&resolution=&tenant=&endpoint=` (admin).
pub async fn get_stats(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    st.admin(&headers)?;
    let tenant = match params.get("tenant") {
        Some(t) => Some(
            st.tenants
                .get(t)
                .map(|_| t.as_str())
                .ok_or_else(|| ApiError::not_found(format!("no tenant with id {t:?}")))?,
        ),
        None if params.contains_key("endpoint") => Some(DEFAULT_TENANT),
        None => None,
    };
    stats(&st, tenant, &params).await
}

/// `GET /v1/tenants/{id}/stats?window=&resolution=&endpoint=` (admin or the tenant's token).
pub async fn get_tenant_stats(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    st.tenant_access(&headers, &id)?;
    stats(&st, Some(&id), &params).await
}

/// The overview for `tenant` (`None`: the whole gateway): the series, the slowest and most
/// failing endpoints over the window, and the backlog.
async fn overview(st: &AppState, tenant: Option<&str>, params: &HashMap<String, String>) -> Result<Response, ApiError> {
    let w = Window::parse(params)?;
    let started = Instant::now();
    st.dispatcher.flush_tally().await;
    let scope = tenant.map_or_else(|| ALL_SCOPE.to_owned(), tenant_scope);
    let (buckets, total) = series(st, scope, w).await?;
    let endpoints: Vec<String> = match tenant {
        Some(t) => st.endpoints.of_tenant(t).iter().map(|e| e.id.clone()).collect(),
        None => st.endpoints.snapshot().iter().map(|e| e.id.clone()).collect(),
    };
    let ranked = rank(st, &endpoints, w).await?;
    let backlog = match tenant {
        Some(_) => st.store.backlog_of(endpoints).await,
        None => {
            async {
                Ok(crate::store::Backlog {
                    pending: st.store.pending_count().await?,
                    capped: false,
                    oldest_pending_ms: st.store.oldest_pending_ms().await?,
                })
            }
            .await
        }
    }
    .map_err(|e| ApiError::store(&e))?;
    let now = st.clock.now_ms();
    let (from, to) = w.range(now);
    let body = json!({
        "tenant": tenant,
        "window": w.name,
        "resolution": w.resolution.as_str(),
        "bucket_seconds": w.resolution.bucket_ms() / 1000,
        "since": rfc3339(from),
        "until": rfc3339(to),
        "buckets": buckets,
        "totals": counts_json(&total),
        "most_failing": ranked.0,
        "slowest": ranked.1,
        "backlog": {
            "pending": backlog.pending,
            "capped": backlog.capped,
            "oldest_pending_age_seconds": backlog.oldest_pending_ms.map(|ms| now.saturating_sub(ms) as f64 / 1000.0),
        },
        "query_ms": started.elapsed().as_secs_f64() * 1000.0,
    });
    Ok(json_response(StatusCode::OK, body.to_string()))
}

/// The endpoints with the most failed deliveries, and those with the slowest p95, over the
/// window. Past a day the ranking reads hour buckets (a handful of rows per endpoint), so its
/// window is whole hours.
async fn rank(st: &AppState, endpoints: &[String], w: Window) -> Result<(Vec<Value>, Vec<Value>), ApiError> {
    let res = if w.buckets * w.resolution.bucket_ms() > 6 * 3_600_000 { Resolution::Hour } else { w.resolution };
    let span = w.buckets * w.resolution.bucket_ms();
    let now = st.clock.now_ms();
    let to = res.bucket_of(now) + res.bucket_ms();
    let from = to.saturating_sub(span.div_ceil(res.bucket_ms()) * res.bucket_ms());
    let scopes: Vec<String> = endpoints.iter().take(MAX_RANKED).map(|e| endpoint_scope(e)).collect();
    let totals = st.store.tally_totals(res, scopes, from, to).await.map_err(|e| ApiError::store(&e))?;
    let row = |scope: &str, c: &Counts| {
        let (tenant, id) = split_id(scope.strip_prefix("e:").unwrap_or(scope));
        let mut m = counts_json(c);
        m.insert("tenant".into(), tenant.into());
        m.insert("id".into(), id.into());
        Value::Object(m)
    };
    let mut failing: Vec<&(String, Counts)> = totals.iter().filter(|(_, c)| c.failed + c.retried > 0).collect();
    failing.sort_by_key(|(_, c)| std::cmp::Reverse((c.failed, c.retried)));
    let mut slow: Vec<(&(String, Counts), f64)> =
        totals.iter().filter_map(|t| t.1.latency_quantile(0.95).map(|p| (t, p))).collect();
    slow.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok((
        failing.iter().take(TOP).map(|(s, c)| row(s, c)).collect(),
        slow.iter().take(TOP).map(|((s, c), _)| row(s, c)).collect(),
    ))
}

/// `GET /v1/stats/overview?window=` (admin): the whole gateway.
pub async fn get_overview(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    st.admin(&headers)?;
    overview(&st, None, &params).await
}

/// `GET /v1/tenants/{id}/stats/overview?window=` (admin or the tenant's token).
pub async fn get_tenant_overview(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    st.tenant_access(&headers, &id)?;
    overview(&st, Some(&id), &params).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn windows_pick_their_resolution_and_refuse_what_is_not_kept() {
        let w = Window::parse(&params(&[])).unwrap();
        assert_eq!((w.name, w.resolution, w.buckets), ("24h", Resolution::Minute, 1440));
        let w = Window::parse(&params(&[("window", "30d")])).unwrap();
        assert_eq!((w.resolution, w.buckets), (Resolution::Hour, 720));
        let w = Window::parse(&params(&[("window", "1h"), ("resolution", "hour")])).unwrap();
        assert_eq!((w.resolution, w.buckets), (Resolution::Hour, 1));
        let e = Window::parse(&params(&[("window", "7d"), ("resolution", "minute")])).unwrap_err();
        assert!(e.message.contains("resolution") && e.message.contains("24 hours"), "{e:?}");
        let e = Window::parse(&params(&[("window", "2w")])).unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "invalid_query"));
        let w = Window::parse(&params(&[("window", "1h")])).unwrap();
        let (from, to) = w.range(3_600_000 * 10 + 61_000);
        assert_eq!((from, to), (3_600_000 * 9 + 120_000, 3_600_000 * 10 + 120_000));
        assert_eq!((to - from) / 60_000, 60);
    }
}
