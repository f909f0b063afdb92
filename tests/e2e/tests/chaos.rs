//! The small fault suite (`make chaos` runs the full one): each kind of fault once, at random
//! moments, while a mixed workload runs; afterwards the target must equal the source.
//! Its own test binary: it kills the shared Kafka broker and target mongod.

use std::time::Duration;

use e2e::chaos::{run, Fault, Settings};

#[tokio::test(flavor = "multi_thread")]
async fn every_fault_once_loses_and_diverges_nothing() {
    let seed = std::env::var("CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs())
    });
    let settings = Settings {
        operations: 20_000,
        rate: 1_000,
        faults: Fault::ALL.len(),
        partitions: 4,
        seed,
        cluster: false,
        sink_cut: Duration::ZERO,
        skip: Vec::new(),
    };
    let report = run(settings).await;
    println!("{report}");
    assert_eq!(report.faults.len(), Fault::ALL.len());
    assert!(report.workload.operations >= 20_000, "{report}");
    assert!(report.comparison.source_documents > 1_000, "{report}");
    assert!(report.passed(), "the target differs from the source after the faults:\n{report}");
}
