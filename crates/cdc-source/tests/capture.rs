//! Streaming against the real source replica set and Kafka broker: exact envelopes per op,
//! namespace filters, DDL markers in order, transactions.

mod common;

use std::time::Duration;

use bson::{doc, Bson};
use common::{changes, decode, is_schema, without_schema, Harness};
use envelope::{Ddl, Event, Op, Snapshot};

#[tokio::test]
async fn every_op_becomes_its_exact_envelope_in_order() {
    let h = Harness::new("ops").await;
    let service = h.start().await;
    let coll = h.collection("items");
    // Long enough that the server records a truncation rather than rewriting the array.
    let arr: Vec<String> = (0..20).map(|i| format!("element number {i} with some padding")).collect();
    coll.insert_one(doc! {"_id": 1, "a": 1_i32, "big": 5_i64, "arr": arr.clone(), "b": {"c": "old"}})
        .await
        .expect("insert");
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"b.c": "x"}, "$unset": {"a": ""}}).await.expect("update");
    coll.update_one(doc! {"_id": 1}, vec![doc! {"$set": {"arr": {"$slice": ["$arr", 2]}}}]).await.expect("truncate");
    coll.replace_one(doc! {"_id": 1}, doc! {"_id": 1, "replaced": true}).await.expect("replace");
    coll.delete_one(doc! {"_id": 1}).await.expect("delete");

    let partitions = h.config.topics.partitions as usize;
    let (created, records): (Vec<_>, Vec<_>) =
        h.all_records("items", 6 + partitions).await.into_iter().partition(is_schema);
    let created = decode(&created);
    assert_eq!(created.len(), partitions, "the collection's creation on every partition: {created:?}");
    assert!(created.iter().all(|e| matches!(e, Event::Control(c) if matches!(c.ddl, Ddl::Create { .. }))));
    assert_eq!(records.len(), 6, "5 changes and a tombstone");
    assert!(records.iter().all(|r| r.partition == records[0].partition), "one document, one partition");
    assert!(records.iter().all(|r| r.key.as_deref() == Some(br#"{"id":"1"}"#.as_slice())));
    let events = decode(&records);
    let ops: Vec<Op> = changes(&events).iter().map(|c| c.op).collect();
    assert_eq!(ops, vec![Op::Create, Op::Update, Op::Update, Op::Update, Op::Delete]);
    assert!(matches!(&events[5], Event::Tombstone { id } if *id == Bson::Int32(1)));

    let c = changes(&events);
    assert_eq!(
        c[0].after,
        Some(doc! {"_id": 1, "a": 1_i32, "big": 5_i64, "arr": arr, "b": {"c": "old"}}),
        "exact types"
    );
    let ud = c[1].update_description.as_ref().expect("update description");
    assert_eq!(ud.updated_fields, doc! {"b.c": "x"});
    assert_eq!(ud.removed_fields, vec!["a".to_string()]);
    let truncated = c[2].update_description.as_ref().expect("truncation");
    assert_eq!(truncated.truncated_arrays.len(), 1, "{truncated:?}");
    assert_eq!((truncated.truncated_arrays[0].field.as_str(), truncated.truncated_arrays[0].size), ("arr", 2));
    assert_eq!(c[3].after, Some(doc! {"_id": 1, "replaced": true}));
    assert!(c[3].update_description.is_none(), "a replace has no description");
    assert_eq!(c[4].after, None);
    for (i, change) in c.iter().enumerate() {
        assert_eq!(change.ns.to_string(), format!("{}.items", h.db));
        assert_eq!(change.source.snapshot, Snapshot::False);
        assert_eq!(change.source.rs.as_deref(), Some("source"));
        assert!(change.position.resume_token.is_some());
        assert!(change.position.cluster_time.t > 0);
        if i > 0 {
            assert!(change.position.seq > c[i - 1].position.seq, "sequence increases");
            assert!(change.position.cluster_time > c[i - 1].position.cluster_time, "cluster time increases");
        }
    }
    service.stop().await.expect("clean stop");
}

#[tokio::test]
async fn include_and_exclude_select_namespaces() {
    let mut h = Harness::new("filters").await;
    h.config.capture.exclude = r".*\.skip_.*".into();
    let service = h.start().await;
    h.collection("keep").insert_one(doc! {"_id": "k"}).await.expect("insert");
    h.collection("skip_me").insert_one(doc! {"_id": "s"}).await.expect("insert");
    h.collection("keep").insert_one(doc! {"_id": "k2"}).await.expect("insert");
    assert_eq!(without_schema(h.records("keep", 2).await).len(), 2);
    let skipped =
        test_support::consume_all(&h.config.kafka.bootstrap_servers, &[&h.topic("skip_me")], 0, Duration::from_secs(3))
            .await;
    assert!(skipped.is_empty(), "excluded namespace produced {skipped:?}");
    service.stop().await.expect("clean stop");
}

#[tokio::test]
async fn drop_and_rename_are_markers_on_every_partition_after_the_data() {
    let h = Harness::new("ddl").await;
    let service = h.start().await;
    let gone = h.collection("gone");
    for i in 0..20 {
        gone.insert_one(doc! {"_id": i}).await.expect("insert");
    }
    gone.drop().await.expect("drop");
    let old = h.collection("old");
    for i in 0..10 {
        old.insert_one(doc! {"_id": i}).await.expect("insert");
    }
    h.source
        .database("admin")
        .run_command(doc! {"renameCollection": format!("{}.old", h.db), "to": format!("{}.new", h.db)})
        .await
        .expect("rename");
    h.collection("new").insert_one(doc! {"_id": 100}).await.expect("insert after rename");

    let partitions = h.config.topics.partitions as usize;
    let records = without_schema(h.records("gone", 20 + partitions).await);
    assert_eq!(records.len(), 20 + partitions);
    for partition in 0..partitions as i32 {
        let on_partition: Vec<_> = records.iter().filter(|r| r.partition == partition).collect();
        let events = decode(&on_partition.iter().map(|r| (*r).clone()).collect::<Vec<_>>());
        let last = events.last().expect("a marker on every partition");
        assert!(matches!(last, Event::Control(c) if matches!(&c.ddl, Ddl::Drop(ns) if ns.coll == "gone")), "{last:?}");
        assert!(matches!(last, Event::Control(c) if c.markers as usize == partitions), "marker count: {last:?}");
        assert!(events[..events.len() - 1].iter().all(|e| matches!(e, Event::Change(_))), "data before the marker");
    }
    let renamed = decode(&without_schema(h.records("old", 10 + partitions).await));
    let markers: Vec<_> = renamed
        .iter()
        .filter_map(|e| match e {
            Event::Control(c) => Some(&c.ddl),
            _ => None,
        })
        .collect();
    assert_eq!(markers.len(), partitions);
    assert!(markers.iter().all(|d| matches!(d, Ddl::Rename { to, .. } if to.coll == "new")));
    let after = changes(&decode(&h.records("new", 1).await)).iter().map(|c| c.id().cloned()).collect::<Vec<_>>();
    assert_eq!(after, vec![Some(Bson::Int32(100))]);
    service.stop().await.expect("clean stop");
}

#[tokio::test]
async fn transactions_carry_their_ids_and_order() {
    let h = Harness::new("txn").await;
    let service = h.start().await;
    let mut session = h.source.start_session().await.expect("session");
    session.start_transaction().await.expect("start txn");
    h.collection("a").insert_one(doc! {"_id": 1}).session(&mut session).await.expect("insert a");
    h.collection("a").insert_one(doc! {"_id": 2}).session(&mut session).await.expect("insert a");
    h.collection("b").insert_one(doc! {"_id": 1}).session(&mut session).await.expect("insert b");
    session.commit_transaction().await.expect("commit");

    let mut all = decode(&h.records("a", 2).await);
    all.extend(decode(&h.records("b", 1).await));
    let mut txn: Vec<_> = changes(&all).into_iter().cloned().collect();
    txn.sort_by_key(|c| c.position.seq);
    assert_eq!(txn.len(), 3);
    let id = txn[0].transaction.as_ref().expect("transaction block").id.clone();
    assert!(id.ends_with(":1") || id.contains(':'), "{id}");
    for (i, change) in txn.iter().enumerate() {
        let t = change.transaction.as_ref().expect("transaction block");
        assert_eq!(t.id, id, "one transaction");
        assert_eq!(t.total_order, i as u64 + 1);
        assert!(change.source.lsid.is_some() && change.source.txn_number.is_some());
    }
    assert_eq!(txn[2].transaction.as_ref().map(|t| t.data_collection_order), Some(1), "first event on b");
    service.stop().await.expect("clean stop");
}

#[tokio::test]
async fn pre_images_fill_before_when_the_collection_records_them() {
    let mut h = Harness::new("pre").await;
    h.config.capture.pre_images = true;
    h.source
        .database(&h.db)
        .run_command(doc! {"create": "with_images", "changeStreamPreAndPostImages": {"enabled": true}})
        .await
        .expect("create with pre-images");
    let service = h.start().await;
    let coll = h.collection("with_images");
    coll.insert_one(doc! {"_id": 1, "v": 1}).await.expect("insert");
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"v": 2}}).await.expect("update");
    coll.delete_one(doc! {"_id": 1}).await.expect("delete");
    let events = decode(&h.records("with_images", 4).await);
    let c = changes(&events);
    assert_eq!(c[1].before, Some(doc! {"_id": 1, "v": 1}), "update carries the pre-image");
    assert_eq!(c[2].before, Some(doc! {"_id": 1, "v": 2}), "delete carries the pre-image");
    service.stop().await.expect("clean stop");
}

