//! `make chaos`: the full fault suite. `chaos [OPERATIONS] [FAULTS] [RATE] [SEED]`
//! (defaults 1,000,000 operations, 24 faults, 5,000 operations/s, a time-based seed).
//! `CHAOS_CLUSTER=3`: on the three-broker cluster (`scripts/services.sh up kafka-cluster`), with a
//! standby cdc-source and the cluster's faults; `CHAOS_SINK_CUT_SECONDS` (600) is how long the
//! target region is cut off from it. `CHAOS_SKIP=kill-target-mongo,…` leaves kinds out.
//! Prints a markdown report; exits 1 when anything was lost or diverged.

use std::time::Duration;

use e2e::chaos::{run, Fault, Settings};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<u64> = std::env::args().skip(1).map(|a| a.parse().expect("numeric arguments")).collect();
    let arg = |i: usize, default: u64| args.get(i).copied().unwrap_or(default);
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let seed = arg(3, std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs()));
    let cluster = match env("CHAOS_CLUSTER").as_deref() {
        None | Some("1") => false,
        Some("3") => true,
        Some(other) => panic!("CHAOS_CLUSTER={other}: 1 (one broker) or 3 (the three-broker cluster)"),
    };
    let sink_cut = env("CHAOS_SINK_CUT_SECONDS").map_or(600, |s| s.parse().expect("CHAOS_SINK_CUT_SECONDS: seconds"));
    let skip = Fault::parse_list(&env("CHAOS_SKIP").unwrap_or_default()).unwrap_or_else(|e| panic!("CHAOS_SKIP: {e}"));
    let settings = Settings {
        operations: arg(0, 1_000_000),
        faults: arg(1, 24) as usize,
        rate: arg(2, 5_000),
        partitions: 4,
        seed,
        cluster,
        sink_cut: Duration::from_secs(sink_cut),
        skip,
    };
    eprintln!("chaos: {settings:?}");
    let report = run(settings).await;
    println!("{report}");
    std::process::exit(if report.passed() { 0 } else { 1 });
}
