//! `make chaos`: the full fault suite. `chaos [OPERATIONS] [FAULTS] [RATE] [SEED]`
//! (defaults 1,000,000 operations, 24 faults, 5,000 operations/s, a time-based seed).
//! Prints a markdown report; exits 1 when anything was lost or diverged.

use e2e::chaos::{run, Settings};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<u64> = std::env::args().skip(1).map(|a| a.parse().expect("numeric arguments")).collect();
    let arg = |i: usize, default: u64| args.get(i).copied().unwrap_or(default);
    let seed = arg(3, std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs()));
    let settings = Settings {
        operations: arg(0, 1_000_000),
        faults: arg(1, 24) as usize,
        rate: arg(2, 5_000),
        partitions: 4,
        seed,
    };
    eprintln!("chaos: {settings:?}");
    let report = run(settings).await;
    println!("{report}");
    std::process::exit(if report.passed() { 0 } else { 1 });
}
