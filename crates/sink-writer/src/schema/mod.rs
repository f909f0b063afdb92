//! Collections, views, indexes and collection options on the target, as the source's DDL says:
//! `create` (with its options), `createIndexes`, `dropIndexes` and `modify` (`collMod`).
//!
//! What the target cannot do (an index over duplicate keys already there, an option it does
//! not know) never stops replication: it is logged with the namespace and the server's message,
//! counted in `sink_writer_schema_conflicts`, shown as a note on `/health/readyz`, and tried again
//! whenever writes reach that namespace (at most every few seconds) until it succeeds or a later
//! DDL of the same index or collection replaces it.
//!
//! A collection whose options the target refuses (Amazon DocumentDB: collations, capped, time
//! series, clustered, pre/post images) is created with the options it takes, never bare; each
//! option left out is reported the same way as "not carried", and not tried again. A view the
//! target refuses is not carried at all (never a collection in its place). An index whose
//! collation the target refuses is built without it and the collation reported, except the
//! `simple` one (the source's way to say "not the collection's default") on a target collection
//! without a default collation, where the two are the same.
//!
//! TTL indexes: by default (`apply.ttl = "source_deletes"`) the target's TTL index is created
//! with `expireAfterSeconds` at its maximum, so the target never deletes a document on its own
//! clock: the source's deletes (TTL or not) remove documents, in order with everything else.
//! The source's value is recorded in `<metadata_database>.ttl`; at a cutover, set it with
//! `collMod` (the runbook and `sink-writer status` list them). `ttl = "target_expires"` copies
//! the value as it is.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use docdb_rules::carried::option_groups;
use envelope::{Ddl, Namespace};
use futures::TryStreamExt;
use prometheus::IntGauge;
use serde::{Deserialize, Serialize};
use service_kit::health::Health;

use crate::error::{Error, Failure};

/// The largest `expireAfterSeconds` the server takes: ~68 years, i.e. never.
pub const NEVER_EXPIRES: i32 = i32::MAX;
const NAMESPACE_NOT_FOUND: i32 = 26;
const INDEX_NOT_FOUND: i32 = 27;
const NAMESPACE_EXISTS: i32 = 48;
const INDEX_OPTIONS_CONFLICT: i32 = 85;
const INDEX_KEY_SPECS_CONFLICT: i32 = 86;
const RETRY_EVERY: Duration = Duration::from_secs(5);

/// Who removes documents a TTL index covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TtlPolicy {
    /// The source's deletes: target TTL indexes never expire anything (cutover sets them).
    #[default]
    SourceDeletes,
    /// The target's own TTL monitor, with the source's `expireAfterSeconds`.
    TargetExpires,
}

/// A schema change the target refused, to try again.
#[derive(Debug, Clone)]
struct Pending {
    db: String,
    command: Document,
}

pub struct Schema {
    client: mongodb::Client,
    ttl_log: mongodb::Collection<Document>,
    /// The refusals, for `sink-writer status` (which runs apart from the service).
    conflict_log: mongodb::Collection<Document>,
    policy: TtlPolicy,
    health: Health,
    conflicts: IntGauge,
    /// By namespace and what it concerns (an index name, or "" for the collection).
    pending: Mutex<BTreeMap<(Namespace, String), Pending>>,
    /// Options and views the target refused and that are left out for good, by note topic.
    not_carried: Mutex<BTreeMap<String, Namespace>>,
    last_retry: Mutex<Option<Instant>>,
}

impl Schema {
    pub fn new(
        client: mongodb::Client,
        metadata_database: &str,
        policy: TtlPolicy,
        health: Health,
        conflicts: IntGauge,
    ) -> Self {
        let ttl_log = client.database(metadata_database).collection("ttl");
        let conflict_log = client.database(metadata_database).collection("schema_conflicts");
        Self {
            client,
            ttl_log,
            conflict_log,
            policy,
            health,
            conflicts,
            pending: Mutex::new(BTreeMap::new()),
            not_carried: Mutex::new(BTreeMap::new()),
            last_retry: Mutex::new(None),
        }
    }

    /// Applies a schema DDL to `target` (its namespace on the target). Transient failures are
    /// errors (the caller retries); refusals are recorded and tried again later.
    pub async fn apply(&self, ddl: &Ddl, target: &Namespace) -> Result<(), Error> {
        match ddl {
            Ddl::Create { options, .. } => self.create(target, options).await,
            Ddl::CreateIndexes { indexes, .. } => {
                for index in indexes {
                    self.create_index(target, index).await?;
                }
                Ok(())
            }
            Ddl::DropIndexes { names, .. } => {
                for name in names {
                    self.forget(target, name);
                    let command = doc! {"dropIndexes": &target.coll, "index": name};
                    self.run(target, name, command, &[INDEX_NOT_FOUND, NAMESPACE_NOT_FOUND]).await?;
                }
                Ok(())
            }
            Ddl::Modify { changes, .. } => self.modify(target, changes).await,
            Ddl::Drop(_) | Ddl::Rename { .. } | Ddl::DropDatabase { .. } => Ok(()),
        }
    }

