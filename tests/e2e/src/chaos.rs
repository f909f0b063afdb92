//! The fault suite: a write workload runs through cdc-source → Kafka → sink-writer (both as
//! processes) while faults hit, one after another at random moments, every part of the path:
//!
//! ```text
//!  workload ─► source mongod ◄─toxiproxy─ cdc-source ─► Kafka ─► sink-writer ─toxiproxy─► target mongod
//!                            cut           kill -9      kill -9   kill -9      cut/slow    kill -9
//!                                          SIGSTOP                SIGSTOP
//! ```
//!
//! When the workload has stopped and every fault is healed, the target must equal the source.
//! `make chaos` runs the full suite (`chaos` binary); `tests/chaos.rs` a small one in `make test`.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mongodb::Database;
use test_support::{services, unique, Services};

use crate::pipeline::{compare_databases, Comparison};
use crate::process::Proc;
use crate::toxiproxy::Toxiproxy;
use crate::workload::{Workload, WorkloadStats};

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    KillSource,
    KillSink,
    KillKafka,
    KillTargetMongo,
    PauseSource,
    PauseSink,
    CutSourceLink,
    CutTargetLink,
    SlowTargetLink,
}

impl Fault {
    pub const ALL: [Fault; 9] = [
        Fault::KillSource,
        Fault::KillSink,
        Fault::KillKafka,
        Fault::KillTargetMongo,
        Fault::PauseSource,
        Fault::PauseSink,
        Fault::CutSourceLink,
        Fault::CutTargetLink,
        Fault::SlowTargetLink,
    ];
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Fault::KillSource => "kill -9 cdc-source, restart",
            Fault::KillSink => "kill -9 sink-writer, restart",
            Fault::KillKafka => "kill -9 the Kafka broker, restart",
            Fault::KillTargetMongo => "kill -9 the target mongod, restart",
            Fault::PauseSource => "SIGSTOP cdc-source past the transaction timeout, SIGCONT",
            Fault::PauseSink => "SIGSTOP sink-writer past the session timeout, SIGCONT",
            Fault::CutSourceLink => "cut cdc-source ↔ source mongod (toxiproxy)",
            Fault::CutTargetLink => "cut sink-writer ↔ target mongod (toxiproxy)",
            Fault::SlowTargetLink => "300 ms ± 100 ms on sink-writer ↔ target mongod (toxiproxy)",
        };
        f.write_str(text)
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Operations the workload performs in all.
    pub operations: u64,
    /// Workload rate, operations per second.
    pub rate: u64,
    /// Faults to inject (kinds drawn at random, each kind at least once when there is room).
    pub faults: usize,
    pub partitions: i32,
    pub seed: u64,
}

/// What happened.
#[derive(Debug, Clone)]
pub struct Report {
    pub settings: Settings,
    pub faults: Vec<(Duration, Fault)>,
    pub workload: WorkloadStats,
    pub comparison: Comparison,
    pub converged_after_last_fault: Option<Duration>,
    pub total: Duration,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.converged_after_last_fault.is_some()
            && self.comparison.lost == 0
            && self.comparison.divergent == 0
            && self.comparison.extra == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.comparison;
        writeln!(f, "| measure | value |\n|---|---|")?;
        writeln!(f, "| faults injected | {} |", self.faults.len())?;
        writeln!(f, "| operations written (documents changed) | {} |", self.workload.operations)?;
        writeln!(f, "| documents in the source at the end | {} |", c.source_documents)?;
        writeln!(f, "| documents lost | {} |", c.lost)?;
        writeln!(f, "| documents divergent | {} |", c.divergent)?;
        writeln!(f, "| documents only in the target | {} |", c.extra)?;
        match self.converged_after_last_fault {
            Some(d) => writeln!(f, "| time to converge after the last fault | {:.1} s |", d.as_secs_f64())?,
            None => writeln!(f, "| time to converge after the last fault | did not converge |")?,
        }
        writeln!(f, "| whole run | {:.0} s (seed {}) |", self.total.as_secs_f64(), self.settings.seed)?;
        writeln!(f, "\nFaults, in order (seconds after the workload started):")?;
        for (at, fault) in &self.faults {
            writeln!(f, "- {:>6.1} s  {fault}", at.as_secs_f64())?;
        }
        if let Some(first) = &c.first {
            writeln!(f, "\nFirst difference: {first}")?;
        }
        Ok(())
    }
}

/// A small deterministic random source (xorshift64*), so a failing run can be replayed by seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `lo..=hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next_u64() % (hi - lo + 1))
    }
}

/// The fault plan: every kind once (shuffled) while there is room, then random kinds.
pub fn plan(count: usize, rng: &mut Rng) -> Vec<Fault> {
    let mut kinds: Vec<Fault> = Fault::ALL.to_vec();
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    (0..count)
        .map(
            |i| {
                if i < kinds.len() {
                    kinds[i]
                } else {
                    Fault::ALL[(rng.next_u64() % Fault::ALL.len() as u64) as usize]
                }
            },
        )
        .collect()
}

/// The `host:port` of a MongoDB URI like `mongodb://127.0.0.1:27117/?replicaSet=source`.
fn mongo_host(uri: &str) -> String {
    uri.trim_start_matches("mongodb://").split(['/', '?']).next().unwrap_or_default().to_string()
}

fn services_script(servers: &Services, action: &str, name: &str) {
    let status = std::process::Command::new(&servers.services_script)
        .args([action, name])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("services.sh runs");
    assert!(status.success(), "services.sh {action} {name} failed");
}

