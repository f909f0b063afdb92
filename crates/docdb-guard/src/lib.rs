//! docdb-guard: a MongoDB wire-protocol proxy for the tests that refuses, with Amazon
//! DocumentDB's error codes and messages, what DocumentDB 5.0 does not support, in front of a
//! genuine mongod. The product under test talks to it exactly as it would talk to DocumentDB.
//!
//! ```text
//!   client (driver pool:           docdb-guard                                 mongod 6.0.5
//!   many connections)    ┌────────────────────────────────────────────┐
//!        │  OP_MSG ─────►│ read whole message ─► check (rules table) ──┼─ allowed: same bytes ──►│
//!        │  OP_QUERY     │        │                  │ refused         │                         │
//!        │ (handshake)   │        │                  ▼                 │                         │
//!        │◄──────────────┼── {ok: 0, errmsg, code, codeName}           │                         │
//!        │               │   (responseTo = the request's id)           │                         │
//!        │◄──────────────┼── replies, same bytes; hello: guard address ◄┼─────────────────────────│
//!                        └────────────────────────────────────────────┘
//! ```
//!
//! Guarantee: a request DocumentDB would accept reaches mongod byte for byte; one it would
//! refuse never does, and its sender reads DocumentDB's refusal in the request's framing
//! (none for `moreToCome` requests, which want no reply). Replies pass unchanged except
//! `hello`, where the guard's address replaces mongod's (`hosts`, `me`, `primary`) so drivers
//! that discover the replica set stay behind the guard, and `compression` is dropped so no
//! client compresses. Exhaust streams (`moreToCome` replies) pass through as they come.
//!
//! Errors: a malformed or compressed message or a socket error ends that connection only
//! ([`error::WireError`]); bad arguments or an unusable listen address stop the process
//! ([`error::GuardError`]).
//!
//! Layout:
//!
//! The rule table and the checks are the crate `docdb-rules` (re-exported here as `rules`,
//! `check` and `refusal`), which the services' `doctor` reads too.
//!
//! | file          | what it owns                                                           |
//! |---------------|------------------------------------------------------------------------|
//! | `wire.rs`     | message framing, OP_MSG, OP_QUERY, OP_REPLY                            |
//! | `hello.rs`    | the `hello` reply rewrite                                              |
//! | `proxy.rs`    | accept loop, per-connection tasks, forward / refuse                    |
//! | `config.rs`   | command-line settings                                                  |
//! | `error.rs`    | connection and startup errors                                          |

pub mod config;
pub mod error;
pub mod hello;
pub mod proxy;
pub mod wire;

use std::future::Future;

pub use config::Config;
pub use docdb_rules::{check, refusal, rules, Refusal};
pub use error::GuardError;

/// Listens on `config.listen` and guards `config.upstream` until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), GuardError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| GuardError::Listen { addr: config.listen, source })?;
    tracing::info!(listen = %config.listen, upstream = %config.upstream, "guarding");
    let addresses = hello::Addresses { upstream: config.upstream, advertised: config.advertise };
    proxy::serve(listener, addresses, shutdown).await;
    Ok(())
}
