//! The restart policy of the pipeline: what a failed run leads to. Pure.
//!
//! A transient failure restarts from the last durable checkpoint after a pause that doubles
//! (capped) and starts over after a healthy run; a lost resume point takes a new snapshot or waits
//! for an operator, as configured; three fences in ten minutes mean a second instance runs with the
//! same `capture.name`; anything else stops the service.

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

    /// Decides after a run that lasted `ran_for` failed with `error`, at `now`.
    pub fn decide(&mut self, error: Error, ran_for: Duration, now: Instant) -> Decision {
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
            self.fences.retain(|at| now.saturating_duration_since(*at) < FENCE_WINDOW);
            self.fences.push(now);
            if self.fences.len() >= FENCES_TO_GIVE_UP {
                return Decision::Stop(Error::Fatal(format!(
                    "fenced {} times within {} minutes: another cdc-source with capture.name '{}' is running; \
                     stop one of them",
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

    fn transient() -> Error {
        Error::Kafka(crate::error::Failure::new("x", true, "down"))
    }

    #[test]
    fn transient_failures_back_off_doubling_and_start_over_after_a_healthy_run() {
        let mut supervisor = Supervisor::new(&Config::default());
        let now = Instant::now();
        let pause = |d: Decision| match d {
            Decision::Restart(pause) => pause.as_millis(),
            other => panic!("a restart, not {other:?}"),
        };
        let pauses: Vec<u128> = (0..3).map(|_| pause(supervisor.decide(transient(), Duration::ZERO, now))).collect();
        assert_eq!(pauses, vec![250, 500, 1000]);
        assert_eq!(pause(supervisor.decide(transient(), Duration::from_secs(120), now)), 250, "after a healthy run");
    }

    #[test]
    fn a_lost_resume_point_follows_the_policy_and_permanent_errors_stop() {
        let mut config = Config::default();
        let lost = || Error::HistoryLost("gone".into());
        assert!(matches!(
            Supervisor::new(&config).decide(lost(), Duration::ZERO, Instant::now()),
            Decision::WaitForOperator(_)
        ));
        config.capture.on_history_lost = HistoryLostPolicy::Resnapshot;
        assert!(matches!(
            Supervisor::new(&config).decide(lost(), Duration::ZERO, Instant::now()),
            Decision::Resnapshot
        ));
        let fatal = Error::Fatal("bad".into());
        assert!(matches!(Supervisor::new(&config).decide(fatal, Duration::ZERO, Instant::now()), Decision::Stop(_)));
    }

    #[test]
    fn three_fences_in_ten_minutes_mean_a_second_instance() {
        let mut supervisor = Supervisor::new(&Config::default());
        let start = Instant::now();
        let fenced = || Error::Fenced("commit".into());
        assert!(matches!(supervisor.decide(fenced(), Duration::ZERO, start), Decision::Restart(_)));
        let later = start + Duration::from_secs(700);
        assert!(matches!(supervisor.decide(fenced(), Duration::ZERO, later), Decision::Restart(_)), "the first is old");
        assert!(matches!(supervisor.decide(fenced(), Duration::ZERO, later), Decision::Restart(_)));
        assert!(matches!(supervisor.decide(fenced(), Duration::ZERO, later), Decision::Stop(Error::Fatal(_))));
    }
}
