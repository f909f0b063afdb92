//! The demo's script, run by `scripts/demo.sh` once both services are up:
//!
//! `demo scenario TOPIC_PREFIX`: the seed's `inventory.products` story — insert Pen, Poster
//! Paint and Spray Paint, then update, delete and drop — printing after each step the Debezium
//! events on the topic and the documents in the target.
//! `demo load RATE`: a steady write load on `inventory.orders` until Ctrl-C.

use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use mongodb::Collection;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use test_support::services;

const DB: &str = "inventory";
const COLL: &str = "products";

fn products() -> Vec<Document> {
    vec![
        doc! {"ProductName": "Pen", "Colors": ["Red", "Green", "Blue", "Black"],
        "Inventory": {"OnHand": 244, "MinOnHand": 72}},
        doc! {"ProductName": "Poster Paint", "Colors": ["Red", "Green", "Blue", "Black", "White"],
        "Inventory": {"OnHand": 47, "MinOnHand": 50}},
        doc! {"ProductName": "Spray Paint", "Colors": ["Black", "Red", "Green", "Blue"],
        "Inventory": {"OnHand": 47, "MinOnHand": 50, "OrderQnty": 36}},
    ]
}

/// Reads the records a step adds to the topic: remembers where each partition ended.
struct TopicTail {
    consumer: BaseConsumer,
    topic: String,
    from: Vec<(i32, i64)>,
}

impl TopicTail {
    fn new(bootstrap: &str, topic: &str) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "demo-viewer")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .expect("kafka consumer");
        let mut tail = TopicTail { consumer, topic: topic.to_string(), from: Vec::new() };
        tail.mark();
        tail
    }

    /// Remembers the current end of every partition (none yet when the topic does not exist).
    fn mark(&mut self) {
        let metadata = self.consumer.fetch_metadata(None, Duration::from_secs(5)).expect("metadata");
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == self.topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        self.from = partitions
            .into_iter()
            .map(|p| {
                let (_, high) =
                    self.consumer.fetch_watermarks(&self.topic, p, Duration::from_secs(5)).expect("watermarks");
                (p, high)
            })
            .collect();
    }

    /// Waits for `count` new change or DDL records after the mark, prints them, then marks
    /// again. Watermarks (cdc-source's progress records, interleaved on every partition) are
    /// counted and summarised in one line: they are not the step's events.
    fn show(&mut self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        // The topic appears with the first event: wait for it.
        while self.from.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            self.mark();
            if !self.from.is_empty() {
                self.from.iter_mut().for_each(|(_, o)| *o = 0);
            }
        }
        let mut assignment = TopicPartitionList::new();
        for (p, offset) in &self.from {
            assignment.add_partition_offset(&self.topic, *p, Offset::Offset(*offset)).expect("assign");
        }
        self.consumer.assign(&assignment).expect("assign");
        let (mut seen, mut watermarks) = (0, 0);
        while seen < count && Instant::now() < deadline {
            if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(200)) {
                let key = m.key().map(String::from_utf8_lossy).unwrap_or_default();
                if is_watermark(&key) {
                    watermarks += 1;
                    continue;
                }
                seen += 1;
                println!("  ┌ {} partition {} offset {}", m.topic(), m.partition(), m.offset());
                println!("  │ key   {key}");
                match m.payload() {
                    None => println!("  └ value null (tombstone: lets compaction forget the key)"),
                    Some([]) => println!("  └ value empty (control event: the key above describes it)"),
                    Some(bytes) => print_value(bytes),
                }
            }
        }
        if seen < count {
            println!("  (only {seen} of {count} events arrived within 30 s)");
        }
        if watermarks > 0 {
            println!("  (and {watermarks} watermark record(s): how far cdc-source has read, for the sink's consistency point)");
        }
        self.mark();
    }
}

/// A watermark's key: `{"id": null, "watermark": {…}, …}`.
fn is_watermark(key: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(key).is_ok_and(|k| k.get("watermark").is_some())
}

/// The Debezium value, trimmed to what tells the story (the full record carries `source`,
/// `ts_ms`, `transaction` and our `cdc` block too).
fn print_value(bytes: &[u8]) {
    let value: serde_json::Value = serde_json::from_slice(bytes).unwrap_or(serde_json::Value::Null);
    if let Some(ddl) = value.get("ddl") {
        println!("  └ value control event: ddl {ddl}");
        return;
    }
    println!("  │ op    {}", value["op"]);
    for field in ["before", "after", "updateDescription"] {
        if !value[field].is_null() {
            println!("  │ {field:<6}{}", value[field]);
        }
    }
    println!(
        "  └ source {{db: {}, collection: {}, ts_ms: {}}}  ({} bytes in all)",
        value["source"]["db"],
        value["source"]["collection"],
        value["source"]["ts_ms"],
        bytes.len()
    );
}

