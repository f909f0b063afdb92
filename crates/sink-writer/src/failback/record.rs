//! `sink-writer failover record`, with the settings of the sink that replicated into the new
//! primary, once that sink has stopped and before the applications write to the new primary:
//! T, the consistency point the new primary reached of the old one (every change the old primary
//! made at or before T is here), and F, the new primary's own cluster time now, at its promotion
//! (its own writes come after F: the reverse capture starts there). Both go to
//! `<apply.metadata_database>.failover` on the new primary, once: running it again shows what was
//! recorded and never takes a later F.

use bson::DateTime;
use serde_json::json;

use super::journal::{self, time_text, Failover};
use super::{cluster_time, group, Outcome};
use crate::config::Config;
use crate::error::Error;
use crate::point::{complete_second, PointReader};

pub async fn run(config: &Config, dry_run: bool) -> Result<Outcome, Error> {
    let target = config
        .mongo
        .client_for("sink-writer-failover", config.apply.compat)
        .await
        .map_err(|e| Error::mongo("mongo.uri", e))?;
    let meta = target.database(&config.apply.metadata_database);
    let group = &config.consume.group_id;
    if let Some(kept) = journal::failover(&meta, group).await? {
        let text = format!("failover of {group} was recorded already, at {}:\n{}", kept.recorded_at, describe(&kept));
        return Ok(Outcome::done(json!({"recorded": false, "already_recorded": true, "failover": kept.json()}), text));
    }
    let mut blockers = Vec::new();
    let members = group::members(&config.kafka, group).await?;
    if members > 0 {
        blockers.push(format!(
            "the sink still runs (consumer group {group} has {members} members): let it apply what reached Kafka, \
             then stop it; its consistency point would still move"
        ));
    }
    let reading = PointReader::new(config, &target)?.read().await?;
    let point = reading.point();
    if point.is_none() {
        let unknown: Vec<String> = reading.unknown().iter().map(|(t, p)| format!("{t}/{p}")).collect();
        blockers.push(format!(
            "T is unknown: the consistency point cannot be told ({})",
            if unknown.is_empty() {
                "no topic read".to_string()
            } else {
                format!("no watermark on {}", unknown.join(", "))
            }
        ));
    }
    let promoted = cluster_time(&target).await?;
    if promoted.is_none() {
        blockers.push("F is unknown: the new primary answers without a cluster time".into());
    }
    let rules = transform::Rules::load(&config.transforms).map_err(|problems| Error::fatal(problems.join("; ")))?;
    let partitions: Vec<_> = reading.partitions.keys().filter(|(_, p)| *p >= 0).cloned().collect();
    let (pending, _) = crate::status::kafka_counts(config, &partitions).await?;
    let (Some(consistent_up_to), Some(promoted_at)) = (point, promoted) else {
        return Ok(Outcome::refused(blockers, json!({"recorded": false})));
    };
    if !blockers.is_empty() {
        return Ok(Outcome::refused(blockers, json!({"recorded": false})));
    }
    let failover = Failover {
        id: group.clone(),
        consistent_up_to,
        promoted_at,
        pending_messages: pending.values().sum(),
        transformed: rules.all().map(|rule| rule.namespaces.clone()).collect(),
        recorded_at: DateTime::now(),
        switched_back_at: None,
    };
    if dry_run {
        let text = format!("would record in {}.{}:\n{}", meta.name(), journal::FAILOVERS, describe(&failover));
        return Ok(Outcome::done(json!({"recorded": false, "failover": failover.json()}), text));
    }
    let kept = journal::record_failover(&meta, &failover).await?;
    let text = format!("recorded in {}.{}:\n{}", meta.name(), journal::FAILOVERS, describe(&kept));
    Ok(Outcome::done(json!({"recorded": true, "failover": kept.json()}), text))
}

fn describe(f: &Failover) -> String {
    let second = bson::DateTime::from_millis(i64::from(complete_second(f.consistent_up_to)) * 1000)
        .try_to_rfc3339_string()
        .unwrap_or_default();
    let transformed = if f.transformed.is_empty() {
        String::new()
    } else {
        format!(
            "  the documents of {} went through [transforms] rules on their way here: the new primary does not \
             hold them as the old one did, and `failback reconcile` will refuse\n",
            f.transformed.join(", ")
        )
    };
    format!(
        "  T = {} (every change the old primary made up to {second} is on the new primary)\n  \
         F = {} (the new primary's cluster time at its promotion)\n  \
         {} messages were not applied: the old primary's changes after T, reconciled at the failback\n\
         {transformed}next: point the applications at the new primary; start its capture of the way back with\n  \
         CDC_SOURCE__SNAPSHOT__MODE=never CDC_SOURCE__CAPTURE__START_AFTER_CLUSTER_TIME={}\n  \
         (a capture.name and topics.prefix of its own; capture.exclude the metadata databases)\n",
        time_text(f.consistent_up_to),
        time_text(f.promoted_at),
        f.pending_messages,
        time_text(f.promoted_at),
    )
}
