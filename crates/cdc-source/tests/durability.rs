//! Snapshot and restart behaviour against real servers: nothing lost, nothing repeated
//! (exactly-once transactions), resumable snapshots, lost resume points.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bson::{doc, Bson, Document};
use cdc_source::{CheckpointStore, Guarantee, HistoryLostPolicy, SnapshotMode};
use common::{changes, decode, is_schema, without_schema, Harness};
use envelope::{ChangeEvent, Op};
use futures::TryStreamExt;
use test_support::{eventually, http_get, unique};

async fn seed(h: &Harness, coll: &str, count: i32) {
    let docs: Vec<Document> = (0..count).map(|i| doc! {"_id": i, "n": i, "pad": "x".repeat(100)}).collect();
    for chunk in docs.chunks(5000) {
        h.collection(coll).insert_many(chunk.to_vec()).await.expect("seed");
    }
}

/// The last event of every document, in partition order (one document lives on one partition).
fn last_state(events: &[&ChangeEvent]) -> HashMap<String, Option<Document>> {
    let mut state = HashMap::new();
    for event in events {
        let id = format!("{:?}", event.id());
        state.insert(id, if event.op == Op::Delete { None } else { event.after.clone() });
    }
    state
}

async fn source_state(h: &Harness, coll: &str) -> HashMap<String, Option<Document>> {
    let docs: Vec<Document> = h.collection(coll).find(doc! {}).await.expect("find").try_collect().await.expect("read");
    docs.into_iter().map(|d| (format!("{:?}", d.get("_id")), Some(d))).collect()
}

#[tokio::test]
async fn snapshot_with_concurrent_writes_loses_nothing() {
    let mut h = Harness::new("snap").await;
    h.config.snapshot.mode = SnapshotMode::Initial;
    h.config.snapshot.batch_size = 500;
    seed(&h, "docs", 20_000).await;
    let service = h.start().await;
    let writer = {
        let coll = h.collection("docs");
        tokio::spawn(async move {
            for i in 0..2_000 {
                coll.insert_one(doc! {"_id": 100_000 + i, "n": i}).await.expect("insert");
                coll.update_one(doc! {"_id": i * 7}, doc! {"$set": {"n": -1}}).await.expect("update");
                if i % 10 == 0 {
                    coll.delete_one(doc! {"_id": i * 3 + 1}).await.expect("delete");
                }
            }
        })
    };
    writer.await.expect("writer");
    let expected = source_state(&h, "docs").await;
    let records = h.records("docs", 20_000 + 2_000 + 2_000).await;
    let events = decode(&records);
    let changes = changes(&events);
    assert!(changes.iter().filter(|c| c.op == Op::Read).count() >= 19_000, "the snapshot copied the collection");
    let mut got = last_state(&changes);
    got.retain(|_, v| v.is_some());
    assert_eq!(got.len(), expected.len(), "documents present at the end");
    for (id, doc) in &expected {
        assert_eq!(got.get(id), Some(doc), "document {id}");
    }
    service.stop().await.expect("clean stop");
}

