//! The target mongod goes away mid-stream and comes back: sink-writer drops readiness, retries
//! without committing, and the target converges with nothing lost. (A test binary of its own:
//! it stops a server other tests share.)

use std::time::Duration;

use bson::{doc, Document};
use e2e::pipeline::Pipeline;
use test_support::{eventually, http_get, services};

async fn target_server(command: &str) {
    let script = services().services_script;
    let status =
        tokio::process::Command::new(script).arg(command).arg("mongo-target").status().await.expect("services.sh");
    assert!(status.success(), "services.sh {command} mongo-target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_outage_drops_readiness_and_loses_nothing() {
    let mut p = Pipeline::new("outage", 2).await;
    p.sink_config.mongo.server_selection_timeout_ms = 1000;
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    let coll = p.source_db().collection::<Document>("docs");
    coll.insert_many((0..500).map(|i| doc! {"_id": i})).await.expect("insert");
    p.converged(Duration::from_secs(60)).await;

    target_server("down").await;
    coll.insert_many((500..1000).map(|i| doc! {"_id": i})).await.expect("insert while the target is down");
    let addr = sink.addr;
    eventually("sink-writer not ready while the target is down", Duration::from_secs(30), || async {
        matches!(http_get(addr, "/health/readyz").await, Ok((503, body)) if body.contains("target-mongodb"))
            .then_some(())
    })
    .await;
    assert_eq!(http_get(addr, "/health/livez").await.expect("livez").0, 200, "alive while waiting");

    target_server("up").await;
    coll.update_many(doc! {}, doc! {"$set": {"after": true}}).await.expect("update after the outage");
    p.converged(Duration::from_secs(120)).await;
    eventually("ready again", Duration::from_secs(30), || async {
        matches!(http_get(addr, "/health/readyz").await, Ok((200, _))).then_some(())
    })
    .await;
    source.stop().await;
    sink.stop().await;
}
