//! `<apply.metadata_database>.rollback` on the old primary: the version of every document the old
//! primary changed after T and the new primary does not hold, saved before the document is brought
//! to the new primary's state, as MongoDB's own rollback keeps files of what it undoes. One
//! document per failover, namespace and `_id`:
//!
//! ```text
//! { _id: {failover, ns, id}, failover, ns, id,
//!   document,      // the old primary's version; null when it had deleted the document
//!   op,            // its last change there: insert, update, replace or delete
//!   cluster_time,  // when (the old primary's cluster time)
//!   new_primary,   // "present": its version is re-sent; "absent": the document is deleted
//!   state,         // "saved", then "resent" once the new primary sent it again
//!   saved_at, requests }
//! ```
//!
//! Applications owners read it per namespace (`sink-writer failback report`).

use std::collections::BTreeMap;

use bson::{doc, Bson, DateTime, Document};
use envelope::{ClusterTime, Namespace};
use futures::TryStreamExt;
use serde::Serialize;

use crate::error::Error;

pub const COLLECTION: &str = "rollback";
const SAVED: &str = "saved";
const RESENT: &str = "resent";

/// A version to save.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub ns: Namespace,
    pub id: Bson,
    /// The old primary's version; none: it deleted the document.
    pub document: Option<Document>,
    pub op: &'static str,
    pub at: ClusterTime,
    /// Whether the new primary holds the document (else it is deleted on the old one).
    pub on_new_primary: bool,
}

/// What was rolled back in one namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NamespaceReport {
    pub ns: String,
    pub rolled_back: u64,
    /// Documents the old primary had deleted (the new primary's version comes back).
    pub deleted_on_old_primary: u64,
    /// Documents the new primary does not hold (deleted on the old primary now).
    pub absent_on_new_primary: u64,
    /// Sent again by the new primary's capture.
    pub resent: u64,
    /// The first `_id`s (relaxed extended JSON).
    pub ids: Vec<serde_json::Value>,
}

/// The rollback of one failover.
pub struct Rollback {
    coll: mongodb::Collection<Document>,
    failover: String,
}

/// The update statement that saves `entry` (again: a save before the versions were all kept
/// replaces an earlier one, still the old primary's own). Pure.
pub fn statement(failover: &str, entry: &Entry) -> Document {
    let ns = entry.ns.to_string();
    doc! {
        "q": {"_id": {"failover": failover, "ns": &ns, "id": entry.id.clone()}},
        "u": {"$set": {
            "failover": failover,
            "ns": &ns,
            "id": entry.id.clone(),
            "document": entry.document.clone().map_or(Bson::Null, Bson::Document),
            "op": entry.op,
            "cluster_time": bson::Timestamp::from(entry.at),
            "new_primary": if entry.on_new_primary { "present" } else { "absent" },
            "state": SAVED,
            "saved_at": DateTime::now(),
        }},
        "upsert": true,
    }
}

impl Rollback {
    pub fn new(meta: &mongodb::Database, failover: &str) -> Self {
        Self { coll: meta.collection(COLLECTION), failover: failover.to_string() }
    }

    /// Saves `entries`, a few hundred per command.
    pub async fn save(&self, entries: &[Entry]) -> Result<(), Error> {
        let db = self.coll.client().database(&self.coll.namespace().db);
        for chunk in entries.chunks(500) {
            let updates: Vec<Document> = chunk.iter().map(|e| statement(&self.failover, e)).collect();
            let reply = db
                .run_command(
                    doc! {"update": COLLECTION, "updates": updates, "ordered": true, "writeConcern": {"w": "majority"}},
                )
                .await
                .map_err(|e| Error::mongo("save the old primary's versions", e))?;
            if let Ok(errors) = reply.get_array("writeErrors") {
                return Err(Error::fatal(format!("the rollback collection refused a version: {errors:?}")));
            }
        }
        Ok(())
    }

    /// The `_id`s saved and not yet sent again, per namespace.
    pub async fn unsent(&self) -> Result<BTreeMap<Namespace, Vec<Bson>>, Error> {
        let mut out: BTreeMap<Namespace, Vec<Bson>> = BTreeMap::new();
        for d in self.find(doc! {"failover": &self.failover, "state": SAVED}).await? {
            if let (Some((db, coll)), Some(id)) = (d.get_str("ns").ok().and_then(|n| n.split_once('.')), d.get("id")) {
                out.entry(Namespace::new(db, coll)).or_default().push(id.clone());
            }
        }
        Ok(out)
    }

