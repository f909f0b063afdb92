//! sink-writer: Kafka → the target MongoDB / DocumentDB, in the target region.
//!
//! ```text
//!  Kafka (read_committed) ──► consumer loop ──► per-partition queue (bounded; bytes from the memory budget)
//!        ▲                    │  rebalance: stop, drain, commit   │ full / budget spent: pause the partition
//!        │ commit durable      │                                  ▼
//!        └── offsets ◄─────────┴─ durable offset (in order) ◄── partition task: decode ─✗─► dead-letter topic
//!            (lag, tooling)                                       │ claim: epoch + 1, offset read back from the target
//!                                                                 │                 + dead_letters (hold the point)
//!                                                                 │ gather: count / bytes / time
//!                                                                 │ plan: collapse per document
//!                                                                 │ transaction: ledger (offset, epoch) ·
//!                                                                 │   update / delete commands · parked writes
//!                                                                 ▼
//!                                             target MongoDB ◄── commit (write concern)
//!                                                                 DDL markers: barrier, then once
//! ```
//!
//! Delivery guarantee (`apply.mode = exactly_once`, the default where the target has
//! transactions): each batch is one target transaction that also moves the partition's offset in
//! the target's ledger under the owner's epoch, so the target holds exactly the records up to that
//! offset. A new owner bumps the epoch and resumes from the ledger: nothing is replayed, no
//! document moves backward, and a former owner's late transaction fails. Kafka's committed offset
//! follows the ledger. In the `idempotent` mode an offset is committed only after the target
//! acknowledged every earlier message of its partition; writes are idempotent, so what a new
//! owner reads again converges (documents may show older versions meanwhile). Either way a
//! message is passed over only once applied or sent to the dead-letter topic and recorded in
//! `<metadata_database>.dead_letters` (an open dead letter holds its partition's consistency point
//! until an operator retries or skips it), and a DDL marker's offset only once the DDL is applied.
//!
//! Errors: every failure to write, to record or apply DDL, or to send a dead letter is retried
//! with capped backoff without committing, and readiness says which part fails; a write refused
//! by a unique secondary index is retried for a while (the value is freed by a change still on
//! its way); records that can never be applied go to the dead-letter topic with headers; a
//! partition task that ends with an error starts again from its durable offset; configuration
//! problems stop the service ([`Error::fatal`]).
//!
//! # Layout
//! | file | owns |
//! |---|---|
//! | `lib.rs` | wiring: clients, shared state, the consumer loop |
//! | `config.rs` | settings and their validation |
//! | `consume/` | Kafka: the consumer and its group, the consumer loop, the owned partitions and their tasks' queues, decoding, durable offsets (committed in one place), ownership fences |
//! | `apply/` | one partition's task: batch → plan → rounds of writes (parking, retries) → outcome → durable offset; the `exactly_once` mode's transactions and ledger |
//! | `ddl/` | the DDL barrier across partitions and replicas; collections, views, indexes and options on the target (`schema/`) |
//! | `point/` | the consistency point (every partition of every topic read, all replicas) and the watermarks passed behind it |
//! | `hooks.rs` | fault injection for the test suites (inert unless a test arms it) |
//! | `dlq.rs` | the dead-letter topic |
//! | `dead_letters/` | dead letters recorded in the target; the points they hold; `sink-writer dead-letters` |
//! | `resend.rs` | asking cdc-source to send documents' current state again (repair, retry) |
//! | `mapping.rs` | source → target namespaces |
//! | `metrics.rs` | every metric |
//! | `cli.rs` | the service's commands: their help and exit status |
//! | `doctor.rs` | `sink-writer doctor` |
//! | `status/` | `sink-writer status`: consistency point, lag, what blocks a cutover, verdict |
//! | `verify/` | `sink-writer verify`: source and target compared while replication runs |
//! | `failback/` | `sink-writer failover record`, `failback reconcile / switch-back / report`: going back after a failover |
//! | `error.rs` | what can go wrong, by what happens next: its own errors beside `service_kit::error`'s |

