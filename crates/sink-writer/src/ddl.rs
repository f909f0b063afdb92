//! DDL control events, applied once and in order with the data, also across replicas.
//!
//! The source puts a marker on every partition that may hold older events of the namespace and
//! says how many. Each partition task, on reaching its marker (with everything before it
//! applied), records its arrival in `<metadata_database>.ddl` and waits. The arrival that
//! completes the set claims the DDL (with a lease, in case it dies), applies it to the target and
//! marks it applied; the others continue once it is. Applied DDL is remembered, so events older
//! than it that are read again after a restart are skipped instead of resurrecting documents.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bson::{doc, DateTime, Document};
use envelope::{ClusterTime, ControlEvent, Ddl, Namespace};
use futures::TryStreamExt;
use mongodb::options::ReturnDocument;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::mapping::Mapper;

const CLAIM_LEASE: Duration = Duration::from_secs(60);
const NAMESPACE_NOT_FOUND: i32 = 26;
const NAMESPACE_EXISTS: i32 = 48;

pub struct DdlApplier {
    client: mongodb::Client,
    log: mongodb::Collection<Document>,
    mapper: Mapper,
    /// Applied DDL by source namespace (`db.coll`, or `db.` for a whole database).
    applied: Mutex<HashMap<String, ClusterTime>>,
}

impl DdlApplier {
    pub fn new(client: mongodb::Client, metadata_database: &str, mapper: Mapper) -> Self {
        let log = client.database(metadata_database).collection("ddl");
        Self { client, log, mapper, applied: Mutex::new(HashMap::new()) }
    }

    /// Loads what was applied before (at start).
    pub async fn load(&self) -> Result<(), Error> {
        let applied: Vec<Document> = self
            .log
            .find(doc! {"applied": true})
            .await
            .map_err(|e| Error::mongo("read applied ddl", e))?
            .try_collect()
            .await
            .map_err(|e| Error::mongo("read applied ddl", e))?;
        for entry in applied {
            if let (Ok(scope), Ok(ts)) = (entry.get_str("scope"), entry.get_timestamp("cluster_time")) {
                self.remember(scope, ts.into());
            }
        }
        Ok(())
    }

    fn remember(&self, scope: &str, at: ClusterTime) {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        let entry = applied.entry(scope.to_string()).or_default();
        *entry = (*entry).max(at);
    }

    /// Whether an event of `ns` at `at` is older than DDL already applied to its namespace.
    pub fn obsolete(&self, ns: &Namespace, at: ClusterTime) -> bool {
        let applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        [ns.to_string(), format!("{}.", ns.db)].iter().any(|scope| applied.get(scope).is_some_and(|t| at < *t))
    }

