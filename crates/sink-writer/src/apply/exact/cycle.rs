//! A cycle of unique values among parked documents. The source may move values around documents
//! in a way whose every intermediate step the target never sees (A→tmp, B→x, A→y while capture
//! was down: the looked-up events carry only A=y and B=x): each parked write then waits for a
//! value another parked document holds, for ever. A refused parked write whose value's holder has
//! parked writes too (on this partition or another of the group) is resolved together with it:
//! one transaction computes every member's newest state (updates applied in a scratch collection
//! by the server itself, so they mean exactly what they mean on the target), removes the members
//! from the target, writes their newest states and settles their parked writes. Readers of the
//! target never see the documents missing: the transaction is atomic. A holder found while
//! writing joins the cycle, up to a few members; a holder with nothing parked is not a cycle (its
//! own change, still on its way, frees the value).

use bson::{doc, Bson, Document, RawDocumentBuf};
use envelope::Namespace;
use mongodb::ClientSession;

use super::Exact;
use crate::apply::parked_store::{self, PARKED};
use crate::apply::parking::Parked;
use crate::apply::retry::WRITES;
use crate::apply::transaction::{self, Advance};
use crate::apply::write_plan::{self, Action, DocKey, WriteOp};
use crate::apply::writer::{Conflict, InTransaction, Outcome};
use crate::error::Error;

/// The scratch collection (metadata database) where parked updates are computed.
pub const SCRATCH: &str = "scratch";

/// The most documents one cycle may hold.
const MAX_MEMBERS: usize = 16;

enum Resolution {
    Done,
    /// Writing the newest states met a value held by this document.
    BlockedBy(DocKey),
    /// Not resolvable now (a member's parked writes moved, or a holder waits for nothing).
    NotNow,
}

impl Exact<'_> {
    /// Breaks the cycle `key`'s refused parked write may be part of; whether it did.
    pub(super) async fn break_cycle(
        &mut self,
        key: &DocKey,
        parked: &Parked,
        conflict: &Conflict,
    ) -> Result<bool, Error> {
        let Some(value) = &conflict.key_value else { return Ok(false) };
        let Some(mut holder) = self.holder(&key.0, value, &parked.op.filter).await? else { return Ok(false) };
        let mut members = vec![key.clone()];
        while members.len() < MAX_MEMBERS && !members.contains(&holder) {
            let ledger = self.task.shared.ledger();
            if parked_store::of_document(ledger.database(), ledger.group(), &holder).await?.is_empty() {
                return Ok(false);
            }
            members.push(holder);
            match self.resolve(&members).await? {
                Resolution::Done => {
                    self.task.shared.metrics.unique_cycles_broken.inc();
                    tracing::info!(partition = %self.name, documents = members.len(), "a cycle of unique values among parked writes broken");
                    return Ok(true);
                }
                Resolution::BlockedBy(next) => holder = next,
                Resolution::NotNow => return Ok(false),
            }
        }
        Ok(false)
    }

    /// The document other than the one `filter` names that holds `value` in `ns`.
    async fn holder(&self, ns: &Namespace, value: &Document, filter: &Document) -> Result<Option<DocKey>, Error> {
        let coll = self.task.shared.client.database(&ns.db).collection::<Document>(&ns.coll);
        let mut query = value.clone();
        if let Some(id) = filter.get("_id") {
            query.insert("_id", doc! {"$ne": id.clone()});
        }
        let found = coll
            .find_one(query)
            .projection(doc! {"_id": 1})
            .await
            .map_err(|e| Error::mongo("find the holder of a unique value", e))?;
        Ok(found.and_then(|d| d.get("_id").cloned()).map(|id| (ns.clone(), write_plan::identity(&doc! {"_id": id}))))
    }

    /// One transaction writing every member's newest state.
    async fn resolve(&mut self, members: &[DocKey]) -> Result<Resolution, Error> {
        let shared = self.task.shared.clone();
        let ledger = shared.ledger();
        let write_concern = shared.write_concern.clone();
        let advance = Advance { epoch: self.epoch, offset: self.task.marks.durable(), consistent: None };
        let stop = self.task.stop.clone();
        let name = self.name.clone();
        let tp = self.tp.clone();
        let outcome = shared
            .retrier
            .run_on(WRITES, &name, &stop, &mut self.session, |session, _| {
                Box::pin(async {
                    session
                        .start_transaction()
                        .write_concern(write_concern.clone())
                        .await
                        .map_err(|e| Error::mongo("start a transaction", e))?;
                    let result = async {
                        ledger.advance_in(session, &tp, advance.epoch, advance.offset, None).await?;
                        rewrite(session, &shared.writer, ledger.database(), ledger.group(), members).await
                    }
                    .await;
                    match result {
                        Ok((Resolution::Done, settled)) => {
                            session
                                .commit_transaction()
                                .await
                                .map_err(|e| transaction::transaction_error("commit a transaction", e))?;
                            Ok((Resolution::Done, settled))
                        }
                        other => {
                            let _ = session.abort_transaction().await;
                            other
                        }
                    }
                })
            })
            .await?;
        let (resolution, settled) = outcome;
        if let Resolution::Done = resolution {
            for (entry_tp, key, seq) in settled {
                if entry_tp == self.tp {
                    self.parking.settle(&key, seq);
                    self.settled.insert(key);
                }
            }
            // Breaking a cycle does not pass an open dead letter of this partition.
            self.task.marks.reached(self.task.marks.durable(), self.consistent_now());
        }
        Ok(resolution)
    }
}

