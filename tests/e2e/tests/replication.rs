//! Source → cdc-source → Kafka → sink-writer → target, against the real servers: the target
//! must equal the source document for document, byte for byte.

use std::time::Duration;

use bson::spec::BinarySubtype;
use bson::{doc, oid::ObjectId, Binary, Bson, DateTime, Decimal128, Document, Regex, Timestamp};
use e2e::pipeline::{metric, Pipeline};

fn every_type(i: i32) -> Document {
    doc! {
        "_id": i,
        "oid": ObjectId::new(),
        "i32": i, "i64": i64::from(i) * 10_000_000_000, "dbl": f64::from(i) + 0.5, "whole": 2.0_f64,
        "dec": "1234.5678".parse::<Decimal128>().expect("decimal"),
        "date": DateTime::from_millis(1_700_000_000_000 + i64::from(i)),
        "ts": Timestamp { time: 1_700_000_000, increment: i as u32 },
        "bin": Binary { subtype: BinarySubtype::Generic, bytes: vec![1, 2, 3] },
        "uuid": Binary { subtype: BinarySubtype::Uuid, bytes: vec![7; 16] },
        "re": Regex { pattern: "^a".into(), options: "i".into() },
        "min": Bson::MinKey, "max": Bson::MaxKey, "null": Bson::Null, "t": true,
        "nested": {"a": [1, {"b": [2, 3]}], "c": {"d": "e"}},
        "tags": ["x", "y", "z"],
    }
}

