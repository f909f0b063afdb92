//! `sink-writer failback reconcile`, with the reverse sink's settings (`mongo.uri` the old
//! primary, `verify.source_uri` the new one, `status.capture_names` the reverse capture), once the
//! old primary is back and no longer takes writes, before the reverse sink first runs:
//!
//! 1. the old primary's changes after T, read from its own change stream (`scan.rs`): by
//!    definition the new primary may lack them;
//! 2. each changed document read on both sides, by `_id` (nothing else is read): equal (the change
//!    did cross) → nothing to do; different → the old primary's version is saved in
//!    `<apply.metadata_database>.rollback` (`rollback.rs`), all before anything else changes;
//! 3. the reverse capture asked to send each saved document's current state on the new primary
//!    again (or a delete where it has none), ordered with its stream: the reverse sink then
//!    brings the old primary to the new primary's state;
//! 4. the report, per namespace.
//!
//! Progress is kept (`journal.rs`): after a crash before step 2 ended, nothing was touched but
//! versions saved (saved again); after it, the saved documents not yet re-sent are asked again.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bson::{doc, Bson, Document, RawDocumentBuf};
use envelope::Namespace;
use futures::TryStreamExt;
use serde_json::json;

use super::journal::{self, time_json, Failover, Phase};
use super::rollback::{self, Entry, Rollback};
use super::scan::{self, Scan, Scope};
use super::{clients, group, Outcome};
use crate::config::Config;
use crate::error::Error;
use crate::resend::Resend;
use crate::verify::read::key_of;

/// What reading the changed documents on both sides found.
#[derive(Debug, Default)]
struct Compared {
    entries: Vec<Entry>,
    read_old: u64,
    read_new: u64,
    equal: u64,
}

pub async fn run(config: &Config, dry_run: bool) -> Result<Outcome, Error> {
    let (old, new) = match clients(config, "sink-writer-failback").await? {
        Ok(clients) => clients,
        Err(blocker) => return Ok(Outcome::refused(vec![blocker], json!({}))),
    };
    let Some(failover) =
        journal::failover(&new.database(config.failover_database()), &config.failback.failover_group).await?
    else {
        return Ok(Outcome::refused(vec![super::no_failover(config)], json!({})));
    };
    let meta = old.database(&config.apply.metadata_database);
    let progress = journal::progress(&meta, &failover.id).await?;
    let rollback = Rollback::new(&meta, &failover.id);
    let mut out = json!({
        "failover": failover.json(),
        "dry_run": dry_run,
        "scan": progress.scan.clone().map(|s| Bson::Document(s).into_relaxed_extjson()),
    });
    let mut text = String::new();
    if progress.phase < Phase::Saved {
        let mut blockers = preconditions(config, &meta).await?;
        let reverse_rules =
            transform::Rules::load(&config.transforms).map_err(|problems| Error::fatal(problems.join("; ")))?;
        blockers.extend(transformed(&failover, &reverse_rules));
        let scope = Scope::new(config)?;
        let timeout = Duration::from_millis(config.failback.scan_timeout_ms);
        let scan =
            scan::scan(&old, failover.consistent_up_to, &scope, &config.apply.metadata_database, timeout).await?;
        out["scan"] = scan_json(&failover, &scan, None);
        if let Some(blocker) = still_writing(&scan, config.failback.quiet_seconds, "old") {
            blockers.push(blocker);
        }
        if !blockers.is_empty() {
            return Ok(Outcome::refused(blockers, out));
        }
        let compared = compare(&old, &new, &scan).await?;
        out["scan"] = scan_json(&failover, &scan, Some(&compared));
        if dry_run {
            let rows: Vec<Document> = compared.entries.iter().map(row).collect();
            let reports = rollback::summarize(&rows, config.verify.max_listed);
            out["rolled_back"] = json!(compared.entries.len());
            out["namespaces"] = json!(reports);
            text.push_str(&format!(
                "would save {} versions of the old primary in {}.{} and have the new primary send them again \
                 ({} changed documents are equal on both sides)\n",
                compared.entries.len(),
                meta.name(),
                rollback::COLLECTION,
                compared.equal
            ));
            return Ok(Outcome::done(out, text));
        }
        rollback.save(&compared.entries).await?;
        let fields = doc! {
            "scanned_up_to": bson::Timestamp::from(scan.up_to),
            "scan": bson::to_bson(&out["scan"]).unwrap_or(Bson::Null),
        };
        journal::advance(&meta, &failover.id, Phase::Saved, fields).await?;
        crate::hooks::failback_step(Phase::Saved.name()).map_err(Error::fatal)?;
    }
    if progress.phase < Phase::Reconciled {
        let unsent = rollback.unsent().await?;
        let count: usize = unsent.values().map(Vec::len).sum();
        if dry_run {
            text.push_str(&format!("versions saved; would have the new primary send {count} documents again\n"));
            out["namespaces"] = json!(rollback.report(config.verify.max_listed).await?);
            return Ok(Outcome::done(out, text));
        }
        if count > 0 {
            let answered = resend(config, &rollback, &unsent).await?;
            out["resend"] = answered.clone();
            if answered["unanswered"].as_u64().unwrap_or(0) > 0
                || answered["refused"].as_array().is_some_and(|r| !r.is_empty())
            {
                out["namespaces"] = json!(rollback.report(config.verify.max_listed).await?);
                let why = "the reverse capture (status.capture_names) did not send every document again in time \
                           (repair.reply_timeout_ms): start it (it answers while it streams) and run this again";
                return Ok(Outcome::incomplete(why, out));
            }
        }
        journal::advance(&meta, &failover.id, Phase::Reconciled, doc! {}).await?;
    }
    let reports = rollback.report(config.verify.max_listed).await?;
    let total: u64 = reports.iter().map(|r| r.rolled_back).sum();
    text.push_str(&format!(
        "reconciled: {total} documents the old primary changed after T ({}) are rolled back to the new \
         primary's state; their old versions are in {}.{}\n",
        journal::time_text(failover.consistent_up_to),
        meta.name(),
        rollback::COLLECTION
    ));
    for r in &reports {
        text.push_str(&format!(
            "  {}: {} rolled back ({} the old primary had deleted, {} the new primary does not have), _id {}\n",
            r.ns,
            r.rolled_back,
            r.deleted_on_old_primary,
            r.absent_on_new_primary,
            r.ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        ));
    }
    text.push_str(
        "next: start the reverse sink (it applies the new primary's changes after F, then the documents sent again)\n",
    );
    out["rolled_back"] = json!(total);
    out["namespaces"] = json!(reports);
    Ok(Outcome::done(out, text))
}

