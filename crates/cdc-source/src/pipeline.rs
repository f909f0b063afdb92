//! Wiring: plan from the checkpoint, then snapshot and/or stream into the queue while the
//! delivery loop drains it. A transient failure tears the whole pipeline down and starts it
//! again from the last durable checkpoint after a capped backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use service_kit::health::Health;
use tokio_util::sync::CancellationToken;

use crate::capture::change_stream::StreamLoop;
use crate::capture::convert::Converter;
use crate::capture::routing::{NamespaceFilter, TopicRouter};
use crate::capture::watch::Start;
use crate::config::{Config, SnapshotMode};
use crate::delivery::checkpoint::{self, Plan, SnapshotState};
use crate::delivery::producer::Producer;
use crate::delivery::queue;
use crate::delivery::watermark::Watermarks;
use crate::delivery::Delivery;
use crate::election::Election;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::resend::Resender;
use crate::server;
use crate::snapshot::Snapshot;
use crate::supervisor::{Decision, Supervisor};

/// Readiness component: ready while streaming or snapshotting (or standing by).
pub const COMPONENT: &str = "pipeline";
/// Runs the pipeline until `shutdown`, starting it again as the supervisor decides. With an
/// `election`, every start needs this instance's hold on it confirmed first, and a fence with
/// the hold gone is the successor's doing: the pipeline then ends (`Ok`) instead.
pub async fn run(
    config: Config,
    client: mongodb::Client,
    health: Health,
    metrics: Metrics,
    election: Option<&Election>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    health.declare(COMPONENT);
    let filter = NamespaceFilter::new(&config.capture).map_err(|e| Error::fatal(e.to_string()))?;
    let mut supervisor = Supervisor::new(&config);
    let mut force_snapshot = false;
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        // A start initialises the transactional id, fencing whoever holds it: only the elected one may.
        if let Some(Err(reason)) = confirm(election).await {
            tracing::warn!(%reason, "not elected any more: not starting capture");
            return Ok(());
        }
        let started = Instant::now();
        let result = run_once(&config, &client, &filter, force_snapshot, &health, &metrics, &shutdown).await;
        force_snapshot = false;
        let error = match result {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        metrics.restarts.with_label_values(&[error.kind()]).inc();
        let description = error.to_string();
        // Only a fence asks the election: who fenced us?
        let elected = match (&error, election) {
            (Error::Fenced(_), Some(election)) => Some(election.confirm().await.is_ok()),
            _ => None,
        };
        match supervisor.decide(error, started.elapsed(), Instant::now(), elected) {
            Decision::StandBy => {
                tracing::warn!(error = %description, "fenced by the instance elected after this one: capture stops");
                return Ok(());
            }
            Decision::Resnapshot => {
                tracing::warn!(error = %description, "resume point lost: taking a new snapshot");
                force_snapshot = true;
            }
            Decision::WaitForOperator(error) => {
                metrics.history_lost.set(1);
                tracing::error!(error = %error, "resume point lost: not ready until an operator acts");
                health.set_not_ready(COMPONENT, error.to_string());
                shutdown.cancelled().await;
                return Err(error);
            }
            Decision::Stop(error) => {
                health.set_not_ready(COMPONENT, format!("stopped: {error}"));
                return Err(error);
            }
            Decision::Restart(pause) => {
                health.set_not_ready(COMPONENT, format!("restarting after: {description}"));
                tracing::warn!(error = %description, backoff_ms = pause.as_millis() as u64, "pipeline failed: restarting from the checkpoint");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

async fn run_once(
    config: &Config,
    client: &mongodb::Client,
    filter: &NamespaceFilter,
    force_snapshot: bool,
    health: &Health,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Result<(), Error> {
    // Connecting waits for Kafka (init_transactions, the checkpoint read) up to a minute: a stop
    // request must not wait for it.
    let connect = async {
        let producer = Producer::connect(config).await?;
        let stored = producer.store().load().await?;
        Ok::<_, Error>((producer, stored))
    };
    let (mut producer, stored) = tokio::select! {
        connected = connect => connected?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let configured = crate::start::parse(&config.capture.start_after_cluster_time).map_err(Error::fatal)?;
    if configured.is_some() && stored.is_some() {
        tracing::info!("capture.start_after_cluster_time is not used: the capture has a checkpoint");
    }
    let plan = if force_snapshot {
        Plan::Snapshot(SnapshotState::default())
    } else {
        checkpoint::configured_start(
            stored.as_ref(),
            configured,
            checkpoint::plan(stored.as_ref(), config.snapshot.mode),
        )
    };
    let mut checkpoint = stored.unwrap_or_default();
    // "Now" is fixed durably before streaming: a restart before the first batch is committed (a
    // crash, a fence) starts where this start did, not at a later "now" that skips what came
    // in between.
    let plan = match plan {
        Plan::StartNow => {
            let at = server::cluster_time(client).await?;
            checkpoint.cluster_time = Some(at);
            checkpoint.written_at_ms = server::now_ms();
            producer.write(&[], &mut checkpoint, None).await?;
            Plan::StartAfter(at)
        }
        other => other,
    };
    tracing::info!(plan = plan_name(&plan), seq = checkpoint.seq, "starting");
    let mut converter = Converter::new(
        config.capture.name.clone(),
        config.capture.mode,
        config.capture.tombstones,
        TopicRouter::new(&config.topics),
        filter.clone(),
        checkpoint.seq,
    );
    converter.rs = server::replica_set_name(client).await;
    converter.transforms =
        transform::Rules::load(&config.transforms).map_err(|problems| Error::fatal(problems.join("; ")))?;
    converter.recopy_renames_until = checkpoint.snapshot.as_ref().and_then(|s| s.completed_at);
    let seq = converter.seq.clone();
    let source =
        envelope::SourceInfo { name: config.capture.name.clone(), rs: converter.rs.clone(), ..Default::default() };
    let (tx, rx) = queue::bounded(config.delivery.queue_capacity, config.delivery.queue_bytes());
    let answered = checkpoint.requests_offset;
    let delivery = Delivery {
        producer,
        checkpoint,
        seq,
        metrics: metrics.clone(),
        beat: health.register_loop("delivery", Duration::from_secs(120)),
        watermarks: Watermarks::new(config.delivery.watermark_interval_ms, source),
    };
    metrics.history_lost.set(0);

    // Capture stops on shutdown and closes the queue; delivery drains it and commits the rest.
    let stop_capture = shutdown.child_token();
    let capture = Capture { config, client, filter, health, metrics, answered };
    let capture = capture.run(converter, plan, tx, &stop_capture);
    let drain = async {
        let result = delivery.run(rx, &config.delivery).await;
        if result.is_err() {
            stop_capture.cancel(); // a failed delivery ends capture too
        }
        result
    };
    let (captured, delivered) = tokio::join!(capture, drain);
    delivered?;
    captured
}

/// What capture needs besides its own state: the configuration, the source, and the shell.
struct Capture<'a> {
    config: &'a Config,
    client: &'a mongodb::Client,
    filter: &'a NamespaceFilter,
    health: &'a Health,
    metrics: &'a Metrics,
    /// The next re-send request to answer, as the checkpoint says.
    answered: Option<i64>,
}

impl Capture<'_> {
    /// Follows the plan: a snapshot and then the stream, or the stream alone.
    async fn run(
        &self,
        converter: Converter,
        plan: Plan,
        tx: queue::Sender,
        shutdown: &CancellationToken,
    ) -> Result<(), Error> {
        let (config, health) = (self.config, self.health);
        let mut resumed_at = None;
        let start = match plan {
            Plan::Idle => {
                health.set_ready(COMPONENT);
                tracing::info!("snapshot complete and snapshot.mode = \"initial_only\": not streaming");
                drop(tx);
                shutdown.cancelled().await;
                return Ok(());
            }
            Plan::ResumeAfter(token, at) => {
                resumed_at = at;
                Start::ResumeAfter(token)
            }
            Plan::StartAfter(time) => Start::After(time),
            Plan::StartNow => Start::Now,
            Plan::Snapshot(state) => {
                health.set_ready(COMPONENT);
                let converter = Arc::new(converter);
                let snapshot = Snapshot {
                    client: self.client,
                    filter: self.filter,
                    config: &config.snapshot,
                    compat: config.capture.compat,
                    converter: converter.clone(),
                    tx: tx.clone(),
                    metrics: self.metrics.clone(),
                };
                let Some(done) = snapshot.run(state, shutdown).await? else { return Ok(()) };
                drop(snapshot);
                if config.snapshot.mode == SnapshotMode::InitialOnly {
                    tracing::info!("snapshot.mode = \"initial_only\": snapshot done, not streaming");
                    health.set_ready(COMPONENT);
                    drop(tx);
                    shutdown.cancelled().await;
                    return Ok(());
                }
                let mut converter =
                    Arc::try_unwrap(converter).map_err(|_| Error::fatal("snapshot still running".into()))?;
                converter.recopy_renames_until = Some(done.completed_at);
                return self.stream(converter, tx, (Start::After(done.start_at), None), shutdown).await;
            }
        };
        self.stream(converter, tx, (start, resumed_at), shutdown).await
    }

    async fn stream(
        &self,
        converter: Converter,
        tx: queue::Sender,
        (start, resumed_at): (Start, Option<envelope::ClusterTime>),
        shutdown: &CancellationToken,
    ) -> Result<(), Error> {
        let config = self.config;
        let resender = Resender::start(config, self.answered, self.metrics.clone()).await?;
        let stream = StreamLoop {
            client: self.client,
            config: &config.capture,
            converter,
            tx,
            beat: self.health.register_loop("change-stream", Duration::from_secs(120)),
            idle_checkpoint_interval: Duration::from_millis(config.delivery.idle_checkpoint_interval_ms),
            metrics: self.metrics.clone(),
            health: self.health.clone(),
            component: COMPONENT,
            heartbeat_topic: Some(config.delivery.heartbeat_topic.clone()).filter(|t| !t.is_empty()),
            copy_batch_size: config.snapshot.batch_size,
            schema_check_interval: Duration::from_millis(config.capture.schema_check_interval_ms),
            resender: Some(resender),
            resumed_at,
        };
        stream.run(start, shutdown.clone()).await
    }
}

/// `None` without an election; otherwise whether the group confirms this instance's hold.
async fn confirm(election: Option<&Election>) -> Option<Result<(), String>> {
    Some(election?.confirm().await)
}

fn plan_name(plan: &Plan) -> &'static str {
    match plan {
        Plan::Snapshot(state) if state.start_at.is_some() => "resume snapshot",
        Plan::Snapshot(_) => "snapshot",
        Plan::ResumeAfter(..) => "resume after token",
        Plan::StartAfter(_) => "start after cluster time",
        Plan::StartNow => "start now",
        Plan::Idle => "idle",
    }
}
