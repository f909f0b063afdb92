//! cdc-source: MongoDB / DocumentDB change streams → Kafka, in the source region.
//!
//! ```text
//!                ┌──────────── checkpoint (compacted topic or file) ◄──────────────────────┐
//!                │ plan: snapshot | resumeAfter | startAtOperationTime (stored/set) | now    │
//!                ▼                                                                           │
//!   MongoDB ──► snapshot (fix position; views; per collection: create + unique indexes,      │
//!           │             documents by _id, other indexes) ─┐                                │
//!           └─► change stream (expanded events,            ─┴─► convert ─► bounded queue ─► delivery:
//!               post-batch tokens)                             envelope    (items and     batch + watermark
//!               events > 16 MiB: split or re-read              records     bytes:         → producer (txn:
//!               rename into scope: markers + copy              (transform  backpressure)  records, watermark,
//!               no expanded events: index comparison           rules first)               checkpoint)
//!   request topic ──► re-send window (read by _id; copies out once the stream passes the read,
//!                     with the reply and the request's offset)
//! ```
//!
//! Delivery guarantee: with `delivery.guarantee = "exactly_once"` (default) every batch of
//! records and the checkpoint covering it are one Kafka transaction, so after any crash a
//! `read_committed` consumer sees each change exactly once; with `at_least_once`, the
//! checkpoint moves only after every earlier record is acknowledged, so a crash can repeat
//! changes since the last checkpoint but never lose one. One document always maps to one key
//! and so to one partition, in source order.
//!
//! Watermarks (`delivery.watermark_interval_ms`) go to every partition of every topic the source
//! writes, in the transaction of the batch that proves them: every change captured up to their
//! cluster time is before them on the partition.
//!
//! Re-sends (`topics.request_topic`): documents an operator asks for (`sink-writer verify
//! --repair`, `dead-letters retry`) are read again and sent ordered with the stream, as
//! incremental reads with `cdc.resend` (`resend/`).
//!
//! Errors: transient MongoDB / Kafka failures restart the pipeline from the last durable
//! checkpoint with capped backoff ([`Error::is_retriable`]); a lost resume point follows
//! `capture.on_history_lost`; anything else ([`Error::fatal`]) stops the service with the cause.
//!
//! Standby (`election.enabled`): several instances of one capture, one active. They are members
//! of a Kafka consumer group on the checkpoint topic; the one holding its partition captures, the
//! others wait, ready, and one of them takes over when the group drops the active one (dead,
//! frozen, cut off: after `election.session_timeout_ms`; stopped: at once). Taking over
//! initialises the transactional id, which fences the former active instance.
//!
//! # Layout
//! | file | owns |
//! |---|---|
//! | `lib.rs` | wiring: `run(config, shutdown)`, the shell, readiness |
//! | `role.rs` | active or standby: runs the pipeline alone, or whenever `election` elects this instance |
//! | `election.rs` | which instance of a capture is active, elected through the checkpoint topic's group |
//! | `supervisor.rs` | the restart policy: what a failed run leads to (pure) |
//! | `pipeline.rs` | wiring one run: plan from the checkpoint, snapshot and/or stream into the queue, delivery |
//! | `start.rs` | a configured start after a cluster time, without a snapshot (failback's reverse capture) |
//! | `snapshot/` | what is there: the initial snapshot, each collection copied in `_id` order or in parallel ranges |
//! | `capture/` | what changes: change streams opened and read, events over 16 MiB, schema changes, conversion to records through the transform rules, routing to topics |
//! | `resend/` | documents sent again on request, ordered with the stream |
//! | `delivery/` | the bounded queue, batches, watermarks, the producer's transactions with the checkpoint, topics, the checkpoint store |
//! | *around* | |
//! | `config.rs` | settings and their validation |
//! | `error.rs` | what can go wrong, split by what happens next: its own errors beside `service_kit::error`'s |
//! | `metrics.rs` | every metric |
//! | `history.rs` | how far back the source keeps change history |
//! | `server.rs` | the source's clock and what is asked outside streams and copies |
//! | `doctor.rs` | `cdc-source doctor` |
//! | `hooks.rs` | fault injection for the test suites (inert unless a test arms it) |

mod capture;
mod config;
mod delivery;
pub mod doctor;
mod election;
mod error;
mod history;
#[doc(hidden)]
pub mod hooks;
mod metrics;
mod pipeline;
mod resend;
mod role;
mod server;
mod snapshot;
mod start;
mod supervisor;

use std::time::Duration;

use service_kit::connect::{self, KafkaProbe};
use service_kit::shell::Shell;
use tokio_util::sync::CancellationToken;

pub use config::{
    CaptureConfig, CheckpointStore, Compat, Config, DeliveryConfig, ElectionConfig, Guarantee, HistoryLostPolicy,
    IndexTiming, Scope, SnapshotConfig, SnapshotMode, TopicConfig, ENV_PREFIX,
};
pub use error::Error;

/// A started service: where it serves, and the task to wait for.
pub type Running = service_kit::shell::Running<Error>;

/// Runs until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    start(config, shutdown).await?.wait().await
}

/// Starts the service and returns once its HTTP port is bound.
pub async fn start(mut config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    config.capture.compat = config.capture.compat.resolve(config.mongo.uri.expose());
    let shell = Shell::start("cdc_source", &config.http).await?;
    config.kafka.prepare_auth().await;
    let metrics = metrics::Metrics::register(&shell.registry).map_err(|e| Error::fatal(format!("metrics: {e}")))?;
    metrics.memory_budget.set(i64::try_from(config.delivery.memory_budget_bytes).unwrap_or(i64::MAX));
    let http_addr = shell.http_addr;
    let stop_timeout = Duration::from_millis(config.delivery.shutdown_timeout_ms);
    let client =
        config.mongo.client_for("cdc-source", config.capture.compat).await.map_err(|e| Error::mongo("mongo.uri", e))?;
    let probe = KafkaProbe::new(&config.kafka).map_err(|e| Error::fatal(format!("kafka: {e}")))?;
    let task = tokio::spawn(async move {
        let ticker = tokio::spawn(checkpoint_age_ticker(metrics.clone()));
        let history = tokio::spawn(history::ticker(client.clone(), config.capture.clone(), metrics.clone()));
        let watch = tokio::spawn(connect::watch(
            shell.health.clone(),
            "source-mongodb",
            client.clone(),
            "kafka",
            probe,
            Duration::from_secs(5),
            shutdown.clone(),
        ));
        let pipeline = role::run(config, client, shell.health.clone(), metrics, shutdown.clone());
        tokio::pin!(pipeline);
        let result = tokio::select! {
            result = &mut pipeline => result,
            // After a stop request the pipeline gets a deadline to commit what it has.
            _ = async { shutdown.cancelled().await; tokio::time::sleep(stop_timeout).await } => {
                Err(Error::fatal(format!("did not stop within {} ms of the stop request", stop_timeout.as_millis())))
            }
        };
        shell.finish(vec![ticker, history, watch], result).await
    });
    Ok(Running::new(http_addr, task))
}

/// Keeps `cdc_source_checkpoint_age_seconds` current between checkpoints.
async fn checkpoint_age_ticker(metrics: metrics::Metrics) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let written = metrics.checkpoint_timestamp.get();
        if written > 0 {
            metrics.checkpoint_age.set((server::now_ms() / 1000 - written).max(0));
        }
    }
}
