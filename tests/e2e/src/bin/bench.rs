//! `make bench`: the seed's performance test on this machine, with both services running as
//! release processes against the loopback servers. `bench [DOCS]` (default 1,000,000).
//!
//! 1. burst, 1 and 4 partitions: DOCS documents inserted at full speed while the pipeline runs;
//! 2. ceiling: the same documents bulk-written straight into the target;
//! 3. steady: BENCH_RATE docs/s (default 5,000) for BENCH_SECONDS (default 30): latency;
//! 4. cross-region: the 4-partition burst with 35 ms ± 5 ms each way on sink-writer ↔ Kafka.
//!
//! Prints a markdown report (also written to target/bench/report.md) and plots to docs/bench/.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bson::{doc, DateTime, Document};
use e2e::bench::{self, mib, now_ms, percentile, proc_stats, Applied, ProcStats, TargetWatcher};
use e2e::process::Proc;
use e2e::toxiproxy::Toxiproxy;
use e2e::{binary, free_addr};
use futures::StreamExt;
use test_support::{http_get, services, unique, workspace_root, Services};

const PAD: usize = 240;
const SEED_RATE_1: f64 = 600.0;
const SEED_RATE_4: f64 = 1_400.0;
/// Under a burst, latency is sampled on every 50th document (see e2e::bench).
const BURST_SAMPLE: i64 = 50;

fn document(i: i64) -> Document {
    doc! {"_id": i, "n": i, "name": format!("item-{i}"), "pad": "x".repeat(PAD), "ts": DateTime::now()}
}

/// Both services as processes for one run, on private names.
struct Pipeline {
    name: String,
    source: Proc,
    sink: Proc,
    source_http: std::net::SocketAddr,
    sink_http: std::net::SocketAddr,
    dir: PathBuf,
}

async fn ready(addr: std::net::SocketAddr, dir: &std::path::Path) {
    if tokio::time::timeout(Duration::from_secs(61), test_support::wait_ready(addr)).await.is_err() {
        panic!("a service did not become ready: see {}", dir.display());
    }
}

impl Pipeline {
    async fn start(servers: &Services, partitions: i32, sink_kafka: &str, dir: &std::path::Path) -> Pipeline {
        Self::start_with(servers, partitions, sink_kafka, dir, true).await
    }

    /// The source, and the sink unless `with_sink` is false (then [`Pipeline::start_sink`]).
    async fn start_with(
        servers: &Services,
        partitions: i32,
        sink_kafka: &str,
        dir: &std::path::Path,
        with_sink: bool,
    ) -> Pipeline {
        let name = unique("bench");
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
            ("CAPTURE__BATCH_SIZE", "5000".into()),
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
        let sink = Proc::new("sink-writer", binary("sink-writer"), vec![], sink_env, dir);
        source.start();
        ready(source_http, dir).await;
        let mut p = Pipeline { name, source, sink, source_http, sink_http, dir: dir.to_path_buf() };
        if with_sink {
            p.start_sink().await;
        }
        p
    }

    async fn start_sink(&mut self) {
        self.sink.start();
        ready(self.sink_http, &self.dir).await;
    }

    fn stats(&self) -> (ProcStats, ProcStats) {
        (proc_stats(self.source.pid().unwrap_or(0)), proc_stats(self.sink.pid().unwrap_or(0)))
    }

    async fn stop(mut self, servers: &Services) {
        self.sink.stop();
        self.source.stop();
        for uri in [&servers.mongo_source_uri, &servers.mongo_target_uri] {
            let client = test_support::mongo(uri).await;
            let _ = client.database(&self.name).drop().await;
            let _ = client.database(&format!("{}_meta", self.name)).drop().await;
        }
    }
}

struct Burst {
    label: String,
    insert_rate: f64,
    e2e_rate: f64,
    drain: Duration,
    latency: [i64; 3],
    source: ProcStats,
    sink: ProcStats,
    series: Vec<(u64, f64)>,
}

