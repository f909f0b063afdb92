//! Both services as release processes on private names, and the inserts and watching every
//! scenario shares.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bson::{doc, DateTime, Document};
use e2e::bench::{self, mib, now_ms, proc_stats, Applied, ProcStats, TargetWatcher};
use e2e::process::Proc;
use e2e::{binary, free_addr};
use futures::StreamExt;
use test_support::{http_get, unique, Services};

pub const PAD: usize = 240;
/// cdc-source's change-stream batch size in every run (and the bare reader's).
pub const CAPTURE_BATCH: u32 = 5000;

pub fn document(i: i64) -> Document {
    doc! {"_id": i, "n": i, "name": format!("item-{i}"), "pad": "x".repeat(PAD), "ts": DateTime::now()}
}

/// Both services as processes for one run, on private names.
pub struct Pipeline {
    pub name: String,
    pub source: Proc,
    pub sink: Proc,
    pub source_http: std::net::SocketAddr,
    pub sink_http: std::net::SocketAddr,
    pub dir: PathBuf,
    /// sink-writer's environment, for a sink started again with other settings.
    sink_env: Vec<(String, String)>,
}

async fn ready(addr: std::net::SocketAddr, dir: &Path) {
    if tokio::time::timeout(Duration::from_secs(61), test_support::wait_ready(addr)).await.is_err() {
        panic!("a service did not become ready: see {}", dir.display());
    }
}

impl Pipeline {
    pub async fn start(servers: &Services, partitions: i32, sink_kafka: &str, dir: &Path) -> Pipeline {
        Self::start_with(unique("bench"), servers, partitions, sink_kafka, dir, true).await
    }

    /// The source capturing database `name` (into topics of that prefix), and the sink unless
    /// `with_sink` is false (then [`Pipeline::start_sink`]).
    pub async fn start_with(
        name: String,
        servers: &Services,
        partitions: i32,
        sink_kafka: &str,
        dir: &Path,
        with_sink: bool,
    ) -> Pipeline {
        let (source_http, sink_http) = (free_addr(), free_addr());
        // Extra settings for experiments: BENCH_CDC_SOURCE__X=… and BENCH_SINK_WRITER__X=… pass
        // CDC_SOURCE__X / SINK_WRITER__X to the services.
        let extra = |prefix: &str| -> Vec<(String, String)> {
            std::env::vars()
                .filter_map(|(k, v)| {
                    k.strip_prefix("BENCH_").filter(|k| k.starts_with(prefix)).map(|k| (k.to_string(), v))
                })
                .collect()
        };
        let source_env: Vec<(String, String)> = [
            ("HTTP__LISTEN_ADDR", source_http.to_string()),
            ("MONGO__URI", servers.mongo_source_uri.clone()),
            ("KAFKA__BOOTSTRAP_SERVERS", servers.kafka_bootstrap.clone()),
            ("CAPTURE__NAME", name.clone()),
            ("CAPTURE__SCOPE", "database".into()),
            ("CAPTURE__DATABASE", name.clone()),
            ("CAPTURE__BATCH_SIZE", CAPTURE_BATCH.to_string()),
            ("TOPICS__PREFIX", name.clone()),
            ("TOPICS__PARTITIONS", partitions.to_string()),
            ("DELIVERY__BATCH_MAX_EVENTS", "20000".into()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("CDC_SOURCE__{k}"), v))
        .chain(extra("CDC_SOURCE__"))
        .collect();
        let sink_env: Vec<(String, String)> = [
            ("HTTP__LISTEN_ADDR", sink_http.to_string()),
            ("MONGO__URI", servers.mongo_target_uri.clone()),
            ("KAFKA__BOOTSTRAP_SERVERS", sink_kafka.to_string()),
            ("KAFKA__OPTIONS__TOPIC_METADATA_REFRESH_INTERVAL_MS", "1000".into()),
            ("CONSUME__TOPICS", format!("^{name}\\..*")),
            ("CONSUME__GROUP_ID", format!("{name}-sink")),
            ("CONSUME__DEAD_LETTER_TOPIC", format!("{name}-dlq")),
            ("APPLY__METADATA_DATABASE", format!("{name}_meta")),
        ]
        .into_iter()
        .map(|(k, v)| (format!("SINK_WRITER__{k}"), v))
        .chain(extra("SINK_WRITER__"))
        .collect();
        let mut source = Proc::new("cdc-source", binary("cdc-source"), vec![], source_env, dir);
        let sink = Proc::new("sink-writer", binary("sink-writer"), vec![], sink_env.clone(), dir);
        source.start();
        ready(source_http, dir).await;
        let mut p = Pipeline { name, source, sink, source_http, sink_http, dir: dir.to_path_buf(), sink_env };
        if with_sink {
            p.start_sink().await;
        }
        p
    }

    /// Starts cdc-source again after a stop: it resumes at its checkpoint.
    pub async fn start_source(&mut self) {
        self.source.start();
        ready(self.source_http, &self.dir).await;
    }

    pub async fn start_sink(&mut self) {
        self.sink.start();
        ready(self.sink_http, &self.dir).await;
    }

    /// Stops sink-writer and starts a new one with `settings` (`SINK_WRITER__` keys without the
    /// prefix) over the pipeline's own.
    pub async fn restart_sink_with(&mut self, settings: &[(&str, String)]) {
        self.sink.stop();
        let mut env = self.sink_env.clone();
        for (key, value) in settings {
            let key = format!("SINK_WRITER__{key}");
            env.retain(|(k, _)| *k != key);
            env.push((key, value.clone()));
        }
        self.sink = Proc::new("sink-writer", binary("sink-writer"), vec![], env, &self.dir);
        self.start_sink().await;
    }

