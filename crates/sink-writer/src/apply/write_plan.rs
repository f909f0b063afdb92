//! A batch of one partition's events → the write plan that brings the target to the same
//! state. Pure: no I/O.
//!
//! The events of each document collapse in order: an insert, replace, snapshot read or an
//! update with its looked-up document is the whole document (upsert by `_id`); a delete deletes;
//! an update without a document applies its `updateDescription` exactly. An absolute write makes
//! every earlier one of that document moot, so a document needs one write in the common case.
//! Partial updates that follow stay as later *rounds*: round k holds the k-th write of every
//! document, and each round is one unordered bulk over distinct documents.

use std::collections::HashMap;

use bson::{doc, Bson, Document, RawDocumentBuf};
use envelope::{ChangeEvent, ClusterTime, Namespace, Op, UpdateDescription};

use crate::mapping::Mapper;

/// One write to the target.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOp {
    pub ns: Namespace,
    /// The document key (`_id`, plus shard key fields).
    pub filter: Document,
    pub action: Action,
    /// The message this write came from (the last one, for collapsed writes).
    pub offset: i64,
    /// Index of the document in [`Plan::keys`].
    pub doc: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Replace the whole document (as BSON), inserting it when missing.
    Replace(RawDocumentBuf),
    /// The same replacement, sent as an insert because the target was seen without the document
    /// (`fresh.rs`: inside a transaction, an upsert of a missing key walks past every key that
    /// other writers added since the transaction began; an insert does not, and costs less
    /// outside one too). Refused, it goes back to `Replace`.
    Insert(RawDocumentBuf),
    /// Apply an update (operators, or a pipeline for `$`-prefixed fields) if the document exists.
    Update(Bson),
    Delete,
}

impl WriteOp {
    pub fn kind(&self) -> &'static str {
        match self.action {
            Action::Replace(_) | Action::Insert(_) => "replace",
            Action::Update(_) => "update",
            Action::Delete => "delete",
        }
    }

    /// A replacement or delete: it makes every earlier write of its document moot.
    pub fn is_absolute(&self) -> bool {
        !matches!(self.action, Action::Update(_))
    }

    /// A replacement sent as an insert instead (the target lacks its document).
    pub fn as_insert(&mut self) {
        if let Action::Replace(doc) = &mut self.action {
            self.action = Action::Insert(std::mem::take(doc));
        }
    }

    /// The write as an upsert again: an insert the target refused (it has the document after all,
    /// or refuses the write for another reason the upsert then meets).
    pub fn as_upsert(&mut self) -> bool {
        let Action::Insert(doc) = &mut self.action else { return false };
        self.action = Action::Replace(std::mem::take(doc));
        true
    }
}

/// A document's identity in the target: namespace and exact key text.
pub type DocKey = (Namespace, String);

#[derive(Debug, Default)]
pub struct Plan {
    /// Rounds of writes; within a round every document appears at most once.
    pub rounds: Vec<Vec<WriteOp>>,
    /// The documents this batch writes (to keep overlapping batches in order).
    pub keys: Vec<DocKey>,
    /// Events that cannot become a write, with the reason (they go to the dead-letter topic).
    pub rejected: Vec<(i64, String)>,
    /// Events that need no write (tombstones, obsolete after a DDL).
    pub skipped: usize,
    /// Source cluster time of the newest event, for the lag metric.
    pub newest: Option<ClusterTime>,
}

/// What field names the target stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldNames {
    /// Any (MongoDB): dotted and `$`-prefixed names too.
    #[default]
    Any,
    /// Amazon DocumentDB: no name with a `.` or a leading `$`, at any depth.
    NoDotsOrDollars,
}