/// What must hold before the old primary's versions are read: nothing of the reverse sink has
/// reached it yet (its writes could not be told from the old primary's own).
async fn preconditions(config: &Config, meta: &mongodb::Database) -> Result<Vec<String>, Error> {
    let mut blockers = Vec::new();
    let group = &config.consume.group_id;
    let claimed = meta
        .collection::<Document>(crate::apply::ledger::COLLECTION)
        .count_documents(doc! {"group": group})
        .await
        .map_err(|e| Error::mongo("read the reverse sink's ledger", e))?;
    let members = group::members(&config.kafka, group).await?;
    if claimed > 0 || members > 0 {
        blockers.push(format!(
            "the reverse sink ({group}) has run against the old primary already ({claimed} partitions in {}.{}, {members} \
             members): its writes cannot be told from the old primary's own; reconcile before it first starts",
            meta.name(),
            crate::apply::ledger::COLLECTION
        ));
    }
    Ok(blockers)
}

/// Why the two sides' documents cannot be compared as they are: rules changed them between the
/// two (the forward direction's, recorded at the failover, or the reverse capture's). Pure.
fn transformed(failover: &Failover, reverse: &transform::Rules) -> Option<String> {
    if !failover.transformed.is_empty() {
        return Some(format!(
            "the old primary's documents of {} went through [transforms] rules on their way to the new primary: it \
             does not hold them as the old primary had them, and a failback would write its versions back; bring \
             the old primary back by a new pipeline with a snapshot instead",
            failover.transformed.join(", ")
        ));
    }
    (!reverse.is_empty()).then(|| {
        "[transforms] has rules: the way back must carry the new primary's documents unchanged; remove them from \
         the reverse capture and sink"
            .to_string()
    })
}

/// A blocker when the scanned side took a write less than `quiet` seconds before the scan ended.
pub fn still_writing(scan: &Scan, quiet: u64, side: &str) -> Option<String> {
    let (at, what) = scan.last_change.as_ref()?;
    let age = u64::from(scan.up_to.t.saturating_sub(at.t));
    (age < quiet).then(|| {
        format!(
            "the {side} primary took a write {age} s ago ({what}): is it still taking writes? stop the applications \
             writing to it; it must be quiet for failback.quiet_seconds ({quiet})"
        )
    })
}

/// What the scan read and found, and (once compared) the documents read on each side: only the
/// changed ones, by `_id`.
fn scan_json(failover: &Failover, scan: &Scan, compared: Option<&Compared>) -> serde_json::Value {
    json!({
        "from": time_json(failover.consistent_up_to),
        "up_to": time_json(scan.up_to),
        "events_read": scan.events_read,
        "documents_changed": scan.documents.len(),
        "already_equal": compared.map(|c| c.equal),
        "documents_read": compared.map(|c| json!({"old_primary": c.read_old, "new_primary": c.read_new})),
        "last_change": scan.last_change.as_ref().map(|(_, what)| what.clone()),
        "schema_changes": scan.schema_changes,
    })
}

/// A rollback row as the report reads it, for a dry run.
fn row(e: &Entry) -> Document {
    doc! {"ns": e.ns.to_string(), "id": e.id.clone(), "op": e.op, "new_primary": if e.on_new_primary { "present" } else { "absent" }}
}

