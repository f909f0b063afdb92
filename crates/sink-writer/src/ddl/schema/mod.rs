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
//!
//! What the source announced of each collection's indexes is recorded (`announced.rs`), and
//! every `apply.index_check_interval_ms` the target's indexes are compared with it
//! (`index_check.rs`): an index on the target only is reported, a TTL or `hidden` that differs
//! is set as announced.
//!
//! | file             | what it owns                                                            |
//! |------------------|-------------------------------------------------------------------------|
//! | `mod.rs`         | the DDL in, commands run, refused changes tried again                   |
//! | `collections.rs` | `create` with what the target takes, `collMod`, options left out        |
//! | `indexes.rs`     | index builds, a TTL or `hidden` changed by `collMod`, TTL held back     |
//! | `refusals.rs`    | what the target refuses: pending, not carried, notes, metric, status    |
//! | `announced.rs`   | the indexes the source announced, per target collection                 |
//! | `index_check.rs` | the periodic comparison of the target's indexes with the announced ones |

mod announced;
mod collections;
pub mod index_check;
mod indexes;
mod refusals;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bson::{doc, Document};
use envelope::{Ddl, Namespace};
use prometheus::IntGauge;

use service_kit::health::Health;

use crate::error::{Common, Error, Failure};
use announced::Announced;

/// The largest `expireAfterSeconds` the server takes: ~68 years, i.e. never.
pub const NEVER_EXPIRES: i32 = i32::MAX;
use service_kit::failure::code::{
    INDEX_KEY_SPECS_CONFLICT, INDEX_NOT_FOUND, INDEX_OPTIONS_CONFLICT, NAMESPACE_EXISTS, NAMESPACE_NOT_FOUND,
};
use service_kit::failure::command_code as code;
const RETRY_EVERY: Duration = Duration::from_secs(5);

pub use crate::config::TtlPolicy;

/// A schema change the target refused, to try again.
#[derive(Debug, Clone)]
struct Pending {
    db: String,
    command: Document,
}

pub struct Schema {
    client: mongodb::Client,
    /// What the source announced of each collection's indexes (for `index_check.rs`).
    announced: Announced,
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
            announced: Announced::new(client.clone(), metadata_database),
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
            Ddl::Create { options, .. } => {
                self.create(target, options).await?;
                recorded(self.announced.created(target).await)
            }
            Ddl::CreateIndexes { indexes, .. } => {
                for index in indexes {
                    recorded(self.announced.built(target, index).await)?;
                    self.create_index(target, index).await?;
                }
                Ok(())
            }
            Ddl::DropIndexes { names, .. } => {
                for name in names {
                    self.forget(target, name);
                    let command = doc! {"dropIndexes": &target.coll, "index": name};
                    self.run(target, name, command, &[INDEX_NOT_FOUND, NAMESPACE_NOT_FOUND]).await?;
                    recorded(self.announced.dropped(target, name).await)?;
                }
                Ok(())
            }
            Ddl::Modify { changes, .. } => {
                if let Ok(index) = changes.get_document("index") {
                    if let Ok(name) = index.get_str("name") {
                        recorded(self.announced.changed(target, name, index).await)?;
                    }
                }
                self.modify(target, changes).await
            }
            Ddl::Drop(_) | Ddl::Rename { .. } | Ddl::DropDatabase { .. } => Ok(()),
        }
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

/// An announcement not recorded for good (the metadata database refuses it) costs only the
/// index comparison's view of it: logged, and the DDL goes on. A transient failure is retried.
fn recorded(result: Result<(), Error>) -> Result<(), Error> {
    match result {
        Err(e) if !e.is_retriable() => {
            tracing::warn!(error = %e, "announced indexes not recorded: the index comparison may miss them");
            Ok(())
        }
        other => other,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn retriable(e: &mongodb::error::Error) -> bool {
    matches!(Error::mongo("schema", e.clone()), Error::Common(Common::Mongo(Failure { retriable: true, .. })))
}
