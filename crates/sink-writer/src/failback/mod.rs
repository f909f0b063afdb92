//! Going back after a failover without copying a collection, and without losing what the old
//! primary took after the consistency point (docs/operations.md, section 15). A is the old
//! primary, B the new one.
//!
//! ```text
//!  failover record        forward sink's settings (target B), the sink stopped:
//!                         T = the point B has of A, F = B's cluster time ──► B: <meta>.failover
//!  reverse capture        cdc-source on B, capture.start_after_cluster_time = F, a prefix of its own
//!  failback reconcile     reverse sink's settings (target A, verify.source_uri B), before it runs:
//!                         A's changes after T (change stream, T → marker) ─► each document on
//!                         A and B by _id ─► differ: A's version ──► A: <meta>.rollback
//!                                                    └► reverse capture re-sends B's state / delete
//!  reverse sink           applies B's changes after F, then the re-sent documents, to A
//!  failback switch-back   reverse sink stopped, B quiet after the reverse point, verify equal:
//!                         S = A's cluster time ──► both sides; the original direction starts after S
//! ```
//!
//! Every command takes `--dry-run` (prints what it would do, writes only a scan's marker) and
//! `--json`; it lists every precondition that does not hold and then does nothing (exit 1); it
//! keeps its progress in the metadata databases, so running it again after a crash goes on where
//! it stopped. Exit status 0 done, 1 refused or not complete, 2 errors.
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | the `failover` and `failback` commands: arguments, output, exit status |
//! | `record.rs` | `failover record`: T and F |
//! | `journal.rs` | the failover (on the new primary) and the failback's progress (on the old one) |
//! | `scan.rs` | a deployment's changes after a cluster time up to the present, by change stream |
//! | `reconcile.rs` | `failback reconcile`: the old primary's divergent writes saved and undone |
//! | `rollback.rs` | `<metadata_database>.rollback`: the saved versions; the report per namespace |
//! | `switch_back.rs` | `failback switch-back`: the point the original direction restarts after |
//! | `group.rs` | whether a sink still runs (its consumer group's members) |

mod group;
mod journal;
mod reconcile;
mod record;
mod rollback;
mod scan;
mod switch_back;

use std::process::ExitCode;

use bson::{doc, Document};
use envelope::ClusterTime;
use futures::TryStreamExt;
use serde_json::json;

use crate::config::Config;
use crate::error::Error;

/// What a step came to.
pub(crate) struct Outcome {
    /// Every precondition that does not hold; empty: the step ran (or, dry, would run).
    blockers: Vec<String>,
    /// Why it ran but is not complete (run it again).
    incomplete: Option<String>,
    json: serde_json::Value,
    text: String,
}

impl Outcome {
    fn done(json: serde_json::Value, text: String) -> Self {
        Self { blockers: Vec::new(), incomplete: None, json, text }
    }

    fn refused(blockers: Vec<String>, json: serde_json::Value) -> Self {
        Self { blockers, incomplete: None, json, text: String::new() }
    }

    fn incomplete(why: &str, json: serde_json::Value) -> Self {
        Self { blockers: Vec::new(), incomplete: Some(why.to_string()), json, text: String::new() }
    }

    fn ok(&self) -> bool {
        self.blockers.is_empty() && self.incomplete.is_none()
    }

    /// The JSON printed: the step's own fields, `done`, `blockers` and `verdict`.
    fn json(mut self) -> serde_json::Value {
        let verdict = self.verdict();
        if !self.json.is_object() {
            self.json = json!({});
        }
        self.json["done"] = json!(self.ok());
        self.json["blockers"] = json!(self.blockers);
        self.json["verdict"] = json!(verdict);
        self.json
    }

    fn verdict(&self) -> String {
        match (&self.incomplete, self.blockers.is_empty()) {
            (Some(why), _) => format!("not complete: {why}"),
            (None, false) => format!("refused: {}", self.blockers.join("; ")),
            (None, true) => "done".into(),
        }
    }
}

