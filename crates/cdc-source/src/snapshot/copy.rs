//! Copies one collection into the queue as snapshot reads (`op: r`), in `_id` order, resumable
//! after the last `_id` copied. The snapshot copies with it, and so does the stream when a rename
//! brings a collection into the captured scope (or renamed one the snapshot was copying).
//!
//! Before the documents go the collection's options (`create`) and the indexes the target needs
//! first (the unique ones, or all of them); the rest follow the documents, in the item that
//! marks the collection copied, so a restart cannot skip them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bson::{doc, Bson, Document, RawDocumentBuf};
use envelope::{ClusterTime, Ddl, Namespace, Payload, Snapshot};
use futures::{StreamExt, TryStreamExt};
use mongodb::options::{FindOptions, Hint};
use mongodb::Collection;
use tokio_util::sync::CancellationToken;

use crate::capture::convert::Converter;
use crate::capture::schema;
use crate::capture::watch::prev_tick;
use crate::config::{Compat, IndexTiming};
use crate::delivery::checkpoint::{CheckpointUpdate, CollectionProgress};
use crate::delivery::queue;
use crate::delivery::record::Item;
use crate::error::{command_code, Common, Error, Failure};
use crate::metrics::Metrics;
use crate::server::now_ms;
use crate::snapshot::ranges::{resumed_shares, split_points, Ranges, Share};
use service_kit::id_order;

/// Documents between two updates of the progress metric.
const METRIC_EVERY: u64 = 1000;
/// QueryPlanKilled: the collection under a cursor was dropped or renamed (MongoDB 6.0).
use service_kit::failure::code::QUERY_PLAN_KILLED;

/// Whether the copied reads carry the snapshot's per-collection progress (so a restart continues
/// after the last durable document), or none (the caller moves the checkpoint once it is done).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracking {
    /// A snapshot's copy: large collections are read by several readers, one `_id` range each.
    Snapshot(Ranges),
    None,
}

/// Where a read stands in its share of the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Middle,
    /// The last document; `done` when its progress marks the share copied.
    Last {
        done: bool,
    },
}

/// How a share's reading ended.
struct End {
    last_id: Bson,
    /// Whether its last read marked it copied.
    marked: bool,
}

/// What the readers of one collection count together: the metric and the progress line.
struct Tally {
    label: String,
    copied: AtomicU64,
    at_start: u64,
    estimated: u64,
    started: Instant,
    /// Milliseconds after `started` of the last progress line.
    logged_ms: AtomicU64,
}

