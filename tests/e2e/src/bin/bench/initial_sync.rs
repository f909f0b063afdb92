//! Initial sync of one large collection: DOCS documents in one collection before either service
//! runs; cdc-source copies it to Kafka (in `_id` ranges, `snapshot.parallel_ranges`) with the
//! sink stopped, then sink-writer applies the copy: each stage's rate on its own, from its
//! process's start.

use std::path::Path;
use std::time::{Duration, Instant};

use bson::{doc, Document, RawDocumentBuf};
use e2e::bench::{self, mib, ProcStats};
use futures::StreamExt;
use test_support::{unique, Services};

use crate::env_or;

/// cdc-source's default `snapshot.batch_size`.
const SNAPSHOT_BATCH: u32 = 2000;
use crate::pipeline::{insert, Pipeline};

pub struct InitialSync {
    docs: u64,
    ranges: usize,
    /// A bare `find` of the same collection in the same number of `_id` ranges, before the copy.
    pub bare_find: Duration,
    to_kafka: Duration,
    to_target: Duration,
    source: ProcStats,
    sink: ProcStats,
}

pub async fn initial_sync(servers: &Services, docs: i64, dir: &Path) -> InitialSync {
    let name = unique("bench");
    let source = test_support::mongo(&servers.mongo_source_uri).await.database(&name).collection::<Document>("items");
    let seeding = Instant::now();
    insert(source.clone(), docs, 0).await;
    eprintln!("initial sync: {docs} documents seeded in {:.0} s", seeding.elapsed().as_secs_f64());
    let ranges = env_or("BENCH_CDC_SOURCE__SNAPSHOT__PARALLEL_RANGES", 4);
    let bare_find = bare_find(&source, docs, ranges).await;
    let started = Instant::now();
    let mut p = Pipeline::start_with(name, servers, 4, &servers.kafka_bootstrap, dir, false).await;
    let docs = docs as u64;
    until("initial sync: to Kafka", docs, || p.events_on_kafka("r")).await;
    let to_kafka = started.elapsed();
    let started = Instant::now();
    p.start_sink().await;
    let target = test_support::mongo(&servers.mongo_target_uri).await.database(&p.name).collection::<Document>("items");
    until("initial sync: applied", docs, || async { target.estimated_document_count().await.unwrap_or(0) }).await;
    let to_target = started.elapsed();
    let (source, sink) = p.stats();
    p.stop(servers).await;
    InitialSync { docs, ranges, bare_find, to_kafka, to_target, source, sink }
}

/// Reads the bench's documents (`_id` 0..docs) in `ranges` parallel `_id` ranges, sorted by
/// `_id` with cdc-source's batch size as its copy does, doing nothing with them.
async fn bare_find(items: &mongodb::Collection<Document>, docs: i64, ranges: usize) -> Duration {
    let started = Instant::now();
    let raw = items.clone_with_type::<RawDocumentBuf>();
    let step = (docs + ranges as i64 - 1) / ranges as i64;
    let scans = (0..ranges as i64).map(|r| {
        let raw = raw.clone();
        async move {
            let filter = doc! {"_id": {"$gte": r * step, "$lt": (r + 1) * step}};
            let mut cursor = raw.find(filter).sort(doc! {"_id": 1}).batch_size(SNAPSHOT_BATCH).await.expect("find");
            let mut read = 0u64;
            while let Some(doc) = cursor.next().await {
                doc.expect("a document");
                read += 1;
            }
            read
        }
    });
    let read: u64 = futures::future::join_all(scans).await.into_iter().sum();
    assert_eq!(read, docs as u64, "the bare find read every document");
    started.elapsed()
}

/// Polls `count` every 100 ms, with a progress line, until it reaches `total` (an hour at most).
async fn until<F, Fut>(label: &str, total: u64, mut count: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let started = Instant::now();
    loop {
        let done = count().await;
        bench::progress(label, done, total, done as f64 / started.elapsed().as_secs_f64(), "");
        if done >= total {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3600), "{label}: {done} of {total} within an hour");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!();
}

impl InitialSync {
    /// The copy's docs/s (from cdc-source's start) against the bare `find`'s.
    pub fn copy_ratio(&self) -> f64 {
        self.bare_find.as_secs_f64() / self.to_kafka.as_secs_f64()
    }
}

pub fn initial_sync_report(s: &InitialSync) -> String {
    let rate = |d: Duration| s.docs as f64 / d.as_secs_f64();
    format!(
        "\n### Initial sync: {} documents in one collection, {} reader(s); the copy to Kafka, then the sink from its start\n\n\
         | bare `find` in the same ranges | docs/s | copied to Kafka (from cdc-source's start) | docs/s | of the bare `find` | then applied | docs/s | cdc-source CPU s (µs per document), peak RSS | sink-writer CPU s (µs per document), peak RSS |\n\
         |---|---|---|---|---|---|---|---|---|\n\
         | {:.1} s | {:.0} | {:.1} s | {:.0} | {:.0}% | {:.1} s | {:.0} | {:.1} s ({:.1} µs), {} | {:.1} s ({:.1} µs), {} |\n",
        s.docs,
        s.ranges,
        s.bare_find.as_secs_f64(),
        rate(s.bare_find),
        s.to_kafka.as_secs_f64(),
        rate(s.to_kafka),
        100.0 * s.copy_ratio(),
        s.to_target.as_secs_f64(),
        rate(s.to_target),
        s.source.cpu_seconds,
        s.source.cpu_seconds * 1e6 / s.docs as f64,
        mib(s.source.peak_rss_bytes),
        s.sink.cpu_seconds,
        s.sink.cpu_seconds * 1e6 / s.docs as f64,
        mib(s.sink.peak_rss_bytes),
    )
}
