//! Watermarks against the real servers: every partition of every topic the source writes gets
//! them, idle or busy; they advance while the stream is idle; and none ever comes before (in its
//! partition) an event at or below its time, in exactly-once and at-least-once delivery.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Document};
use cdc_source::{Compat, Guarantee, SnapshotMode};
use e2e::ids_on_partition;
use e2e::pipeline::{metric, Pipeline};
use envelope::{ClusterTime, Event};
use test_support::{consume_all, eventually, Consumed};

fn topic(p: &Pipeline, coll: &str) -> String {
    format!("{}.{}.{coll}", p.source_config.topics.prefix, p.name)
}

/// What a partition holds, in order: watermarks and the cluster times of changes and control
/// events.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Seen {
    Watermark(ClusterTime),
    Event(ClusterTime),
    Control(ClusterTime),
}

fn by_partition(records: &[Consumed]) -> BTreeMap<(String, i32), Vec<Seen>> {
    let mut partitions: BTreeMap<(String, i32), Vec<Seen>> = BTreeMap::new();
    for record in records {
        let seen = match envelope::decode(record.key.as_deref(), record.value.as_deref()).expect("decodes") {
            Event::Watermark(w) => Seen::Watermark(w.cluster_time),
            Event::Change(c) => Seen::Event(c.position.cluster_time),
            Event::Control(c) => Seen::Control(c.position.cluster_time),
            Event::Tombstone { .. } => continue,
        };
        partitions.entry((record.topic.clone(), record.partition)).or_default().push(seen);
    }
    partitions
}

fn watermarks(seen: &[Seen]) -> Vec<ClusterTime> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Watermark(t) => Some(*t),
            Seen::Event(_) | Seen::Control(_) => None,
        })
        .collect()
}

