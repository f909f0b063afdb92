//! The typed events: what cdc-source builds and encodes, and what sink-writer decodes.

use std::fmt;

use bson::{Bson, Document};

/// Version of the additive `cdc` block; a decoder refuses a newer one rather than guess.
pub const ENVELOPE_VERSION: u32 = 1;

/// Which JSON shape `before`/`after` take on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Debezium's MongoDB connector shape: `before`/`after`/`updatedFields` are strings holding
    /// type-preserving extended JSON. Our sink rebuilds the exact BSON from it.
    #[default]
    Debezium,
    /// `before`/`after` are JSON objects in relaxed extended JSON, for Flink's `debezium-json`
    /// format; `before` of an update or delete without a pre-image holds the document key.
    /// Int32 and Int64 are no longer told apart.
    Flink,
}

/// Debezium's operation codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `c`: insert.
    Create,
    /// `u`: update (with `updateDescription`) or replace (with `after` and no description).
    Update,
    /// `d`: delete.
    Delete,
    /// `r`: read by the initial snapshot.
    Read,
}

impl Op {
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
        }
    }

    pub fn from_code(code: &str) -> Option<Op> {
        match code {
            "c" => Some(Op::Create),
            "u" => Some(Op::Update),
            "d" => Some(Op::Delete),
            "r" => Some(Op::Read),
            _ => None,
        }
    }
}

/// A `db.collection` pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace {
    pub db: String,
    pub coll: String,
}

impl Namespace {
    pub fn new(db: impl Into<String>, coll: impl Into<String>) -> Self {
        Self { db: db.into(), coll: coll.into() }
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.db, self.coll)
    }
}

/// A MongoDB cluster time (oplog timestamp): seconds and an increment within the second. As
/// JSON (resend replies, cdc-source's checkpoints): `{"t": …, "i": …}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct ClusterTime {
    pub t: u32,
    pub i: u32,
}

impl From<bson::Timestamp> for ClusterTime {
    fn from(ts: bson::Timestamp) -> Self {
        Self { t: ts.time, i: ts.increment }
    }
}

impl From<ClusterTime> for bson::Timestamp {
    fn from(ct: ClusterTime) -> Self {
        bson::Timestamp { time: ct.t, increment: ct.i }
    }
}

/// Debezium's `source.snapshot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Snapshot {
    /// A streamed change.
    #[default]
    False,
    /// Read by the snapshot.
    True,
    /// The last read of a collection's snapshot.
    Last,
    /// Read again while streaming, ordered with the stream (an operator's repair or dead-letter
    /// retry: Debezium's value for its incremental snapshots' reads).
    Incremental,
}

impl Snapshot {
    pub fn as_str(self) -> &'static str {
        match self {
            Snapshot::False => "false",
            Snapshot::True => "true",
            Snapshot::Last => "last",
            Snapshot::Incremental => "incremental",
        }
    }
}

/// Debezium's `source` block, less what [`Position`] and [`Namespace`] already say.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceInfo {
    /// Logical name of the source (Debezium's `topic.prefix`).
    pub name: String,
    /// Replica set name, when known.
    pub rs: Option<String>,
    pub snapshot: Snapshot,
    /// The change's `wallTime` in milliseconds, when the server reports it.
    pub wall_time_ms: Option<i64>,
    /// The session id of a transaction (UUID text).
    pub lsid: Option<String>,
    pub txn_number: Option<i64>,
}

/// Debezium's `transaction` block: which transaction, and the event's place in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// `<lsid>:<txnNumber>`.
    pub id: String,
    /// 1-based position of the event within the transaction.
    pub total_order: u64,
    /// 1-based position among the transaction's events on the same collection.
    pub data_collection_order: u64,
}

/// Where an event stands in the source's history (the additive `cdc` block).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Position {
    /// The change's cluster time; for snapshot reads, the time the snapshot's stream starts at.
    /// Approximate when `exact` is false.
    pub cluster_time: ClusterTime,
    /// True when `cluster_time` is the source's own (events with our `cdc` block, and every
    /// event cdc-source builds). False for plain Debezium events: their position is rebuilt
    /// from `source.ts_ms` (the change's wall time in ms, or a snapshot read's read time) and
    /// `source.ord` (the increment, -1 for snapshot reads), which neither orders a snapshot
    /// read against streamed changes nor matches the cluster time to the second.
    pub exact: bool,
    /// The change stream resume token of this event (none for snapshot reads).
    pub resume_token: Option<ResumeToken>,
    /// Per-source sequence number, increasing by one per event the source emits.
    pub seq: u64,
}

/// A change stream resume token, kept as the strict extended JSON text it travels as
/// (`{"_data": "…"}`): written once by the source (one text for every event of a transaction),
/// read into a document only by whoever needs one. A decoded token is the record's text,
/// checked when [`ResumeToken::document`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeToken(String);

