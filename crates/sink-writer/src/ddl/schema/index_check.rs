//! The periodic index comparison, on the target's side: every `apply.index_check_interval_ms`
//! the indexes of every target collection the source announced indexes for (`announced.rs`) are
//! listed and compared with the announcement.
//! - An index on the target only (built there by hand, or left by a drop the sink never saw) is
//!   reported once seen in two rounds in a row (a DDL applied meanwhile is not one): a warning,
//!   a note on `/health/readyz`, `sink_writer_target_only_indexes`, and a line in `sink-writer
//!   status` (`<metadata_database>.schema_conflicts`). It is never dropped; the report goes once
//!   the index does.
//! - An announced index whose TTL or `hidden` differs on the target is set as announced with a
//!   `collMod` (the TTL as `apply.ttl` says). A `collMod` the target refuses is not tried again
//!   until the announcement changes (`schema.rs` reports the refusal).
//!
//! Every replica compares; the `collMod`s are idempotent. A round that fails (the target away)
//! is logged and the next one starts over.

use std::collections::BTreeSet;
use std::time::Duration;

use bson::{doc, Bson, Document};
use envelope::Namespace;
use futures::TryStreamExt;
use prometheus::IntGauge;
use service_kit::health::Health;

use super::announced::{stale, Announced};
use super::{code, TtlPolicy, NAMESPACE_NOT_FOUND, NEVER_EXPIRES};
use crate::config::ApplyConfig;
use crate::error::{Common, Error, Failure};
use service_kit::failure::code::COMMAND_NOT_SUPPORTED_ON_VIEW;

/// The comparison's task; it ends when this is dropped.
pub struct Running(tokio::task::JoinHandle<()>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the comparison on `client`'s target, unless `apply.index_check_interval_ms` is 0.
pub fn start(client: &mongodb::Client, apply: &ApplyConfig, health: Health, gauge: IntGauge) -> Option<Running> {
    let interval = Duration::from_millis(apply.index_check_interval_ms);
    if interval.is_zero() {
        return None;
    }
    let mut check = IndexCheck {
        client: client.clone(),
        announced: Announced::new(client.clone(), &apply.metadata_database),
        conflict_log: client.database(&apply.metadata_database).collection("schema_conflicts"),
        policy: apply.ttl,
        health,
        gauge,
        suspects: BTreeSet::new(),
        reported: BTreeSet::new(),
        refused: BTreeSet::new(),
    };
    Some(Running(tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            if let Err(e) = check.round().await {
                tracing::warn!(error = %e, "index comparison with the target failed: tried again next round");
            }
        }
    })))
}

/// An index of a target collection.
type Key = (Namespace, String);

struct IndexCheck {
    client: mongodb::Client,
    announced: Announced,
    conflict_log: mongodb::Collection<Document>,
    policy: TtlPolicy,
    health: Health,
    gauge: IntGauge,
    /// Indexes on the target only in the last round.
    suspects: BTreeSet<Key>,
    /// Those reported.
    reported: BTreeSet<Key>,
    /// `collMod`s the target refused: index and the changes, as text.
    refused: BTreeSet<(Key, String)>,
}

impl IndexCheck {
    async fn round(&mut self) -> Result<(), Error> {
        let mut extra = BTreeSet::new();
        for record in self.announced.all().await? {
            let (exists, uuid) = self.announced.uuid(&record.ns).await?;
            if !exists || stale(&record, uuid.as_ref()) {
                continue; // gone, or another collection now: nothing announced to compare with
            }
            for spec in self.indexes(&record.ns).await? {
                let name = spec.get_str("name").unwrap_or("").to_string();
                match record.index(&name) {
                    None if name != "_id_" => {
                        extra.insert((record.ns.clone(), name));
                    }
                    None => {}
                    Some(announced) => {
                        if let Some(changes) = changes(announced, &spec, self.policy) {
                            self.follow(&record.ns, changes).await?;
                        }
                    }
                }
            }
        }
        let confirmed: BTreeSet<Key> = extra.intersection(&self.suspects).cloned().collect();
        for key in confirmed.difference(&self.reported) {
            self.report(key, true);
        }
        for key in self.reported.difference(&extra) {
            self.report(key, false);
        }
        self.reported = self.reported.union(&confirmed).filter(|key| extra.contains(*key)).cloned().collect();
        self.suspects = extra;
        self.gauge.set(i64::try_from(self.reported.len()).unwrap_or(i64::MAX));
        Ok(())
    }