/// Waits until the target collection satisfies `done`, then prints it with each field's BSON type.
async fn show_target(target: &Collection<Document>, what: &str, done: impl Fn(&[Document]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let docs = loop {
        let docs: Vec<Document> = target.find(doc! {}).await.expect("find").try_collect().await.expect("read");
        if done(&docs) || Instant::now() > deadline {
            break docs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("  target {DB}.{COLL} ({what}): {} document(s)", docs.len());
    for d in &docs {
        let types: Vec<String> =
            d.iter().filter(|(k, _)| *k != "_id").map(|(k, v)| format!("{k}: {:?}", v.element_type())).collect();
        println!("    {}", Bson::Document(d.clone()).into_relaxed_extjson());
        println!("      types → {}", types.join(", "));
    }
}

fn step(title: &str) {
    println!("\n━━ {title}");
}

async fn scenario(prefix: &str) {
    let servers = services();
    let source = test_support::mongo(&servers.mongo_source_uri).await.database(DB).collection::<Document>(COLL);
    let target = test_support::mongo(&servers.mongo_target_uri).await.database(DB).collection::<Document>(COLL);
    let mut tail = TopicTail::new(&servers.kafka_bootstrap, &format!("{prefix}.{DB}.{COLL}"));
    let partitions = tail.from.len().max(1);

    if source.estimated_document_count().await.unwrap_or(0) > 0 {
        step("0. a previous run left inventory.products: dropping it (the drop replicates too)");
        source.drop().await.expect("drop");
        show_target(&target, "after the drop", |d| d.is_empty()).await;
        tail.mark();
    }

    step("1. insert Pen, Poster Paint and Spray Paint into the source");
    source.insert_many(products()).await.expect("insert");
    tail.show(3);
    show_target(&target, "arrays and sub-documents stay BSON arrays and documents", |d| d.len() == 3).await;

    step("2. update: Poster Paint restocked (OnHand 47 → 120) and a colour added");
    source
        .update_one(
            doc! {"ProductName": "Poster Paint"},
            doc! {"$set": {"Inventory.OnHand": 120}, "$push": {"Colors": "Yellow"}},
        )
        .await
        .expect("update");
    tail.show(1);
    show_target(&target, "after the update", |d| {
        d.iter().any(|p| p.get_document("Inventory").is_ok_and(|i| i.get_i32("OnHand") == Ok(120)))
    })
    .await;

    step("3. delete: Pen discontinued");
    source.delete_one(doc! {"ProductName": "Pen"}).await.expect("delete");
    tail.show(2);
    show_target(&target, "after the delete", |d| d.len() == 2).await;

    step("4. drop the collection");
    source.drop().await.expect("drop");
    let partitions = partitions.max(tail.from.len());
    tail.show(partitions);
    show_target(&target, "after the drop", |d| d.is_empty()).await;
    let names = target.client().database(DB).list_collection_names().await.expect("list");
    println!("  target collections in {DB}: {names:?}");
}

async fn load(rate: u64) {
    let servers = services();
    let orders = test_support::mongo(&servers.mongo_source_uri).await.database(DB).collection::<Document>("orders");
    println!("demo load: {rate} writes/s into {DB}.orders (inserts, updates, some deletes); Ctrl-C stops");
    let tick = Duration::from_millis(100);
    let per_tick = (rate / 10).max(1) as i64;
    let mut next = id_base();
    let started = Instant::now();
    let mut written: u64 = 0;
    loop {
        let batch: Vec<Document> = (0..per_tick).map(|i| doc! {"_id": next + i, "qty": i, "status": "new"}).collect();
        orders.insert_many(batch).await.expect("insert");
        orders
            .update_many(doc! {"_id": {"$gte": next, "$lt": next + per_tick / 2}}, doc! {"$set": {"status": "paid"}})
            .await
            .expect("update");
        orders.delete_many(doc! {"_id": {"$gte": next, "$lt": next + per_tick / 10}}).await.expect("delete");
        written += per_tick as u64 * 16 / 10;
        next += per_tick;
        if written % (rate * 10) < per_tick as u64 * 2 {
            println!("demo load: {written} writes in {:.0} s", started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(tick).await;
    }
}

/// Start of this run's `_id` range (microseconds since the epoch), so runs never collide.
fn id_base() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64) * 1000
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["scenario", prefix] => scenario(prefix).await,
        ["load", rate] => load(rate.parse().expect("RATE: writes per second")).await,
        _ => {
            eprintln!("usage: demo scenario TOPIC_PREFIX | demo load RATE");
            std::process::exit(2);
        }
    }
}