impl ResumeToken {
    pub fn from_document(token: &Document) -> Self {
        Self(crate::extjson::document_to_string(token, crate::extjson::Style::Strict))
    }

    pub(crate) fn from_text(text: String) -> Self {
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn document(&self) -> Result<Document, crate::extjson::ExtJsonError> {
        crate::extjson::document_from_str(&self.0)
    }
}

/// What an update changed, as the change stream reports it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpdateDescription {
    /// Dotted paths to their new values.
    pub updated_fields: Document,
    /// Dotted paths that were removed.
    pub removed_fields: Vec<String>,
    /// Arrays that were shortened, and their new length.
    pub truncated_arrays: Vec<TruncatedArray>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncatedArray {
    pub field: String,
    pub size: u32,
}

/// One document change (`op` c, u, d or r). Its documents are `Document` trees, or for a
/// reader that only passes them on, BSON bytes (`ChangeEvent<RawDocumentBuf>`, [`crate::decode_raw`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent<D = Document> {
    pub op: Op,
    pub ns: Namespace,
    /// The change stream's `documentKey`: `_id`, plus shard key fields on sharded sources.
    pub document_key: Document,
    /// Pre-image, when the source collection records them.
    pub before: Option<D>,
    /// The document after the change: the inserted or replacing document, or for updates the
    /// `updateLookup` result (the document as it is *now*; none if deleted since).
    pub after: Option<D>,
    pub update_description: Option<UpdateDescription>,
    pub source: SourceInfo,
    pub transaction: Option<Transaction>,
    pub position: Position,
    /// When the source processed the event, in milliseconds since the epoch.
    pub ts_ms: i64,
    /// The re-send request this event answers (`cdc.resend`): a document's current state read
    /// again at an operator's request (`r`, or `d` when the source no longer has it), or a
    /// streamed change of a requested document that made the copy moot.
    pub resend: Option<String>,
}

impl<D> ChangeEvent<D> {
    /// The document's `_id` (every change stream `documentKey` has one).
    pub fn id(&self) -> Option<&Bson> {
        self.document_key.get("_id")
    }
}

/// A namespace-level change (DDL), carried as a control event.
#[derive(Debug, Clone, PartialEq)]
pub enum Ddl {
    /// The collection was dropped.
    Drop(Namespace),
    /// The collection was renamed; its documents now live in `to`.
    Rename { from: Namespace, to: Namespace },
    /// The database was dropped.
    DropDatabase { db: String },
    /// A collection or view was created, with its options as `listCollections` reports them
    /// (`validator`, `validationLevel`, `collation`, `capped`, `size`, `max`, `timeseries`,
    /// `clusteredIndex`, `changeStreamPreAndPostImages`, `viewOn` and `pipeline` for a view…).
    Create { ns: Namespace, options: Document },
    /// Indexes were built, each as `listIndexes` reports it (`key`, `name`, `unique`, `sparse`,
    /// `partialFilterExpression`, `expireAfterSeconds`, `collation`, `hidden`, text and geo
    /// options…).
    CreateIndexes { ns: Namespace, indexes: Vec<Document> },
    /// Indexes were dropped, by name.
    DropIndexes { ns: Namespace, names: Vec<String> },
    /// Collection options changed: the fields of the `collMod` that changed them (`validator`,
    /// `validationLevel`, `validationAction`, `index: {name, expireAfterSeconds | hidden}`, …).
    Modify { ns: Namespace, changes: Document },
}

