//! Outbound HTTP: one attempt to POST a signed body to an endpoint, classified.
//!
//! Owns: the only `reqwest` import, the hardened client (no redirects, no proxies, a resolver
//! that drops forbidden addresses, a whole-attempt timeout, a capped response read) and the
//! mapping of transport outcomes to [`ErrorKind`].
//! Must not touch: the store, signing or retry decisions. It performs one attempt and reports
//! what happened; `dispatch` decides what follows.

pub mod guard;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::model::{AttemptError, ErrorKind};

/// How much of a response body is kept with the attempt. Enough to show an error page's gist
/// in the delivery log without letting a chatty receiver bloat the store.
pub const RESPONSE_BODY_LIMIT: usize = 4096;

/// The `User-Agent` every delivery carries.
pub const USER_AGENT: &str = concat!("Hookgate/", env!("CARGO_PKG_VERSION"));

/// What `deliver` needs from the configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    pub timeout: Duration,
    pub allow_http: bool,
    pub allow_private_networks: bool,
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status_code: Option<u16>,
    /// `None` exactly when the receiver answered 2xx.
    pub error: Option<AttemptError>,
    pub response_body: String,
    pub duration: Duration,
    /// A `Retry-After` sent with a 429 or 503.
    pub retry_after: Option<Duration>,
}

/// The delivery client. Cheap to clone; connections are pooled and reused across attempts.
#[derive(Clone)]
pub struct Deliverer {
    client: reqwest::Client,
    policy: Arc<Policy>,
}

impl Deliverer {
    pub fn new(policy: Policy) -> anyhow::Result<Deliverer> {
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            // A 3xx is a failed attempt: following it could lead anywhere, including inside
            // the network the SSRF guard protects.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve names for us and bypass the guard.
            .no_proxy()
            .timeout(policy.timeout)
            .connect_timeout(policy.timeout)
            .pool_idle_timeout(Duration::from_secs(90));
        if !policy.allow_private_networks {
            builder = builder.dns_resolver(Arc::new(GuardedResolver));
        }
        Ok(Deliverer { client: builder.build()?, policy: Arc::new(policy) })
    }

    /// POSTs `body` to `url` with `headers`, within the policy's timeout.
    pub async fn send(&self, url: &url::Url, headers: &[(&str, &str)], body: Vec<u8>) -> Outcome {
        let started = Instant::now();
        if let Err(message) = self.precheck(url) {
            return failure(ErrorKind::Blocked, message, started);
        }
        // A `Url` is passed as is: reqwest would parse a string again on every attempt.
        let mut req = self.client.post(url.clone()).header("content-type", "application/json").body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        // reqwest's timeout already covers the whole exchange; this outer bound also covers our
        // own body reading, so nothing can hold an attempt past `timeout`.
        match tokio::time::timeout(self.policy.timeout, attempt(req)).await {
            Ok(Ok((status, retry_after, response_body))) => {
                let error = (!(200..300).contains(&status)).then(|| AttemptError {
                    kind: ErrorKind::Status,
                    message: if (300..400).contains(&status) {
                        format!("HTTP {status}: redirects are not followed")
                    } else {
                        format!("HTTP {status}")
                    },
                });
                Outcome { status_code: Some(status), error, response_body, duration: started.elapsed(), retry_after }
            }
            Ok(Err(e)) => {
                let (kind, message) = classify(&e);
                failure(kind, message, started)
            }
            Err(_) => {
                failure(ErrorKind::Timeout, format!("no complete response within {:?}", self.policy.timeout), started)
            }
        }
    }

    /// Rules that need no network: the scheme and literal IP hosts (which skip DNS, and so
    /// the guarded resolver).
    fn precheck(&self, url: &url::Url) -> Result<(), String> {
        match url.scheme() {
            "https" => {}
            "http" if self.policy.allow_http => {}
            s => {
                return Err(format!("scheme {s}:// is not allowed (delivery.allow_http = false)"));
            }
        }
        if self.policy.allow_private_networks {
            return Ok(());
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => return Ok(()),
        };
        match guard::forbidden_reason(ip) {
            Some(reason) => Err(format!("{ip} is {reason}; set delivery.allow_private_networks = true to allow it")),
            None => Ok(()),
        }
    }
}

fn failure(kind: ErrorKind, message: String, started: Instant) -> Outcome {
    Outcome {
        status_code: None,
        error: Some(AttemptError { kind, message }),
        response_body: String::new(),
        duration: started.elapsed(),
        retry_after: None,
    }
}

async fn attempt(req: reqwest::RequestBuilder) -> Result<(u16, Option<Duration>, String), reqwest::Error> {
    // Errors lose the URL: it may carry a token in its query string, and these messages go to
    // the log and the delivery log.
    let mut resp = req.send().await.map_err(reqwest::Error::without_url)?;
    let status = resp.status().as_u16();
    let retry_after = if status == 429 || status == 503 {
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::retry::parse_retry_after(v, SystemTime::now()))
    } else {
        None
    };
    let mut body = Vec::new();
    while body.len() < RESPONSE_BODY_LIMIT {
        match resp.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            // A receiver that has not finished answering within the timeout has not answered
            // (Attendee: "fails to respond within 10 seconds"), whatever its status line said.
            Err(e) if e.is_timeout() => return Err(e.without_url()),
            // The status is what counts; a body cut short by the receiver does not change it.
            Err(_) => break,
        }
    }
    body.truncate(RESPONSE_BODY_LIMIT);
    Ok((status, retry_after, String::from_utf8_lossy(&body).into_owned()))
}

/// Maps a transport error to an error kind and a message without secrets (URLs carry none:
/// config validation refuses credentials in them).
fn classify(e: &reqwest::Error) -> (ErrorKind, String) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(b) = s.downcast_ref::<BlockedAddress>() {
            return (ErrorKind::Blocked, b.to_string());
        }
        source = s.source();
    }
    let detail = error_chain(e);
    if e.is_timeout() {
        (ErrorKind::Timeout, detail)
    } else if e.is_connect() {
        (ErrorKind::Connect, detail)
    } else {
        (ErrorKind::Request, detail)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Every address a hostname resolved to is forbidden.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to {ip}, which is {reason}; set delivery.allow_private_networks = true to allow it")]
struct BlockedAddress {
    host: String,
    ip: IpAddr,
    reason: &'static str,
}

/// Resolves names with the system resolver and drops forbidden addresses, so the check happens
/// after DNS and on exactly the addresses the connection will use.
struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match guard::forbidden_reason(a.ip()) {
                    Some(reason) => {
                        refused = Some((a.ip(), reason));
                        false
                    }
                    None => true,
                })
                .collect();
            if allowed.is_empty()
                && let Some((ip, reason)) = refused
            {
                return Err(Box::new(BlockedAddress { host, ip, reason }) as Box<_>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}
