//! Events → Kafka record keys and values.

use std::borrow::Cow;

use bson::{doc, Bson, Document};
use serde_json::value::RawValue;

use crate::decode::Payload;
use crate::event::{
    ChangeEvent, ControlEvent, Ddl, Mode, Op, Position, Snapshot, SourceInfo, Watermark, ENVELOPE_VERSION,
};
use crate::extjson::{document_to_string, value_to_string, Style};
use crate::wire::{
    CdcWire, ChangeOut, ClusterTimeWire, ControlOut, DdlWire, KeyWire, NamespaceWire, PayloadOut, SourceWire,
    TransactionWire, TruncatedArrayWire, UpdateOut, WatermarkOut,
};

/// Our version in `source.version`.
pub const CONNECTOR_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The record key of a document's events: `{"id": "<relaxed extended JSON of _id>"}`, byte for
/// byte Debezium 3.6's for every `_id` type (`1234` → `"1234"`, `"a"` → `"\"a\""`, an ObjectId →
/// `"{\"$oid\": \"…\"}"`, `{tenant: 4, n: 77}` → `"{\"tenant\": 4,\"n\": 77}"`;
/// [`Style::Key`]). The same `_id` always gives the same bytes, so a document lands on the
/// partition Debezium would choose, and compaction keys match Debezium's.
pub fn encode_key(id: &Bson) -> Vec<u8> {
    to_vec(&KeyWire { id: Some(value_to_string(id, Style::Key)) })
}

/// The value of a change event in the given mode.
///
/// An update whose looked-up document is gone (`after` none: the document was deleted since,
/// and its delete follows) goes out as `op: "d"` with `cdc.op: "u"`: the MongoDB Kafka
/// Connector and Flink's `debezium-json` both refuse an update without `after`, and both apply
/// a delete of the key, which is where the document ends anyway. Our decoder reads it back as
/// the update it is (`updateDescription` kept), so an exact sink loses nothing.
pub fn encode_change<D: Payload>(event: &ChangeEvent<D>, mode: Mode) -> Vec<u8> {
    let style = match mode {
        Mode::Debezium => Style::Strict,
        Mode::Flink => Style::Relaxed,
    };
    let payload = |text: String| -> PayloadOut {
        match mode {
            Mode::Debezium => PayloadOut::Text(text),
            // Our writer only produces valid JSON; should that ever break, keep the data as text
            // rather than lose it.
            Mode::Flink => match RawValue::from_string(text) {
                Ok(raw) => PayloadOut::Object(raw),
                Err(e) => PayloadOut::Text(format!("invalid extended JSON from encoder: {e}")),
            },
        }
    };
    let gone = event.op == Op::Update && event.after.is_none();
    let wire_op = if gone { Op::Delete } else { event.op };
    let before = match (&event.before, mode, wire_op) {
        (Some(doc), _, _) => Some(payload(doc.to_ext_json(style))),
        // Flink's debezium-json needs the key of what an update or delete changed.
        (None, Mode::Flink, Op::Update | Op::Delete) => Some(payload(document_to_string(&event.document_key, style))),
        (None, _, _) => None,
    };
    let update_description = event.update_description.as_ref().map(|ud| UpdateOut {
        removed_fields: (!ud.removed_fields.is_empty()).then(|| ud.removed_fields.clone()),
        updated_fields: Some(payload(document_to_string(&ud.updated_fields, style))),
        truncated_arrays: (!ud.truncated_arrays.is_empty()).then(|| {
            ud.truncated_arrays.iter().map(|t| TruncatedArrayWire { field: t.field.clone(), size: t.size }).collect()
        }),
    });
    let mut source = source_wire(&event.source, &event.position, &event.ns.db, Some(&event.ns.coll), event.ts_ms);
    if event.op == Op::Read {
        source.ord = -1;
    }
    if mode == Mode::Flink {
        source.table = Some(Cow::Borrowed(&event.ns.coll));
    }
    let mut cdc = cdc_wire(&event.position, Some(&event.document_key));
    if gone {
        cdc.op = Some(Cow::Borrowed(event.op.code()));
    }
    cdc.resend = event.resend.as_deref().map(Cow::Borrowed);
    let value = ChangeOut {
        before,
        after: event.after.as_ref().map(|doc| payload(doc.to_ext_json(style))),
        update_description,
        source,
        op: wire_op.code(),
        ts_ms: event.ts_ms,
        transaction: event.transaction.as_ref().map(|t| TransactionWire {
            id: t.id.clone(),
            total_order: t.total_order,
            data_collection_order: t.data_collection_order,
        }),
        cdc,
    };
    to_vec(&value)
}