    async fn create(&self, target: &Namespace, options: &Document) -> Result<(), Error> {
        self.carried_again(target);
        let options: Document =
            options.iter().filter(|(k, _)| k.as_str() != "uuid").map(|(k, v)| (k.clone(), v.clone())).collect();
        let reason = match self.try_create(target, &options).await? {
            Created::Yes => return Ok(()),
            Created::Refused(reason) => reason,
        };
        if options.contains_key("viewOn") {
            // A view is all or nothing: never a collection in its place.
            self.left_out(target, "view", &reason);
            return Ok(());
        }
        // The options the target takes: one group left out, then as many as it takes.
        let groups = option_groups(&options);
        for group in &groups {
            if let Created::Yes = self.try_create(target, &without(&options, std::slice::from_ref(group))).await? {
                self.left_out(target, &format!("option {}", group.join("+")), &reason);
                return Ok(());
            }
        }
        for count in 2..=groups.len() {
            if let Created::Yes = self.try_create(target, &without(&options, &groups[..count])).await? {
                for group in &groups[..count] {
                    self.left_out(target, &format!("option {}", group.join("+")), &reason);
                }
                return Ok(());
            }
        }
        let mut command = doc! {"create": &target.coll};
        command.extend(options);
        self.pend(target, "", command, reason);
        Ok(())
    }

    /// Creates the collection with `options`; an existing one gets what can change brought in line.
    async fn try_create(&self, target: &Namespace, options: &Document) -> Result<Created, Error> {
        let mut command = doc! {"create": &target.coll};
        command.extend(options.clone());
        match self.client.database(&target.db).run_command(command).await {
            Ok(_) => {
                self.resolved(target, "");
                Ok(Created::Yes)
            }
            // It exists (created by an earlier start, or by a write): bring what can change in line.
            Err(e) if code(&e) == Some(NAMESPACE_EXISTS) => {
                for field in ["validator", "validationLevel", "validationAction", "changeStreamPreAndPostImages"] {
                    let Some(value) = options.get(field) else { continue };
                    let collmod = doc! {"collMod": &target.coll, field: value.clone()};
                    if let Err(e) = self.client.database(&target.db).run_command(collmod).await {
                        match Error::mongo("schema", e) {
                            Error::Mongo(Failure { retriable: false, reason, .. }) => {
                                self.left_out(target, &format!("option {field}"), &reason)
                            }
                            other => return Err(other),
                        }
                    }
                }
                Ok(Created::Yes)
            }
            Err(e) => match Error::mongo("schema", e) {
                Error::Mongo(Failure { retriable: false, reason, .. }) => Ok(Created::Refused(reason)),
                other => Err(other),
            },
        }
    }

    async fn create_index(&self, target: &Namespace, index: &Document) -> Result<(), Error> {
        let name = index.get_str("name").unwrap_or("").to_string();
        let mut spec: Document = index
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "v" | "ns"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(seconds) = spec.get("expireAfterSeconds").cloned() {
            self.record_ttl(target, &name, &seconds).await?;
            if self.policy == TtlPolicy::SourceDeletes {
                spec.insert("expireAfterSeconds", NEVER_EXPIRES);
            }
        }
        let command = doc! {"createIndexes": &target.coll, "indexes": [spec.clone()]};
        match self.client.database(&target.db).run_command(command.clone()).await {
            Ok(_) => {
                self.resolved(target, &name);
                Ok(())
            }
            // A collation the target refuses: the index without it (the simple collation is no
            // collation where the collection has no default one: nothing is lost then).
            Err(e) if spec.contains_key("collation") && !retriable(&e) => {
                let simple = spec.get_document("collation").is_ok_and(|c| c == &doc! {"locale": "simple"});
                spec.remove("collation");
                let without = doc! {"createIndexes": &target.coll, "indexes": [spec]};
                if self.client.database(&target.db).run_command(without).await.is_err() {
                    return self.refused_or_error(target, &name, command, e);
                }
                self.resolved(target, &name);
                if !simple || self.has_default_collation(target).await? {
                    let reason = Error::mongo("schema", e).to_string();
                    self.left_out(target, &format!("index {name} option collation"), &reason);
                }
                Ok(())
            }
            // An index of that name or key with other options: the source's replaces it.
            Err(e) if matches!(code(&e), Some(INDEX_OPTIONS_CONFLICT | INDEX_KEY_SPECS_CONFLICT)) => {
                let drop = doc! {"dropIndexes": &target.coll, "index": &name};
                self.run(target, &name, drop, &[INDEX_NOT_FOUND]).await?;
                self.run(target, &name, command, &[]).await
            }
            Err(e) => self.refused_or_error(target, &name, command, e),
        }
    }