#[tokio::test]
async fn graceful_restart_during_writes_loses_and_repeats_nothing() {
    let h = Harness::new("restart").await;
    let first = h.start().await;
    let coll = h.collection("docs");
    let writer = tokio::spawn(async move {
        for i in 0..3_000 {
            coll.insert_one(doc! {"_id": i}).await.expect("insert");
            if i % 500 == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    first.stop().await.expect("clean stop");
    let second = h.start().await;
    writer.await.expect("writer");
    let records = h.records("docs", 3_000).await;
    let ids: Vec<Option<Bson>> = changes(&decode(&records)).iter().map(|c| c.id().cloned()).collect();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for id in &ids {
        *counts.entry(format!("{id:?}")).or_default() += 1;
    }
    assert_eq!(counts.len(), 3_000, "every insert arrived");
    assert!(counts.values().all(|n| *n == 1), "exactly once: {:?}", counts.iter().find(|(_, n)| **n > 1));
    second.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_restart_mid_snapshot_continues_where_it_stopped() {
    let mut h = Harness::new("resume_snap").await;
    h.config.snapshot.mode = SnapshotMode::Initial;
    h.config.snapshot.batch_size = 200;
    h.config.delivery.batch_max_events = 500;
    seed(&h, "big", 30_000).await;
    let first = h.start().await;
    eventually("part of the snapshot", Duration::from_secs(60), || async {
        (first.metric("cdc_source_events_total{namespace=").await >= 3_000.0).then_some(())
    })
    .await;
    first.stop().await.expect("clean stop");
    let second = h.start().await;
    let records = h.records("big", 30_000).await;
    let reads = changes(&decode(&records)).into_iter().filter(|c| c.op == Op::Read).count();
    assert_eq!(reads, 30_000, "every document copied once: resumed, not restarted from zero");
    second.stop().await.expect("clean stop");
}

/// A checkpoint whose resume token the watched stream cannot find: a real token, but of an
/// event in another database (the server answers "resume token was not found").
async fn lost_history_config(h: &mut Harness, policy: HistoryLostPolicy) -> std::path::PathBuf {
    use futures::StreamExt;
    let other = h.source.database(&unique("elsewhere")).collection::<Document>("x");
    let mut stream = other.watch().await.expect("watch");
    other.insert_one(doc! {"_id": 1}).await.expect("insert");
    let event = stream.next().await.expect("an event").expect("event");
    let token = bson::to_document(&event.id).expect("token");
    let token = envelope::extjson::document_to_string(&token, envelope::extjson::Style::Strict);
    let checkpoint = serde_json::json!({"v": 1, "resume_token": token, "cluster_time": null, "seq": 5,
        "snapshot": {"start_at": {"t": 1, "i": 1}, "completed": true, "collections": {}}, "written_at_ms": 0});
    let path = std::env::temp_dir().join(format!("{}.checkpoint.json", unique("lost")));
    std::fs::write(&path, checkpoint.to_string()).expect("seed checkpoint");
    h.config.delivery.guarantee = Guarantee::AtLeastOnce;
    h.config.delivery.checkpoint_store = CheckpointStore::File;
    h.config.delivery.checkpoint_file = path.display().to_string();
    h.config.capture.on_history_lost = policy;
    path
}

#[tokio::test]
async fn lost_resume_point_fails_visibly_by_default() {
    let mut h = Harness::new("lost_fail").await;
    lost_history_config(&mut h, HistoryLostPolicy::Fail).await;
    seed(&h, "docs", 10).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let running = cdc_source::start(h.config.clone(), stop.clone()).await.expect("starts");
    let addr = running.http_addr;
    let body = eventually("not ready with the cause", Duration::from_secs(30), || async {
        match http_get(addr, "/health/readyz").await {
            Ok((503, body)) if body.contains("resume point") => Some(body),
            _ => None,
        }
    })
    .await;
    assert!(body.contains("on_history_lost"), "names the fix: {body}");
    let metrics = http_get(addr, "/metrics").await.expect("metrics").1;
    assert!(metrics.contains("cdc_source_history_lost 1"), "{metrics}");
    stop.cancel();
    let result = running.wait().await;
    assert!(matches!(result, Err(cdc_source::Error::HistoryLost(_))), "{result:?}");
}

#[tokio::test]
async fn lost_resume_point_can_resnapshot() {
    let mut h = Harness::new("lost_snap").await;
    let path = lost_history_config(&mut h, HistoryLostPolicy::Resnapshot).await;
    seed(&h, "docs", 100).await;
    let service = h.start().await;
    let records = h.records("docs", 100).await;
    assert_eq!(changes(&decode(&records)).iter().filter(|c| c.op == Op::Read).count(), 100);
    h.collection("docs").insert_one(doc! {"_id": "after"}).await.expect("insert");
    let records = h.records("docs", 101).await;
    assert!(changes(&decode(&records)).iter().any(|c| c.op == Op::Create), "streams after the new snapshot");
    service.stop().await.expect("clean stop");
    let stored = std::fs::read_to_string(&path).expect("checkpoint file");
    assert!(stored.contains("\"resume_token\":\"{"), "file checkpoint advanced: {stored}");
}

#[tokio::test]
async fn initial_only_copies_then_stays_idle() {
    let mut h = Harness::new("only").await;
    h.config.snapshot.mode = SnapshotMode::InitialOnly;
    seed(&h, "docs", 50).await;
    let first = h.start().await;
    let partitions = h.config.topics.partitions as usize;
    let (created, copied): (Vec<_>, Vec<_>) =
        h.all_records("docs", 50 + partitions).await.into_iter().partition(is_schema);
    assert_eq!((created.len(), copied.len()), (partitions, 50), "the collection's creation, then its documents");
    h.collection("docs").insert_one(doc! {"_id": "later"}).await.expect("insert");
    tokio::time::sleep(Duration::from_secs(2)).await;
    first.stop().await.expect("clean stop");
    let second = h.start().await; // the checkpoint says the snapshot is done: nothing more
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = h.all_records("docs", 50 + partitions).await;
    assert_eq!((again.len(), without_schema(again).len()), (50 + partitions, 50), "no streaming, no second copy");
    second.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_fenced_instance_restarts_and_two_live_instances_end_with_one() {
    let h = Harness::new("fence").await;
    let first = h.start().await;
    h.collection("docs").insert_many((0..10).map(|i| doc! {"_id": i})).await.expect("insert");
    // The second instance's producer fences the first's; a fenced instance restarts with a new
    // producer (right after a pause past the transaction timeout) and fences the other in turn,
    // until one of them has been fenced three times and gives up with a clear error.
    let second = h.start().await;
    let (a, b) = (first.addr, second.addr);
    eventually("one instance gives up", Duration::from_secs(90), || async {
        let up = |addr| async move { test_support::http_get(addr, "/health/livez").await.is_ok() };
        (!up(a).await || !up(b).await).then_some(())
    })
    .await;
    // The survivor goes on from the checkpoint: every insert reaches the topic, whoever of the
    // two had it in a transaction when it was fenced. (This found that a first start with no
    // checkpoint, fenced before its first commit, restarted at a later "now" and skipped the
    // inserts: the start position is now stored before streaming.)
    h.records("docs", 10).await;
    let results = [first.stop().await, second.stop().await];
    let gave_up: Vec<String> = results.iter().filter_map(|r| r.as_ref().err().map(ToString::to_string)).collect();
    assert_eq!(gave_up.len(), 1, "{results:?}");
    assert!(gave_up[0].contains("another cdc-source with capture.name"), "{}", gave_up[0]);
    // Exactly once all the same: each insert is in the topic once, however often it was sent.
    assert_eq!(without_schema(h.records("docs", 10).await).len(), 10);
}

#[tokio::test]
async fn the_last_write_before_the_start_arrives_once() {
    let mut h = Harness::new("boundary").await;
    h.config.snapshot.mode = SnapshotMode::Initial;
    // The snapshot's position is the operationTime of the last write: this one.
    h.collection("docs").insert_one(doc! {"_id": "last"}).await.expect("insert");
    let service = h.start().await;
    // Written once the copy is on the topic: a write during the copy may be both read and streamed.
    h.records("docs", 1).await;
    h.collection("docs").insert_one(doc! {"_id": "after"}).await.expect("insert");
    let events = decode(&h.records("docs", 2).await);
    let mut ids: Vec<(String, Op)> = changes(&events).iter().map(|c| (format!("{:?}", c.id()), c.op)).collect();
    ids.sort_by_key(|(id, _)| id.clone());
    assert_eq!(
        ids,
        [("Some(String(\"after\"))".to_string(), Op::Create), ("Some(String(\"last\"))".to_string(), Op::Read)],
        "the copied document once, as a read; the later insert once"
    );
    service.stop().await.expect("clean stop");
}

#[tokio::test]
async fn starting_now_leaves_out_the_last_write_before_the_start() {
    let h = Harness::new("now").await; // snapshot.mode = "never": "now" is fixed at the start
    h.collection("docs").insert_one(doc! {"_id": "before"}).await.expect("insert");
    let service = h.start().await;
    h.collection("docs").insert_one(doc! {"_id": "after"}).await.expect("insert");
    let events = decode(&h.records("docs", 1).await);
    let ids: Vec<String> = changes(&events).iter().map(|c| format!("{:?}", c.id())).collect();
    assert_eq!(ids, ["Some(String(\"after\"))"], "only what was written after the start");
    service.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_documentdb_snapshot_resumes_after_every_id_type_once() {
    use bson::{oid::ObjectId, spec::BinarySubtype, Binary, DateTime, Timestamp};
    let mut h = Harness::new("docdb_ids").await;
    h.config.capture.compat = cdc_source::Compat::Documentdb;
    h.config.snapshot.mode = SnapshotMode::Initial;
    h.config.snapshot.batch_size = 200;
    h.config.delivery.batch_max_events = 500;
    // In BSON order: MinKey, null, numbers, strings, documents, binary, ObjectIds, booleans,
    // dates, timestamps, MaxKey. The restart comes while the numbers are copied (enough of them
    // that a clean stop, which sends what was read, still lands among them on a fast machine).
    const NUMBERS: i32 = 60_000;
    let mut ids: Vec<Bson> = vec![Bson::MinKey, Bson::Null, Bson::MaxKey, Bson::Boolean(false), Bson::Boolean(true)];
    ids.extend((0..NUMBERS).map(Bson::Int32));
    ids.extend((0..500).map(|i| Bson::Int64(1_000_000 + i)));
    ids.extend((0..500).map(|i| Bson::Double(f64::from(i) + 0.5)));
    ids.extend((0..500).map(|i| Bson::String(format!("s{i:04}"))));
    ids.extend((0..500).map(|_| Bson::ObjectId(ObjectId::new())));
    ids.extend((0..300).map(|i| Bson::Document(doc! {"k": i, "t": "x"})));
    ids.extend((0..300).map(|i| Bson::DateTime(DateTime::from_millis(1_700_000_000_000 + i64::from(i)))));
    ids.extend((0..100).map(|i| Bson::Timestamp(Timestamp { time: 1_700_000_000, increment: i })));
    ids.extend((0..100_u8).map(|i| Bson::Binary(Binary { subtype: BinarySubtype::Generic, bytes: vec![i, 1] })));
    let docs: Vec<Document> = ids.iter().map(|id| doc! {"_id": id.clone(), "pad": "x".repeat(100)}).collect();
    for chunk in docs.chunks(5_000) {
        h.collection("mixed").insert_many(chunk.to_vec()).await.expect("seed");
    }
    let first = h.start().await;
    eventually("part of the snapshot", Duration::from_secs(60), || async {
        (first.metric("cdc_source_events_total{namespace=").await >= 3_000.0).then_some(())
    })
    .await;
    first.stop().await.expect("clean stop");
    let copied_before = h.records("mixed", 1).await.len();
    assert!(copied_before < NUMBERS as usize, "stopped while the numbers were copied ({copied_before} copied)");
    let second = h.start().await;
    let records = h.records("mixed", ids.len()).await;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for change in changes(&decode(&records)) {
        *counts.entry(format!("{:?}", change.id())).or_default() += 1;
    }
    let missing: Vec<String> =
        ids.iter().map(|id| format!("{:?}", Some(id))).filter(|id| !counts.contains_key(id)).take(5).collect();
    assert!(missing.is_empty(), "never copied (first five): {missing:?}");
    assert_eq!(counts.len(), ids.len(), "every document copied");
    assert!(counts.values().all(|n| *n == 1), "once: {:?}", counts.iter().find(|(_, n)| **n > 1));
    second.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_copy_split_into_ranges_then_resumed_as_documentdb_copies_every_document() {
    let mut h = Harness::new("ranges_docdb").await;
    h.config.capture.compat = cdc_source::Compat::Mongodb;
    h.config.snapshot.mode = SnapshotMode::Initial;
    h.config.snapshot.parallel_ranges = 4;
    h.config.snapshot.min_range_documents = 5_000;
    h.config.snapshot.batch_size = 200;
    h.config.delivery.batch_max_events = 500;
    const DOCS: i32 = 40_000;
    for from in (0..DOCS).step_by(10_000) {
        let docs = (from..from + 10_000).map(|i| doc! {"_id": i, "pad": "x".repeat(100)});
        h.collection("docs").insert_many(docs).await.expect("seed");
    }
    let first = h.start().await;
    eventually("part of the snapshot", Duration::from_secs(60), || async {
        (first.metric("cdc_source_events_total{namespace=").await >= 4_000.0).then_some(())
    })
    .await;
    first.stop().await.expect("clean stop");
    let copied_before = h.records("docs", 1).await.len();
    assert!(copied_before < DOCS as usize, "stopped while ranges were copied ({copied_before} copied)");

    // The same source, now said to be DocumentDB (no min()/max() bounds): the copy goes on.
    h.config.capture.compat = cdc_source::Compat::Documentdb;
    let second = h.start().await;
    let records = h.records("docs", DOCS as usize).await;
    let ids: std::collections::BTreeSet<String> =
        changes(&decode(&records)).iter().map(|c| format!("{:?}", c.id())).collect();
    assert_eq!(ids.len(), DOCS as usize, "every document copied (at least once)");
    second.stop().await.expect("clean stop");
}

/// A three-broker cluster during a rolling restart (Amazon MSK's patching) has two brokers up: a
/// topic of replication factor 3 cannot be created for those minutes, and the broker says so
/// (INVALID_REPLICATION_FACTOR). cdc-source must wait for the brokers, not stop. The single test
/// broker has the same answer for a replication factor of 2.
#[tokio::test]
async fn a_replication_factor_the_live_brokers_cannot_meet_is_waited_for_not_fatal() {
    let mut h = Harness::new("rf").await;
    h.config.topics.replication_factor = 2;
    h.config.delivery.max_backoff_ms = 500;
    let service = h.launch().await;
    let addr = service.addr;
    let waiting = eventually("readiness names the replication factor", Duration::from_secs(30), || async {
        let (status, body) = http_get(addr, "/health/readyz").await.ok()?;
        (status == 503 && body.contains("replication factor")).then_some(body)
    })
    .await;
    assert!(waiting.contains("brokers"), "the reason says what to wait for or change: {waiting}");
    eventually("restarts go on", Duration::from_secs(30), || async {
        (service.metric("cdc_source_restarts_total{reason=\"kafka\"}").await >= 3.0).then_some(())
    })
    .await;
    assert!(service.runs(), "the service stopped instead of waiting for the brokers");
    service.stop().await.expect("a clean stop when asked");
}

/// `_id`s of every number kind around a NaN (NaN sorts before every other number; `$gt: NaN`
/// matches no number), in the server's order, with strings, ObjectIds and a boolean after them.
fn ids_around(nan: Bson) -> Vec<Bson> {
    use bson::{oid::ObjectId, Decimal128};
    let decimal = |text: &str| Bson::Decimal128(text.parse::<Decimal128>().expect("decimal"));
    let mut ids = vec![Bson::MinKey, Bson::Null, nan, Bson::Double(f64::NEG_INFINITY), decimal("-7.5")];
    ids.extend([Bson::Int32(-5), Bson::Int64(0), Bson::Double(2.5), Bson::Int32(7), Bson::Int64(1 << 40)]);
    ids.extend([Bson::Double(f64::INFINITY), Bson::String("a".into()), Bson::String("b".into())]);
    ids.extend((0..3).map(|_| Bson::ObjectId(ObjectId::new())));
    ids.push(Bson::Boolean(true));
    ids
}

/// A snapshot stopped right after a NaN `_id` continues with the numbers after it, and copies
/// nothing twice: for a double NaN and a decimal one, reading by `min()` (MongoDB) and by `$gt`
/// and type brackets (DocumentDB, through docdb-guard in the DocumentDB profile).
async fn a_snapshot_resumed_after_a_nan_id_copies_every_document_once(compat: cdc_source::Compat) {
    let decimal_nan: bson::Decimal128 = "NaN".parse().expect("decimal NaN");
    let mut h = Harness::new("nan_resume").await;
    h.config.capture.compat = compat;
    if compat == cdc_source::Compat::Documentdb {
        h.config.mongo.uri = service_kit::config::SecretUri::new(test_support::services().service_source_uri);
    }
    h.config.snapshot.mode = SnapshotMode::Initial;
    h.config.snapshot.batch_size = 2;
    let collections = [("double", ids_around(Bson::Double(f64::NAN))), ("decimal", ids_around(decimal_nan.into()))];
    for (coll, ids) in &collections {
        let docs = ids.iter().map(|id| doc! {"_id": id.clone(), "coll": *coll});
        h.collection(coll).insert_many(docs).await.expect("seed");
        // MinKey, null, NaN: the stop comes with NaN the last _id copied.
        cdc_source::hooks::hold_copy_after(&format!("{}.{coll}", h.db), 3);
    }
    let first = h.start().await;
    for (coll, _) in &collections {
        let metric = format!("cdc_source_events_total{{namespace=\"{}.{coll}\",op=\"r\"}}", h.db);
        eventually("the copy up to NaN", Duration::from_secs(60), || async {
            (first.metric(&metric).await >= 3.0).then_some(())
        })
        .await;
    }
    first.stop().await.expect("clean stop");
    for (coll, _) in &collections {
        let copied = changes(&decode(&h.records(coll, 3).await)).len();
        assert_eq!(copied, 3, "{coll}: the first run stopped after NaN");
    }
    let second = h.start().await;
    for (coll, ids) in &collections {
        let records = h.records(coll, ids.len()).await;
        let mut copied: Vec<String> = changes(&decode(&records)).iter().map(|c| format!("{:?}", c.id())).collect();
        let mut expected: Vec<String> = ids.iter().map(|id| format!("{:?}", Some(id))).collect();
        copied.sort();
        expected.sort();
        assert_eq!(copied, expected, "{coll}: every document once");
    }
    second.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_mongodb_snapshot_resumed_after_a_nan_id_copies_every_document_once() {
    a_snapshot_resumed_after_a_nan_id_copies_every_document_once(cdc_source::Compat::Mongodb).await;
}

#[tokio::test]
async fn a_documentdb_snapshot_resumed_after_a_nan_id_copies_every_document_once() {
    a_snapshot_resumed_after_a_nan_id_copies_every_document_once(cdc_source::Compat::Documentdb).await;
}