/// Plans a batch of `(offset, event)`; `obsolete` says whether a namespace's event at a cluster
/// time is older than an applied DDL (and must not be written); `names` what the target stores
/// (an event it cannot store is rejected with the reason).
pub fn plan(
    events: Vec<(i64, ChangeEvent<RawDocumentBuf>)>,
    mapper: &Mapper,
    names: FieldNames,
    obsolete: impl Fn(&Namespace, ClusterTime) -> bool,
) -> Plan {
    let mut out = Plan::default();
    let mut order: Vec<DocKey> = Vec::new();
    let mut stages: HashMap<DocKey, (usize, Vec<WriteOp>)> = HashMap::new();
    for (offset, mut event) in events {
        out.newest = out.newest.max(Some(event.position.cluster_time));
        // A plain Debezium event's position is only a wall-clock time: it never makes it obsolete.
        if event.position.exact && obsolete(&event.ns, event.position.cluster_time) {
            out.skipped += 1;
            continue;
        }
        let ns = mapper.map(&event.ns);
        let filter = std::mem::take(&mut event.document_key);
        let key: DocKey = (ns.clone(), identity(&filter));
        let writes = match storable(&event, names).and_then(|()| to_writes(event, ns, filter, offset)) {
            Ok(writes) => writes,
            Err(reason) => {
                out.rejected.push((offset, reason));
                continue;
            }
        };
        if writes.is_empty() {
            out.skipped += 1;
            continue;
        }
        let (index, entry) = stages.entry(key.clone()).or_insert_with(|| {
            order.push(key);
            (order.len() - 1, Vec::new())
        });
        for mut write in writes {
            write.doc = *index;
            if write.is_absolute() {
                entry.clear();
            }
            entry.push(write);
        }
    }
    for key in &order {
        if let Some((_, writes)) = stages.remove(key) {
            for (round, write) in writes.into_iter().enumerate() {
                if out.rounds.len() <= round {
                    out.rounds.push(Vec::new());
                }
                out.rounds[round].push(write);
            }
        }
    }
    out.keys = order;
    out
}

/// A document's identity: its `_id` as the record key renders it (so `8` as an Int32 and as an
/// Int64, one document to the server, are one document here too), then any shard key fields.
pub fn identity(filter: &Document) -> String {
    use envelope::extjson::{value_to_string, Style};
    // The key's text, without the JSON around it.
    let mut text = value_to_string(filter.get("_id").unwrap_or(&Bson::Null), Style::Key);
    for (field, value) in filter.iter().filter(|(f, _)| f.as_str() != "_id") {
        text.push_str(field);
        text.push('=');
        text.push_str(&value_to_string(value, Style::Strict));
    }
    text
}

/// Whether the target can store what `event` writes: under [`FieldNames::NoDotsOrDollars`], no
/// field name with a `.` or a leading `$` in its document or its updated fields.
fn storable(event: &ChangeEvent<RawDocumentBuf>, names: FieldNames) -> Result<(), String> {
    if names == FieldNames::Any {
        return Ok(());
    }
    let refuse = |name: &str| {
        Err(format!(
            "field name '{name}' cannot be stored on Amazon DocumentDB (no '.' in a name, no leading '$'): \
             the document is not replicated"
        ))
    };
    if let Some(after) = &event.after {
        if let Some(name) = unstorable_raw(after) {
            return refuse(&name);
        }
    }
    if let Some(update) = &event.update_description {
        for (path, value) in &update.updated_fields {
            if path.split('.').any(|part| part.starts_with('$')) {
                return refuse(path);
            }
            if let Some(name) = unstorable_bson(value) {
                return refuse(&name);
            }
        }
    }
    Ok(())
}

/// The first field name, at any depth, with a `.` or a leading `$`.
fn unstorable_raw(doc: &bson::RawDocument) -> Option<String> {
    for element in doc.iter_elements().flatten() {
        let name = element.key();
        if name.contains('.') || name.starts_with('$') {
            return Some(name.to_string());
        }
        let nested = match element.value() {
            Ok(bson::RawBsonRef::Document(d)) => unstorable_raw(d),
            Ok(bson::RawBsonRef::Array(a)) => {
                a.into_iter().flatten().find_map(|v| v.as_document().and_then(unstorable_raw))
            }
            _ => None,
        };
        if nested.is_some() {
            return nested;
        }
    }
    None
}

fn unstorable_bson(value: &Bson) -> Option<String> {
    match value {
        Bson::Document(d) => d.iter().find_map(|(name, v)| {
            if name.contains('.') || name.starts_with('$') {
                Some(name.clone())
            } else {
                unstorable_bson(v)
            }
        }),
        Bson::Array(items) => items.iter().find_map(unstorable_bson),
        _ => None,
    }
}

