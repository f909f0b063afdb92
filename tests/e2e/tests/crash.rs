//! kill -9 of either service, as processes, in the middle of a write load, and of cdc-source in
//! the middle of a snapshot copying a collection in parallel `_id` ranges: after restarts the
//! target equals the source, and the topic holds every insert (every copied document) exactly
//! once (the source's transactions make a crash neither lose nor repeat events).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use std::time::Instant;

use bson::oid::ObjectId;
use bson::{doc, Bson, Document};
use e2e::pipeline::{wait_ready, Pipeline};
use e2e::{free_addr, spawn};
use tokio::process::Child;

fn source_env(p: &Pipeline, addr: std::net::SocketAddr) -> HashMap<String, String> {
    let c = &p.source_config;
    [
        ("HTTP__LISTEN_ADDR", addr.to_string()),
        ("MONGO__URI", c.mongo.uri.expose().to_string()),
        ("KAFKA__BOOTSTRAP_SERVERS", c.kafka.bootstrap_servers.clone()),
        ("CAPTURE__NAME", c.capture.name.clone()),
        ("CAPTURE__SCOPE", "database".into()),
        ("CAPTURE__DATABASE", c.capture.database.clone()),
        ("TOPICS__PREFIX", c.topics.prefix.clone()),
        ("TOPICS__PARTITIONS", c.topics.partitions.to_string()),
        ("DELIVERY__BATCH_MAX_WAIT_MS", "20".into()),
        ("CAPTURE__COMPAT", format!("{:?}", c.capture.compat).to_lowercase()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("CDC_SOURCE__{k}"), v))
    .collect()
}

fn sink_env(p: &Pipeline, addr: std::net::SocketAddr) -> HashMap<String, String> {
    let c = &p.sink_config;
    [
        ("HTTP__LISTEN_ADDR", addr.to_string()),
        ("MONGO__URI", c.mongo.uri.expose().to_string()),
        ("KAFKA__BOOTSTRAP_SERVERS", c.kafka.bootstrap_servers.clone()),
        ("KAFKA__OPTIONS__TOPIC_METADATA_REFRESH_INTERVAL_MS", "1000".into()),
        ("CONSUME__GROUP_ID", c.consume.group_id.clone()),
        ("CONSUME__DEAD_LETTER_TOPIC", c.consume.dead_letter_topic.clone()),
        ("CONSUME__COMMIT_INTERVAL_MS", "200".into()),
        ("APPLY__METADATA_DATABASE", c.apply.metadata_database.clone()),
        ("APPLY__COMPAT", format!("{:?}", c.apply.compat).to_lowercase()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("SINK_WRITER__{k}"), v))
    .chain([("SINK_WRITER__CONSUME__TOPICS".to_string(), c.consume.topics[0].clone())])
    .collect()
}

async fn start(binary: &str, env: &HashMap<String, String>, addr: std::net::SocketAddr) -> Child {
    let mut child = spawn(binary, &[], env);
    if tokio::time::timeout(Duration::from_secs(45), wait_ready(addr)).await.is_err() {
        child.start_kill().expect("kill");
        let output = child.wait_with_output().await.expect("output");
        panic!("{binary} not ready within 45 s; its log:\n{}", String::from_utf8_lossy(&output.stderr));
    }
    child
}

async fn kill9(mut child: Child) {
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("reaped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_either_service_mid_stream_loses_and_repeats_nothing() {
    let p = Pipeline::new("crash", 4).await;
    let (source_addr, sink_addr) = (free_addr(), free_addr());
    let (source_env, sink_env) = (source_env(&p, source_addr), sink_env(&p, sink_addr));
    let mut source = start("cdc-source", &source_env, source_addr).await;
    let mut sink = start("sink-writer", &sink_env, sink_addr).await;

    let coll = p.source_db().collection::<Document>("docs");
    let writer = {
        let coll = coll.clone();
        tokio::spawn(async move {
            for i in 0..6_000 {
                coll.insert_one(doc! {"_id": i, "v": 0}).await.expect("insert");
                if i % 2 == 0 {
                    coll.update_one(doc! {"_id": i / 2}, doc! {"$inc": {"v": 1}}).await.expect("update");
                }
                if i % 10 == 0 {
                    coll.delete_one(doc! {"_id": i / 3}).await.expect("delete");
                }
            }
        })
    };
    for round in 0..2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        kill9(source).await;
        source = start("cdc-source", &source_env, source_addr).await;
        tokio::time::sleep(Duration::from_millis(500 + 300 * round)).await;
        kill9(sink).await;
        sink = start("sink-writer", &sink_env, sink_addr).await;
    }
    writer.await.expect("writer");
    p.converged(Duration::from_secs(120)).await;

    let topic = format!("{}.{}.docs", p.name, p.name);
    let inserts = counts_of(&p, &topic, envelope::Op::Create, 6_000).await;
    assert_eq!(inserts.len(), 6_000, "every insert is on the topic");
    assert!(inserts.values().all(|n| *n == 1), "no insert twice: {:?}", inserts.iter().find(|(_, n)| **n > 1));
    kill9(source).await;
    kill9(sink).await;
}

