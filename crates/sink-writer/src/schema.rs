//! Collections, views, indexes and collection options on the target, as the source's DDL says:
//! `create` (with its options), `createIndexes`, `dropIndexes` and `modify` (`collMod`).
//!
//! What the target cannot do (an index over duplicate keys already there, an option it does
//! not know) never stops replication: it is logged with the namespace and the server's message,
//! counted in `sink_writer_schema_conflicts`, shown as a note on `/health/readyz`, and tried again
//! whenever writes reach that namespace (at most every few seconds) until it succeeds or a later
//! DDL of the same index or collection replaces it.
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
use envelope::{Ddl, Namespace};
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
        let mut command = doc! {"create": &target.coll};
        command.extend(options.iter().filter(|(k, _)| k.as_str() != "uuid").map(|(k, v)| (k.clone(), v.clone())));
        match self.client.database(&target.db).run_command(command.clone()).await {
            Ok(_) => {
                self.resolved(target, "");
                Ok(())
            }
            // It exists (created by an earlier start, or by a write): bring what can change in line.
            Err(e) if code(&e) == Some(NAMESPACE_EXISTS) => {
                let mut collmod = doc! {"collMod": &target.coll};
                for field in ["validator", "validationLevel", "validationAction", "changeStreamPreAndPostImages"] {
                    if let Some(value) = options.get(field) {
                        collmod.insert(field, value.clone());
                    }
                }
                if collmod.len() == 1 {
                    return Ok(());
                }
                self.run(target, "", collmod, &[]).await
            }
            Err(e) => self.refused_or_error(target, "", command, e),
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
        let command = doc! {"createIndexes": &target.coll, "indexes": [spec]};
        match self.client.database(&target.db).run_command(command.clone()).await {
            Ok(_) => {
                self.resolved(target, &name);
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
        self.run(target, "", command, &[NAMESPACE_NOT_FOUND]).await
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
                tracing::warn!(namespace = %target, index = what, %reason, "the target refuses a schema change: replication goes on, tried again later");
                let topic = note_topic(target, what);
                self.health.note(&topic, Some(reason.clone()));
                let (log, entry) =
                    (self.conflict_log.clone(), doc! {"what": &topic, "reason": &reason, "at": bson::DateTime::now()});
                tokio::spawn(async move { log.replace_one(doc! {"_id": &topic}, entry).upsert(true).await });
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                pending.insert((target.clone(), what.to_string()), Pending { db: target.db.clone(), command });
                self.conflicts.set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
                Ok(())
            }
            other => Err(other),
        }
    }

    fn resolved(&self, target: &Namespace, what: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.remove(&(target.clone(), what.to_string())).is_some() {
            tracing::info!(namespace = %target, index = what, "schema change applied after all");
            let topic = note_topic(target, what);
            self.health.note(&topic, None);
            let log = self.conflict_log.clone();
            tokio::spawn(async move { log.delete_one(doc! {"_id": topic}).await });
            self.conflicts.set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
        }
    }

    /// A later DDL of the same index makes a refused one moot.
    fn forget(&self, target: &Namespace, what: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.remove(&(target.clone(), what.to_string())).is_some() {
            let topic = note_topic(target, what);
            self.health.note(&topic, None);
            let log = self.conflict_log.clone();
            tokio::spawn(async move { log.delete_one(doc! {"_id": topic}).await });
            self.conflicts.set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
        }
    }

    /// After writes reached `target`: tries its refused schema changes again (at most every
    /// few seconds; data that blocked an index may be gone now).
    pub async fn data_changed(&self, target: &Namespace) {
        let due: Vec<((Namespace, String), Pending)> = {
            let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if !pending.keys().any(|(ns, _)| ns == target) {
                return;
            }
            let mut last = self.last_retry.lock().unwrap_or_else(|p| p.into_inner());
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

fn note_topic(target: &Namespace, what: &str) -> String {
    if what.is_empty() {
        format!("collection {target}")
    } else {
        format!("index {target} {what}")
    }
}

fn code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}
