//! `make bench`: the seed's performance test on this machine, with both services running as
//! release processes against the loopback servers. `bench [DOCS]` (default 1,000,000).
//!
//! 1. burst, 1 and 4 partitions: DOCS documents inserted at full speed while the pipeline runs;
//! 2. ceiling: the same documents bulk-written straight into the target;
//! 3. steady: BENCH_RATE docs/s (default 5,000) for BENCH_SECONDS (default 30): latency;
//! 4. cross-region: the 4-partition burst with 35 ms ± 5 ms each way on sink-writer ↔ Kafka;
//! 5. memory: 64 KiB documents, the sink catching up a backlog, peak RSS against the budgets;
//! 6. initial sync: DOCS documents in one collection copied (in `_id` ranges) and applied;
//! 7. peers: the MongoDB Kafka Connector sink and Debezium's source connector on the same
//!    documents (see `peers.rs`);
//! 8. modes: sink-writer's `exactly_once` and `idempotent` apply modes on one backlog and at the
//!    steady rate (see `modes.rs`);
//! 9. wire: the bytes per document that cross the region boundary, ours and Debezium's, on the
//!    bench's documents and a realistic mix (at most 200,000 per run; see `wire.rs`).
//!
//! The report opens with the five goals of issue 29 in one table (`goals.rs`), each taken from
//! the scenarios of the same run.
//!
//! `BENCH_ONLY=burst|steady|memory|initial-sync|peers|capture|modes|wire` runs one scenario;
//! `BENCH_ONLY=transforms` (not in the full run) the 4-partition burst without and with a typical
//! `[transforms]` rule set, for cdc-source's CPU per event (see `transforms.rs`);
//! `BENCH_ONLY=capture` the capture step of the peers scenario alone (cdc-source and Debezium on
//! a backlog, each beside a bare change-stream reader; see `capture.rs`).
//! Prints a markdown report (also written to target/bench/report.md) and plots to docs/bench/.

mod capture;
mod goals;
mod initial_sync;
mod memory;
mod modes;
mod peers;
mod pipeline;
mod transforms;
mod wire;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bson::{doc, Document};
use e2e::bench::{self, mib, percentile, ProcStats};
use e2e::toxiproxy::Toxiproxy;
use futures::StreamExt;
use test_support::{services, unique, workspace_root, Services};

use initial_sync::{initial_sync, initial_sync_report};
use memory::{memory, memory_report};
use modes::{modes, modes_report};
use peers::{peers, peers_report};
use pipeline::{document, measure, warm_up, Pipeline};

const SEED_RATE_1: f64 = 600.0;
const SEED_RATE_4: f64 = 1_400.0;
/// Documents per run of the wire scenario in the full run (each of its ten runs inserts them).
const WIRE_DOCS: i64 = 200_000;
/// Under a burst, latency is sampled on every 50th document (see e2e::bench).
const BURST_SAMPLE: i64 = 50;

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
pub(crate) async fn ceiling(servers: &Services, docs: i64) -> f64 {
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
/// CPU seconds over a run as microseconds per document.
fn micros_per_doc(cpu_seconds: f64, docs: i64) -> f64 {
    cpu_seconds * 1e6 / docs as f64
}

pub(crate) fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
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

    if std::env::var("BENCH_ONLY").as_deref() == Ok("initial-sync") {
        print!("{}", initial_sync_report(&initial_sync(&servers, docs, &dir).await));
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("modes") {
        print!("{}", modes_report(&modes(&servers, docs, steady_rate, steady_seconds, &dir).await));
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("transforms") {
        print!("{}", transforms::transforms_report(&transforms::transforms(&servers, docs, &dir).await));
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("wire") {
        print!("{}", wire::wire_report(&wire::wire(&servers, docs, &dir).await));
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("capture") {
        print!("{}", capture::capture_report(&capture::capture(&servers, docs, &dir).await));
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("peers") {
        let p = peers(&servers, docs, &dir).await;
        print!("{}", peers_report(&p));
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("burst") {
        // One 4-partition burst and its CPU per document (the quick loop for profiling), then
        // the target's ceiling on the same documents.
        let b = burst(&servers, docs, 4, &kafka, "burst, 4 partitions", &dir).await;
        let raw = ceiling(&servers, docs).await;
        println!(
            "{}: {:.0} docs/s end to end, {:.0}% of the ceiling ({raw:.0} upserts/s); cdc-source {:.1} CPU s ({:.1} µs per event), sink-writer {:.1} CPU s ({:.1} µs per document)",
            b.label,
            b.e2e_rate,
            100.0 * b.e2e_rate / raw,
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
    let sync = initial_sync(&servers, docs, &dir).await;
    report.push_str(&initial_sync_report(&sync));
    let peer_runs = peers(&servers, docs, &dir).await;
    report.push_str(&peers_report(&peer_runs));
    let mode_runs = modes(&servers, docs, steady_rate, steady_seconds, &dir).await;
    report.push_str(&modes_report(&mode_runs));
    let wire_runs = wire::wire(&servers, docs.min(WIRE_DOCS), &dir).await;
    report
        .push_str(&format!("\n### Bytes across the region boundary per document\n\n{}", wire::wire_report(&wire_runs)));
    let goals = goals::goals(&goals::Measured {
        modes: &mode_runs,
        peers: &peer_runs,
        initial_sync: &sync,
        wire: &wire_runs,
        burst_cpu: [micros_per_doc(four.source.cpu_seconds, docs), micros_per_doc(four.sink.cpu_seconds, docs)],
        steady: [steady_p[0], steady_p[2]],
    });
    let report = format!("{}\n{report}", goals::goals_report(&goals));
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