/// How many times each document key of `topic` was sent as `op`, over the committed records.
async fn counts_of(p: &Pipeline, topic: &str, op: envelope::Op, at_least: usize) -> BTreeMap<String, usize> {
    let records = test_support::consume_all(
        &p.source_config.kafka.bootstrap_servers,
        &[topic],
        at_least,
        Duration::from_secs(90),
    )
    .await;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for record in &records {
        if let Ok(envelope::Event::Change(change)) = envelope::decode(record.key.as_deref(), record.value.as_deref()) {
            if change.op == op {
                *counts.entry(format!("{:?}", change.id())).or_default() += 1;
            }
        }
    }
    counts
}

/// The latest committed checkpoint of the pipeline's source.
async fn checkpoint(p: &Pipeline) -> serde_json::Value {
    let topic = format!("__cdc_source.{}.checkpoint", p.source_config.capture.name);
    let records =
        test_support::consume_all(&p.source_config.kafka.bootstrap_servers, &[&topic], 1, Duration::from_secs(30))
            .await;
    let last = records.iter().rev().find_map(|r| r.value.as_deref()).expect("a checkpoint");
    serde_json::from_slice(last).expect("checkpoint JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_snapshot_with_ranges_in_flight_copies_every_document_once() {
    let p = Pipeline::new("ranges", 4).await;
    // Ids of four BSON types, so ranges cut across type brackets.
    let id = |i: i32| match i % 4 {
        0 => Bson::Int32(i),
        1 => Bson::String(format!("s{i:07}")),
        2 => Bson::ObjectId(ObjectId::new()),
        _ => Bson::Int64(i64::from(i) * 1_000_000_007),
    };
    let big = p.source_db().collection::<Document>("big");
    const DOCS: i32 = 120_000;
    for from in (0..DOCS).step_by(10_000) {
        big.insert_many((from..from + 10_000).map(|i| doc! {"_id": id(i), "n": i, "pad": "p".repeat(120)}))
            .await
            .expect("seed");
    }
    p.source_db().collection::<Document>("small").insert_many((0..50).map(|i| doc! {"_id": i})).await.expect("seed");

    let source_addr = free_addr();
    let mut source_env = source_env(&p, source_addr);
    source_env.extend(
        [("PARALLEL_RANGES", "4"), ("MIN_RANGE_DOCUMENTS", "10000"), ("BATCH_SIZE", "200")]
            .map(|(k, v)| (format!("CDC_SOURCE__SNAPSHOT__{k}"), v.to_string())),
    );
    let source = start("cdc-source", &source_env, source_addr).await;
    let namespace = format!("{}.big", p.name);
    let copied = format!("cdc_source_snapshot_documents_copied{{namespace=\"{namespace}\"}}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let body = test_support::http_get(source_addr, "/metrics").await.map(|(_, b)| b).unwrap_or_default();
        if test_support::metric(&body, &copied) >= f64::from(DOCS / 4) {
            break;
        }
        assert!(Instant::now() < deadline, "the snapshot copied a quarter of the collection within 120 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill9(source).await;

    // What was durable at the crash: in MongoDB, four ranges, several of them part-copied.
    let state = checkpoint(&p).await;
    let progress = &state["snapshot"]["collections"][&namespace];
    assert_eq!(progress["done"], false, "killed before the collection was copied: {progress}");
    let ranges = progress["ranges"].as_array().cloned().unwrap_or_default();
    if p.source_config.capture.compat == service_kit::connect::Compat::Documentdb {
        assert!(ranges.is_empty(), "DocumentDB copies with one reader: {progress}");
    } else {
        assert_eq!(ranges.len(), 4, "four ranges: {progress}");
        let in_flight = ranges.iter().filter(|r| r["copied"].as_u64() > Some(0) && r["done"] == false).count();
        assert!(in_flight >= 2, "several ranges part-copied at the crash: {progress}");
    }

    let source = start("cdc-source", &source_env, source_addr).await;
    let sink_addr = free_addr();
    let sink = start("sink-writer", &sink_env(&p, sink_addr), sink_addr).await;
    p.converged(Duration::from_secs(180)).await;
    // Every range's reads ended (the target has every document): these are streamed only. (An
    // insert while a range is read may be copied too, harmlessly: the snapshot reads no single
    // point in time, the stream after it covers it.)
    big.insert_many((DOCS..DOCS + 10).map(|i| doc! {"_id": i, "n": i, "after": "snapshot"})).await.expect("insert");
    p.converged(Duration::from_secs(60)).await;

    let topic = format!("{}.{}.big", p.name, p.name);
    let reads = counts_of(&p, &topic, envelope::Op::Read, DOCS as usize).await;
    assert_eq!(reads.len(), DOCS as usize, "every document copied");
    assert!(reads.values().all(|n| *n == 1), "none copied twice: {:?}", reads.iter().find(|(_, n)| **n > 1));
    let inserts = counts_of(&p, &topic, envelope::Op::Create, 10).await;
    assert_eq!(inserts.len(), 10, "the stream goes on after the snapshot");
    kill9(source).await;
    kill9(sink).await;
}
