//! One task per assigned partition: gather a batch, plan it, write it, and advance the
//! partition's durable offset strictly in order once the target has acknowledged everything
//! before it. Up to `max_in_flight` batches overlap when they touch disjoint documents.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envelope::{DecodeError, Event};
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::message::{Message, OwnedMessage};
use service_kit::health::Health;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::batcher::{self, DocKey, Plan};
use crate::config::ApplyConfig;
use crate::consumer::Context;
use crate::ddl::DdlApplier;
use crate::dlq::{DeadLetters, Origin};
use crate::error::Error;
use crate::fence::Fence;
use crate::mapping::Mapper;
use crate::metrics::Metrics;
use crate::writer::Writer;

/// Readiness component: the target accepts writes.
pub const TARGET: &str = "target-mongodb";

/// What every partition task shares.
pub struct Shared {
    pub writer: Writer,
    pub dead_letters: DeadLetters,
    pub ddl: DdlApplier,
    pub mapper: Mapper,
    pub metrics: Metrics,
    pub health: Health,
    pub limits: ApplyConfig,
}

pub struct PartitionTask {
    pub topic: String,
    pub partition: i32,
    /// The partition's own queue, split off the consumer; taken by the reader when the task runs.
    pub queue: Option<StreamPartitionQueue<Context>>,
    pub shared: Arc<Shared>,
    /// The next offset to commit: everything below it is applied (or dead-lettered).
    pub durable: Arc<AtomicI64>,
    pub stop: CancellationToken,
    /// Proof of ownership before writing, after the process stood still.
    pub fence: Arc<Fence>,
}

type Decoded = (OwnedMessage, Result<Event, DecodeError>);

/// Batches being written, oldest first, with the documents each touches. They complete in
/// order, each yielding the offset after its last message.
#[derive(Default)]
struct Flight {
    futures: FuturesOrdered<futures::future::BoxFuture<'static, Result<i64, Error>>>,
    keys: VecDeque<HashSet<DocKey>>,
}

impl Flight {
    fn completed(&mut self, done: Result<i64, Error>, durable: &AtomicI64) -> Result<(), Error> {
        self.keys.pop_front();
        durable.store(done?, Ordering::Release);
        Ok(())
    }

    async fn complete_one(&mut self, durable: &AtomicI64) -> Result<(), Error> {
        match self.futures.next().await {
            Some(done) => self.completed(done, durable),
            None => Ok(()),
        }
    }

    async fn drain(&mut self, durable: &AtomicI64) -> Result<(), Error> {
        while !self.futures.is_empty() {
            self.complete_one(durable).await?;
        }
        Ok(())
    }
}

impl PartitionTask {
    pub async fn run(mut self) {
        let label = format!("{}/{}", self.topic, self.partition);
        // A reader fetches and decodes (the JSON work) while this task plans and writes: the two
        // overlap, joined by a bounded channel that pauses fetching when the writer falls behind.
        let (tx, mut rx) = mpsc::channel(self.shared.limits.batch_max_docs.max(1) * 2);
        let Some(queue) = self.queue.take() else { return };
        let reader = tokio::spawn(read(queue, tx, self.stop.clone(), label.clone()));
        let outcome = self.work(&mut rx).await;
        reader.abort();
        match outcome {
            Ok(()) | Err(Error::Stopped) => tracing::debug!(partition = %label, "partition task done"),
            Err(e) => tracing::error!(partition = %label, error = %e, "partition task failed"),
        }
    }

