//! Active or standby. Without `election.enabled` this instance captures alone, always. With it,
//! the pipeline runs only while this instance holds the election (`election`) and has proven so
//! since: it starts when the group assigns the checkpoint partition here, and stops (committing
//! what it can, within `delivery.shutdown_timeout_ms`) when the group takes it away. Meanwhile
//! the instance stands by: ready (connected, able to take over; an orchestrator must neither
//! restart it nor count it as a failed replica), `role: standby` on `/health/readyz`,
//! `cdc_source_active` 0.

use std::time::Duration;

use service_kit::backoff::Backoff;
use service_kit::health::Health;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::election::Election;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::pipeline::{self, COMPONENT};

/// How long an instance that holds the partition but could not prove it waits before trying again.
const CONFIRM_RETRY: Duration = Duration::from_secs(1);

/// Runs until `shutdown`: the pipeline alone, or whenever this instance is elected.
pub async fn run(
    config: Config,
    client: mongodb::Client,
    health: Health,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    if !config.election.enabled {
        health.set_role("active");
        metrics.active.set(1);
        return pipeline::run(config, client, health, metrics, None, shutdown).await;
    }
    health.declare(COMPONENT);
    let Some(election) = join(&config, &health, &shutdown).await? else { return Ok(()) };
    let stop_timeout = Duration::from_millis(config.delivery.shutdown_timeout_ms);
    let result = loop {
        stand_by(&health, &metrics);
        if !election.holds() {
            tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                _ = election.changed_from(false) => continue,
            }
        }
        if let Err(reason) = election.confirm().await {
            tracing::info!(%reason, "the group's assignment is not confirmed: standing by");
            // Jittered: standbys that failed to confirm together do not ask again together.
            if !Backoff::new(CONFIRM_RETRY, CONFIRM_RETRY).wait(&shutdown).await {
                break Ok(());
            }
            continue;
        }
        tracing::info!(group = %config.election_group(), "elected: this instance captures");
        health.set_role("active");
        health.set_not_ready(COMPONENT, "taking over");
        metrics.active.set(1);
        metrics.promotions.inc();
        let term = shutdown.child_token();
        let pipeline = pipeline::run(
            config.clone(),
            client.clone(),
            health.clone(),
            metrics.clone(),
            Some(&election),
            term.clone(),
        );
        tokio::pin!(pipeline);
        let ended = tokio::select! {
            ended = &mut pipeline => ended,
            _ = election.changed_from(true) => {
                tracing::warn!("the group elected another instance: stopping capture");
                term.cancel();
                // The former term may commit what it holds; a successor fences it anyway.
                match tokio::time::timeout(stop_timeout, &mut pipeline).await {
                    Ok(ended) => ended,
                    Err(_) => {
                        tracing::warn!(timeout_ms = stop_timeout.as_millis() as u64, "capture did not stop in time: abandoned");
                        Ok(())
                    }
                }
            }
        };
        if let Err(e) = ended {
            break Err(e);
        }
        if shutdown.is_cancelled() {
            break Ok(());
        }
        tracing::info!("capture stopped: standing by");
    };
    // Leaving hands the partition to a standby at once, after the last transaction ended.
    election.leave().await;
    result
}

/// Joins the election, trying again (capped backoff) while Kafka is unreachable; `None` when
/// stopped first.
async fn join(config: &Config, health: &Health, shutdown: &CancellationToken) -> Result<Option<Election>, Error> {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_millis(config.delivery.max_backoff_ms));
    loop {
        match Election::join(config, health).await {
            Ok(election) => return Ok(Some(election)),
            Err(e) if e.is_retriable() => {
                health.set_not_ready(COMPONENT, format!("joining the election: {e}"));
                tracing::warn!(error = %e, "cannot join the election yet");
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

fn stand_by(health: &Health, metrics: &Metrics) {
    health.set_role("standby");
    health.set_ready(COMPONENT);
    metrics.stand_by();
}