/// A settled parked write: its partition, document and number.
type SettledEntry = ((String, i32), DocKey, u64);

/// Inside the transaction: the members' newest states, written in place of what the target has.
async fn rewrite(
    session: &mut ClientSession,
    writer: &crate::apply::writer::Writer,
    meta: &mongodb::Database,
    group: &str,
    members: &[DocKey],
) -> Result<(Resolution, Vec<SettledEntry>), Error> {
    let mut finals: Vec<(DocKey, Document, Option<RawDocumentBuf>)> = Vec::new();
    let mut settled = Vec::new();
    for member in members {
        let entries: Vec<Document> = {
            let mut cursor = meta
                .collection::<Document>(PARKED)
                .find(doc! {"group": group, "doc": parked_store::doc_name(member)})
                .sort(doc! {"seq": 1})
                .session(&mut *session)
                .await
                .map_err(|e| Error::mongo("read parked writes", e))?;
            let mut all = Vec::new();
            while let Some(entry) = cursor.next(&mut *session).await {
                all.push(entry.map_err(|e| Error::mongo("read parked writes", e))?);
            }
            all
        };
        if entries.is_empty() {
            return Ok((Resolution::NotNow, Vec::new()));
        }
        let mut filter = None;
        let mut state: Option<RawDocumentBuf> = None;
        let mut read = false;
        for entry in &entries {
            let (key, parked) = parked_store::decode(entry).map_err(Error::fatal)?;
            let tp = (entry.get_str("topic").unwrap_or_default().to_string(), entry.get_i32("partition").unwrap_or(-1));
            settled.push((tp, key, parked.seq));
            if !read {
                state = current(session, &parked.op).await?;
                read = true;
            }
            filter.get_or_insert_with(|| parked.op.filter.clone());
            state = match &parked.op.action {
                Action::Replace(doc) | Action::Insert(doc) => Some(doc.clone()),
                Action::Delete => None,
                Action::Update(_) => match state {
                    Some(base) => Some(updated(session, writer, meta, base, &parked.op).await?),
                    None => None,
                },
            };
            let deleted = meta
                .collection::<Document>(PARKED)
                .delete_one(doc! {"_id": entry.get("_id").cloned().unwrap_or(Bson::Null)})
                .session(&mut *session)
                .await
                .map_err(|e| Error::mongo("settle a parked write", e))?;
            if deleted.deleted_count != 1 {
                return Ok((Resolution::NotNow, Vec::new()));
            }
        }
        finals.push((member.clone(), filter.unwrap_or_default(), state));
    }
    // Out of each other's way first, then each in its newest state.
    let removals: Vec<WriteOp> = finals
        .iter()
        .map(|(key, filter, _)| WriteOp {
            ns: key.0.clone(),
            filter: filter.clone(),
            action: Action::Delete,
            offset: -1,
            doc: 0,
        })
        .collect();
    if let InTransaction::Refused(_, outcome, _) = writer.apply_in(session, &removals, false).await? {
        return Err(Error::fatal(format!("the target refused to delete a document of a cycle: {outcome:?}")));
    }
    let writes: Vec<WriteOp> = finals
        .into_iter()
        .filter_map(|(key, filter, state)| {
            state.map(|doc| WriteOp { ns: key.0, filter, action: Action::Replace(doc), offset: -1, doc: 0 })
        })
        .collect();
    match writer.apply_in(session, &writes, true).await? {
        InTransaction::Applied => Ok((Resolution::Done, settled)),
        InTransaction::Refused(index, Outcome::Conflict(conflict), _) => {
            let op = &writes[index];
            let blocker = match &conflict.key_value {
                Some(value) => holder_in(session, &op.ns, value, &op.filter).await?,
                None => None,
            };
            Ok((blocker.map_or(Resolution::NotNow, Resolution::BlockedBy), Vec::new()))
        }
        InTransaction::Refused(..) | InTransaction::Isolate => Ok((Resolution::NotNow, Vec::new())),
    }
}

