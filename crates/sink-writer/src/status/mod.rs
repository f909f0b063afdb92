//! `sink-writer status [--json] [--max-lag-seconds N]`: may I switch now? Per topic and overall:
//! the consistency point (the last whole second every change of which is on the target, and the
//! exact cluster time) and its lag, messages not yet applied, dead letters of this group still
//! open, DDL waiting at a barrier, schema changes the target refuses, TTL indexes held back on the
//! target, the last full verify and its age, cdc-source's checkpoint and its age; then the
//! verdict: ready to cut over, or every condition that fails. Exit status 0 when ready, 1 when
//! not, 2 on errors.
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | the command: gathering the facts, printing them |
//! | `verdict.rs` | the conditions of a cutover and the blockers (pure) |
//! | `checkpoints.rs` | cdc-source's checkpoint read from its topic |

mod checkpoints;
pub(crate) mod verdict;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use bson::{doc, Document};
use futures::TryStreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;
use service_kit::kafka_auth::AuthContext;

use crate::config::Config;
use crate::consume::offsets::Tp;
use crate::error::Error;
use crate::point::{complete_second, PointReader};
use verdict::{CheckpointState, Facts, VerifyRecord};

/// One topic's state.
#[derive(Debug, serde::Serialize)]
struct TopicState {
    topic: String,
    /// The last second (source cluster time) every change of which on this topic is applied.
    consistent_up_to: Option<u32>,
    /// Messages not yet committed as applied.
    pending_messages: i64,
}

#[derive(Debug, serde::Serialize)]
struct Status {
    /// The last whole second (source cluster time, seconds since the epoch) every change of which
    /// is on the target: `consistent_up_to_cluster_time` less a second unless that one is whole.
    consistent_up_to: Option<u32>,
    /// The consistency point: every change with a cluster time at or before it is applied.
    consistent_up_to_cluster_time: Option<serde_json::Value>,
    consistency_lag_seconds: Option<u64>,
    pending_messages: i64,
    /// Dead letters of this consumer group not yet retried or skipped.
    dead_letters: u64,
    /// Records in the dead-letter topic, all groups, until retention removes them (information).
    dead_letter_topic_records: i64,
    ddl_waiting: Vec<String>,
    ttl_held_back: Vec<String>,
    schema_conflicts: Vec<String>,
    /// The last full verify (every namespace, every document): the one that counts.
    last_verify: Option<VerifyRecord>,
    /// The last verify of some namespaces or a sample (information).
    last_partial_verify: Option<VerifyRecord>,
    checkpoints: Vec<CheckpointState>,
    topics: Vec<TopicState>,
    ready: bool,
    blockers: Vec<String>,
    verdict: String,
}

/// What the command line asked for.
#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// Print the status as one JSON object
    #[arg(long)]
    json: bool,
    /// The lag (seconds) above which the target is not ready to cut over; default: status.max_lag_seconds
    #[arg(long, value_name = "N")]
    max_lag_seconds: Option<u64>,
}

