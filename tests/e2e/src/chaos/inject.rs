//! The processes and links of one run, and how each fault hits them and heals. Healing is what an
//! orchestrator or a managed service would do by itself (restart a killed process or broker,
//! restore a link); nothing else is done by hand.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use test_support::{http_get, metric, Services};

use super::cluster::{Brokers, BROKERS};
use super::faults::{Fault, Rng};
use crate::process::Proc;
use crate::toxiproxy::Toxiproxy;

/// What a cluster operation did, or why it went wrong (said in the report; whether the run passed
/// is the comparison's verdict at the end).
fn reported(outcome: Result<String, String>) -> String {
    outcome.unwrap_or_else(|e| format!("FAILED: {e}"))
}

/// A cdc-source process and where it serves its metrics.
pub struct Source {
    pub proc: Proc,
    pub http: SocketAddr,
}

pub struct Rig {
    pub name: String,
    pub servers: Services,
    /// One instance, or (on the cluster) an active one and a standby.
    pub sources: Vec<Source>,
    pub sink: Proc,
    /// The MongoDB links (`source`, `target`).
    pub toxiproxy: Toxiproxy,
    /// The three-broker cluster, when the run uses it.
    pub brokers: Option<Brokers>,
    pub sink_cut: Duration,
}

impl Rig {
    /// Injects `fault`, waits for it to heal, and says what exactly was hit.
    pub async fn inject(&mut self, fault: Fault, rng: &mut Rng) -> String {
        match fault {
            Fault::KillSource => {
                let index = self.active_source().await;
                let source = &mut self.sources[index];
                source.proc.kill9();
                tokio::time::sleep(rng.millis(500, 3000)).await;
                source.proc.start();
                source.proc.name().to_string()
            }
            Fault::KillSink => {
                self.sink.kill9();
                tokio::time::sleep(rng.millis(500, 3000)).await;
                self.sink.start();
                String::new()
            }
            Fault::KillKafka => match &self.brokers {
                Some(brokers) => {
                    let broker = BROKERS[(rng.next_u64() % 3) as usize];
                    reported(brokers.kill_and_restart(broker, rng.millis(2_000, 10_000)).await)
                }
                None => self.kill_and_restart_server("kafka").await,
            },
            Fault::KillTargetMongo => self.kill_and_restart_server("mongo-target").await,
            Fault::PauseSource | Fault::PauseSink => {
                // Past the transaction timeout (alone: 10 s) or the election's session timeout
                // (10 s), or the sink's 6 s session timeout.
                let (proc, pause, what) = if fault == Fault::PauseSource {
                    let index = self.active_source().await;
                    let source = &self.sources[index];
                    (&source.proc, rng.millis(11_000, 13_000), source.proc.name().to_string())
                } else {
                    (&self.sink, rng.millis(8_000, 10_000), String::new())
                };
                proc.pause();
                tokio::time::sleep(pause).await;
                proc.resume();
                format!("{what} {:.0} s", pause.as_secs_f64()).trim().to_string()
            }
            Fault::CutSourceLink | Fault::CutTargetLink => {
                let proxy = if fault == Fault::CutSourceLink { "source" } else { "target" };
                let length = rng.millis(2_000, 6_000);
                self.toxiproxy.enable(proxy, false).await;
                tokio::time::sleep(length).await;
                self.toxiproxy.enable(proxy, true).await;
                format!("{:.0} s", length.as_secs_f64())
            }
            Fault::SlowTargetLink => {
                self.toxiproxy.latency("target", 300, 100).await;
                tokio::time::sleep(rng.millis(4_000, 8_000)).await;
                self.toxiproxy.clear_latency("target").await;
                String::new()
            }
            Fault::RollingRestart => reported(self.brokers().rolling_restart().await),
            Fault::KillTransactionCoordinator => {
                let brokers = self.brokers();
                let down = rng.millis(5_000, 20_000);
                match brokers.transaction_coordinator(&format!("cdc-source-{}", self.name)).await {
                    Ok(coordinator) => reported(brokers.kill_and_restart(coordinator, down).await),
                    Err(e) => format!("not injected: {e}"),
                }
            }
            Fault::KillGroupCoordinator => {
                let brokers = self.brokers();
                let down = rng.millis(5_000, 20_000);
                match brokers.group_coordinator(&format!("{}-sink", self.name)).await {
                    Ok(coordinator) => reported(brokers.kill_and_restart(coordinator, down).await),
                    Err(e) => format!("not injected: {e}"),
                }
            }
            Fault::MoveLeaders => {
                let name = &self.name;
                let topics = vec![
                    format!("{name}.{name}.items"),
                    format!("{name}.{name}.hot"),
                    format!("__cdc_source.{name}.checkpoint"),
                ];
                reported(self.brokers().move_leaders(&topics).await)
            }
            Fault::IsolateBroker => {
                let broker = BROKERS[(rng.next_u64() % 3) as usize];
                // replica.lag.time.max.ms is 30 s (MSK's value).
                reported(self.brokers().isolate(broker, rng.millis(35_000, 45_000)).await)
            }
            Fault::CutSinkFromCluster => self.brokers().cut_clients(self.sink_cut).await,
        }
    }

    fn brokers(&self) -> &Brokers {
        self.brokers.as_ref().expect("a cluster fault without the cluster (CLUSTER=3)")
    }

    /// The source instance that captures now; the first one if none says so within 30 s (a
    /// takeover in progress).
    async fn active_source(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            for (index, source) in self.sources.iter().enumerate() {
                let body = http_get(source.http, "/metrics").await.map(|(_, body)| body).unwrap_or_default();
                if metric(&body, "cdc_source_active") == 1.0 {
                    return index;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        0
    }

    /// kill -9 of a server services.sh started, then its restart (waits until it answers).
    async fn kill_and_restart_server(&self, name: &str) -> String {
        let script = self.servers.services_script.clone();
        let name = name.to_string();
        tokio::task::spawn_blocking(move || {
            let pid_file = test_support::workspace_root().join(format!(".cache/run/{name}.pid"));
            let pid = std::fs::read_to_string(&pid_file).expect("pid file").trim().to_string();
            let _ = std::process::Command::new("kill").args(["-9", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let status = std::process::Command::new(&script)
                .args(["up", &name])
                .stdout(std::process::Stdio::null())
                .status()
                .expect("services.sh runs");
            assert!(status.success(), "services.sh up {name} failed");
        })
        .await
        .expect("restart task");
        String::new()
    }
}
