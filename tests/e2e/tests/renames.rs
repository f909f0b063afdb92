//! Renames against the real servers, source to target: a rename is ordered against the later
//! changes of both names; renames into and out of the captured namespaces, and renames during the
//! snapshot, leave the target equal to the source.

use std::time::Duration;

use bson::{doc, Document};
use e2e::pipeline::Pipeline;
use futures::TryStreamExt;
use test_support::{consume_all, eventually};

async fn rename(p: &Pipeline, from: &str, to: &str, drop_target: bool) {
    let command = doc! {
        "renameCollection": format!("{}.{from}", p.name),
        "to": format!("{}.{to}", p.name),
        "dropTarget": drop_target,
    };
    p.source.database("admin").run_command(command).await.expect("rename");
}

fn topic(p: &Pipeline, coll: &str) -> String {
    format!("{}.{}.{coll}", p.source_config.topics.prefix, p.name)
}

/// Every document of `coll`, in `_id` order; `None` when the read fails (a rename applied to the
/// collection while it is read kills the cursor).
async fn documents(db: &mongodb::Database, coll: &str) -> Option<Vec<Document>> {
    let cursor = db.collection::<Document>(coll).find(doc! {}).sort(doc! {"_id": 1}).await.ok()?;
    cursor.try_collect().await.ok()
}

/// The first difference between the source's and the target's database, if any.
async fn difference(p: &Pipeline, only: Option<&str>) -> Option<String> {
    let (source, target) = (p.source_db(), p.target_db());
    let mut names = match only {
        Some(coll) => vec![coll.to_string()],
        None => source.list_collection_names().await.ok()?,
    };
    if only.is_none() {
        let mut in_target = target.list_collection_names().await.ok()?;
        names.sort();
        in_target.sort();
        if names != in_target {
            return Some(format!("collections: source {names:?}, target {in_target:?}"));
        }
    }
    for coll in names {
        let (s, t) = (documents(&source, &coll).await, documents(&target, &coll).await);
        match (s, t) {
            (Some(s), Some(t)) if s == t => {}
            (Some(s), Some(t)) => return Some(format!("{coll}: source has {} documents, target {}", s.len(), t.len())),
            _ => return Some(format!("{coll}: read interrupted")),
        }
    }
    None
}