    async fn modify(&self, target: &Namespace, changes: &Document) -> Result<(), Error> {
        if lock(&self.not_carried).contains_key(&format!("collection {target} view")) {
            return Ok(()); // a view the target refused: nothing to modify
        }
        let mut command = doc! {"collMod": &target.coll};
        for (field, value) in changes {
            match (field.as_str(), value) {
                ("index", Bson::Document(index)) if index.contains_key("expireAfterSeconds") => {
                    let name = index.get_str("name").unwrap_or("").to_string();
                    self.record_ttl(target, &name, index.get("expireAfterSeconds").unwrap_or(&Bson::Null)).await?;
                    let mut index = index.clone();
                    if self.policy == TtlPolicy::SourceDeletes {
                        index.remove("expireAfterSeconds");
                    }
                    if index.keys().any(|k| k != "name" && k != "keyPattern") {
                        command.insert("index", index);
                    }
                }
                _ => {
                    command.insert(field.clone(), value.clone());
                }
            }
        }
        if command.len() == 1 {
            return Ok(());
        }
        // A refused index change is the index's (a later collMod of the collection does not
        // clear it; a later DDL of the index does).
        let index = command.get_document("index").ok().and_then(|i| i.get_str("name").ok()).unwrap_or("").to_string();
        self.run(target, &index, command, &[NAMESPACE_NOT_FOUND]).await
    }

    /// The source's `expireAfterSeconds` of an index, for a cutover.
    async fn record_ttl(&self, target: &Namespace, name: &str, seconds: &Bson) -> Result<(), Error> {
        let id = format!("{target}|{name}");
        self.ttl_log
            .update_one(
                doc! {"_id": &id},
                doc! {"$set": {"db": &target.db, "collection": &target.coll, "index": name,
                "expireAfterSeconds": seconds.clone(), "policy": format!("{:?}", self.policy)}},
            )
            .upsert(true)
            .await
            .map_err(|e| Error::mongo("record ttl", e))?;
        Ok(())
    }

    async fn run(&self, target: &Namespace, what: &str, command: Document, fine: &[i32]) -> Result<(), Error> {
        match self.client.database(&target.db).run_command(command.clone()).await {
            Ok(_) => {
                self.resolved(target, what);
                Ok(())
            }
            Err(e) if code(&e).is_some_and(|c| fine.contains(&c)) => {
                self.resolved(target, what);
                Ok(())
            }
            Err(e) => self.refused_or_error(target, what, command, e),
        }
    }

    /// Whether the target collection has a default collation.
    async fn has_default_collation(&self, target: &Namespace) -> Result<bool, Error> {
        let filter = doc! {"name": &target.coll};
        let listed = self.client.database(&target.db).list_collections().filter(filter).await;
        let mut cursor = listed.map_err(|e| Error::mongo("list collections", e))?;
        let spec = cursor.try_next().await.map_err(|e| Error::mongo("list collections", e))?;
        Ok(spec.is_some_and(|spec| spec.options.collation.is_some()))
    }

    /// What the target refuses for good and replication leaves out: logged, noted, counted,
    /// listed by `status`, not tried again.
    fn left_out(&self, target: &Namespace, what: &str, reason: &str) {
        let topic = format!("collection {target} {what}");
        tracing::warn!(namespace = %target, what, %reason, "the target does not take this: not carried");
        let note = format!("not carried: {reason}");
        self.health.note(&topic, Some(note.clone()));
        let (log, entry) =
            (self.conflict_log.clone(), doc! {"what": &topic, "reason": note, "at": bson::DateTime::now()});
        tokio::spawn(async move { log.replace_one(doc! {"_id": &topic}, entry).upsert(true).await });
        lock(&self.not_carried).insert(format!("collection {target} {what}"), target.clone());
        self.count();
    }

    /// A new `create` of `target` starts over: what an earlier one left out no longer applies.
    fn carried_again(&self, target: &Namespace) {
        let topics: Vec<String> = {
            let mut not_carried = lock(&self.not_carried);
            let topics: Vec<String> =
                not_carried.iter().filter(|(_, ns)| *ns == target).map(|(t, _)| t.clone()).collect();
            not_carried.retain(|_, ns| ns != target);
            topics
        };
        topics.into_iter().for_each(|topic| self.unnote(topic));
        self.count();
    }

