//! Change stream events and snapshot documents → envelope records. Pure: no I/O.
//!
//! | file | owns |
//! |---|---|
//! | `tests/` | its tests too long to sit here (`transforms.rs`: the rules on the way through) |

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bson::{Bson, Document, RawDocumentBuf};
use envelope::{
    encode_change, encode_control, encode_key, ChangeEvent, ClusterTime, ControlEvent, Ddl, Mode, Namespace, Op,
    Payload, Position, ResumeToken, Snapshot, SourceInfo, TruncatedArray, UpdateDescription,
};
use mongodb::change_stream::event::OperationType;

use crate::capture::large_events::StreamEvent;
use crate::capture::routing::{NamespaceFilter, TopicRouter};
use crate::capture::schema_events::{self, Described};
use crate::capture::transaction::{lsid_text, Transactions};
use crate::capture::transforms;
use crate::delivery::checkpoint::CheckpointUpdate;
use crate::delivery::record::{Item, Record, Target, HEARTBEAT};
use crate::error::Error;

/// What a change stream event turns into.
#[derive(Debug)]
pub enum Converted {
    Item(Item),
    /// Markers, then a copy of a collection.
    Copy(Box<Recopy>),
    /// The stream ended (the watched database was dropped): reopen after this cluster time.
    Invalidate {
        cluster_time: Option<ClusterTime>,
    },
    /// A document the transform rules cannot read or write back: the service stops on it.
    Fatal(Error),
}

/// Markers, then a copy of the collection `ns` as it is now, every read positioned at `at`; only
/// then `progress`: the checkpoint passes the event once the copy is durable, so a crash in
/// between does both again.
#[derive(Debug)]
pub struct Recopy {
    pub markers: Item,
    pub ns: Namespace,
    pub at: ClusterTime,
    pub progress: CheckpointUpdate,
}

pub struct Converter {
    pub name: String,
    pub rs: Option<String>,
    pub mode: Mode,
    pub tombstones: bool,
    pub router: TopicRouter,
    pub filter: NamespaceFilter,
    /// Renames up to this cluster time (the snapshot's completion) may have moved a collection
    /// the snapshot was copying: their destination is copied again.
    pub recopy_renames_until: Option<ClusterTime>,
    /// The next event sequence number; shared by the stream and snapshot workers.
    pub seq: Arc<AtomicU64>,
    /// The re-send request the next streamed document change answers (`resend/`), taken by it.
    pub resend: Option<String>,
    /// `[transforms]`: what every document, update and schema event goes through first.
    pub transforms: transform::Rules,
    reported: Arc<transforms::Reported>,
    txn: Transactions,
}

