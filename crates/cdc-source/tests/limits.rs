//! Events larger than Kafka takes: a clear stop that names the event and the fix, never a
//! silent skip, and nothing lost once the limit is raised.

mod common;

use std::time::Duration;

use bson::doc;
use common::{changes, decode, Harness};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use service_kit::connect::create_topic;

fn admin(h: &Harness) -> AdminClient<DefaultClientContext> {
    ClientConfig::new().set("bootstrap.servers", &h.config.kafka.bootstrap_servers).create().expect("admin")
}

async fn topic_config(h: &Harness, topic: &str, name: &str) -> Option<String> {
    let described = admin(h)
        .describe_configs([&ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .expect("describe configs");
    let resource = described.into_iter().next().expect("one resource").expect("described");
    resource.get(name).and_then(|entry| entry.value.clone())
}

/// `bytes` characters that compress badly (the broker checks compressed batches).
fn blob(bytes: usize) -> String {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'!' + (state % 90) as u8)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_over_max_message_bytes_stops_with_its_name_and_arrives_once_the_limit_is_raised() {
    let mut h = Harness::new("oversize").await;
    // The topic exists already and takes 1 MB: only the producer's limit is in the way.
    create_topic(&admin(&h), &h.topic("docs"), 4, 1, &[("max.message.bytes", "1048576")]).await.expect("topic");
    h.config.delivery.max_message_bytes = 100_000;
    let service = h.start().await;
    h.collection("docs").insert_one(doc! {"_id": 1}).await.expect("insert");
    h.records("docs", 1).await;
    h.collection("docs").insert_one(doc! {"_id": "big", "blob": blob(200_000)}).await.expect("insert");
    h.collection("docs").insert_one(doc! {"_id": 2}).await.expect("insert");

    let error = service.ended(Duration::from_secs(30)).await.expect_err("stops on the oversized event").to_string();
    for part in ["insert of", ".docs", "big", "more than delivery.max_message_bytes (100000)", "restart"] {
        assert!(error.contains(part), "'{part}' missing from: {error}");
    }
    assert!(!error.contains(&blob(200_000)[..40]), "the document's content is not in the error");

    h.config.delivery.max_message_bytes = 16 * 1024 * 1024;
    let service = h.start().await;
    let events = decode(&h.records("docs", 3).await);
    let mut ids: Vec<String> = changes(&events).iter().map(|c| format!("{:?}", c.id())).collect();
    ids.sort();
    assert_eq!(ids, ["Some(Int32(1))", "Some(Int32(2))", "Some(String(\"big\"))"], "each event once");

    // Topics this service creates take what it may send, not the broker's default.
    h.collection("fresh").insert_one(doc! {"_id": 1}).await.expect("insert");
    h.records("fresh", 1).await;
    assert_eq!(topic_config(&h, &h.topic("fresh"), "max.message.bytes").await.as_deref(), Some("16777216"));
    service.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_topic_that_refuses_a_record_is_named_with_the_fix() {
    let h = Harness::new("refused").await;
    create_topic(&admin(&h), &h.topic("docs"), 4, 1, &[("max.message.bytes", "50000")]).await.expect("topic");
    let service = h.start().await;
    h.collection("docs").insert_one(doc! {"_id": "big", "blob": blob(100_000)}).await.expect("insert");
    let error = service.ended(Duration::from_secs(60)).await.expect_err("stops on the refused record").to_string();
    for part in [h.topic("docs").as_str(), "too large", "max.message.bytes"] {
        assert!(error.contains(part), "'{part}' missing from: {error}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_over_16_mib_arrives_with_its_document_and_the_stream_goes_on() {
    const MIB: usize = 1024 * 1024;
    let h = Harness::new("hugeevent").await;
    let service = h.start().await;
    let coll = h.collection("docs");
    coll.insert_one(doc! {"_id": 1, "a": "a".repeat(8 * MIB), "gone": true}).await.expect("insert");
    // The update's event holds the $set (5 MiB) and the looked-up document (13 MiB): over 16 MiB.
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"b": "b".repeat(5 * MIB)}, "$unset": {"gone": ""}})
        .await
        .expect("update");
    coll.insert_one(doc! {"_id": 2, "small": true}).await.expect("insert after");
    let expected = coll.find_one(doc! {"_id": 1}).await.expect("read").expect("document");
    let events = decode(&h.records("docs", 3).await);
    let changes = changes(&events);
    let update = changes
        .iter()
        .find(|c| c.op == envelope::Op::Update)
        .unwrap_or_else(|| panic!("the update arrived: {:?}", changes.iter().map(|c| c.op).collect::<Vec<_>>()));
    assert_eq!(update.after.as_ref(), Some(&expected), "the update carries the document as it is");
    let description = update.update_description.as_ref().expect("what the description could keep");
    assert_eq!(description.removed_fields, ["gone"]);
    let ids: Vec<String> = changes.iter().map(|c| format!("{:?}", c.id())).collect();
    assert!(ids.contains(&"Some(Int32(2))".to_string()), "the stream went on: {ids:?}");
    assert_eq!(changes.len(), 3, "each change once: {ids:?}");
    service.stop().await.expect("clean stop");
}

#[tokio::test]
async fn doctor_says_how_events_over_16_mib_are_read() {
    let h = Harness::new("doctor_large").await;
    let report = cdc_source::doctor::run(h.config.clone()).await.to_string();
    let line = report.lines().find(|l| l.contains("large events")).unwrap_or_else(|| panic!("no line in:\n{report}"));
    // The test server is MongoDB 6.0.5: no $changeStreamSplitLargeEvent there.
    assert!(line.contains("6.0.5") && line.contains("read again without their documents"), "{line}");
}

#[tokio::test]
async fn the_memory_budget_and_the_queued_bytes_are_exported() {
    let mut h = Harness::new("budget").await;
    h.config.delivery.memory_budget_bytes = 96 * 1024 * 1024;
    h.config.delivery.max_message_bytes = 8 * 1024 * 1024;
    let service = h.start().await;
    h.collection("docs").insert_one(doc! {"_id": 1}).await.expect("insert");
    h.records("docs", 1).await;
    assert_eq!(service.metric("cdc_source_memory_budget_bytes").await, (96 * 1024 * 1024) as f64);
    assert!(service.metrics().await.contains("\ncdc_source_queued_bytes 0\n"), "nothing held once delivered");
    service.stop().await.expect("clean stop");
}

/// `{_id: id, s: <the two bytes C3 28, not UTF-8>}` as BSON: the server stores such a string as
/// a client sends it; the bson crate (and every reader of our events) refuses it.
fn not_utf8(id: i32) -> bson::RawDocumentBuf {
    let mut body = vec![0x10];
    body.extend_from_slice(b"_id\0");
    body.extend_from_slice(&id.to_le_bytes());
    body.push(0x02);
    body.extend_from_slice(b"s\0");
    body.extend_from_slice(&3_i32.to_le_bytes());
    body.extend_from_slice(&[0xC3, 0x28, 0x00]);
    let mut bytes = i32::try_from(body.len() + 5).expect("small").to_le_bytes().to_vec();
    bytes.extend_from_slice(&body);
    bytes.push(0);
    bson::RawDocumentBuf::from_bytes(bytes).expect("a document's frame")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_string_that_is_not_utf8_stops_with_its_document_named_and_nothing_empty_is_sent() {
    // Streamed.
    let h = Harness::new("notutf8").await;
    let service = h.start().await;
    h.collection("docs").insert_one(doc! {"_id": 1}).await.expect("insert");
    h.records("docs", 1).await;
    h.collection("docs").clone_with_type::<bson::RawDocumentBuf>().insert_one(not_utf8(2)).await.expect("insert");
    h.collection("docs").insert_one(doc! {"_id": 3}).await.expect("insert");
    let error = service.ended(Duration::from_secs(30)).await.expect_err("stops on the document").to_string();
    let error = error.to_lowercase();
    for part in [".docs", "\"_id\": 2", "utf-8"] {
        assert!(error.contains(part), "'{part}' missing from: {error}");
    }
    let events = decode(&h.records("docs", 1).await);
    let ids: Vec<String> = changes(&events).iter().map(|c| format!("{:?}", c.id())).collect();
    assert_eq!(ids, ["Some(Int32(1))"], "nothing after the document that cannot be read");

    // Copied by a snapshot.
    let mut h = Harness::new("notutf8snap").await;
    h.config.snapshot.mode = cdc_source::SnapshotMode::Initial;
    h.collection("docs").clone_with_type::<bson::RawDocumentBuf>().insert_one(not_utf8(7)).await.expect("insert");
    let stop = tokio_util::sync::CancellationToken::new();
    let running = cdc_source::start(h.config.clone(), stop.clone()).await.expect("starts");
    let ended = tokio::time::timeout(Duration::from_secs(60), running.wait()).await.expect("stops within 60 s");
    let error = ended.expect_err("stops on the document").to_string().to_lowercase();
    drop(stop);
    for part in [".docs", "_id 7", "utf-8"] {
        assert!(error.contains(part), "'{part}' missing from: {error}");
    }
}
