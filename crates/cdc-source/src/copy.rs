//! Copies one collection into the queue as snapshot reads (`op: r`), in `_id` order, resumable
//! after the last `_id` copied. The snapshot copies with it, and so does the stream when a rename
//! brings a collection into the captured scope (or renamed one the snapshot was copying).

use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use envelope::{ClusterTime, Namespace};
use futures::TryStreamExt;
use mongodb::options::{FindOptions, Hint};
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{CollectionProgress, Progress};
use crate::config::Compat;
use crate::convert::Converter;
use crate::error::{command_code, Error};
use crate::metrics::Metrics;
use crate::queue;
use crate::record::Item;
use crate::server::now_ms;
use service_kit::id_order;

/// Documents between two updates of the progress metric.
const METRIC_EVERY: u64 = 1000;
/// QueryPlanKilled: the collection under a cursor was dropped or renamed (MongoDB 6.0).
const QUERY_PLAN_KILLED: i32 = 175;

/// Whether the copied reads carry the snapshot's per-collection progress (so a restart continues
/// after the last durable document), or none (the caller moves the checkpoint once it is done).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracking {
    Snapshot,
    None,
}

pub struct Copier<'a> {
    pub client: &'a mongodb::Client,
    pub converter: &'a Converter,
    pub tx: &'a queue::Sender,
    /// Documents per read batch.
    pub batch_size: u32,
    pub compat: Compat,
    pub metrics: &'a Metrics,
    pub tracking: Tracking,
}

impl Copier<'_> {
    /// Copies `ns` from where `progress` left off, every read positioned at `at`; false when
    /// stopped early. A collection dropped or renamed under the copy ends it: what follows comes
    /// from the change stream.
    pub async fn copy(
        &self,
        ns: &Namespace,
        progress: CollectionProgress,
        at: ClusterTime,
        shutdown: &CancellationToken,
    ) -> Result<bool, Error> {
        let label = ns.to_string();
        let collection = self.client.database(&ns.db).collection::<Document>(&ns.coll);
        let estimated = collection.estimated_document_count().await.map_err(|e| Error::mongo("count", e))?;
        self.metrics.snapshot_estimated.with_label_values(&[&label]).set(i64::try_from(estimated).unwrap_or(i64::MAX));
        let resume_after = progress.last_id();
        if resume_after.is_some() {
            tracing::info!(namespace = %label, copied = progress.copied, "copy resuming collection");
        }
        let mut copied = progress.copied;
        let mut pending: Option<Document> = None;
        let started = Instant::now();
        let mut last_log = Instant::now();
        'reads: for (filter, options) in self.reads(resume_after.as_ref()) {
            let mut cursor =
                collection.find(filter).with_options(options).await.map_err(|e| Error::mongo("snapshot read", e))?;
            loop {
                if shutdown.is_cancelled() {
                    return Ok(false);
                }
                let doc = match cursor.try_next().await {
                    Ok(Some(doc)) => doc,
                    Ok(None) => break,
                    Err(e) if command_code(&e) == Some(QUERY_PLAN_KILLED) => {
                        if self.exists(ns).await? {
                            // Killed for another reason: start again from the last durable read.
                            return Err(Error::Mongo {
                                context: format!("copy of {label}"),
                                retriable: true,
                                reason: e.kind.to_string(),
                            });
                        }
                        tracing::info!(namespace = %label, copied, "collection dropped or renamed while copied: the change stream brings the rest");
                        break 'reads;
                    }
                    Err(e) => return Err(Error::mongo("snapshot read", e)),
                };
                if resume_after.is_some() && copied == progress.copied && doc.get("_id") == resume_after.as_ref() {
                    continue; // min() includes the last document copied before the restart
                }
                // One document of look-ahead, so the collection's last read can say so.
                if let Some(previous) = pending.replace(doc) {
                    copied += 1;
                    if !self.emit(ns, previous, at, copied, false, shutdown).await {
                        return Ok(false);
                    }
                }
                if last_log.elapsed() > Duration::from_secs(10) {
                    last_log = Instant::now();
                    self.report(&label, copied, progress.copied, estimated, started);
                }
            }
        }
        match pending {
            Some(last) => {
                copied += 1;
                if !self.emit(ns, last, at, copied, true, shutdown).await {
                    return Ok(false);
                }
            }
            None if self.tracking == Tracking::Snapshot => {
                // Empty (or fully copied): mark it done anyway.
                let done = Progress::SnapshotCollection { ns: label.clone(), last_id: Bson::Null, copied, done: true };
                if !self.send(Item::progress_only(done), shutdown).await {
                    return Ok(false);
                }
            }
            None => {}
        }
        self.metrics.snapshot_copied.with_label_values(&[&label]).set(i64::try_from(copied).unwrap_or(i64::MAX));
        tracing::info!(namespace = %label, copied, seconds = started.elapsed().as_secs(), "copied collection");
        Ok(true)
    }

    /// The reads that return the collection in `_id` order after `last` (all of it without).
    fn reads(&self, last: Option<&Bson>) -> Vec<(Document, FindOptions)> {
        let mut options = FindOptions::default();
        options.sort = Some(doc! {"_id": 1});
        options.batch_size = Some(self.batch_size);
        let Some(last) = last else { return vec![(Document::new(), options)] };
        match self.compat {
            // min() is inclusive and, unlike $gt, not limited to one BSON type.
            Compat::Mongodb | Compat::Auto => {
                options.hint = Some(Hint::Keys(doc! {"_id": 1}));
                options.min = Some(doc! {"_id": last.clone()});
                vec![(Document::new(), options)]
            }
            Compat::Documentdb => id_order::after(last).into_iter().map(|filter| (filter, options.clone())).collect(),
        }
    }

    async fn exists(&self, ns: &Namespace) -> Result<bool, Error> {
        let names = self
            .client
            .database(&ns.db)
            .list_collection_names()
            .filter(doc! {"name": &ns.coll})
            .await
            .map_err(|e| Error::mongo("list collections", e))?;
        Ok(!names.is_empty())
    }

    async fn emit(
        &self,
        ns: &Namespace,
        doc: Document,
        at: ClusterTime,
        copied: u64,
        last: bool,
        shutdown: &CancellationToken,
    ) -> bool {
        let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
        let record = self.converter.snapshot_read(ns, doc, at, last, now_ms());
        // In a snapshot every read carries its progress, so a restart continues right after the
        // last durable document: no document is copied twice.
        let progress = (self.tracking == Tracking::Snapshot).then(|| Progress::SnapshotCollection {
            ns: ns.to_string(),
            last_id: id,
            copied,
            done: last,
        });
        if copied.is_multiple_of(METRIC_EVERY) {
            self.metrics
                .snapshot_copied
                .with_label_values(&[&ns.to_string()])
                .set(i64::try_from(copied).unwrap_or(i64::MAX));
        }
        self.send(Item { records: vec![record], progress, cluster_time: Some(at) }, shutdown).await
    }

    fn report(&self, label: &str, copied: u64, at_start: u64, estimated: u64, started: Instant) {
        let rate = (copied - at_start) as f64 / started.elapsed().as_secs_f64().max(0.001);
        let remaining = estimated.saturating_sub(copied) as f64 / rate.max(1.0);
        self.metrics.snapshot_remaining_seconds.set(remaining as i64);
        tracing::info!(
            namespace = label,
            copied,
            estimated,
            docs_per_second = rate as u64,
            eta_seconds = remaining as u64,
            "copy progress"
        );
    }

    pub async fn send(&self, item: Item, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            _ = shutdown.cancelled() => false,
            sent = self.tx.send(item) => sent.is_ok(),
        }
    }
}