    /// The target collection's indexes; none when it is gone, or a view (which has none, and
    /// whose `listIndexes` the server refuses: one view must not end every round).
    async fn indexes(&self, ns: &Namespace) -> Result<Vec<Document>, Error> {
        let listed = self.client.database(&ns.db).run_cursor_command(doc! {"listIndexes": &ns.coll}).await;
        match listed {
            Ok(cursor) => cursor.try_collect().await.map_err(|e| Error::mongo("list indexes", e)),
            Err(e) if matches!(code(&e), Some(NAMESPACE_NOT_FOUND | COMMAND_NOT_SUPPORTED_ON_VIEW)) => Ok(Vec::new()),
            Err(e) => Err(Error::mongo("list indexes", e)),
        }
    }

    /// Sets an announced index's TTL or `hidden` on the target; a refusal is remembered.
    async fn follow(&mut self, ns: &Namespace, changes: Document) -> Result<(), Error> {
        let key = ((ns.clone(), changes.get_str("name").unwrap_or("").to_string()), changes.to_string());
        if self.refused.contains(&key) {
            return Ok(());
        }
        let command = doc! {"collMod": &ns.coll, "index": changes.clone()};
        match self.client.database(&ns.db).run_command(command).await {
            Ok(_) => {
                tracing::info!(namespace = %ns, index = %changes, "index comparison: set on the target as the source announced");
                Ok(())
            }
            Err(e) => match Error::mongo("index comparison", e) {
                Error::Common(Common::Mongo(Failure { retriable: false, reason, .. })) => {
                    tracing::info!(namespace = %ns, index = %changes, %reason, "index comparison: the target refuses the change");
                    self.refused.retain(|((n, i), _)| (n, i) != (&key.0 .0, &key.0 .1));
                    self.refused.insert(key);
                    Ok(())
                }
                other => Err(other),
            },
        }
    }

    /// Reports an index on the target only, or withdraws the report.
    fn report(&self, (ns, name): &Key, on: bool) {
        let topic = format!("index {ns} {name} on the target only");
        let reason = "the source has no such index: reported, left as it is";
        if on {
            tracing::warn!(namespace = %ns, index = %name, "an index on the target only: {reason}");
        }
        self.health.note(&topic, on.then(|| reason.to_string()));
        let log = self.conflict_log.clone();
        let entry = doc! {"_id": &topic, "what": &topic, "reason": reason, "at": bson::DateTime::now()};
        tokio::spawn(async move {
            let _ = match on {
                true => log.replace_one(doc! {"_id": &topic}, entry).upsert(true).await.map(|_| ()),
                false => log.delete_one(doc! {"_id": &topic}).await.map(|_| ()),
            };
        });
    }
}

/// The `collMod` `index` fields that make the target's `existing` index what `announced` says:
/// `hidden`, and the TTL (`NEVER_EXPIRES` when the source's deletes expire documents). Pure.
fn changes(announced: &Document, existing: &Document, policy: TtlPolicy) -> Option<Document> {
    let mut changes = doc! {"name": announced.get_str("name").unwrap_or("")};
    let hidden = |spec: &Document| spec.get_bool("hidden").unwrap_or(false);
    if hidden(announced) != hidden(existing) {
        changes.insert("hidden", hidden(announced));
    }
    let seconds = |spec: &Document| match spec.get("expireAfterSeconds") {
        Some(Bson::Int32(n)) => Some(i64::from(*n)),
        Some(Bson::Int64(n)) => Some(*n),
        Some(Bson::Double(n)) => Some(*n as i64),
        _ => None,
    };
    if let (Some(source), Some(target)) = (seconds(announced), seconds(existing)) {
        let wanted = match policy {
            TtlPolicy::SourceDeletes => i64::from(NEVER_EXPIRES),
            TtlPolicy::TargetExpires => source,
        };
        if wanted != target {
            changes.insert("expireAfterSeconds", wanted);
        }
    }
    (changes.len() > 1).then_some(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_and_the_ttl_are_set_as_announced() {
        let announced = doc! {"key": {"a": 1}, "name": "a_1", "expireAfterSeconds": 3600, "hidden": true};
        let held_back = doc! {"key": {"a": 1}, "name": "a_1", "expireAfterSeconds": NEVER_EXPIRES};
        assert_eq!(
            changes(&announced, &held_back, TtlPolicy::SourceDeletes),
            Some(doc! {"name": "a_1", "hidden": true})
        );
        assert_eq!(
            changes(&announced, &held_back, TtlPolicy::TargetExpires),
            Some(doc! {"name": "a_1", "hidden": true, "expireAfterSeconds": 3600_i64})
        );
        let same = doc! {"key": {"a": 1}, "name": "a_1", "expireAfterSeconds": 3600_i64, "hidden": true};
        assert_eq!(changes(&announced, &same, TtlPolicy::TargetExpires), None);
        let plain = doc! {"key": {"b": 1}, "name": "b_1"};
        assert_eq!(changes(&plain, &plain, TtlPolicy::SourceDeletes), None);
    }
}
