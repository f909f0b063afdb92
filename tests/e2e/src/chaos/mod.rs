//! The fault suite: a write workload runs through cdc-source → Kafka → sink-writer (both as
//! processes) while faults hit, one after another at random moments, every part of the path:
//!
//! ```text
//!  workload ─► source mongod ◄─toxiproxy─ cdc-source ─► Kafka ─► sink-writer ─toxiproxy─► target mongod
//!                            cut           kill -9      kill -9   kill -9      cut/slow    kill -9
//!                                          SIGSTOP                SIGSTOP
//! ```
//!
//! On the three-broker cluster (`Settings::cluster`, `make chaos CLUSTER=3`) cdc-source runs as
//! an active and a standby instance (`election.enabled`), sink-writer reaches the brokers through
//! the cluster's client proxies, and the faults of a managed cluster join in (`faults::Fault::
//! CLUSTER`): a rolling restart, the transaction and group coordinators killed, leaders moved,
//! a broker cut off from the others, the target region cut off from the cluster.
//!
//! When the workload has stopped and every fault is healed, the target must equal the source.
//! After each fault the report also says when sink-writer's consistency point (the source time up
//! to which the target equals the source) passed the moment the fault healed.
//! `make chaos` runs the full suite (`chaos` binary); `tests/chaos.rs` a small one in `make test`.
//!
//! Layout: `faults` (kinds, plan), `inject` (how each hits and heals), `cluster` (the brokers).

mod cluster;
mod faults;
mod inject;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mongodb::Database;
use test_support::{http_get, metric, services, unique};
use tokio::task::JoinHandle;

pub use faults::{plan, Fault, Rng};

use crate::pipeline::{compare_databases, Comparison};
use crate::process::Proc;
use crate::toxiproxy::Toxiproxy;
use crate::workload::{Workload, WorkloadStats};
use inject::{Rig, Source};

/// What to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Operations the workload performs at least (it writes on until the last fault healed).
    pub operations: u64,
    /// Workload rate, operations per second.
    pub rate: u64,
    /// Faults to inject (kinds drawn at random, each kind at least once when there is room).
    pub faults: usize,
    pub partitions: i32,
    pub seed: u64,
    /// On the three-broker cluster, with a standby cdc-source and the cluster's faults.
    pub cluster: bool,
    /// How long the target region stays cut off from the cluster.
    pub sink_cut: Duration,
    /// Kinds never injected (e.g. `KillTargetMongo` while others share the target mongod).
    pub skip: Vec<Fault>,
}

impl Settings {
    /// The kinds this run draws from.
    pub fn kinds(&self) -> Vec<Fault> {
        let cluster: &[Fault] = if self.cluster { &Fault::CLUSTER } else { &[] };
        Fault::ALL.iter().chain(cluster).copied().filter(|f| !self.skip.contains(f)).collect()
    }
}

/// One fault as it happened.
#[derive(Debug, Clone)]
pub struct Injected {
    /// When it began, after the workload started.
    pub at: Duration,
    pub fault: Fault,
    /// What exactly it hit (a broker, a process, how long).
    pub detail: String,
    /// From its healing until sink-writer's consistency point passed that moment.
    pub caught_up_after: Option<Duration>,
}

/// What happened.
#[derive(Debug, Clone)]
pub struct Report {
    pub settings: Settings,
    pub faults: Vec<Injected>,
    pub workload: WorkloadStats,
    pub comparison: Comparison,
    pub converged_after_last_fault: Option<Duration>,
    pub total: Duration,
    /// What the target's own change stream showed of the hot documents' counters: changes seen,
    /// and each one that went back to a lower value (an older version written after a newer).
    pub target_changes: usize,
    pub backward: Vec<String>,
}

