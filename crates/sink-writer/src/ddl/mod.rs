//! DDL control events, applied once and in order with the data, also across replicas.
//!
//! The source puts a copy of each marker on every partition that may hold older events of the
//! namespace (for a rename: of the old and the new name) and says how many went to each topic.
//! Each partition task, on reaching its copy (with everything before it applied), records its
//! arrival in `<metadata_database>.ddl` and waits. The arrival that completes the copies on the
//! topics this sink reads claims the DDL (with a lease, in case it dies), fixes what it will do
//! (so a second claimer after a crash does the same), applies it and marks it applied; the
//! others continue once it is. Every step is retried until it succeeds; a DDL the target refuses
//! for good is marked applied with the reason, and its claimer sends the record to the
//! dead-letter topic. Applied DDL is remembered (and read again on every assignment), so events
//! older than it that are read again are skipped instead of resurrecting documents.
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | the applier: a DDL's entry in the log, what applying it does (fixed once, then performed), what applied DDL makes obsolete (`applied.rs`) |
//! | `catalog.rs` | the target's catalog as applying DDL needs it (a trait): exists, drop, rename, schema changes |
//! | `applied.rs` | applied DDL by source namespace (read from the log on every assignment), and which events it makes obsolete |
//! | `barrier.rs` | the barrier across partitions and replicas: arrivals counted, one claimer applies |
//! | `log.rs` | the DDL log as the barrier needs it (a trait): arrive, claim, fix the step, mark applied, read |
//! | `fake.rs` | unit tests' DDL log and target catalog, in memory, with injected failures (test builds only) |
//! | `tests.rs` | the applier's unit tests over the fakes: the step chosen once, what each step does |
//! | `schema/` | collections, views, indexes, options and TTL on the target; what it refuses; the periodic index comparison |

pub(crate) mod applied;
pub(crate) mod barrier;
pub(crate) mod catalog;
#[cfg(test)]
pub(crate) mod fake;
pub(crate) mod log;
pub(crate) mod schema;
#[cfg(test)]
mod tests;

use std::sync::Mutex;

use bson::{doc, Document};
use envelope::{ClusterTime, ControlEvent, Ddl, Namespace};
use tokio_util::sync::CancellationToken;

use crate::apply::retry::Retrier;
use crate::ddl::applied::Applied;
pub use crate::ddl::barrier::Passed;
use crate::ddl::barrier::{Arrival, COMPONENT};
use crate::ddl::catalog::Catalog;
use crate::ddl::log::Log;
use crate::error::Error;
use crate::mapping::Mapper;

pub struct DdlApplier {
    catalog: Box<dyn Catalog>,
    log: Box<dyn Log>,
    mapper: Mapper,
    /// The consumer group: DDL state is per group (two groups may write different targets).
    group: String,
    retrier: Retrier,
    /// Applied DDL by source namespace (`db.coll`, or `db.` for a whole database).
    applied: Applied,
    /// Target namespaces known to exist (forgotten when a DDL drops or renames them).
    pub collections: Known,
}

/// Target namespaces known to exist: a transaction cannot create one on Amazon DocumentDB.
#[derive(Default)]
pub struct Known(Mutex<std::collections::HashSet<Namespace>>);

impl Known {
    pub fn known(&self, ns: &Namespace) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).contains(ns)
    }

    pub fn exists(&self, ns: &Namespace) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(ns.clone());
    }

    fn forget(&self, gone: impl Fn(&Namespace) -> bool) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).retain(|ns| !gone(ns));
    }
}

/// What applying a DDL will do, fixed before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Drop,
    DropDatabase,
    /// `from` exists: rename it over `to`.
    Rename,
    /// `from` does not exist here: the renamed collection is empty, `to` must be too.
    DropTarget,
    /// A collection, view, index or option change (`schema.rs`).
    Schema,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Drop => "drop",
            Step::DropDatabase => "dropDatabase",
            Step::Rename => "rename",
            Step::DropTarget => "dropTarget",
            Step::Schema => "schema",
        }
    }

    fn from_name(name: &str) -> Option<Step> {
        [Step::Drop, Step::DropDatabase, Step::Rename, Step::DropTarget, Step::Schema]
            .into_iter()
            .find(|s| s.name() == name)
    }
}