/// The key and value of a DDL control event. The value is empty (zero bytes, not null: a
/// compacted topic keeps it); the key holds the event, `id` null first:
/// `{"id": null, "ddl": {…}, "source": {…}, "ts_ms": …, "cdc": {…}}`. The MongoDB Kafka
/// Connector's Debezium handlers skip a record whose key has `id` and whose value is empty, and
/// Flink's `debezium-json` skips empty values; a sink decodes it with [`crate::decode`].
/// Both parts depend on the marker counts, so a producer encodes them once those are known.
pub fn encode_control(event: &ControlEvent) -> (Vec<u8>, Vec<u8>) {
    let to = match &event.ddl {
        Ddl::Rename { to, .. } => Some(NamespaceWire { db: to.db.clone(), collection: to.coll.clone() }),
        _ => None,
    };
    let collection = event.ddl.collection().map(str::to_string);
    let spec = match &event.ddl {
        Ddl::Create { options, .. } => Some(doc! {"options": options.clone()}),
        Ddl::CreateIndexes { indexes, .. } => Some(doc! {"indexes": indexes.clone()}),
        Ddl::DropIndexes { names, .. } => Some(doc! {"names": names.clone()}),
        Ddl::Modify { changes, .. } => Some(doc! {"changes": changes.clone()}),
        Ddl::Drop(_) | Ddl::Rename { .. } | Ddl::DropDatabase { .. } => None,
    };
    let db = event.ddl.db().to_string();
    let key = ControlOut {
        id: None,
        source: source_wire(&event.source, &event.position, &db, collection.as_deref(), event.ts_ms),
        ddl: DdlWire {
            kind: event.ddl.kind().to_string(),
            db: db.clone(),
            collection: collection.clone(),
            to,
            markers: event.markers,
            topics: event.topics.clone(),
            spec: spec.map(|spec| document_to_string(&spec, Style::Strict)),
        },
        ts_ms: event.ts_ms,
        cdc: cdc_wire(&event.position, None),
    };
    (to_vec(&key), Vec::new())
}

/// The key and value of a watermark: like a control event's, the value empty and the key
/// `{"id": null, "watermark": {"t", "i"}, "source": {…}, "ts_ms": …}`, which Debezium-shaped
/// consumers skip.
pub fn encode_watermark(watermark: &Watermark) -> (Vec<u8>, Vec<u8>) {
    let position = Position { cluster_time: watermark.cluster_time, exact: true, ..Position::default() };
    let mut source = source_wire(&watermark.source, &position, "", None, watermark.ts_ms);
    source.db = None;
    let key = WatermarkOut {
        id: None,
        watermark: ClusterTimeWire { t: watermark.cluster_time.t, i: watermark.cluster_time.i },
        source,
        ts_ms: watermark.ts_ms,
    };
    (to_vec(&key), Vec::new())
}

/// Debezium 3.6's `source`: `ts_ms` is the change's wall time (a snapshot read's read time,
/// `read_ms`), with `ts_us`/`ts_ns` the same instant in micro- and nanoseconds; `ord` the
/// cluster time's increment.
fn source_wire<'a>(
    source: &'a SourceInfo,
    position: &Position,
    db: &'a str,
    coll: Option<&'a str>,
    read_ms: i64,
) -> SourceWire<'a> {
    let ts_ms = match (source.wall_time_ms, source.snapshot) {
        (Some(wall), _) => wall,
        (None, Snapshot::True | Snapshot::Last | Snapshot::Incremental) => read_ms,
        (None, Snapshot::False) => i64::from(position.cluster_time.t) * 1000,
    };
    SourceWire {
        version: Cow::Borrowed(CONNECTOR_VERSION),
        connector: Cow::Borrowed("mongodb"),
        name: Cow::Borrowed(&source.name),
        ts_ms,
        snapshot: Some(Cow::Borrowed(source.snapshot.as_str())),
        db: Some(Cow::Borrowed(db)),
        sequence: None,
        ts_us: Some(ts_ms.saturating_mul(1_000)),
        ts_ns: Some(ts_ms.saturating_mul(1_000_000)),
        collection: coll.map(Cow::Borrowed),
        table: None,
        ord: i64::from(position.cluster_time.i),
        lsid: source.lsid.as_deref().map(Cow::Borrowed),
        txn_number: source.txn_number,
        wall_time: source.wall_time_ms,
        rs: source.rs.as_deref().map(Cow::Borrowed),
    }
}

fn cdc_wire<'a>(position: &'a Position, document_key: Option<&Document>) -> CdcWire<'a> {
    CdcWire {
        v: ENVELOPE_VERSION,
        seq: position.seq,
        cluster_time: ClusterTimeWire { t: position.cluster_time.t, i: position.cluster_time.i },
        resume_token: position.resume_token.as_ref().map(|t| Cow::Borrowed(t.as_str())),
        document_key: document_key.map(|k| Cow::Owned(document_to_string(k, Style::Strict))),
        op: None,
        resend: None,
    }
}

fn to_vec<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs into memory cannot fail: no maps with non-string keys,
    // no fallible Serialize implementations.
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    // The buffer grew by doubling: a record waits in queues and producer buffers sized by its
    // length, so it should hold no more than that.
    bytes.shrink_to_fit();
    bytes
}
