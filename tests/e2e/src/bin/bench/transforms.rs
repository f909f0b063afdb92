//! transforms (`BENCH_ONLY=transforms`): what a typical `[transforms]` rule set costs cdc-source.
//! The 4-partition burst twice on the same documents: without rules, then with a filter that
//! every document passes (`n >= 0`), a rename (`n` → `number`) and an HMAC-SHA-256 of `name`
//! (`ts`, which latency is measured by, and the record sizes stay as they are). Reported: the
//! end-to-end rates and cdc-source's CPU per event, with and without.

use std::path::Path;

use test_support::Services;

use super::{burst, micros_per_doc, Burst};

const RULES: &str = r#"[[rules]]
namespaces = '.*\.items'
rename = { n = "number" }
hash = ["name"]
filter = '{"n": {"$gte": 0}}'
"#;

pub(crate) struct Transforms {
    pub(crate) docs: i64,
    pub(crate) plain: Burst,
    pub(crate) ruled: Burst,
}

pub(crate) async fn transforms(servers: &Services, docs: i64, dir: &Path) -> Transforms {
    let kafka = servers.kafka_bootstrap.clone();
    let plain = burst(servers, docs, 4, &kafka, "burst, 4 partitions, no rules", dir).await;
    let rules = dir.join("transforms.toml");
    std::fs::write(&rules, RULES).expect("rules file");
    // Passed to cdc-source as CDC_SOURCE__TRANSFORMS__… (see Pipeline::start_with).
    std::env::set_var("BENCH_CDC_SOURCE__TRANSFORMS__RULES_FILE", &rules);
    std::env::set_var("BENCH_CDC_SOURCE__TRANSFORMS__HASH_KEY", "bench-transforms-key-0123456789");
    let ruled = burst(servers, docs, 4, &kafka, "burst, 4 partitions, typical rules", dir).await;
    std::env::remove_var("BENCH_CDC_SOURCE__TRANSFORMS__RULES_FILE");
    std::env::remove_var("BENCH_CDC_SOURCE__TRANSFORMS__HASH_KEY");
    Transforms { docs, plain, ruled }
}

pub(crate) fn transforms_report(t: &Transforms) -> String {
    let per_event = |b: &Burst| micros_per_doc(b.source.cpu_seconds, t.docs);
    let (plain, ruled) = (per_event(&t.plain), per_event(&t.ruled));
    let mut out = String::from("| run | end to end, docs/s | cdc-source CPU s | µs per event |\n|---|---|---|---|\n");
    for b in [&t.plain, &t.ruled] {
        out.push_str(&format!(
            "| {} | {:.0} | {:.1} | {:.1} |\n",
            b.label,
            b.e2e_rate,
            b.source.cpu_seconds,
            per_event(b)
        ));
    }
    out.push_str(&format!(
        "\nThe rules cost cdc-source {:.1} µs of CPU per event ({:+.0}%).\n",
        ruled - plain,
        100.0 * (ruled - plain) / plain.max(0.001)
    ));
    out
}
