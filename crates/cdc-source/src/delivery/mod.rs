//! The delivery loop: gathers items from the queue into batches (by count, bytes and time),
//! advances the checkpoint over them, adds a watermark when one is due, and has the producer make
//! them durable together.
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | the delivery loop: batches by count, bytes and time |
//! | `record.rs` | what capture hands to the producer: records and the checkpoint progress they cover |
//! | `queue.rs` | the bounded queue between capture and delivery (items and bytes) |
//! | `watermark.rs` | watermarks on every partition, in the transaction that proves them |
//! | `producer.rs` | batches made durable in Kafka with the checkpoint that covers them |
//! | `topics.rs` | topics created when missing; partition counts |
//! | `checkpoint.rs` | the durable position: resume token, snapshot progress, sequence |
//! | `store.rs` | where the checkpoint lives: a compacted topic or a file |

pub(crate) mod checkpoint;
pub(crate) mod producer;
pub(crate) mod queue;
pub(crate) mod record;
pub(crate) mod store;
pub(crate) mod topics;
pub(crate) mod watermark;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use service_kit::health::LoopBeat;

use crate::config::DeliveryConfig;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::server::now_ms;
use checkpoint::{Checkpoint, CHECKPOINT_VERSION};
use producer::Producer;
use queue::Queued;
use record::Item;
use watermark::Watermarks;

/// A first item that came this fast was waiting in the queue already.
const BACKLOG_SIGN: Duration = Duration::from_millis(1);

pub struct Delivery {
    pub producer: Producer,
    pub checkpoint: Checkpoint,
    /// The converter's sequence counter: stored so a restart continues above it.
    pub seq: Arc<AtomicU64>,
    pub metrics: Metrics,
    pub beat: LoopBeat,
    pub watermarks: Watermarks,
}

impl Delivery {
    /// Runs until the queue closes and is drained (capture stopped), or a batch fails.
    pub async fn run(mut self, mut rx: queue::Receiver, limits: &DeliveryConfig) -> Result<(), Error> {
        let max_wait = Duration::from_millis(limits.batch_max_wait_ms);
        loop {
            self.beat.beat();
            let asked = Instant::now();
            let first = tokio::select! {
                queued = rx.recv() => queued,
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            };
            let Some(Queued { item, held }) = first else { return Ok(()) };
            let mut bytes = item.bytes();
            let mut events = item.records.len();
            let (mut batch, mut holds) = (vec![item], vec![held]);
            // Only a batch that starts on an idle queue waits to fill. Items that queued up
            // while the last batch was being made durable have waited long enough: what is
            // there goes now (waiting again added up to `batch_max_wait_ms` to every event).
            let waiting = if asked.elapsed() < BACKLOG_SIGN { Duration::ZERO } else { max_wait };
            let deadline = tokio::time::Instant::now() + waiting;
            while events < limits.batch_max_events && bytes < limits.batch_max_bytes {
                let next = tokio::select! {
                    biased;
                    queued = rx.recv() => queued,
                    _ = tokio::time::sleep_until(deadline) => break,
                };
                let Some(Queued { item, held }) = next else { break };
                bytes += item.bytes();
                events += item.records.len();
                batch.push(item);
                holds.push(held);
            }
            self.metrics.queued_bytes.set(i64::try_from(rx.held_bytes()).unwrap_or(i64::MAX));
            self.write(batch, bytes).await?;
            // Only now, durable, do the batch's bytes leave the memory bound.
            drop(holds);
            self.metrics.queued_bytes.set(i64::try_from(rx.held_bytes()).unwrap_or(i64::MAX));
        }
    }

    async fn write(&mut self, batch: Vec<Item>, bytes: usize) -> Result<(), Error> {
        let mut next = self.checkpoint.clone();
        for item in &batch {
            if let Some(progress) = &item.progress {
                next.apply(progress.clone());
            }
        }
        next.v = CHECKPOINT_VERSION;
        next.seq = self.seq.load(Ordering::Relaxed);
        next.written_at_ms = now_ms();
        let watermark = self.watermarks.next(&batch, next.written_at_ms);
        let started = Instant::now();
        let written = match self.producer.write(&batch, &mut next, watermark.as_ref()).await {
            Ok(written) => written,
            Err(e) => {
                self.metrics.delivery_errors.inc();
                return Err(e);
            }
        };
        self.checkpoint = next;
        if let Some(watermark) = &watermark {
            self.watermarks.written(watermark);
            self.metrics.watermark_timestamp.set(i64::from(watermark.cluster_time.t));
        }
        tracing::debug!(
            records = written,
            items = batch.len(),
            ms = started.elapsed().as_millis() as u64,
            "batch durable"
        );
        self.observe(&batch, written, bytes, started.elapsed());
        Ok(())
    }

    fn observe(&self, batch: &[Item], written: usize, bytes: usize, took: Duration) {
        let metrics = &self.metrics;
        metrics.batch_seconds.observe(took.as_secs_f64());
        metrics.batch_records.observe(written as f64);
        metrics.bytes.inc_by(bytes as u64);
        let mut counts: HashMap<(&str, &str), u64> = HashMap::new();
        for record in batch.iter().flat_map(|item| &item.records) {
            *counts.entry((record.op, record.namespace.as_str())).or_default() += 1;
        }
        for ((op, namespace), count) in counts {
            metrics.events.with_label_values(&[op, namespace]).inc_by(count);
        }
        if let Some(ct) = batch.iter().rev().find_map(|item| item.cluster_time) {
            metrics.seconds_behind_source.set((now_ms() / 1000 - i64::from(ct.t)).max(0));
        }
        metrics.checkpoint_timestamp.set(self.checkpoint.written_at_ms / 1000);
        metrics.checkpoint_age.set(0);
    }
}
