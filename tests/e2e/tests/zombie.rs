//! A sink-writer replica that stood still (SIGSTOP) while holding a batch it could not write yet,
//! and wakes after the group gave its partition to another replica which wrote newer versions:
//! it must not put its stale batch into the target (sink-writer's consume/fence.rs). And one
//! whose partitions were paused (their queues full) when its group session ran out reads them
//! again once the group gives them back.

use std::time::Duration;

use bson::{doc, Document};
use e2e::pipeline::Pipeline;
use e2e::process::Proc;
use e2e::toxiproxy::Toxiproxy;
use test_support::{eventually, http_get, metric, services};

/// Replicas that notice a lost partition within seconds.
fn quick(mut p: Pipeline) -> Pipeline {
    let sink = &mut p.sink_config;
    sink.mongo.server_selection_timeout_ms = 1000;
    sink.kafka.options.insert("session.timeout.ms".into(), "6000".into());
    sink.kafka.options.insert("heartbeat.interval.ms".into(), "1000".into());
    sink.apply.max_backoff_ms = 500;
    p
}

async fn target_v(p: &Pipeline) -> Option<i32> {
    let found = p.target_db().collection::<Document>("docs").find_one(doc! {"_id": 1}).await.expect("find");
    found.and_then(|d| d.get_i32("v").ok())
}

async fn wait_v(p: &Pipeline, v: i32, what: &str) {
    eventually(what, Duration::from_secs(60), || async move { (target_v(p).await == Some(v)).then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_that_stood_still_does_not_write_its_stale_batch_after_losing_the_partition() {
    let servers = services();
    let p = quick(Pipeline::new("zombie", 1).await);
    let dir = p.dir();
    let toxiproxy = Toxiproxy::start(&dir).await;
    let via_proxy = p.target_via(&toxiproxy).await;
    let source = p.start_source().await;
    let docs = p.source_db().collection::<Document>("docs");

    // Replica A reaches the target through the proxy.
    let a_http = e2e::free_addr();
    let a_env = p.sink_process_env(a_http, &via_proxy);
    let mut a = Proc::new("sink-a", e2e::binary("sink-writer"), vec![], a_env, &dir);
    a.start();
    docs.insert_one(doc! {"_id": 1, "v": 1}).await.expect("insert");
    wait_v(&p, 1, "A applies v1").await;

    // A takes v2 but cannot write it; then it stands still.
    toxiproxy.enable("target", false).await;
    docs.update_one(doc! {"_id": 1}, doc! {"$set": {"v": 2}}).await.expect("update");
    eventually("A retries the v2 write", Duration::from_secs(30), || async {
        let body = http_get(a_http, "/metrics").await.ok()?.1;
        (metric(&body, "sink_writer_retries_total") >= 1.0).then_some(())
    })
    .await;
    let applied = |body: &str| metric(body, "sink_writer_documents_applied_total");
    let applied_before = applied(&http_get(a_http, "/metrics").await.expect("A's metrics").1);
    a.pause();

    // The group gives the partition to B, which writes v2 and then v3.
    let b_http = e2e::free_addr();
    let mut b = Proc::new(
        "sink-b",
        e2e::binary("sink-writer"),
        vec![],
        p.sink_process_env(b_http, &servers.service_target_uri),
        &dir,
    );
    b.start();
    wait_v(&p, 2, "B applies v2 once A is evicted").await;
    docs.update_one(doc! {"_id": 1}, doc! {"$set": {"v": 3}}).await.expect("update");
    wait_v(&p, 3, "B applies v3").await;

    // A wakes with its link back: its v2 batch must not land.
    toxiproxy.enable("target", true).await;
    a.resume();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(target_v(&p).await, Some(3), "a stale batch overwrote the newer document");
    // Either the group refused A's ownership check, or A's revocation came first and stopped
    // the write: both ways A wrote nothing after waking.
    let body = http_get(a_http, "/metrics").await.expect("A's metrics").1;
    assert_eq!(applied(&body), applied_before, "A wrote after losing the partition");

    docs.update_one(doc! {"_id": 1}, doc! {"$set": {"v": 4}}).await.expect("update");
    wait_v(&p, 4, "replication goes on").await;
    p.converged(Duration::from_secs(60)).await;
    a.stop();
    b.stop();
    source.stop().await;
}

/// The target is out of reach while a backlog arrives: the partitions' queues fill and the
/// consumer pauses them. The replica then stands still past its group session, so the group takes
/// its partitions and gives them back when it wakes. Kafka's client keeps a partition paused
/// through such a reassignment: unless the new tasks' partitions are resumed, they are never
/// fetched again and the target stops short for good.
#[tokio::test(flavor = "multi_thread")]
async fn partitions_paused_when_the_group_session_ran_out_are_read_again_after_it() {
    let p = quick(Pipeline::new("pausedlost", 2).await);
    let dir = p.dir();
    let toxiproxy = Toxiproxy::start(&dir).await;
    let via_proxy = p.target_via(&toxiproxy).await;
    let source = p.start_source().await;
    let docs = p.source_db().collection::<Document>("docs");
    let http = e2e::free_addr();
    let mut sink = Proc::new("sink", e2e::binary("sink-writer"), vec![], p.sink_process_env(http, &via_proxy), &dir);
    sink.start();
    docs.insert_one(doc! {"_id": -1}).await.expect("insert");
    p.converged(Duration::from_secs(60)).await;

    toxiproxy.enable("target", false).await;
    // More than the two partitions hold (queues of two batches each way, and the batches in hand).
    docs.insert_many((0..40_000).map(|i| doc! {"_id": i, "pad": "x".repeat(100)})).await.expect("backlog");
    eventually("the consumer pauses the full partitions", Duration::from_secs(60), || async {
        let body = http_get(http, "/metrics").await.ok()?.1;
        (metric(&body, "sink_writer_partition_pauses_total") >= 2.0).then_some(())
    })
    .await;
    sink.pause();
    tokio::time::sleep(Duration::from_secs(10)).await;
    sink.resume();
    toxiproxy.enable("target", true).await;
    p.converged(Duration::from_secs(90)).await;
    sink.stop();
    source.stop().await;
}
