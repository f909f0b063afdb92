//! `sink-writer dead-letters list [--open] [--json] | retry [ID…|--all] [--json] |
//! skip [ID…|--all] --reason TEXT [--json]`: this group's dead letters, and an operator's
//! decision on the open ones. `retry` asks cdc-source to send each document's current state
//! again (the dead letter stays open until the sink applies it, then it is `retried`); `skip`
//! records that the difference is accepted (`skipped`, by whom, when, why). Exit status 0, 1 when
//! a retry was not answered (or refused) by cdc-source in time, 2 on errors.

use std::collections::BTreeMap;
use std::process::ExitCode;

use bson::{doc, Bson, DateTime, Document};
use envelope::Namespace;
use futures::TryStreamExt;
use serde_json::json;

use super::book::{Book, OPEN, SKIPPED};
use crate::config::Config;
use crate::error::Error;
use crate::resend::Resend;

/// What the command line asked for.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Verb,
    /// Print the result as one JSON object
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Verb {
    /// List this group's dead letters
    List {
        /// Only the open ones (they hold the consistency point)
        #[arg(long)]
        open: bool,
    },
    /// Ask cdc-source to send each named document's current state again; the dead letter stays open until applied
    Retry(Chosen),
    /// Record that the difference is accepted (who, when, why); the dead letter no longer holds the point
    Skip {
        #[command(flatten)]
        chosen: Chosen,
        /// Why the difference is accepted
        #[arg(long, value_name = "TEXT", value_parser = not_blank)]
        reason: String,
    },
}

/// Dead letters by id, or all of the open ones (one or the other).
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct Chosen {
    /// The dead letters' ids (as `list` prints them)
    #[arg(value_name = "ID")]
    ids: Vec<String>,
    /// Every open dead letter
    #[arg(long)]
    all: bool,
}

fn not_blank(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        Err("say why".into())
    } else {
        Ok(text.to_string())
    }
}

/// What to do.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    List { open: bool },
    Retry { ids: Vec<String>, all: bool },
    Skip { ids: Vec<String>, all: bool, reason: String },
}

impl Args {
    fn action(self) -> (Action, bool) {
        let action = match self.action {
            Verb::List { open } => Action::List { open },
            Verb::Retry(Chosen { ids, all }) => Action::Retry { ids, all },
            Verb::Skip { chosen: Chosen { ids, all }, reason } => Action::Skip { ids, all, reason },
        };
        (action, self.json)
    }
}

