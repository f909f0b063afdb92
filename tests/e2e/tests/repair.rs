//! Issue 22, 7, against the real servers: `sink-writer verify --repair` has cdc-source send the
//! documents found different again, ordered with its stream, then checks them again. Drift planted
//! on the target (a changed document, a deleted one, an extra one, an Int32 turned Int64) is
//! repaired while the same documents keep changing on the source, and `verify` then finds the
//! target equal; a re-send racing concurrent updates never puts an older copy after a newer change.

use std::time::Duration;

use bson::{doc, Bson, Document};
use e2e::pipeline::Pipeline;
use e2e::sink_commands::sink_command;
use envelope::resend::{decode_message, encode_request, ResendMessage, ResendRequest};
use envelope::{Event, Op, Snapshot};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use test_support::{consume_all, eventually};

/// Keeps changing `ids` on the source (`$inc: {v: 1}`) until aborted.
fn keep_changing(coll: mongodb::Collection<Document>, ids: Vec<i32>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            coll.update_many(doc! {"_id": {"$in": ids.clone()}}, doc! {"$inc": {"v": 1_i64}}).await.expect("update");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_planted_on_the_target_is_repaired_while_the_documents_keep_changing() {
    let mut p = Pipeline::new("repair", 2).await;
    p.source_config.delivery.watermark_interval_ms = 300;
    let coll = p.source_db().collection::<Document>("docs");
    coll.insert_many((0..100).map(|i| doc! {"_id": i, "n": i, "v": 0_i64})).await.expect("insert");
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    p.converged(Duration::from_secs(90)).await;

    // Drift behind the pipeline's back: documents that stand still on the source (only a repair
    // brings them back) and documents the source keeps changing.
    let target = p.target_db().collection::<Document>("docs");
    for (changed, deleted, retyped) in [(10, 11, 12), (20, 21, 22)] {
        target.update_one(doc! {"_id": changed}, doc! {"$set": {"n": -1}}).await.expect("changed");
        target.delete_one(doc! {"_id": deleted}).await.expect("deleted");
        target.update_one(doc! {"_id": retyped}, doc! {"$set": {"n": i64::from(retyped)}}).await.expect("Int64");
    }
    target.insert_one(doc! {"_id": 1000, "n": 1000}).await.expect("extra");
    let (code, report) = sink_command(&p, &["verify"], &[]).await;
    assert_eq!(code, 1, "the drift is found: {report}");
    let changing = keep_changing(coll.clone(), vec![20, 21, 22]);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (code, report) = sink_command(&p, &["verify", "--repair"], &[]).await;
    assert_eq!(code, 0, "repaired: {report}");
    assert!(report["repair"]["requested"].as_u64().unwrap_or(0) >= 4, "{report}");
    assert!(report["repaired"].as_u64().unwrap_or(0) >= 4, "{report}");
    assert_eq!(report["repair"]["unanswered"], 0, "{report}");
    assert!(report["repair"]["deleted"].as_u64().unwrap_or(0) >= 1, "the extra document: {report}");
    for (id, n) in [(10, Bson::Int32(10)), (11, Bson::Int32(11)), (12, Bson::Int32(12))] {
        let doc = target.find_one(doc! {"_id": id}).await.expect("read").unwrap_or_default();
        assert_eq!(doc.get("n"), Some(&n), "{id}: {doc}");
    }
    assert!(target.find_one(doc! {"_id": 1000}).await.expect("read").is_none(), "the extra document is gone");

    changing.abort();
    let (code, report) = sink_command(&p, &["verify"], &[]).await;
    assert_eq!(code, 0, "equal after the repair: {report}");
    p.converged(Duration::from_secs(60)).await;
    sink.stop().await;
    source.stop().await;
}

/// A re-send request for `ids` of `ns`, written to cdc-source's request topic.
async fn request(producer: &FutureProducer, topic: &str, ns: &str, n: usize, ids: Vec<Bson>) -> String {
    let request =
        ResendRequest { id: format!("race-{n}"), ns: ns.to_string(), ids, reason: "race test".into(), at_ms: 0 };
    let value = encode_request(&request);
    let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key(request.id.as_str()).payload(&value);
    producer.send(record, Duration::from_secs(10)).await.expect("request sent");
    request.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_racing_concurrent_updates_never_follows_a_newer_change_with_an_older_copy() {
    let p = Pipeline::new("race", 1).await;
    let coll = p.source_db().collection::<Document>("docs");
    coll.insert_one(doc! {"_id": 1, "n": 0_i64}).await.expect("insert");
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    p.converged(Duration::from_secs(90)).await;

    // Updates as fast as they go for 300 ms, then a pause of 300 ms: some re-sends read while the
    // document changes, some while it stands still.
    let updater = {
        let coll = coll.clone();
        tokio::spawn(async move {
            loop {
                let burst = std::time::Instant::now();
                while burst.elapsed() < Duration::from_millis(300) {
                    coll.update_one(doc! {"_id": 1}, doc! {"$inc": {"n": 1_i64}}).await.expect("update");
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let topic = format!("__cdc_source.{}.requests", p.source_config.capture.name);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &p.sink_config.kafka.bootstrap_servers)
        .create()
        .expect("producer");
    let ns = format!("{}.docs", p.name);
    let mut sent = Vec::new();
    for n in 0..30 {
        sent.push(request(&producer, &topic, &ns, n, vec![Bson::Int32(1)]).await);
        tokio::time::sleep(Duration::from_millis(97)).await;
    }
    // Every request answered.
    let replies = eventually("every request answered", Duration::from_secs(120), || async {
        let records = consume_all(&p.sink_config.kafka.bootstrap_servers, &[&topic], 60, Duration::from_secs(5)).await;
        let replies: Vec<_> = records
            .iter()
            .filter_map(|r| match decode_message(r.value.as_deref().unwrap_or_default()) {
                Ok(ResendMessage::Reply(reply)) => Some(reply),
                _ => None,
            })
            .collect();
        (replies.len() >= sent.len()).then_some(replies)
    })
    .await;
    updater.abort();
    assert!(replies.iter().all(|r| r.error.is_none() && r.resent + r.superseded == 1), "{replies:?}");

    // On the document's partition, in order: every state is at least as new as the one before.
    let data = format!("{}.{}.docs", p.name, p.name);
    let records = consume_all(&p.sink_config.kafka.bootstrap_servers, &[&data], 1, Duration::from_secs(10)).await;
    let (mut last, mut copies, mut tagged) = (-1_i64, 0, 0);
    for record in &records {
        let Ok(Event::Change(change)) = envelope::decode(record.key.as_deref(), record.value.as_deref()) else {
            continue;
        };
        let Some(n) = change.after.as_ref().and_then(|d| d.get_i64("n").ok()) else { continue };
        assert!(n >= last, "offset {}: n {n} after {last} (re-send {:?})", record.offset, change.resend);
        last = n;
        match (change.op, change.source.snapshot, &change.resend) {
            (Op::Read, Snapshot::Incremental, Some(_)) => copies += 1,
            (_, _, Some(_)) => tagged += 1,
            _ => {}
        }
    }
    assert_eq!(copies + tagged, sent.len(), "each request answered by a copy or by the change that made it moot");
    eprintln!("{copies} copies, {tagged} changes answering a request");
    p.converged(Duration::from_secs(60)).await;
    sink.stop().await;
    source.stop().await;
}
