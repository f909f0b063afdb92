//! The sink's one retry loop (over `service_kit::backoff`): every failure drops the readiness of
//! the component it concerns, counts a retry and waits, doubling up to `apply.max_backoff_ms`.
//! Nothing is skipped: a failing write or DDL step stalls its partition visibly, and a stopped
//! partition makes no new attempt.

use std::time::Duration;

use prometheus::IntCounter;
use service_kit::backoff::Backoff;
use service_kit::health::Health;
use tokio_util::sync::CancellationToken;

use crate::error::Error;

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
    /// before every attempt).
    pub async fn run<T, F, Fut>(
        &self,
        component: &'static str,
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
                    self.health.set_ready(component);
                    return Ok(value);
                }
                Err(Error::Stopped) => return Err(Error::Stopped),
                Err(e) => {
                    self.retries.inc();
                    self.health.set_not_ready(component, e.to_string());
                    if e.is_retriable() {
                        tracing::warn!(error = %e, "{component}: failed, retrying");
                    } else {
                        tracing::error!(error = %e, "{component}: failed and needs attention, retrying");
                    }
                    if !backoff.wait(stop).await {
                        return Err(Error::Stopped);
                    }
                }
            }
        }
    }
}
