//! Throughput measurement on the real servers: `cargo run --release -p e2e --bin throughput --
//! [DOCS] [PARTITIONS]`. Inserts DOCS documents (~300 bytes) into the source at full speed
//! with cdc-source running, then lets sink-writer apply the whole backlog, then bulk-writes the
//! same documents straight into the target (the ceiling for any sink). Prints a markdown table.

use std::time::{Duration, Instant};

use bson::{doc, Document};
use e2e::pipeline::{metric, Pipeline};
use futures::StreamExt;

const PAD: usize = 240;

fn document(i: i64) -> Document {
    doc! {"_id": i, "n": i, "name": format!("item-{i}"), "pad": "x".repeat(PAD)}
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let docs: i64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let partitions: i32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut p = Pipeline::new("bench", partitions).await;
    p.source_config.delivery.batch_max_events = 20_000;
    p.source_config.capture.batch_size = 5_000;

    let source = p.start_source().await;
    let coll = p.source_db().collection::<Document>("items");
    let started = Instant::now();
    futures::stream::iter((0..docs).step_by(1000))
        .map(|from| {
            let coll = coll.clone();
            async move {
                let batch: Vec<Document> = (from..(from + 1000).min(docs)).map(document).collect();
                coll.insert_many(batch).ordered(false).await.expect("insert");
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<()>>()
        .await;
    let inserted = started.elapsed();
    loop {
        let produced = metric(&source.metrics().await, "cdc_source_events_total{");
        if produced >= docs as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let produced = started.elapsed();
    source.stop().await;

    let sink_started = Instant::now();
    let sink = p.start_sink().await;
    let target = p.target_db().collection::<Document>("items");
    loop {
        if target.estimated_document_count().await.unwrap_or(0) >= docs as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let applied = sink_started.elapsed();
    let bulk_ms = metric(&sink.metrics().await, "sink_writer_bulk_write_duration_seconds_sum") * 1000.0;
    sink.stop().await;

    // The ceiling: the same documents bulk-written straight into the target, 1,000 per
    // unordered upsert command, four in flight.
    let raw = p.target.database(&format!("{}_raw", p.name));
    let raw_started = Instant::now();
    futures::stream::iter((0..docs).step_by(1000))
        .map(|from| {
            let raw = raw.clone();
            async move {
                let updates: Vec<Document> = (from..(from + 1000).min(docs))
                    .map(|i| doc! {"q": {"_id": i}, "u": document(i), "upsert": true})
                    .collect();
                raw.run_command(
                    doc! {"update": "items", "updates": updates, "ordered": false, "writeConcern": {"w": "majority"}},
                )
                .await
                .expect("raw bulk");
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<()>>()
        .await;
    let ceiling = raw_started.elapsed();

    let rate = |d: Duration| docs as f64 / d.as_secs_f64();
    println!("| docs | partitions | source inserts/s | produced events/s | sink applied docs/s (backlog) | raw bulk upserts/s | sink / raw | total bulk time s |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {docs} | {partitions} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0}% | {:.1} |",
        rate(inserted),
        rate(produced),
        rate(applied),
        rate(ceiling),
        100.0 * rate(applied) / rate(ceiling),
        bulk_ms / 1000.0
    );
}
