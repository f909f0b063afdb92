//! The two apply modes side by side, on the same machine, documents and moment (what exactly-once
//! costs): one backlog of DOCS documents on Kafka (4 partitions) applied by sink-writer in each
//! mode, its docs/s against the target's raw bulk-upsert ceiling measured right after, and the
//! latency at a steady BENCH_RATE docs/s in each mode.

use std::path::Path;
use std::time::Duration;

use bson::Document;
use e2e::bench::{self, percentile};
use test_support::{unique, Services};

use crate::peers::{timed, Run};
use crate::pipeline::{insert, measure, warm_up, Pipeline};

/// The modes compared, as `apply.mode` spells them.
const MODES: [&str; 2] = ["exactly_once", "idempotent"];

/// One mode's runs.
pub struct ModeRun {
    pub mode: &'static str,
    /// The backlog applied.
    pub backlog: Run,
    /// Latency at the steady rate: p50, p95, p99, max (ms).
    pub steady: [i64; 4],
}

/// Both modes, and the ceiling measured after the backlogs.
pub struct Modes {
    pub runs: Vec<ModeRun>,
    pub ceiling: f64,
    pub steady_rate: u64,
}

pub async fn modes(servers: &Services, docs: i64, steady_rate: u64, steady_seconds: u64, dir: &Path) -> Modes {
    let mut p = Pipeline::start_with(unique("bench"), servers, 4, &servers.kafka_bootstrap, dir, false).await;
    let source = test_support::mongo(&servers.mongo_source_uri).await.database(&p.name).collection::<Document>("items");
    insert(source, docs, 0).await;
    while p.inserts_on_kafka().await < docs as u64 {
        bench::progress("modes: backlog on Kafka", p.inserts_on_kafka().await, docs as u64, 0.0, "");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!();
    p.source.stop();
    let target = test_support::mongo(&servers.mongo_target_uri).await;
    let mut backlogs = Vec::new();
    for mode in MODES {
        // A group and bookkeeping of its own: each mode reads the whole backlog.
        let settings = [
            ("APPLY__MODE", mode.to_string()),
            ("CONSUME__GROUP_ID", format!("{}-{mode}", p.name)),
            ("APPLY__METADATA_DATABASE", format!("{}_meta_{mode}", p.name)),
        ];
        p.restart_sink_with(&settings).await;
        let items = target.database(&p.name).collection::<Document>("items");
        let pid = p.sink.pid().expect("sink-writer runs");
        let label: &'static str =
            if mode == MODES[0] { "sink-writer, exactly_once" } else { "sink-writer, idempotent" };
        let run = timed(label, docs as u64, pid, None, || async {
            items.estimated_document_count().await.map_err(|e| e.to_string())
        })
        .await;
        p.sink.stop();
        let _ = target.database(&p.name).drop().await;
        let _ = target.database(&format!("{}_meta_{mode}", p.name)).drop().await;
        backlogs.push((mode, run));
    }
    p.stop(servers).await;
    let ceiling = crate::ceiling(servers, docs).await;
    let mut runs = Vec::new();
    for (mode, backlog) in backlogs {
        let mut p = Pipeline::start(servers, 4, &servers.kafka_bootstrap, dir).await;
        p.restart_sink_with(&[("APPLY__MODE", mode.to_string())]).await;
        warm_up(&p, servers).await;
        let label = format!("steady {steady_rate}/s, {mode}");
        let (_, _, applied, _, _, _) =
            measure(&p, servers, &label, (steady_rate * steady_seconds) as i64, steady_rate, 1).await;
        p.stop(servers).await;
        let mut latencies: Vec<i64> = applied.iter().map(|a| a.latency_ms).collect();
        let steady = [0.5, 0.95, 0.99, 1.0].map(|q| percentile(&mut latencies, q));
        runs.push(ModeRun { mode, backlog, steady });
    }
    Modes { runs, ceiling, steady_rate }
}

pub fn modes_report(m: &Modes) -> String {
    let mut report = format!(
        "\n### Apply modes side by side: a backlog on 4 partitions, then {} docs/s steady\n\n\
         | apply.mode | backlog docs/s | of the ceiling ({:.0} upserts/s) | sink-writer CPU µs per document | peak RSS | steady p50 / p95 / p99 / max |\n\
         |---|---|---|---|---|---|\n",
        m.steady_rate, m.ceiling
    );
    for run in &m.runs {
        let [p50, p95, p99, max] = run.steady;
        report.push_str(&format!(
            "| {} | {:.0} | {:.0}% | {:.1} | {} | {p50} / {p95} / {p99} / {max} ms |\n",
            run.mode,
            run.backlog.rate(),
            100.0 * run.backlog.rate() / m.ceiling,
            run.backlog.cpu_per_million(),
            bench::mib(run.backlog.peak_rss),
        ));
    }
    if let [exact, idempotent] = &m.runs[..] {
        report.push_str(&format!(
            "\nexactly_once applies {:.0}% of the idempotent mode's docs/s (goal: at least 85%); p99 {} ms against {} ms.\n",
            100.0 * exact.backlog.rate() / idempotent.backlog.rate(),
            exact.steady[2],
            idempotent.steady[2]
        ));
    }
    report
}