impl DdlApplier {
    /// `log`: `<metadata_database>.ddl` in service.
    pub fn new(catalog: Box<dyn Catalog>, log: Box<dyn Log>, mapper: Mapper, group: &str, retrier: Retrier) -> Self {
        Self {
            catalog,
            log,
            mapper,
            group: group.to_string(),
            retrier,
            applied: Applied::default(),
            collections: Known::default(),
        }
    }

    /// Reads what this group applied before (at start, and whenever partitions are assigned: a
    /// replica taking a partition over must know what another applied).
    pub async fn load(&self) -> Result<(), Error> {
        self.applied.load(&*self.log, &self.group).await
    }

    /// Whether an event of `ns` at `at` is older than DDL already applied to its namespace.
    pub fn obsolete(&self, ns: &Namespace, at: ClusterTime) -> bool {
        self.applied.obsolete(ns, at)
    }

    /// The offset of the newest marker this partition (`topic/partition`) reached: everything
    /// before it was applied by whoever owned the partition then, so a new owner starts there and
    /// replays nothing older (a DDL may be applied meanwhile, from the other partitions).
    pub async fn reached(&self, arrival: &str) -> Result<Option<i64>, Error> {
        barrier::reached(&*self.log, &self.group, arrival).await
    }

    /// Waits until `required` copies of `event`'s marker have arrived (this one included), then
    /// makes sure it is applied exactly once. `arrival` names this partition (`topic/partition`),
    /// `offset` the marker's offset there (everything before it is applied).
    pub async fn barrier(
        &self,
        event: &ControlEvent,
        arrival: &str,
        offset: i64,
        required: u32,
        stop: &CancellationToken,
    ) -> Result<Passed, Error> {
        let at = event.position.cluster_time;
        let (scope, scopes) = scopes(&event.ddl);
        let id = self.entry_id(event);
        let timestamp: bson::Timestamp = at.into();
        let new = doc! {
            "kind": event.ddl.kind(), "scope": &scope, "scopes": &scopes, "cluster_time": timestamp,
            "markers": i64::from(required), "group": &self.group,
        };
        let id = id.as_str();
        let here = Arrival { id, at: arrival, offset, required, new };
        let passed = barrier::wait(&*self.log, &self.retrier, here, stop, |entry| async move {
            self.apply(id, &entry, &event.ddl, arrival, stop).await
        })
        .await?;
        for scope in &scopes {
            self.applied.remember(scope, at);
        }
        Ok(passed)
    }

    /// The DDL's entry in the log: one per group, kind, scope and cluster time. A DDL read from
    /// the stream has a time of its own (its copies sent again after a crash are the same DDL,
    /// even if what they set was read again since). One a source found by listing (where the
    /// stream reports no DDL) or copied in a snapshot has no resume token: it is positioned where
    /// the stream had read, which two listings may share (across a restart, too), so what it sets
    /// names it as well: two different changes there both apply, the same one sent again once.
    fn entry_id(&self, event: &ControlEvent) -> String {
        let at = event.position.cluster_time;
        let id = format!("{}|{}:{}@{}.{}", self.group, event.ddl.kind(), scopes(&event.ddl).0, at.t, at.i);
        match event.ddl.content_digest().filter(|_| event.position.resume_token.is_none()) {
            Some(digest) => format!("{id}#{digest:016x}"),
            None => id,
        }
    }

    /// Fixes the step (unless an earlier claimer did), then performs it; `Some(reason)` when the
    /// target refuses it for good.
    async fn apply(
        &self,
        id: &str,
        entry: &Document,
        ddl: &Ddl,
        arrival: &str,
        stop: &CancellationToken,
    ) -> Result<Option<String>, Error> {
        let step = match entry.get_str("step").ok().and_then(Step::from_name) {
            Some(step) => step,
            None => {
                let step = self.retrier.run(COMPONENT, arrival, stop, || self.choose(ddl)).await?;
                // The first claimer's choice stands: `from` may be gone because it renamed it.
                let stored = self
                    .retrier
                    .run(COMPONENT, arrival, stop, || async {
                        self.log.fix_step(id, step.name()).await?;
                        self.log.entry(id, "read ddl step").await
                    })
                    .await?;
                stored.as_ref().and_then(|d| d.get_str("step").ok()).and_then(Step::from_name).unwrap_or(step)
            }
        };
        self.retrier.run(COMPONENT, arrival, stop, || self.perform(step, ddl)).await
    }