async fn now(client: &mongodb::Client) -> ClusterTime {
    let reply = client.database("admin").run_command(doc! {"ping": 1}).await.expect("ping");
    reply.get_timestamp("operationTime").expect("operationTime").into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_busy_partitions_get_watermarks_that_advance_also_while_the_stream_is_idle() {
    let mut p = Pipeline::new("wm_idle", 4).await;
    // Streaming only: a write during a snapshot may be both copied and streamed.
    p.source_config.snapshot.mode = SnapshotMode::Never;
    p.source_config.delivery.watermark_interval_ms = 200;
    p.source_config.delivery.idle_checkpoint_interval_ms = 200;
    let source = p.start_source().await;
    // Every document lands on partition 0: the topic's other three partitions stay idle.
    let busy = p.source_db().collection::<Document>("busy");
    for chunk in ids_on_partition(0, 4, 0, 200).chunks(20) {
        busy.insert_many(chunk.iter().map(|id| doc! {"_id": id})).await.expect("insert");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let busy_until = now(&p.source).await;
    // Then nothing in the captured database; a write elsewhere moves the source's clock on.
    let elsewhere = p.source.database(&format!("{}_elsewhere", p.name));
    elsewhere.collection::<Document>("x").insert_one(doc! {"_id": 1}).await.expect("insert elsewhere");
    let idle_from = now(&p.source).await;

    let bootstrap = p.source_config.kafka.bootstrap_servers.clone();
    let name = topic(&p, "busy");
    let partitions =
        eventually("watermarks past the write elsewhere on all four partitions", Duration::from_secs(60), || async {
            let records = consume_all(&bootstrap, &[&name], 1, Duration::from_secs(3)).await;
            let partitions = by_partition(&records);
            let done = partitions.len() == 4
                && partitions.values().all(|seen| watermarks(seen).last().is_some_and(|last| *last >= idle_from));
            done.then_some(partitions)
        })
        .await;
    for ((_, partition), seen) in &partitions {
        let marks = watermarks(seen);
        assert!(marks.windows(2).all(|w| w[0] <= w[1]), "partition {partition}: watermarks go forward: {marks:?}");
        assert!(marks.iter().any(|m| *m < busy_until), "partition {partition}: watermarks while the writes ran");
        assert!(marks.len() >= 3, "partition {partition}: {marks:?}");
    }
    let events_on = |partition: i32| {
        partitions
            .get(&(name.clone(), partition))
            .map_or(0, |seen| seen.iter().filter(|s| matches!(s, Seen::Event(_))).count())
    };
    assert_eq!(
        (events_on(0), events_on(1) + events_on(2) + events_on(3)),
        (200, 0),
        "one busy and three idle partitions"
    );
    let metric = metric(&source.metrics().await, "cdc_source_watermark_timestamp_seconds");
    assert!(metric >= f64::from(idle_from.t), "the metric shows the last watermark: {metric}");
    source.stop().await;
    elsewhere.drop().await.expect("drop the other database");
}

/// Single writes and multi-document transactions (whose events share a cluster time) on two
/// collections, with batches smaller than a transaction and a watermark due with every batch.
async fn no_watermark_precedes_an_event_at_or_below_it(test: &str, guarantee: Guarantee) {
    let mut p = Pipeline::new(test, 3).await;
    p.source_config.delivery.guarantee = guarantee;
    // Streaming only: a write during a snapshot may be both copied and streamed.
    p.source_config.snapshot.mode = SnapshotMode::Never;
    p.source_config.delivery.watermark_interval_ms = 1;
    p.source_config.delivery.batch_max_events = 7;
    // Created first: a transaction creating a collection conflicts with a concurrent write.
    for coll in ["a", "b"] {
        p.source_db().create_collection(coll).await.expect("create");
    }
    let source = p.start_source().await;
    let (a, b) = (p.source_db().collection::<Document>("a"), p.source_db().collection::<Document>("b"));
    let singles = {
        let a = a.clone();
        tokio::spawn(async move {
            for i in 0..400 {
                a.insert_one(doc! {"_id": format!("s{i}")}).await.expect("insert");
                if i % 4 == 0 {
                    a.update_one(doc! {"_id": format!("s{i}")}, doc! {"$set": {"v": i}}).await.expect("update");
                }
            }
        })
    };
    for t in 0..40 {
        let mut session = p.source.start_session().await.expect("session");
        session.start_transaction().await.expect("transaction");
        a.insert_many((0..6).map(|i| doc! {"_id": format!("t{t}-{i}")})).session(&mut session).await.expect("txn a");
        b.insert_many((0..6).map(|i| doc! {"_id": format!("t{t}-{i}")})).session(&mut session).await.expect("txn b");
        session.commit_transaction().await.expect("commit");
    }
    singles.await.expect("single writes");
    let expected = 400 + 100 + 40 * 12;
    let records = consume_all(
        &p.source_config.kafka.bootstrap_servers,
        &[&topic(&p, "a"), &topic(&p, "b")],
        expected,
        Duration::from_secs(60),
    )
    .await;
    let changes = records
        .iter()
        .filter(|r| matches!(envelope::decode(r.key.as_deref(), r.value.as_deref()), Ok(Event::Change(_))))
        .count();
    assert_eq!(changes, expected, "every change once");
    let partitions = by_partition(&records);
    let mut marks = 0;
    for ((topic, partition), seen) in &partitions {
        let mut promised: Option<ClusterTime> = None;
        for (offset, s) in seen.iter().enumerate() {
            match *s {
                Seen::Watermark(t) => {
                    marks += 1;
                    promised = Some(promised.map_or(t, |p| p.max(t)));
                }
                Seen::Event(t) | Seen::Control(t) => {
                    if let Some(w) = promised {
                        assert!(t > w, "{topic}/{partition} #{offset}: an event at {t:?} after a watermark at {w:?}");
                    }
                }
            }
        }
    }
    assert!(marks >= 6 * 10, "watermarks written: {marks}");
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_watermark_precedes_an_event_at_or_below_it_exactly_once() {
    no_watermark_precedes_an_event_at_or_below_it("wm_order_eos", Guarantee::ExactlyOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_watermark_precedes_an_event_at_or_below_it_at_least_once() {
    no_watermark_precedes_an_event_at_or_below_it("wm_order_alo", Guarantee::AtLeastOnce).await;
}

/// The consistency point holds a partition with no watermark yet just before its first record
/// (sink-writer's `point/mod.rs`): so a new collection's first record must be no later than the
/// changes after it. Where the stream reports no creates (the DocumentDB profile), that record is
/// the create cdc-source sends when the collection's first change shows it; while other writes
/// move the cluster time on, the source's clock is by then past that change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_collections_records_are_in_cluster_time_order_where_the_stream_reports_no_creates() {
    let mut p = Pipeline::new("new_coll_order", 2).await;
    p.source_config.capture.compat = Compat::Documentdb;
    p.source_config.snapshot.mode = SnapshotMode::Never;
    p.source_db().create_collection("busy").await.expect("create");
    let source = p.start_source().await;
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let (busy, stop) = (p.source_db().collection::<Document>("busy"), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                busy.insert_one(doc! {"_id": i}).await.expect("busy insert");
                i += 1;
            }
        })
    };
    let collections: Vec<String> = (0..8).map(|n| format!("new_{n}")).collect();
    for coll in &collections {
        let docs: Vec<Document> = (0..4).map(|id| doc! {"_id": id}).collect();
        p.source_db().collection::<Document>(coll).insert_many(docs).await.expect("insert");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, Ordering::Relaxed);
    busy.await.expect("busy writer");
    let topics: Vec<String> = collections.iter().map(|c| topic(&p, c)).collect();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    let records = consume_all(&p.source_config.kafka.bootstrap_servers, &topics, 8 * 5, Duration::from_secs(60)).await;
    let creates = assert_in_cluster_time_order(&records);
    assert!(creates >= 8, "every new collection's partitions begin with its create: {creates}");
    source.stop().await;
}

/// Asserts that each partition's changes and control events come in cluster-time order;
/// returns how many partitions begin with a control event (a create).
fn assert_in_cluster_time_order(records: &[Consumed]) -> usize {
    let mut creates = 0;
    for ((topic, partition), seen) in &by_partition(records) {
        let times: Vec<(usize, ClusterTime)> = seen
            .iter()
            .enumerate()
            .filter_map(|(offset, s)| match *s {
                Seen::Event(t) | Seen::Control(t) => Some((offset, t)),
                Seen::Watermark(_) => None,
            })
            .collect();
        creates += seen.iter().take_while(|s| matches!(s, Seen::Control(_))).count().min(1);
        for pair in times.windows(2) {
            let ((_, before), (offset, after)) = (pair[0], pair[1]);
            assert!(before <= after, "{topic}/{partition} #{offset}: a record at {after:?} after one at {before:?}");
        }
    }
    creates
}

/// The same where the collection was made while cdc-source was stopped: on its restart the first
/// schema listing (which sends every collection again) sees the collection before the stream has
/// read its first changes, still waiting in the backlog. Its create must not be stamped at the
/// source's clock (past those changes), or the sink's point passes changes it has not applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_made_while_capture_was_stopped_keeps_its_records_in_cluster_time_order_where_the_stream_reports_no_creates(
) {
    let mut p = Pipeline::new("stopped_coll_order", 2).await;
    p.source_config.capture.compat = Compat::Documentdb;
    p.source_config.snapshot.mode = SnapshotMode::Never;
    let existing = p.source_db().collection::<Document>("existing");
    existing.insert_one(doc! {"_id": 0}).await.expect("insert");
    let source = p.start_source().await;
    let existing_topic = topic(&p, "existing");
    existing.insert_one(doc! {"_id": 1}).await.expect("insert");
    consume_all(&p.source_config.kafka.bootstrap_servers, &[existing_topic.as_str()], 2, Duration::from_secs(60)).await;
    source.stop().await;

    let collections: Vec<String> = (0..3).map(|n| format!("late_{n}")).collect();
    for coll in &collections {
        let docs: Vec<Document> = (0..4).map(|id| doc! {"_id": id}).collect();
        p.source_db().collection::<Document>(coll).insert_many(docs).await.expect("insert");
    }
    // The source's clock moves on past those changes before capture starts again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    existing.insert_one(doc! {"_id": 2}).await.expect("insert");
    let source = p.start_source().await;
    let topics: Vec<String> = collections.iter().map(|c| topic(&p, c)).collect();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    let records = consume_all(&p.source_config.kafka.bootstrap_servers, &topics, 3 * 5, Duration::from_secs(60)).await;
    let inserts = by_partition(&records).values().flatten().filter(|s| matches!(s, Seen::Event(_))).count();
    assert_eq!(inserts, 3 * 4, "every insert made while capture was stopped is captured");
    let creates = assert_in_cluster_time_order(&records);
    assert!(creates >= 3, "each new collection's partitions begin with its create: {creates}");
    source.stop().await;
}
