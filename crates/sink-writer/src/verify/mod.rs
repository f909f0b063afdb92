//! `sink-writer verify`: is the target equal to the source? Compares, while replication runs,
//! every namespace's documents (exact BSON: field order and types count) in `_id` ranges read in
//! parallel from both sides (or a random sample), what each namespace is (collection, view,
//! time-series), its options and indexes (keys in order), and on a full verify what exists only
//! on the target. Under `[transforms]` (the rules cdc-source applies) the source is read as
//! cdc-source sends it: each document through its namespace's rule, those its filter leaves out
//! as absent, and the indexes and options the rule leaves out not expected on the target. A
//! difference may only be in flight: each is checked again (`recheck.rs`), and
//! counts as in flight only when replication is seen to move past it; otherwise it is a
//! difference, or unconfirmed. Reads and rechecks are paced (`verify.max_docs_per_second`) so it
//! can run against production, use only commands Amazon DocumentDB has, and hold a bounded
//! number of documents whatever the size. Exit status: 0 equal, 1 differences, 2 errors, 3
//! unconfirmed differences only (never "equal"). The result is kept in
//! `<metadata_database>.verify` for `sink-writer status` (which counts only a full verify of
//! every namespace that found everything equal).
//!
//! ```text
//! sink-writer verify [--config FILE] [--namespace db.coll …] [--full | --sample N] [--json]
//!                    [--max-docs-per-second N] [--repair]
//! ```
//!
//! `--repair` has cdc-source send the documents found different (or unconfirmed) again, ordered
//! with its stream, and checks them again (`repair.rs`): what is repaired counts as equal.
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | the command, each namespace compared in turn, the result kept |
//! | `scope.rs` | which namespaces: the source's selected, and those only on the target |
//! | `namespace.rs` | one namespace: documents, rechecks, schema; one only on the target |
//! | `documents.rs` | documents compared in ranges or a sample, with bounded memory |
//! | `recheck.rs` | differences checked again against the consistency point |
//! | `repair.rs` | `--repair`: differences sent again by cdc-source, then checked again |
//! | `indexes.rs` | what a namespace is, its options and indexes |
//! | `read.rs` | reading `_id` ranges the way both MongoDB and DocumentDB can |
//! | `report.rs` | the report, its outcome and exit status |

mod documents;
mod indexes;
mod namespace;
pub(crate) mod read;
mod recheck;
mod repair;
mod report;
pub(crate) mod scope;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bson::{doc, Document};
use envelope::Namespace;

use crate::config::Config;
use crate::error::Error;
use crate::mapping::Mapper;
use crate::point::PointReader;
use documents::{Held, Pace};
use namespace::Verifier;
use recheck::Replication;
pub use report::{Findings, NamespaceReport, Outcome, Report};

/// What the command line asked for.
#[derive(Debug, Default, PartialEq, Eq, clap::Args)]
pub struct Args {
    /// Compare only this namespace (repeat for several); default: every namespace verify.include takes
    #[arg(long = "namespace", value_name = "DB.COLLECTION")]
    namespaces: Vec<String>,
    /// Compare every document (the default)
    #[arg(long, conflicts_with = "sample")]
    full: bool,
    /// Compare N documents per namespace, picked at random, instead of all
    #[arg(long, value_name = "N")]
    sample: Option<usize>,
    /// Print the report as one JSON object
    #[arg(long)]
    json: bool,
    /// Read at most N documents a second from each side
    #[arg(long, value_name = "N")]
    max_docs_per_second: Option<u64>,
    /// Have cdc-source send the documents found different again, ordered with its stream, and check them again
    #[arg(long)]
    repair: bool,
}

/// The `verify` command.
pub fn command(config: Config, args: Args) -> service_kit::app::CommandFuture {
    Box::pin(async move {
        let json = args.json;
        match run(&config, args).await {
            Ok(report) => {
                if json {
                    println!("{}", report.to_json());
                } else {
                    print!("{report}");
                }
                ExitCode::from(report.outcome().exit_code())
            }
            Err(e) => {
                eprintln!("sink-writer verify: {e}");
                ExitCode::from(2)
            }
        }
    })
}