/// The writes of one event, on `ns` by `filter` (its document key).
fn to_writes(
    event: ChangeEvent<RawDocumentBuf>,
    ns: Namespace,
    filter: Document,
    offset: i64,
) -> Result<Vec<WriteOp>, String> {
    if filter.get("_id").is_none() {
        return Err("event has no document key _id".into());
    }
    let actions: Vec<Action> = match (event.op, event.after, event.update_description) {
        (Op::Delete, _, _) => vec![Action::Delete],
        (_, Some(after), _) => {
            if envelope::Payload::id(&after).as_ref() != filter.get("_id") {
                return Err("document _id differs from its key".into());
            }
            vec![Action::Replace(after)]
        }
        (Op::Create | Op::Read, None, _) => return Err(format!("{} event without a document", event.op.code())),
        (Op::Update, None, Some(description)) => update_writes(&description)?.into_iter().map(Action::Update).collect(),
        // The document was deleted since (updateLookup found nothing) and there is no delta:
        // the delete that follows does the work.
        (Op::Update, None, None) => Vec::new(),
    };
    // The last write (the only one, commonly) takes the namespace and key; earlier ones copy.
    let mut writes = Vec::with_capacity(actions.len());
    let mut actions = actions.into_iter();
    let last = actions.next_back();
    for action in actions {
        writes.push(WriteOp { ns: ns.clone(), filter: filter.clone(), action, offset, doc: 0 });
    }
    if let Some(action) = last {
        writes.push(WriteOp { ns, filter, action, offset, doc: 0 });
    }
    Ok(writes)
}

/// Updates applying a description exactly: `$set` the updated fields, `$unset` the removed ones,
/// and trim truncated arrays (`$push` with `$each: []` and `$slice`). A truncation of a path that
/// the other operators also touch goes first, as its own update. Top-level fields whose names
/// start with `$` (which update operators cannot name) change through a pipeline update
/// (`$setField` / `$unsetField`) of their own; a `$`-prefixed name deeper in a path cannot be
/// expressed and is refused.
pub fn update_writes(description: &UpdateDescription) -> Result<Vec<Bson>, String> {
    let dollar = |path: &str| path.starts_with('$');
    for path in description.updated_fields.keys().chain(&description.removed_fields) {
        if !dollar(path) && path.split('.').any(dollar) {
            return Err(format!("cannot apply a partial update of '{path}': a '$'-prefixed name inside a path"));
        }
    }
    let mut writes: Vec<Bson> = operator_updates(description).into_iter().map(Bson::Document).collect();
    let mut stages: Vec<Bson> = Vec::new();
    for (field, value) in description.updated_fields.iter().filter(|(f, _)| dollar(f)) {
        stages.push(Bson::Document(doc! {"$replaceWith": {"$setField": {
        "field": {"$literal": field}, "input": "$$ROOT", "value": {"$literal": value.clone()}}}}));
    }
    for field in description.removed_fields.iter().filter(|f| dollar(f)) {
        stages.push(Bson::Document(
            doc! {"$replaceWith": {"$unsetField": {"field": {"$literal": field}, "input": "$$ROOT"}}},
        ));
    }
    if !stages.is_empty() {
        writes.push(Bson::Array(stages));
    }
    Ok(writes)
}

