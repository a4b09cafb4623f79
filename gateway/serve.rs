//! The inbound HTTP server: accepting connections under a limit, and the timeouts that keep a
//! slow or idle client from holding one forever.
//!
//! Owns: the accept loop, the connection semaphore (`server.max_connections`), hyper's HTTP/1
//! settings (`server.header_read_timeout`), the request-body timeout layer
//! (`server.request_body_timeout`), the idle watchdog (`server.keep_alive_timeout`) and graceful
//! shutdown of open connections.
//! Must not touch: routes or handlers (that is `http`); it serves whatever router it is given.
//!
//! How the limits hold:
//! - **Connections.** A permit is taken *before* `accept`, so past `max_connections` new
//!   connections wait in the kernel's backlog instead of costing memory here; a permit comes back
//!   when its connection closes.
//! - **Slow headers.** hyper closes a connection whose request head has not fully arrived within
//!   `header_read_timeout`. hyper starts that timer whenever it waits for a request head,
//!   including on an idle keep-alive connection, so it also bounds how long an idle connection
//!   lives.
//! - **Slow bodies.** tower-http's `RequestBodyTimeoutLayer` fails a body that has not fully
//!   arrived within `request_body_timeout`; ingest answers 408.
//! - **Idle keep-alive.** A connection with no request in flight for `keep_alive_timeout` is
//!   shut down gracefully (a request that starts meanwhile is answered first).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The server's limits, from `[server]`.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub request_body_timeout: Duration,
    pub keep_alive_timeout: Duration,
}

/// Connections open right now, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    pub open: AtomicUsize,
    pub accepted: AtomicU64,
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets every
/// open connection finish the request it is serving and waits for them to close.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stats: Arc<ConnectionStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(limits.request_body_timeout));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let (router, limits, stop, stats) = (router.clone(), limits.clone(), stop.clone(), stats.clone());
        connections.spawn(async move {
            serve_connection(stream, router, &limits, stop).await;
            stats.open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    stop.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Requests in flight on one connection and when the last one ended, for the idle watchdog.
struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since `origin` at which the connection last became idle.
    idle_since_ms: AtomicU64,
    origin: Instant,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
}

/// Decrements the in-flight count when a request's response is ready (or its future dropped).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.idle_since_ms.store(self.0.now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, router: Router, limits: &Limits, stop: CancellationToken) {
    let activity =
        Arc::new(Activity { in_flight: AtomicUsize::new(0), idle_since_ms: AtomicU64::new(0), origin: Instant::now() });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            activity.in_flight.fetch_add(1, Ordering::Relaxed);
            let guard = InFlight(activity.clone());
            let mut router = router.clone();
            async move {
                let response = tower::Service::call(&mut router, req.map(axum::body::Body::new)).await;
                drop(guard);
                response
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let keep_alive = limits.keep_alive_timeout;
    let mut check = tokio::time::interval((keep_alive / 4).max(Duration::from_millis(10)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection closed with an error");
                }
                return;
            }
            () = stop.cancelled(), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = check.tick(), if !shutting_down => {
                let idle = activity.in_flight.load(Ordering::Relaxed) == 0
                    && activity.now_ms().saturating_sub(activity.idle_since_ms.load(Ordering::Relaxed)) >= keep_alive.as_millis() as u64;
                if idle {
                    shutting_down = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
