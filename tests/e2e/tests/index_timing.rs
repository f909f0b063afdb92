//! A measurement, not a check (ignored by default): how long until the target has a snapshotted
//! collection's documents and its secondary indexes, with the indexes sent before the documents
//! (the target maintains them while the documents arrive) or after them (it builds each once).
//!
//! ```text
//! cargo test --release -p e2e --test index_timing -- --ignored --nocapture
//! INDEX_TIMING_DOCS=200000 (default)
//! ```

use std::time::{Duration, Instant};

use bson::{doc, DateTime, Document};
use cdc_source::{IndexTiming, SnapshotMode};
use e2e::pipeline::Pipeline;

const INDEXES: [&str; 3] = ["by_customer", "by_sku", "by_day_customer"];

async fn seed(p: &Pipeline, docs: i32) {
    let orders = p.source_db().collection::<Document>("orders");
    let mut batch = Vec::with_capacity(1000);
    for i in 0..docs {
        batch.push(doc! {
            "_id": i,
            "customer": (i * 7919) % 50_000,
            "sku": format!("sku-{:06}", (i * 104_729) % 200_000),
            "day": DateTime::from_millis(1_700_000_000_000 + i64::from(i % 365) * 86_400_000),
            "qty": i % 10,
            "note": "x".repeat(120),
        });
        if batch.len() == 1000 {
            orders.insert_many(std::mem::take(&mut batch)).await.expect("seed");
        }
    }
    if !batch.is_empty() {
        orders.insert_many(batch).await.expect("seed");
    }
    p.source_db()
        .run_command(doc! {"createIndexes": "orders", "indexes": [
            {"key": {"customer": 1}, "name": INDEXES[0]},
            {"key": {"sku": 1}, "name": INDEXES[1]},
            {"key": {"day": 1, "customer": 1}, "name": INDEXES[2]},
        ]})
        .await
        .expect("indexes");
}

/// Seconds from the source's start until the target has every document, and until it also has
/// every index.
async fn run(timing: IndexTiming, docs: i32) -> (f64, f64) {
    let mut p = Pipeline::new("idx_timing", 4).await;
    p.source_config.snapshot.mode = SnapshotMode::Initial;
    p.source_config.snapshot.indexes = timing;
    seed(&p, docs).await;
    let sink = p.start_sink().await;
    let started = Instant::now();
    let source = p.start_source().await;
    let target = p.target_db().collection::<Document>("orders");
    let (mut documents, mut all) = (None, None);
    while all.is_none() {
        assert!(started.elapsed() < Duration::from_secs(1800), "no convergence within 30 minutes");
        let count = target.count_documents(doc! {}).await.unwrap_or(0);
        if documents.is_none() && count == docs as u64 {
            documents = Some(started.elapsed().as_secs_f64());
        }
        let names = e2e::schema::indexes(&p.target_db(), "orders").await;
        if documents.is_some() && INDEXES.iter().all(|name| names.contains_key(*name)) {
            all = Some(started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    source.stop().await;
    sink.stop().await;
    p.source_db().drop().await.expect("drop source");
    p.target_db().drop().await.expect("drop target");
    (documents.unwrap_or_default(), all.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement of minutes; run it with --ignored --nocapture"]
async fn indexes_before_or_after_the_copy() {
    let docs = std::env::var("INDEX_TIMING_DOCS").ok().and_then(|n| n.parse().ok()).unwrap_or(200_000);
    for round in 1..=2 {
        for timing in [IndexTiming::AfterCopy, IndexTiming::BeforeCopy] {
            let (documents, all) = run(timing, docs).await;
            println!(
                "round {round}, {timing:?}, {docs} documents, 3 secondary indexes: documents on the target after \
                 {documents:.1} s, documents and indexes after {all:.1} s"
            );
        }
    }
}