/// Waits until the target's database (or only `coll`) equals the source's, byte for byte.
async fn converged(p: &Pipeline, only: Option<&str>) {
    let mut last = String::new();
    let outcome = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            match difference(p, only).await {
                None => return,
                Some(diff) => last = diff,
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    assert!(outcome.is_ok(), "target did not become equal to the source: {last}");
}

async fn same_collection(p: &Pipeline, coll: &str) {
    converged(p, Some(coll)).await;
}

async fn target_collections(p: &Pipeline) -> Vec<String> {
    let mut names = p.target_db().list_collection_names().await.expect("collections");
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_after_a_rename_waits_for_the_rename_on_the_new_name_topic() {
    let p = Pipeline::new("ren_order", 4).await;
    let source = p.start_source().await;
    let a = p.source_db().collection::<Document>("a");
    // Enough on the old name that its partitions reach the rename well after the new name's.
    a.insert_many((0..3_000).map(|i| doc! {"_id": i, "pad": "x".repeat(200)})).await.expect("insert");
    a.insert_one(doc! {"_id": "x"}).await.expect("insert x");
    rename(&p, "a", "b", false).await;
    p.source_db().collection::<Document>("b").delete_one(doc! {"_id": "x"}).await.expect("delete x");
    // Everything is on Kafka before the sink starts: it catches up on both topics at once.
    let b = topic(&p, "b");
    let b_records = consume_all(&p.source_config.kafka.bootstrap_servers, &[&b], 1, Duration::from_secs(60)).await;
    assert!(!b_records.is_empty(), "the delete reached the new name's topic");
    source.stop().await;
    let sink = p.start_sink().await;
    converged(&p, None).await;
    let x = p.target_db().collection::<Document>("b").find_one(doc! {"_id": "x"}).await.expect("read");
    assert_eq!(x, None, "the delete after the rename is applied after it");
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_in_a_collection_from_outside_the_scope_copies_it() {
    let mut p = Pipeline::new("ren_in", 4).await;
    p.source_config.capture.exclude = r".*_tmp".into();
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    let db = p.source_db();
    db.collection::<Document>("orders").insert_many((0..100).map(|i| doc! {"_id": i, "v": "old"})).await.expect("old");
    db.collection::<Document>("keep").insert_one(doc! {"_id": 1}).await.expect("keep");
    same_collection(&p, "orders").await;
    // The usual swap: fill a staging collection nobody replicates, then rename it over the live one.
    let staging = db.collection::<Document>("orders_tmp");
    staging.insert_many((50..1_050).map(|i| doc! {"_id": i, "v": "new"})).await.expect("new");
    rename(&p, "orders_tmp", "orders", true).await;
    db.collection::<Document>("orders").update_one(doc! {"_id": 60}, doc! {"$set": {"v": "later"}}).await.expect("u");
    db.collection::<Document>("orders").insert_one(doc! {"_id": "later"}).await.expect("insert after the swap");
    converged(&p, None).await;
    assert_eq!(target_collections(&p).await, ["keep", "orders"], "the staging collection never reaches the target");
    source.stop().await;
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renaming_a_collection_out_of_the_scope_drops_it_from_the_target() {
    let mut p = Pipeline::new("ren_out", 4).await;
    p.source_config.capture.exclude = r".*_archived".into();
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    let db = p.source_db();
    db.collection::<Document>("orders").insert_many((0..100).map(|i| doc! {"_id": i})).await.expect("insert");
    db.collection::<Document>("keep").insert_one(doc! {"_id": 1}).await.expect("keep");
    same_collection(&p, "orders").await;
    rename(&p, "orders", "orders_archived", false).await;
    db.collection::<Document>("keep").insert_one(doc! {"_id": 2}).await.expect("keep");
    same_collection(&p, "keep").await;
    eventually("orders dropped from the target", Duration::from_secs(60), || async {
        (target_collections(&p).await == ["keep"]).then_some(())
    })
    .await;
    source.stop().await;
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_list_of_collections_a_rename_into_the_list_copies_the_collection() {
    let mut p = Pipeline::new("ren_list", 4).await;
    p.source_config.capture.scope = cdc_source::Scope::Collections;
    p.source_config.capture.collections = vec![format!("{}.orders", p.name), format!("{}.keep", p.name)];
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    let db = p.source_db();
    db.collection::<Document>("orders").insert_many((0..100).map(|i| doc! {"_id": i, "v": "old"})).await.expect("old");
    same_collection(&p, "orders").await;
    let staging = db.collection::<Document>("staging");
    staging.insert_many((50..550).map(|i| doc! {"_id": i, "v": "new"})).await.expect("new");
    rename(&p, "staging", "orders", true).await;
    db.collection::<Document>("orders").delete_one(doc! {"_id": 70}).await.expect("delete after the swap");
    same_collection(&p, "orders").await;
    assert_eq!(target_collections(&p).await, ["orders"], "nothing of the staging collection in the target");
    source.stop().await;
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_renamed_while_the_snapshot_copies_it_arrives_whole() {
    let mut p = Pipeline::new("ren_snap", 4).await;
    p.source_config.snapshot.batch_size = 100;
    // Small batches and a short queue keep the copy slow enough to rename in the middle of it.
    p.source_config.delivery.batch_max_events = 200;
    p.source_config.delivery.queue_capacity = 200;
    let db = p.source_db();
    let big = db.collection::<Document>("big");
    for chunk in (0..20_000).collect::<Vec<i32>>().chunks(5_000) {
        big.insert_many(chunk.iter().map(|i| doc! {"_id": i, "pad": "x".repeat(100)})).await.expect("seed");
    }
    let source = p.start_source().await;
    let copied = |body: String| e2e::pipeline::metric(&body, "cdc_source_events_total{namespace=");
    eventually("the snapshot under way", Duration::from_secs(60), || async {
        (copied(source.metrics().await) >= 1_000.0).then_some(())
    })
    .await;
    rename(&p, "big", "big_renamed", false).await;
    assert!(copied(source.metrics().await) < 20_000.0, "renamed before the copy finished");
    db.collection::<Document>("big_renamed").insert_one(doc! {"_id": "after"}).await.expect("insert after");
    let sink = p.start_sink().await;
    converged(&p, None).await;
    source.stop().await;
    sink.stop().await;
}
