//! Collections, views, indexes and collection options follow the source to the target: copied by
//! the snapshot, streamed as they change (MongoDB's expanded change events), and in the DocumentDB
//! profile caught by a periodic comparison. The target never expires what the source still has.

use std::time::Duration;

use bson::{doc, DateTime, Document};
use cdc_source::{Compat, SnapshotMode};
use e2e::mongod::PrivateMongod;
use e2e::pipeline::{Pipeline, Started};
use e2e::schema;
use envelope::{Ddl, Event};
use service_kit::config::SecretUri;
use test_support::{consume_all, eventually};

/// `items`: a collation, a validator, a unique compound index, a partial index, a TTL index and a
/// text index with weights; 50 documents.
async fn build_items(db: &mongodb::Database) {
    db.run_command(doc! {
        "create": "items",
        "collation": {"locale": "fr", "strength": 2},
        "validator": {"$jsonSchema": {"bsonType": "object", "required": ["sku"]}},
        "validationLevel": "moderate",
    })
    .await
    .expect("create items");
    db.run_command(doc! {"createIndexes": "items", "indexes": [
        {"key": {"sku": 1, "region": -1}, "name": "sku_region", "unique": true},
        {"key": {"price": 1}, "name": "cheap", "partialFilterExpression": {"price": {"$lt": 10}}},
        {"key": {"seen": 1}, "name": "seen_ttl", "expireAfterSeconds": 86_400},
        // Text indexes take no collation but the simple one.
        {"key": {"title": "text", "body": "text"}, "name": "search", "weights": {"title": 5},
         "default_language": "french", "collation": {"locale": "simple"}},
    ]})
    .await
    .expect("create indexes");
    let items = db.collection::<Document>("items");
    let docs = (0..50).map(|i| {
        doc! {"_id": i, "sku": format!("sku-{i}"), "region": i % 3, "price": i, "seen": DateTime::now(),
        "title": format!("article {i}"), "body": "un texte"}
    });
    items.insert_many(docs).await.expect("insert items");
}

/// `cheap_items`, a view on `items`.
async fn build_view(db: &mongodb::Database) {
    db.run_command(doc! {"create": "cheap_items", "viewOn": "items", "pipeline": [{"$match": {"price": {"$lt": 10}}}]})
        .await
        .expect("create view");
}