    fn count(&self) {
        let total = lock(&self.pending).len() + lock(&self.not_carried).len();
        self.conflicts.set(i64::try_from(total).unwrap_or(i64::MAX));
    }

    /// A transient failure is returned; a refusal is recorded for a later try.
    fn refused_or_error(
        &self,
        target: &Namespace,
        what: &str,
        command: Document,
        e: mongodb::error::Error,
    ) -> Result<(), Error> {
        match Error::mongo("schema", e) {
            Error::Mongo(Failure { retriable: false, reason, .. }) => {
                self.pend(target, what, command, reason);
                Ok(())
            }
            other => Err(other),
        }
    }

    /// Records a refused schema change for a later try.
    fn pend(&self, target: &Namespace, what: &str, command: Document, reason: String) {
        tracing::warn!(namespace = %target, index = what, %reason, "the target refuses a schema change: replication goes on, tried again later");
        let topic = note_topic(target, what);
        self.health.note(&topic, Some(reason.clone()));
        let (log, entry) =
            (self.conflict_log.clone(), doc! {"what": &topic, "reason": &reason, "at": bson::DateTime::now()});
        tokio::spawn(async move { log.replace_one(doc! {"_id": &topic}, entry).upsert(true).await });
        lock(&self.pending).insert((target.clone(), what.to_string()), Pending { db: target.db.clone(), command });
        self.count();
    }

    fn resolved(&self, target: &Namespace, what: &str) {
        if lock(&self.pending).remove(&(target.clone(), what.to_string())).is_some() {
            tracing::info!(namespace = %target, index = what, "schema change applied after all");
            self.unnote(note_topic(target, what));
        }
    }

    /// A later DDL of the same index makes a refused one moot.
    fn forget(&self, target: &Namespace, what: &str) {
        if lock(&self.pending).remove(&(target.clone(), what.to_string())).is_some() {
            self.unnote(note_topic(target, what));
        }
    }

    fn unnote(&self, topic: String) {
        self.health.note(&topic, None);
        let log = self.conflict_log.clone();
        tokio::spawn(async move { log.delete_one(doc! {"_id": topic}).await });
        self.count();
    }

    /// After writes reached `target`: tries its refused schema changes again (at most every
    /// few seconds; data that blocked an index may be gone now).
    pub async fn data_changed(&self, target: &Namespace) {
        let due: Vec<((Namespace, String), Pending)> = {
            let pending = lock(&self.pending);
            if !pending.keys().any(|(ns, _)| ns == target) {
                return;
            }
            let mut last = lock(&self.last_retry);
            if last.is_some_and(|at| at.elapsed() < RETRY_EVERY) {
                return;
            }
            *last = Some(Instant::now());
            pending.iter().filter(|((ns, _), _)| ns == target).map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        for ((ns, what), pending) in due {
            match self.client.database(&pending.db).run_command(pending.command.clone()).await {
                Ok(_) => self.resolved(&ns, &what),
                Err(e) => tracing::debug!(namespace = %ns, index = %what, error = %e, "schema change still refused"),
            }
        }
    }
}

/// Whether a create went through.
enum Created {
    Yes,
    Refused(String),
}

/// `options` without the keys of `groups`.
fn without(options: &Document, groups: &[Vec<String>]) -> Document {
    let left_out = |key: &String| groups.iter().any(|group| group.contains(key));
    options.iter().filter(|(key, _)| !left_out(key)).map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn note_topic(target: &Namespace, what: &str) -> String {
    if what.is_empty() {
        format!("collection {target}")
    } else {
        format!("index {target} {what}")
    }
}

fn retriable(e: &mongodb::error::Error) -> bool {
    matches!(Error::mongo("schema", e.clone()), Error::Mongo(Failure { retriable: true, .. }))
}

fn code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_fall_in_groups_with_validation_last() {
        let options = doc! {"validator": {"$jsonSchema": {}}, "capped": true, "size": 4096, "collation": {"locale": "fr"},
        "timeseries": {"timeField": "t"}, "expireAfterSeconds": 60, "validationLevel": "strict"};
        let groups = option_groups(&options);
        let names: Vec<String> = groups.iter().map(|g| g.join("+")).collect();
        assert_eq!(
            names,
            ["capped+size", "collation", "timeseries+expireAfterSeconds", "validator", "validationLevel"]
        );
        assert_eq!(
            without(&options, &groups[..3]),
            doc! {"validator": {"$jsonSchema": {}}, "validationLevel": "strict"}
        );
    }
}