mod apply;
pub mod cli;
mod config;
mod consume;
mod ddl;
pub mod dead_letters;
mod dlq;
pub mod doctor;
mod error;
pub mod failback;
#[doc(hidden)]
pub mod hooks;
mod mapping;
mod metrics;
mod point;
mod resend;
pub mod status;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use service_kit::backoff::Backoff;
use service_kit::budget::MemoryBudget;
use service_kit::connect::{self, KafkaProbe};
use service_kit::shell::Shell;
use tokio_util::sync::CancellationToken;

use apply::{ledger, mode, partition, retry, shared, transaction, write_plan, writer};
pub use config::{ApplyConfig, ApplyMode, Config, ConsumeConfig, MappingRule, ENV_PREFIX};
use consume::{consumer, dispatch, fence, partitions, subscription};
use ddl::schema;
pub use error::Error;
use point::progress;

/// Readiness component: the target answers (owned by the connectivity watch).
const TARGET: &str = "target-mongodb";

/// A started service: where it serves, and the task to wait for.
pub type Running = service_kit::shell::Running<Error>;

/// Runs until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    start(config, shutdown).await?.wait().await
}

/// Starts the service and returns once its HTTP port is bound.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let shell = Shell::start("sink_writer", &config.http).await?;
    config.kafka.prepare_auth().await;
    let metrics = metrics::Metrics::register(&shell.registry).map_err(|e| Error::fatal(format!("metrics: {e}")))?;
    let client =
        config.mongo.client_for("sink-writer", config.apply.compat).await.map_err(|e| Error::mongo("mongo.uri", e))?;
    let mapper =
        mapping::Mapper::new(&config.apply.mapping).map_err(|e| Error::fatal(format!("apply.mapping: {e}")))?;
    let subscription = subscription::Subscription::new(&config.consume.topics, &config.consume.dead_letter_topic)
        .map_err(|e| Error::fatal(format!("consume.topics: {e}")))?;
    let probe = KafkaProbe::new(&config.kafka).map_err(|e| Error::fatal(format!("kafka: {e}")))?;
    let http_addr = shell.http_addr;
    let task = tokio::spawn(async move {
        // Readiness reports on both servers from the start, whatever the steps below wait for.
        let watch = tokio::spawn(connect::watch(
            shell.health.clone(),
            TARGET,
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
                let retrier = retry::Retrier::new(
                    shell.health.clone(),
                    metrics.retries.clone(),
                    Duration::from_millis(config.apply.max_backoff_ms),
                );
                let schema = Arc::new(schema::Schema::new(
                    client.clone(),
                    &config.apply.metadata_database,
                    config.apply.ttl,
                    shell.health.clone(),
                    metrics.schema_conflicts.clone(),
                ));
                // The target's indexes against the source's announcements; stops with this scope.
                let _index_check = schema::index_check::start(
                    &client,
                    &config.apply,
                    shell.health.clone(),
                    metrics.target_only_indexes.clone(),
                );
                let ddl = ddl::DdlApplier::new(
                    Box::new(ddl::catalog::TargetCatalog { client: client.clone(), schema: schema.clone() }),
                    Box::new(client.database(&config.apply.metadata_database).collection::<bson::Document>("ddl")),
                    mapper.clone(),
                    &config.consume.group_id,
                    retrier.clone(),
                );
                let book =
                    progress::ProgressBook::new(&client, &config.apply.metadata_database, &config.consume.group_id);
                let ledger = ledger::Ledger::new(&client, &config.apply.metadata_database, &config.consume.group_id);
                let exactly_once =
                    match until_ready("find out whether the target has transactions", &config, &shutdown, || {
                        mode::exactly_once(&client, config.apply.mode, &ledger)
                    })
                    .await?
                    {
                        Some(exactly_once) => exactly_once,
                        None => return shell.finish(vec![watch], Ok(())).await,
                    };
                let letters =
                    dead_letters::Book::new(&client, &config.apply.metadata_database, &config.consume.group_id);
                let dead_letter_book = dead_letters::DeadLetterBook::new(letters);
                // Partitions with open dead letters hold their point from the first batch on.
                if until_ready("read open dead letters", &config, &shutdown, || dead_letter_book.refresh())
                    .await?
                    .is_none()
                {
                    return shell.finish(vec![watch], Ok(())).await;
                }
                let shared = Arc::new(shared::Shared {
                    client: client.clone(),
                    exactly_once,
                    ledger,
                    write_concern: transaction::write_concern(&config.apply.write_concern, config.apply.journal),
                    field_names: match config.apply.compat.resolve(config.mongo.uri.expose()) {
                        service_kit::connect::Compat::Documentdb => write_plan::FieldNames::NoDotsOrDollars,
                        _ => write_plan::FieldNames::Any,
                    },
                    writer: writer::Writer::new(&config.apply.write_concern, config.apply.journal),
                    dead_letters,
                    dead_letter_book,
                    ddl,
                    schema,
                    mapper,
                    metrics,
                    health: shell.health.clone(),
                    retrier,
                    subscription,
                    apply: config.apply.clone(),
                });
                consume(&config, shared, book, &shell, shutdown).await
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        shell.finish(vec![watch], result).await
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
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_millis(config.apply.max_backoff_ms));
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
        if !backoff.wait(shutdown).await {
            return Ok(None);
        }
    }
}

/// Wires the consumer, the partitions and the consumer loop, and runs the loop.
async fn consume(
    config: &Config,
    shared: Arc<shared::Shared>,
    book: progress::ProgressBook,
    shell: &Shell,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let memory = consumer::MemoryPlan::new(config.apply.memory_budget_bytes, config.consume.max_record_bytes);
    let budget = MemoryBudget::new(memory.records_bytes);
    shared.metrics.memory_budget_bytes.set(i64::try_from(config.apply.memory_budget_bytes).unwrap_or(i64::MAX));
    let member = Arc::new(consumer::Member::default());
    let (control_tx, control) = tokio::sync::mpsc::channel(1024);
    let ties = partitions::Ties {
        owner: member.clone(),
        standstill: fence::StandStill::start(consumer::ownership_lease(config), &tokio::runtime::Handle::current()),
        control: control_tx,
    };
    let limits = partitions::Limits::new(
        config.apply.batch_max_docs,
        Duration::from_millis(config.apply.max_backoff_ms),
        Duration::from_millis(config.apply.drain_timeout_ms),
    );
    let partitions = Arc::new(partitions::Partitions::new(
        Arc::new(partition::Apply(shared.clone())),
        shared.metrics.clone(),
        shared.health.clone(),
        budget.clone(),
        ties,
        limits,
    ));
    let kafka = consumer::create(config, partitions.clone(), memory)?;
    member.set(&kafka);
    let dispatcher = dispatch::Dispatcher {
        consumer: kafka,
        partitions,
        control,
        subscription: shared.subscription.clone(),
        subscribed: Default::default(),
        commit_interval: Duration::from_millis(config.consume.commit_interval_ms),
        refresh_interval: Duration::from_millis(config.consume.topic_refresh_interval_ms),
        health: shell.health.clone(),
        metrics: shared.metrics.clone(),
        budget,
        point: Arc::new(point::PointReader::with_book(config, book)?),
    };
    let beat = shell.health.register_loop("consumer", Duration::from_secs(120));
    let refreshing = partition::AbortOnDrop(tokio::spawn(async move {
        dead_letters::refresh(&shared.dead_letter_book, &shared.metrics.held_by_dead_letters).await
    }));
    let result = dispatcher.run(beat, shutdown).await;
    drop(refreshing);
    result
}