/// The operator updates for every path that does not start with `$`.
fn operator_updates(description: &UpdateDescription) -> Vec<Document> {
    let plain = |path: &&String| !path.starts_with('$');
    let mut set_unset = Document::new();
    let updated: Document =
        description.updated_fields.iter().filter(|(f, _)| plain(f)).map(|(f, v)| (f.clone(), v.clone())).collect();
    if !updated.is_empty() {
        set_unset.insert("$set", updated);
    }
    let unset: Document =
        description.removed_fields.iter().filter(plain).map(|f| (f.clone(), Bson::String(String::new()))).collect();
    if !unset.is_empty() {
        set_unset.insert("$unset", unset);
    }
    if description.truncated_arrays.is_empty() {
        return if set_unset.is_empty() { Vec::new() } else { vec![set_unset] };
    }
    let touched: Vec<&str> = description
        .updated_fields
        .keys()
        .map(String::as_str)
        .chain(description.removed_fields.iter().map(String::as_str))
        .collect();
    let trim: Document = description
        .truncated_arrays
        .iter()
        .map(|t| (t.field.clone(), Bson::Document(doc! {"$each": [], "$slice": i64::from(t.size)})))
        .collect();
    let conflicts = description.truncated_arrays.iter().any(|t| {
        touched.iter().any(|path| {
            *path == t.field || path.starts_with(&format!("{}.", t.field)) || t.field.starts_with(&format!("{path}."))
        })
    });
    if conflicts || set_unset.is_empty() {
        let mut writes = vec![doc! {"$push": trim}];
        if !set_unset.is_empty() {
            writes.push(set_unset);
        }
        writes
    } else {
        set_unset.insert("$push", trim);
        vec![set_unset]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envelope::{Position, SourceInfo, TruncatedArray};

    fn event(
        op: Op,
        id: i32,
        after: Option<Document>,
        ud: Option<UpdateDescription>,
        t: u32,
    ) -> ChangeEvent<RawDocumentBuf> {
        ChangeEvent {
            op,
            ns: Namespace::new("db", "c"),
            document_key: doc! {"_id": id},
            before: None,
            after: after.map(|d| RawDocumentBuf::from_document(&d).expect("bson")),
            update_description: ud,
            source: SourceInfo::default(),
            transaction: None,
            position: Position { cluster_time: ClusterTime { t, i: 0 }, resume_token: None, seq: 0, exact: true },
            ts_ms: 0,
            resend: None,
        }
    }

    fn set(fields: Document) -> UpdateDescription {
        UpdateDescription { updated_fields: fields, ..UpdateDescription::default() }
    }

    fn never(_: &Namespace, _: ClusterTime) -> bool {
        false
    }

    #[test]
    fn insert_updates_then_delete_collapse_to_the_last_absolute_write() {
        let events = vec![
            (10, event(Op::Create, 1, Some(doc! {"_id": 1, "v": 1}), None, 1)),
            (11, event(Op::Update, 1, Some(doc! {"_id": 1, "v": 2}), Some(set(doc! {"v": 2})), 2)),
            (12, event(Op::Create, 2, Some(doc! {"_id": 2}), None, 3)),
            (13, event(Op::Delete, 1, None, None, 4)),
        ];
        let plan = plan(events, &Mapper::default(), FieldNames::Any, never);
        assert_eq!(plan.rounds.len(), 1);
        assert_eq!(plan.rounds[0].len(), 2);
        assert!(matches!(&plan.rounds[0][0], WriteOp { action: Action::Delete, offset: 13, doc: 0, .. }));
        assert!(matches!(&plan.rounds[0][1], WriteOp { action: Action::Replace(_), offset: 12, doc: 1, .. }));
        assert_eq!(plan.newest, Some(ClusterTime { t: 4, i: 0 }));
    }

    #[test]
    fn partial_updates_after_a_replace_become_later_rounds() {
        let events = vec![
            (1, event(Op::Create, 1, Some(doc! {"_id": 1}), None, 1)),
            (2, event(Op::Update, 1, None, Some(set(doc! {"a": 1})), 2)),
            (3, event(Op::Update, 1, None, Some(set(doc! {"b": 1})), 3)),
            (4, event(Op::Update, 2, None, Some(set(doc! {"c": 1})), 4)),
        ];
        let plan = plan(events, &Mapper::default(), FieldNames::Any, never);
        let shape: Vec<Vec<&str>> = plan.rounds.iter().map(|r| r.iter().map(WriteOp::kind).collect()).collect();
        assert_eq!(shape, vec![vec!["replace", "update"], vec!["update"], vec!["update"]]);
        assert_eq!(plan.keys.len(), 2);
    }

    #[test]
    fn update_descriptions_apply_exactly() {
        let ud = UpdateDescription {
            updated_fields: doc! {"a.b": 1, "arr.3": "x"},
            removed_fields: vec!["gone".into()],
            truncated_arrays: vec![TruncatedArray { field: "other".into(), size: 2 }],
        };
        assert_eq!(
            update_writes(&ud),
            Ok(vec![Bson::Document(
                doc! {"$set": {"a.b": 1, "arr.3": "x"}, "$unset": {"gone": ""}, "$push": {"other": {"$each": [], "$slice": 2_i64}}}
            )])
        );
        let conflicting = UpdateDescription {
            updated_fields: doc! {"arr.1": "y"},
            truncated_arrays: vec![TruncatedArray { field: "arr".into(), size: 2 }],
            ..UpdateDescription::default()
        };
        assert_eq!(
            update_writes(&conflicting),
            Ok(vec![
                Bson::Document(doc! {"$push": {"arr": {"$each": [], "$slice": 2_i64}}}),
                Bson::Document(doc! {"$set": {"arr.1": "y"}})
            ]),
            "the truncation goes first, on its own"
        );
    }

    #[test]
    fn dollar_prefixed_top_level_fields_change_through_a_pipeline() {
        let ud = UpdateDescription {
            updated_fields: doc! {"$price": 5, "plain": 1},
            removed_fields: vec!["$old".into()],
            ..UpdateDescription::default()
        };
        let writes = update_writes(&ud).expect("expressible");
        assert_eq!(writes[0], Bson::Document(doc! {"$set": {"plain": 1}}));
        let Bson::Array(stages) = &writes[1] else { panic!("a pipeline: {writes:?}") };
        assert_eq!(stages.len(), 2);
        let nested = UpdateDescription { updated_fields: doc! {"a.$b": 1}, ..UpdateDescription::default() };
        assert!(update_writes(&nested).is_err(), "a $-prefixed name inside a path is refused");
    }

    #[test]
    fn documentdb_refuses_dotted_and_dollar_names_at_any_depth() {
        let ok = doc! {"_id": 1, "a": {"b": [{"c": 1}]}};
        let events = |doc: Document| vec![(1, event(Op::Create, 1, Some(doc), None, 1))];
        let plan_of = |doc| plan(events(doc), &Mapper::default(), FieldNames::NoDotsOrDollars, never);
        assert!(plan_of(ok.clone()).rejected.is_empty());
        for bad in [doc! {"_id": 1, "a.b": 1}, doc! {"_id": 1, "$p": 1}, doc! {"_id": 1, "n": {"x": [{"$y": 1}]}}] {
            let planned = plan_of(bad.clone());
            assert_eq!(planned.rejected.len(), 1, "{bad:?}");
            assert!(planned.rejected[0].1.contains("Amazon DocumentDB"), "{:?}", planned.rejected);
        }
        let update = vec![(1, event(Op::Update, 1, None, Some(set(doc! {"n": {"k.v": 1}})), 1))];
        assert_eq!(plan(update, &Mapper::default(), FieldNames::NoDotsOrDollars, never).rejected.len(), 1);
        let dotted_ok = plan(events(doc! {"_id": 1, "a.b": 1}), &Mapper::default(), FieldNames::Any, never);
        assert!(dotted_ok.rejected.is_empty(), "MongoDB stores them");
    }

    #[test]
    fn bad_and_obsolete_events_are_set_aside() {
        let events = vec![
            (1, event(Op::Create, 1, None, None, 1)),
            (2, event(Op::Create, 2, Some(doc! {"_id": 3}), None, 1)),
            (3, event(Op::Create, 4, Some(doc! {"_id": 4}), None, 1)),
            (4, event(Op::Update, 5, None, None, 9)),
        ];
        let obsolete = plan(events, &Mapper::default(), FieldNames::Any, |_, t| t.t < 5);
        assert_eq!(obsolete.rejected.len(), 0, "obsolete events are skipped before they are judged");
        assert_eq!(obsolete.skipped, 4);

        let events =
            vec![(1, event(Op::Create, 1, None, None, 9)), (2, event(Op::Create, 2, Some(doc! {"_id": 3}), None, 9))];
        let bad = plan(events, &Mapper::default(), FieldNames::Any, never);
        assert_eq!(bad.rejected.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![1, 2]);
        assert!(bad.rounds.is_empty());
    }
}