#[tokio::test]
async fn idle_streams_send_heartbeats_and_advance() {
    let mut h = Harness::new("beat").await;
    let topic = format!("{}-heartbeats", h.db);
    h.config.delivery.heartbeat_topic = topic.clone();
    let service = h.start().await;
    let beats =
        test_support::consume_all(&h.config.kafka.bootstrap_servers, &[&topic], 2, Duration::from_secs(30)).await;
    assert!(beats.len() >= 2, "heartbeats while idle");
    let value = String::from_utf8(beats[0].value.clone().unwrap_or_default()).expect("utf8");
    assert!(value.contains("\"resumeToken\""), "{value}");
    assert!(service.metric("cdc_source_checkpoint_timestamp_seconds").await > 0.0, "idle checkpoints stored");
    // The oplog of the test replica set reaches back to its initiation, before this test.
    assert!(service.metric("cdc_source_history_window_seconds").await >= 1.0, "the oplog window is reported");
    service.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_dropped_database_is_a_marker_and_the_stream_goes_on() {
    let h = Harness::new("dropdb").await;
    let service = h.start().await;
    h.collection("a").insert_one(doc! {"_id": 1}).await.expect("insert");
    h.source.database(&h.db).drop().await.expect("drop database");
    // The database-scoped stream was invalidated; it must reopen and see the database again.
    h.collection("a").insert_one(doc! {"_id": 2}).await.expect("insert after drop");
    let partitions = h.config.topics.partitions as usize;
    // Two inserts, and on every partition `a`'s drop marker and the dropDatabase marker (its
    // create markers do not count): wait for all of them (the reopen after the invalidate may
    // pause the stream for more than a second).
    let events = decode(&h.records("a", 2 + 2 * partitions).await);
    let markers = events
        .iter()
        .filter(|e| matches!(e, Event::Control(c) if matches!(&c.ddl, Ddl::DropDatabase { db } if *db == h.db)))
        .count();
    assert_eq!(markers, partitions, "a dropDatabase marker on every partition of the database's topics: {events:?}");
    let mut ids: Vec<i32> = changes(&events).iter().filter_map(|c| c.id().and_then(Bson::as_i32)).collect();
    ids.sort();
    assert_eq!(ids, vec![1, 2], "streaming went on after the invalidate");
    assert!(service.metric("cdc_source_restarts_total{reason=\"invalidate\"}").await >= 1.0);
    service.stop().await.expect("clean stop");
}

#[tokio::test]
async fn single_topic_mode_puts_every_namespace_on_one_topic() {
    let mut h = Harness::new("single").await;
    let topic = format!("{}-all", h.db);
    h.config.topics.single_topic = topic.clone();
    let service = h.start().await;
    h.collection("a").insert_one(doc! {"_id": 1}).await.expect("insert");
    h.collection("b").insert_one(doc! {"_id": 1}).await.expect("insert");
    let records = h.records_with_changes(&topic, 2).await;
    let mut namespaces: Vec<String> = changes(&decode(&records)).iter().map(|c| c.ns.coll.clone()).collect();
    namespaces.sort();
    assert_eq!(namespaces, vec!["a", "b"]);
    service.stop().await.expect("clean stop");
}