/// The document a write names, as the target has it now (inside the transaction).
async fn current(session: &mut ClientSession, op: &WriteOp) -> Result<Option<RawDocumentBuf>, Error> {
    let coll = session.client().database(&op.ns.db).collection::<RawDocumentBuf>(&op.ns.coll);
    coll.find_one(op.filter.clone())
        .session(&mut *session)
        .await
        .map_err(|e| Error::mongo("read a document of a cycle", e))
}

/// `base` with `op`'s update applied by the server, in the scratch collection.
async fn updated(
    session: &mut ClientSession,
    writer: &crate::apply::writer::Writer,
    meta: &mongodb::Database,
    base: RawDocumentBuf,
    op: &WriteOp,
) -> Result<RawDocumentBuf, Error> {
    let scratch = meta.collection::<RawDocumentBuf>(SCRATCH);
    let id = base.get("_id").ok().flatten().map(|v| v.to_raw_bson()).and_then(|v| Bson::try_from(v).ok());
    let id = id.ok_or_else(|| Error::fatal("a document of a cycle has no _id".into()))?;
    scratch.insert_one(&base).session(&mut *session).await.map_err(|e| Error::mongo("compute an update", e))?;
    let computed = WriteOp {
        ns: Namespace::new(meta.name(), SCRATCH),
        filter: doc! {"_id": id.clone()},
        action: op.action.clone(),
        offset: op.offset,
        doc: 0,
    };
    if let InTransaction::Refused(_, outcome, _) = writer.apply_in(session, &[computed], true).await? {
        return Err(Error::fatal(format!("an update of a cycle cannot be computed: {outcome:?}")));
    }
    let after = scratch
        .find_one_and_delete(doc! {"_id": id})
        .session(&mut *session)
        .await
        .map_err(|e| Error::mongo("compute an update", e))?;
    after.ok_or_else(|| Error::fatal("an updated document of a cycle vanished".into()))
}

/// [`Exact::holder`] inside the transaction.
async fn holder_in(
    session: &mut ClientSession,
    ns: &Namespace,
    value: &Document,
    filter: &Document,
) -> Result<Option<DocKey>, Error> {
    let coll = session.client().database(&ns.db).collection::<Document>(&ns.coll);
    let mut query = value.clone();
    if let Some(id) = filter.get("_id") {
        query.insert("_id", doc! {"$ne": id.clone()});
    }
    let found = coll
        .find_one(query)
        .projection(doc! {"_id": 1})
        .session(&mut *session)
        .await
        .map_err(|e| Error::mongo("find the holder of a unique value", e))?;
    Ok(found.and_then(|d| d.get("_id").cloned()).map(|id| (ns.clone(), write_plan::identity(&doc! {"_id": id}))))
}
