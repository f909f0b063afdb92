//! What the fault suite does to the three-broker cluster (`scripts/services.sh up kafka-cluster`):
//! brokers stopped, killed and started through `services.sh` (as an orchestrator would), their
//! links cut through the cluster's own Toxiproxy, and Kafka's Admin API through
//! `scripts/kafka-admin.sh` (coordinators, leader moves, the wait until every replica is in sync
//! again, which a managed cluster does before the next maintenance step).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use test_support::Cluster;
use tokio::process::Command;

use crate::toxiproxy::Toxiproxy;

pub const BROKERS: [u8; 3] = [1, 2, 3];

/// How long the cluster may take to bring every replica back in sync after a fault.
const IN_SYNC_WITHIN: Duration = Duration::from_secs(300);

pub struct Brokers {
    pub cluster: Cluster,
    proxies: Toxiproxy,
    scripts: PathBuf,
}

impl Brokers {
    pub fn new() -> Brokers {
        let cluster = test_support::cluster();
        let proxies = Toxiproxy::attach(cluster.toxiproxy);
        Brokers { cluster, proxies, scripts: test_support::workspace_root().join("scripts") }
    }

    /// Runs one of the harness' scripts: its standard output, or everything it said. A failure
    /// is reported with the fault rather than ending the run.
    async fn script(&self, name: &str, args: &[&str]) -> Result<String, String> {
        let out =
            Command::new(self.scripts.join(name)).args(args).output().await.map_err(|e| format!("{name}: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() {
            return Ok(stdout);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
        eprintln!("chaos: {name} {} failed: {stdout}\n{stderr}", args.join(" "));
        Err(format!("{name} {} failed: {} {last}", args[0], stdout.lines().last().unwrap_or_default()))
    }

    /// Waits until no partition of any topic has fewer in-sync replicas than replicas; the time it took.
    pub async fn wait_in_sync(&self) -> Result<Duration, String> {
        let started = Instant::now();
        let seconds = IN_SYNC_WITHIN.as_secs().to_string();
        self.script("kafka-admin.sh", &["wait-in-sync", &self.cluster.bootstrap, &seconds]).await?;
        Ok(started.elapsed())
    }

    /// Graceful restarts of every broker in turn, each after the previous is back in sync.
    pub async fn rolling_restart(&self) -> Result<String, String> {
        let mut steps = Vec::new();
        for broker in BROKERS {
            let name = format!("kafka-cluster-{broker}");
            let started = Instant::now();
            self.script("services.sh", &["down", &name]).await?;
            self.script("services.sh", &["up", &name]).await?;
            let restarted = started.elapsed();
            let in_sync = self.wait_in_sync().await?;
            steps.push(format!(
                "broker {broker} back in {:.0} s, in sync {:.0} s later",
                restarted.as_secs_f64(),
                in_sync.as_secs_f64()
            ));
        }
        Ok(steps.join("; "))
    }

    /// kill -9 of `broker`, `down` without it, then its restart and the wait until it is in sync.
    pub async fn kill_and_restart(&self, broker: u8, down: Duration) -> Result<String, String> {
        let pid_file = test_support::workspace_root().join(format!(".cache/run/kafka-cluster-{broker}.pid"));
        let pid = std::fs::read_to_string(&pid_file).map_err(|e| format!("broker {broker}'s pid file: {e}"))?;
        let status = Command::new("kill").args(["-9", pid.trim()]).status().await.map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("kill -9 {} (broker {broker}) failed", pid.trim()));
        }
        tokio::time::sleep(down).await;
        self.script("services.sh", &["up", &format!("kafka-cluster-{broker}")]).await?;
        let in_sync = self.wait_in_sync().await?;
        Ok(format!(
            "broker {broker}, down {:.0} s, in sync {:.0} s after its restart",
            down.as_secs_f64(),
            in_sync.as_secs_f64()
        ))
    }

    /// The broker coordinating `transactional_id` (the Admin API's describeTransactions).
    pub async fn transaction_coordinator(&self, transactional_id: &str) -> Result<u8, String> {
        let bootstrap = self.cluster.bootstrap.as_str();
        let id = self.script("kafka-admin.sh", &["transaction-coordinator", bootstrap, transactional_id]).await?;
        id.parse().map_err(|_| format!("a broker id, not '{id}'"))
    }

    /// The broker coordinating consumer group `group` (describeConsumerGroups).
    pub async fn group_coordinator(&self, group: &str) -> Result<u8, String> {
        let id = self.script("kafka-admin.sh", &["group-coordinator", &self.cluster.bootstrap, group]).await?;
        id.parse().map_err(|_| format!("a broker id, not '{id}'"))
    }

    /// Another leader for every partition of `topics`: each replica list rotated until an in-sync
    /// replica other than the leader comes first, then a preferred leader election. Returns how
    /// many leaders moved, of how many partitions.
    pub async fn move_leaders(&self, topics: &[String]) -> Result<String, String> {
        let mut args = vec!["move-leaders", self.cluster.bootstrap.as_str()];
        args.extend(topics.iter().map(String::as_str));
        let out = self.script("kafka-admin.sh", &args).await?;
        let moves: Vec<&str> = out.lines().collect();
        let moved = moves
            .iter()
            .filter(|line| line.split_whitespace().nth(1).and_then(|m| m.split_once("->")).is_some_and(|(a, b)| a != b))
            .count();
        Ok(format!("{moved} of {} partition leaders moved", moves.len()))
    }

    /// Every link between `broker` and the other two (controller quorum and replication, both
    /// ways) cut for `length`; then the wait until every replica is in sync again.
    pub async fn isolate(&self, broker: u8, length: Duration) -> Result<String, String> {
        let links = links_of(broker);
        for link in &links {
            self.proxies.enable(link, false).await;
        }
        tokio::time::sleep(length).await;
        for link in &links {
            self.proxies.enable(link, true).await;
        }
        let in_sync = self.wait_in_sync().await?;
        Ok(format!("broker {broker}, {:.0} s, in sync {:.0} s after", length.as_secs_f64(), in_sync.as_secs_f64()))
    }

    /// The proxied client links (`KAFKA_CLUSTER_VIA_PROXY`, sink-writer's) cut for `length`.
    pub async fn cut_clients(&self, length: Duration) -> String {
        for broker in BROKERS {
            self.proxies.enable(&format!("sink-{broker}"), false).await;
        }
        tokio::time::sleep(length).await;
        for broker in BROKERS {
            self.proxies.enable(&format!("sink-{broker}"), true).await;
        }
        format!("{:.0} s", length.as_secs_f64())
    }
}

impl Default for Brokers {
    fn default() -> Self {
        Self::new()
    }
}

/// The proxies between `broker` and each other broker, both ways (see scripts/kafka-cluster.sh).
fn links_of(broker: u8) -> Vec<String> {
    BROKERS
        .iter()
        .filter(|other| **other != broker)
        .flat_map(|other| {
            [
                format!("peer-{broker}-from-{other}"),
                format!("peer-{other}-from-{broker}"),
                format!("controller-{broker}-from-{other}"),
                format!("controller-{other}-from-{broker}"),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolating_a_broker_cuts_its_eight_links_and_no_other() {
        let links = links_of(2);
        assert_eq!(links.len(), 8);
        assert!(links.iter().all(|l| l.contains("-2-") || l.ends_with("-2")), "{links:?}");
        assert!(links.contains(&"peer-1-from-2".to_string()) && links.contains(&"controller-2-from-3".to_string()));
    }
}