/// `failover`'s arguments.
#[derive(Debug, clap::Args)]
pub struct FailoverArgs {
    #[command(subcommand)]
    step: FailoverStep,
    #[command(flatten)]
    flags: StepFlags,
}

#[derive(Debug, clap::Subcommand)]
enum FailoverStep {
    /// With the forward sink stopped: the consistency point T of the old primary and the new primary's cluster time F, recorded on the new primary
    Record,
}

/// `failback`'s arguments.
#[derive(Debug, clap::Args)]
pub struct FailbackArgs {
    #[command(subcommand)]
    step: FailbackStep,
    #[command(flatten)]
    flags: StepFlags,
}

#[derive(Debug, clap::Subcommand)]
enum FailbackStep {
    /// The old primary's writes after T saved in <metadata>.rollback, and those documents sent again by the new primary
    Reconcile,
    /// Checks the way back is complete and records the point S the original direction restarts after
    SwitchBack,
    /// What was rolled back, per namespace
    Report,
}

/// What every step takes.
#[derive(Debug, clap::Args)]
struct StepFlags {
    /// Print what the step would do; write nothing but a scan's marker
    #[arg(long, global = true)]
    dry_run: bool,
    /// Print the outcome as one JSON object
    #[arg(long, global = true)]
    json: bool,
}

/// The `failover` command.
pub fn failover_command(config: Config, args: FailoverArgs) -> service_kit::app::CommandFuture {
    let FailoverStep::Record = args.step;
    Box::pin(async move { dispatch("failover", "record", args.flags, config).await })
}

/// The `failback` command.
pub fn failback_command(config: Config, args: FailbackArgs) -> service_kit::app::CommandFuture {
    let step = match args.step {
        FailbackStep::Reconcile => "reconcile",
        FailbackStep::SwitchBack => "switch-back",
        FailbackStep::Report => "report",
    };
    Box::pin(async move { dispatch("failback", step, args.flags, config).await })
}

