//! Copies one collection into the queue as snapshot reads (`op: r`), in `_id` order, resumable
//! after the last `_id` copied. The snapshot copies with it, and so does the stream when a rename
//! brings a collection into the captured scope (or renamed one the snapshot was copying).
//!
//! Before the documents go the collection's options (`create`) and the indexes the target needs
//! first (the unique ones, or all of them); the rest follow the documents, in the item that
//! marks the collection copied, so a restart cannot skip them.

use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use envelope::{ClusterTime, Ddl, Namespace};
use futures::TryStreamExt;
use mongodb::options::{FindOptions, Hint};
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{CollectionProgress, Progress};
use crate::config::{Compat, IndexTiming};
use crate::convert::Converter;
use crate::error::{command_code, Error, Failure};
use crate::metrics::Metrics;
use crate::queue;
use crate::record::Item;
use crate::schema;
use crate::server::now_ms;
use crate::watch::prev_tick;
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

/// Where a read stands in its collection's copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Middle,
    /// The last document; `done` when its progress marks the collection copied.
    Last {
        done: bool,
    },
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
    /// When a snapshot's indexes that are not unique go (a stream's copy sends all first).
    pub indexes: IndexTiming,
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
        let Some(after) = self.schema(ns, at, shutdown).await? else { return Ok(false) };
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
                            return Err(Error::Mongo(Failure::new(
                                format!("copy of {label}"),
                                true,
                                e.kind.to_string(),
                            )));
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
                    if !self.emit(ns, previous, at, copied, Place::Middle, shutdown).await {
                        return Ok(false);
                    }
                }
                if last_log.elapsed() > Duration::from_secs(10) {
                    last_log = Instant::now();
                    self.report(&label, copied, progress.copied, estimated, started);
                }
            }
        }
        // The last read marks the collection copied, unless indexes follow the documents: then
        // the item carrying them does.
        let done_with_last = after.is_empty();
        let mut last_id = Bson::Null;
        let mut finished = false;
        if let Some(last) = pending {
            copied += 1;
            last_id = last.get("_id").cloned().unwrap_or(Bson::Null);
            if !self.emit(ns, last, at, copied, Place::Last { done: done_with_last }, shutdown).await {
                return Ok(false);
            }
            finished = done_with_last;
        }
        if !finished {
            let records = match after.is_empty() {
                true => Vec::new(),
                // Not at `at`, where the ones before the documents are: a sink knows a DDL by
                // its kind, namespace and time. Streaming starts after `at`: no event has it.
                false => self.converter.schema_records(
                    Ddl::CreateIndexes { ns: ns.clone(), indexes: after },
                    prev_tick(at),
                    now_ms(),
                ),
            };
            let progress = (self.tracking == Tracking::Snapshot).then(|| Progress::SnapshotCollection {
                ns: label.clone(),
                last_id,
                copied,
                done: true,
            });
            if (!records.is_empty() || progress.is_some())
                && !self.send(Item { records, progress, cluster_time: Some(at) }, shutdown).await
            {
                return Ok(false);
            }
        }
        self.metrics.snapshot_copied.with_label_values(&[&label]).set(i64::try_from(copied).unwrap_or(i64::MAX));
        tracing::info!(namespace = %label, copied, seconds = started.elapsed().as_secs(), "copied collection");
        Ok(true)
    }

    /// Sends the collection's options and the indexes that must precede its documents, positioned
    /// at `at`; returns the indexes to send after the documents (none when gone). `None` when
    /// stopped.
    async fn schema(
        &self,
        ns: &Namespace,
        at: ClusterTime,
        shutdown: &CancellationToken,
    ) -> Result<Option<Vec<Document>>, Error> {
        let Some(listed) = schema::collection(self.client, ns).await? else { return Ok(Some(Vec::new())) };
        let mut indexes = schema::indexes(self.client, ns).await?;
        schema::simple_collation(&listed.options, &mut indexes);
        let (before, after): (Vec<Document>, Vec<Document>) = match (self.tracking, self.indexes) {
            (Tracking::Snapshot, IndexTiming::AfterCopy) => indexes.into_iter().partition(schema::before_documents),
            _ => (indexes, Vec::new()),
        };
        let now = now_ms();
        let mut records =
            self.converter.schema_records(Ddl::Create { ns: ns.clone(), options: listed.options }, at, now);
        if !before.is_empty() {
            records.extend(self.converter.schema_records(
                Ddl::CreateIndexes { ns: ns.clone(), indexes: before },
                at,
                now,
            ));
        }
        let sent = self.send(Item { records, progress: None, cluster_time: Some(at) }, shutdown).await;
        Ok(sent.then_some(after))
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
        place: Place,
        shutdown: &CancellationToken,
    ) -> bool {
        let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
        let record = self.converter.snapshot_read(ns, doc, at, place != Place::Middle, now_ms());
        // In a snapshot every read carries its progress, so a restart continues right after the
        // last durable document: no document is copied twice.
        let progress = (self.tracking == Tracking::Snapshot).then(|| Progress::SnapshotCollection {
            ns: ns.to_string(),
            last_id: id,
            copied,
            done: place == Place::Last { done: true },
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
