//! A deployment's changes after a cluster time, up to the present, read from its own change
//! stream opened at that time (`startAtOperationTime`, which Amazon DocumentDB has; no oplog
//! read): the old primary's writes after T, or what the new primary changed after the point the
//! old one has reached. The present is a marker: the scan inserts a document into a metadata
//! database and reads until that insert comes by, so every change before it was seen (an idle
//! DocumentDB stream reports no position to tell). Changes collapse per document: its last one,
//! with its cluster time. Only the changes are read, never a collection.

use std::collections::HashMap;
use std::time::Duration;

use bson::{doc, oid::ObjectId, Bson, DateTime, Document};
use envelope::{ClusterTime, Namespace};
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType};

use crate::config::Config;
use crate::error::Error;
use crate::verify::scope::Selection;

/// The collection the markers go to, in the metadata database named at the scan.
pub const MARKS: &str = "failback_marks";

/// Which namespaces' changes count: what `verify.include` / `verify.exclude` select, never the
/// system databases nor the metadata databases.
pub struct Scope {
    internal: Vec<String>,
    selection: Selection,
}

impl Scope {
    pub fn new(config: &Config) -> Result<Self, Error> {
        let internal = ["admin", "config", "local", &config.apply.metadata_database, config.failover_database()]
            .iter()
            .map(|db| db.to_string())
            .collect();
        Ok(Self { internal, selection: Selection::new(config)? })
    }

    pub fn takes(&self, ns: &Namespace) -> bool {
        !self.internal.contains(&ns.db) && !ns.coll.starts_with("system.") && self.selection.takes(ns)
    }
}

/// One document's last change.
#[derive(Debug, Clone, PartialEq)]
pub struct Changed {
    pub ns: Namespace,
    pub id: Bson,
    /// `insert`, `update`, `replace` or `delete`.
    pub op: &'static str,
    pub at: ClusterTime,
}

/// What a scan found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scan {
    /// Each changed document once, with its last change, in the order first seen.
    pub documents: Vec<Changed>,
    /// Changes that are no document's (a drop, a rename, a dropped database), described.
    pub schema_changes: Vec<String>,
    /// Change events read, every namespace's.
    pub events_read: u64,
    /// The last change in scope: when, and what.
    pub last_change: Option<(ClusterTime, String)>,
    /// The marker's cluster time: every change up to it was read.
    pub up_to: ClusterTime,
}

/// Collapses change events into a [`Scan`]. Pure.
#[derive(Default)]
pub struct Collector {
    index: HashMap<(Namespace, Vec<u8>), usize>,
    scan: Scan,
}

impl Collector {
    /// One change event of `ns` (none: a cluster-wide one) at `at`.
    pub fn event(
        &mut self,
        scope: &Scope,
        ns: Option<Namespace>,
        op: &OperationType,
        key: Option<&Document>,
        at: ClusterTime,
    ) {
        self.scan.events_read += 1;
        let Some(ns) =
            ns.filter(|ns| scope.takes(ns) || (ns.coll.is_empty() && scope.takes(&Namespace::new(&ns.db, "_"))))
        else {
            return;
        };
        let op = match op {
            OperationType::Insert => "insert",
            OperationType::Update => "update",
            OperationType::Replace => "replace",
            OperationType::Delete => "delete",
            other => {
                let what = match other {
                    OperationType::Drop => "drop".to_string(),
                    OperationType::Rename => "rename".to_string(),
                    OperationType::DropDatabase => "dropDatabase".to_string(),
                    OperationType::Invalidate => "invalidate".to_string(),
                    OperationType::Other(kind) => kind.clone(),
                    _ => "change".to_string(),
                };
                let name = if ns.coll.is_empty() { ns.db.clone() } else { ns.to_string() };
                let text = format!("{what} {name} at {}:{}", at.t, at.i);
                self.scan.last_change = Some((at, text.clone()));
                self.scan.schema_changes.push(text);
                return;
            }
        };
        let Some(id) = key.and_then(|k| k.get("_id")).cloned() else { return };
        self.scan.last_change = Some((at, format!("{op} {ns} _id {id}")));
        let changed = Changed { ns: ns.clone(), id: id.clone(), op, at };
        let key = (ns, crate::verify::read::key_of(&id));
        match self.index.get(&key) {
            Some(&i) => self.scan.documents[i] = changed,
            None => {
                self.index.insert(key, self.scan.documents.len());
                self.scan.documents.push(changed);
            }
        }
    }

    pub fn finish(mut self, up_to: ClusterTime) -> Scan {
        self.scan.up_to = up_to;
        self.scan
    }
}

/// The first cluster time after `at`.
pub fn after(at: ClusterTime) -> ClusterTime {
    match at.i.checked_add(1) {
        Some(i) => ClusterTime { t: at.t, i },
        None => ClusterTime { t: at.t.saturating_add(1), i: 0 },
    }
}