async fn run(config: &Config, args: Args) -> Result<Report, Error> {
    if config.verify.source_uri.expose().is_empty() {
        return Err(Error::fatal(
            "set verify.source_uri (SINK_WRITER__VERIFY__SOURCE_URI) to the source deployment".into(),
        ));
    }
    let source_connection =
        service_kit::connect::MongoConnection { uri: config.verify.source_uri.clone(), ..config.mongo.clone() };
    let source = source_connection
        .client_for("sink-writer-verify", config.apply.compat)
        .await
        .map_err(|e| Error::mongo("verify.source_uri", e))?;
    let target = config
        .mongo
        .client_for("sink-writer-verify", config.apply.compat)
        .await
        .map_err(|e| Error::mongo("mongo.uri", e))?;
    let mapper = Mapper::new(&config.apply.mapping).map_err(|e| Error::fatal(format!("apply.mapping: {e}")))?;
    let transforms =
        transform::Rules::load(&config.transforms).map_err(|problems| Error::fatal(problems.join("; ")))?;
    let point = PointReader::new(config, &target)?;
    let replication =
        Replication { source: &source, point: &point, timeout: Duration::from_millis(config.verify.settle_timeout_ms) };
    let namespaces = scope::source(config, &args.namespaces, &source).await?;
    let everything = args.namespaces.is_empty();
    let only_on_target = if everything {
        let compared: Vec<Namespace> = namespaces.iter().map(|(ns, _)| ns.clone()).collect();
        scope::only_on_target(config, &compared, &mapper, &target).await?
    } else {
        Vec::new()
    };
    let pace = Pace::new(args.max_docs_per_second.unwrap_or(config.verify.max_docs_per_second));
    let held = Held::default();
    let mut total = 0;
    for (ns, _) in namespaces.iter().filter(|(_, kind)| kind.has_documents()) {
        total += source.database(&ns.db).collection::<Document>(&ns.coll).estimated_document_count().await.unwrap_or(0);
    }
    let started = Instant::now();
    let ticker =
        (std::io::stderr().is_terminal() && !args.json).then(|| tokio::spawn(progress_line(pace.clone(), total)));
    let mut report = Report::default();
    let verifier = Verifier {
        source: &source,
        target: &target,
        replication: &replication,
        pace: &pace,
        held: &held,
        sample: args.sample.filter(|_| !args.full),
        parallel: config.verify.parallel,
        max_rechecked: config.verify.max_rechecked,
        transforms: &transforms,
    };
    let mut found = Vec::new();
    for (ns, kind) in namespaces {
        let mapped = mapper.map(&ns);
        let findings = match verifier.compare(&ns, &mapped, kind).await {
            Ok(findings) => findings,
            // A namespace a server refuses to read (a broken time-series collection, say) differs.
            Err(e) if !e.is_retriable() => Findings::unreadable(kind, format!("cannot be compared: {e}")),
            Err(e) => return Err(e),
        };
        found.push((ns, mapped, findings));
    }
    if args.repair {
        report.repair = Some(repair::repair(config, &verifier, &mut found).await?);
    }
    for (ns, mapped, findings) in found {
        report.namespaces.push(NamespaceReport::new(ns, mapped, findings, config.verify.max_listed));
    }
    for (ns, kind) in only_on_target {
        let findings = verifier.only_on_target(&ns, kind).await?;
        report.namespaces.push(NamespaceReport::new(ns.clone(), ns, findings, config.verify.max_listed));
    }
    if let Some(ticker) = ticker {
        ticker.abort();
        eprintln!();
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.mode = if args.sample.is_some() { "sample" } else { "full" };
    report.scope = if everything { "all" } else { "namespaces" };
    report.held_peak = held.peak();
    record(config, &target, &report).await;
    Ok(report)
}

/// Keeps the result where `sink-writer status` finds it: a full verify of every namespace under
/// the group's name (the one that counts), any other beside it.
async fn record(config: &Config, target: &mongodb::Client, report: &Report) {
    let log = target.database(&config.apply.metadata_database).collection::<Document>("verify");
    let summary = doc! {
        "at": bson::DateTime::now(),
        "equal": report.outcome() == Outcome::Equal,
        "outcome": report.outcome().as_str(),
        "mode": report.mode,
        "scope": report.scope,
        "namespaces": i64::try_from(report.namespaces.len()).unwrap_or(i64::MAX),
        "differences": i64::try_from(report.differences()).unwrap_or(i64::MAX),
        "unconfirmed": i64::try_from(report.unconfirmed()).unwrap_or(i64::MAX),
    };
    let group = &config.consume.group_id;
    let id = if report.mode == "full" && report.scope == "all" { group.clone() } else { format!("{group}|partial") };
    let recorded = log.replace_one(doc! {"_id": id}, summary).upsert(true).await;
    if let Err(e) = recorded {
        eprintln!("sink-writer verify: cannot record the result for status: {e}");
    }
}

/// A progress line on a terminal: documents compared, rate, what is left.
async fn progress_line(pace: std::sync::Arc<Pace>, total: u64) {
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let done = pace.done.load(Ordering::Relaxed);
        let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
        let eta = total.saturating_sub(done) as f64 / rate.max(1.0);
        let percent = if total == 0 { 100.0 } else { 100.0 * done as f64 / total as f64 };
        eprint!("\rverify: {done} of ~{total} documents ({percent:.0}%), {rate:.0}/s, ETA {eta:.0} s   ");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_parsed_and_unknown_ones_refused() {
        let parse = |args: &[&str]| service_kit::cli::parse_command::<Args>("verify", args);
        assert_eq!(
            parse(&["--namespace", "a.b", "--sample", "50", "--json", "--namespace=c.d"]).expect("valid"),
            Args { namespaces: vec!["a.b".into(), "c.d".into()], sample: Some(50), json: true, ..Args::default() }
        );
        assert!(parse(&["--sample"]).is_err());
        assert!(parse(&["--sample", "many"]).is_err());
        assert!(parse(&["--full", "--sample", "5"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }
}
