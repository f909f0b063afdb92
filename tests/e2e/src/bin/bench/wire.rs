//! wire (`BENCH_ONLY=wire`): the bytes that cross the region boundary per document. sink-writer
//! fetches cdc-source's batches exactly as the producer compressed them, and the single broker's
//! log segments hold those batches (`e2e::kafka_log`): their bytes per document, against the
//! documents' own BSON size, are what the target region pays for. Two shapes of document (the
//! bench's: a counter, a short name and 240 bytes of one letter; and a realistic mix: a
//! customer with a nested address, 1–5 order lines with prices, a status, a total, a date and a
//! few sentences of notes), each through lz4 (the default), zstd at its default level and zstd
//! at level 9, with cdc-source's CPU per document (which the codec's level costs); and beside them
//! Debezium's topics of the same documents (its MongoDB connector, JSON without schemas, Kafka
//! Connect's producer uncompressed as by default, and with zstd).

use std::path::Path;
use std::time::{Duration, Instant};

use bson::{doc, Bson, DateTime, Document};
use e2e::bench::proc_stats;
use e2e::kafka_log::{self, TopicLog};
use futures::StreamExt;
use test_support::{unique, Services};

use super::capture::Debezium;
use super::pipeline::{document, Pipeline};

pub(crate) struct WireRun {
    /// cdc-source, or Debezium's connector.
    pub tool: &'static str,
    pub shape: &'static str,
    pub codec: &'static str,
    pub level: i32,
    docs: i64,
    bson_bytes: u64,
    log: TopicLog,
    cpu_seconds: f64,
}

impl WireRun {
    /// Bytes a consumer fetches per document.
    pub fn bytes_per_doc(&self) -> f64 {
        self.log.bytes as f64 / self.docs as f64
    }

    /// Those bytes against the documents' own BSON size.
    pub fn of_bson(&self) -> f64 {
        self.log.bytes as f64 / self.bson_bytes.max(1) as f64
    }
}

const WORDS: [&str; 24] = [
    "delivery",
    "please",
    "leave",
    "the",
    "parcel",
    "at",
    "front",
    "door",
    "customer",
    "called",
    "about",
    "invoice",
    "refund",
    "requested",
    "for",
    "damaged",
    "item",
    "express",
    "shipping",
    "upgrade",
    "gift",
    "wrap",
    "note",
    "thanks",
];
const CITIES: [&str; 8] = ["Lisbon", "Dublin", "Frankfurt", "Stockholm", "Milan", "Paris", "Madrid", "Warsaw"];
const STATUS: [&str; 4] = ["new", "paid", "shipped", "delivered"];

/// A deterministic order document: nested, strings, numbers, an array of sub-documents.
fn order(i: i64) -> Document {
    let mut r = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move |n: u64| {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        r % n
    };
    let lines: Vec<Bson> = (0..1 + next(5))
        .map(|l| {
            let qty = 1 + next(4) as i32;
            let price = (100 + next(9_900)) as f64 / 100.0;
            Bson::Document(
                doc! {"sku": format!("SKU-{:05}", next(50_000)), "line": l as i32, "qty": qty, "price": price},
            )
        })
        .collect();
    let total: f64 = lines
        .iter()
        .filter_map(|l| l.as_document())
        .map(|l| l.get_i32("qty").unwrap_or(0) as f64 * l.get_f64("price").unwrap_or(0.0))
        .sum();
    let notes: Vec<&str> = (0..5 + next(25)).map(|_| WORDS[next(WORDS.len() as u64) as usize]).collect();
    doc! {
        "_id": i,
        "customer": {
            "id": next(1_000_000) as i64,
            "name": format!("Customer {}", next(100_000)),
            "email": format!("c{}@example.com", next(100_000)),
            "address": {"street": format!("{} Main Street", 1 + next(300)), "city": CITIES[next(8) as usize], "zip": format!("{:05}", next(99_999))},
        },
        "lines": lines,
        "status": STATUS[next(4) as usize],
        "total": (total * 100.0).round() / 100.0,
        "created": DateTime::from_millis(1_700_000_000_000 + next(10_000_000_000) as i64),
        "notes": notes.join(" "),
    }
}