/// kill -9 of a server started by services.sh, then its restart (waits until it answers).
fn kill_and_restart_server(servers: &Services, name: &str) {
    let pid_file = test_support::workspace_root().join(format!(".cache/run/{name}.pid"));
    let pid = std::fs::read_to_string(&pid_file).expect("pid file").trim().to_string();
    let _ = std::process::Command::new("kill").args(["-9", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    services_script(servers, "up", name);
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

    let mut source_env = crate::source_process_env(&name, settings.partitions);
    source_env.extend([
        ("CDC_SOURCE__HTTP__LISTEN_ADDR".into(), "127.0.0.1:0".into()),
        ("CDC_SOURCE__MONGO__URI".into(), format!("mongodb://{source_link}/?directConnection=true")),
        ("CDC_SOURCE__MONGO__SERVER_SELECTION_TIMEOUT_MS".into(), "3000".into()),
        ("CDC_SOURCE__KAFKA__BOOTSTRAP_SERVERS".into(), servers.kafka_bootstrap.clone()),
        ("CDC_SOURCE__KAFKA__OPTIONS__TRANSACTION_TIMEOUT_MS".into(), "10000".into()),
        ("CDC_SOURCE__DELIVERY__MAX_BACKOFF_MS".into(), "2000".into()),
    ]);
    let mut sink_env = crate::sink_process_env(&name);
    sink_env.extend([
        ("SINK_WRITER__HTTP__LISTEN_ADDR".into(), "127.0.0.1:0".into()),
        ("SINK_WRITER__MONGO__URI".into(), format!("mongodb://{target_link}/?directConnection=true")),
        ("SINK_WRITER__MONGO__SERVER_SELECTION_TIMEOUT_MS".into(), "3000".into()),
        ("SINK_WRITER__KAFKA__BOOTSTRAP_SERVERS".into(), servers.kafka_bootstrap.clone()),
        ("SINK_WRITER__KAFKA__OPTIONS__SESSION_TIMEOUT_MS".into(), "6000".into()),
        ("SINK_WRITER__KAFKA__OPTIONS__HEARTBEAT_INTERVAL_MS".into(), "1000".into()),
        ("SINK_WRITER__APPLY__MAX_BACKOFF_MS".into(), "2000".into()),
    ]);
    let mut source = Proc::new("cdc-source", crate::binary("cdc-source"), vec![], source_env, &dir);
    let mut sink = Proc::new("sink-writer", crate::binary("sink-writer"), vec![], sink_env, &dir);
    source.start();
    sink.start();

    let source_db: Database = test_support::mongo(&servers.mongo_source_uri).await.database(&name);
    let target_db: Database = test_support::mongo(&servers.mongo_target_uri).await.database(&name);
    let started = Instant::now();
    let workload = Workload::start(source_db.clone(), settings.operations, settings.rate, settings.seed);

    // Faults spread over the workload's expected duration, one at a time.
    let expected = Duration::from_secs_f64(settings.operations as f64 / settings.rate as f64);
    let gap = expected.checked_div(settings.faults as u32 + 1).unwrap_or_default().max(Duration::from_secs(2));
    let mut faults = Vec::new();
    for fault in plan(settings.faults, &mut rng) {
        tokio::time::sleep(rng.millis(gap.as_millis() as u64 / 2, gap.as_millis() as u64)).await;
        faults.push((started.elapsed(), fault));
        eprintln!("chaos: {:>6.1} s  {fault}", started.elapsed().as_secs_f64());
        match fault {
            Fault::KillSource | Fault::KillSink => {
                let proc = if fault == Fault::KillSource { &mut source } else { &mut sink };
                proc.kill9();
                tokio::time::sleep(rng.millis(500, 3000)).await;
                proc.start();
            }
            Fault::KillKafka | Fault::KillTargetMongo => {
                let server = if fault == Fault::KillKafka { "kafka" } else { "mongo-target" };
                let servers = servers.clone();
                tokio::task::spawn_blocking(move || kill_and_restart_server(&servers, server)).await.expect(server);
            }
            Fault::PauseSource | Fault::PauseSink => {
                // Past the source's 10 s transaction timeout, or the sink's 6 s session timeout.
                let (proc, pause) = if fault == Fault::PauseSource {
                    (&source, rng.millis(11_000, 13_000))
                } else {
                    (&sink, rng.millis(8_000, 10_000))
                };
                proc.pause();
                tokio::time::sleep(pause).await;
                proc.resume();
            }
            Fault::CutSourceLink | Fault::CutTargetLink => {
                let proxy = if fault == Fault::CutSourceLink { "source" } else { "target" };
                toxiproxy.enable(proxy, false).await;
                tokio::time::sleep(rng.millis(2_000, 6_000)).await;
                toxiproxy.enable(proxy, true).await;
            }
            Fault::SlowTargetLink => {
                toxiproxy.latency("target", 300, 100).await;
                tokio::time::sleep(rng.millis(4_000, 8_000)).await;
                toxiproxy.clear_latency("target").await;
            }
        }
    }
    let last_fault_healed = Instant::now();
    let stats = workload.finish().await;
    eprintln!("chaos: workload done ({} operations); waiting for convergence", stats.operations);

    // Converged: equal twice in a row, a second apart (nothing still in flight).
    let deadline = Instant::now() + Duration::from_secs(300);
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
    sink.stop();
    source.stop();
    drop(toxiproxy);
    if converged_after.is_some() {
        let _ = source_db.drop().await;
        let _ = target_db.drop().await;
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("chaos: logs kept in {}", dir.display());
    }
    Report { settings, faults, workload: stats, comparison, converged_after_last_fault: converged_after, total }
}
