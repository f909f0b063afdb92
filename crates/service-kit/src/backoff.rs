//! The one retry policy both services use: capped exponential backoff with jitter, cut short by
//! a stop. The jitter keeps replicas that failed together (a broker or the target went away)
//! from retrying in lockstep: each pause is drawn between half and all of its step.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Pauses between attempts: steps of `initial`, doubling up to `max`, each pause a random point
/// in the upper half of its step.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    /// xorshift64* state, seeded differently in every instance (and every process).
    random: u64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.min(max);
        let random = RandomState::new().hash_one(std::process::id()) | 1;
        Self { initial, max, next: initial, random }
    }

    /// The pause before the next attempt, in [step/2, step] (and doubles the step, up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = step / 2;
        let spread = u64::try_from((step - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(self.random() % spread.saturating_add(1))
    }

    fn random(&mut self) -> u64 {
        self.random ^= self.random >> 12;
        self.random ^= self.random << 25;
        self.random ^= self.random >> 27;
        self.random.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Back to the first pause, after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// Sleeps for the next pause; `false` when `stop` came first.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_double_up_to_the_cap_each_pause_in_its_upper_half_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        for step in [100, 200, 350, 350] {
            let delay = backoff.next_delay();
            let step = Duration::from_millis(step);
            assert!(delay >= step / 2 && delay <= step, "{delay:?} outside [{:?}, {step:?}]", step / 2);
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn two_instances_that_fail_together_do_not_retry_in_lockstep() {
        let pauses = || {
            let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
            (0..8).map(|_| backoff.next_delay()).collect::<Vec<_>>()
        };
        let (a, b) = (pauses(), pauses());
        assert_ne!(a, b, "the same pauses in both");
        let distinct: std::collections::BTreeSet<_> = a.iter().collect();
        assert!(distinct.len() > 1, "one pause repeated: {a:?}");
    }

    #[tokio::test]
    async fn a_stop_cuts_the_wait_short() {
        let stop = CancellationToken::new();
        stop.cancel();
        let mut backoff = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        assert!(!backoff.wait(&stop).await);
    }
}
