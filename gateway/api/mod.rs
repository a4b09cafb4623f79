//! The handlers: one module per family of routes, each taking what it needs from
//! [`AppState`] and answering `Result<_, ApiError>`.
//!
//! - `events` — `POST /v1/events` and `/v1/tenants/{id}/events`: the request rules of ingest.
//! - `log` — the delivery log: events, deliveries, resends.
//! - `endpoints` — endpoints of the config file and of the API, per tenant or not.
//! - `tenants` — tenants, their tokens, secrets, portal links and test sends.
//! - `admin` — `/healthz`, reload, `/metrics`, the dashboard page.
//! - `charts` — delivery counts and latency over time, and the dashboard's overview.
//! - `svix` — the Svix-compatible API (`/api/v1/…`), translated into the native handlers.
//! - `state` and `error` — what every handler shares: the services, the token checks and the
//!   error shape. They sit at the bottom of this layer, so imports only go down.
//!
//! Must not touch: routing (that is `http`) or the on-disk layout: handlers call services and
//! stores through their APIs.

pub mod admin;
pub mod charts;
pub mod endpoints;
pub mod error;
pub mod events;
pub mod log;
pub mod state;
pub mod svix;
pub mod tenants;

pub use error::{ApiError, json_response};
pub use state::AppState;