impl Report {
    /// Converged, equal, and every fault injected and healed as planned.
    pub fn passed(&self) -> bool {
        let injected = |i: &Injected| !(i.detail.starts_with("FAILED") || i.detail.starts_with("not injected"));
        self.faults.iter().all(injected)
            && self.converged_after_last_fault.is_some()
            && self.comparison.lost == 0
            && self.comparison.divergent == 0
            && self.comparison.extra == 0
            && self.backward.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.comparison;
        let kafka =
            if self.settings.cluster { "three brokers (RF 3, min ISR 2), standby cdc-source" } else { "one broker" };
        writeln!(f, "| measure | value |\n|---|---|")?;
        writeln!(f, "| Kafka | {kafka} |")?;
        writeln!(f, "| faults injected | {} |", self.faults.len())?;
        writeln!(f, "| operations written (documents changed) | {} |", self.workload.operations)?;
        writeln!(f, "| documents in the source at the end | {} |", c.source_documents)?;
        writeln!(f, "| documents lost | {} |", c.lost)?;
        writeln!(f, "| documents divergent | {} |", c.divergent)?;
        writeln!(f, "| documents only in the target | {} |", c.extra)?;
        writeln!(
            f,
            "| backward moves on the target (hot counters, from its change stream) | {} of {} changes{} |",
            self.backward.len(),
            self.target_changes,
            self.backward.first().map(|b| format!(", e.g. {b}")).unwrap_or_default()
        )?;
        match self.converged_after_last_fault {
            Some(d) => writeln!(f, "| time to converge after the last fault | {:.1} s |", d.as_secs_f64())?,
            None => writeln!(f, "| time to converge after the last fault | did not converge |")?,
        }
        writeln!(f, "| whole run | {:.0} s (seed {}) |", self.total.as_secs_f64(), self.settings.seed)?;
        writeln!(f, "\nFaults, in order (seconds after the workload started; target caught up = sink-writer's")?;
        writeln!(f, "consistency point past the moment the fault healed):\n")?;
        writeln!(f, "| at | fault | detail | target caught up after |\n|---|---|---|---|")?;
        for injected in &self.faults {
            let caught_up = injected.caught_up_after.map_or("—".to_string(), |d| format!("{:.1} s", d.as_secs_f64()));
            writeln!(
                f,
                "| {:.1} s | {} | {} | {caught_up} |",
                injected.at.as_secs_f64(),
                injected.fault,
                injected.detail
            )?;
        }
        if let Some(first) = &c.first {
            writeln!(f, "\nFirst difference: {first}")?;
        }
        Ok(())
    }
}

/// The `host:port` of a MongoDB URI like `mongodb://127.0.0.1:27117/?replicaSet=source`.
fn mongo_host(uri: &str) -> String {
    uri.trim_start_matches("mongodb://").split(['/', '?']).next().unwrap_or_default().to_string()
}