    async fn work(&mut self, rx: &mut mpsc::Receiver<Decoded>) -> Result<(), Error> {
        let mut flight = Flight::default();
        let max_in_flight = self.shared.limits.max_in_flight;
        while let Some(batch) = self.gather(&mut flight, rx).await? {
            let control = match batch.last() {
                Some((message, Ok(Event::Control(control)))) => Some((message.offset(), control.as_ref().clone())),
                _ => None,
            };
            let last_offset = batch.last().map_or(-1, |(m, _)| m.offset());
            if self.durable.load(Ordering::Acquire) < 0 {
                // Everything before the first message this task received was done by an earlier
                // owner: the offset an ownership check may commit.
                let first = batch.first().map_or(-1, |(m, _)| m.offset());
                self.durable.store(first, Ordering::Release);
            }
            self.shared.metrics.batch_messages.observe(batch.len() as f64);
            self.shared.metrics.consumed.with_label_values(&[&self.topic]).inc_by(batch.len() as u64);
            let (plan, messages, undecodable) = self.plan(batch);
            let batch_keys: HashSet<DocKey> = plan.keys.iter().cloned().collect();
            // Keep per-document order: a batch touching a document still in flight waits for it.
            while flight.futures.len() >= max_in_flight || flight.keys.iter().any(|k| !k.is_disjoint(&batch_keys)) {
                flight.complete_one(&self.durable).await?;
            }
            let write = write_batch(
                self.shared.clone(),
                Target { topic: self.topic.clone(), partition: self.partition, fence: self.fence.clone() },
                plan,
                messages,
                undecodable,
                self.stop.clone(),
            );
            flight.futures.push_back(Box::pin(async move { write.await.map(|()| last_offset + 1) }));
            flight.keys.push_back(batch_keys);
            if let Some((offset, event)) = control {
                // A DDL marker: everything before it must be applied first.
                flight.drain(&self.durable).await?;
                let arrival = format!("{}/{}", self.topic, self.partition);
                if self.shared.ddl.barrier(&event, &arrival, &self.stop).await? {
                    self.shared.metrics.ddl_applied.with_label_values(&[event.ddl.kind()]).inc();
                }
                self.durable.store(offset + 1, Ordering::Release);
            }
        }
        // Stopping: finish what is in flight (bounded by the caller's drain deadline).
        flight.drain(&self.durable).await
    }

    /// The next batch: up to the limits, at most `batch_max_wait_ms` after its first message,
    /// and ending at a control event. `None` once stopped or the queue is closed. Writes in
    /// flight keep completing (and advancing the durable offset) while it waits.
    async fn gather(
        &mut self,
        flight: &mut Flight,
        rx: &mut mpsc::Receiver<Decoded>,
    ) -> Result<Option<Vec<Decoded>>, Error> {
        let limits = &self.shared.limits;
        let first = loop {
            tokio::select! {
                _ = self.stop.cancelled() => return Ok(None),
                Some(done) = flight.futures.next(), if !flight.futures.is_empty() => flight.completed(done, &self.durable)?,
                message = rx.recv() => match message {
                    Some(message) => break message,
                    None => return Ok(None),
                },
            }
        };
        let mut bytes = first.0.payload().map_or(0, <[u8]>::len);
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + Duration::from_millis(limits.batch_max_wait_ms);
        while !matches!(batch.last(), Some((_, Ok(Event::Control(_)))))
            && batch.len() < limits.batch_max_docs
            && bytes < limits.batch_max_bytes
        {
            let next = tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = tokio::time::sleep_until(deadline) => break,
                Some(done) = flight.futures.next(), if !flight.futures.is_empty() => {
                    flight.completed(done, &self.durable)?;
                    continue;
                }
                message = rx.recv() => message,
            };
            let Some(message) = next else { break };
            bytes += message.0.payload().map_or(0, <[u8]>::len);
            batch.push(message);
        }
        Ok(Some(batch))
    }

    fn plan(&self, batch: Vec<Decoded>) -> (Plan, Arc<Vec<OwnedMessage>>, Vec<(i64, String)>) {
        let mut changes = Vec::with_capacity(batch.len());
        let mut undecodable = Vec::new();
        let mut messages = Vec::with_capacity(batch.len());
        for (message, decoded) in batch {
            match decoded {
                Ok(Event::Change(change)) => changes.push((message.offset(), *change)),
                Ok(Event::Tombstone { .. } | Event::Control(_)) => {}
                Err(e) => undecodable.push((message.offset(), e.to_string())),
            }
            messages.push(message);
        }
        let ddl = &self.shared.ddl;
        let plan = batcher::plan(changes, &self.shared.mapper, |ns, at| ddl.obsolete(ns, at));
        (plan, Arc::new(messages), undecodable)
    }
}