/// Waits until each of `colls` has the same options and indexes on both sides.
async fn same_schema(p: &Pipeline, colls: &[&str]) {
    let meta = p.target.database(&p.sink_config.apply.metadata_database);
    let (source, target) = (p.source_db(), p.target_db());
    let mut last = String::new();
    let outcome = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            let mut differs = None;
            for coll in colls {
                differs = schema::difference(&source, &target, &meta, coll).await;
                if differs.is_some() {
                    break;
                }
            }
            match differs {
                None => return,
                Some(diff) => last = diff,
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    assert!(outcome.is_ok(), "the target's schema did not follow the source's: {last}");
}

/// Both services as with Amazon DocumentDB: the stream reports no schema changes.
fn read_as_documentdb(p: &mut Pipeline) {
    p.source_config.capture.compat = Compat::Documentdb;
    p.sink_config.apply.compat = Compat::Documentdb;
}

/// `items` built on the source, then replicated with its schema by both services, started.
async fn replicating_items(p: &Pipeline) -> (Started, Started) {
    build_items(&p.source_db()).await;
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    p.converged(Duration::from_secs(90)).await;
    same_schema(p, &["items"]).await;
    (source, sink)
}

async fn command(db: &mongodb::Database, command: Document) {
    db.run_command(command.clone()).await.unwrap_or_else(|e| panic!("{command}: {e}"));
}

fn topic(p: &Pipeline, coll: &str) -> String {
    format!("{}.{}.{coll}", p.source_config.topics.prefix, p.name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_copies_options_indexes_and_views_before_the_documents_that_need_them() {
    let mut p = Pipeline::new("schema_snap", 4).await;
    p.source_config.snapshot.mode = SnapshotMode::Initial;
    build_items(&p.source_db()).await;
    build_view(&p.source_db()).await;
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    p.converged(Duration::from_secs(90)).await;
    same_schema(&p, &["items", "cheap_items"]).await;

    // On every partition the collection and its unique index come before the first document.
    let records =
        consume_all(&p.source_config.kafka.bootstrap_servers, &[&topic(&p, "items")], 54, Duration::from_secs(30))
            .await;
    for partition in 0..4 {
        let events: Vec<Event> = records
            .iter()
            .filter(|r| r.partition == partition)
            .map(|r| envelope::decode(r.key.as_deref(), r.value.as_deref()).expect("decodes"))
            .collect();
        let first_read = events.iter().position(|e| matches!(e, Event::Change(_))).unwrap_or(events.len());
        let before: Vec<&Ddl> = events[..first_read]
            .iter()
            .filter_map(|e| match e {
                Event::Control(c) => Some(&c.ddl),
                _ => None,
            })
            .collect();
        assert!(
            matches!(before.first(), Some(Ddl::Create { options, .. }) if options.contains_key("collation")),
            "partition {partition}: {before:?}"
        );
        let unique_first = before.iter().any(|ddl| match ddl {
            Ddl::CreateIndexes { indexes, .. } => indexes.iter().any(|i| i.get_str("name") == Ok("sku_region")),
            _ => false,
        });
        assert!(unique_first, "partition {partition}: the unique index precedes the documents: {before:?}");
    }
    source.stop().await;
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_creates_index_changes_and_collmods_follow_the_source() {
    let mut p = Pipeline::new("schema_stream", 4).await;
    // MongoDB's expanded change events, also when the suite runs in the DocumentDB profile.
    p.source_is_mongodb();
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    let db = p.source_db();
    build_items(&db).await;
    build_view(&db).await;
    p.converged(Duration::from_secs(90)).await;
    same_schema(&p, &["items", "cheap_items"]).await;

    command(&db, doc! {"createIndexes": "items", "indexes": [{"key": {"tag": 1}, "name": "by_tag", "sparse": true}]})
        .await;
    command(&db, doc! {"collMod": "items", "index": {"name": "seen_ttl", "expireAfterSeconds": 3600}}).await;
    command(&db, doc! {"collMod": "items", "index": {"name": "cheap", "hidden": true}}).await;
    command(
        &db,
        doc! {"collMod": "items", "validator": {"$jsonSchema": {"required": ["sku", "price"]}},
        "validationLevel": "strict"},
    )
    .await;
    command(&db, doc! {"dropIndexes": "items", "index": "sku_region"}).await;
    command(&db, doc! {"collMod": "cheap_items", "viewOn": "items", "pipeline": [{"$match": {"price": {"$lt": 5}}}]})
        .await;
    // Created by its first insert: the create arrives once, before the document.
    db.collection::<Document>("implicit").insert_one(doc! {"_id": 1}).await.expect("implicit insert");
    db.collection::<Document>("items")
        .insert_one(doc! {"_id": 100, "sku": "later", "price": 3, "tag": "t"})
        .await
        .expect("insert after");
    same_schema(&p, &["items", "cheap_items", "implicit"]).await;
    p.converged(Duration::from_secs(90)).await;
    if !test_support::documentdb_profile() {
        // (DocumentDB has no hidden indexes: same_schema required the sink to report it.)
        let hidden = schema::indexes(&p.target_db(), "items").await;
        assert_eq!(hidden.get("cheap").and_then(|i| i.get_bool("hidden").ok()), Some(true), "{hidden:?}");
    }
    source.stop().await;
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documentdb_profile_copies_the_schema_and_catches_index_changes_by_comparison() {
    let mut p = Pipeline::new("schema_docdb", 2).await;
    read_as_documentdb(&mut p);
    p.source_config.capture.schema_check_interval_ms = 500;
    let (source, sink) = replicating_items(&p).await;

    let db = p.source_db();
    command(&db, doc! {"createIndexes": "items", "indexes": [{"key": {"tag": 1}, "name": "by_tag", "sparse": true}]})
        .await;
    same_schema(&p, &["items"]).await;
    command(&db, doc! {"dropIndexes": "items", "index": "cheap"}).await;
    same_schema(&p, &["items"]).await;
    source.stop().await;
    sink.stop().await;
}

/// Where the stream reports no schema changes, the first listing after a start sends every index
/// again, positioned where the stream starts. A source that stood still since its last start
/// starts where it started then: an index built while it was stopped goes out at the same
/// position as the listing of the last start, and must not pass for it at the sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_built_while_capture_was_stopped_reaches_the_target_where_the_stream_reports_no_schema_changes() {
    let mut p = Pipeline::new("schema_restart", 2).await;
    read_as_documentdb(&mut p);
    // No idle checkpoints: the second start is where the first one was.
    p.source_config.delivery.idle_checkpoint_interval_ms = 3_600_000;
    let (source, sink) = replicating_items(&p).await;
    source.stop().await;

    let db = p.source_db();
    command(&db, doc! {"createIndexes": "items", "indexes": [{"key": {"made_while_stopped": 1}, "name": "late"}]})
        .await;
    let source = p.start_source().await;
    same_schema(&p, &["items"]).await;
    source.stop().await;
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_target_never_expires_a_document_the_source_still_has() {
    // A source whose TTL monitor is off keeps expired documents; a target whose monitor runs every
    // second would delete them at once if its index expired anything.
    let (own_source, own_target) = (PrivateMongod::start().await, PrivateMongod::start().await);
    command(&own_source.client.database("admin"), doc! {"setParameter": 1, "ttlMonitorEnabled": false}).await;
    command(&own_target.client.database("admin"), doc! {"setParameter": 1, "ttlMonitorSleepSecs": 1}).await;
    let mut p = Pipeline::new("schema_ttl", 1).await;
    p.source = own_source.client.clone();
    p.source_config.mongo.uri = SecretUri::new(own_source.uri.clone());
    p.target_own(&own_target);
    p.source_config.snapshot.mode = SnapshotMode::Initial;
    // The collMod is streamed as an expanded event, also in the DocumentDB profile.
    p.source_config.capture.compat = Compat::Mongodb;

    let day_ago = DateTime::from_millis(DateTime::now().timestamp_millis() - 86_400_000);
    let sessions = p.source_db().collection::<Document>("sessions");
    command(
        &p.source_db(),
        doc! {"createIndexes": "sessions", "indexes": [
        {"key": {"at": 1}, "name": "at_ttl", "expireAfterSeconds": 60}]},
    )
    .await;
    sessions.insert_many((0..20).map(|i| doc! {"_id": i, "at": day_ago})).await.expect("snapshot documents");
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    sessions.insert_many((20..40).map(|i| doc! {"_id": i, "at": day_ago})).await.expect("streamed documents");
    p.converged(Duration::from_secs(90)).await;
    same_schema(&p, &["sessions"]).await;

    // Proof that the target's TTL monitor ran after the index was there: a document of its own,
    // expired, is deleted.
    let probe = own_target.client.database("probe").collection::<Document>("probe");
    command(
        &own_target.client.database("probe"),
        doc! {"createIndexes": "probe", "indexes": [
        {"key": {"at": 1}, "name": "at_ttl", "expireAfterSeconds": 0}]},
    )
    .await;
    for round in 0..2 {
        probe.insert_one(doc! {"_id": round, "at": day_ago}).await.expect("probe");
        eventually("the target's TTL monitor ran", Duration::from_secs(120), || async {
            (probe.count_documents(doc! {}).await.ok() == Some(0)).then_some(())
        })
        .await;
        let kept = p.target_db().collection::<Document>("sessions").count_documents(doc! {}).await.expect("count");
        assert_eq!(kept, 40, "round {round}: the target deleted documents the source still has");
        // The source shortens the TTL: still nothing expires on the target.
        command(&p.source_db(), doc! {"collMod": "sessions", "index": {"name": "at_ttl", "expireAfterSeconds": 1}})
            .await;
        same_schema(&p, &["sessions"]).await;
    }
    p.converged(Duration::from_secs(30)).await;
    source.stop().await;
    sink.stop().await;
}

/// The readiness body of a service at `addr`.
async fn readyz(addr: std::net::SocketAddr) -> String {
    test_support::http_get(addr, "/health/readyz").await.map(|(_, body)| body).unwrap_or_default()
}

/// Where the change stream reports no schema changes (DocumentDB; also the source mongod read
/// with `compat = "documentdb"`), the periodic comparisons still follow the source: a TTL, a
/// validator, `hidden` (MongoDB targets), a collection created with options after the start. And
/// the target's side is compared too: an index on the target only is reported, not dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_comparisons_follow_options_and_report_indexes_on_the_target_only() {
    let mut p = Pipeline::new("schema_compare", 2).await;
    read_as_documentdb(&mut p);
    p.source_config.capture.schema_check_interval_ms = 500;
    p.sink_config.apply.index_check_interval_ms = 500;
    if !test_support::documentdb_profile() {
        // The source mongod read as DocumentDB, the target a MongoDB one (which has hidden indexes).
        p.sink_config.apply.compat = Compat::Mongodb;
    }
    let (source, sink) = replicating_items(&p).await;

    let db = p.source_db();
    command(&db, doc! {"collMod": "items", "index": {"name": "seen_ttl", "expireAfterSeconds": 3600}}).await;
    command(&db, doc! {"collMod": "items", "validator": {"$jsonSchema": {"required": ["sku", "price"]}}}).await;
    command(&db, doc! {"create": "later", "validator": {"$jsonSchema": {"required": ["name"]}}}).await;
    db.collection::<Document>("later").insert_one(doc! {"_id": 1, "name": "x"}).await.expect("insert later");
    same_schema(&p, &["items", "later"]).await;
    if !test_support::documentdb_profile() {
        command(&db, doc! {"collMod": "items", "index": {"name": "cheap", "hidden": true}}).await;
        same_schema(&p, &["items"]).await;
        let on_target = schema::indexes(&p.target_db(), "items").await;
        assert_eq!(on_target.get("cheap").and_then(|i| i.get_bool("hidden").ok()), Some(true), "{on_target:?}");
    }

    // An index someone built on the target only: reported (readiness note, metric, status), kept.
    command(&p.target_db(), doc! {"createIndexes": "items", "indexes": [{"key": {"extra": 1}, "name": "target_only"}]})
        .await;
    let meta = p.target.database(&p.sink_config.apply.metadata_database);
    eventually("the target-only index reported", Duration::from_secs(30), || async {
        let noted = readyz(sink.addr).await.contains("target_only");
        let counted = e2e::pipeline::metric(&sink.metrics().await, "sink_writer_target_only_indexes") >= 1.0;
        let listed = meta
            .collection::<Document>("schema_conflicts")
            .find_one(doc! {"what": {"$regex": "target_only"}})
            .await
            .ok()
            .flatten()
            .is_some();
        (noted && counted && listed).then_some(())
    })
    .await;
    assert!(schema::indexes(&p.target_db(), "items").await.contains_key("target_only"), "never dropped");
    command(&p.target_db(), doc! {"dropIndexes": "items", "index": "target_only"}).await;
    eventually("the report cleared", Duration::from_secs(30), || async {
        let noted = readyz(sink.addr).await.contains("target_only");
        let counted = e2e::pipeline::metric(&sink.metrics().await, "sink_writer_target_only_indexes");
        (!noted && counted == 0.0).then_some(())
    })
    .await;
    source.stop().await;
    sink.stop().await;
}

/// A captured view on the target does not stop the periodic index comparison: `listIndexes` on a
/// view is refused (CommandNotSupportedOnView), and every round used to end there, so an index
/// built on the target only behind the view (in namespace order) was never reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_does_not_stop_the_index_comparison_of_the_collections_after_it() {
    let mut p = Pipeline::new("schema_view_check", 1).await;
    // Views are MongoDB's: a DocumentDB source has none.
    p.both_mongodb();
    p.sink_config.apply.index_check_interval_ms = 500;
    let db = p.source_db();
    db.collection::<Document>("items").insert_many((0..5).map(|i| doc! {"_id": i, "v": i})).await.expect("items");
    command(&db, doc! {"create": "a_view", "viewOn": "items", "pipeline": [{"$match": {"v": {"$gt": 1}}}]}).await;
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    p.converged(Duration::from_secs(90)).await;
    command(&p.target_db(), doc! {"createIndexes": "items", "indexes": [{"key": {"extra": 1}, "name": "target_only"}]})
        .await;
    eventually("the target-only index reported", Duration::from_secs(30), || async {
        let counted = e2e::pipeline::metric(&sink.metrics().await, "sink_writer_target_only_indexes") >= 1.0;
        (counted && readyz(sink.addr).await.contains("target_only")).then_some(())
    })
    .await;
    source.stop().await;
    sink.stop().await;
}
