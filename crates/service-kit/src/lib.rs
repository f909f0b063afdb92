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
//! shape of a failed MongoDB or Kafka call (context, reason, retriable), and the one place that
//! decides from a MongoDB or Kafka error whether to retry; `error` is the part of the services'
//! `Error` they share (fatal, HTTP, MongoDB, Kafka), which each wraps beside its own variants.
//!
//! `doctor` holds the checks both services' `doctor` share; `documentdb_fit` says what an Amazon
//! DocumentDB target will not carry of a deployment's collections (docdb-rules' table).
//!
//! AWS: `aws_identity` keeps the process's credentials (the SDK's chain, refreshed ahead of
//! expiry by a task of its own, `credential_cache`); `kafka_auth` signs MSK IAM tokens with
//! them (`msk_iam`) for the cluster's region (`msk_region`), never waiting for a credential
//! source; `metrics` exports both, and readiness has an `aws-credentials` component.
//!
//! # Layout
//! | file | owns |
//! |---|---|
//! | `app.rs` | a service's whole `main`: arguments, configuration, logging, runtime, `run(config, shutdown)` |
//! | `cli.rs` | the command lines (clap): the shell's flags, `doctor`, each service's commands, `--version` |
//! | `config.rs` | layered configuration, validation, redacted secrets |
//! | `telemetry.rs` | logging: human or JSON lines, level directives |
//! | `shutdown.rs` | SIGTERM / SIGINT → the cancellation token |
//! | `shell.rs` | what every service starts before its pipeline: registry, health, HTTP port |
//! | `http.rs` | `/health/livez`, `/health/readyz`, `/metrics` |
//! | `health.rs` | liveness (loops beat) and readiness (components ok) |
//! | `probe.rs` | `--probe PATH`: the binary asks its own port |
//! | `metrics.rs` | the metrics the shell adds to every service |
//! | `backoff.rs` | the one retry policy: capped exponential backoff with jitter |
//! | `failure.rs` | a failed MongoDB or Kafka call, and whether to retry it (the error-code table) |
//! | `error.rs` | the errors both services have (fatal, HTTP, MongoDB, Kafka), defined once |
//! | `budget.rs` | the memory budget every growing buffer reserves from |
//! | `connect.rs` | MongoDB connection settings, clients, `compat`, reachability checks |
//! | `kafka_connection.rs` | the Kafka cluster: bootstrap servers, security, client options |
//! | `kafka_auth.rs` | authentication librdkafka cannot express (MSK IAM through OAUTHBEARER) |
//! | `msk_iam.rs` | MSK IAM tokens: the signed `kafka-cluster:Connect` request |
//! | `msk_region.rs` | the region MSK IAM tokens are signed for |
//! | `aws_identity.rs` | the process's AWS credentials: the SDK's chain, refreshed ahead of expiry |
//! | `credential_cache.rs` | the credentials between two lookups, and when to look again |
//! | `doctor.rs` | the checks both services' `doctor` share, and the report |
//! | `documentdb_fit.rs` | what an Amazon DocumentDB target will not carry (docdb-rules' table) |
//! | `id_order.rs` | continuing an `_id`-ordered read with the operators DocumentDB has |

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
pub mod error;
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