    async fn choose(&self, ddl: &Ddl) -> Result<Step, Error> {
        Ok(match ddl {
            Ddl::Drop(_) => Step::Drop,
            Ddl::DropDatabase { .. } => Step::DropDatabase,
            Ddl::Create { .. } | Ddl::CreateIndexes { .. } | Ddl::DropIndexes { .. } | Ddl::Modify { .. } => {
                Step::Schema
            }
            Ddl::Rename { from, .. } => {
                if self.catalog.exists(&self.mapper.map(from)).await? {
                    Step::Rename
                } else {
                    Step::DropTarget
                }
            }
        })
    }

    /// Performs a step; idempotent, so a claimer taking over after a crash may do it again.
    async fn perform(&self, step: Step, ddl: &Ddl) -> Result<Option<String>, Error> {
        // Whatever it does, what was known of the namespaces it names is stale after it.
        match ddl {
            Ddl::DropDatabase { db } => {
                let db = self.mapper.map_database(db);
                self.collections.forget(|ns| ns.db == db);
            }
            Ddl::Rename { from, to } => {
                let (from, to) = (self.mapper.map(from), self.mapper.map(to));
                self.collections.forget(|ns| *ns == from || *ns == to);
            }
            other => {
                if let Some(ns) = other.namespace().map(|ns| self.mapper.map(ns)) {
                    self.collections.forget(|known| *known == ns);
                }
            }
        }
        let catalog = &*self.catalog;
        match (step, ddl) {
            (Step::Drop, Ddl::Drop(ns)) => catalog.drop_collection(&self.mapper.map(ns)).await.map(|()| None),
            (Step::DropTarget, Ddl::Rename { to, .. }) => {
                catalog.drop_collection(&self.mapper.map(to)).await.map(|()| None)
            }
            (Step::DropDatabase, Ddl::DropDatabase { db }) => {
                // The source reported a drop for each of the database's collections first, and
                // those are applied by now. What is left was written by newer events (on topics
                // no marker holds back): keep it, and drop the database only when it is empty.
                let target = self.mapper.map_database(db);
                let left = catalog.collections(&target).await?;
                if left.iter().all(|name| name.starts_with("system.")) {
                    catalog.drop_database(&target).await?;
                } else {
                    tracing::info!(database = %target, collections = left.len(), "dropDatabase: newer collections exist, database kept");
                }
                Ok(None)
            }
            // Whatever `to` holds is replaced, as `dropTarget` does on the source: newer events
            // of `to` wait behind the rename's markers, so `to` holds only what the source dropped.
            (Step::Rename, Ddl::Rename { from, to }) => {
                catalog.rename(&self.mapper.map(from), &self.mapper.map(to)).await
            }
            (Step::Schema, ddl) => match ddl.namespace() {
                Some(ns) => {
                    let target = self.mapper.map(ns);
                    catalog.change(ddl, &target).await?;
                    if matches!(ddl, Ddl::Create { .. }) {
                        // Created (or there already): a transaction may write to it at once.
                        self.collections.exists(&target);
                    }
                    Ok(None)
                }
                None => Ok(None),
            },
            (step, ddl) => Ok(Some(format!("step {} does not fit {}", step.name(), ddl.kind()))),
        }
    }
}

/// What names a DDL in the log, and the namespaces it makes older events obsolete in (none for
/// DDL that leaves documents as they are).
fn scopes(ddl: &Ddl) -> (String, Vec<String>) {
    let scope = match ddl {
        Ddl::DropDatabase { db } => format!("{db}."),
        other => other.namespace().map(ToString::to_string).unwrap_or_default(),
    };
    let obsolete = match ddl {
        Ddl::Rename { from, to } => vec![from.to_string(), to.to_string()],
        other if other.ends_documents() => vec![scope.clone()],
        _ => Vec::new(),
    };
    (scope, obsolete)
}
