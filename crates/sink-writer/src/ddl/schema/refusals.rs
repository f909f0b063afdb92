//! What the target refuses: changes pending (tried again when data changes) and what is not
//! carried for good, each logged, noted on `/health/readyz`, counted in
//! `sink_writer_schema_conflicts` and kept in `<metadata_database>.schema_conflicts` for `status`.

use bson::{doc, Document};
use envelope::Namespace;

use super::{lock, Pending, Schema};
use crate::error::{Common, Error, Failure};

impl Schema {
    /// What the target refuses for good and replication leaves out: logged, noted, counted,
    /// listed by `status`, not tried again.
    pub(super) fn left_out(&self, target: &Namespace, what: &str, reason: &str) {
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

    /// A `create` made `target` anew: what an earlier one left out no longer applies.
    pub(super) fn carried_again(&self, target: &Namespace) {
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

    pub(super) fn count(&self) {
        let total = lock(&self.pending).len() + lock(&self.not_carried).len();
        self.conflicts.set(i64::try_from(total).unwrap_or(i64::MAX));
    }

    /// A transient failure is returned; a refusal is recorded for a later try.
    pub(super) fn refused_or_error(
        &self,
        target: &Namespace,
        what: &str,
        command: Document,
        e: mongodb::error::Error,
    ) -> Result<(), Error> {
        match Error::mongo("schema", e) {
            Error::Common(Common::Mongo(Failure { retriable: false, reason, .. })) => {
                self.pend(target, what, command, reason);
                Ok(())
            }
            other => Err(other),
        }
    }

    /// Records a refused schema change for a later try.
    pub(super) fn pend(&self, target: &Namespace, what: &str, command: Document, reason: String) {
        tracing::warn!(namespace = %target, index = what, %reason, "the target refuses a schema change: replication goes on, tried again later");
        let topic = note_topic(target, what);
        self.health.note(&topic, Some(reason.clone()));
        let (log, entry) =
            (self.conflict_log.clone(), doc! {"what": &topic, "reason": &reason, "at": bson::DateTime::now()});
        tokio::spawn(async move { log.replace_one(doc! {"_id": &topic}, entry).upsert(true).await });
        lock(&self.pending).insert((target.clone(), what.to_string()), Pending { db: target.db.clone(), command });
        self.count();
    }

    pub(super) fn resolved(&self, target: &Namespace, what: &str) {
        if lock(&self.pending).remove(&(target.clone(), what.to_string())).is_some() {
            tracing::info!(namespace = %target, index = what, "schema change applied after all");
            self.unnote(note_topic(target, what));
        }
    }

    /// A later DDL of the same index makes a refused one moot.
    pub(super) fn forget(&self, target: &Namespace, what: &str) {
        if lock(&self.pending).remove(&(target.clone(), what.to_string())).is_some() {
            self.unnote(note_topic(target, what));
        }
    }

    pub(super) fn unnote(&self, topic: String) {
        self.health.note(&topic, None);
        let log = self.conflict_log.clone();
        tokio::spawn(async move { log.delete_one(doc! {"_id": topic}).await });
        self.count();
    }
}

fn note_topic(target: &Namespace, what: &str) -> String {
    if what.is_empty() {
        format!("collection {target}")
    } else {
        format!("index {target} {what}")
    }
}
