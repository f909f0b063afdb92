//! `sink-writer verify`: is the target equal to the source? Compares, while replication runs,
//! every namespace's documents (exact BSON: field order and types count) in `_id` ranges read in
//! parallel from both sides (or a random sample), its indexes and collection options. A
//! difference may only be in flight: each is checked again once the consistency point has passed
//! the moment it was seen, and only what stays different is reported. Reads are paced
//! (`verify.max_docs_per_second`) so it can run against production, and use only commands
//! Amazon DocumentDB has. Exit status 0 when everything compared is equal, 1 on differences,
//! 2 on errors. The result is kept in `<metadata_database>.verify` for `sink-writer status`.
//!
//! ```text
//! sink-writer verify [--config FILE] [--namespace db.coll …] [--full | --sample N] [--json]
//!                    [--max-docs-per-second N]
//! ```

mod documents;
mod indexes;
mod read;
mod report;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bson::{doc, Document, RawDocumentBuf};
use envelope::{ClusterTime, Namespace};
use regex::Regex;

use crate::config::Config;
use crate::error::Error;
use crate::mapping::Mapper;
use crate::point::PointReader;
use documents::{Pace, Pair};
pub use report::{Findings, NamespaceReport, Report};

/// What the command line asked for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Args {
    namespaces: Vec<String>,
    sample: Option<usize>,
    json: bool,
    max_docs_per_second: Option<u64>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut parsed = Args::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |what: &str| args.next().cloned().ok_or(format!("{arg} needs {what}"));
        match arg.as_str() {
            "--namespace" => parsed.namespaces.push(value("db.collection")?),
            "--full" => parsed.sample = None,
            "--sample" => parsed.sample = Some(value("a number")?.parse().map_err(|e| format!("--sample: {e}"))?),
            "--json" => parsed.json = true,
            "--max-docs-per-second" => {
                parsed.max_docs_per_second = Some(value("a number")?.parse().map_err(|e| format!("{arg}: {e}"))?)
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(parsed)
}

/// The `verify` command.
pub fn command(config: Config, args: Vec<String>) -> service_kit::app::CommandFuture {
    Box::pin(async move {
        let args = match parse(&args) {
            Ok(args) => args,
            Err(e) => {
                eprintln!("sink-writer verify: {e}");
                return ExitCode::from(2);
            }
        };
        let json = args.json;
        match run(&config, args).await {
            Ok(report) => {
                if json {
                    println!("{}", report.to_json());
                } else {
                    print!("{report}");
                }
                if report.equal() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
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
        return Err(Error::Fatal(
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
    let mapper = Mapper::new(&config.apply.mapping).map_err(|e| Error::Fatal(format!("apply.mapping: {e}")))?;
    let point = PointReader::new(config, &target)?;
    let namespaces = namespaces(config, &args, &source).await?;
    let pace = Pace::new(args.max_docs_per_second.unwrap_or(config.verify.max_docs_per_second));
    let mut total = 0;
    for ns in &namespaces {
        total += source.database(&ns.db).collection::<Document>(&ns.coll).estimated_document_count().await.unwrap_or(0);
    }
    let started = Instant::now();
    let ticker =
        (std::io::stderr().is_terminal() && !args.json).then(|| tokio::spawn(progress_line(pace.clone(), total)));
    let mut report = Report::default();
    for ns in namespaces {
        let mapped = mapper.map(&ns);
        let pair = Pair {
            source: source.database(&ns.db).collection::<RawDocumentBuf>(&ns.coll),
            target: target.database(&mapped.db).collection::<RawDocumentBuf>(&mapped.coll),
        };
        let tally = match args.sample {
            Some(size) => documents::compare_sample(&pair, size, &pace).await?,
            None => documents::compare_all(&pair, config.verify.parallel, &pace).await?,
        };
        let settle = Duration::from_millis(config.verify.settle_timeout_ms);
        let seen = tally.differences.len() as u64;
        let (differences, confirmed) =
            documents::recheck(&pair, tally.differences, || settled(&source, &point, settle)).await?;
        let in_flight = seen - differences.len() as u64;
        let schema =
            indexes::differences(&source.database(&ns.db), &ns.coll, &target.database(&mapped.db), &mapped.coll)
                .await?;
        let findings = Findings { compared: tally.compared, differences, confirmed, in_flight, schema };
        report.namespaces.push(NamespaceReport::new(ns, mapped, findings, config.verify.max_listed));
    }
    if let Some(ticker) = ticker {
        ticker.abort();
        eprintln!();
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.mode = if args.sample.is_some() { "sample" } else { "full" };
    record(config, &target, &report).await;
    Ok(report)
}

/// The source namespaces to compare: `--namespace`, else every collection of every user
/// database that `verify.include`/`exclude` select.
async fn namespaces(config: &Config, args: &Args, source: &mongodb::Client) -> Result<Vec<Namespace>, Error> {
    if !args.namespaces.is_empty() {
        return args
            .namespaces
            .iter()
            .map(|n| {
                n.split_once('.')
                    .map(|(d, c)| Namespace::new(d, c))
                    .ok_or(Error::Fatal(format!("--namespace {n}: not db.collection")))
            })
            .collect();
    }
    let anchored = |p: &str| Regex::new(&format!("^(?:{p})$")).map_err(|e| Error::Fatal(e.to_string()));
    let include = (!config.verify.include.is_empty()).then(|| anchored(&config.verify.include)).transpose()?;
    let exclude = (!config.verify.exclude.is_empty()).then(|| anchored(&config.verify.exclude)).transpose()?;
    let mut found = Vec::new();
    for db in source.list_database_names().await.map_err(|e| Error::mongo("list databases", e))? {
        if ["admin", "config", "local"].contains(&db.as_str()) || db == config.apply.metadata_database {
            continue;
        }
        let names = source
            .database(&db)
            .list_collection_names()
            .filter(doc! {"type": "collection"})
            .await
            .map_err(|e| Error::mongo("list collections", e))?;
        for coll in names.into_iter().filter(|c| !c.starts_with("system.")) {
            let ns = Namespace::new(&db, coll);
            let name = ns.to_string();
            if include.as_ref().is_none_or(|r| r.is_match(&name))
                && !exclude.as_ref().is_some_and(|r| r.is_match(&name))
            {
                found.push(ns);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Waits until the consistency point passes the source's present; `false` when it did not
/// within `timeout` (or the sink records no point: then after a short grace).
async fn settled(source: &mongodb::Client, point: &PointReader, timeout: Duration) -> Result<bool, Error> {
    let reply = source.database("admin").run_command(doc! {"ping": 1}).await.map_err(|e| Error::mongo("ping", e))?;
    let now: Option<ClusterTime> = reply.get_timestamp("operationTime").ok().map(Into::into);
    let deadline = Instant::now() + timeout;
    let grace = Instant::now() + timeout.min(Duration::from_secs(5));
    loop {
        match (point.point().await?, now) {
            (Some(reached), Some(now)) if reached >= now => return Ok(true),
            (None, _) if Instant::now() >= grace => return Ok(false),
            _ => {}
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Keeps the last result where `sink-writer status` finds it.
async fn record(config: &Config, target: &mongodb::Client, report: &Report) {
    let log = target.database(&config.apply.metadata_database).collection::<Document>("verify");
    let summary = doc! {
        "at": bson::DateTime::now(),
        "equal": report.equal(),
        "mode": report.mode,
        "namespaces": i64::try_from(report.namespaces.len()).unwrap_or(i64::MAX),
        "differences": i64::try_from(report.differences()).unwrap_or(i64::MAX),
    };
    let recorded = log.replace_one(doc! {"_id": &config.consume.group_id}, summary).upsert(true).await;
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
        let args: Vec<String> =
            ["--namespace", "a.b", "--sample", "50", "--json"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            parse(&args),
            Ok(Args { namespaces: vec!["a.b".into()], sample: Some(50), json: true, max_docs_per_second: None })
        );
        assert!(parse(&["--sample".to_string()]).is_err());
        assert!(parse(&["--bogus".to_string()]).is_err());
    }
}
