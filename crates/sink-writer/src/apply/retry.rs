//! The sink's one retry loop (over `service_kit::backoff`): every failure drops the readiness of
//! the component it concerns for the writer that failed (a partition), counts a retry and waits,
//! doubling up to `apply.max_backoff_ms`. Nothing is skipped: a failing write or DDL step stalls
//! its partition visibly, and a stopped partition makes no new attempt. A write refused because
//! another owner took the partition (`Fenced`) is never retried here: the partition restarts.

use std::time::Duration;

use prometheus::IntCounter;
use service_kit::backoff::Backoff;
use service_kit::health::Health;
use tokio_util::sync::CancellationToken;

use crate::error::Error;

/// One attempt's future, borrowing what it was handed.
pub type LocalAttempt<'s, T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, Error>> + Send + 's>>;

/// Readiness component: the target takes our writes and DDL (failures show here).
pub const WRITES: &str = "target-writes";

#[derive(Clone)]
pub struct Retrier {
    health: Health,
    retries: IntCounter,
    max_backoff: Duration,
}

impl Retrier {
    pub fn new(health: Health, retries: IntCounter, max_backoff: Duration) -> Self {
        Self { health, retries, max_backoff }
    }

    /// Runs `attempt` until it succeeds, or `Err(Stopped)` once `stop` is cancelled (checked
    /// before every attempt); `writer` names who tries (a partition, `topic/partition`).
    pub async fn run<T, F, Fut>(
        &self,
        component: &'static str,
        writer: &str,
        stop: &CancellationToken,
        mut attempt: F,
    ) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let mut backoff = Backoff::new(Duration::from_millis(100), self.max_backoff);
        loop {
            if stop.is_cancelled() {
                return Err(Error::Stopped);
            }
            match attempt().await {
                Ok(value) => {
                    self.health.set_for(component, writer, Ok(()));
                    return Ok(value);
                }
                Err(e) => self.failed(component, writer, e)?,
            }
            if !backoff.wait(stop).await {
                return Err(Error::Stopped);
            }
        }
    }

    /// A failed attempt: `Err` when it must not be retried (stopped, fenced); otherwise counted,
    /// shown on readiness for its writer and logged.
    fn failed(&self, component: &'static str, writer: &str, e: Error) -> Result<(), Error> {
        match e {
            Error::Stopped | Error::Fenced(_) => Err(e),
            e => {
                self.retries.inc();
                self.health.set_for(component, writer, Err(e.to_string()));
                if e.is_retriable() {
                    tracing::warn!(error = %e, "{component}: failed, retrying");
                } else {
                    tracing::error!(error = %e, "{component}: failed and needs attention, retrying");
                }
                Ok(())
            }
        }
    }

    /// [`Retrier::run`] for attempts that need `state` mutably (a session): each attempt gets it.
    /// (The second argument only tells the compiler that what the attempt borrows besides `state`
    /// outlives each attempt.)
    pub async fn run_on<'a, S, T, F>(
        &self,
        component: &'static str,
        writer: &str,
        stop: &CancellationToken,
        state: &mut S,
        mut attempt: F,
    ) -> Result<T, Error>
    where
        F: for<'s> FnMut(&'s mut S, &'s &'a ()) -> LocalAttempt<'s, T>,
    {
        let mut backoff = Backoff::new(Duration::from_millis(100), self.max_backoff);
        loop {
            if stop.is_cancelled() {
                return Err(Error::Stopped);
            }
            match attempt(state, &&()).await {
                Ok(value) => {
                    self.health.set_for(component, writer, Ok(()));
                    return Ok(value);
                }
                Err(e) => self.failed(component, writer, e)?,
            }
            if !backoff.wait(stop).await {
                return Err(Error::Stopped);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::error::{Common, Failure};

    fn retrier() -> (Retrier, Health, IntCounter) {
        let (health, retries) = (Health::new(), IntCounter::new("retries", "retries").expect("a counter"));
        health.set_ready("kafka-consumer");
        (Retrier::new(health.clone(), retries.clone(), Duration::from_millis(5)), health, retries)
    }

    fn network() -> Error {
        Error::Common(Common::Mongo(Failure::retriable("update", "connection reset")))
    }

    #[tokio::test]
    async fn a_failing_attempt_is_retried_until_it_succeeds_and_readiness_shows_it_meanwhile() {
        let (retrier, health, retries) = retrier();
        let (calls, stop) = (AtomicUsize::new(0), CancellationToken::new());
        let seen = std::sync::Mutex::new(Vec::new());
        let value = retrier
            .run(WRITES, "orders/3", &stop, || async {
                seen.lock().unwrap().push(health.readiness());
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0..=2 => Err(network()),
                    n => Ok(n),
                }
            })
            .await
            .expect("succeeds");
        assert_eq!((value, retries.get()), (3, 3));
        let seen = seen.into_inner().unwrap();
        let failing = seen[1].as_ref().expect_err("not ready after a failure");
        assert!(failing.iter().any(|r| r.contains("orders/3") && r.contains("connection reset")), "{failing:?}");
        assert_eq!(health.readiness(), Ok(()), "ready again once it succeeded");
    }

    #[tokio::test]
    async fn a_fenced_write_is_not_retried() {
        let (retrier, _, retries) = retrier();
        let calls = AtomicUsize::new(0);
        let outcome: Result<(), Error> = retrier
            .run(WRITES, "orders/3", &CancellationToken::new(), || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Error::Fenced("another owner".into()))
            })
            .await;
        assert!(matches!(outcome, Err(Error::Fenced(_))), "{outcome:?}");
        assert_eq!((calls.load(Ordering::SeqCst), retries.get()), (1, 0));
    }

    #[tokio::test]
    async fn a_stop_ends_the_retries_without_another_attempt() {
        let (retrier, _, _) = retrier();
        let (calls, stop) = (AtomicUsize::new(0), CancellationToken::new());
        let outcome: Result<(), Error> = retrier
            .run_on(WRITES, "orders/3", &stop, &mut 0_u32, |tries, _| {
                *tries += 1;
                calls.fetch_add(1, Ordering::SeqCst);
                stop.cancel();
                Box::pin(async { Err(network()) })
            })
            .await;
        assert!(matches!(outcome, Err(Error::Stopped)), "{outcome:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "no attempt after the stop");
    }
}
