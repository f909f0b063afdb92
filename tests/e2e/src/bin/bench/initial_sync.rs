//! Initial sync of one large collection: DOCS documents in one collection before either service
//! runs; cdc-source copies it to Kafka (in `_id` ranges, `snapshot.parallel_ranges`) with the
//! sink stopped, then sink-writer applies the copy: each stage's rate on its own, from its
//! process's start.

use std::path::Path;
use std::time::{Duration, Instant};

use bson::Document;
use e2e::bench::{self, mib, ProcStats};
use test_support::{unique, Services};

use crate::env_or;
use crate::pipeline::{insert, Pipeline};

pub struct InitialSync {
    docs: u64,
    ranges: usize,
    to_kafka: Duration,
    to_target: Duration,
    source: ProcStats,
    sink: ProcStats,
}

pub async fn initial_sync(servers: &Services, docs: i64, dir: &Path) -> InitialSync {
    let name = unique("bench");
    let source = test_support::mongo(&servers.mongo_source_uri).await.database(&name).collection::<Document>("items");
    let seeding = Instant::now();
    insert(source, docs, 0).await;
    eprintln!("initial sync: {docs} documents seeded in {:.0} s", seeding.elapsed().as_secs_f64());
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
    InitialSync {
        docs,
        ranges: env_or("BENCH_CDC_SOURCE__SNAPSHOT__PARALLEL_RANGES", 4),
        to_kafka,
        to_target,
        source,
        sink,
    }
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

pub fn initial_sync_report(s: &InitialSync) -> String {
    let rate = |d: Duration| s.docs as f64 / d.as_secs_f64();
    format!(
        "\n### Initial sync: {} documents in one collection, {} reader(s); the copy to Kafka, then the sink from its start\n\n\
         | copied to Kafka | docs/s | then applied | docs/s | cdc-source CPU s (µs per document), peak RSS | sink-writer CPU s (µs per document), peak RSS |\n\
         |---|---|---|---|---|---|\n\
         | {:.1} s | {:.0} | {:.1} s | {:.0} | {:.1} s ({:.1} µs), {} | {:.1} s ({:.1} µs), {} |\n",
        s.docs,
        s.ranges,
        s.to_kafka.as_secs_f64(),
        rate(s.to_kafka),
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
