//! `sink-writer failback switch-back`, with the reverse sink's settings: the planned switch back
//! to the old primary, the cutover runbook in the other direction, then the point S the original
//! direction restarts from without a snapshot. It runs once the applications stopped writing to
//! the new primary, the reverse sink applied everything and stopped, and a full verify found both
//! equal; it checks all of that:
//!
//! - the failback was reconciled (the old primary's divergent writes are rolled back);
//! - the reverse sink is stopped (its group has no members) and holds no open dead letter;
//! - the last full verify of the reverse group found everything equal, within
//!   `status.verify_max_age_seconds`;
//! - the new primary changed nothing after the reverse consistency point P (its changes after P,
//!   read from its change stream up to a marker): the old primary holds all of it.
//!
//! S is then the old primary's cluster time: everything before it is on both sides, and the
//! original direction's capture starts after it. S is kept on both sides; running this again
//! shows it and never takes a later one.

use std::time::Duration;

use bson::{doc, Document};
use serde_json::json;

use super::journal::{self, time_json, time_text, Phase};
use super::scan::{self, Scope};
use super::{clients, cluster_time, group, Outcome};
use crate::config::Config;
use crate::error::Error;
use crate::point::PointReader;

pub async fn run(config: &Config, dry_run: bool) -> Result<Outcome, Error> {
    let (old, new) = match clients(config, "sink-writer-failback").await? {
        Ok(clients) => clients,
        Err(blocker) => return Ok(Outcome::refused(vec![blocker], json!({}))),
    };
    let failover_db = new.database(config.failover_database());
    let Some(failover) = journal::failover(&failover_db, &config.failback.failover_group).await? else {
        return Ok(Outcome::refused(vec![super::no_failover(config)], json!({})));
    };
    let meta = old.database(&config.apply.metadata_database);
    let progress = journal::progress(&meta, &failover.id).await?;
    let mut out = json!({"failover": failover.json(), "dry_run": dry_run});
    if let (Phase::SwitchedBack, Some(at)) = (progress.phase, progress.switched_back_at) {
        // A run that stopped between the two records finishes here.
        journal::switched_back(&failover_db, &failover.id, at).await?;
        out["switched_back_at_cluster_time"] = time_json(at);
        return Ok(Outcome::done(out, format!("switched back already, at {}\n{}", time_text(at), next(at))));
    }
    let mut blockers = Vec::new();
    if progress.phase < Phase::Reconciled {
        blockers.push(
            "the old primary's divergent writes are not reconciled: run `sink-writer failback reconcile` first".into(),
        );
    }
    let group = &config.consume.group_id;
    let members = group::members(&config.kafka, group).await?;
    if members > 0 {
        blockers.push(format!(
            "the reverse sink still runs (consumer group {group} has {members} members): stop it once its \
             consistency point has passed the new primary's last write"
        ));
    }
    let open = meta
        .collection::<Document>("dead_letters")
        .count_documents(doc! {"group": group, "state": "open"})
        .await
        .map_err(|e| Error::mongo("count dead letters", e))?;
    if open > 0 {
        blockers
            .push(format!("{open} dead letters of {group} are open: retry or skip them (`sink-writer dead-letters`)"));
    }
    let verify = crate::status::verify_record(&meta, group).await?;
    match verify.as_ref().filter(|v| v.is_full()) {
        Some(v)
            if v.outcome == "equal"
                && u64::try_from(v.age_seconds).is_ok_and(|a| a <= config.status.verify_max_age_seconds) => {}
        Some(v) => blockers.push(format!(
            "the last full verify found the old primary {} ({} s ago): run `sink-writer verify` once the reverse sink \
             has caught up; it must exit 0",
            v.outcome, v.age_seconds
        )),
        None => {
            blockers.push("no full verify of the reverse direction: run `sink-writer verify`; it must exit 0".into())
        }
    }
    let point = PointReader::new(config, &old)?.read().await?.point();
    match point {
        None => blockers.push("the reverse consistency point is unknown".into()),
        Some(point) => {
            let timeout = Duration::from_millis(config.failback.scan_timeout_ms);
            let scan = scan::scan(&new, point, &Scope::new(config)?, config.failover_database(), timeout).await?;
            out["new_primary_changes_after_point"] = json!(scan.documents.len() + scan.schema_changes.len());
            out["consistent_up_to_cluster_time"] = time_json(point);
            if let Some((_, last)) = scan.last_change.as_ref() {
                blockers.push(format!(
                    "the new primary changed {} documents after the point the old primary has reached ({}; the \
                     last: {last}): stop the applications writing to it, let the reverse sink catch up, then stop it",
                    scan.documents.len(),
                    time_text(point)
                ));
            }
        }
    }
    if !blockers.is_empty() {
        return Ok(Outcome::refused(blockers, out));
    }
    let Some(at) = cluster_time(&old).await? else {
        return Ok(Outcome::refused(vec!["S is unknown: the old primary answers without a cluster time".into()], out));
    };
    out["switched_back_at_cluster_time"] = time_json(at);
    if dry_run {
        return Ok(Outcome::done(out, format!("would record S = {}\n{}", time_text(at), next(at))));
    }
    journal::advance(&meta, &failover.id, Phase::SwitchedBack, doc! {"switched_back_at": bson::Timestamp::from(at)})
        .await?;
    journal::switched_back(&failover_db, &failover.id, at).await?;
    Ok(Outcome::done(out, format!("switched back: S = {}\n{}", time_text(at), next(at))))
}

fn next(at: envelope::ClusterTime) -> String {
    format!(
        "next: point the applications at the old primary; start the original direction again without a snapshot:\n  \
         cdc-source with a new capture.name and topics.prefix, CDC_SOURCE__SNAPSHOT__MODE=never \
         CDC_SOURCE__CAPTURE__START_AFTER_CLUSTER_TIME={} (capture.exclude the metadata databases)\n  \
         sink-writer with a new consume.group_id reading those topics\n",
        time_text(at)
    )
}
