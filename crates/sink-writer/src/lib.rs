//! sink-writer: Kafka → the target MongoDB / DocumentDB, in the target region.
//!
//! ```text
//!  Kafka (read_committed) ──► consumer ──► per-partition queue (bounded) ──► partition task
//!        ▲                    │  rebalance: stop, drain, commit             │ gather: count / bytes / time
//!        │ commit durable      │                                             │ decode ──✗──► dead-letter topic
//!        └── offsets ◄─────────┴──── durable offset (in order) ◄── ack ◄──── │ plan: collapse per document
//!                                                                            │ write: unordered bulks, ≤ N in
//!                                                                            ▼ flight over disjoint documents
//!                                                        target MongoDB ◄── update / delete commands
//!                                                                            DDL markers: barrier, then once
//! ```
//!
//! Delivery guarantee: an offset is committed only after the target acknowledged (with the
//! configured write concern) every earlier message of its partition, or the message went to
//! the dead-letter topic; every write is idempotent, so messages read again after a crash or
//! rebalance leave the target as it was. The target converges to the source exactly. A replica
//! that stood still (paused process or host) past a third of the session timeout proves it still
//! owns a partition before its next write to it (`fence`), so it never writes a batch the group
//! has meanwhile given to another replica.
//!
//! Errors: transient write failures are retried with capped backoff without committing (and
//! readiness drops); records that can never be applied go to the dead-letter topic with headers;
//! configuration problems stop the service ([`Error::Fatal`]).

mod batcher;
mod config;
mod consumer;
mod ddl;
mod dlq;
pub mod doctor;
mod error;
mod fence;
mod mapping;
mod metrics;
mod partition;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use service_kit::connect::{self, KafkaProbe};
use service_kit::shell::Shell;
use tokio_util::sync::CancellationToken;

pub use config::{ApplyConfig, Config, ConsumeConfig, MappingRule, ENV_PREFIX};
pub use error::Error;

/// A started service: where it serves, and the task to wait for.
pub type Running = service_kit::shell::Running<Error>;

/// Runs until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    start(config, shutdown).await?.wait().await
}

/// Starts the service and returns once its HTTP port is bound.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let http_shutdown = CancellationToken::new();
    let shell = Shell::start("sink_writer", &config.http, http_shutdown.clone()).await?;
    let metrics = metrics::Metrics::register(&shell.registry).map_err(|e| Error::Fatal(format!("metrics: {e}")))?;
    let client =
        config.mongo.client_for("sink-writer", config.apply.compat).await.map_err(|e| Error::mongo("mongo.uri", e))?;
    let mapper =
        mapping::Mapper::new(&config.apply.mapping).map_err(|e| Error::Fatal(format!("apply.mapping: {e}")))?;
    let probe = KafkaProbe::new(&config.kafka).map_err(|e| Error::Fatal(format!("kafka: {e}")))?;
    let http_addr = shell.http_addr;
    let task = tokio::spawn(async move {
        // Readiness reports on both servers from the start, whatever the steps below wait for.
        let watch = tokio::spawn(connect::watch(
            shell.health.clone(),
            partition::TARGET,
            client.clone(),
            "kafka",
            probe,
            Duration::from_secs(5),
            shutdown.clone(),
        ));
        let dead_letters = until_ready("set up the dead-letter topic", &config, &shutdown, || {
            dlq::DeadLetters::new(&config.kafka, &config.consume.dead_letter_topic)
        });
        let result = match dead_letters.await {
            Ok(Some(dead_letters)) => {
                let shared = Arc::new(partition::Shared {
                    writer: writer::Writer::new(client.clone(), &config.apply.write_concern, config.apply.journal),
                    dead_letters,
                    ddl: ddl::DdlApplier::new(client, &config.apply.metadata_database, mapper.clone()),
                    mapper,
                    metrics,
                    health: shell.health.clone(),
                    limits: config.apply.clone(),
                });
                consume(&config, shared, &shell, shutdown).await
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        watch.abort();
        http_shutdown.cancel();
        shell.stop().await?;
        result
    });
    Ok(Running::new(http_addr, task))
}

/// Runs `attempt` until it succeeds, retrying retriable failures with capped backoff (logged
/// as "cannot {what} yet"); `None` once `shutdown` is requested.
async fn until_ready<T, F, Fut>(
    what: &str,
    config: &Config,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> Result<Option<T>, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let mut backoff = Duration::from_millis(200);
    loop {
        let outcome = tokio::select! {
            outcome = attempt() => outcome,
            _ = shutdown.cancelled() => return Ok(None),
        };
        match outcome {
            Ok(value) => return Ok(Some(value)),
            Err(e) if e.is_retriable() => tracing::warn!(error = %e, "cannot {what} yet: retrying"),
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_millis(config.apply.max_backoff_ms));
    }
}

async fn consume(
    config: &Config,
    shared: Arc<partition::Shared>,
    shell: &Shell,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    // Applied DDL must be known before any event is judged obsolete or not.
    if until_ready("read applied DDL", config, &shutdown, || shared.ddl.load()).await?.is_none() {
        return Ok(());
    }
    let dispatcher = consumer::Dispatcher::new(config, shared)?;
    let beat = shell.health.register_loop("consumer", Duration::from_secs(120));
    dispatcher.run(beat, shutdown).await
}
