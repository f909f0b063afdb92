//! Renames against the real servers, source to target: a rename is ordered against the later
//! changes of both names.

use std::time::Duration;

use bson::{doc, Document};
use e2e::pipeline::Pipeline;
use test_support::consume_all;

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
    p.converged(Duration::from_secs(90)).await;
    let x = p.target_db().collection::<Document>("b").find_one(doc! {"_id": "x"}).await.expect("read");
    assert_eq!(x, None, "the delete after the rename is applied after it");
    sink.stop().await;
}