    /// Marks `ns`'s saved documents as sent again by `requests`.
    pub async fn resent(&self, ns: &Namespace, requests: &[String]) -> Result<(), Error> {
        self.coll
            .update_many(
                doc! {"failover": &self.failover, "ns": ns.to_string(), "state": SAVED},
                doc! {"$set": {"state": RESENT, "requests": requests, "resent_at": DateTime::now()}},
            )
            .await
            .map_err(|e| Error::mongo("mark the rolled back documents sent again", e))?;
        Ok(())
    }

    /// What was rolled back, per namespace, listing up to `listed` `_id`s each.
    pub async fn report(&self, listed: usize) -> Result<Vec<NamespaceReport>, Error> {
        let found = self.find(doc! {"failover": &self.failover}).await?;
        Ok(summarize(&found, listed))
    }

    async fn find(&self, filter: Document) -> Result<Vec<Document>, Error> {
        self.coll
            .find(filter)
            .projection(doc! {"document": 0})
            .sort(doc! {"ns": 1, "_id": 1})
            .await
            .map_err(|e| Error::mongo("read the rollback collection", e))?
            .try_collect()
            .await
            .map_err(|e| Error::mongo("read the rollback collection", e))
    }
}

/// Rollback documents (without their versions) → one report per namespace. Pure.
pub fn summarize(found: &[Document], listed: usize) -> Vec<NamespaceReport> {
    let mut by_ns: BTreeMap<String, NamespaceReport> = BTreeMap::new();
    for d in found {
        let ns = d.get_str("ns").unwrap_or("?").to_string();
        let report = by_ns.entry(ns.clone()).or_insert_with(|| NamespaceReport { ns, ..NamespaceReport::default() });
        report.rolled_back += 1;
        report.deleted_on_old_primary += u64::from(d.get_str("op") == Ok("delete"));
        report.absent_on_new_primary += u64::from(d.get_str("new_primary") == Ok("absent"));
        report.resent += u64::from(d.get_str("state") == Ok(RESENT));
        if report.ids.len() < listed {
            report.ids.push(d.get("id").cloned().unwrap_or(Bson::Null).into_relaxed_extjson());
        }
    }
    by_ns.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: i32, document: Option<Document>, on_new_primary: bool) -> Entry {
        Entry {
            ns: Namespace::new("app", "docs"),
            id: Bson::Int32(id),
            op: if document.is_some() { "update" } else { "delete" },
            document,
            at: ClusterTime { t: 50, i: 2 },
            on_new_primary,
        }
    }

    #[test]
    fn a_saved_version_is_keyed_by_failover_namespace_and_id() {
        let s = statement("f1", &entry(7, Some(doc! {"_id": 7, "v": 2}), true));
        assert_eq!(s.get_document("q").expect("q"), &doc! {"_id": {"failover": "f1", "ns": "app.docs", "id": 7}});
        let set = s.get_document("u").and_then(|u| u.get_document("$set")).expect("$set");
        assert_eq!(set.get_document("document").expect("document"), &doc! {"_id": 7, "v": 2});
        assert_eq!(set.get_timestamp("cluster_time").expect("time"), bson::Timestamp { time: 50, increment: 2 });
        assert_eq!((set.get_str("new_primary"), set.get_str("state")), (Ok("present"), Ok("saved")));
        let deleted = statement("f1", &entry(8, None, false));
        let set = deleted.get_document("u").and_then(|u| u.get_document("$set")).expect("$set");
        assert_eq!(set.get("document"), Some(&Bson::Null), "the old primary had deleted it");
        assert_eq!(set.get_str("new_primary"), Ok("absent"));
    }

    #[test]
    fn the_report_counts_per_namespace() {
        let row = |ns: &str, id: i32, op: &str, new_primary: &str, state: &str| {
            doc! {"ns": ns, "id": id, "op": op, "new_primary": new_primary, "state": state}
        };
        let found = vec![
            row("app.a", 1, "update", "present", "resent"),
            row("app.a", 2, "delete", "present", "resent"),
            row("app.a", 3, "insert", "absent", "saved"),
            row("app.b", 9, "update", "absent", "resent"),
        ];
        let reports = summarize(&found, 2);
        assert_eq!(reports.len(), 2);
        let a = &reports[0];
        assert_eq!(
            (a.ns.as_str(), a.rolled_back, a.deleted_on_old_primary, a.absent_on_new_primary),
            ("app.a", 3, 1, 1)
        );
        assert_eq!((a.resent, a.ids.len()), (2, 2), "ids listed up to the cap");
        assert_eq!((reports[1].ns.as_str(), reports[1].rolled_back), ("app.b", 1));
    }
}