    /// Inserts cdc-source has made durable in Kafka, summed over namespaces.
    pub async fn inserts_on_kafka(&self) -> u64 {
        self.events_on_kafka("c").await
    }

    /// Events of one kind (`c` insert, `r` snapshot read, …) cdc-source has made durable in
    /// Kafka, summed over namespaces.
    pub async fn events_on_kafka(&self, op: &str) -> u64 {
        let body = http_get(self.source_http, "/metrics").await.map(|(_, b)| b).unwrap_or_default();
        let label = format!("op=\"{op}\"");
        let events: f64 = body
            .lines()
            .filter(|line| line.starts_with("cdc_source_events_total{") && line.contains(&label))
            .map(|line| test_support::metric(line, "cdc_source_events_total{"))
            .sum();
        events as u64
    }

    pub fn stats(&self) -> (ProcStats, ProcStats) {
        (proc_stats(self.source.pid().unwrap_or(0)), proc_stats(self.sink.pid().unwrap_or(0)))
    }

    pub async fn stop(mut self, servers: &Services) {
        self.sink.stop();
        self.source.stop();
        for uri in [&servers.mongo_source_uri, &servers.mongo_target_uri] {
            let client = test_support::mongo(uri).await;
            let _ = client.database(&self.name).drop().await;
            let _ = client.database(&format!("{}_meta", self.name)).drop().await;
        }
    }
}

/// Inserts `docs` at `rate` per second (0 = full speed), 1,000 per `insert_many`, four in flight.
pub async fn insert(coll: mongodb::Collection<Document>, docs: i64, rate: u64) -> Duration {
    let started = Instant::now();
    let batch = if rate == 0 { 1000 } else { (rate as i64 / 20).clamp(1, 1000) };
    futures::stream::iter((0..docs).step_by(batch as usize))
        .map(|from| {
            let coll = coll.clone();
            async move {
                if rate > 0 {
                    let due = Duration::from_secs_f64(from as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
                let batch: Vec<Document> = (from..(from + batch).min(docs)).map(document).collect();
                coll.insert_many(batch).ordered(false).await.expect("insert");
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<()>>()
        .await;
    started.elapsed()
}

/// Replicates one document of `items` there and back (inserted, then deleted), so the
/// collection's topic exists and the sink reads it before latency is measured: a sink learns
/// of a new topic at its next topic refresh (5 s), which would otherwise count as latency.
pub async fn warm_up(p: &Pipeline, servers: &Services) {
    let source = test_support::mongo(&servers.mongo_source_uri).await.database(&p.name).collection::<Document>("items");
    let target = test_support::mongo(&servers.mongo_target_uri).await.database(&p.name).collection::<Document>("items");
    source.insert_one(doc! {"_id": "warm-up"}).await.expect("warm-up insert");
    test_support::eventually("the warm-up document", Duration::from_secs(60), || async {
        target.find_one(doc! {"_id": "warm-up"}).await.ok().flatten()
    })
    .await;
    source.delete_one(doc! {"_id": "warm-up"}).await.expect("warm-up delete");
    test_support::eventually("the warm-up delete", Duration::from_secs(60), || async {
        target.find_one(doc! {"_id": "warm-up"}).await.ok().and_then(|found| found.is_none().then_some(()))
    })
    .await;
}

/// Runs inserts while watching the target, with a progress line; returns what the target saw.
pub async fn measure(
    p: &Pipeline,
    servers: &Services,
    label: &str,
    docs: i64,
    rate: u64,
    sample_every: i64,
) -> (Duration, Duration, Vec<Applied>, i64, ProcStats, ProcStats) {
    let source = test_support::mongo(&servers.mongo_source_uri).await.database(&p.name).collection::<Document>("items");
    let target = test_support::mongo(&servers.mongo_target_uri).await.database(&p.name).collection::<Document>("items");
    let watcher = TargetWatcher::start(target.clone(), sample_every).await;
    let start_ms = now_ms();
    let started = Instant::now();
    let inserting = tokio::spawn(insert(source, docs, rate));
    let mut inserted_after = None;
    let mut steady_rss = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut applied = 0;
    while applied < docs as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if inserted_after.is_none() && inserting.is_finished() {
            inserted_after = Some(started.elapsed());
        }
        let (s, k) = p.stats();
        steady_rss = (steady_rss.0.max(s.rss_bytes), steady_rss.1.max(k.rss_bytes));
        applied = target.estimated_document_count().await.unwrap_or(applied);
        let rate_now = applied as f64 / started.elapsed().as_secs_f64();
        bench::progress(
            label,
            applied,
            docs as u64,
            rate_now,
            &format!("rss {} / {}", mib(s.rss_bytes), mib(k.rss_bytes)),
        );
    }
    eprintln!();
    let insert_time = match inserted_after {
        Some(t) => t,
        None => {
            let _ = inserting.await;
            started.elapsed()
        }
    };
    let total = started.elapsed();
    let (source_stats, sink_stats) = p.stats();
    let source_stats = ProcStats { rss_bytes: steady_rss.0, ..source_stats };
    let sink_stats = ProcStats { rss_bytes: steady_rss.1, ..sink_stats };
    // The last sampled documents may still be on their way through the watcher.
    let expected = (docs as u64).div_ceil(sample_every as u64);
    let settle = Instant::now() + Duration::from_secs(5);
    while watcher.applied() < expected && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let applied = watcher.finish();
    (insert_time, total, applied, start_ms, source_stats, sink_stats)
}
