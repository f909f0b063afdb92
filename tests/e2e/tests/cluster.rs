//! On the three-broker cluster (`scripts/services.sh up kafka-cluster`; not part of `make test`,
//! which keeps to the single broker: run with `cargo test -p e2e --test cluster -- --ignored`).
//!
//! While a broker shuts down (a rolling restart, as during MSK patching) a topic of replication
//! factor 3 cannot be created: a collection that appears then is captured once the broker is
//! back, with nothing lost or repeated, and cdc-source never stops meanwhile. A standby takes
//! over from a killed active instance as on the single broker (`tests/standby.rs`).

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Document};
use e2e::pipeline::Pipeline;
use e2e::standby::{docs_topic, first_visible, inserts, takeover, writer, Instance, TAKEOVER_LIMIT};
use test_support::metric;

async fn services_sh(action: &str, service: &str) {
    let script = test_support::workspace_root().join("scripts/services.sh");
    let status = tokio::process::Command::new(script).args([action, service]).status().await.expect("services.sh runs");
    assert!(status.success(), "services.sh {action} {service}");
}

/// New collections appear (each a new topic) every 200 ms while a broker is stopped gracefully
/// and started again: while it is in controlled shutdown the controller cannot place three
/// replicas and refuses the topic (INVALID_REPLICATION_FACTOR). Found by `make chaos CLUSTER=3`
/// (the rolling restart stopped cdc-source); the refusal is now waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-broker cluster: scripts/services.sh up kafka-cluster"]
async fn collections_created_during_a_broker_restart_are_captured_once_it_is_back() {
    let cluster = test_support::cluster();
    let mut p = Pipeline::new("cluster_rf", 1).await;
    p.source_config.kafka.bootstrap_servers = cluster.bootstrap.clone();
    p.source_config.delivery.max_backoff_ms = 1000;
    let source = p.start_source().await;
    let db = p.source_db();
    let creating = tokio::spawn(async move {
        let mut created = 0;
        while created < 150 {
            db.collection::<Document>(&format!("c{created}")).insert_one(doc! {"_id": created}).await.expect("insert");
            created += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        created
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    services_sh("down", "kafka-cluster-3").await;
    services_sh("up", "kafka-cluster-3").await;
    let created = creating.await.expect("creator");
    let topics: Vec<String> = (0..created).map(|i| format!("{}.{}.c{i}", p.name, p.name)).collect();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    let records =
        test_support::consume_all(&cluster.bootstrap, &topics, created as usize, Duration::from_secs(180)).await;
    let mut inserts = std::collections::BTreeMap::<String, usize>::new();
    for record in &records {
        if let Ok(envelope::Event::Change(change)) = envelope::decode(record.key.as_deref(), record.value.as_deref()) {
            if change.op == envelope::Op::Create {
                *inserts.entry(record.topic.clone()).or_default() += 1;
            }
        }
    }
    assert_eq!(inserts.len(), created as usize, "every new collection's insert is on its topic");
    assert!(inserts.values().all(|n| *n == 1), "an insert twice");
    let refused = metric(&source.metrics().await, "cdc_source_restarts_total{reason=\"kafka\"}");
    println!("cluster: {created} collections, {refused} pipeline restarts after Kafka refusals");
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-broker cluster: scripts/services.sh up kafka-cluster"]
async fn the_standby_takes_over_from_a_killed_active_instance_on_the_cluster() {
    let bootstrap = test_support::cluster().bootstrap;
    let p = Pipeline::new("cluster_standby", 4).await;
    let mut a = Instance::start(&p, "cdc-source-a", &bootstrap);
    a.wait_role("active", Duration::from_secs(60)).await;
    let b = Instance::start(&p, "cdc-source-b", &bootstrap);
    b.wait_role("standby", Duration::from_secs(60)).await;
    let (stop, next) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicI32::new(0)));
    let writes = writer(&p, stop.clone(), next.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let died = Instant::now();
    let visible = first_visible(bootstrap.clone(), docs_topic(&p), next.load(Ordering::Relaxed), died);
    a.proc.kill9();
    let (elected, durable) = takeover(&b, died).await;
    let visible = visible.await.expect("reader");
    println!(
        "cluster: standby elected after {elected:?}, first batch durable after {durable:?}, visible after {visible:?}"
    );
    assert!(visible.is_some_and(|v| v < TAKEOVER_LIMIT), "new changes visible only after {visible:?}");
    stop.store(true, Ordering::Relaxed);
    let written = writes.await.expect("writer") as usize;
    let counts = inserts(&bootstrap, &p, written).await;
    assert_eq!(counts.len(), written, "every insert is on the committed topic");
    assert!(counts.values().all(|n| *n == 1), "an insert twice on the committed topic");
    let mut b = b;
    b.proc.stop();
}