async fn run(
    servers: &Services,
    shape: &'static str,
    codec: &'static str,
    level: i32,
    docs: i64,
    dir: &Path,
) -> WireRun {
    std::env::set_var("BENCH_CDC_SOURCE__DELIVERY__COMPRESSION", codec);
    std::env::set_var("BENCH_CDC_SOURCE__DELIVERY__COMPRESSION_LEVEL", level.to_string());
    let name = unique("wire");
    let p = Pipeline::start_with(name.clone(), servers, 4, &servers.kafka_bootstrap, dir, false).await;
    std::env::remove_var("BENCH_CDC_SOURCE__DELIVERY__COMPRESSION");
    std::env::remove_var("BENCH_CDC_SOURCE__DELIVERY__COMPRESSION_LEVEL");
    let coll = test_support::mongo(&servers.mongo_source_uri).await.database(&name).collection::<Document>("items");
    let bson_bytes = insert_shape(coll, shape, docs).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    while p.inserts_on_kafka().await < docs as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (source, _) = p.stats();
    let topic = format!("{name}.{name}.items");
    // The broker writes the segments it acknowledged; give the page cache a moment to show them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = kafka_log::topic(&topic);
    p.stop(servers).await;
    WireRun { tool: "cdc-source", shape, codec, level, docs, bson_bytes, log, cpu_seconds: source.cpu_seconds }
}

/// Inserts `docs` documents of `shape`, 1,000 per `insert_many`, four in flight; returns their
/// BSON bytes.
async fn insert_shape(coll: mongodb::Collection<Document>, shape: &str, docs: i64) -> u64 {
    let make = if shape == "bench" { document } else { order };
    let bson_bytes: u64 = (0..docs).map(|i| bson::to_vec(&make(i)).map_or(0, |b| b.len() as u64)).sum();
    futures::stream::iter((0..docs).step_by(1000))
        .map(|from| {
            let coll = coll.clone();
            async move {
                let batch: Vec<Document> = (from..(from + 1000).min(docs)).map(make).collect();
                coll.insert_many(batch).ordered(false).await.expect("insert");
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<()>>()
        .await;
    bson_bytes
}

/// Debezium's topic of the same documents: its MongoDB connector streaming them (JSON without
/// schemas, the smallest of its converters' usual settings) through Kafka Connect's producer
/// with `codec` (`none` is Connect's default).
async fn debezium(servers: &Services, shape: &'static str, codec: &'static str, docs: i64, dir: &Path) -> WireRun {
    let db = unique("wire_dbz");
    let client = test_support::mongo(&servers.mongo_source_uri).await;
    let worker = format!("producer.compression.type={codec}\n");
    let mut d = Debezium::start(servers, &client, &db, dir, &worker).await;
    let cpu = proc_stats(d.pid()).cpu_seconds;
    let bson_bytes = insert_shape(client.database(&db).collection::<Document>("items"), shape, docs).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    while d.records().await.unwrap_or_else(|why| panic!("Debezium: {why}")) <= docs as u64 {
        assert!(Instant::now() < deadline, "Debezium: {docs} documents on its topic within 600 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cpu_seconds = proc_stats(d.pid()).cpu_seconds - cpu;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = kafka_log::topic(&d.topic);
    d.stop().await;
    let _ = client.database(&db).drop().await;
    WireRun { tool: "Debezium", shape, codec, level: -1, docs, bson_bytes, log, cpu_seconds }
}

pub(crate) async fn wire(servers: &Services, docs: i64, dir: &Path) -> Vec<WireRun> {
    let mut runs = Vec::new();
    for shape in ["bench", "realistic"] {
        for (codec, level) in [("lz4", -1), ("zstd", -1), ("zstd", 9)] {
            runs.push(run(servers, shape, codec, level, docs, dir).await);
        }
        for codec in ["none", "zstd"] {
            runs.push(debezium(servers, shape, codec, docs, dir).await);
        }
    }
    runs
}

pub(crate) fn wire_report(runs: &[WireRun]) -> String {
    let mut out = String::from(
        "| documents | tool | codec | BSON bytes/doc | on the wire bytes/doc | wire / BSON | data batches | the tool's CPU µs/doc |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for r in runs {
        let level = if r.level < 0 { "default".to_string() } else { format!("level {}", r.level) };
        let records_ok = if r.log.records >= r.docs as u64 { "" } else { " (incomplete)" };
        out.push_str(&format!(
            "| {} × {}{} | {} | {} ({}) | {:.0} | {:.0} | {:.2} | {} | {:.1} |\n",
            r.shape,
            r.docs,
            records_ok,
            r.tool,
            r.codec,
            level,
            r.bson_bytes as f64 / r.docs as f64,
            r.bytes_per_doc(),
            r.of_bson(),
            r.log.data_batches,
            r.cpu_seconds * 1e6 / r.docs as f64,
        ));
    }
    out
}
