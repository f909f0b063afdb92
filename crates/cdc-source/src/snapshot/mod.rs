//! The initial snapshot: fix the stream position first, then create every captured view and copy
//! every captured collection (options, indexes and documents in `_id` order, a few at a time,
//! a large one by several readers in `_id` ranges, `copy.rs`), resumable from the last `_id`
//! copied (of each range). Streaming
//! afterwards starts after the fixed position, so nothing written during the copy is missed; what
//! overlaps is harmless because the sink applies idempotently. The completion time is kept: a
//! rename streamed up to it may have moved a collection while it was copied.
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | the initial snapshot: the stream position first, views, each collection copied |
//! | `copy.rs` | one collection's documents in `_id` order, resumable from the last `_id` |
//! | `ranges.rs` | a large collection split into `_id` ranges for parallel readers |

pub(crate) mod copy;
pub(crate) mod ranges;

use std::sync::Arc;

use envelope::{ClusterTime, Ddl, Namespace};
use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use crate::capture::convert::Converter;
use crate::capture::routing::NamespaceFilter;
use crate::capture::schema;
use crate::config::{Compat, SnapshotConfig};
use crate::delivery::checkpoint::{CheckpointUpdate, CollectionProgress, SnapshotState};
use crate::delivery::queue;
use crate::delivery::record::Item;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::server::{cluster_time, now_ms};
use copy::{Copier, Tracking};
use ranges::Ranges;

/// Where a finished snapshot leaves the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// Streaming starts after this position.
    pub start_at: ClusterTime,
    /// When the last collection was copied.
    pub completed_at: ClusterTime,
}

pub struct Snapshot<'a> {
    pub client: &'a mongodb::Client,
    pub filter: &'a NamespaceFilter,
    pub config: &'a SnapshotConfig,
    pub compat: Compat,
    pub converter: Arc<Converter>,
    pub tx: queue::Sender,
    pub metrics: Metrics,
}

impl Snapshot<'_> {
    /// Copies what `state` says is left (everything, for a fresh state) and returns where
    /// streaming must start. Returns early, with `None`, on shutdown.
    pub async fn run(&self, state: SnapshotState, shutdown: &CancellationToken) -> Result<Option<Done>, Error> {
        let (start_at, collections) = match state.start_at {
            Some(start_at) => (start_at, state.collections),
            None => {
                // Fix the position before reading anything.
                let start_at = cluster_time(self.client).await?;
                let (views, namespaces): (Vec<schema::Listed>, Vec<schema::Listed>) =
                    schema::captured(self.client, self.filter).await?.into_iter().partition(|l| l.view);
                let namespaces: Vec<Namespace> = namespaces.into_iter().map(|l| l.ns).collect();
                tracing::info!(?start_at, collections = namespaces.len(), views = views.len(), "snapshot starting");
                let progress = CheckpointUpdate::SnapshotStarted {
                    start_at,
                    namespaces: namespaces.iter().map(ToString::to_string).collect(),
                };
                // Views have no documents: created with the snapshot's start.
                let mut started = Item::progress_only(progress);
                for view in views {
                    let create = Ddl::Create { ns: view.ns, options: view.options };
                    started.records.extend(self.converter.schema_records(
                        create,
                        start_at,
                        envelope::Snapshot::True,
                        now_ms(),
                    ));
                }
                if !self.send(started, shutdown).await {
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
        let copier = Copier {
            client: self.client,
            converter: &self.converter,
            tx: &self.tx,
            batch_size: self.config.batch_size,
            compat: self.compat,
            metrics: &self.metrics,
            tracking: Tracking::Snapshot(Ranges {
                readers: self.config.parallel_ranges,
                min_documents: self.config.min_range_documents,
            }),
            indexes: self.config.indexes,
        };
        let copier = &copier;
        let results: Vec<bool> = futures::stream::iter(pending)
            .map(|(ns, progress)| async move { copier.copy(&ns, progress, start_at, shutdown).await })
            .buffer_unordered(self.config.max_parallel_collections)
            .try_collect()
            .await?;
        if shutdown.is_cancelled() || results.contains(&false) {
            return Ok(None);
        }
        let completed_at = cluster_time(self.client).await?;
        if !self.send(Item::progress_only(CheckpointUpdate::SnapshotCompleted { at: completed_at }), shutdown).await {
            return Ok(None);
        }
        self.metrics.snapshot_remaining_seconds.set(0);
        tracing::info!(?completed_at, "snapshot complete");
        Ok(Some(Done { start_at, completed_at }))
    }

    async fn send(&self, item: Item, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            _ = shutdown.cancelled() => false,
            sent = self.tx.send(item) => sent.is_ok(),
        }
    }
}
