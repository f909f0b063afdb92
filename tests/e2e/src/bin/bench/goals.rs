//! The five performance goals in one table (issue 29), each measured in the run that prints it
//! against its goal: every figure comes from a scenario of the same `make bench` run.

use crate::capture::Capture;
use crate::initial_sync::InitialSync;
use crate::modes::Modes;
use crate::peers::Peers;
use crate::wire::WireRun;

/// One goal: what was measured, what it had to reach, and whether it did.
pub struct Goal {
    pub item: &'static str,
    pub measured: String,
    pub goal: &'static str,
    pub met: bool,
    /// What is beside it (a peer's figure), or empty.
    pub beside: String,
}

/// What the goals are measured from.
pub struct Measured<'a> {
    pub modes: &'a Modes,
    pub peers: &'a Peers,
    pub initial_sync: &'a InitialSync,
    pub wire: &'a [WireRun],
    /// The 4-partition burst's CPU per document: cdc-source, sink-writer (µs).
    pub burst_cpu: [f64; 2],
    /// Latency at the steady rate in the default (`exactly_once`) mode: p50, p99 (ms).
    pub steady: [i64; 2],
}

fn percent(x: f64) -> String {
    format!("{:.0}%", 100.0 * x)
}

/// The goals, in the order.
pub fn goals(m: &Measured) -> Vec<Goal> {
    let mut out = Vec::new();
    let ceiling = m.modes.ceiling;
    let connector = m.peers.connector_sink.rate() / m.peers.ceiling;
    for run in &m.modes.runs {
        let ratio = run.backlog.rate() / ceiling;
        out.push(Goal {
            item: match run.mode {
                "exactly_once" => "1. sink-writer (exactly_once) / the target's raw bulk upserts",
                _ => "1. sink-writer (idempotent) / the target's raw bulk upserts",
            },
            measured: format!("{} ({:.0} of {ceiling:.0} docs/s)", percent(ratio), run.backlog.rate()),
            goal: "≥ 90%",
            met: ratio >= 0.9,
            beside: format!("MongoDB Kafka Connector: {}", percent(connector)),
        });
    }
    if let [exact, idempotent] = &m.modes.runs[..] {
        let ratio = exact.backlog.rate() / idempotent.backlog.rate();
        out.push(Goal {
            item: "1. exactly_once / idempotent on the same backlog (issue 21)",
            measured: percent(ratio),
            goal: "≥ 85%",
            met: ratio >= 0.85,
            beside: String::new(),
        });
    }
    let capture: &Capture = &m.peers.capture;
    out.push(Goal {
        item: "2. cdc-source / a bare change-stream reader, on a backlog",
        measured: format!(
            "{} ({:.0} of {:.0} events/s)",
            percent(capture.source_ratio()),
            capture.source.rate(),
            capture.bare.rate()
        ),
        goal: "≥ 90%",
        met: capture.source_ratio() >= 0.9,
        beside: format!("Debezium: {}", percent(capture.debezium_ratio())),
    });
    let copy = m.initial_sync.copy_ratio();
    out.push(Goal {
        item: "2. snapshot to Kafka / a bare `find` in the same ranges",
        measured: percent(copy),
        goal: "≥ 90%",
        met: copy >= 0.9,
        beside: String::new(),
    });
    let services = ["3. cdc-source CPU per document, 1M burst", "3. sink-writer CPU per document, 1M burst"];
    for (item, cpu) in services.into_iter().zip(m.burst_cpu) {
        out.push(Goal {
            item,
            measured: format!("{cpu:.1} µs"),
            goal: "≤ 8 µs",
            met: cpu <= 8.0,
            beside: String::new(),
        });
    }
    let shapes = [
        ("bench", "4. bytes per document across the region, bench documents (default zstd)", "< Debezium's"),
        (
            "realistic",
            "4. bytes per document across the region, realistic mix (default zstd)",
            "< Debezium's and ≤ 0.5× BSON",
        ),
    ];
    for (shape, item, goal) in shapes {
        let ours =
            m.wire.iter().find(|r| r.tool == "cdc-source" && r.shape == shape && r.codec == "zstd" && r.level < 0);
        let theirs: Vec<&WireRun> = m.wire.iter().filter(|r| r.tool == "Debezium" && r.shape == shape).collect();
        if let Some(ours) = ours {
            let fewest = theirs.iter().map(|r| r.bytes_per_doc()).fold(f64::INFINITY, f64::min);
            out.push(Goal {
                item,
                measured: format!("{:.0} B ({:.2}× BSON)", ours.bytes_per_doc(), ours.of_bson()),
                goal,
                met: ours.bytes_per_doc() < fewest && (shape == "bench" || ours.of_bson() <= 0.5),
                beside: theirs
                    .iter()
                    .map(|r| format!("Debezium ({}): {:.0} B", r.codec, r.bytes_per_doc()))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let [p50, p99] = m.steady;
    out.push(Goal {
        item: "5. latency at 5,000 docs/s, exactly_once",
        measured: format!("p50 {p50} ms, p99 {p99} ms"),
        goal: "p50 < 100 ms, p99 < 250 ms",
        met: p50 < 100 && p99 < 250,
        beside: String::new(),
    });
    out
}

pub fn goals_report(goals: &[Goal]) -> String {
    let mut report = String::from(
        "### The five goals (issue 29), all measured in this run\n\n\
         | goal | measured | target | met | beside it |\n|---|---|---|---|---|\n",
    );
    for g in goals {
        report.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            g.item,
            g.measured,
            g.goal,
            if g.met { "yes" } else { "no" },
            g.beside
        ));
    }
    report
}
