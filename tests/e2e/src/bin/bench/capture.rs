//! Capture against the source's own limit (`BENCH_ONLY=capture`, also part of `make bench` and
//! of the peers step): DOCS inserts waiting in the source's change stream as a backlog, read
//!
//! - by a bare change-stream reader: the same driver, cdc-source's batch size, `updateLookup`
//!   and expanded events as cdc-source asks for them, doing nothing with the events;
//! - by cdc-source, restarted at the checkpoint it made just before the backlog;
//! - by Debezium's MongoDB connector, restarted at the offset it stored just before a backlog of
//!   its own (the same documents in a database of its own), with a bare reader on that backlog
//!   too.
//!
//! A backlog, not live inserts: while the inserts run, every reader keeps up with them and the
//! ratio would measure the inserts. Each tool is timed from its first event to its last, as the
//! sinks are (`peers::timed`), so start-up is left out on every side.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Document, RawDocumentBuf, Timestamp};
use e2e::interop::{self, Connect, ConnectKind};
use e2e::sink_commands::timed_write;
use futures::StreamExt;
use mongodb::options::{ChangeStreamOptions, FullDocumentType};
use rdkafka::consumer::BaseConsumer;
use test_support::{unique, Services};

use crate::peers::{counter, failed, timed, topic_records, Run, BENCH_JVM};
use crate::pipeline::{insert, Pipeline, CAPTURE_BATCH};

/// The four backlog reads.
pub struct Capture {
    /// The bare reader on cdc-source's backlog, then cdc-source on it.
    pub bare: Run,
    pub source: Run,
    /// The bare reader on Debezium's backlog, then Debezium on it.
    pub bare_debezium: Run,
    pub debezium: Run,
}

impl Capture {
    /// cdc-source's events/s against the bare reader's on the same backlog.
    pub fn source_ratio(&self) -> f64 {
        self.source.rate() / self.bare.rate()
    }

    pub fn debezium_ratio(&self) -> f64 {
        self.debezium.rate() / self.bare_debezium.rate()
    }
}

/// Inserts the warm-up document and returns the cluster time it was acknowledged at: a change
/// stream started there sees the warm-up event, then the backlog.
async fn warm_up(client: &mongodb::Client, db: &str) -> Timestamp {
    timed_write(&client.database(db), doc! {"insert": "items", "documents": [{"_id": "warm-up"}]}).await.into()
}