/// Waits (up to ten minutes) until the consistency point sink-writer at `sink` exports passes
/// `healed`; how long after `healed` it did.
fn catch_up(sink: SocketAddr, healed: Instant) -> JoinHandle<Option<Duration>> {
    let healed_at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as f64;
    tokio::spawn(async move {
        while healed.elapsed() < Duration::from_secs(600) {
            let body = http_get(sink, "/metrics").await.map(|(_, body)| body).unwrap_or_default();
            if metric(&body, "sink_writer_consistent_up_to_timestamp_seconds") > healed_at {
                return Some(healed.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        None
    })
}

/// Runs the whole suite and reports; the caller asserts or prints.
pub async fn run(settings: Settings) -> Report {
    let servers = services();
    let name = unique("chaos");
    let dir: PathBuf = test_support::workspace_root().join(".cache/chaos").join(&name);
    std::fs::create_dir_all(&dir).expect("chaos dir");
    let mut rng = Rng::new(settings.seed);
    let toxiproxy = Toxiproxy::start(&dir).await;
    // The services' links: to the guards in the DocumentDB profile.
    let source_link = toxiproxy.proxy("source", &mongo_host(&servers.service_source_uri)).await;
    let target_link = toxiproxy.proxy("target", &mongo_host(&servers.service_target_uri)).await;
    let brokers = settings.cluster.then(cluster::Brokers::new);
    let (source_kafka, sink_kafka) = match &brokers {
        Some(brokers) => (brokers.cluster.bootstrap.clone(), brokers.cluster.via_proxy.clone()),
        None => (servers.kafka_bootstrap.clone(), servers.kafka_bootstrap.clone()),
    };

    let mut source_env = crate::source_process_env(&name, settings.partitions);
    source_env.extend([
        ("CDC_SOURCE__MONGO__URI".into(), format!("mongodb://{source_link}/?directConnection=true")),
        ("CDC_SOURCE__MONGO__SERVER_SELECTION_TIMEOUT_MS".into(), "3000".into()),
        ("CDC_SOURCE__KAFKA__BOOTSTRAP_SERVERS".into(), source_kafka),
        ("CDC_SOURCE__DELIVERY__MAX_BACKOFF_MS".into(), "2000".into()),
    ]);
    if settings.cluster {
        // A standby takes over from a frozen active instance; transactions keep their default
        // timeout (a broker's failover must not abort them).
        source_env.push(("CDC_SOURCE__ELECTION__ENABLED".into(), "true".into()));
    } else {
        source_env.push(("CDC_SOURCE__KAFKA__OPTIONS__TRANSACTION_TIMEOUT_MS".into(), "10000".into()));
    }
    let instances: &[&str] = if settings.cluster { &["cdc-source-a", "cdc-source-b"] } else { &["cdc-source"] };
    let mut sources: Vec<Source> = instances
        .iter()
        .map(|instance| {
            let http = crate::free_addr();
            let mut env = source_env.clone();
            env.push(("CDC_SOURCE__HTTP__LISTEN_ADDR".into(), http.to_string()));
            Source { proc: Proc::new(instance, crate::binary("cdc-source"), vec![], env, &dir), http }
        })
        .collect();
    let sink_http = crate::free_addr();
    let mut sink_env = crate::sink_process_env(&name);
    sink_env.extend([
        ("SINK_WRITER__HTTP__LISTEN_ADDR".into(), sink_http.to_string()),
        ("SINK_WRITER__MONGO__URI".into(), format!("mongodb://{target_link}/?directConnection=true")),
        ("SINK_WRITER__MONGO__SERVER_SELECTION_TIMEOUT_MS".into(), "3000".into()),
        ("SINK_WRITER__KAFKA__BOOTSTRAP_SERVERS".into(), sink_kafka),
        ("SINK_WRITER__KAFKA__OPTIONS__SESSION_TIMEOUT_MS".into(), "6000".into()),
        ("SINK_WRITER__KAFKA__OPTIONS__HEARTBEAT_INTERVAL_MS".into(), "1000".into()),
        ("SINK_WRITER__APPLY__MAX_BACKOFF_MS".into(), "2000".into()),
    ]);
    let mut sink = Proc::new("sink-writer", crate::binary("sink-writer"), vec![], sink_env, &dir);
    for source in &mut sources {
        source.proc.start();
    }
    sink.start();
    let mut rig = Rig {
        name: name.clone(),
        servers: servers.clone(),
        sources,
        sink,
        toxiproxy,
        brokers,
        sink_cut: settings.sink_cut,
    };

    let source_db: Database = test_support::mongo(&servers.mongo_source_uri).await.database(&name);
    let target_db: Database = test_support::mongo(&servers.mongo_target_uri).await.database(&name);
    // A reader of the target: the hot documents' counters only ever go up on the source.
    let watch = crate::monotonic::Watch::start(target_db.clone(), Some("hot"), "hits").await;
    let started = Instant::now();
    let workload = Workload::start(source_db.clone(), settings.operations, settings.rate, settings.seed);

    // Faults spread over the workload's expected duration, one at a time.
    let expected = Duration::from_secs_f64(settings.operations as f64 / settings.rate as f64);
    let gap = expected.checked_div(settings.faults as u32 + 1).unwrap_or_default().max(Duration::from_secs(2));
    let mut faults = Vec::new();
    let mut catching_up = Vec::new();
    for fault in plan(settings.faults, &settings.kinds(), &mut rng) {
        tokio::time::sleep(rng.millis(gap.as_millis() as u64 / 2, gap.as_millis() as u64)).await;
        let at = started.elapsed();
        eprintln!("chaos: {:>6.1} s  {fault}", at.as_secs_f64());
        let detail = rig.inject(fault, &mut rng).await;
        eprintln!("chaos: {:>6.1} s  healed {detail}", started.elapsed().as_secs_f64());
        catching_up.push(catch_up(sink_http, Instant::now()));
        faults.push(Injected { at, fault, detail, caught_up_after: None });
    }
    let last_fault_healed = Instant::now();
    let stats = workload.finish().await;
    eprintln!("chaos: workload done ({} operations); waiting for convergence", stats.operations);

    // Converged: equal twice in a row, a second apart (nothing still in flight).
    let deadline = Instant::now() + Duration::from_secs(if settings.cluster { 900 } else { 300 });
    let mut converged_after = None;
    let mut comparison;
    loop {
        comparison = compare_databases(&source_db, &target_db).await;
        if comparison.first.is_none() {
            let when = last_fault_healed.elapsed();
            tokio::time::sleep(Duration::from_secs(1)).await;
            comparison = compare_databases(&source_db, &target_db).await;
            if comparison.first.is_none() {
                converged_after = Some(when);
                break;
            }
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let total = started.elapsed();
    let observed = watch.finish();
    for (injected, mut watcher) in faults.iter_mut().zip(catching_up) {
        injected.caught_up_after = match tokio::time::timeout(Duration::from_secs(30), &mut watcher).await {
            Ok(Ok(caught_up)) => caught_up,
            _ => {
                watcher.abort();
                None
            }
        };
    }
    rig.sink.stop();
    for source in &mut rig.sources {
        source.proc.stop();
    }
    drop(rig);
    if converged_after.is_some() {
        let _ = source_db.drop().await;
        let _ = target_db.drop().await;
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("chaos: logs kept in {}", dir.display());
    }
    Report {
        settings,
        faults,
        workload: stats,
        comparison,
        converged_after_last_fault: converged_after,
        total,
        target_changes: observed.changes,
        backward: observed.backward,
    }
}