/// The `status` command.
pub fn command(config: Config, args: Args) -> service_kit::app::CommandFuture {
    Box::pin(async move {
        let json = args.json;
        let max_lag = args.max_lag_seconds.unwrap_or(config.status.max_lag_seconds);
        match status(&config, max_lag).await {
            Ok(status) => {
                if json {
                    println!("{}", json!(status));
                } else {
                    print!("{}", render(&status));
                }
                if status.ready {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("sink-writer status: {e}");
                ExitCode::from(2)
            }
        }
    })
}

async fn status(config: &Config, max_lag: u64) -> Result<Status, Error> {
    let target = config
        .mongo
        .client_for("sink-writer-status", config.apply.compat)
        .await
        .map_err(|e| Error::mongo("mongo.uri", e))?;
    let reading = PointReader::new(config, &target)?.read().await?;
    let partitions: Vec<Tp> = reading.partitions.keys().filter(|(_, p)| *p >= 0).cloned().collect();
    let meta = target.database(&config.apply.metadata_database);
    let (pending, dead_letter_topic_records) = kafka_counts(config, &partitions).await?;
    let (kafka, group, captures) = (config.kafka.clone(), config.consume.group_id.clone(), config.status.checkpoints());
    let checkpoints = tokio::task::spawn_blocking(move || checkpoints::read(&kafka, &group, &captures))
        .await
        .map_err(|e| Error::fatal(format!("checkpoint task: {e}")))?;

    let mut by_topic: BTreeMap<&str, Vec<&Tp>> = BTreeMap::new();
    for tp in reading.partitions.keys() {
        by_topic.entry(tp.0.as_str()).or_default().push(tp);
    }
    let topics: Vec<TopicState> = by_topic
        .iter()
        .map(|(topic, tps)| TopicState {
            topic: topic.to_string(),
            consistent_up_to: reading.topic(topic).map(complete_second),
            pending_messages: tps.iter().map(|tp| pending.get(*tp).copied().unwrap_or(0)).sum(),
        })
        .collect();
    let point = reading.point();
    let second = point.map(complete_second);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let lag = second.map(|s| now.saturating_sub(u64::from(s)));

    let group = &config.consume.group_id;
    let ddl_waiting = list(&meta, "ddl", doc! {"group": group, "applied": {"$ne": true}}, |d| {
        format!("{} {}", d.get_str("kind").unwrap_or("?"), d.get_str("scope").unwrap_or("?"))
    })
    .await?;
    let ttl_held_back = list(&meta, "ttl", doc! {"policy": "SourceDeletes"}, |d| {
        format!(
            "{}.{} index {}: expireAfterSeconds {} on the source",
            d.get_str("db").unwrap_or("?"),
            d.get_str("collection").unwrap_or("?"),
            d.get_str("index").unwrap_or("?"),
            d.get("expireAfterSeconds").map(ToString::to_string).unwrap_or_default()
        )
    })
    .await?;
    let schema_conflicts = list(&meta, "schema_conflicts", doc! {}, |d| {
        format!("{}: {}", d.get_str("what").unwrap_or("?"), d.get_str("reason").unwrap_or("?"))
    })
    .await?;
    // Until the dead-letter ledger exists, there is nothing open in it.
    let dead_letters = meta
        .collection::<Document>("dead_letters")
        .count_documents(doc! {"group": group, "state": "open"})
        .await
        .map_err(|e| Error::mongo("count dead letters", e))?;
    let last_verify = verify_record(&meta, group).await?;
    let last_partial_verify = verify_record(&meta, &format!("{group}|partial")).await?;

    let facts = Facts {
        lag,
        max_lag,
        unknown: reading.unknown().iter().map(|(t, p)| format!("{t}/{p}")).collect(),
        verify: last_verify.clone().filter(VerifyRecord::is_full),
        verify_max_age: config.status.verify_max_age_seconds,
        schema_conflicts: schema_conflicts.len(),
        ddl_waiting: ddl_waiting.len(),
        open_dead_letters: dead_letters,
        checkpoints: checkpoints.clone(),
        checkpoint_max_age: config.status.checkpoint_max_age_seconds,
    };
    let blockers = verdict::blockers(&facts);
    let ready = blockers.is_empty();
    let verdict = if ready { "ready to cut over".to_string() } else { format!("not ready: {}", blockers.join("; ")) };
    Ok(Status {
        consistent_up_to: second,
        consistent_up_to_cluster_time: point.map(|p| json!({"t": p.t, "i": p.i})),
        consistency_lag_seconds: lag,
        pending_messages: pending.values().sum(),
        dead_letters,
        dead_letter_topic_records,
        ddl_waiting,
        ttl_held_back,
        schema_conflicts,
        last_verify,
        last_partial_verify,
        checkpoints,
        topics,
        ready,
        blockers,
        verdict,
    })
}

/// A verify result kept by `verify` under `id`, if any.
pub(crate) async fn verify_record(meta: &mongodb::Database, id: &str) -> Result<Option<VerifyRecord>, Error> {
    let found = meta
        .collection::<Document>("verify")
        .find_one(doc! {"_id": id})
        .await
        .map_err(|e| Error::mongo("read verify result", e))?;
    Ok(found.map(|d| VerifyRecord {
        mode: d.get_str("mode").unwrap_or("?").to_string(),
        // Recorded before scopes were: it counts as partial.
        scope: d.get_str("scope").unwrap_or("?").to_string(),
        outcome: d.get_str("outcome").unwrap_or("?").to_string(),
        differences: d.get_i64("differences").unwrap_or(0),
        unconfirmed: d.get_i64("unconfirmed").unwrap_or(0),
        age_seconds: d
            .get_datetime("at")
            .map(|at| (bson::DateTime::now().timestamp_millis() - at.timestamp_millis()) / 1000)
            .unwrap_or(-1),
    }))
}

/// Messages not yet committed per partition read, and records in the dead-letter topic.
pub(crate) async fn kafka_counts(config: &Config, partitions: &[Tp]) -> Result<(BTreeMap<Tp, i64>, i64), Error> {
    config.kafka.prepare_auth().await;
    let consumer: BaseConsumer<AuthContext> = config
        .kafka
        .client_config_with(&[("group.id", &config.consume.group_id), ("enable.auto.commit", "false")])
        .create_with_context(config.kafka.context())
        .map_err(|e| Error::kafka("create a status client", e))?;
    let (partitions, dlq) = (partitions.to_vec(), config.consume.dead_letter_topic.clone());
    tokio::task::spawn_blocking(move || {
        let timeout = Duration::from_secs(10);
        let mut list = TopicPartitionList::new();
        for (topic, partition) in &partitions {
            list.add_partition(topic, *partition);
        }
        let committed = consumer.committed_offsets(list, timeout).map_err(|e| Error::kafka("committed offsets", e))?;
        let mut pending = BTreeMap::new();
        for element in committed.elements() {
            let (low, high) = consumer
                .fetch_watermarks(element.topic(), element.partition(), timeout)
                .map_err(|e| Error::kafka("watermarks", e))?;
            let from = match element.offset() {
                Offset::Offset(o) => o,
                _ => low,
            };
            pending.insert((element.topic().to_string(), element.partition()), (high - from).max(0));
        }
        let metadata = consumer.fetch_metadata(Some(&dlq), timeout).map_err(|e| Error::kafka("metadata", e))?;
        let mut dead = 0;
        for topic in metadata.topics().iter().filter(|t| t.error().is_none()) {
            for p in topic.partitions() {
                let (low, high) =
                    consumer.fetch_watermarks(&dlq, p.id(), timeout).map_err(|e| Error::kafka("watermarks", e))?;
                dead += high - low;
            }
        }
        Ok((pending, dead))
    })
    .await
    .map_err(|e| Error::fatal(format!("status task: {e}")))?
}

async fn list(
    db: &mongodb::Database,
    coll: &str,
    filter: Document,
    line: impl Fn(&Document) -> String,
) -> Result<Vec<String>, Error> {
    let found: Vec<Document> = db
        .collection::<Document>(coll)
        .find(filter)
        .await
        .map_err(|e| Error::mongo("read metadata", e))?
        .try_collect()
        .await
        .map_err(|e| Error::mongo("read metadata", e))?;
    Ok(found.iter().map(line).collect())
}

fn render(s: &Status) -> String {
    let mut out = String::new();
    let second = |t: Option<u32>| {
        t.and_then(|t| bson::DateTime::from_millis(i64::from(t) * 1000).try_to_rfc3339_string().ok())
            .map_or_else(|| "unknown".into(), |at| format!("{at} (that second included)"))
    };
    out.push_str(&format!("{:<50} {:<44} {:>10}\n", "topic", "every change up to", "pending"));
    for t in &s.topics {
        out.push_str(&format!("{:<50} {:<44} {:>10}\n", t.topic, second(t.consistent_up_to), t.pending_messages));
    }
    out.push_str(&format!(
        "\nevery change up to {} is on the target (point {}; lag {}), {} messages pending\n",
        second(s.consistent_up_to),
        s.consistent_up_to_cluster_time.as_ref().map_or("unknown".into(), ToString::to_string),
        s.consistency_lag_seconds.map_or("unknown".into(), |l| format!("{l} s")),
        s.pending_messages,
    ));
    out.push_str(&format!(
        "dead letters of this group still open: {} ({} records in the dead-letter topic, all groups)\n",
        s.dead_letters, s.dead_letter_topic_records
    ));
    for d in &s.ddl_waiting {
        out.push_str(&format!("DDL waiting: {d}\n"));
    }
    for c in &s.schema_conflicts {
        out.push_str(&format!("schema change the target refuses (replication goes on): {c}\n"));
    }
    for t in &s.ttl_held_back {
        out.push_str(&format!("TTL held back on the target (set it at cutover): {t}\n"));
    }
    for c in &s.checkpoints {
        let age = c.age_seconds.map_or("none found".into(), |a| format!("{a} s old"));
        out.push_str(&format!("cdc-source checkpoint '{}' ({}): {age}\n", c.capture, c.topic));
    }
    let verify = |v: &Option<VerifyRecord>| {
        v.as_ref().map_or("none".into(), |v| {
            format!(
                "{} ({} {}, {} differences, {} unconfirmed, {} s ago)",
                v.outcome, v.mode, v.scope, v.differences, v.unconfirmed, v.age_seconds
            )
        })
    };
    out.push_str(&format!("last full verify: {}\n", verify(&s.last_verify)));
    out.push_str(&format!("last partial verify: {}\n", verify(&s.last_partial_verify)));
    out.push_str(&format!("{}\n", s.verdict));
    out
}