/// One collection's copy as each of its readers sees it: what they read, at which time, and
/// what they count together.
struct CollectionCopy<'c> {
    ns: &'c Namespace,
    /// Documents as the server's BSON bytes: written out as extended JSON straight from them.
    collection: Collection<RawDocumentBuf>,
    /// The cluster time every read is positioned at.
    at: ClusterTime,
    /// Whether the one reader marks the collection copied with its last read (see `copy`).
    done_with_last: bool,
    tally: Tally,
    shutdown: &'c CancellationToken,
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
        let Some((ranged, shares)) = self.shares(ns, &collection, &progress, estimated, at, shutdown).await? else {
            return Ok(false);
        };
        let at_start: u64 = match (ranged, progress.ranges.is_empty()) {
            (true, false) => progress.ranges.iter().map(|r| r.copied).sum(),
            _ => shares.iter().map(|s| s.copied).sum(),
        };
        if at_start > 0 {
            tracing::info!(namespace = %label, copied = at_start, "copy resuming collection");
        }
        let tally = Tally {
            label: label.clone(),
            copied: AtomicU64::new(at_start),
            at_start,
            estimated,
            started: Instant::now(),
            logged_ms: AtomicU64::new(0),
        };
        let readers = match self.tracking {
            Tracking::Snapshot(ranges) => ranges.readers,
            Tracking::None => 1,
        };
        let job = CollectionCopy {
            ns,
            collection: collection.clone_with_type::<RawDocumentBuf>(),
            at,
            // One reader marks the collection copied with its last read, unless indexes follow
            // the documents: then the item carrying them does, as it does for a collection in
            // ranges.
            done_with_last: !ranged && after.is_empty(),
            tally,
            shutdown,
        };
        let ends: Vec<Option<End>> = futures::stream::iter(shares)
            .map(|share| self.read(&job, share))
            .buffer_unordered(readers)
            .try_collect()
            .await?;
        let Some(ends) = ends.into_iter().collect::<Option<Vec<End>>>() else { return Ok(false) };
        let tally = &job.tally;
        let copied = tally.copied.load(Ordering::Relaxed);
        let finished = !ranged && ends.first().is_some_and(|end| end.marked);
        if !finished {
            let records = match after.is_empty() {
                true => Vec::new(),
                // Not at `at`, where the ones before the documents are: a sink knows a DDL by
                // its kind, namespace and time. Streaming starts after `at`: no event has it.
                false => self.converter.schema_records(
                    Ddl::CreateIndexes { ns: ns.clone(), indexes: after },
                    prev_tick(at),
                    Snapshot::True,
                    now_ms(),
                ),
            };
            let last_id = match ranged {
                true => Bson::Null,
                false => ends.into_iter().next().map_or(Bson::Null, |end| end.last_id),
            };
            let progress = self.tracked().then(|| CheckpointUpdate::SnapshotCollection {
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
        tracing::info!(namespace = %label, copied, seconds = tally.started.elapsed().as_secs(), "copied collection");
        Ok(true)
    }

    fn tracked(&self) -> bool {
        matches!(self.tracking, Tracking::Snapshot(_))
    }

    /// How the collection is read: `(ranged, shares)`, the shares left to read. A snapshot splits
    /// a large collection it starts afresh at `_id`s sampled with `$sample` (the split made
    /// durable first, so a restart reads the same ranges); `None` when stopped.
    async fn shares(
        &self,
        ns: &Namespace,
        collection: &Collection<Document>,
        progress: &CollectionProgress,
        estimated: u64,
        at: ClusterTime,
        shutdown: &CancellationToken,
    ) -> Result<Option<(bool, Vec<Share>)>, Error> {
        if let Some(resumed) = resumed_shares(progress, self.compat) {
            if !resumed.0 {
                tracing::warn!(namespace = %ns, "the copy was split into _id ranges, which DocumentDB cannot read: copying the collection again with one reader");
            }
            return Ok(Some(resumed));
        }
        let whole =
            Share { range: None, from: None, to: None, resume_after: progress.last_id(), copied: progress.copied };
        let parts = match self.tracking {
            Tracking::Snapshot(ranges) => (estimated / ranges.min_documents).min(ranges.readers as u64) as usize,
            Tracking::None => 1,
        };
        // DocumentDB has no min()/max() bounds; a copy under way continues as it began.
        if parts < 2 || self.compat == Compat::Documentdb || whole.resume_after.is_some() {
            return Ok(Some((false, vec![whole])));
        }
        let splits = split_points(collection, parts).await?;
        if splits.is_empty() {
            return Ok(Some((false, vec![whole])));
        }
        tracing::info!(namespace = %ns, ranges = splits.len() + 1, estimated, "copying the collection in _id ranges");
        let bounds: Vec<Option<Bson>> = std::iter::once(None).chain(splits.iter().cloned().map(Some)).collect();
        let shares = (0..bounds.len())
            .map(|i| Share {
                range: Some(i),
                from: bounds[i].clone(),
                to: bounds.get(i + 1).cloned().flatten(),
                resume_after: None,
                copied: 0,
            })
            .collect();
        let split = Item::progress_only(CheckpointUpdate::SnapshotRanges { ns: ns.to_string(), splits });
        if !self.send(Item { cluster_time: Some(at), ..split }, shutdown).await {
            return Ok(None);
        }
        Ok(Some((true, shares)))
    }

    /// Reads one share in `_id` order into the queue; `None` when stopped.
    async fn read(&self, job: &CollectionCopy<'_>, share: Share) -> Result<Option<End>, Error> {
        let CollectionCopy { ns, collection, at, done_with_last, tally, shutdown } = job;
        let (at, done_with_last) = (*at, *done_with_last);
        let label = &tally.label;
        let mut copied = share.copied;
        let mut pending: Option<RawDocumentBuf> = None;
        // A range's last read marks it copied; the whole collection's, when nothing follows.
        let mark_with_last = share.range.is_some() || done_with_last;
        'reads: for (filter, options) in self.reads(&share) {
            let mut cursor =
                collection.find(filter).with_options(options).await.map_err(|e| Error::mongo("snapshot read", e))?;
            loop {
                if shutdown.is_cancelled() {
                    return Ok(None);
                }
                let doc = match cursor.try_next().await {
                    Ok(Some(doc)) => doc,
                    Ok(None) => break,
                    Err(e) if command_code(&e) == Some(QUERY_PLAN_KILLED) => {
                        if crate::server::collection_exists(self.client, ns).await? {
                            // Killed for another reason: start again from the last durable read.
                            return Err(Error::Common(Common::Mongo(Failure::retriable(
                                format!("copy of {label}"),
                                e.kind.to_string(),
                            ))));
                        }
                        tracing::info!(namespace = %label, copied, "collection dropped or renamed while copied: the change stream brings the rest");
                        break 'reads;
                    }
                    Err(e) => return Err(Error::mongo("snapshot read", e)),
                };
                // Kept as bytes, it must read all the way down (see check_raw_document).
                if let Err(e) = envelope::extjson::check_raw_document(&doc) {
                    let id = doc.id().map(|id| id.to_string()).unwrap_or_else(|| "?".into());
                    return Err(Error::fatal(format!(
                        "a document of {label} (_id {id}) did not decode: {e}; fix it in the source, then restart"
                    )));
                }
                // min() includes the last document copied before the restart (a NaN too, which
                // `==` never finds equal).
                if copied == share.copied
                    && share.resume_after.as_ref().zip(doc.id()).is_some_and(|(last, id)| id_order::same_key(last, &id))
                {
                    continue;
                }
                // One document of look-ahead, so the share's last read can say so.
                if let Some(previous) = pending.replace(doc) {
                    copied += 1;
                    if !self.emit(job, &share, previous, copied, Place::Middle).await? {
                        return Ok(None);
                    }
                    if crate::hooks::copy_held(label, copied) {
                        shutdown.cancelled().await;
                        return Ok(None);
                    }
                }
            }
        }
        let mut end = End { last_id: Bson::Null, marked: false };
        if let Some(last) = pending {
            copied += 1;
            end.last_id = last.id().unwrap_or(Bson::Null);
            let place = Place::Last { done: mark_with_last };
            if !self.emit(job, &share, last, copied, place).await? {
                return Ok(None);
            }
            end.marked = mark_with_last;
        }
        if let (Some(range), false) = (share.range, end.marked) {
            // An empty range (or one whose collection went away) is copied too.
            let progress =
                CheckpointUpdate::SnapshotRange { ns: label.clone(), range, last_id: Bson::Null, copied, done: true };
            let item = Item::progress_only(progress);
            if !self.send(Item { cluster_time: Some(at), ..item }, shutdown).await {
                return Ok(None);
            }
        }
        Ok(Some(end))
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
            (Tracking::Snapshot(_), IndexTiming::AfterCopy) => indexes.into_iter().partition(schema::before_documents),
            _ => (indexes, Vec::new()),
        };
        let now = now_ms();
        let mut records = self.converter.schema_records(
            Ddl::Create { ns: ns.clone(), options: listed.options },
            at,
            Snapshot::True,
            now,
        );
        if !before.is_empty() {
            records.extend(self.converter.schema_records(
                Ddl::CreateIndexes { ns: ns.clone(), indexes: before },
                at,
                Snapshot::True,
                now,
            ));
        }
        let sent = self.send(Item { records, progress: None, cluster_time: Some(at) }, shutdown).await;
        Ok(sent.then_some(after))
    }

    /// The reads that return a share in `_id` order, after its last document copied if any.
    fn reads(&self, share: &Share) -> Vec<(Document, FindOptions)> {
        let mut options = FindOptions::default();
        options.sort = Some(doc! {"_id": 1});
        options.batch_size = Some(self.batch_size);
        let start = share.resume_after.as_ref().or(share.from.as_ref());
        if start.is_none() && share.to.is_none() {
            return vec![(Document::new(), options)];
        }
        match self.compat {
            // min() is inclusive and, unlike $gt, not limited to one BSON type; max() exclusive.
            Compat::Mongodb | Compat::Auto => {
                options.hint = Some(Hint::Keys(doc! {"_id": 1}));
                options.min = start.map(|id| doc! {"_id": id.clone()});
                options.max = share.to.as_ref().map(|id| doc! {"_id": id.clone()});
                vec![(Document::new(), options)]
            }
            // Never in ranges (see `shares`): after the last document copied.
            Compat::Documentdb => start
                .map(id_order::after)
                .unwrap_or_default()
                .into_iter()
                .map(|filter| (filter, options.clone()))
                .collect(),
        }
    }

    /// Sends one read of `share`, the `copied`-th, with its progress when tracked; false when
    /// stopped.
    async fn emit(
        &self,
        job: &CollectionCopy<'_>,
        share: &Share,
        doc: RawDocumentBuf,
        copied: u64,
        place: Place,
    ) -> Result<bool, Error> {
        let CollectionCopy { ns, at, tally, shutdown, .. } = job;
        let at = *at;
        let id = doc.id().unwrap_or(Bson::Null);
        // Debezium's `snapshot: last` goes on the collection's greatest `_id`.
        let last = place != Place::Middle && share.to.is_none();
        // None when a transform rule's filter leaves the document out: its progress still counts.
        let record = self.converter.snapshot_read(ns, doc, at, last, now_ms())?;
        // In a snapshot every read carries its progress, so a restart continues right after the
        // last durable document: no document is copied twice.
        let done = place == Place::Last { done: true };
        let progress = self.tracked().then(|| match share.range {
            Some(range) => CheckpointUpdate::SnapshotRange { ns: ns.to_string(), range, last_id: id, copied, done },
            None => CheckpointUpdate::SnapshotCollection { ns: ns.to_string(), last_id: id, copied, done },
        });
        let total = tally.copied.fetch_add(1, Ordering::Relaxed) + 1;
        if total.is_multiple_of(METRIC_EVERY) {
            self.metrics
                .snapshot_copied
                .with_label_values(&[&tally.label])
                .set(i64::try_from(total).unwrap_or(i64::MAX));
            self.report(tally, total);
        }
        Ok(self.send(Item { records: record.into_iter().collect(), progress, cluster_time: Some(at) }, shutdown).await)
    }

    /// A progress line with an ETA every 10 s, whichever reader gets there.
    fn report(&self, tally: &Tally, copied: u64) {
        let elapsed_ms = u64::try_from(tally.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let logged = tally.logged_ms.load(Ordering::Relaxed);
        if elapsed_ms < logged + 10_000
            || tally.logged_ms.compare_exchange(logged, elapsed_ms, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return;
        }
        let rate = (copied - tally.at_start) as f64 / tally.started.elapsed().as_secs_f64().max(0.001);
        let remaining = tally.estimated.saturating_sub(copied) as f64 / rate.max(1.0);
        self.metrics.snapshot_remaining_seconds.set(remaining as i64);
        tracing::info!(
            namespace = %tally.label,
            copied,
            estimated = tally.estimated,
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