/// A change stream on `db` from `from`, counting events and doing nothing else with them, timed
/// until `docs` events after the warm-up one.
async fn bare_reader(client: &mongodb::Client, db: &str, from: Timestamp, docs: u64) -> Run {
    let counted = Arc::new(AtomicU64::new(0));
    let mut options = ChangeStreamOptions::default();
    options.full_document = Some(FullDocumentType::UpdateLookup);
    options.show_expanded_events = Some(true);
    options.batch_size = Some(CAPTURE_BATCH);
    options.max_await_time = Some(Duration::from_millis(500));
    options.start_at_operation_time = Some(from);
    let database = client.database(db);
    let reading = {
        let counted = counted.clone();
        tokio::spawn(async move {
            let stream = database.watch().with_options(options).await.expect("a change stream");
            let mut stream = stream.with_type::<RawDocumentBuf>();
            while let Some(event) = stream.next().await {
                event.expect("a change event");
                counted.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let run = timed("bare change stream", docs, std::process::id(), None, || async {
        Ok(counted.load(Ordering::Relaxed).saturating_sub(1))
    })
    .await;
    reading.abort();
    run
}

/// cdc-source on a backlog: checkpointed after the warm-up, stopped, the backlog inserted, the
/// bare reader over it, then cdc-source started again.
async fn ours(servers: &Services, client: &mongodb::Client, docs: i64, dir: &Path) -> (Run, Run) {
    let mut p = Pipeline::start_with(unique("bench"), servers, 4, &servers.kafka_bootstrap, dir, false).await;
    let from = warm_up(client, &p.name).await;
    test_support::eventually("cdc-source's warm-up event", Duration::from_secs(60), || async {
        (p.inserts_on_kafka().await >= 1).then_some(())
    })
    .await;
    p.source.stop();
    insert(client.database(&p.name).collection::<Document>("items"), docs, 0).await;
    let bare = bare_reader(client, &p.name, from, docs as u64).await;
    p.start_source().await;
    let pid = p.source.pid().expect("cdc-source runs");
    let source = timed("cdc-source", docs as u64, pid, None, || async { Ok(p.inserts_on_kafka().await) }).await;
    p.stop(servers).await;
    (bare, source)
}

/// Debezium's connector on database `db`, streaming: started with `worker_extra` worker
/// properties, its warm-up event on its topic. Returns the worker, the topic, a client that counts
/// its records and the warm-up's operation time.
pub(crate) struct Debezium {
    connect: Option<Connect>,
    pub topic: String,
    consumer: BaseConsumer,
    connectors: [(&'static str, String); 1],
    scratch: PathBuf,
    pub from: Timestamp,
}

impl Debezium {
    pub(crate) async fn start(
        servers: &Services,
        client: &mongodb::Client,
        db: &str,
        dir: &Path,
        worker_extra: &str,
    ) -> Self {
        let connectors = [("dbz", interop::debezium_properties(db, false))];
        let scratch = dir.join(format!("peers-{db}"));
        std::fs::create_dir_all(&scratch).expect("scratch dir");
        let connect = Connect::start_with(ConnectKind::Debezium, &scratch, &connectors, worker_extra, BENCH_JVM).await;
        let consumer = counter(&servers.kafka_bootstrap, &format!("{db}-count"));
        let topic = format!("{db}.{db}.items");
        // The connector streams once its snapshot (of an empty database) ended: the warm-up
        // document's event says it does.
        let from = warm_up(client, db).await;
        let d = Debezium { connect: Some(connect), topic, consumer, connectors, scratch, from };
        let deadline = Instant::now() + Duration::from_secs(180);
        while d.records().await.unwrap_or_else(|why| panic!("Debezium: {why}")) < 1 {
            assert!(Instant::now() < deadline, "Debezium's warm-up event within 180 s (in {})", d.scratch.display());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        d
    }

    /// The records on its topic, or why the connector failed.
    pub(crate) async fn records(&self) -> Result<u64, String> {
        if let Some(connect) = &self.connect {
            failed(connect, "dbz").await?;
        }
        Ok(tokio::task::block_in_place(|| topic_records(&self.consumer, &self.topic)))
    }

    /// The worker's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.connect.as_ref().and_then(Connect::pid).expect("the worker runs")
    }

    /// Stops the worker (it stores its offsets as it stops).
    pub(crate) async fn stop(&mut self) {
        if let Some(connect) = self.connect.take() {
            connect.stop().await;
        }
    }

    /// Starts the worker again: it resumes at its stored offsets.
    async fn restart(&mut self) {
        self.stop().await;
        let connect = Connect::start_with(ConnectKind::Debezium, &self.scratch, &self.connectors, "", BENCH_JVM).await;
        self.connect = Some(connect);
    }
}

/// Debezium on a backlog of its own: its offset stored after the warm-up, the worker stopped,
/// the backlog inserted, the bare reader over it, then the worker started again.
async fn debezium(servers: &Services, client: &mongodb::Client, docs: i64, dir: &Path) -> (Run, Run) {
    let db = unique("peers_dbz");
    let mut d = Debezium::start(servers, client, &db, dir, "").await;
    // The worker stores offsets every second, and once more when it stops.
    tokio::time::sleep(Duration::from_secs(3)).await;
    d.stop().await;
    insert(client.database(&db).collection::<Document>("items"), docs, 0).await;
    let bare = bare_reader(client, &db, d.from, docs as u64).await;
    d.restart().await;
    let debezium = timed("Debezium MongoDB connector", docs as u64, d.pid(), None, || async {
        Ok(d.records().await?.saturating_sub(1))
    })
    .await;
    d.stop().await;
    let _ = client.database(&db).drop().await;
    (bare, debezium)
}

pub async fn capture(servers: &Services, docs: i64, dir: &Path) -> Capture {
    let client = test_support::mongo(&servers.mongo_source_uri).await;
    let (bare, source) = ours(servers, &client, docs, dir).await;
    let (bare_debezium, debezium) = debezium(servers, &client, docs, dir).await;
    Capture { bare, source, bare_debezium, debezium }
}

pub fn capture_report(c: &Capture) -> String {
    let row = |r: &Run, bare: &Run| {
        format!(
            "| {} | {:.0} | {:.0}% | {:.1} s | {:.1} | {} |\n",
            r.tool,
            r.rate(),
            100.0 * r.rate() / bare.rate(),
            r.seconds,
            r.cpu_per_million(),
            e2e::bench::mib(r.peak_rss)
        )
    };
    format!(
        "\n### Capture against the source's change stream: a backlog of {} inserts\n\n\
         | reader | events/s | of the bare reader on the same backlog | time (first to last event) | CPU s per 1M events | peak RSS |\n\
         |---|---|---|---|---|---|\n{}{}{}{}\n\
         The bare reader's CPU and RSS are the bench process's own.\n",
        c.source.docs,
        row(&c.bare, &c.bare),
        row(&c.source, &c.bare),
        row(&c.bare_debezium, &c.bare_debezium),
        row(&c.debezium, &c.bare_debezium),
    )
}
