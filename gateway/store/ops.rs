//! The writes of the store: every change arrives at a writer as an [`Op`] carrying its reply
//! channel, whatever the backend, and is answered with a [`Reply`] once its batch committed.
//!
//! Owns: the operation, body and reply types both writers share.
//! Must not touch: how a backend applies them (`store::redb::write`, `store::pg::write`) or the
//! loop that drains them (`store::writer`).

use tokio::sync::oneshot;
use uuid::Uuid;

use super::{Effects, Finish, IngestOutcome, IngestWrite, PruneReport, PruneRequest, StoreError};
use crate::model::{EndpointRecord, EventTypeRecord, TenantRecord, TokenRecord};
use crate::tally::Row;

/// One write, and where its answer goes once the batch holding it has committed.
pub(crate) enum Op {
    Ingest(IngestWrite, oneshot::Sender<Result<IngestOutcome, StoreError>>),
    Finish(Finish, Effects, oneshot::Sender<Result<(), StoreError>>),
    PutEndpoint(EndpointRecord, oneshot::Sender<Result<(), StoreError>>),
    /// An endpoint's health changed outside an attempt (enabled or disabled by hand), with the
    /// operational events announcing it.
    PutHealth(Effects, oneshot::Sender<Result<(), StoreError>>),
    Prune(PruneRequest, oneshot::Sender<Result<PruneReport, StoreError>>),
    /// The endpoint no longer orders its deliveries: every queued one becomes due.
    ReleaseFifo(String, oneshot::Sender<Result<usize, StoreError>>),
    PutTenant(TenantRecord, oneshot::Sender<Result<(), StoreError>>),
    /// Removes a tenant with its endpoints, their health and its tokens (its deliveries stay).
    DeleteTenant(String, oneshot::Sender<Result<(), StoreError>>),
    PutToken(TokenRecord, oneshot::Sender<Result<(), StoreError>>),
    DeleteToken(String, oneshot::Sender<Result<(), StoreError>>),
    DeleteEndpoint(String, oneshot::Sender<Result<(), StoreError>>),
    Requeue {
        ids: Vec<Uuid>,
        at_ms: u64,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    /// Creates or replaces an event type (the Svix-compatible API).
    PutEventType(EventTypeRecord, oneshot::Sender<Result<(), StoreError>>),
    /// Adds the charts' counts (`tally`) to their buckets, dropping buckets past their keep.
    AddTally {
        rows: Vec<Row>,
        now_ms: u64,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// An operation without its reply channel: what a writer keeps so that a batch the database
/// refused can be applied again one operation at a time (see `store::writer`).
#[derive(Clone)]
pub(crate) enum Body {
    Ingest(IngestWrite),
    Finish(Finish, Effects),
    PutEndpoint(EndpointRecord),
    PutHealth(Effects),
    Prune(PruneRequest),
    ReleaseFifo(String),
    PutTenant(TenantRecord),
    DeleteTenant(String),
    PutToken(TokenRecord),
    DeleteToken(String),
    DeleteEndpoint(String),
    Requeue { ids: Vec<Uuid>, at_ms: u64 },
    AddTally { rows: Vec<Row>, now_ms: u64 },
    PutEventType(EventTypeRecord),
}

impl Op {
    /// Whether it changes what every node keeps in memory (endpoints, tenants, tokens), so
    /// that the other nodes of a shared database must reload theirs.
    pub(crate) fn changes_settings(&self) -> bool {
        matches!(
            self,
            Op::PutEndpoint(..)
                | Op::DeleteEndpoint(..)
                | Op::PutTenant(..)
                | Op::DeleteTenant(..)
                | Op::PutToken(..)
                | Op::DeleteToken(..)
        )
    }

    pub(crate) fn body(&self) -> Body {
        match self {
            Op::Ingest(w, _) => Body::Ingest(w.clone()),
            Op::Finish(f, e, _) => Body::Finish(f.clone(), e.clone()),
            Op::PutEndpoint(e, _) => Body::PutEndpoint(e.clone()),
            Op::PutHealth(e, _) => Body::PutHealth(e.clone()),
            Op::Prune(r, _) => Body::Prune(r.clone()),
            Op::ReleaseFifo(s, _) => Body::ReleaseFifo(s.clone()),
            Op::PutTenant(r, _) => Body::PutTenant(r.clone()),
            Op::DeleteTenant(s, _) => Body::DeleteTenant(s.clone()),
            Op::PutToken(r, _) => Body::PutToken(r.clone()),
            Op::DeleteToken(s, _) => Body::DeleteToken(s.clone()),
            Op::DeleteEndpoint(s, _) => Body::DeleteEndpoint(s.clone()),
            Op::Requeue { ids, at_ms, .. } => Body::Requeue { ids: ids.clone(), at_ms: *at_ms },
            Op::AddTally { rows, now_ms, .. } => Body::AddTally { rows: rows.clone(), now_ms: *now_ms },
            Op::PutEventType(r, _) => Body::PutEventType(r.clone()),
        }
    }
}

impl Body {
    /// The operation again, answering through the channel of `reply` (the reply the refused
    /// batch made for this same operation).
    pub(crate) fn with(self, reply: Reply) -> Op {
        match (self, reply) {
            (Body::Ingest(w), Reply::Ingest(tx, _)) => Op::Ingest(w, tx),
            (Body::Finish(f, e), Reply::Unit(tx, _)) => Op::Finish(f, e, tx),
            (Body::PutEndpoint(e), Reply::Unit(tx, _)) => Op::PutEndpoint(e, tx),
            (Body::PutHealth(e), Reply::Unit(tx, _)) => Op::PutHealth(e, tx),
            (Body::Prune(r), Reply::Prune(tx, _)) => Op::Prune(r, tx),
            (Body::ReleaseFifo(s), Reply::Count(tx, _)) => Op::ReleaseFifo(s, tx),
            (Body::PutTenant(r), Reply::Unit(tx, _)) => Op::PutTenant(r, tx),
            (Body::DeleteTenant(s), Reply::Unit(tx, _)) => Op::DeleteTenant(s, tx),
            (Body::PutToken(r), Reply::Unit(tx, _)) => Op::PutToken(r, tx),
            (Body::DeleteToken(s), Reply::Unit(tx, _)) => Op::DeleteToken(s, tx),
            (Body::DeleteEndpoint(s), Reply::Unit(tx, _)) => Op::DeleteEndpoint(s, tx),
            (Body::Requeue { ids, at_ms }, Reply::Count(reply, _)) => Op::Requeue { ids, at_ms, reply },
            (Body::AddTally { rows, now_ms }, Reply::Unit(reply, _)) => Op::AddTally { rows, now_ms, reply },
            (Body::PutEventType(r), Reply::Unit(tx, _)) => Op::PutEventType(r, tx),
            _ => unreachable!("a batch answers each operation with the reply of its kind, in order"),
        }
    }
}

/// A reply to send once the batch's commit has succeeded or failed.
pub(crate) enum Reply {
    Ingest(oneshot::Sender<Result<IngestOutcome, StoreError>>, Result<IngestOutcome, StoreError>),
    Unit(oneshot::Sender<Result<(), StoreError>>, Result<(), StoreError>),
    Count(oneshot::Sender<Result<usize, StoreError>>, Result<usize, StoreError>),
    Prune(oneshot::Sender<Result<PruneReport, StoreError>>, Result<PruneReport, StoreError>),
}

impl Reply {
    /// Answers the caller: its own result if the batch committed, the commit's error if not.
    pub(crate) fn send(self, commit: &Result<(), StoreError>) {
        fn pick<T>(own: Result<T, StoreError>, commit: &Result<(), StoreError>) -> Result<T, StoreError> {
            match commit {
                Ok(()) => own,
                Err(e) => Err(e.clone()),
            }
        }
        match self {
            Reply::Ingest(tx, r) => drop(tx.send(pick(r, commit))),
            Reply::Unit(tx, r) => drop(tx.send(pick(r, commit))),
            Reply::Count(tx, r) => drop(tx.send(pick(r, commit))),
            Reply::Prune(tx, r) => drop(tx.send(pick(r, commit))),
        }
    }
}

/// Separates a storage failure (which abandons the batch) from the operation's own answer.
pub(crate) fn split<T>(
    r: Result<Result<T, StoreError>, StoreError>,
    failure: &mut Option<StoreError>,
    reply: impl FnOnce(Result<T, StoreError>) -> Reply,
) -> Reply {
    match r {
        Ok(own) => reply(own),
        Err(e) => {
            *failure = Some(e.clone());
            reply(Err(e))
        }
    }
}