/// Inserts `docs` at `rate` per second (0 = full speed), 1,000 per `insert_many`, four in flight.
async fn insert(coll: mongodb::Collection<Document>, docs: i64, rate: u64) -> Duration {
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

/// Runs inserts while watching the target, with a progress line; returns what the target saw.
/// Replicates one document of `items` there and back (inserted, then deleted), so the
/// collection's topic exists and the sink reads it before latency is measured: a sink learns
/// of a new topic at its next topic refresh (5 s), which would otherwise count as latency.
async fn warm_up(p: &Pipeline, servers: &Services) {
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

async fn measure(
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

async fn burst(
    servers: &Services,
    docs: i64,
    partitions: i32,
    sink_kafka: &str,
    label: &str,
    dir: &std::path::Path,
) -> Burst {
    let p = Pipeline::start(servers, partitions, sink_kafka, dir).await;
    let (insert_time, _, applied, start_ms, source, sink) = measure(&p, servers, label, docs, 0, BURST_SAMPLE).await;
    p.stop(servers).await;
    let last = applied.iter().map(|a| a.at_ms).max().unwrap_or(start_ms);
    let e2e = Duration::from_millis((last - start_ms).max(1) as u64);
    let mut latencies: Vec<i64> = applied.iter().map(|a| a.latency_ms).collect();
    Burst {
        label: label.to_string(),
        insert_rate: docs as f64 / insert_time.as_secs_f64(),
        e2e_rate: docs as f64 / e2e.as_secs_f64(),
        drain: e2e.saturating_sub(insert_time),
        latency: [percentile(&mut latencies, 0.5), percentile(&mut latencies, 0.95), percentile(&mut latencies, 0.99)],
        source,
        sink,
        series: bench::per_second(&applied, start_ms, BURST_SAMPLE as u64),
    }
}

/// The same documents bulk-written straight into the target: 1,000 per unordered upsert
/// command, four in flight, `w: majority` (what sink-writer sends, without Kafka in between).
async fn ceiling(servers: &Services, docs: i64) -> f64 {
    let db = test_support::mongo(&servers.mongo_target_uri).await.database(&unique("ceiling"));
    let started = Instant::now();
    futures::stream::iter((0..docs).step_by(1000))
        .map(|from| {
            let db = db.clone();
            async move {
                let updates: Vec<Document> = (from..(from + 1000).min(docs))
                    .map(|i| doc! {"q": {"_id": i}, "u": document(i), "upsert": true})
                    .collect();
                db.run_command(
                    doc! {"update": "items", "updates": updates, "ordered": false, "writeConcern": {"w": "majority"}},
                )
                .await
                .expect("bulk upsert");
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<()>>()
        .await;
    let rate = docs as f64 / started.elapsed().as_secs_f64();
    let _ = db.drop().await;
    rate
}

/// What the memory scenario measured.
struct Memory {
    documents: i64,
    collections: usize,
    partitions: i32,
    catch_up: Duration,
    source_peak: u64,
    sink_peak: u64,
}

/// Memory under load: 64 KiB documents into ten collections of four partitions (40 partitions),
/// captured while the sink is stopped, then the sink catches the backlog up. Peak RSS of both.
async fn memory(servers: &Services, docs_per_collection: i64, dir: &std::path::Path) -> Memory {
    const COLLECTIONS: usize = 10;
    const PARTITIONS: i32 = 4;
    let mut p = Pipeline::start_with(servers, PARTITIONS, &servers.kafka_bootstrap, dir, false).await;
    let source_db = test_support::mongo(&servers.mongo_source_uri).await.database(&p.name);
    let target_db = test_support::mongo(&servers.mongo_target_uri).await.database(&p.name);
    // Text that compresses little, as real documents do: 64 KiB of one letter shrinks ~250× under
    // lz4, and the consumer's fetch limits count compressed bytes.
    let big = |i: i64| doc! {"_id": i, "blob": e2e::workload::incompressible(i, 64 * 1024), "n": i};
    let total = docs_per_collection * COLLECTIONS as i64;
    let mut source_peak = 0;
    for c in 0..COLLECTIONS {
        let coll = source_db.collection::<Document>(&format!("big{c}"));
        for from in (0..docs_per_collection).step_by(100) {
            coll.insert_many((from..(from + 100).min(docs_per_collection)).map(big)).await.expect("insert");
            source_peak = source_peak.max(proc_stats(p.source.pid().unwrap_or(0)).peak_rss_bytes);
        }
    }
    // The source has everything on Kafka once its event count stops short of nothing.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let body = http_get(p.source_http, "/metrics").await.map(|(_, b)| b).unwrap_or_default();
        // Inserts captured, summed over the namespaces (the metric is labelled by namespace and op).
        let events: f64 = body
            .lines()
            .filter(|line| line.starts_with("cdc_source_events_total{") && line.contains("op=\"c\""))
            .map(|line| test_support::metric(line, "cdc_source_events_total{"))
            .sum();
        source_peak = source_peak.max(proc_stats(p.source.pid().unwrap_or(0)).peak_rss_bytes);
        bench::progress("memory: captured", events as u64, total as u64, 0.0, "");
        if events as i64 >= total || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!();
    let started = Instant::now();
    p.start_sink().await;
    let mut applied = 0;
    while applied < total as u64 && started.elapsed() < Duration::from_secs(900) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        applied = 0;
        for c in 0..COLLECTIONS {
            applied +=
                target_db.collection::<Document>(&format!("big{c}")).estimated_document_count().await.unwrap_or(0);
        }
        let sink = proc_stats(p.sink.pid().unwrap_or(0));
        bench::progress("memory: catch-up", applied, total as u64, 0.0, &format!("sink rss {}", mib(sink.rss_bytes)));
    }
    eprintln!();
    let catch_up = started.elapsed();
    let (source, sink) = p.stats();
    p.stop(servers).await;
    Memory {
        documents: total,
        collections: COLLECTIONS,
        partitions: PARTITIONS,
        catch_up,
        source_peak: source_peak.max(source.peak_rss_bytes),
        sink_peak: sink.peak_rss_bytes,
    }
}

/// CPU seconds over a run as microseconds per document.
fn micros_per_doc(cpu_seconds: f64, docs: i64) -> f64 {
    cpu_seconds * 1e6 / docs as f64
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let docs: i64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let steady_rate: u64 = env_or("BENCH_RATE", 5_000);
    let steady_seconds: u64 = env_or("BENCH_SECONDS", 30);
    let servers = services();
    let dir: PathBuf = workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    let plots = workspace_root().join("docs/bench");
    std::fs::create_dir_all(&plots).expect("docs/bench");
    let kafka = servers.kafka_bootstrap.clone();
    let memory_docs: i64 = env_or("BENCH_MEMORY_DOCS", 800);
    if std::env::var("BENCH_ONLY").as_deref() == Ok("memory") {
        let m = memory(&servers, memory_docs, &dir).await;
        print!("{}", memory_report(&m));
        return;
    }

    if std::env::var("BENCH_ONLY").as_deref() == Ok("burst") {
        // One 4-partition burst and its CPU per document: the quick loop for profiling.
        let b = burst(&servers, docs, 4, &kafka, "burst, 4 partitions", &dir).await;
        println!(
            "{}: {:.0} docs/s end to end; cdc-source {:.1} CPU s ({:.1} µs per event), sink-writer {:.1} CPU s ({:.1} µs per document)",
            b.label,
            b.e2e_rate,
            b.source.cpu_seconds,
            micros_per_doc(b.source.cpu_seconds, docs),
            b.sink.cpu_seconds,
            micros_per_doc(b.sink.cpu_seconds, docs)
        );
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("steady") {
        // The steady run alone: latency at BENCH_RATE for BENCH_SECONDS, the quick loop for
        // latency work.
        let p = Pipeline::start(&servers, 4, &kafka, &dir).await;
        warm_up(&p, &servers).await;
        let steady_docs = (steady_rate * steady_seconds) as i64;
        let label = format!("steady {steady_rate}/s");
        let (_, total, applied, _, _, _) = measure(&p, &servers, &label, steady_docs, steady_rate, 1).await;
        p.stop(&servers).await;
        let mut latencies: Vec<i64> = applied.iter().map(|a| a.latency_ms).collect();
        let [p50, p95, p99, max] = [0.5, 0.95, 0.99, 1.0].map(|q| percentile(&mut latencies, q));
        println!(
            "{label}: {} documents in {:.1} s; latency p50 {p50} ms, p95 {p95} ms, p99 {p99} ms, max {max} ms",
            applied.len(),
            total.as_secs_f64()
        );
        return;
    }
    let one = burst(&servers, docs, 1, &kafka, "burst, 1 partition", &dir).await;
    let four = burst(&servers, docs, 4, &kafka, "burst, 4 partitions", &dir).await;
    eprintln!("ceiling: bulk upserts straight into the target…");
    let raw = ceiling(&servers, docs).await;

    // Steady rate: latency when throughput is not the point.
    let p = Pipeline::start(&servers, 4, &kafka, &dir).await;
    warm_up(&p, &servers).await;
    let steady_docs = (steady_rate * steady_seconds) as i64;
    let (_, total, applied, start_ms, steady_source, steady_sink) =
        measure(&p, &servers, &format!("steady {steady_rate}/s"), steady_docs, steady_rate, 1).await;
    p.stop(&servers).await;
    let mut steady_lat: Vec<i64> = applied.iter().map(|a| a.latency_ms).collect();
    let steady_p = [0.5, 0.95, 0.99, 1.0].map(|q| percentile(&mut steady_lat, q));
    let steady_series = bench::per_second(&applied, start_ms, 1);
    let steady_cpu = |s: &ProcStats| 100.0 * s.cpu_seconds / total.as_secs_f64();

    // Cross-region: sink-writer reaches Kafka through 35 ms ± 5 ms each way.
    let proxied = std::env::var("KAFKA_PROXIED_LISTENER").unwrap_or_else(|_| "127.0.0.1:19094".into());
    let advertised: std::net::SocketAddr =
        std::env::var("KAFKA_VIA_PROXY").unwrap_or_else(|_| "127.0.0.1:19095".into()).parse().expect("proxy addr");
    let toxiproxy = Toxiproxy::start(&dir).await;
    toxiproxy.proxy_on("kafka", advertised, &proxied).await;
    toxiproxy.latency("kafka", 35, 5).await;
    let cross = burst(&servers, docs, 4, &advertised.to_string(), "cross-region, 4 part.", &dir).await;
    drop(toxiproxy);

    let mut report = String::new();
    let line = |r: &mut String, s: String| {
        r.push_str(&s);
        r.push('\n');
    };
    line(&mut report, format!("### Burst: {docs} documents inserted at full speed while the pipeline runs\n"));
    line(&mut report, "| run | source inserts/s | end-to-end docs/s at the target | ceiling (raw bulk upserts/s) | end-to-end / ceiling | drain after the last insert | latency p50 / p95 / p99 | cdc-source CPU s (µs per event), peak RSS | sink-writer CPU s (µs per document), peak RSS |".into());
    line(&mut report, "|---|---|---|---|---|---|---|---|---|".into());
    for b in [&one, &four, &cross] {
        line(
            &mut report,
            format!(
                "| {} | {:.0} | {:.0} | {:.0} | {:.0}% | {:.1} s | {:.1} / {:.1} / {:.1} s | {:.1} s ({:.1} µs), {} | {:.1} s ({:.1} µs), {} |",
                b.label,
                b.insert_rate,
                b.e2e_rate,
                raw,
                100.0 * b.e2e_rate / raw,
                b.drain.as_secs_f64(),
                b.latency[0] as f64 / 1000.0,
                b.latency[1] as f64 / 1000.0,
                b.latency[2] as f64 / 1000.0,
                b.source.cpu_seconds,
                micros_per_doc(b.source.cpu_seconds, docs),
                mib(b.source.peak_rss_bytes),
                b.sink.cpu_seconds,
                micros_per_doc(b.sink.cpu_seconds, docs),
                mib(b.sink.peak_rss_bytes),
            ),
        );
    }
    line(&mut report, format!(
        "\nSeed pipeline (EMR Flink + MSK): {SEED_RATE_1:.0} docs/s, {SEED_RATE_4:.0} with four partitions. Here: {:.0} and {:.0} docs/s end to end ({:.0}× and {:.0}×).",
        one.e2e_rate, four.e2e_rate, one.e2e_rate / SEED_RATE_1, four.e2e_rate / SEED_RATE_4
    ));
    line(&mut report, format!(
        "Cross-region (35 ms ± 5 ms each way on sink-writer ↔ Kafka): {:.0} docs/s = {:.0}% of the local 4-partition rate.",
        cross.e2e_rate, 100.0 * cross.e2e_rate / four.e2e_rate
    ));
    line(&mut report, format!("\n### Steady {steady_rate} docs/s for {steady_seconds} s (4 partitions)\n"));
    line(&mut report, "| documents | achieved docs/s | latency p50 | p95 | p99 | max | cdc-source CPU, RSS (max while running) | sink-writer CPU, RSS (max while running) |".into());
    line(&mut report, "|---|---|---|---|---|---|---|---|".into());
    line(
        &mut report,
        format!(
            "| {} | {:.0} | {} ms | {} ms | {} ms | {} ms | {:.0}%, {} | {:.0}%, {} |",
            applied.len(),
            applied.len() as f64 / total.as_secs_f64(),
            steady_p[0],
            steady_p[1],
            steady_p[2],
            steady_p[3],
            steady_cpu(&steady_source),
            mib(steady_source.rss_bytes),
            steady_cpu(&steady_sink),
            mib(steady_sink.rss_bytes),
        ),
    );
    let m = memory(&servers, memory_docs, &dir).await;
    report.push_str(&memory_report(&m));
    print!("{report}");
    std::fs::write(dir.join("report.md"), &report).expect("report");
    let svg = bench::svg_plot(
        &format!("{docs}-document burst: documents applied per second and replication lag"),
        &[
            ("1 partition", one.series.clone()),
            ("4 partitions", four.series.clone()),
            ("4 partitions, cross-region", cross.series.clone()),
        ],
    );
    std::fs::write(plots.join("burst.svg"), svg).expect("plot");
    let svg = bench::svg_plot(
        &format!("steady {steady_rate} docs/s: applied per second and lag"),
        &[("steady", steady_series)],
    );
    std::fs::write(plots.join("steady.svg"), svg).expect("plot");
    eprintln!("bench: report in target/bench/report.md, plots in docs/bench/burst.svg and docs/bench/steady.svg");
}

fn memory_report(m: &Memory) -> String {
    let sink_budget: u64 = env_or("BENCH_SINK_WRITER__APPLY__MEMORY_BUDGET_BYTES", 320 * 1024 * 1024);
    let source_budget: u64 = env_or("BENCH_CDC_SOURCE__DELIVERY__MEMORY_BUDGET_BYTES", 224 * 1024 * 1024);
    format!(
        "\n### Memory: {} documents of 64 KiB in {} collections × {} partitions, sink catching up a backlog\n\n\
         | service | memory budget | peak RSS |\n|---|---|---|\n| cdc-source (while capturing) | {} | {} |\n\
         | sink-writer (catch-up, {:.0} s, {:.0} docs/s) | {} | {} |\n",
        m.documents,
        m.collections,
        m.partitions,
        mib(source_budget),
        mib(m.source_peak),
        m.catch_up.as_secs_f64(),
        m.documents as f64 / m.catch_up.as_secs_f64(),
        mib(sink_budget),
        mib(m.sink_peak),
    )
}