async fn dispatch(name: &str, verb: &str, flags: StepFlags, config: Config) -> ExitCode {
    let StepFlags { dry_run, json } = flags;
    let outcome = match verb {
        "record" => record::run(&config, dry_run).await,
        "reconcile" => reconcile::run(&config, dry_run).await,
        "switch-back" => switch_back::run(&config, dry_run).await,
        _ => report(&config).await,
    };
    match outcome {
        Ok(outcome) => {
            let ok = outcome.ok();
            if json {
                println!("{}", outcome.json());
            } else {
                print!("{}", outcome.text);
                println!("{}", outcome.verdict());
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("sink-writer {name} {verb}: {e}");
            ExitCode::from(2)
        }
    }
}

/// The old primary (`mongo.uri`) and the new one (`verify.source_uri`), or why not.
async fn clients(config: &Config, app: &str) -> Result<Result<(mongodb::Client, mongodb::Client), String>, Error> {
    if !config.apply.mapping.is_empty() {
        return Ok(Err("apply.mapping renames namespaces: a failback needs the same names on both sides".into()));
    }
    if config.verify.source_uri.expose().is_empty() {
        return Ok(Err("set verify.source_uri to the new primary (the reverse direction's source)".into()));
    }
    let old = config.mongo.client_for(app, config.apply.compat).await.map_err(|e| Error::mongo("mongo.uri", e))?;
    let new = service_kit::connect::MongoConnection { uri: config.verify.source_uri.clone(), ..config.mongo.clone() }
        .client_for(app, config.apply.compat)
        .await
        .map_err(|e| Error::mongo("verify.source_uri", e))?;
    Ok(Ok((old, new)))
}

/// Why the failback cannot start without its failover.
fn no_failover(config: &Config) -> String {
    format!(
        "no failover recorded in {}.{} on the new primary (verify.source_uri): T and F are unknown; record it with \
         `sink-writer failover record` and the forward sink's settings (or set failback.failover_database / \
         failover_group)",
        config.failover_database(),
        journal::FAILOVERS
    )
}

/// A deployment's cluster time now (`operationTime` of a no-op read); none when it tells none.
async fn cluster_time(client: &mongodb::Client) -> Result<Option<ClusterTime>, Error> {
    let reply = client.database("admin").run_command(doc! {"ping": 1}).await.map_err(|e| Error::mongo("ping", e))?;
    Ok(reply
        .get_timestamp("operationTime")
        .ok()
        .or_else(|| reply.get_document("$clusterTime").ok().and_then(|c| c.get_timestamp("clusterTime").ok()))
        .map(ClusterTime::from))
}

/// `failback report`: what was rolled back, per namespace, read from the old primary alone.
async fn report(config: &Config) -> Result<Outcome, Error> {
    let old = config
        .mongo
        .client_for("sink-writer-failback", config.apply.compat)
        .await
        .map_err(|e| Error::mongo("mongo.uri", e))?;
    let meta = old.database(&config.apply.metadata_database);
    let id = if config.failback.failover_group.is_empty() {
        let found: Vec<Document> = meta
            .collection::<Document>(journal::PROGRESS)
            .find(doc! {})
            .sort(doc! {"saved_on": -1})
            .limit(1)
            .await
            .map_err(|e| Error::mongo("read the failback's progress", e))?
            .try_collect()
            .await
            .map_err(|e| Error::mongo("read the failback's progress", e))?;
        match found.first().and_then(|d| d.get_str("_id").ok()) {
            Some(id) => id.to_string(),
            None => {
                return Ok(Outcome::refused(
                    vec![format!("no failback in {}.{}", meta.name(), journal::PROGRESS)],
                    json!({}),
                ))
            }
        }
    } else {
        config.failback.failover_group.clone()
    };
    let reports = rollback::Rollback::new(&meta, &id).report(config.verify.max_listed).await?;
    let mut text =
        format!("rolled back at the failback of {id} (versions in {}.{}):\n", meta.name(), rollback::COLLECTION);
    for r in &reports {
        text.push_str(&format!("  {}: {} documents, {} re-sent\n", r.ns, r.rolled_back, r.resent));
    }
    let total: u64 = reports.iter().map(|r| r.rolled_back).sum();
    Ok(Outcome::done(json!({"failover": id, "rolled_back": total, "namespaces": reports}), text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_with_its_flags() {
        let failback = |args: &[&str]| service_kit::cli::parse_command::<FailbackArgs>("failback", args);
        let parsed = failback(&["reconcile", "--dry-run"]).expect("valid");
        assert!(matches!(parsed.step, FailbackStep::Reconcile) && parsed.flags.dry_run && !parsed.flags.json);
        let parsed = failback(&["--json", "switch-back"]).expect("valid");
        assert!(matches!(parsed.step, FailbackStep::SwitchBack) && parsed.flags.json);
        assert!(failback(&[]).is_err(), "a step is needed");
        assert!(failback(&["reconcile", "switch-back"]).is_err(), "one step at a time");
        assert!(failback(&["reconcile", "--force"]).is_err());
        let failover = |args: &[&str]| service_kit::cli::parse_command::<FailoverArgs>("failover", args);
        assert!(failover(&["record", "--dry-run"]).expect("valid").flags.dry_run);
        assert!(failover(&["reconcile"]).is_err());
    }

    #[test]
    fn the_verdict_names_every_blocker() {
        let refused = Outcome::refused(vec!["a".into(), "b".into()], json!({"x": 1}));
        assert!(!refused.ok());
        let printed = refused.json();
        assert_eq!((printed["x"].as_i64(), printed["done"].as_bool()), (Some(1), Some(false)));
        assert_eq!(printed["verdict"], "refused: a; b");
        let incomplete = Outcome::incomplete("run again", json!({}));
        assert_eq!(incomplete.json()["verdict"], "not complete: run again");
        assert_eq!(Outcome::done(json!({}), String::new()).json()["done"], true);
    }
}
