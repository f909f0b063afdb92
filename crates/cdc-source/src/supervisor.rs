//! The restart policy of the pipeline: what a failed run leads to. Pure.
//!
//! A transient failure restarts from the last durable checkpoint after a pause that doubles
//! (capped) and starts over after a healthy run; a lost resume point takes a new snapshot or waits
//! for an operator, as configured; anything else stops the service.
//!
//! Fences: a new producer with our transactional id fenced ours. With an election
//! (`election.enabled`), when the group no longer confirms this instance's hold, the fence is the
//! successor's doing, expected at a takeover: the instance stands by, nothing is counted. A fence
//! while this instance alone runs, or still holds the election, means an instance outside the
//! election (or a transaction that outlived its timeout): restarting fences it in turn, and three
//! such fences in ten minutes mean a second instance keeps running with the same `capture.name`
//! outside the election: the service stops, naming it.

use std::time::{Duration, Instant};

use service_kit::backoff::Backoff;

use crate::config::{Config, HistoryLostPolicy, SnapshotMode};
use crate::error::Error;

/// A run that lasted this long resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// Fenced this often within [`FENCE_WINDOW`]: another instance with our capture.name runs.
const FENCES_TO_GIVE_UP: usize = 3;
const FENCE_WINDOW: Duration = Duration::from_secs(600);
const FIRST_PAUSE: Duration = Duration::from_millis(250);

/// What to do after a run failed.
#[derive(Debug)]
pub enum Decision {
    /// Start again from the checkpoint after this pause.
    Restart(Duration),
    /// Start again at once with a new snapshot (the resume point is gone).
    Resnapshot,
    /// The resume point is gone and only an operator may decide: stay not ready.
    WaitForOperator(Error),
    /// Stop the service with this error.
    Stop(Error),
    /// Another instance was elected and fenced this one: stand by.
    StandBy,
}

pub struct Supervisor {
    resnapshot_on_history_lost: bool,
    name: String,
    backoff: Backoff,
    fences: Vec<Instant>,
}

impl Supervisor {
    pub fn new(config: &Config) -> Self {
        Self {
            resnapshot_on_history_lost: config.capture.on_history_lost == HistoryLostPolicy::Resnapshot
                || config.snapshot.mode == SnapshotMode::WhenNeeded,
            name: config.capture.name.clone(),
            backoff: Backoff::new(FIRST_PAUSE, Duration::from_millis(config.delivery.max_backoff_ms)),
            fences: Vec::new(),
        }
    }

    /// Decides after a run that lasted `ran_for` failed with `error`, at `now`. `elected` is
    /// whether the election group still confirms this instance's hold (`None` without an election).
    pub fn decide(&mut self, error: Error, ran_for: Duration, now: Instant, elected: Option<bool>) -> Decision {
        if let Error::HistoryLost(_) = &error {
            return if self.resnapshot_on_history_lost {
                Decision::Resnapshot
            } else {
                Decision::WaitForOperator(error)
            };
        }
        if !error.is_retriable() {
            return Decision::Stop(error);
        }
        if let Error::Fenced(_) = &error {
            if elected == Some(false) {
                return Decision::StandBy;
            }
            self.fences.retain(|at| now.saturating_duration_since(*at) < FENCE_WINDOW);
            self.fences.push(now);
            if self.fences.len() >= FENCES_TO_GIVE_UP {
                return Decision::Stop(Error::fatal(format!(
                    "fenced {} times within {} minutes: another cdc-source with capture.name '{}' is running \
                     (outside the election, if this one takes part in one); stop one of them",
                    self.fences.len(),
                    FENCE_WINDOW.as_secs() / 60,
                    self.name
                )));
            }
        }
        if ran_for > HEALTHY_RUN {
            self.backoff.reset();
        }
        Decision::Restart(self.backoff.next_delay())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Common;

    fn transient() -> Error {
        Error::Common(Common::Kafka(crate::error::Failure::retriable("x", "down")))
    }

    #[test]
    fn transient_failures_back_off_doubling_and_start_over_after_a_healthy_run() {
        let mut supervisor = Supervisor::new(&Config::default());
        let now = Instant::now();
        let pause = |d: Decision| match d {
            Decision::Restart(pause) => pause.as_millis(),
            other => panic!("a restart, not {other:?}"),
        };
        // Each pause is jittered within the upper half of its step.
        let within = |pause: u128, step: u128| pause >= step / 2 && pause <= step;
        for step in [250, 500, 1000] {
            let pause = pause(supervisor.decide(transient(), Duration::ZERO, now, None));
            assert!(within(pause, step), "{pause} ms for a step of {step} ms");
        }
        let after = pause(supervisor.decide(transient(), Duration::from_secs(120), now, None));
        assert!(within(after, 250), "after a healthy run: {after} ms");
    }

    #[test]
    fn a_lost_resume_point_follows_the_policy_and_permanent_errors_stop() {
        let mut config = Config::default();
        let lost = || Error::HistoryLost("gone".into());
        assert!(matches!(
            Supervisor::new(&config).decide(lost(), Duration::ZERO, Instant::now(), None),
            Decision::WaitForOperator(_)
        ));
        config.capture.on_history_lost = HistoryLostPolicy::Resnapshot;
        assert!(matches!(
            Supervisor::new(&config).decide(lost(), Duration::ZERO, Instant::now(), None),
            Decision::Resnapshot
        ));
        let fatal = Error::fatal("bad".into());
        assert!(matches!(
            Supervisor::new(&config).decide(fatal, Duration::ZERO, Instant::now(), None),
            Decision::Stop(_)
        ));
    }

    #[test]
    fn three_fences_in_ten_minutes_mean_a_second_instance() {
        let mut supervisor = Supervisor::new(&Config::default());
        let start = Instant::now();
        let fenced = || Error::Fenced("commit".into());
        assert!(matches!(supervisor.decide(fenced(), Duration::ZERO, start, None), Decision::Restart(_)));
        let later = start + Duration::from_secs(700);
        assert!(
            matches!(supervisor.decide(fenced(), Duration::ZERO, later, None), Decision::Restart(_)),
            "the first is old"
        );
        assert!(matches!(supervisor.decide(fenced(), Duration::ZERO, later, None), Decision::Restart(_)));
        assert!(matches!(
            supervisor.decide(fenced(), Duration::ZERO, later, None),
            Decision::Stop(Error::Common(Common::Fatal(_)))
        ));
    }

    #[test]
    fn fences_by_an_elected_successor_are_takeovers_not_a_second_instance() {
        let mut supervisor = Supervisor::new(&Config::default());
        let now = Instant::now();
        let fenced = || Error::Fenced("commit".into());
        for _ in 0..5 {
            assert!(matches!(supervisor.decide(fenced(), Duration::ZERO, now, Some(false)), Decision::StandBy));
        }
        // Fenced while still holding the election: someone outside it uses our transactional id.
        assert!(matches!(supervisor.decide(fenced(), Duration::ZERO, now, Some(true)), Decision::Restart(_)));
        assert!(matches!(supervisor.decide(fenced(), Duration::ZERO, now, Some(true)), Decision::Restart(_)));
        let third = supervisor.decide(fenced(), Duration::ZERO, now, Some(true));
        assert!(
            matches!(&third, Decision::Stop(Error::Common(Common::Fatal(m))) if m.contains("outside the election")),
            "{third:?}"
        );
    }
}
