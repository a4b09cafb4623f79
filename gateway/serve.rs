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
//! - **Slow bodies.** A request's whole body must arrive within `request_body_timeout` from the
//!   end of its head (`Deadlined`): a client sending one byte a second is cut off at the
//!   deadline, not kept alive by each byte. The read fails with an `io::Error` of kind
//!   `TimedOut`; ingest answers 408.
//! - **Early answers.** A response given before its request's body was read to the end (a
//!   401, a 429, a 413 from `Content-Length`) says `Connection: close`, and the connection is
//!   closed after it: the unread body would otherwise be taken for the next request, or the
//!   client would find the connection gone under its next request.
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
        let body_timeout = limits.request_body_timeout;
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            activity.in_flight.fetch_add(1, Ordering::Relaxed);
            let guard = InFlight(activity.clone());
            let mut router = router.clone();
            let finished = Arc::new(std::sync::atomic::AtomicBool::new(hyper::body::Body::is_end_stream(req.body())));
            let req = req.map(|body| {
                axum::body::Body::new(Deadlined {
                    inner: body,
                    deadline: Box::pin(tokio::time::sleep(body_timeout)),
                    finished: finished.clone(),
                })
            });
            async move {
                let mut response = tower::Service::call(&mut router, req).await;
                if !finished.load(Ordering::Relaxed)
                    && let Ok(response) = &mut response
                {
                    response
                        .headers_mut()
                        .insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
                }
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

/// A request body that must arrive whole before its deadline, and that records whether it was
/// read to the end.
struct Deadlined {
    inner: hyper::body::Incoming,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    finished: Arc<std::sync::atomic::AtomicBool>,
}

impl hyper::body::Body for Deadlined {
    type Data = hyper::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.finished.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "the request body did not arrive in time");
            return Poll::Ready(Some(Err(Box::new(e))));
        }
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.finished.store(true, Ordering::Relaxed);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if hyper::body::Body::is_end_stream(&this.inner) {
                    this.finished.store(true, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished.load(Ordering::Relaxed) || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
