//! kill -9 of either service, as processes, in the middle of a write load: after restarts the
//! target equals the source, and the topic holds every insert exactly once (the source's
//! transactions make a crash neither lose nor repeat events).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bson::{doc, Document};
use e2e::pipeline::{wait_ready, Pipeline};
use e2e::{free_addr, spawn};
use tokio::process::Child;

fn source_env(p: &Pipeline, addr: std::net::SocketAddr) -> HashMap<String, String> {
    let c = &p.source_config;
    [
        ("HTTP__LISTEN_ADDR", addr.to_string()),
        ("MONGO__URI", c.mongo.uri.expose().to_string()),
        ("KAFKA__BOOTSTRAP_SERVERS", c.kafka.bootstrap_servers.clone()),
        ("CAPTURE__NAME", c.capture.name.clone()),
        ("CAPTURE__SCOPE", "database".into()),
        ("CAPTURE__DATABASE", c.capture.database.clone()),
        ("TOPICS__PREFIX", c.topics.prefix.clone()),
        ("TOPICS__PARTITIONS", c.topics.partitions.to_string()),
        ("DELIVERY__BATCH_MAX_WAIT_MS", "20".into()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("CDC_SOURCE__{k}"), v))
    .collect()
}

fn sink_env(p: &Pipeline, addr: std::net::SocketAddr) -> HashMap<String, String> {
    let c = &p.sink_config;
    [
        ("HTTP__LISTEN_ADDR", addr.to_string()),
        ("MONGO__URI", c.mongo.uri.expose().to_string()),
        ("KAFKA__BOOTSTRAP_SERVERS", c.kafka.bootstrap_servers.clone()),
        ("KAFKA__OPTIONS__TOPIC_METADATA_REFRESH_INTERVAL_MS", "1000".into()),
        ("CONSUME__GROUP_ID", c.consume.group_id.clone()),
        ("CONSUME__DEAD_LETTER_TOPIC", c.consume.dead_letter_topic.clone()),
        ("CONSUME__COMMIT_INTERVAL_MS", "200".into()),
        ("APPLY__METADATA_DATABASE", c.apply.metadata_database.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("SINK_WRITER__{k}"), v))
    .chain([("SINK_WRITER__CONSUME__TOPICS".to_string(), c.consume.topics[0].clone())])
    .collect()
}

async fn start(binary: &str, env: &HashMap<String, String>, addr: std::net::SocketAddr) -> Child {
    let mut child = spawn(binary, &[], env);
    if tokio::time::timeout(Duration::from_secs(45), wait_ready(addr)).await.is_err() {
        child.start_kill().expect("kill");
        let output = child.wait_with_output().await.expect("output");
        panic!("{binary} not ready within 45 s; its log:\n{}", String::from_utf8_lossy(&output.stderr));
    }
    child
}

async fn kill9(mut child: Child) {
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("reaped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_either_service_mid_stream_loses_and_repeats_nothing() {
    let p = Pipeline::new("crash", 4).await;
    let (source_addr, sink_addr) = (free_addr(), free_addr());
    let (source_env, sink_env) = (source_env(&p, source_addr), sink_env(&p, sink_addr));
    let mut source = start("cdc-source", &source_env, source_addr).await;
    let mut sink = start("sink-writer", &sink_env, sink_addr).await;

    let coll = p.source_db().collection::<Document>("docs");
    let writer = {
        let coll = coll.clone();
        tokio::spawn(async move {
            for i in 0..6_000 {
                coll.insert_one(doc! {"_id": i, "v": 0}).await.expect("insert");
                if i % 2 == 0 {
                    coll.update_one(doc! {"_id": i / 2}, doc! {"$inc": {"v": 1}}).await.expect("update");
                }
                if i % 10 == 0 {
                    coll.delete_one(doc! {"_id": i / 3}).await.expect("delete");
                }
            }
        })
    };
    for round in 0..2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        kill9(source).await;
        source = start("cdc-source", &source_env, source_addr).await;
        tokio::time::sleep(Duration::from_millis(500 + 300 * round)).await;
        kill9(sink).await;
        sink = start("sink-writer", &sink_env, sink_addr).await;
    }
    writer.await.expect("writer");
    p.converged(Duration::from_secs(120)).await;

    let topic = format!("{}.{}.docs", p.name, p.name);
    let records =
        test_support::consume_all(&p.source_config.kafka.bootstrap_servers, &[&topic], 6_000, Duration::from_secs(60))
            .await;
    let mut inserts: BTreeMap<String, usize> = BTreeMap::new();
    for record in &records {
        if let Ok(envelope::Event::Change(change)) = envelope::decode(record.key.as_deref(), record.value.as_deref()) {
            if change.op == envelope::Op::Create {
                *inserts.entry(format!("{:?}", change.id())).or_default() += 1;
            }
        }
    }
    assert_eq!(inserts.len(), 6_000, "every insert is on the topic");
    assert!(inserts.values().all(|n| *n == 1), "no insert twice: {:?}", inserts.iter().find(|(_, n)| **n > 1));
    kill9(source).await;
    kill9(sink).await;
}
