//! The change stream loop: open at the planned position, convert every event, and hand the
//! items to the producer through the bounded queue (a full queue pauses reading).

use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use envelope::{ClusterTime, Namespace};
use mongodb::change_stream::event::{ChangeStreamEvent, ResumeToken};
use mongodb::change_stream::ChangeStream;
use mongodb::options::{ChangeStreamOptions, FullDocumentBeforeChangeType, FullDocumentType};
use service_kit::health::LoopBeat;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{CollectionProgress, Progress};
use crate::config::{CaptureConfig, Compat, Scope};
use crate::convert::{Converted, Converter, Recopy};
use crate::copy::{Copier, Tracking};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::record::Item;

/// Where the stream opens.
#[derive(Debug, Clone)]
pub enum Start {
    ResumeAfter(Document),
    /// Strictly after this cluster time: `startAtOperationTime` is inclusive, and every position
    /// stored as a time (a snapshot's, a fixed "now", an invalidate) is covered already.
    After(ClusterTime),
    Now,
}

/// The first cluster time after `time`.
pub fn next_tick(time: ClusterTime) -> ClusterTime {
    match time.i.checked_add(1) {
        Some(i) => ClusterTime { t: time.t, i },
        None => ClusterTime { t: time.t.saturating_add(1), i: 0 },
    }
}

pub struct StreamLoop<'a> {
    pub client: &'a mongodb::Client,
    pub config: &'a CaptureConfig,
    pub converter: Converter,
    pub tx: mpsc::Sender<Item>,
    pub beat: LoopBeat,
    pub idle_checkpoint_interval: Duration,
    pub metrics: Metrics,
    /// Readiness: set once the stream is open.
    pub health: service_kit::health::Health,
    /// Where idle heartbeats go, if anywhere.
    pub heartbeat_topic: Option<String>,
    /// Documents per read batch when a rename makes the stream copy a collection.
    pub copy_batch_size: u32,
}

impl StreamLoop<'_> {
    /// Streams until `shutdown`, or until an error the caller must handle (it restarts from the
    /// last durable checkpoint, or acts on a lost history).
    pub async fn run(mut self, mut start: Start, shutdown: CancellationToken) -> Result<(), Error> {
        'reopen: loop {
            let mut stream = open(self.client, self.config, &start).await?;
            tracing::info!(position = ?start, scope = ?self.config.scope, "change stream open");
            self.health.set_ready(crate::pipeline::COMPONENT);
            let mut last_progress = Instant::now();
            loop {
                self.beat.beat();
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    next = stream.next_if_any() => next.map_err(|e| Error::mongo("change stream", e))?,
                };
                let item = match next {
                    Some(event) => match self.converter.change(event, now_ms()) {
                        Converted::Item(item) if item.records.is_empty() => {
                            // Not captured: only worth a checkpoint now and then.
                            if last_progress.elapsed() < self.idle_checkpoint_interval {
                                continue;
                            }
                            item
                        }
                        Converted::Item(item) => item,
                        Converted::Copy(copy) => {
                            let Recopy { markers, ns, at, progress } = *copy;
                            if !self.copy(markers, &ns, at, &shutdown).await? {
                                return Ok(());
                            }
                            Item { records: Vec::new(), progress: Some(progress), cluster_time: Some(at) }
                        }
                        Converted::Invalidate { cluster_time } => {
                            // startAfter is not available on DocumentDB: reopen just after the
                            // invalidating event instead.
                            let after = cluster_time.unwrap_or_default();
                            start = Start::After(after);
                            self.metrics.restarts.with_label_values(&["invalidate"]).inc();
                            tracing::info!(?after, "change stream invalidated: reopening after it");
                            continue 'reopen;
                        }
                    },
                    None => {
                        // Idle: the post-batch resume token still advances the checkpoint.
                        if last_progress.elapsed() < self.idle_checkpoint_interval {
                            continue;
                        }
                        match stream.resume_token().and_then(|t| bson::to_document(&t).ok()) {
                            Some(resume_token) => {
                                let mut item = Item::progress_only(Progress::Stream {
                                    resume_token: resume_token.clone(),
                                    cluster_time: None,
                                });
                                if let Some(topic) = &self.heartbeat_topic {
                                    item.records.push(self.converter.heartbeat(topic, &resume_token, now_ms()));
                                }
                                item
                            }
                            None => continue,
                        }
                    }
                };
                last_progress = Instant::now();
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    sent = self.tx.send(item) => if sent.is_err() { return Ok(()) },
                }
            }
        }
    }
}