/// Reads each changed document on both sides, by `_id`, and keeps those that differ.
async fn compare(old: &mongodb::Client, new: &mongodb::Client, scan: &Scan) -> Result<Compared, Error> {
    let mut by_ns: BTreeMap<&Namespace, Vec<&scan::Changed>> = BTreeMap::new();
    for changed in &scan.documents {
        by_ns.entry(&changed.ns).or_default().push(changed);
    }
    let mut compared = Compared::default();
    for (ns, changed) in by_ns {
        let ids: Vec<&Bson> = changed.iter().map(|c| &c.id).collect();
        let on_old = fetch(&old.database(&ns.db).collection(&ns.coll), &ids).await?;
        let on_new = fetch(&new.database(&ns.db).collection(&ns.coll), &ids).await?;
        compared.read_old += on_old.len() as u64;
        compared.read_new += on_new.len() as u64;
        for c in changed {
            let key = key_of(&c.id);
            let (a, b) = (on_old.get(&key), on_new.get(&key));
            if a.map(|d| d.as_bytes()) == b.map(|d| d.as_bytes()) {
                compared.equal += 1;
                continue;
            }
            let document = a.map(|raw| Document::try_from(raw.as_ref())).transpose().map_err(|e| {
                Error::fatal(format!("{ns} _id {}: the old primary's version does not decode: {e}", c.id))
            })?;
            compared.entries.push(Entry {
                ns: ns.clone(),
                id: c.id.clone(),
                document,
                op: c.op,
                at: c.at,
                on_new_primary: b.is_some(),
            });
        }
    }
    Ok(compared)
}

/// The documents with exactly these `_id`s, by `_id` key.
async fn fetch(
    coll: &mongodb::Collection<RawDocumentBuf>,
    ids: &[&Bson],
) -> Result<HashMap<Vec<u8>, RawDocumentBuf>, Error> {
    let mut found = HashMap::new();
    for chunk in ids.chunks(1000) {
        let list: Vec<Bson> = chunk.iter().map(|id| (*id).clone()).collect();
        let mut cursor = coll.find(doc! {"_id": {"$in": list}}).await.map_err(|e| Error::mongo("read by _id", e))?;
        while let Some(raw) = cursor.try_next().await.map_err(|e| Error::mongo("read by _id", e))? {
            let id = raw.get("_id").ok().flatten().and_then(|id| Bson::try_from(id.to_raw_bson()).ok());
            if let Some(key) = id.map(|id| key_of(&id)).filter(|k| chunk.iter().any(|id| key_of(id) == *k)) {
                found.insert(key, raw);
            }
        }
    }
    Ok(found)
}

/// Asks the reverse capture to send the unsent documents again and waits for its answers; marks
/// each namespace's documents sent once every request is answered.
async fn resend(
    config: &Config,
    rollback: &Rollback,
    unsent: &BTreeMap<Namespace, Vec<Bson>>,
) -> Result<serde_json::Value, Error> {
    let mut resend = Resend::new(config).await?;
    let mut sent = Vec::new();
    for (ns, ids) in unsent {
        sent.push((ns, resend.request(ns, ids.clone(), "failback reconcile").await?));
    }
    let answers = resend.answers().await?;
    let (mut resent, mut deleted, mut superseded, mut refused) = (0, 0, 0, Vec::new());
    for reply in answers.replies.values() {
        resent += reply.resent;
        deleted += reply.deleted;
        superseded += reply.superseded;
        refused.extend(reply.error.clone());
    }
    if answers.complete() {
        for (ns, requests) in &sent {
            rollback.resent(ns, requests).await?;
        }
    }
    Ok(json!({
        "requests": sent.iter().map(|(_, r)| r.len()).sum::<usize>(),
        "resent": resent,
        "deleted": deleted,
        "superseded": superseded,
        "unanswered": answers.unanswered.len(),
        "refused": refused,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envelope::ClusterTime;

    #[test]
    fn documents_changed_by_rules_cannot_be_failed_back() {
        let mut failover = Failover {
            id: "sink".into(),
            consistent_up_to: ClusterTime { t: 1, i: 1 },
            promoted_at: ClusterTime { t: 2, i: 1 },
            pending_messages: 0,
            transformed: Vec::new(),
            recorded_at: bson::DateTime::MIN,
            switched_back_at: None,
        };
        assert_eq!(transformed(&failover, &transform::Rules::default()), None);
        failover.transformed = vec!["app\\.people".into()];
        let blocker = transformed(&failover, &transform::Rules::default()).expect("refused");
        assert!(blocker.contains("app\\.people") && blocker.contains("snapshot"), "{blocker}");
    }

    #[test]
    fn a_recent_write_means_the_side_still_takes_writes() {
        let mut scan = Scan { up_to: ClusterTime { t: 1000, i: 1 }, ..Scan::default() };
        assert_eq!(still_writing(&scan, 60, "old"), None, "no write since T");
        scan.last_change = Some((ClusterTime { t: 990, i: 4 }, "update app.docs _id 1".into()));
        let blocker = still_writing(&scan, 60, "old").expect("10 s ago");
        assert!(blocker.contains("10 s ago") && blocker.contains("app.docs"), "{blocker}");
        assert_eq!(still_writing(&scan, 10, "old"), None, "quiet long enough");
    }
}
