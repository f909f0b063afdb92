//! Peers side by side (`make bench-peers`, also part of `make bench`): on the same servers and
//! the same documents,
//!
//! - sink: a backlog of DOCS inserts on one 4-partition topic (written by cdc-source), applied
//!   by sink-writer, then by the MongoDB Kafka Connector sink (2.0.1, Kafka Connect 4.4.0
//!   standalone, `ChangeStreamHandler`, four tasks) into a database of its own;
//! - source: a backlog of DOCS inserts captured by cdc-source, and one of its own by Debezium's
//!   MongoDB connector (3.6.1.Final, Kafka Connect 4.1.1 standalone, topics of four partitions,
//!   JSON without schemas), each beside a bare change-stream reader (`capture.rs`).
//!
//! Start-up is left out on both sides: each tool is timed from its first document (in the target
//! or on Kafka) to its last. CPU is the process's (the whole JVM for a connector) over the same
//! window.

use std::path::Path;
use std::time::{Duration, Instant};

use bson::Document;
use e2e::bench::{self, mib, proc_stats};
use e2e::interop::{Connect, ConnectKind};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use test_support::{unique, Services};

use crate::capture::Capture;
use crate::pipeline::{insert, Pipeline};

/// The connectors' JVM: Java's default collector with room to work (tests use a small serial one).
pub(crate) const BENCH_JVM: &[&str] = &["-Xmx2g"];

/// One measured run.
pub(crate) struct Run {
    pub tool: &'static str,
    pub docs: u64,
    pub seconds: f64,
    pub cpu_seconds: f64,
    pub peak_rss: u64,
}

impl Run {
    pub(crate) fn rate(&self) -> f64 {
        self.docs as f64 / self.seconds
    }

    /// CPU seconds per million documents (numerically, CPU µs per document).
    pub(crate) fn cpu_per_million(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.docs as f64
    }
}

/// The four runs, and what the target takes at most.
pub struct Peers {
    /// Raw bulk upserts per second straight into the target (no Kafka, no decoding).
    pub ceiling: f64,
    pub sink: Run,
    pub connector_sink: Run,
    /// cdc-source and Debezium on a backlog, each beside the bare change-stream reader.
    pub capture: Capture,
}

/// Polls `count` (documents done so far, or why the tool failed) every 100 ms until it reaches
/// `docs`; the window opens at `opened` or, if `None`, at the first document.
pub(crate) async fn timed<F, Fut>(
    tool: &'static str,
    docs: u64,
    pid: u32,
    opened: Option<(Instant, f64)>,
    mut count: F,
) -> Run
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(3600);
    let mut opened = opened;
    loop {
        let done = count().await.unwrap_or_else(|why| panic!("{tool}: {why}"));
        if opened.is_none() && done > 0 {
            opened = Some((Instant::now(), proc_stats(pid).cpu_seconds));
        }
        if let Some((at, _)) = opened {
            bench::progress(tool, done, docs, done as f64 / at.elapsed().as_secs_f64().max(0.001), "");
        }
        if done >= docs {
            break;
        }
        assert!(Instant::now() < deadline, "{tool}: {done} of {docs} documents after an hour");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!();
    let (at, cpu) = opened.expect("a document was seen");
    let stats = proc_stats(pid);
    Run {
        tool,
        docs,
        seconds: at.elapsed().as_secs_f64(),
        cpu_seconds: stats.cpu_seconds - cpu,
        peak_rss: stats.peak_rss_bytes,
    }
}

/// A client for [`topic_records`].
pub(crate) fn counter(bootstrap: &str, group: &str) -> BaseConsumer {
    ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", group).create().expect("a Kafka client")
}

/// The records on a topic that no transaction wrote (a Debezium topic): its partitions' high
/// watermarks summed.
pub(crate) fn topic_records(consumer: &BaseConsumer, topic: &str) -> u64 {
    let timeout = Duration::from_secs(10);
    let Ok(metadata) = consumer.fetch_metadata(Some(topic), timeout) else { return 0 };
    let partitions: Vec<i32> = metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    partitions
        .into_iter()
        .filter_map(|p| consumer.fetch_watermarks(topic, p, timeout).ok())
        .map(|(_, high)| high.max(0) as u64)
        .sum()
}

/// Fails with the connector's trace when its first task failed.
pub(crate) async fn failed(connect: &Connect, connector: &str) -> Result<(), String> {
    let state = connect.task_state(connector).await;
    if state.starts_with("FAILED") {
        return Err(format!("{state}\n(worker log: {})", connect.log.display()));
    }
    Ok(())
}

