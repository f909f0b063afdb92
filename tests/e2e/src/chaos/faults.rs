//! The kinds of fault, their names, and the plan: every kind once, then random ones.

use std::fmt;
use std::time::Duration;

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
    /// Three-broker cluster only: every broker stopped gracefully and started again, one after
    /// the other, each once the previous one is back in sync (Amazon MSK's patching).
    RollingRestart,
    /// kill -9 of the broker coordinating cdc-source's transactional id.
    KillTransactionCoordinator,
    /// kill -9 of the broker coordinating sink-writer's consumer group.
    KillGroupCoordinator,
    /// Every partition of the captured topics and the checkpoint topic gets another leader.
    MoveLeaders,
    /// One broker cut off from the other two, controller quorum and replication, for longer
    /// than `replica.lag.time.max.ms`; clients still reach it.
    IsolateBroker,
    /// sink-writer (the target region) cut off from the whole cluster for `Settings::sink_cut`.
    CutSinkFromCluster,
}

impl Fault {
    /// What the single broker can have.
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

    /// What only a cluster can have, on top of [`Fault::ALL`].
    pub const CLUSTER: [Fault; 6] = [
        Fault::RollingRestart,
        Fault::KillTransactionCoordinator,
        Fault::KillGroupCoordinator,
        Fault::MoveLeaders,
        Fault::IsolateBroker,
        Fault::CutSinkFromCluster,
    ];

    /// The name `SKIP=` takes, e.g. `kill-target-mongo`.
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillSource => "kill-source",
            Fault::KillSink => "kill-sink",
            Fault::KillKafka => "kill-kafka",
            Fault::KillTargetMongo => "kill-target-mongo",
            Fault::PauseSource => "pause-source",
            Fault::PauseSink => "pause-sink",
            Fault::CutSourceLink => "cut-source-link",
            Fault::CutTargetLink => "cut-target-link",
            Fault::SlowTargetLink => "slow-target-link",
            Fault::RollingRestart => "rolling-restart",
            Fault::KillTransactionCoordinator => "kill-transaction-coordinator",
            Fault::KillGroupCoordinator => "kill-group-coordinator",
            Fault::MoveLeaders => "move-leaders",
            Fault::IsolateBroker => "isolate-broker",
            Fault::CutSinkFromCluster => "cut-sink-from-cluster",
        }
    }

    /// The kinds named in a comma-separated list; an unknown name is an error naming the known.
    pub fn parse_list(list: &str) -> Result<Vec<Fault>, String> {
        let every: Vec<Fault> = Fault::ALL.iter().chain(Fault::CLUSTER.iter()).copied().collect();
        list.split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(|name| {
                every.iter().copied().find(|f| f.name() == name).ok_or_else(|| {
                    let known: Vec<&str> = every.iter().map(|f| f.name()).collect();
                    format!("unknown fault '{name}' (known: {})", known.join(", "))
                })
            })
            .collect()
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Fault::KillSource => "kill -9 cdc-source (the active one), restart",
            Fault::KillSink => "kill -9 sink-writer, restart",
            Fault::KillKafka => "kill -9 a Kafka broker, restart",
            Fault::KillTargetMongo => "kill -9 the target mongod, restart",
            Fault::PauseSource => "SIGSTOP cdc-source (the active one) past the transaction timeout, SIGCONT",
            Fault::PauseSink => "SIGSTOP sink-writer past the session timeout, SIGCONT",
            Fault::CutSourceLink => "cut cdc-source ↔ source mongod (toxiproxy)",
            Fault::CutTargetLink => "cut sink-writer ↔ target mongod (toxiproxy)",
            Fault::SlowTargetLink => "300 ms ± 100 ms on sink-writer ↔ target mongod (toxiproxy)",
            Fault::RollingRestart => "rolling restart of every broker (graceful, one at a time, as MSK patches)",
            Fault::KillTransactionCoordinator => "kill -9 the transaction coordinator of cdc-source, restart",
            Fault::KillGroupCoordinator => "kill -9 the group coordinator of sink-writer's group, restart",
            Fault::MoveLeaders => "move the leaders of the busy partitions (reassignment + preferred election)",
            Fault::IsolateBroker => "cut one broker off from the other two past replica.lag.time.max.ms",
            Fault::CutSinkFromCluster => "cut sink-writer (target region) off from the cluster",
        };
        f.write_str(text)
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

/// The fault plan over `kinds`: every kind once (shuffled) while there is room, then random kinds.
pub fn plan(count: usize, kinds: &[Fault], rng: &mut Rng) -> Vec<Fault> {
    let mut shuffled: Vec<Fault> = kinds.to_vec();
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    (0..count)
        .map(|i| match shuffled.get(i) {
            Some(kind) => *kind,
            None => kinds[(rng.next_u64() % kinds.len() as u64) as usize],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_has_every_kind_once_before_any_twice() {
        let mut rng = Rng::new(7);
        let kinds: Vec<Fault> = Fault::ALL.iter().chain(Fault::CLUSTER.iter()).copied().collect();
        let plan = plan(20, &kinds, &mut rng);
        assert_eq!(plan.len(), 20);
        for kind in &kinds {
            assert_eq!(plan[..kinds.len()].iter().filter(|f| *f == kind).count(), 1, "{kind:?}");
        }
    }

    #[test]
    fn skipped_faults_are_named_as_make_chaos_takes_them() {
        assert_eq!(
            Fault::parse_list("kill-target-mongo, isolate-broker"),
            Ok(vec![Fault::KillTargetMongo, Fault::IsolateBroker])
        );
        assert!(Fault::parse_list("kill-everything").is_err_and(|e| e.contains("rolling-restart")));
    }
}