impl StreamLoop<'_> {
    /// Sends the markers, then `ns` as it is now; false when stopped first.
    async fn copy(
        &self,
        markers: Item,
        ns: &Namespace,
        at: ClusterTime,
        shutdown: &CancellationToken,
    ) -> Result<bool, Error> {
        let copier = Copier {
            client: self.client,
            converter: &self.converter,
            tx: &self.tx,
            batch_size: self.copy_batch_size,
            compat: self.config.compat,
            metrics: &self.metrics,
            tracking: Tracking::None,
        };
        if !copier.send(markers, shutdown).await {
            return Ok(false);
        }
        tracing::info!(namespace = %ns, "a rename moved a collection into the captured scope, or one the snapshot was copying: copying it");
        self.metrics.restarts.with_label_values(&["rename_copy"]).inc();
        copier.copy(ns, CollectionProgress::default(), at, shutdown).await
    }
}

/// Opens the stream for the configured scope at `start`.
pub async fn open(
    client: &mongodb::Client,
    config: &CaptureConfig,
    start: &Start,
) -> Result<ChangeStream<ChangeStreamEvent<Document>>, Error> {
    let mut options = ChangeStreamOptions::default();
    options.full_document = Some(FullDocumentType::UpdateLookup);
    if config.pre_images && config.compat == Compat::Mongodb {
        options.full_document_before_change = Some(FullDocumentBeforeChangeType::WhenAvailable);
    }
    options.max_await_time = Some(Duration::from_millis(config.max_await_ms));
    options.batch_size = Some(config.batch_size);
    match start {
        Start::ResumeAfter(token) => {
            let token: ResumeToken = bson::from_document(token.clone())
                .map_err(|e| Error::Fatal(format!("stored resume token is not usable: {e}")))?;
            options.resume_after = Some(token);
        }
        Start::After(time) => options.start_at_operation_time = Some(next_tick(*time).into()),
        Start::Now => {}
    }
    let stream = match config.scope {
        Scope::Deployment => client.watch().with_options(options).await,
        Scope::Database => client.database(&config.database).watch().with_options(options).await,
        Scope::Collections => {
            let databases: std::collections::BTreeSet<&str> =
                config.collections.iter().filter_map(|c| c.split_once('.').map(|(db, _)| db)).collect();
            let pipeline = vec![doc! {"$match": collections_filter(&config.collections)}];
            match databases.iter().next() {
                Some(db) if databases.len() == 1 => {
                    client.database(db).watch().pipeline(pipeline).with_options(options).await
                }
                _ => client.watch().pipeline(pipeline).with_options(options).await,
            }
        }
    };
    stream.map_err(|e| Error::mongo("open change stream", e))
}

/// `$match` for a list of `db.collection`: their events, renames into them, and `dropDatabase`
/// of their databases.
fn collections_filter(collections: &[String]) -> Document {
    let mut any: Vec<Bson> = Vec::new();
    let mut databases = std::collections::BTreeSet::new();
    for name in collections {
        if let Some((db, coll)) = name.split_once('.') {
            any.push(Bson::Document(doc! {"ns.db": db, "ns.coll": coll}));
            any.push(Bson::Document(doc! {"operationType": "rename", "to.db": db, "to.coll": coll}));
            databases.insert(db.to_string());
        }
    }
    for db in databases {
        any.push(Bson::Document(doc! {"operationType": "dropDatabase", "ns.db": db}));
    }
    any.push(Bson::Document(doc! {"operationType": "invalidate"}));
    doc! {"$or": any}
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_tick_is_strictly_later() {
        assert_eq!(next_tick(ClusterTime { t: 5, i: 7 }), ClusterTime { t: 5, i: 8 });
        assert_eq!(next_tick(ClusterTime { t: 5, i: u32::MAX }), ClusterTime { t: 6, i: 0 });
    }
}