async fn mixed_workload(p: &Pipeline) {
    let coll = p.source_db().collection::<Document>("mixed");
    coll.insert_many((0..300).map(every_type)).await.expect("insert");
    for i in 0..300 {
        match i % 6 {
            0 => coll
                .update_one(doc! {"_id": i}, doc! {"$set": {"nested.c.d": "changed", "new": i}, "$unset": {"t": ""}})
                .await
                .map(|_| ()),
            1 => coll.update_one(doc! {"_id": i}, doc! {"$inc": {"i32": 5, "i64": 1_i64}}).await.map(|_| ()),
            2 => coll.update_one(doc! {"_id": i}, doc! {"$push": {"tags": "w"}}).await.map(|_| ()),
            3 => coll.update_one(doc! {"_id": i}, doc! {"$pull": {"tags": "y"}}).await.map(|_| ()),
            4 => coll
                .replace_one(doc! {"_id": i}, doc! {"_id": i, "replaced": true, "at": DateTime::now()})
                .await
                .map(|_| ()),
            _ => coll.delete_one(doc! {"_id": i}).await.map(|_| ()),
        }
        .expect("write");
    }
    // Array truncation through a pipeline update, and a large document.
    coll.update_one(doc! {"_id": 7}, vec![doc! {"$set": {"tags": {"$slice": ["$tags", 1]}}}]).await.expect("truncate");
    coll.insert_one(doc! {"_id": "large", "blob": "x".repeat(3 * 1024 * 1024)}).await.expect("large");
    // A multi-document transaction across collections.
    let mut session = p.source.start_session().await.expect("session");
    session.start_transaction().await.expect("txn");
    coll.insert_one(doc! {"_id": "txn-1"}).session(&mut session).await.expect("txn insert");
    p.source_db()
        .collection::<Document>("other")
        .insert_one(doc! {"_id": "txn-2"})
        .session(&mut session)
        .await
        .expect("txn insert");
    coll.delete_one(doc! {"_id": 1}).session(&mut session).await.expect("txn delete");
    session.commit_transaction().await.expect("commit");
    // A hot key.
    for n in 0..200 {
        coll.update_one(doc! {"_id": "hot"}, doc! {"$set": {"n": n}}).upsert(true).await.expect("hot");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_workload_converges_with_one_partition() {
    let p = Pipeline::new("mixed1", 1).await;
    let sink = p.start_sink().await;
    let source = p.start_source().await;
    mixed_workload(&p).await;
    p.converged(Duration::from_secs(90)).await;
    source.stop().await;
    sink.stop().await;
}

/// The batches cdc-source produces compressed with zstd (the fewest bytes across the region
/// boundary) are read by sink-writer like lz4's; the topic says zstd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_workload_converges_through_zstd_batches() {
    let mut p = Pipeline::new("mixed_zstd", 2).await;
    p.source_config.delivery.compression = "zstd".into();
    p.source_config.delivery.compression_level = 6;
    let sink = p.start_sink().await;
    let source = p.start_source().await;
    mixed_workload(&p).await;
    p.converged(Duration::from_secs(90)).await;
    let log = e2e::kafka_log::topic(&format!("{}.{}.mixed", p.name, p.name));
    assert!(log.records >= 300, "the topic's batches on the broker: {log:?}");
    assert_eq!(log.codecs, std::collections::BTreeSet::from([4]), "zstd batches only: {log:?}");
    source.stop().await;
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_workload_converges_with_four_partitions_and_a_snapshot() {
    let mut p = Pipeline::new("mixed4", 4).await;
    p.source_config.snapshot.mode = cdc_source::SnapshotMode::Initial;
    p.source_db().collection::<Document>("existing").insert_many((0..500).map(every_type)).await.expect("seed");
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    mixed_workload(&p).await;
    p.converged(Duration::from_secs(90)).await;
    source.stop().await;
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_document_updated_ten_thousand_times_ends_right() {
    let p = Pipeline::new("hot", 4).await;
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    let coll = p.source_db().collection::<Document>("hot");
    coll.insert_one(doc! {"_id": 1, "n": 0, "history": []}).await.expect("insert");
    for n in 1..=10_000 {
        let update = if n % 100 == 0 {
            doc! {"$inc": {"n": 1}, "$push": {"history": n}}
        } else {
            doc! {"$inc": {"n": 1}}
        };
        coll.update_one(doc! {"_id": 1}, update).await.expect("update");
    }
    p.converged(Duration::from_secs(90)).await;
    let target =
        p.target_db().collection::<Document>("hot").find_one(doc! {"_id": 1}).await.expect("read").expect("doc");
    assert_eq!(target.get_i32("n").ok(), Some(10_000));
    source.stop().await;
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_and_rename_apply_in_order_with_the_data() {
    let p = Pipeline::new("ddl", 4).await;
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    let db = p.source_db();
    let gone = db.collection::<Document>("gone");
    gone.insert_many((0..50).map(|i| doc! {"_id": i})).await.expect("insert");
    gone.drop().await.expect("drop");
    gone.insert_many((100..110).map(|i| doc! {"_id": i, "reborn": true})).await.expect("insert after drop");
    let old = db.collection::<Document>("old");
    old.insert_many((0..50).map(|i| doc! {"_id": i, "v": 1})).await.expect("insert");
    p.source
        .database("admin")
        .run_command(doc! {"renameCollection": format!("{}.old", p.name), "to": format!("{}.new", p.name)})
        .await
        .expect("rename");
    let new = db.collection::<Document>("new");
    new.update_many(doc! {}, doc! {"$set": {"v": 2}}).await.expect("update after rename");
    new.insert_one(doc! {"_id": "after"}).await.expect("insert after rename");
    p.converged(Duration::from_secs(90)).await;
    let body = sink.metrics().await;
    let applied = |kind: &str| metric(&body, &format!("sink_writer_ddl_applied_total{{kind=\"{kind}\""));
    assert_eq!((applied("drop"), applied("rename")), (1.0, 1.0), "each DDL applied once");
    source.stop().await;
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_goes_to_the_dead_letter_topic_and_the_rest_is_applied() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::ClientConfig;
    let p = Pipeline::new("poison", 1).await;
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    let coll = p.source_db().collection::<Document>("items");
    coll.insert_one(doc! {"_id": 1}).await.expect("insert");
    p.converged(Duration::from_secs(60)).await;
    let topic = format!("{}.{}.items", p.name, p.name);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &p.sink_config.kafka.bootstrap_servers)
        .create()
        .expect("producer");
    producer
        .send(FutureRecord::to(&topic).key(r#"{"id":"2"}"#).payload("{this is not json"), Duration::from_secs(5))
        .await
        .expect("poison sent");
    // A poison record larger than librdkafka's and MSK's default limit (1 MB) still fits the
    // dead-letter topic.
    let big_poison = format!("{{not json {}", "y".repeat(3 * 1024 * 1024));
    let big: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &p.sink_config.kafka.bootstrap_servers)
        .set("message.max.bytes", "16000000")
        .create()
        .expect("producer");
    big.send(FutureRecord::to(&topic).key(r#"{"id":"4"}"#).payload(&big_poison), Duration::from_secs(5))
        .await
        .expect("big poison sent");
    coll.insert_one(doc! {"_id": 3}).await.expect("insert after poison");
    p.converged(Duration::from_secs(60)).await;
    let dlq = test_support::consume_all(
        &p.sink_config.kafka.bootstrap_servers,
        &[&p.sink_config.consume.dead_letter_topic],
        2,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(dlq.len(), 2, "exactly the poison messages");
    assert_eq!(dlq[0].value.as_deref(), Some(b"{this is not json".as_slice()), "kept unchanged");
    assert_eq!(dlq[1].value.as_deref(), Some(big_poison.as_bytes()), "kept unchanged, however large");
    assert_eq!(metric(&sink.metrics().await, "sink_writer_dead_letters_total{stage=\"decode\"}"), 2.0);
    source.stop().await;
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sink_replicas_with_a_rebalance_mid_stream_converge() {
    let p = Pipeline::new("replicas", 4).await;
    let source = p.start_source().await;
    let first = p.start_sink().await;
    let coll = p.source_db().collection::<Document>("docs");
    let writer = {
        let coll = coll.clone();
        tokio::spawn(async move {
            for i in 0..4_000 {
                coll.insert_one(doc! {"_id": i, "v": 0}).await.expect("insert");
                if i % 3 == 0 {
                    coll.update_one(doc! {"_id": i / 2}, doc! {"$inc": {"v": 1}}).await.expect("update");
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = p.start_sink().await; // joins the group: partitions move mid-stream
    writer.await.expect("writer");
    p.converged(Duration::from_secs(120)).await;
    let owned = metric(&first.metrics().await, "sink_writer_assigned_partitions")
        + metric(&second.metrics().await, "sink_writer_assigned_partitions");
    assert!(owned >= 4.0, "both replicas took part: {owned}");
    first.stop().await;
    second.stop().await;
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_the_target_refuses_go_to_the_dead_letter_topic_the_rest_applies() {
    let p = Pipeline::new("refused", 1).await;
    // The target has a rule the source does not: documents need a numeric `qty`.
    p.items_need_a_numeric_qty_in_the_target().await;
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    p.insert_items_one_refused().await;
    let dlq = test_support::consume_all(
        &p.sink_config.kafka.bootstrap_servers,
        &[&p.sink_config.consume.dead_letter_topic],
        1,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(dlq.len(), 1, "only the refused document");
    let event = envelope::decode(dlq[0].key.as_deref(), dlq[0].value.as_deref()).expect("the original record");
    assert!(matches!(event, envelope::Event::Change(c) if c.id() == Some(&Bson::Int32(2))));
    let target = p.target_db().collection::<Document>("items");
    assert_eq!(target.count_documents(doc! {}).await.expect("count"), 2, "the others are applied");
    assert_eq!(metric(&sink.metrics().await, "sink_writer_dead_letters_total{stage=\"apply\"}"), 1.0);
    source.stop().await;
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_database_is_dropped_in_the_target_after_its_data() {
    let p = Pipeline::new("dropdb", 4).await;
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    for coll in ["a", "b"] {
        p.source_db().collection::<Document>(coll).insert_many((0..20).map(|i| doc! {"_id": i})).await.expect("insert");
    }
    p.converged(Duration::from_secs(60)).await;
    p.source_db().drop().await.expect("drop database");
    p.source_db().collection::<Document>("c").insert_one(doc! {"_id": "after"}).await.expect("insert after drop");
    p.converged(Duration::from_secs(60)).await;
    source.stop().await;
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_mapping_writes_where_the_rules_say() {
    let mut p = Pipeline::new("mapped", 1).await;
    p.sink_config.apply.mapping = vec![sink_writer::MappingRule {
        source: format!("{}\\.(.*)", p.name),
        target: format!("{}_eu.${{1}}_copy", p.name),
    }];
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    p.source_db().collection::<Document>("orders").insert_one(doc! {"_id": 1, "v": "x"}).await.expect("insert");
    let target = p.target.database(&format!("{}_eu", p.name)).collection::<Document>("orders_copy");
    let mapped = test_support::eventually("the mapped document", Duration::from_secs(60), || async {
        target.find_one(doc! {"_id": 1}).await.ok().flatten()
    })
    .await;
    assert_eq!(mapped, doc! {"_id": 1, "v": "x"});
    let unmapped = p.target_db().list_collection_names().await.expect("target collections");
    assert!(unmapped.is_empty(), "nothing written under the source's own name: {unmapped:?}");
    source.stop().await;
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_many_times_the_memory_budget_converges_through_pauses() {
    let mut p = Pipeline::new("budget", 4).await;
    p.sink_config.apply.memory_budget_bytes = 16 * 1024 * 1024;
    // Records of this run stay well under 1 MiB; the budget must fit four of the largest.
    p.sink_config.consume.max_record_bytes = 4 * 1024 * 1024;
    let source = p.start_source().await;
    // 64 MiB of documents (32 KiB each, text that does not compress) in two collections: the
    // records' share of a 16 MiB budget holds a few dozen at once.
    for coll in ["a", "b"] {
        for chunk in 0..10 {
            let docs: Vec<Document> = (0..100)
                .map(|i| chunk * 100 + i)
                .map(|id| doc! {"_id": id, "text": e2e::workload::incompressible(id.into(), 32 * 1024)})
                .collect();
            p.source_db().collection::<Document>(coll).insert_many(docs).await.expect("insert");
        }
    }
    let sink = p.start_sink().await;
    // The records held, sampled every 20 ms while the sink catches up (comparing is slower),
    // until the target has converged (watermarks keep arriving after that: no quiet moment is
    // waited for).
    let converged = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (addr, converged) = (sink.addr, converged.clone());
        tokio::spawn(async move {
            let mut peak = 0.0f64;
            while !converged.load(std::sync::atomic::Ordering::SeqCst) {
                let body = test_support::http_get(addr, "/metrics").await.map(|(_, b)| b).unwrap_or_default();
                peak = peak.max(metric(&body, "sink_writer_buffered_bytes"));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        })
    };
    p.converged(Duration::from_secs(120)).await;
    converged.store(true, std::sync::atomic::Ordering::SeqCst);
    let peak = tokio::time::timeout(Duration::from_secs(10), sampler).await.expect("sampled").expect("joins");
    let metrics = sink.metrics().await;
    assert!(metric(&metrics, "sink_writer_partition_pauses_total") >= 1.0, "the budget paused partitions");
    let budget = metric(&metrics, "sink_writer_memory_budget_bytes");
    assert!(peak > 0.0 && peak <= budget, "records held {peak} bytes at most, within the budget of {budget}");
    source.stop().await;
    sink.stop().await;
}
