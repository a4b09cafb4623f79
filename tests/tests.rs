//! The one integration test binary. Each area is a module; all of them run the real gateway
//! (in-process on 127.0.0.1:0, or the built binary where a test must kill or signal it) against
//! a real receiver on loopback, with temp data dirs.

mod util;

/// The delivery log, resend, runtime endpoints, metrics and `listen`.
mod api;
/// The charts' buckets and the overview through the API, on both backends.
mod charts;
/// `hookgate check` and `--help`.
mod cli;
/// Several nodes on one PostgreSQL database: sharing, kill -9, a database restart.
mod cluster;
/// The dashboard in headless Chromium.
mod dashboard;
/// Signatures, retries, timeouts, redirects, SSRF, fan-out, concurrency limits.
mod delivery;
/// The delivery engine's failure paths, injected time, and the inbound server's limits.
mod engine;
/// Circuit breaker, auto-disable, operational webhooks, rate limits.
mod health;
/// The ingest error table and idempotency keys.
mod ingest;
/// JavaScript and Python plugins built from `plugins/js` and `plugins/python`.
mod languages;
/// kill -9 and SIGTERM with the real binary.
mod lifecycle;
/// `/openapi.json` against the router, a validator and real answers; the reference page.
mod openapi;
/// Example plugins through the pipeline, hostile guests, the compile cache.
mod plugins;
/// Hot reload of the config file and plugins.
mod reload;
/// Retention and FIFO ordering.
mod retention;
/// The Svix-compatible API, driven by the official Svix Python and JavaScript SDKs.
mod svix;
/// OpenTelemetry traces, received by a collector in the test.
mod telemetry;
/// Tenants: secrets, scoping, tokens, quotas, isolation.
mod tenants;
/// Module headers and stage boundaries.
mod tidy;
