//! Which first writes of a batch go as inserts: a document's first write is a replacement, the
//! target has no document with its `_id`, so it is inserted. Both modes; what it saves differs.
//!
//! Inside a transaction (`exactly_once`), the server's upsert of a missing `_id` looks the key up
//! from the transaction's snapshot and steps past every key that other writers added to the `_id`
//! index since the snapshot was taken (none is visible to it), each step a read of the history
//! store. With four partitions filling one collection, a transaction that falls behind gets slower
//! the longer it lasts: one ran 440 s for 2,000 upserts here. An insert checks its one key and
//! does not walk. Outside a transaction an insert still costs the server less than an upsert (no
//! query stage).
//!
//! The target is read first, outside any transaction (every committed key is visible there): one
//! query per namespace and round. A document only this partition writes cannot appear meanwhile;
//! if it has anyway (another writer of the target, or an equal `_id` of another BSON type), the
//! insert is refused and goes back to the upsert it came from (`WriteOp::as_upsert`). A failed
//! read changes nothing: the writes stay upserts.

use std::collections::{HashMap, HashSet};

use bson::{Bson, Document};
use envelope::Namespace;

use crate::apply::target::Target;
use crate::apply::write_plan::{identity, Action, WriteOp};
use crate::apply::writer::dollar_name;
use crate::error::Error;

/// `_id`s asked for in one query.
const IDS_PER_QUERY: usize = 1_000;
/// How long the target may take to say which documents it has.
const ASK_FOR: std::time::Duration = std::time::Duration::from_secs(2);

/// Turns into inserts the first writes of documents the target does not have: replacements keyed
/// by `_id` alone whose document has no top-level `$`-prefixed field (those go as pipelines), and
/// which `candidate` accepts.
pub async fn insert_where_absent(
    target: &dyn Target,
    rounds: &mut [Vec<WriteOp>],
    candidate: impl Fn(&WriteOp) -> bool,
) {
    // An unreachable target is the write's to wait for (and retry), not this read's.
    match tokio::time::timeout(ASK_FOR, convert(target, rounds, candidate)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "could not read which documents the target has: they stay upserts"),
        Err(_) => tracing::debug!("the target did not say in time which documents it has: they stay upserts"),
    }
}

async fn convert(
    target: &dyn Target,
    rounds: &mut [Vec<WriteOp>],
    candidate: impl Fn(&WriteOp) -> bool,
) -> Result<(), Error> {
    let mut seen: HashSet<usize> = HashSet::new();
    let mut candidates: HashMap<Namespace, Vec<(usize, usize)>> = HashMap::new();
    for (r, round) in rounds.iter().enumerate() {
        for (i, op) in round.iter().enumerate() {
            if seen.insert(op.doc) && insertable(op) && candidate(op) {
                candidates.entry(op.ns.clone()).or_default().push((r, i));
            }
        }
    }
    for (ns, at) in candidates {
        let mut present: HashSet<String> = HashSet::new();
        for chunk in at.chunks(IDS_PER_QUERY) {
            let ids: Vec<Bson> = chunk.iter().filter_map(|(r, i)| rounds[*r][*i].filter.get("_id").cloned()).collect();
            let found: Vec<Document> = target.present(&ns, ids).await?;
            present.extend(found.iter().map(identity));
        }
        // Compared as the documents' identities (an Int32 and an Int64 of one value are one): an
        // `_id` the target holds under an equal value of another type (a double) is taken as
        // absent, and its refused insert goes back to the upsert.
        for (r, i) in at {
            let op = &mut rounds[r][i];
            if !present.contains(&identity(&op.filter)) {
                op.as_insert();
            }
        }
    }
    Ok(())
}

/// A replacement keyed by `_id` alone, with no top-level `$`-prefixed field.
fn insertable(op: &WriteOp) -> bool {
    let Action::Replace(document) = &op.action else { return false };
    op.filter.len() == 1 && op.filter.contains_key("_id") && !dollar_name(document)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, RawDocumentBuf};

    fn op(filter: Document, action: Action) -> WriteOp {
        WriteOp { ns: Namespace::new("d", "c"), filter, action, offset: 0, doc: 0 }
    }

    #[test]
    fn only_replacements_keyed_by_id_alone_and_without_dollar_fields_may_become_inserts() {
        let plain = RawDocumentBuf::from_document(&doc! {"_id": 1, "a": 1}).expect("bson");
        let dollar = RawDocumentBuf::from_document(&doc! {"_id": 1, "$a": 1}).expect("bson");
        assert!(insertable(&op(doc! {"_id": 1}, Action::Replace(plain.clone()))));
        assert!(!insertable(&op(doc! {"_id": 1}, Action::Replace(dollar))));
        assert!(!insertable(&op(doc! {"_id": 1, "tenant": 2}, Action::Replace(plain.clone()))));
        assert!(!insertable(&op(doc! {"_id": 1}, Action::Update(Bson::Document(doc! {"$set": {"a": 2}})))));
        assert!(!insertable(&op(doc! {"_id": 1}, Action::Delete)));
        assert!(!insertable(&op(doc! {"_id": 1}, Action::Insert(plain))));
    }

    #[test]
    fn a_refused_insert_goes_back_to_the_same_replacement() {
        let document = RawDocumentBuf::from_document(&doc! {"_id": 1, "a": 1}).expect("bson");
        let mut write = op(doc! {"_id": 1}, Action::Insert(document.clone()));
        assert!(write.as_upsert());
        assert_eq!(write.action, Action::Replace(document));
        assert!(!write.as_upsert(), "a replacement stays one");
    }
}