/// Fetches from the partition's queue and decodes, until stopped or the writer is gone.
async fn read(queue: StreamPartitionQueue<Context>, tx: mpsc::Sender<Decoded>, stop: CancellationToken, label: String) {
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return,
            message = queue.recv() => message,
        };
        match message {
            Ok(message) => {
                if tx.send(decode(message.detach())).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!(partition = %label, error = %e, "fetch error"),
        }
    }
}

fn decode(message: OwnedMessage) -> Decoded {
    let decoded = envelope::decode(message.key(), message.payload());
    (message, decoded)
}

/// Writes a planned batch, retrying transient failures with capped backoff until it succeeds
/// or the task is stopped; sends what can never be applied to the dead-letter topic.
/// Where a batch goes, and what proves the partition is still this replica's.
struct Target {
    topic: String,
    partition: i32,
    fence: Arc<Fence>,
}

async fn write_batch(
    shared: Arc<Shared>,
    target: Target,
    plan: Plan,
    messages: Arc<Vec<OwnedMessage>>,
    undecodable: Vec<(i64, String)>,
    stop: CancellationToken,
) -> Result<(), Error> {
    let (topic, partition) = (target.topic.clone(), target.partition);
    let dead_letter = |offset: i64, reason: String, stage: &'static str| {
        let (shared, messages, topic, stop) = (shared.clone(), messages.clone(), topic.clone(), stop.clone());
        async move {
            let message = messages.iter().find(|m| m.offset() == offset);
            let origin = Origin { topic: &topic, partition, offset, stage };
            tracing::warn!(topic = %topic, partition, offset, stage, reason = %reason, "record sent to the dead-letter topic");
            retry(&shared, &stop, "kafka", || {
                shared.dead_letters.send(
                    &origin,
                    message.and_then(|m| m.key()),
                    message.and_then(|m| m.payload()),
                    &reason,
                )
            })
            .await?;
            shared.metrics.dead_letters.with_label_values(&[stage]).inc();
            Ok::<(), Error>(())
        }
    };
    for (offset, reason) in undecodable {
        dead_letter(offset, reason, "decode").await?;
    }
    for (offset, reason) in plan.rejected {
        dead_letter(offset, reason, "plan").await?;
    }
    for round in &plan.rounds {
        let started = Instant::now();
        let result = retry(&shared, &stop, TARGET, || async {
            target.fence.check(&shared.metrics, &stop).await?;
            shared.writer.apply(round).await
        })
        .await?;
        shared.metrics.bulk_seconds.observe(started.elapsed().as_secs_f64());
        for (kind, count) in &result.applied {
            shared.metrics.applied.with_label_values(&[kind]).inc_by(*count);
        }
        for (offset, reason) in result.rejected {
            dead_letter(offset, reason, "apply").await?;
        }
    }
    if let Some(newest) = plan.newest {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        shared.metrics.replication_lag_seconds.set(i64::try_from(now.saturating_sub(u64::from(newest.t))).unwrap_or(0));
    }
    Ok(())
}

/// Runs `attempt` until it succeeds; every failure drops the readiness of `component` (the
/// target, or Kafka for dead letters), counts a retry and waits (doubling, capped). Nothing is
/// skipped: a failing write stalls this partition visibly.
async fn retry<T, F, Fut>(
    shared: &Shared,
    stop: &CancellationToken,
    component: &'static str,
    mut attempt: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(value) => {
                shared.health.set_ready(component);
                return Ok(value);
            }
            Err(e) => {
                shared.metrics.retries.inc();
                shared.health.set_not_ready(component, e.to_string());
                if e.is_retriable() {
                    tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "write failed: retrying");
                } else {
                    tracing::error!(error = %e, backoff_ms = backoff.as_millis() as u64, "write failed and needs attention: retrying");
                }
                tokio::select! {
                    _ = stop.cancelled() => return Err(Error::Stopped),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_millis(shared.limits.max_backoff_ms));
            }
        }
    }
}
