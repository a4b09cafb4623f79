//! A webhook receiver on 127.0.0.1:0 that records every request and answers by script.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Behavior {
    Status(u16),
    /// A status with extra response headers (e.g. `Retry-After`).
    StatusWith(u16, Vec<(String, String)>),
    /// Answer 200 after a delay.
    Delay(Duration),
    /// Never answer.
    Hang,
    /// Hold the request until the test calls `notify_one` on this, then answer 200: an
    /// attempt that is in flight for exactly as long as the test needs.
    Held(Arc<tokio::sync::Notify>),
    /// As `Held`, then answer with this status.
    HeldThen(Arc<tokio::sync::Notify>, u16),
    /// 302 to this location.
    Redirect(String),
}

/// A request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// Asserts that both signatures verify over the body as received: `X-Webhook-Signature`
    /// with our recipe, `webhook-*` with the official `standardwebhooks` crate.
    pub fn assert_signed(&self) {
        let secret = hookgate::sign::Secret::parse(super::SECRET).unwrap();
        assert!(hookgate::sign::verify_attendee(&secret, &self.body, self.header("x-webhook-signature")));
        let wh = standardwebhooks::Webhook::new(&format!("whsec_{}", super::SECRET)).unwrap();
        let mut headers = http::HeaderMap::new();
        for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            headers.insert(name, self.header(name).parse().unwrap());
        }
        wh.verify(&self.body, &headers).expect("standardwebhooks verifies the body");
    }
}

struct Script {
    /// Answers used in order; when empty, `default` answers.
    queue: VecDeque<Behavior>,
    default: Behavior,
}

#[derive(Clone)]
struct Shared {
    script: Arc<Mutex<Script>>,
    tx: mpsc::UnboundedSender<Received>,
}

pub struct Receiver {
    pub addr: std::net::SocketAddr,
    script: Arc<Mutex<Script>>,
    rx: mpsc::UnboundedReceiver<Received>,
}

impl Receiver {
    /// Starts a receiver that answers `default` to everything.
    pub async fn start(default: Behavior) -> Receiver {
        Self::start_on("127.0.0.1:0", default).await
    }

    pub async fn start_on(addr: &str, default: Behavior) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(Script { queue: VecDeque::new(), default }));
        let (tx, rx) = mpsc::unbounded_channel();
        let app = axum::Router::new().fallback(handle).with_state(Shared { script: script.clone(), tx });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, script, rx }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers the next requests with `behaviors`, in order, before falling back to the default.
    pub fn then(&self, behaviors: impl IntoIterator<Item = Behavior>) {
        self.script.lock().unwrap().queue.extend(behaviors);
    }

    pub fn set_default(&self, b: Behavior) {
        self.script.lock().unwrap().default = b;
    }

    /// The next request, waiting at most `within`.
    pub async fn next(&mut self, within: Duration) -> Received {
        tokio::time::timeout(within, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no request reached the receiver within {within:?}"))
            .expect("receiver channel open")
    }

    /// Asserts that no request arrives within `quiet`.
    pub async fn assert_silent(&mut self, quiet: Duration) {
        if let Ok(Some(r)) = tokio::time::timeout(quiet, self.rx.recv()).await {
            panic!("unexpected request to {}: {:?}", r.path, String::from_utf8_lossy(&r.body));
        }
    }
}

async fn handle(State(s): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let behavior = {
        let mut script = s.script.lock().unwrap();
        script.queue.pop_front().unwrap_or_else(|| script.default.clone())
    };
    let _ = s.tx.send(Received { method, path: uri.path().to_owned(), headers, body, at: Instant::now() });
    match behavior {
        Behavior::Status(code) => status(code).into_response(),
        Behavior::StatusWith(code, headers) => {
            let mut resp = (status(code), "scripted").into_response();
            for (k, v) in headers {
                resp.headers_mut()
                    .insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
            }
            resp
        }
        Behavior::Delay(d) => {
            tokio::time::sleep(d).await;
            (StatusCode::OK, "ok after delay").into_response()
        }
        Behavior::Hang => std::future::pending::<Response>().await,
        Behavior::Held(release) => {
            release.notified().await;
            (StatusCode::OK, "ok after release").into_response()
        }
        Behavior::HeldThen(release, code) => {
            release.notified().await;
            (status(code), "after release").into_response()
        }
        Behavior::Redirect(to) => (StatusCode::FOUND, [("location", to)], "moved").into_response(),
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap()
}

impl Receiver {
    /// The next request if one arrives, for draining.
    pub async fn next_opt(&mut self) -> Option<Received> {
        self.rx.recv().await
    }
}
