//! Memory under load: peak RSS of both services against their budgets.

use std::time::{Duration, Instant};

use bson::{doc, Document};
use e2e::bench::{self, mib, proc_stats};
use test_support::{unique, Services};

use crate::env_or;
use crate::pipeline::Pipeline;

/// What the memory scenario measured.
pub struct Memory {
    documents: i64,
    collections: usize,
    partitions: i32,
    catch_up: Duration,
    source_peak: u64,
    sink_peak: u64,
}

/// Memory under load: 64 KiB documents into ten collections of four partitions (40 partitions),
/// captured while the sink is stopped, then the sink catches the backlog up. Peak RSS of both.
pub async fn memory(servers: &Services, docs_per_collection: i64, dir: &std::path::Path) -> Memory {
    const COLLECTIONS: usize = 10;
    const PARTITIONS: i32 = 4;
    let mut p = Pipeline::start_with(unique("bench"), servers, PARTITIONS, &servers.kafka_bootstrap, dir, false).await;
    let source_db = test_support::mongo(&servers.mongo_source_uri).await.database(&p.name);
    let target_db = test_support::mongo(&servers.mongo_target_uri).await.database(&p.name);
    // Text that compresses little, as real documents do: 64 KiB of one letter shrinks ~250× under
    // lz4, and the consumer's fetch limits count compressed bytes.
    let big = |i: i64| doc! {"_id": i, "blob": e2e::workload::incompressible(i, 64 * 1024), "n": i};
    let total = docs_per_collection * COLLECTIONS as i64;
    let mut source_peak = 0;
    for c in 0..COLLECTIONS {
        let coll = source_db.collection::<Document>(&format!("big{c}"));
        for from in (0..docs_per_collection).step_by(100) {
            coll.insert_many((from..(from + 100).min(docs_per_collection)).map(big)).await.expect("insert");
            source_peak = source_peak.max(proc_stats(p.source.pid().unwrap_or(0)).peak_rss_bytes);
        }
    }
    // The source has everything on Kafka once its event count stops short of nothing.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let events = p.inserts_on_kafka().await;
        source_peak = source_peak.max(proc_stats(p.source.pid().unwrap_or(0)).peak_rss_bytes);
        bench::progress("memory: captured", events, total as u64, 0.0, "");
        if events >= total as u64 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!();
    let started = Instant::now();
    p.start_sink().await;
    let mut applied = 0;
    while applied < total as u64 && started.elapsed() < Duration::from_secs(900) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        applied = 0;
        for c in 0..COLLECTIONS {
            applied +=
                target_db.collection::<Document>(&format!("big{c}")).estimated_document_count().await.unwrap_or(0);
        }
        let sink = proc_stats(p.sink.pid().unwrap_or(0));
        bench::progress("memory: catch-up", applied, total as u64, 0.0, &format!("sink rss {}", mib(sink.rss_bytes)));
    }
    eprintln!();
    let catch_up = started.elapsed();
    let (source, sink) = p.stats();
    p.stop(servers).await;
    Memory {
        documents: total,
        collections: COLLECTIONS,
        partitions: PARTITIONS,
        catch_up,
        source_peak: source_peak.max(source.peak_rss_bytes),
        sink_peak: sink.peak_rss_bytes,
    }
}

pub fn memory_report(m: &Memory) -> String {
    let sink_budget: u64 = env_or("BENCH_SINK_WRITER__APPLY__MEMORY_BUDGET_BYTES", 320 * 1024 * 1024);
    let source_budget: u64 = env_or("BENCH_CDC_SOURCE__DELIVERY__MEMORY_BUDGET_BYTES", 224 * 1024 * 1024);
    format!(
        "\n### Memory: {} documents of 64 KiB in {} collections × {} partitions, sink catching up a backlog\n\n\
         | service | memory budget | peak RSS |\n|---|---|---|\n| cdc-source (while capturing) | {} | {} |\n\
         | sink-writer (catch-up, {:.0} s, {:.0} docs/s) | {} | {} |\n",
        m.documents,
        m.collections,
        m.partitions,
        mib(source_budget),
        mib(m.source_peak),
        m.catch_up.as_secs_f64(),
        m.documents as f64 / m.catch_up.as_secs_f64(),
        mib(sink_budget),
        mib(m.sink_peak),
    )
}