/// Reads `client`'s changes after `from` up to a marker written into `marker_db`, within `timeout`.
pub async fn scan(
    client: &mongodb::Client,
    from: ClusterTime,
    scope: &Scope,
    marker_db: &str,
    timeout: Duration,
) -> Result<Scan, Error> {
    let start = after(from);
    let mut stream = client
        .watch()
        .start_at_operation_time(bson::Timestamp::from(start))
        .max_await_time(Duration::from_millis(500))
        .await
        .map_err(|e| {
            Error::mongo(
                &format!("open a change stream at {}:{} (does the history still reach it?)", start.t, start.i),
                e,
            )
        })?;
    let marker = ObjectId::new();
    client
        .database(marker_db)
        .run_command(doc! {
            "insert": MARKS,
            "documents": [{"_id": marker, "at": DateTime::now()}],
            "writeConcern": {"w": "majority"},
        })
        .await
        .map_err(|e| Error::mongo("write the scan's marker", e))?;
    let mut collector = Collector::default();
    let read = async {
        loop {
            let Some(event): Option<ChangeStreamEvent<Document>> =
                stream.next_if_any().await.map_err(|e| Error::mongo("read the change stream", e))?
            else {
                continue;
            };
            let at = event.cluster_time.map(ClusterTime::from).unwrap_or_default();
            let ns = event.ns.as_ref().map(|n| Namespace::new(&n.db, n.coll.clone().unwrap_or_default()));
            let key = event.document_key.as_ref();
            let is_marker = ns.as_ref().is_some_and(|ns| ns.db == marker_db && ns.coll == MARKS)
                && key.and_then(|k| k.get_object_id("_id").ok()) == Some(marker);
            if is_marker {
                return Ok::<_, Error>(at);
            }
            collector.event(scope, ns, &event.operation_type, key, at);
        }
    };
    let up_to = tokio::time::timeout(timeout, read).await.map_err(|_| {
        Error::fatal(format!(
            "the change stream did not reach the scan's marker in {marker_db}.{MARKS} within {} s \
             (failback.scan_timeout_ms)",
            timeout.as_secs()
        ))
    })??;
    Ok(collector.finish(up_to))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        let mut config = Config::default();
        config.apply.metadata_database = "meta".into();
        config.verify.exclude = "app\\.skip".into();
        Scope::new(&config).expect("scope")
    }

    fn at(t: u32) -> ClusterTime {
        ClusterTime { t, i: 1 }
    }

    #[test]
    fn each_document_keeps_its_last_change() {
        let scope = scope();
        let mut c = Collector::default();
        let ns = || Some(Namespace::new("app", "docs"));
        c.event(&scope, ns(), &OperationType::Insert, Some(&doc! {"_id": 1}), at(10));
        c.event(&scope, ns(), &OperationType::Update, Some(&doc! {"_id": 2}), at(11));
        c.event(&scope, ns(), &OperationType::Delete, Some(&doc! {"_id": 1}), at(12));
        c.event(&scope, ns(), &OperationType::Update, Some(&doc! {"_id": 1_i64}), at(13));
        let scan = c.finish(at(20));
        let seen: Vec<(Bson, &str, u32)> = scan.documents.iter().map(|d| (d.id.clone(), d.op, d.at.t)).collect();
        assert_eq!(
            seen,
            vec![(Bson::Int32(1), "delete", 12), (Bson::Int32(2), "update", 11), (Bson::Int64(1), "update", 13)],
            "an Int64 1 is another document than an Int32 1"
        );
        assert_eq!((scan.events_read, scan.up_to), (4, at(20)));
        assert_eq!(scan.last_change.map(|(t, _)| t), Some(at(13)));
    }

    #[test]
    fn only_the_selected_namespaces_count() {
        let scope = scope();
        let mut c = Collector::default();
        for db in ["meta", "admin", "config"] {
            c.event(&scope, Some(Namespace::new(db, "x")), &OperationType::Insert, Some(&doc! {"_id": 1}), at(1));
        }
        c.event(&scope, Some(Namespace::new("app", "skip")), &OperationType::Insert, Some(&doc! {"_id": 1}), at(2));
        c.event(&scope, Some(Namespace::new("app", "system.views")), &OperationType::Insert, None, at(3));
        let scan = c.finish(at(9));
        assert!(scan.documents.is_empty() && scan.last_change.is_none(), "{scan:?}");
        assert_eq!(scan.events_read, 5, "read, not counted");
    }

    #[test]
    fn schema_changes_are_listed_apart() {
        let scope = scope();
        let mut c = Collector::default();
        c.event(&scope, Some(Namespace::new("app", "docs")), &OperationType::Drop, None, at(5));
        c.event(&scope, Some(Namespace::new("app", "")), &OperationType::DropDatabase, None, at(6));
        let scan = c.finish(at(9));
        assert_eq!(scan.schema_changes, vec!["drop app.docs at 5:1".to_string(), "dropDatabase app at 6:1".into()]);
        assert!(scan.documents.is_empty());
        assert_eq!(after(ClusterTime { t: 5, i: u32::MAX }), ClusterTime { t: 6, i: 0 });
    }
}
