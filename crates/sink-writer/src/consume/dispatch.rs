//! The consumer loop: takes every fetched record to its partition's task, serves what the
//! partitions report (resume, restart), commits durable offsets on a tick, keeps the topic list
//! current (the subscription is resolved here, never including the dead-letter topic), and on
//! stop finishes the partitions' writes, commits and leaves the group.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use service_kit::budget::MemoryBudget;
use service_kit::health::{Health, LoopBeat};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::consume::consumer::Kafka;
use crate::consume::offsets;
use crate::consume::partitions::{Control, Partitions};
use crate::consume::subscription::Subscription;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::point::progress;
use crate::point::PointReader;

/// Readiness component: the consumer itself fetches without errors.
const CONSUMER: &str = "kafka-consumer";

pub struct Dispatcher {
    pub consumer: Arc<Kafka>,
    pub partitions: Arc<Partitions>,
    pub control: mpsc::Receiver<Control>,
    pub subscription: Subscription,
    pub subscribed: BTreeSet<String>,
    pub commit_interval: Duration,
    pub refresh_interval: Duration,
    pub health: Health,
    pub metrics: Metrics,
    pub budget: Arc<MemoryBudget>,
    /// The consistency point, for the progress report.
    pub point: Arc<PointReader>,
}

impl Dispatcher {
    /// Consumes until `shutdown`; then stops every partition task, commits and leaves the group.
    pub async fn run(mut self, beat: LoopBeat, shutdown: CancellationToken) -> Result<(), Error> {
        if self.subscription.matches_dead_letter_topic() {
            tracing::warn!(
                "consume.topics matches the dead-letter topic: it is not read (a refused record would loop)"
            );
        }
        self.refresh_topics().await;
        let mut commit_tick = tokio::time::interval(self.commit_interval);
        let mut refresh_tick = tokio::time::interval(self.refresh_interval);
        let progress = tokio::spawn(progress::report(
            self.consumer.clone(),
            self.partitions.clone(),
            self.metrics.clone(),
            self.budget.clone(),
            self.point.clone(),
        ));
        let mut consumer_ok = None;
        // Pauses after consumer errors (a broker away): jittered, so replicas do not retry together;
        // short, as the loop answers neither a stop nor its partitions meanwhile.
        let mut errors = service_kit::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(1));
        loop {
            beat.beat();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = commit_tick.tick() => self.commit(),
                _ = refresh_tick.tick(), if self.subscription.has_patterns() => self.refresh_topics().await,
                Some(control) = self.control.recv() => self.partitions.handle(self.consumer.as_ref(), control),
                message = self.consumer.recv() => match message {
                    Ok(message) => {
                        let waiting = self.partitions.dispatch(&message);
                        drop(message);
                        if let Some(waiting) = waiting {
                            self.partitions.wait_or_pause(self.consumer.as_ref(), waiting).await;
                        }
                        if consumer_ok != Some(true) {
                            errors.reset();
                            self.health.set_ready(CONSUMER);
                            consumer_ok = Some(true);
                        }
                    }
                    // A topic deleted or not yet there: the next refresh settles it.
                    Err(e) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition) => {
                        tracing::debug!(error = %e, "subscribed topic not available");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "consumer error");
                        self.health.set_not_ready(CONSUMER, e.to_string());
                        consumer_ok = Some(false);
                        tokio::time::sleep(errors.next_delay()).await;
                    }
                },
            }
        }
        progress.abort();
        let offsets = self.partitions.stop(None).await;
        if let Err(e) = offsets::commit(self.consumer.as_ref(), &offsets, CommitMode::Sync) {
            tracing::warn!(error = %e, "final commit failed: a restart repeats some writes");
        }
        self.consumer.unsubscribe();
        Ok(())
    }

    /// Commits (asynchronously) what became durable since the last commit.
    fn commit(&self) {
        if let Err(e) = offsets::commit(self.consumer.as_ref(), &self.partitions.due(), CommitMode::Async) {
            tracing::warn!(error = %e, "offset commit failed: retried with the next one");
        }
    }

    /// Subscribes to the topics the configuration selects now, if they changed.
    async fn refresh_topics(&mut self) {
        let existing = if self.subscription.has_patterns() {
            let consumer = self.consumer.clone();
            let listed = tokio::task::spawn_blocking(move || {
                consumer
                    .fetch_metadata(None, Duration::from_secs(5))
                    .map(|m| m.topics().iter().map(|t| t.name().to_string()).collect::<Vec<_>>())
            })
            .await;
            match listed {
                Ok(Ok(names)) => names,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "cannot list topics now");
                    return;
                }
                Err(_) => return,
            }
        } else {
            Vec::new()
        };
        let topics = self.subscription.resolve(existing.iter().map(String::as_str));
        if topics == self.subscribed {
            return;
        }
        let list: Vec<&str> = topics.iter().map(String::as_str).collect();
        let result = if list.is_empty() {
            self.consumer.unsubscribe();
            Ok(())
        } else {
            self.consumer.subscribe(&list)
        };
        match result {
            Ok(()) => {
                tracing::info!(topics = ?list, "subscribed");
                self.subscribed = topics;
            }
            Err(e) => tracing::warn!(error = %e, "subscribe failed: retried at the next refresh"),
        }
    }
}
