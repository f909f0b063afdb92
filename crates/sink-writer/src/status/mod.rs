//! `sink-writer status [--json] [--max-lag-seconds N]`: may I switch now? Per topic and overall:
//! the consistency point and its lag, messages not yet applied, dead letters waiting, DDL
//! waiting at a barrier, TTL indexes held back on the target, the last `verify` and its age;
//! then one verdict line. Exit status 0 when ready to cut over, 1 when not, 2 on errors.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use bson::{doc, Document};
use envelope::ClusterTime;
use futures::TryStreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;
use service_kit::kafka_auth::AuthContext;

use crate::config::Config;
use crate::error::Error;
use crate::offsets::Tp;
use crate::progress::{least, PointReader};

/// One topic's state.
#[derive(Debug, serde::Serialize)]
struct TopicState {
    topic: String,
    /// Source cluster time (seconds) up to which this topic is applied; none without watermarks.
    consistent_up_to: Option<u32>,
    /// Messages not yet committed as applied.
    pending_messages: i64,
}

#[derive(Debug, serde::Serialize)]
struct Status {
    consistent_up_to: Option<u32>,
    consistency_lag_seconds: Option<u64>,
    pending_messages: i64,
    dead_letters: i64,
    ddl_waiting: Vec<String>,
    ttl_held_back: Vec<String>,
    schema_conflicts: Vec<String>,
    last_verify: Option<serde_json::Value>,
    topics: Vec<TopicState>,
    ready: bool,
    verdict: String,
}

/// The `status` command.
pub fn command(config: Config, args: Vec<String>) -> service_kit::app::CommandFuture {
    Box::pin(async move {
        let mut json = false;
        let mut max_lag = 10_u64;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match (arg.as_str(), args.clone().next()) {
                ("--json", _) => json = true,
                ("--max-lag-seconds", Some(v)) if v.parse::<u64>().is_ok() => {
                    max_lag = v.parse().unwrap_or(max_lag);
                    args.next();
                }
                (other, _) => {
                    eprintln!("sink-writer status: unknown or incomplete argument '{other}'");
                    return ExitCode::from(2);
                }
            }
        }
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
    let reader = PointReader::new(config, &target)?;
    let partitions = reader.partitions().await?;
    let watermarks = reader.book.watermarks().await?;
    let meta = target.database(&config.apply.metadata_database);
    let (pending, dead_letters) = kafka_counts(config, &partitions).await?;

    let mut by_topic: BTreeMap<String, Vec<Tp>> = BTreeMap::new();
    for tp in &partitions {
        by_topic.entry(tp.0.clone()).or_default().push(tp.clone());
    }
    let topics: Vec<TopicState> = by_topic
        .iter()
        .map(|(topic, tps)| TopicState {
            topic: topic.clone(),
            consistent_up_to: least(tps, &watermarks).map(|at| at.t),
            pending_messages: tps.iter().map(|tp| pending.get(tp).copied().unwrap_or(0)).sum(),
        })
        .collect();
    let point: Option<ClusterTime> = least(&partitions, &watermarks);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let lag = point.map(|p| now.saturating_sub(u64::from(p.t)));

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
    let last_verify = meta
        .collection::<Document>("verify")
        .find_one(doc! {"_id": group})
        .await
        .map_err(|e| Error::mongo("read verify result", e))?
        .map(|d| {
            let age = d
                .get_datetime("at")
                .map(|at| (bson::DateTime::now().timestamp_millis() - at.timestamp_millis()) / 1000)
                .unwrap_or(-1);
            json!({"equal": d.get_bool("equal").unwrap_or(false), "mode": d.get_str("mode").unwrap_or("?"),
                   "differences": d.get_i64("differences").unwrap_or(0), "age_seconds": age})
        });
    let pending_messages: i64 = pending.values().sum();
    let mut blockers = Vec::new();
    match lag {
        None => blockers.push("no consistency point yet (does cdc-source write watermarks?)".to_string()),
        Some(lag) if lag > max_lag => blockers.push(format!("consistency lag {lag} s > {max_lag} s")),
        Some(_) => {}
    }
    if dead_letters > 0 {
        blockers.push(format!("{dead_letters} dead letters waiting"));
    }
    if !ddl_waiting.is_empty() {
        blockers.push(format!("{} DDL waiting at a barrier", ddl_waiting.len()));
    }
    match last_verify.as_ref().and_then(|v| v.get("equal")).and_then(serde_json::Value::as_bool) {
        None => blockers.push("no verify yet".to_string()),
        Some(false) => blockers.push("the last verify found differences".to_string()),
        Some(true) => {}
    }
    let ready = blockers.is_empty();
    let verdict = if ready { "ready to cut over".to_string() } else { format!("not ready: {}", blockers.join("; ")) };
    Ok(Status {
        consistent_up_to: point.map(|p| p.t),
        consistency_lag_seconds: lag,
        pending_messages,
        dead_letters,
        ddl_waiting,
        ttl_held_back,
        schema_conflicts,
        last_verify,
        topics,
        ready,
        verdict,
    })
}

/// Messages not yet committed per partition read, and records in the dead-letter topic.
async fn kafka_counts(config: &Config, partitions: &[Tp]) -> Result<(BTreeMap<Tp, i64>, i64), Error> {
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
    .map_err(|e| Error::Fatal(format!("status task: {e}")))?
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
    let point = |t: Option<u32>| {
        t.and_then(|t| bson::DateTime::from_millis(i64::from(t) * 1000).try_to_rfc3339_string().ok())
            .unwrap_or_else(|| "unknown".into())
    };
    out.push_str(&format!("{:<50} {:<22} {:>10}\n", "topic", "consistent up to", "pending"));
    for t in &s.topics {
        out.push_str(&format!("{:<50} {:<22} {:>10}\n", t.topic, point(t.consistent_up_to), t.pending_messages));
    }
    out.push_str(&format!(
        "\nconsistent up to {} (lag {}), {} messages pending, {} dead letters\n",
        point(s.consistent_up_to),
        s.consistency_lag_seconds.map_or("unknown".into(), |l| format!("{l} s")),
        s.pending_messages,
        s.dead_letters
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
    match &s.last_verify {
        Some(v) => out.push_str(&format!("last verify: {v}\n")),
        None => out.push_str("last verify: none\n"),
    }
    out.push_str(&format!("{}\n", s.verdict));
    out
}
