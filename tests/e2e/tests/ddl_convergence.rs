//! DDL while the sink is not in step: a lagging partition, a target failing at the marker, a
//! replica taking over after another applied a drop, a rename onto an existing collection, and a
//! sink reading only some of a dropped database's topics. The target must end equal to the
//! source every time.

use std::time::Duration;

use bson::{doc, Bson, Document};
use e2e::mongod::PrivateMongod;
use e2e::pipeline::{wait_ready, Pipeline};
use e2e::process::Proc;
use e2e::{free_addr, ids_on_partition};
use test_support::{eventually, http_get, metric};

/// A pipeline whose target is a mongod of the test's own (failpoints there touch nobody else).
async fn with_own_target(test: &str, partitions: i32) -> (Pipeline, PrivateMongod) {
    let own = PrivateMongod::start().await;
    let mut p = Pipeline::new(test, partitions).await;
    p.target_own(&own);
    p.sink_config.apply.max_backoff_ms = 500;
    (p, own)
}

/// Whether some partition of `topic` has recorded its arrival at a DDL marker.
async fn arrived(p: &Pipeline, partition: &str) -> bool {
    let log = p.target.database(&p.sink_config.apply.metadata_database).collection::<Document>("ddl");
    log.find_one(doc! {"arrived": partition}).await.ok().flatten().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_marker_is_not_passed_before_the_drop_is_applied() {
    let (p, own) = with_own_target("ddlhold", 2).await;
    let topic = format!("{}.{}.c", p.name, p.name);
    let [p0, p1]: [Vec<i32>; 2] = [ids_on_partition(0, 2, 0, 3), ids_on_partition(1, 2, 0, 3)];
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    let coll = p.source_db().collection::<Document>("c");
    coll.insert_one(doc! {"_id": p0[0], "v": "old"}).await.expect("insert");
    coll.insert_one(doc! {"_id": p1[0], "v": "old"}).await.expect("insert");
    p.converged(Duration::from_secs(60)).await;

    // Partition 1 cannot write its last change before the drop; partition 0 has none and reaches
    // the drop's marker, then waits there for partition 1.
    own.fail_command(
        Bson::String("alwaysOn".into()),
        doc! {"failCommands": ["update"], "namespace": format!("{}.c", p.name), "errorCode": 91},
    )
    .await;
    coll.insert_one(doc! {"_id": p1[1], "v": "before the drop"}).await.expect("insert");
    coll.drop().await.expect("drop");
    coll.insert_many([doc! {"_id": p0[2], "v": "new"}, doc! {"_id": p1[2], "v": "new"}]).await.expect("recreate");
    eventually("partition 0 waits at the drop marker", Duration::from_secs(60), || async {
        arrived(&p, &format!("{topic}/0")).await.then_some(())
    })
    .await;
    // Everything the sink has done so far is committed as it stops: the marker must not be.
    sink.stop().await;

    own.fail_nothing().await;
    let sink = p.start_sink().await;
    p.converged(Duration::from_secs(90)).await;
    let target = p.target_db().collection::<Document>("c");
    assert_eq!(target.count_documents(doc! {"v": "new"}).await.expect("count"), 2, "the recreated documents survive");
    sink.stop().await;
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_failing_at_a_drop_marker_delays_it_and_the_pipeline_recovers() {
    let (p, own) = with_own_target("ddlfail", 1).await;
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    let coll = p.source_db().collection::<Document>("c");
    coll.insert_many((0..10).map(|i| doc! {"_id": i})).await.expect("insert");
    p.converged(Duration::from_secs(60)).await;

    // Every step of the DDL bookkeeping fails for a while: recording the arrival, claiming,
    // applying.
    let meta = format!("{}.ddl", p.sink_config.apply.metadata_database);
    own.fail_command(
        Bson::String("alwaysOn".into()),
        doc! {"failCommands": ["findAndModify", "update", "find"], "namespace": &meta, "errorCode": 91},
    )
    .await;
    coll.drop().await.expect("drop");
    coll.insert_many((100..110).map(|i| doc! {"_id": i, "after": true})).await.expect("insert after the drop");
    let addr = sink.addr;
    eventually("sink-writer not ready while the DDL cannot be applied", Duration::from_secs(60), || async {
        matches!(http_get(addr, "/health/readyz").await, Ok((503, _))).then_some(())
    })
    .await;
    own.fail_nothing().await;
    p.converged(Duration::from_secs(90)).await;
    eventually("ready again", Duration::from_secs(30), || async {
        matches!(http_get(addr, "/health/readyz").await, Ok((200, _))).then_some(())
    })
    .await;
    assert_eq!(
        metric(&sink.metrics().await, "sink_writer_ddl_applied_total{kind=\"drop\""),
        1.0,
        "the drop applied once"
    );
    sink.stop().await;
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_taking_over_after_another_applied_a_drop_does_not_resurrect_documents() {
    let mut p = Pipeline::new("ddltakeover", 1).await;
    // Offsets are committed rarely, so after a crash the next owner reads the drop's history again.
    p.sink_config.consume.commit_interval_ms = 600_000;
    p.sink_config.kafka.options.insert("session.timeout.ms".into(), "6000".into());
    p.sink_config.kafka.options.insert("heartbeat.interval.ms".into(), "1000".into());
    let source = p.start_source().await;
    let db = p.source_db();
    db.collection::<Document>("t").insert_one(doc! {"_id": 0}).await.expect("t exists");
    let dir = test_support::workspace_root().join(".cache/e2e").join(&p.name);
    std::fs::create_dir_all(&dir).expect("dir");
    let target_uri = test_support::services().service_target_uri;

    // Replica A reads only t's topic; B, in the same group, reads both and gets u's.
    let t_topic = format!("{}.{}.t", p.name, p.name);
    let mut a_env = p.sink_process_env(free_addr(), &target_uri);
    a_env.retain(|(k, _)| k != "SINK_WRITER__CONSUME__TOPICS" && k != "SINK_WRITER__HTTP__LISTEN_ADDR");
    let a_http = free_addr();
    a_env.push(("SINK_WRITER__CONSUME__TOPICS".into(), t_topic.clone()));
    a_env.push(("SINK_WRITER__HTTP__LISTEN_ADDR".into(), a_http.to_string()));
    let mut a = Proc::new("sink-a", e2e::binary("sink-writer"), vec![], a_env, &dir);
    a.start();
    wait_ready(a_http).await;
    p.converged(Duration::from_secs(60)).await;
    // A second topic, then replica B.
    db.collection::<Document>("u").insert_one(doc! {"_id": 0}).await.expect("u exists");
    let mut b_config = p.sink_config.clone();
    b_config.consume.commit_interval_ms = 200;
    let b_stop = tokio_util::sync::CancellationToken::new();
    let b = sink_writer::start(b_config, b_stop.clone()).await.expect("B starts");
    let b_addr = b.http_addr;
    let b_task = tokio::spawn(b.wait());
    eventually("B owns a partition", Duration::from_secs(60), || async {
        let body = http_get(b_addr, "/metrics").await.ok()?.1;
        (metric(&body, "sink_writer_assigned_partitions") == 1.0).then_some(())
    })
    .await;
    p.converged(Duration::from_secs(60)).await;

    // t: documents, a drop, a new life. A applies it all, then dies before committing.
    let t = db.collection::<Document>("t");
    t.insert_many((1..50).map(|i| doc! {"_id": i, "life": 1})).await.expect("insert");
    t.drop().await.expect("drop");
    t.insert_many((100..110).map(|i| doc! {"_id": i, "life": 2})).await.expect("insert after the drop");
    p.converged(Duration::from_secs(60)).await;
    a.kill9();

    // B takes t's partition over.
    eventually("B owns both partitions", Duration::from_secs(90), || async {
        let body = http_get(b_addr, "/metrics").await.ok()?.1;
        (metric(&body, "sink_writer_assigned_partitions") == 2.0).then_some(())
    })
    .await;
    // B resumes t where the target is (exactly_once), or from the drop's marker A reached, or
    // reads the history again (idempotent, before any marker): never writing a document of t's
    // first life back.
    tokio::time::sleep(Duration::from_secs(4)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    p.converged(Duration::from_secs(30)).await;
    b_stop.cancel();
    b_task.await.expect("joins").expect("B stops cleanly");
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_onto_an_existing_collection_leaves_exactly_the_renamed_one() {
    let p = Pipeline::new("dropTarget", 4).await;
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    let db = p.source_db();
    let from = db.collection::<Document>("staging");
    let to = db.collection::<Document>("live");
    to.insert_many((0..100).map(|i| doc! {"_id": i, "version": "old"})).await.expect("live");
    from.insert_many((50..120).map(|i| doc! {"_id": i, "version": "new"})).await.expect("staging");
    p.converged(Duration::from_secs(60)).await;
    p.source
        .database("admin")
        .run_command(doc! {"renameCollection": format!("{}.staging", p.name), "to": format!("{}.live", p.name),
        "dropTarget": true})
        .await
        .expect("rename with dropTarget");
    to.update_many(doc! {}, doc! {"$set": {"touched": true}}).await.expect("update after the swap");
    p.converged(Duration::from_secs(60)).await;
    sink.stop().await;
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_reading_some_of_a_dropped_databases_topics_goes_on() {
    let mut p = Pipeline::new("dropdbpart", 2).await;
    let source = p.start_source().await;
    let db = p.source_db();
    for coll in ["a", "b"] {
        db.collection::<Document>(coll).insert_many((0..10).map(|i| doc! {"_id": i})).await.expect("insert");
    }
    // This sink reads only a's topic.
    p.sink_config.consume.topics = vec![format!("{}.{}.a", p.name, p.name)];
    let sink = p.start_sink().await;
    let target = p.target_db().collection::<Document>("a");
    eventually("a replicated", Duration::from_secs(60), || async {
        (target.count_documents(doc! {}).await.ok()? == 10).then_some(())
    })
    .await;
    db.drop().await.expect("drop database");
    db.collection::<Document>("a").insert_one(doc! {"_id": "after"}).await.expect("insert after the drop");
    eventually("a holds only what came after the drop", Duration::from_secs(60), || async {
        let ids: Vec<Bson> = target.distinct("_id", doc! {}).await.ok()?;
        (ids == vec![Bson::String("after".into())]).then_some(())
    })
    .await;
    sink.stop().await;
    source.stop().await;
}
