//! What Prometheus and Grafana see: `/metrics` of both services after real traffic passes
//! `promtool check metrics`, and the alert rules and dashboard name only metrics that exist.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bson::doc;
use e2e::pipeline::{metric, Pipeline};
use tokio::io::AsyncWriteExt;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|p| p.join("promtool")).find(|p| p.is_file()))
        .unwrap_or_default();
    found.expect("promtool is missing: `scripts/tools.sh promtool` installs it (make lint does)")
}

/// `promtool check metrics` on one exposition; its complaints, if any.
async fn promtool_check_metrics(body: &str) -> Result<(), String> {
    let mut child = tokio::process::Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(body.as_bytes()).await.expect("write metrics");
    drop(stdin);
    let out = child.wait_with_output().await.expect("promtool ends");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn both_services_metrics_pass_promtool_after_real_traffic() {
    let p = Pipeline::new("metrics", 2).await;
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    let coll = p.source_db().collection::<bson::Document>("c");
    coll.insert_many((0..50).map(|i| doc! {"_id": i, "v": i})).await.expect("insert");
    coll.update_many(doc! {}, doc! {"$inc": {"v": 1}}).await.expect("update");
    coll.delete_many(doc! {"v": {"$lt": 10}}).await.expect("delete");
    p.converged(Duration::from_secs(60)).await;
    for (name, started) in [("cdc-source", &source), ("sink-writer", &sink)] {
        let body = started.metrics().await;
        if let Err(problems) = promtool_check_metrics(&body).await {
            panic!("{name}: promtool check metrics:\n{problems}");
        }
    }
    let source_body = source.metrics().await;
    let sink_body = sink.metrics().await;
    assert_eq!(metric(&source_body, "cdc_source_ready"), 1.0, "ready gauge follows /health/readyz");
    assert_eq!(metric(&sink_body, "sink_writer_ready"), 1.0);
    assert!(metric(&source_body, "cdc_source_events_total") >= 109.0, "{source_body}");
    assert!(metric(&sink_body, "sink_writer_documents_applied_total") >= 50.0, "{sink_body}");
    // The check bites: a counter without the _total suffix is a complaint.
    assert!(promtool_check_metrics("# HELP bad_counter x\n# TYPE bad_counter counter\nbad_counter 1\n").await.is_err());
    sink.stop().await;
    source.stop().await;
}

/// Every metric name the services define: the literals in each `metrics.rs` and in the shared
/// shell's (`crates/service-kit/src/metrics.rs`, names under `{prefix}`), plus what the shell
/// adds besides (`_build_info`, `_ready`, the process collector) and Prometheus' own `up`.
fn defined_metrics() -> BTreeSet<String> {
    let mut names: BTreeSet<String> =
        ["up", "process_resident_memory_bytes", "process_cpu_seconds_total"].into_iter().map(String::from).collect();
    let shell = std::fs::read_to_string(root().join("crates/service-kit/src/metrics.rs")).expect("shell metrics.rs");
    for (crate_dir, prefix) in [("crates/cdc-source", "cdc_source"), ("crates/sink-writer", "sink_writer")] {
        let own = std::fs::read_to_string(root().join(crate_dir).join("src/metrics.rs")).expect("metrics.rs");
        let source = format!("{own}\n{}", shell.replace("{prefix}", prefix));
        names.extend(metric_names(&source, prefix).into_iter().filter(|n| source.contains(&format!("\"{n}\""))));
        names.insert(format!("{prefix}_build_info"));
        names.insert(format!("{prefix}_ready"));
    }
    names
}

/// Identifiers starting with `prefix` in `text`, with histogram series suffixes removed.
fn metric_names(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find(prefix) {
        let start = at + found;
        let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            let name = &text[start..end];
            let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            names.insert(base.to_string());
        }
        at = end.max(start + 1);
    }
    names
}

fn referenced(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut names = BTreeSet::new();
    for prefix in ["cdc_source_", "sink_writer_", "process_"] {
        names.extend(metric_names(&text, prefix));
    }
    names
}

#[test]
fn alerts_and_dashboard_name_only_defined_metrics() {
    let defined = defined_metrics();
    assert!(defined.contains("sink_writer_consumer_lag") && defined.contains("cdc_source_history_window_seconds"));
    assert!(defined.contains("sink_writer_kafka_auth_tokens_total"), "the shell's metrics count: {defined:?}");
    for file in ["deploy/monitoring/alerts.yml", "deploy/monitoring/grafana-dashboard.json"] {
        let used = referenced(&root().join(file));
        assert!(used.len() >= 10, "{file} refers to {used:?}");
        let unknown: Vec<_> = used.difference(&defined).collect();
        assert!(unknown.is_empty(), "{file} refers to metrics no service exports: {unknown:?}");
    }
    // The comparison bites: a misspelt name is caught.
    assert!(!defined.contains("sink_writer_consumer_lags"));
}