/// sink-writer, then the MongoDB Kafka Connector, applying the same backlog.
async fn sinks(servers: &Services, docs: i64, dir: &Path) -> (Run, Run) {
    let mut p = Pipeline::start_with(unique("bench"), servers, 4, &servers.kafka_bootstrap, dir, false).await;
    let source = test_support::mongo(&servers.mongo_source_uri).await.database(&p.name).collection::<Document>("items");
    insert(source, docs, 0).await;
    while p.inserts_on_kafka().await < docs as u64 {
        bench::progress("peers: backlog on Kafka", p.inserts_on_kafka().await, docs as u64, 0.0, "");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!();
    p.source.stop();

    let target = test_support::mongo(&servers.mongo_target_uri).await;
    let ours = target.database(&p.name).collection::<Document>("items");
    p.start_sink().await;
    let pid = p.sink.pid().expect("sink-writer runs");
    let sink = timed("sink-writer", docs as u64, pid, None, || async {
        ours.estimated_document_count().await.map_err(|e| e.to_string())
    })
    .await;
    p.sink.stop();

    let database = format!("{}_mkc", p.name);
    let topic = format!("{}.{}.items", p.name, p.name);
    let properties = format!(
        "connector.class=com.mongodb.kafka.connect.MongoSinkConnector\n\
         tasks.max=4\n\
         topics={topic}\n\
         connection.uri={}\n\
         database={database}\n\
         collection=items\n\
         change.data.capture.handler=com.mongodb.kafka.connect.sink.cdc.debezium.mongodb.ChangeStreamHandler\n",
        servers.mongo_target_uri
    );
    let scratch = dir.join(format!("peers-{}-mkc", p.name));
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let connect =
        Connect::start_with(ConnectKind::MongoKafkaConnector, &scratch, &[("mkc", properties)], "", BENCH_JVM).await;
    let pid = connect.pid().expect("the worker runs");
    let theirs = target.database(&database).collection::<Document>("items");
    let connector_sink = timed("MongoDB Kafka Connector sink", docs as u64, pid, None, || async {
        failed(&connect, "mkc").await?;
        theirs.estimated_document_count().await.map_err(|e| e.to_string())
    })
    .await;
    connect.stop().await;
    let _ = target.database(&database).drop().await;
    p.stop(servers).await;
    (sink, connector_sink)
}

pub async fn peers(servers: &Services, docs: i64, dir: &Path) -> Peers {
    let (sink, connector_sink) = sinks(servers, docs, dir).await;
    let capture = crate::capture::capture(servers, docs, dir).await;
    eprintln!("peers: the target's ceiling…");
    let ceiling = crate::ceiling(servers, docs).await;
    Peers { ceiling, sink, connector_sink, capture }
}

pub fn peers_report(p: &Peers) -> String {
    let row = |stage: &str, r: &Run| {
        format!(
            "| {stage} | {} | {:.0} | {:.1} s | {:.1} | {} |\n",
            r.tool,
            r.rate(),
            r.seconds,
            r.cpu_per_million(),
            mib(r.peak_rss)
        )
    };
    let versus = |what: &str, ours: &Run, peer: &Run, rate_goal: f64, cpu_goal: f64| {
        let rate = ours.rate() / peer.rate();
        let cpu = ours.cpu_per_million() / peer.cpu_per_million();
        format!(
            "- {what}: {rate:.2}× {}'s docs/s (goal ≥ {rate_goal}×: {}) at {cpu:.2}× its CPU per document (goal ≤ {cpu_goal:.2}×: {}).\n",
            peer.tool,
            if rate >= rate_goal { "met" } else { "not met" },
            if cpu <= cpu_goal { "met" } else { "not met" },
        )
    };
    format!(
        "\n### Peers side by side: {} documents, same servers\n\n\
         | stage | tool | docs/s | time (first to last document) | CPU s per 1M documents | peak RSS |\n\
         |---|---|---|---|---|---|\n{}{}{}{}\n\
         The target's ceiling in the same run (the same documents bulk-upserted straight into it, \
         1,000 per unordered command, four in flight, `w: majority`): {:.0} docs/s; sink-writer \
         reaches {:.0}% of it, the Connector {:.0}%.\n\n{}{}{}",
        p.sink.docs,
        row("apply a backlog (4 partitions)", &p.sink),
        row("apply a backlog (4 partitions)", &p.connector_sink),
        row("capture a backlog of inserts", &p.capture.source),
        row("capture a backlog of inserts", &p.capture.debezium),
        p.ceiling,
        100.0 * p.sink.rate() / p.ceiling,
        100.0 * p.connector_sink.rate() / p.ceiling,
        versus("sink-writer", &p.sink, &p.connector_sink, 2.0, 0.5),
        versus("cdc-source", &p.capture.source, &p.capture.debezium, 1.0, 1.0 / 3.0),
        crate::capture::capture_report(&p.capture),
    )
}
