//! The initial snapshot: fix the stream position first, then copy every captured collection in
//! `_id` order (a few at a time), resumable from the last `_id` copied. Streaming afterwards
//! starts at the fixed position, so nothing written during the copy is missed; what overlaps is
//! harmless because the sink applies idempotently.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use envelope::{ClusterTime, Namespace};
use futures::{StreamExt, TryStreamExt};
use mongodb::options::{FindOptions, Hint};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::change_stream::now_ms;
use crate::checkpoint::{CollectionProgress, Progress, SnapshotState};
use crate::config::{Compat, SnapshotConfig};
use crate::convert::Converter;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::record::Item;
use crate::routing::NamespaceFilter;

/// Documents between two updates of the progress metric.
const METRIC_EVERY: u64 = 1000;

pub struct Snapshot<'a> {
    pub client: &'a mongodb::Client,
    pub filter: &'a NamespaceFilter,
    pub config: &'a SnapshotConfig,
    pub compat: Compat,
    pub converter: Arc<Converter>,
    pub tx: mpsc::Sender<Item>,
    pub metrics: Metrics,
}

impl Snapshot<'_> {
    /// Copies what `state` says is left (everything, for a fresh state) and returns the
    /// position streaming must start at. Returns early, with `None`, on shutdown.
    pub async fn run(&self, state: SnapshotState, shutdown: &CancellationToken) -> Result<Option<ClusterTime>, Error> {
        let (start_at, collections) = match state.start_at {
            Some(start_at) => (ClusterTime::from(start_at), state.collections),
            None => {
                // Fix the position before reading anything.
                let start_at = cluster_time(self.client).await?;
                let namespaces = self.list_namespaces().await?;
                tracing::info!(?start_at, collections = namespaces.len(), "snapshot starting");
                let progress = Progress::SnapshotStarted {
                    start_at,
                    namespaces: namespaces.iter().map(ToString::to_string).collect(),
                };
                if !self.send(Item::progress_only(progress), shutdown).await {
                    return Ok(None);
                }
                (start_at, namespaces.into_iter().map(|ns| (ns.to_string(), CollectionProgress::default())).collect())
            }
        };
        let pending: Vec<(Namespace, CollectionProgress)> = collections
            .into_iter()
            .filter(|(_, progress)| !progress.done)
            .filter_map(|(name, progress)| name.split_once('.').map(|(db, coll)| (Namespace::new(db, coll), progress)))
            .collect();
        let results: Vec<bool> = futures::stream::iter(pending)
            .map(|(ns, progress)| self.copy(ns, progress, start_at, shutdown))
            .buffer_unordered(self.config.max_parallel_collections)
            .try_collect()
            .await?;
        if shutdown.is_cancelled() || results.contains(&false) {
            return Ok(None);
        }
        if !self.send(Item::progress_only(Progress::SnapshotCompleted), shutdown).await {
            return Ok(None);
        }
        self.metrics.snapshot_remaining_seconds.set(0);
        tracing::info!("snapshot complete");
        Ok(Some(start_at))
    }

    async fn list_namespaces(&self) -> Result<Vec<Namespace>, Error> {
        let mut namespaces = Vec::new();
        let databases = self.client.list_database_names().await.map_err(|e| Error::mongo("list databases", e))?;
        for db in databases.into_iter().filter(|db| self.filter.wants_database(db)) {
            let names = self
                .client
                .database(&db)
                .list_collection_names()
                .filter(doc! {"type": "collection"})
                .await
                .map_err(|e| Error::mongo("list collections", e))?;
            namespaces
                .extend(names.into_iter().map(|coll| Namespace::new(&db, coll)).filter(|ns| self.filter.wants(ns)));
        }
        namespaces.sort();
        Ok(namespaces)
    }

    /// Copies one collection from where `progress` left off; false when stopped early.
    async fn copy(
        &self,
        ns: Namespace,
        progress: CollectionProgress,
        start_at: ClusterTime,
        shutdown: &CancellationToken,
    ) -> Result<bool, Error> {
        let label = ns.to_string();
        let collection = self.client.database(&ns.db).collection::<Document>(&ns.coll);
        let estimated = collection.estimated_document_count().await.map_err(|e| Error::mongo("count", e))?;
        self.metrics.snapshot_estimated.with_label_values(&[&label]).set(i64::try_from(estimated).unwrap_or(i64::MAX));
        let resume_after = progress.last_id();
        let mut options = FindOptions::default();
        options.sort = Some(doc! {"_id": 1});
        options.batch_size = Some(self.config.batch_size);
        let mut filter = Document::new();
        if let Some(last) = &resume_after {
            match self.compat {
                // min() is inclusive and, unlike $gt, not limited to one BSON type.
                Compat::Mongodb | Compat::Auto => {
                    options.hint = Some(Hint::Keys(doc! {"_id": 1}));
                    options.min = Some(doc! {"_id": last.clone()});
                }
                Compat::Documentdb => filter = doc! {"_id": {"$gt": last.clone()}},
            }
            tracing::info!(namespace = %label, copied = progress.copied, "snapshot resuming collection");
        }
        let mut cursor =
            collection.find(filter).with_options(options).await.map_err(|e| Error::mongo("snapshot read", e))?;
        let mut copied = progress.copied;
        let mut pending: Option<Document> = None;
        let started = Instant::now();
        let mut last_log = Instant::now();
        loop {
            if shutdown.is_cancelled() {
                return Ok(false);
            }
            let next = cursor.try_next().await.map_err(|e| Error::mongo("snapshot read", e))?;
            let Some(doc) = next else { break };
            if resume_after.is_some() && copied == progress.copied && doc.get("_id") == resume_after.as_ref() {
                continue; // min() includes the last document copied before the restart
            }
            // One document of look-ahead, so the collection's last read can say so.
            if let Some(previous) = pending.replace(doc) {
                copied += 1;
                if !self.emit(&ns, previous, start_at, copied, false, shutdown).await {
                    return Ok(false);
                }
            }
            if last_log.elapsed() > Duration::from_secs(10) {
                last_log = Instant::now();
                self.report(&label, copied, progress.copied, estimated, started);
            }
        }
        match pending {
            Some(last) => {
                copied += 1;
                if !self.emit(&ns, last, start_at, copied, true, shutdown).await {
                    return Ok(false);
                }
            }
            None => {
                // Empty (or fully copied): mark it done anyway.
                let done = Progress::SnapshotCollection { ns: label.clone(), last_id: Bson::Null, copied, done: true };
                if !self.send(Item::progress_only(done), shutdown).await {
                    return Ok(false);
                }
            }
        }
        self.metrics.snapshot_copied.with_label_values(&[&label]).set(i64::try_from(copied).unwrap_or(i64::MAX));
        tracing::info!(namespace = %label, copied, seconds = started.elapsed().as_secs(), "snapshot copied collection");
        Ok(true)
    }

    async fn emit(
        &self,
        ns: &Namespace,
        doc: Document,
        start_at: ClusterTime,
        copied: u64,
        last: bool,
        shutdown: &CancellationToken,
    ) -> bool {
        let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
        let record = self.converter.snapshot_read(ns, doc, start_at, last, now_ms());
        // Every read carries its progress, so a restart continues right after the last
        // durable document: no document is copied twice.
        let progress = Some(Progress::SnapshotCollection { ns: ns.to_string(), last_id: id, copied, done: last });
        if copied.is_multiple_of(METRIC_EVERY) {
            self.metrics
                .snapshot_copied
                .with_label_values(&[&ns.to_string()])
                .set(i64::try_from(copied).unwrap_or(i64::MAX));
        }
        self.send(Item { records: vec![record], progress, cluster_time: Some(start_at) }, shutdown).await
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
            "snapshot progress"
        );
    }

    async fn send(&self, item: Item, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            _ = shutdown.cancelled() => false,
            sent = self.tx.send(item) => sent.is_ok(),
        }
    }
}

/// The deployment's current cluster time (`operationTime` of a no-op read).
pub async fn cluster_time(client: &mongodb::Client) -> Result<ClusterTime, Error> {
    let reply = client.database("admin").run_command(doc! {"ping": 1}).await.map_err(|e| Error::mongo("ping", e))?;
    let time = reply
        .get_timestamp("operationTime")
        .ok()
        .or_else(|| reply.get_document("$clusterTime").ok().and_then(|c| c.get_timestamp("clusterTime").ok()));
    time.map(ClusterTime::from)
        .ok_or_else(|| Error::Fatal("the source reports no cluster time: is it a replica set (or DocumentDB)?".into()))
}
