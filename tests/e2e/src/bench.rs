//! Measuring tools of `make bench` (tests/e2e/src/bin/bench.rs): per-document end-to-end
//! latency read from the target's own change stream, CPU and memory of the service processes
//! from /proc, percentiles, a progress bar and an SVG plot.
//!
//! Latency of one document = the target's commit time of its write (`wallTime` of the target
//! change event) − the time the bench took just before inserting it into the source (a field of
//! the document, so slightly more than source commit → target commit). Under a burst only every
//! n-th `_id` is watched (the filter runs inside the target's oplog scan), so measuring costs the
//! target little; rates then count each watched document n times.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bson::{doc, Document};
use futures::StreamExt;
use mongodb::Collection;

/// One applied document: target commit time (ms since the epoch) and its latency (ms).
#[derive(Debug, Clone, Copy)]
pub struct Applied {
    pub at_ms: i64,
    pub latency_ms: i64,
}

/// Watches the target collection and records every document written to it.
pub struct TargetWatcher {
    pub count: Arc<AtomicU64>,
    applied: Arc<Mutex<Vec<Applied>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TargetWatcher {
    /// Starts watching every `sample_every`-th integer `_id`; returns once the change stream is
    /// open (nothing written later is missed).
    pub async fn start(target: Collection<Document>, sample_every: i64) -> TargetWatcher {
        // Inserts and replacements carry the whole document: no lookup per event, which at
        // every document of a 20k docs/s run was a findOne each on the measured target.
        let pipeline = vec![
            doc! {"$match": {
                "operationType": {"$in": ["insert", "replace"]},
                "documentKey._id": {"$mod": [sample_every.max(1), 0]},
            }},
            // Keep what the driver needs to parse an event (operationType, ns, documentKey).
            doc! {"$project": {"operationType": 1, "ns": 1, "documentKey": 1, "wallTime": 1, "fullDocument.ts": 1}},
        ];
        let mut stream = target.watch().pipeline(pipeline).batch_size(10_000).await.expect("target change stream");
        let count = Arc::new(AtomicU64::new(0));
        let applied = Arc::new(Mutex::new(Vec::new()));
        let (count2, applied2) = (count.clone(), applied.clone());
        let task = tokio::spawn(async move {
            while let Some(event) = stream.next().await {
                let event = match event {
                    Ok(event) => event,
                    Err(e) => {
                        eprintln!("bench: the target change stream failed: {e}");
                        break;
                    }
                };
                let wall = event.wall_time.map(|t| t.timestamp_millis());
                let sent =
                    event.full_document.as_ref().and_then(|d| d.get_datetime("ts").ok()).map(|t| t.timestamp_millis());
                if let (Some(at_ms), Some(sent)) = (wall, sent) {
                    applied2.lock().expect("lock").push(Applied { at_ms, latency_ms: at_ms - sent });
                    count2.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        TargetWatcher { count, applied, task }
    }

    pub fn applied(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Stops watching and hands over what it saw.
    pub fn finish(self) -> Vec<Applied> {
        self.task.abort();
        std::mem::take(&mut *self.applied.lock().expect("lock"))
    }
}

/// CPU seconds and memory of a process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
}

pub fn proc_stats(pid: u32) -> ProcStats {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces, closed by ')'): utime is the 12th
    // and stime the 13th of those, in clock ticks (100 per second on Linux).
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ProcStats { cpu_seconds: (ticks(11) + ticks(12)) / 100.0, rss_bytes: kib("VmRSS:"), peak_rss_bytes: kib("VmHWM:") }
}

/// The q-quantile (0..=1) of `values` (sorted in place).
pub fn percentile(values: &mut [i64], q: f64) -> i64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let rank = ((values.len() as f64 - 1.0) * q).round() as usize;
    values[rank.min(values.len() - 1)]
}

/// Per-second buckets from the start: documents applied in that second (each sample counting
/// `weight` documents), and the largest latency of those (the replication lag then), in seconds.
pub fn per_second(applied: &[Applied], start_ms: i64, weight: u64) -> Vec<(u64, f64)> {
    let Some(last) = applied.iter().map(|a| a.at_ms).max() else { return Vec::new() };
    let buckets = ((last - start_ms).max(0) / 1000 + 1) as usize;
    let mut out = vec![(0u64, 0f64); buckets];
    for a in applied {
        let i = ((a.at_ms - start_ms).max(0) / 1000) as usize;
        out[i].0 += weight;
        out[i].1 = out[i].1.max(a.latency_ms as f64 / 1000.0);
    }
    out
}

/// One line of progress on stderr, rewritten in place.
pub fn progress(label: &str, done: u64, total: u64, rate: f64, extra: &str) {
    let width = 30;
    let filled = (done.min(total) * width).checked_div(total).unwrap_or(width) as usize;
    eprint!(
        "\r{label:<22} [{}{}] {:>3}% {done:>9}/{total} {rate:>8.0}/s {extra:<30}",
        "#".repeat(filled),
        ".".repeat(width as usize - filled),
        (done * 100).checked_div(total).unwrap_or(100)
    );
}

/// An SVG of throughput (docs/s, left axis) and lag (s, right axis) over time, per series.
pub fn svg_plot(title: &str, series: &[(&str, Vec<(u64, f64)>)]) -> String {
    let (w, h, left, right, top, bottom) = (900.0, 420.0, 70.0, 70.0, 40.0, 50.0);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let seconds = series.iter().map(|(_, s)| s.len()).max().unwrap_or(1).max(2) as f64;
    let max_rate = series.iter().flat_map(|(_, s)| s.iter().map(|p| p.0)).max().unwrap_or(1).max(1) as f64 * 1.1;
    let max_lag = series.iter().flat_map(|(_, s)| s.iter().map(|p| p.1)).fold(0.1, f64::max) * 1.1;
    let x = |i: usize| left + plot_w * i as f64 / (seconds - 1.0);
    let y_rate = |v: f64| top + plot_h * (1.0 - v / max_rate);
    let y_lag = |v: f64| top + plot_h * (1.0 - v / max_lag);
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{title}</text>
<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>
"##,
        w / 2.0
    );
    for tick in 0..=4 {
        let f = tick as f64 / 4.0;
        let yy = top + plot_h * (1.0 - f);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{yy}" y2="{yy}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{:.0}</text><text x="{}" y="{}">{:.1} s</text>"##,
            left + plot_w,
            left - 6.0,
            yy + 4.0,
            max_rate * f,
            left + plot_w + 6.0,
            yy + 4.0,
            max_lag * f
        );
        let xx = left + plot_w * f;
        let _ = writeln!(
            svg,
            r#"<text x="{xx}" y="{}" text-anchor="middle">{:.0} s</text>"#,
            top + plot_h + 18.0,
            (seconds - 1.0) * f
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">documents applied / s (solid)</text><text x="{}" y="{}" transform="rotate(90 {} {})" text-anchor="middle">replication lag, s (dashed)</text>"#,
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        w - 14.0,
        top + plot_h / 2.0,
        w - 14.0,
        top + plot_h / 2.0
    );
    for (n, (name, points)) in series.iter().enumerate() {
        let color = colors[n % colors.len()];
        let rate: Vec<String> =
            points.iter().enumerate().map(|(i, p)| format!("{:.1},{:.1}", x(i), y_rate(p.0 as f64))).collect();
        let lag: Vec<String> =
            points.iter().enumerate().map(|(i, p)| format!("{:.1},{:.1}", x(i), y_lag(p.1))).collect();
        let _ =
            writeln!(svg, r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#, rate.join(" "));
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.2" stroke-dasharray="5,3" points="{}"/>"#,
            lag.join(" ")
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" fill="{color}">{name}</text>"#,
            left + 10.0,
            top + 16.0 + 15.0 * n as f64
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Wall-clock milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Formats a byte count as MiB.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank_and_buckets_count_per_second() {
        let mut v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&mut v, 0.5), 51);
        assert_eq!(percentile(&mut v, 0.99), 99);
        let applied = [
            Applied { at_ms: 1_000, latency_ms: 10 },
            Applied { at_ms: 1_500, latency_ms: 30 },
            Applied { at_ms: 2_100, latency_ms: 20 },
        ];
        assert_eq!(per_second(&applied, 1_000, 1), vec![(2, 0.03), (1, 0.02)]);
        assert_eq!(per_second(&applied, 1_000, 50), vec![(100, 0.03), (50, 0.02)]);
        assert!(svg_plot("t", &[("a", per_second(&applied, 1_000, 1))]).contains("<polyline"));
    }

    #[test]
    fn own_process_stats_are_read() {
        let s = proc_stats(std::process::id());
        assert!(s.rss_bytes > 0 && s.peak_rss_bytes >= s.rss_bytes);
    }
}