/// The `dead-letters` command.
pub fn command(config: Config, args: Args) -> service_kit::app::CommandFuture {
    Box::pin(async move {
        let (action, json) = args.action();
        match run(&config, action).await {
            Ok((done, text, value)) => {
                if json {
                    println!("{value}");
                } else {
                    print!("{text}");
                }
                if done {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("sink-writer dead-letters: {e}");
                ExitCode::from(2)
            }
        }
    })
}

/// Whether it all went through, the text, and the JSON.
async fn run(config: &Config, action: Action) -> Result<(bool, String, serde_json::Value), Error> {
    let target = config
        .mongo
        .client_for("sink-writer-dead-letters", config.apply.compat)
        .await
        .map_err(|e| Error::mongo("mongo.uri", e))?;
    let book = Book::new(&target, &config.apply.metadata_database, &config.consume.group_id);
    match action {
        Action::List { open } => list(&book, open).await,
        Action::Retry { ids, all } => retry(config, &book, &ids, all).await,
        Action::Skip { ids, all, reason } => skip(&book, &ids, all, &reason).await,
    }
}

/// This group's dead letters (`open`: only those), oldest first.
async fn find(book: &Book, filter: Document) -> Result<Vec<Document>, Error> {
    let mut filter = filter;
    filter.insert("group", book.group());
    book.collection()
        .find(filter)
        .sort(doc! {"at": 1, "_id": 1})
        .await
        .map_err(|e| Error::mongo("read dead letters", e))?
        .try_collect()
        .await
        .map_err(|e| Error::mongo("read dead letters", e))
}

async fn list(book: &Book, open: bool) -> Result<(bool, String, serde_json::Value), Error> {
    let letters = find(
        book,
        if open {
            doc! {"state": OPEN}
        } else {
            doc! {}
        },
    )
    .await?;
    let mut text = format!("{} dead letters of group {}\n", letters.len(), book.group());
    for d in &letters {
        let field = |name: &str| d.get_str(name).unwrap_or("-").to_string();
        text.push_str(&format!(
            "{}  {}  {}  {} _id {}  at {}\n    {}\n",
            field("_id"),
            field("state"),
            field("stage"),
            field("ns"),
            field("id"),
            d.get_datetime("at").map(|t| t.to_string()).unwrap_or_default(),
            field("reason"),
        ));
    }
    let value: Vec<serde_json::Value> = letters.into_iter().map(|d| Bson::Document(d).into_relaxed_extjson()).collect();
    Ok((true, text, json!(value)))
}

/// The open dead letters named (or all), each with what a retry needs when it has it.
async fn chosen(book: &Book, ids: &[String], all: bool) -> Result<Vec<Document>, Error> {
    let mut filter = doc! {"state": OPEN};
    if !all {
        filter.insert("_id", doc! {"$in": ids.to_vec()});
    }
    let found = find(book, filter).await?;
    let missing: Vec<&String> =
        ids.iter().filter(|id| !found.iter().any(|d| d.get_str("_id").ok() == Some(id.as_str()))).collect();
    if !missing.is_empty() {
        return Err(Error::fatal(format!("not open dead letters of group {}: {missing:?}", book.group())));
    }
    Ok(found)
}

async fn retry(
    config: &Config,
    book: &Book,
    ids: &[String],
    all: bool,
) -> Result<(bool, String, serde_json::Value), Error> {
    let letters = chosen(book, ids, all).await?;
    let mut by_ns: BTreeMap<String, Vec<(String, Bson)>> = BTreeMap::new();
    let mut cannot = Vec::new();
    for d in &letters {
        let letter = d.get_str("_id").unwrap_or_default().to_string();
        let id = d
            .get_str("id")
            .ok()
            .and_then(|text| envelope::extjson::document_from_str(&format!("{{\"_id\": {text}}}")).ok());
        match (d.get_str("ns"), id.and_then(|doc| doc.get("_id").cloned())) {
            (Ok(ns), Some(id)) => by_ns.entry(ns.to_string()).or_default().push((letter, id)),
            _ => cannot.push(letter),
        }
    }
    let mut resend = Resend::new(config).await?;
    let mut requests = Vec::new();
    for (ns, letters) in &by_ns {
        let Some((db, coll)) = ns.split_once('.') else { continue };
        let sent = resend
            .request(&Namespace::new(db, coll), letters.iter().map(|(_, id)| id.clone()).collect(), "dead-letter retry")
            .await?;
        let names: Vec<&String> = letters.iter().map(|(letter, _)| letter).collect();
        book.collection()
            .update_many(
                doc! {"_id": {"$in": names}, "state": OPEN},
                doc! {"$set": {"retry": {"requests": sent.clone(), "at": DateTime::now(), "by": who()}}},
            )
            .await
            .map_err(|e| Error::mongo("record a retry", e))?;
        requests.extend(sent);
    }
    let answers = resend.answers().await?;
    let (mut resent, mut deleted, mut superseded) = (0, 0, 0);
    let mut refused = Vec::new();
    for reply in answers.replies.values() {
        resent += reply.resent;
        deleted += reply.deleted;
        superseded += reply.superseded;
        refused.extend(reply.error.clone());
    }
    let requested: usize = by_ns.values().map(Vec::len).sum();
    let mut text = format!(
        "asked cdc-source to send {requested} documents again ({} requests): re-sent {resent}, deleted {deleted} \
         (gone from the source), {superseded} superseded by their own change; each dead letter stays open until the \
         sink applies its document's state, then it is retried\n",
        requests.len()
    );
    for reason in &refused {
        text.push_str(&format!("refused: {reason}\n"));
    }
    if !answers.unanswered.is_empty() {
        text.push_str(&format!(
            "{} requests not answered within repair.reply_timeout_ms: is cdc-source running and streaming? they stay \
             in its request topic and are answered when it is\n",
            answers.unanswered.len()
        ));
    }
    if !cannot.is_empty() {
        text.push_str(&format!("cannot be retried (the record did not decode: skip them): {cannot:?}\n"));
    }
    let value = json!({"requested": requested, "requests": requests, "resent": resent, "deleted": deleted,
        "superseded": superseded, "refused": refused, "unanswered": answers.unanswered, "cannot_retry": cannot});
    Ok((answers.complete() && cannot.is_empty(), text, value))
}

async fn skip(
    book: &Book,
    ids: &[String],
    all: bool,
    reason: &str,
) -> Result<(bool, String, serde_json::Value), Error> {
    let letters = chosen(book, ids, all).await?;
    let names: Vec<&str> = letters.iter().filter_map(|d| d.get_str("_id").ok()).collect();
    let skipped = book
        .collection()
        .update_many(
            doc! {"_id": {"$in": names.clone()}, "group": book.group(), "state": OPEN},
            doc! {"$set": {"state": SKIPPED, "skipped": {"by": who(), "at": DateTime::now(), "reason": reason}}},
        )
        .await
        .map_err(|e| Error::mongo("skip dead letters", e))?
        .modified_count;
    let text = format!("{skipped} dead letters skipped: their partitions' consistency point moves on\n");
    Ok((true, text, json!({"skipped": skipped, "ids": names})))
}

/// Who decided: the user and the host.
fn who() -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown-host".into());
    format!("{user}@{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(Action, bool), clap::Error> {
        let args: Vec<&str> = text.split_whitespace().collect();
        service_kit::cli::parse_command::<Args>("dead-letters", &args).map(Args::action)
    }

    #[test]
    fn arguments_name_dead_letters_or_all_and_skip_needs_a_reason() {
        assert_eq!(parse("list --json").expect("valid"), (Action::List { open: false }, true));
        assert_eq!(parse("--json list --open").expect("valid"), (Action::List { open: true }, true));
        assert_eq!(
            parse("retry a b").expect("valid"),
            (Action::Retry { ids: vec!["a".into(), "b".into()], all: false }, false)
        );
        assert_eq!(parse("retry --all").expect("valid"), (Action::Retry { ids: vec![], all: true }, false));
        assert!(parse("retry").is_err(), "nothing named");
        assert!(parse("retry a --all").is_err(), "both");
        assert!(parse("skip --all").is_err(), "no reason");
        assert!(parse("skip x --reason").is_err(), "an empty reason");
        let skip = service_kit::cli::parse_command::<Args>("dead-letters", &["skip", "x", "--reason", "fixed by hand"]);
        assert_eq!(
            skip.expect("valid").action(),
            (Action::Skip { ids: vec!["x".into()], all: false, reason: "fixed by hand".into() }, false)
        );
        assert!(parse("bogus").is_err());
    }
}