    /// Waits for every marker of `event`, then makes sure it is applied exactly once.
    /// `arrival` names this partition (`topic/partition`).
    pub async fn barrier(&self, event: &ControlEvent, arrival: &str, stop: &CancellationToken) -> Result<bool, Error> {
        let at = event.position.cluster_time;
        let scope = match &event.ddl {
            Ddl::Drop(ns) | Ddl::Rename { from: ns, .. } => ns.to_string(),
            Ddl::DropDatabase { db } => format!("{db}."),
        };
        let id = format!("{}:{scope}@{}.{}", event.ddl.kind(), at.t, at.i);
        let timestamp: bson::Timestamp = at.into();
        let mut entry = self
            .log
            .find_one_and_update(
                doc! {"_id": &id},
                doc! {
                    "$addToSet": {"arrived": arrival},
                    "$setOnInsert": {"kind": event.ddl.kind(), "scope": &scope, "cluster_time": timestamp,
                                     "markers": i64::from(event.markers)},
                },
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await
            .map_err(|e| Error::mongo("record ddl arrival", e))?
            .unwrap_or_default();
        let mut applied_here = false;
        loop {
            if entry.get_bool("applied").unwrap_or(false) {
                self.remember(&scope, at);
                return Ok(applied_here);
            }
            let arrived = entry.get_array("arrived").map_or(0, Vec::len);
            if arrived >= event.markers as usize && self.claim(&id, arrival).await? {
                self.apply(&event.ddl).await?;
                self.log
                    .update_one(doc! {"_id": &id}, doc! {"$set": {"applied": true, "applied_at": DateTime::now()}})
                    .await
                    .map_err(|e| Error::mongo("mark ddl applied", e))?;
                tracing::info!(ddl = %id, "applied");
                applied_here = true;
            } else {
                tokio::select! {
                    _ = stop.cancelled() => return Err(Error::Stopped),
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            entry = self
                .log
                .find_one(doc! {"_id": &id})
                .await
                .map_err(|e| Error::mongo("read ddl state", e))?
                .unwrap_or_default();
        }
    }

    /// Takes the right to apply, unless someone holds an unexpired claim.
    async fn claim(&self, id: &str, arrival: &str) -> Result<bool, Error> {
        let now = DateTime::now();
        let until = DateTime::from_millis(now.timestamp_millis() + CLAIM_LEASE.as_millis() as i64);
        let claimed = self
            .log
            .update_one(
                doc! {"_id": id, "applied": {"$ne": true},
                "$or": [{"claimed_until": {"$exists": false}}, {"claimed_until": {"$lt": now}}]},
                doc! {"$set": {"claimed_by": arrival, "claimed_until": until}},
            )
            .await
            .map_err(|e| Error::mongo("claim ddl", e))?;
        Ok(claimed.modified_count == 1)
    }

    async fn apply(&self, ddl: &Ddl) -> Result<(), Error> {
        match ddl {
            Ddl::Drop(ns) => {
                let target = self.mapper.map(ns);
                self.client
                    .database(&target.db)
                    .collection::<Document>(&target.coll)
                    .drop()
                    .await
                    .map_err(|e| Error::mongo("drop collection", e))
            }
            Ddl::DropDatabase { db } => {
                // The source reported a drop for each of the database's collections first, and
                // those are applied by now. What is left was written by newer events (on topics
                // no marker holds back): keep it, and drop the database only when it is empty.
                let target = self.client.database(&self.mapper.map_database(db));
                let left = target.list_collection_names().await.map_err(|e| Error::mongo("list collections", e))?;
                if left.iter().all(|name| name.starts_with("system.")) {
                    target.drop().await.map_err(|e| Error::mongo("drop database", e))
                } else {
                    tracing::info!(database = %target.name(), collections = left.len(), "dropDatabase: newer collections exist, database kept");
                    Ok(())
                }
            }
            Ddl::Rename { from, to } => self.rename(&self.mapper.map(from), &self.mapper.map(to)).await,
        }
    }

    async fn rename(&self, from: &Namespace, to: &Namespace) -> Result<(), Error> {
        let command = doc! {"renameCollection": from.to_string(), "to": to.to_string()};
        match self.client.database("admin").run_command(command).await {
            Ok(_) => Ok(()),
            Err(e) => match mongo_code(&e) {
                Some(NAMESPACE_NOT_FOUND) => Ok(()), // nothing of it reached the target
                Some(NAMESPACE_EXISTS) => {
                    // Newer events already wrote into `to`: keep those, add the rest, drop `from`.
                    let merge = vec![doc! {"$merge": {"into": {"db": &to.db, "coll": &to.coll}, "on": "_id",
                    "whenMatched": "keepExisting", "whenNotMatched": "insert"}}];
                    let source = self.client.database(&from.db).collection::<Document>(&from.coll);
                    source.aggregate(merge).await.map_err(|e| Error::mongo("merge renamed collection", e))?;
                    source.drop().await.map_err(|e| Error::mongo("drop renamed collection", e))
                }
                _ => Err(Error::mongo("rename collection", e)),
            },
        }
    }
}

fn mongo_code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}