impl Ddl {
    pub fn kind(&self) -> &'static str {
        match self {
            Ddl::Drop(_) => "drop",
            Ddl::Rename { .. } => "rename",
            Ddl::DropDatabase { .. } => "dropDatabase",
            Ddl::Create { .. } => "create",
            Ddl::CreateIndexes { .. } => "createIndexes",
            Ddl::DropIndexes { .. } => "dropIndexes",
            Ddl::Modify { .. } => "modify",
        }
    }

    /// What tells two DDL of one kind, namespace and cluster time apart, where that can happen:
    /// for changes that only shape a collection (a create, index and option changes), a digest
    /// of what they set. A source that learns of such changes by listing them (the stream reports
    /// no DDL) positions them where its stream has read, which may not have moved since its last
    /// listing or its last start: two different changes there are two DDL, and the same change
    /// sent again is one. None for drops and renames (each has a cluster time of its own).
    /// Stable across processes and versions: FNV-1a over the BSON of what the DDL sets.
    pub fn content_digest(&self) -> Option<u64> {
        let content = match self {
            Ddl::Create { options, .. } => bson::doc! {"options": options},
            Ddl::CreateIndexes { indexes, .. } => bson::doc! {"indexes": indexes},
            Ddl::DropIndexes { names, .. } => bson::doc! {"names": names},
            Ddl::Modify { changes, .. } => bson::doc! {"changes": changes},
            Ddl::Drop(_) | Ddl::Rename { .. } | Ddl::DropDatabase { .. } => return None,
        };
        let bytes = bson::to_vec(&content).unwrap_or_default();
        Some(bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
        }))
    }

    /// The collection the DDL names first (the old name of a rename); none for a database.
    pub fn namespace(&self) -> Option<&Namespace> {
        match self {
            Ddl::Drop(ns)
            | Ddl::Rename { from: ns, .. }
            | Ddl::Create { ns, .. }
            | Ddl::CreateIndexes { ns, .. }
            | Ddl::DropIndexes { ns, .. }
            | Ddl::Modify { ns, .. } => Some(ns),
            Ddl::DropDatabase { .. } => None,
        }
    }

    pub fn db(&self) -> &str {
        match (self, self.namespace()) {
            (_, Some(ns)) => &ns.db,
            (Ddl::DropDatabase { db }, None) => db,
            (_, None) => "",
        }
    }

    /// The collection affected, none for a whole database.
    pub fn collection(&self) -> Option<&str> {
        self.namespace().map(|ns| ns.coll.as_str())
    }

    /// Whether it ends the life of a collection's documents (drop, rename, dropDatabase): events
    /// older than it must never be written again. Creating a collection or changing its
    /// indexes and options leaves its documents as they are.
    pub fn ends_documents(&self) -> bool {
        matches!(self, Ddl::Drop(_) | Ddl::Rename { .. } | Ddl::DropDatabase { .. })
    }
}

/// A DDL control event. On the wire: an empty value (which Debezium-shaped consumers skip like
/// a tombstone) and a key holding the event; see the crate documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlEvent {
    pub ddl: Ddl,
    /// How many copies of this marker the source sent (one per partition it fanned out to):
    /// a sink applies the DDL once all of them have been reached.
    pub markers: u32,
    /// The topics those copies went to, with how many partitions (copies) each: a sink counts
    /// only the copies on topics it reads. Empty in events written before it existed; then
    /// `markers` is the count.
    pub topics: std::collections::BTreeMap<String, u32>,
    pub source: SourceInfo,
    pub position: Position,
    pub ts_ms: i64,
}

/// A source's promise about one partition: every change it captured at or before
/// `cluster_time` that belongs on this partition is on it, before this record. Written to every
/// partition the source writes, now and then, so that idle partitions say how far they are
/// complete too. On the wire like a control event (key only, empty value).
#[derive(Debug, Clone, PartialEq)]
pub struct Watermark {
    pub cluster_time: ClusterTime,
    pub source: SourceInfo,
    /// When the source wrote it, in milliseconds since the epoch.
    pub ts_ms: i64,
}

/// Everything a decoder can find on a topic.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<D = Document> {
    Change(Box<ChangeEvent<D>>),
    Control(Box<ControlEvent>),
    Watermark(Box<Watermark>),
    /// The null-valued record that follows a delete, for log compaction. `id` comes from the key.
    Tombstone {
        id: Bson,
    },
}

impl ControlEvent {
    /// How many copies of this marker a sink reading the topics `reads` says yes to must reach.
    pub fn markers_for(&self, reads: impl Fn(&str) -> bool) -> u32 {
        if self.topics.is_empty() {
            return self.markers;
        }
        self.topics.iter().filter(|(topic, _)| reads(topic)).map(|(_, n)| *n).sum()
    }
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    #[test]
    fn schema_changes_differ_by_what_they_set_and_drops_by_time_alone() {
        let ns = Namespace::new("shop", "items");
        let indexes = |names: &[&str]| Ddl::CreateIndexes {
            ns: ns.clone(),
            indexes: names.iter().map(|n| doc! {"name": *n, "key": {*n: 1}}).collect(),
        };
        assert_eq!(indexes(&["a"]).content_digest(), indexes(&["a"]).content_digest(), "the same change");
        assert_ne!(indexes(&["a"]).content_digest(), indexes(&["a", "b"]).content_digest());
        let validator =
            |field: &str| Ddl::Modify { ns: ns.clone(), changes: doc! {"validator": {"required": [field]}} };
        assert_ne!(validator("a").content_digest(), validator("b").content_digest());
        // Pinned: a sink of another version must name the same DDL the same way.
        assert_eq!(
            Ddl::DropIndexes { ns: ns.clone(), names: vec!["a".into()] }.content_digest(),
            Some(0x7820_bf7b_2c2e_923c)
        );
        assert_eq!(Ddl::Drop(ns).content_digest(), None);
    }
}
