//! The shell both services share, so that each service crate holds only its pipeline.
//!
//! ```text
//!   argv ──► cli::parse ──► config::load (defaults → TOML file → PREFIX__SECTION__KEY env)
//!                                │ validate(): every problem at once, secrets redacted
//!                                ▼
//!                        telemetry::init (human | json)
//!                                │
//!   SIGTERM/SIGINT ──► shutdown::on_signals ──► CancellationToken ──► the service's run()
//!                                                                       │
//!                     http::serve ◄── Health (loop beats, readiness) ◄──┤
//!                      /health/livez  /health/readyz  /metrics  ◄── prometheus Registry
//! ```
//!
//! Liveness is "every registered loop beat recently", readiness is "every declared component
//! reports ok"; the services set both. `connect` holds the MongoDB and Kafka connection settings
//! both services share, and the cheap checks that say whether each answers; `failure` is the
//! shape of a failed MongoDB or Kafka call (context, reason, retriable) both services' errors
//! wrap, and the one place that decides from a MongoDB or Kafka error whether to retry.
//!
//! `doctor` holds the checks both services' `doctor` share; `documentdb_fit` says what an Amazon
//! DocumentDB target will not carry of a deployment's collections (docdb-rules' table).
//!
//! AWS: `aws_identity` keeps the process's credentials (the SDK's chain, refreshed ahead of
//! expiry by a task of its own, `credential_cache`); `kafka_auth` signs MSK IAM tokens with
//! them (`msk_iam`) for the cluster's region (`msk_region`), never waiting for a credential
//! source; `metrics` exports both, and readiness has an `aws-credentials` component.

pub mod app;
pub mod aws_identity;
pub mod backoff;
pub mod budget;
pub mod cli;
pub mod config;
pub mod connect;
pub mod credential_cache;
pub mod doctor;
pub mod documentdb_fit;
pub mod failure;
pub mod health;
pub mod http;
pub mod id_order;
pub mod kafka_auth;
pub mod kafka_connection;
pub mod metrics;
pub mod msk_iam;
pub mod msk_region;
pub mod probe;
pub mod shell;
pub mod shutdown;
pub mod telemetry;