impl Converter {
    pub fn new(
        name: String,
        mode: Mode,
        tombstones: bool,
        router: TopicRouter,
        filter: NamespaceFilter,
        seq: u64,
    ) -> Self {
        Self {
            name,
            rs: None,
            mode,
            tombstones,
            router,
            filter,
            recopy_renames_until: None,
            seq: Arc::new(AtomicU64::new(seq)),
            resend: None,
            transforms: transform::Rules::default(),
            reported: Arc::default(),
            txn: Transactions::default(),
        }
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn source(&self, snapshot: Snapshot) -> SourceInfo {
        SourceInfo { name: self.name.clone(), rs: self.rs.clone(), snapshot, ..SourceInfo::default() }
    }

    /// Converts one change stream event (with what an expanded event describes). Events of
    /// namespaces not captured still move the checkpoint (as a position-only item).
    pub fn change(&mut self, event: StreamEvent, described: Option<&Described>, now_ms: i64) -> Converted {
        let cluster_time = event.cluster_time.map(ClusterTime::from);
        let token = bson::to_document(&event.id).unwrap_or_default();
        let progress = CheckpointUpdate::Stream { resume_token: token.clone(), cluster_time };
        let resume_token = ResumeToken::from_document(&token);
        let position = |seq| Position {
            cluster_time: cluster_time.unwrap_or_default(),
            resume_token: Some(resume_token.clone()),
            seq,
            exact: true,
        };
        let position_only = Item { records: Vec::new(), progress: Some(progress.clone()), cluster_time };
        let ns = event.ns.as_ref().map(|ns| Namespace::new(&ns.db, ns.coll.clone().unwrap_or_default()));

        let records = match (&event.operation_type, ns) {
            (OperationType::Invalidate, _) => return Converted::Invalidate { cluster_time },
            (
                OperationType::Insert | OperationType::Update | OperationType::Replace | OperationType::Delete,
                Some(ns),
            ) => {
                if !self.filter.wants(&ns) {
                    return Converted::Item(position_only);
                }
                let Some(document_key) = event.document_key.clone() else {
                    tracing::warn!(namespace = %ns, "change event without documentKey skipped");
                    return Converted::Item(position_only);
                };
                let change = self.change_event(event, ns, document_key, position(0), now_ms);
                // Numbered once the rules say it is sent.
                let mut change = match transforms::change(&self.transforms, change) {
                    Ok(Some(change)) => change,
                    Ok(None) => return Converted::Item(position_only),
                    Err(e) => return Converted::Fatal(e),
                };
                change.position.seq = self.next_seq();
                self.data_records(&change)
            }
            (OperationType::Drop, Some(ns)) if self.filter.wants(&ns) => {
                let topic = self.router.topic(&ns);
                self.control_records(Ddl::Drop(ns), Target::AllPartitions(topic), position(self.next_seq()), now_ms)
            }
            (OperationType::Rename, Some(from)) => {
                let to = event.to.as_ref().map(|to| Namespace::new(&to.db, to.coll.clone().unwrap_or_default()));
                let Some(to) = to else { return Converted::Item(position_only) };
                let at = cluster_time.unwrap_or_default();
                return self.rename(from, to, at, &token, progress, now_ms);
            }
            (OperationType::DropDatabase, Some(ns)) if self.filter.wants_database(&ns.db) => {
                let target = self.router.database_target(&ns.db);
                self.control_records(Ddl::DropDatabase { db: ns.db }, target, position(self.next_seq()), now_ms)
            }
            // Expanded events: creates, index builds and drops, collMod; routed like a drop.
            (OperationType::Other(kind), Some(ns)) if self.filter.wants(&ns) => {
                let Some(ddl) = described.and_then(|d| schema_events::ddl(kind, ns.clone(), d)) else {
                    tracing::info!(namespace = %ns, kind = kind.as_str(), "change event with nothing to replicate");
                    return Converted::Item(position_only);
                };
                let target = Target::AllPartitions(self.router.topic(&ns));
                self.control_records(ddl, target, position(self.next_seq()), now_ms)
            }
            _ => return Converted::Item(position_only),
        };
        Converted::Item(Item { records, progress: Some(progress), cluster_time })
    }

    /// A rename between two captured names is a marker on both names' topics. Into the captured
    /// scope (or over a collection the snapshot was copying) the destination is dropped and
    /// copied; out of it, the source name is dropped.
    fn rename(
        &self,
        from: Namespace,
        to: Namespace,
        at: ClusterTime,
        token: &Document,
        progress: CheckpointUpdate,
        now_ms: i64,
    ) -> Converted {
        let resume_token = ResumeToken::from_document(token);
        let position = |seq| Position { cluster_time: at, resume_token: Some(resume_token.clone()), seq, exact: true };
        let (wants_from, wants_to) = (self.filter.wants(&from), self.filter.wants(&to));
        let mut records = Vec::new();
        if wants_from && wants_to {
            let target = self.router.rename_target(&from, &to);
            let ddl = Ddl::Rename { from: from.clone(), to: to.clone() };
            records.extend(self.control_records(ddl, target, position(self.next_seq()), now_ms));
        } else if wants_from {
            let target = Target::AllPartitions(self.router.topic(&from));
            records.extend(self.control_records(Ddl::Drop(from.clone()), target, position(self.next_seq()), now_ms));
        }
        let recopy = !wants_from || self.recopy_renames_until.is_some_and(|until| at <= until);
        if !(wants_to && recopy) {
            return Converted::Item(Item { records, progress: Some(progress), cluster_time: Some(at) });
        }
        let target = Target::AllPartitions(self.router.topic(&to));
        records.extend(self.control_records(Ddl::Drop(to.clone()), target, position(self.next_seq()), now_ms));
        let markers = Item { records, progress: None, cluster_time: Some(at) };
        Converted::Copy(Box::new(Recopy { markers, ns: to, at, progress }))
    }

    fn change_event(
        &mut self,
        event: StreamEvent,
        ns: Namespace,
        document_key: Document,
        position: Position,
        now_ms: i64,
    ) -> ChangeEvent<RawDocumentBuf> {
        let op = match event.operation_type {
            OperationType::Insert => Op::Create,
            OperationType::Delete => Op::Delete,
            _ => Op::Update,
        };
        let mut source = self.source(Snapshot::False);
        source.wall_time_ms = event.wall_time.map(|t| t.timestamp_millis());
        source.lsid = event.lsid.as_ref().and_then(lsid_text);
        source.txn_number = event.txn_number;
        let transaction = self.txn.order(source.lsid.as_deref(), source.txn_number, &ns);
        let update_description = event.update_description.map(|ud| UpdateDescription {
            updated_fields: ud.updated_fields,
            removed_fields: ud.removed_fields,
            truncated_arrays: ud
                .truncated_arrays
                .unwrap_or_default()
                .into_iter()
                .map(|t| TruncatedArray { field: t.field, size: u32::try_from(t.new_size).unwrap_or(0) })
                .collect(),
        });
        ChangeEvent {
            op,
            ns,
            document_key,
            before: event.full_document_before_change,
            after: if op == Op::Delete { None } else { event.full_document },
            update_description,
            source,
            transaction,
            position,
            ts_ms: now_ms,
            resend: self.resend.take(),
        }
    }

    /// The change record, plus a tombstone after a delete when enabled.
    pub(crate) fn data_records<D: Payload>(&self, change: &ChangeEvent<D>) -> Vec<Record> {
        let key = encode_key(change.id().unwrap_or(&Bson::Null));
        let topic = self.router.topic(&change.ns);
        let namespace = change.ns.to_string();
        let mut records = vec![Record {
            target: Target::Keyed(topic.clone()),
            key: key.clone(),
            value: Some(encode_change(change, self.mode)),
            control: None,
            op: change.op.code(),
            namespace: namespace.clone(),
        }];
        if change.op == Op::Delete && self.tombstones {
            records.push(Record {
                target: Target::Keyed(topic),
                key,
                value: None,
                control: None,
                op: "tombstone",
                namespace,
            });
        }
        records
    }

    /// A schema DDL read from the source rather than streamed (the snapshot's collection
    /// options and indexes, the periodic index comparison), positioned at `at`: a copy on every
    /// partition of the namespace's topic, like a streamed one. `snapshot` says which: a
    /// snapshot's DDL comes before the copies of what existed at `at`, so unlike the listing's it
    /// does not prove its partition holds nothing older (the sink's consistency point reads it).
    pub fn schema_records(&self, ddl: Ddl, at: ClusterTime, snapshot: Snapshot, now_ms: i64) -> Vec<Record> {
        let topic = match ddl.namespace() {
            Some(ns) => self.router.topic(ns),
            None => return Vec::new(),
        };
        let position = Position { cluster_time: at, resume_token: None, seq: self.next_seq(), exact: true };
        self.control_records_from(ddl, Target::AllPartitions(topic), position, snapshot, now_ms)
    }

    fn control_records(&self, ddl: Ddl, target: Target, position: Position, now_ms: i64) -> Vec<Record> {
        self.control_records_from(ddl, target, position, Snapshot::False, now_ms)
    }

    fn control_records_from(
        &self,
        ddl: Ddl,
        target: Target,
        position: Position,
        snapshot: Snapshot,
        now_ms: i64,
    ) -> Vec<Record> {
        let Some(ddl) = transforms::ddl(&self.transforms, &self.reported, ddl) else { return Vec::new() };
        let namespace = match ddl.collection() {
            Some(coll) => format!("{}.{coll}", ddl.db()),
            None => ddl.db().to_string(),
        };
        let event = ControlEvent {
            ddl,
            markers: 1,
            topics: Default::default(),
            source: self.source(snapshot),
            position,
            ts_ms: now_ms,
        };
        let (key, _) = encode_control(&event);
        vec![Record { target, key, value: None, control: Some(Box::new(event)), op: "ddl", namespace }]
    }

    /// A heartbeat record: the source is alive and at `resume_token`, with nothing to capture.
    pub fn heartbeat(&self, topic: &str, resume_token: &Document, now_ms: i64) -> Record {
        let token = envelope::extjson::document_to_string(resume_token, envelope::extjson::Style::Strict);
        Record {
            target: Target::Keyed(topic.to_string()),
            key: serde_json::json!({ "serverName": self.name }).to_string().into_bytes(),
            value: Some(serde_json::json!({ "ts_ms": now_ms, "resumeToken": token }).to_string().into_bytes()),
            control: None,
            op: HEARTBEAT,
            namespace: String::new(),
        }
    }

    /// A snapshot read (`op: r`) of `doc`, positioned at the snapshot's start; `None` when a
    /// transform rule's filter leaves the document out.
    pub fn snapshot_read(
        &self,
        ns: &Namespace,
        doc: RawDocumentBuf,
        start_at: ClusterTime,
        last: bool,
        now_ms: i64,
    ) -> Result<Option<Record>, Error> {
        let Some(doc) = transforms::read(&self.transforms, ns, doc)? else { return Ok(None) };
        let id = doc.id().unwrap_or(Bson::Null);
        let mut document_key = Document::new();
        document_key.insert("_id", id);
        let event = ChangeEvent {
            op: Op::Read,
            ns: ns.clone(),
            document_key,
            before: None,
            after: Some(doc),
            update_description: None,
            source: self.source(if last { Snapshot::Last } else { Snapshot::True }),
            transaction: None,
            position: Position { cluster_time: start_at, resume_token: None, seq: self.next_seq(), exact: true },
            ts_ms: now_ms,
            resend: None,
        };
        Ok(Some(Record {
            target: Target::Keyed(self.router.topic(ns)),
            key: encode_key(event.id().unwrap_or(&Bson::Null)),
            value: Some(encode_change(&event, self.mode)),
            control: None,
            op: "r",
            namespace: ns.to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CaptureConfig, TopicConfig};
    use bson::{doc, Timestamp};

    fn converter(exclude: &str, tombstones: bool) -> Converter {
        let capture = CaptureConfig { exclude: exclude.into(), ..CaptureConfig::default() };
        Converter::new(
            "src".into(),
            Mode::Debezium,
            tombstones,
            TopicRouter::new(&TopicConfig::default()),
            NamespaceFilter::new(&capture).expect("filter"),
            10,
        )
    }

    fn event(op: &str, coll: &str, i: u32, extra: Document) -> StreamEvent {
        let mut raw = doc! {
            "_id": {"_data": format!("82{i:04}")},
            "operationType": op,
            "ns": {"db": "shop", "coll": coll},
            "documentKey": {"_id": 7},
            "clusterTime": Timestamp { time: 100, increment: i },
        };
        raw.extend(extra);
        // As the stream reads them: from bytes (the driver's unknown operation types borrow).
        bson::from_slice(&bson::to_vec(&raw).expect("bytes")).expect("a change stream event")
    }

    /// The `[transforms]` rules on the way through (`convert/tests/transforms.rs`).
    mod transforms;

    fn item(converted: Converted) -> Item {
        match converted {
            Converted::Item(item) => item,
            other => panic!("expected an item, got {other:?}"),
        }
    }

    #[test]
    fn insert_and_delete_records() {
        let mut c = converter("", true);
        let insert = item(c.change(event("insert", "orders", 1, doc! {"fullDocument": {"_id": 7, "x": 1}}), None, 5));
        assert_eq!(insert.records.len(), 1);
        assert_eq!(insert.records[0].target, Target::Keyed("cdc.shop.orders".into()));
        assert_eq!(insert.records[0].key, br#"{"id":"7"}"#.to_vec());
        assert_eq!(insert.cluster_time, Some(ClusterTime { t: 100, i: 1 }));
        assert!(
            matches!(&insert.progress, Some(CheckpointUpdate::Stream { resume_token, .. }) if resume_token == &doc! {"_data": "820001"})
        );

        let delete = item(c.change(event("delete", "orders", 2, doc! {}), None, 6));
        assert_eq!(delete.records.iter().map(|r| r.op).collect::<Vec<_>>(), vec!["d", "tombstone"]);
        assert_eq!(delete.records[1].value, None);
        assert_eq!(c.seq.load(Ordering::Relaxed), 12, "two events numbered from the checkpoint's 10");

        let mut quiet = converter("", false);
        assert_eq!(item(quiet.change(event("delete", "orders", 3, doc! {}), None, 6)).records.len(), 1);
    }

    #[test]
    fn excluded_namespaces_only_move_the_position() {
        let mut c = converter(r"shop\.tmp", true);
        let skipped = item(c.change(event("insert", "tmp", 1, doc! {"fullDocument": {"_id": 7}}), None, 5));
        assert!(skipped.records.is_empty());
        assert!(skipped.progress.is_some());
    }

    #[test]
    fn ddl_becomes_markers_and_invalidate_reopens() {
        let mut c = converter("", true);
        let drop = item(c.change(event("drop", "orders", 1, doc! {}), None, 5));
        assert_eq!(drop.records[0].target, Target::AllPartitions("cdc.shop.orders".into()));
        let rename = item(c.change(event("rename", "orders", 2, doc! {"to": {"db": "shop", "coll": "old"}}), None, 5));
        let control = rename.records[0].control.as_ref().expect("a control event, encoded by the producer");
        assert!(matches!(&control.ddl, Ddl::Rename { to, .. } if to.coll == "old"));
        let mut raw = event("dropDatabase", "x", 3, doc! {});
        raw.ns = raw.ns.map(|mut ns| {
            ns.coll = None;
            ns
        });
        let dropped = item(c.change(raw, None, 5));
        assert_eq!(dropped.records[0].target, Target::AllTopicsWithPrefix("cdc.shop.".into()));
        assert!(matches!(c.change(event("invalidate", "orders", 4, doc! {}), None, 5), Converted::Invalidate { .. }));
    }

    fn kinds(item: &Item) -> Vec<(String, Target)> {
        let kind = |r: &Record| r.control.as_ref().map(|c| format!("{}:{}", c.ddl.kind(), r.namespace));
        item.records.iter().filter_map(|r| kind(r).map(|k| (k, r.target.clone()))).collect()
    }

    #[test]
    fn renames_order_both_names_and_copy_what_enters_the_scope() {
        let mut c = converter(r"shop\..*_tmp", true);
        let both = item(c.change(event("rename", "a", 1, doc! {"to": {"db": "shop", "coll": "b"}}), None, 5));
        let topics = vec!["cdc.shop.a".to_string(), "cdc.shop.b".to_string()];
        assert_eq!(kinds(&both), [("rename:shop.a".to_string(), Target::AllPartitionsOf(topics))]);
        assert!(both.progress.is_some());

        let out = item(c.change(event("rename", "a", 2, doc! {"to": {"db": "shop", "coll": "a_tmp"}}), None, 5));
        assert_eq!(kinds(&out), [("drop:shop.a".to_string(), Target::AllPartitions("cdc.shop.a".into()))]);

        let raw = event("rename", "orders_tmp", 3, doc! {"to": {"db": "shop", "coll": "orders"}});
        let Converted::Copy(copy) = c.change(raw, None, 5) else { panic!("a copy") };
        let Recopy { markers, ns, at, progress } = *copy;
        assert_eq!(
            kinds(&markers),
            [("drop:shop.orders".to_string(), Target::AllPartitions("cdc.shop.orders".into()))]
        );
        assert!(markers.progress.is_none(), "the checkpoint passes the rename only after the copy");
        assert_eq!((ns, at), (Namespace::new("shop", "orders"), ClusterTime { t: 100, i: 3 }));
        assert!(matches!(progress, CheckpointUpdate::Stream { .. }));

        let unseen = item(c.change(event("rename", "x_tmp", 4, doc! {"to": {"db": "shop", "coll": "y_tmp"}}), None, 5));
        assert!(unseen.records.is_empty());

        // Up to the snapshot's completion, a rename between captured names copies its destination.
        c.recopy_renames_until = Some(ClusterTime { t: 100, i: 5 });
        let raw = event("rename", "a", 5, doc! {"to": {"db": "shop", "coll": "b"}});
        let Converted::Copy(copy) = c.change(raw, None, 5) else { panic!("a copy") };
        let names: Vec<String> = kinds(&copy.markers).into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["rename:shop.a", "drop:shop.b"]);
        let later = c.change(event("rename", "b", 6, doc! {"to": {"db": "shop", "coll": "c"}}), None, 5);
        assert!(matches!(later, Converted::Item(_)), "after the snapshot's completion, no copy");
    }

    #[test]
    fn expanded_events_become_schema_markers_routed_like_a_drop() {
        let mut c = converter(r"shop\.tmp", true);
        let described = Described { description: doc! {"indexes": [{"key": {"a": 1}, "name": "a_1"}]}, before: None };
        let built = item(c.change(event("createIndexes", "orders", 1, doc! {}), Some(&described), 5));
        let topic = Target::AllPartitions("cdc.shop.orders".into());
        assert_eq!(kinds(&built), [("createIndexes:shop.orders".to_string(), topic)]);
        let excluded = item(c.change(event("createIndexes", "tmp", 2, doc! {}), Some(&described), 5));
        assert!(excluded.records.is_empty() && excluded.progress.is_some());
        let sharded = item(c.change(event("shardCollection", "orders", 3, doc! {}), Some(&Described::default()), 5));
        assert!(sharded.records.is_empty() && sharded.progress.is_some(), "logged, not sent");
    }
}
