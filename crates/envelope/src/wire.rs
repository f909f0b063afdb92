//! The JSON shapes on the wire, as serde structs shared by the encoder and the decoder.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Key of a change event or tombstone: `{"id": "<relaxed extended JSON of _id>"}`.
#[derive(Serialize, Deserialize)]
pub(crate) struct KeyWire {
    pub id: Option<String>,
}

/// Debezium 3.6's MongoDB `source` block, its fields in its order, then ours. Its text is
/// borrowed: from the event when written, from the record when read (unless escaped).
#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
pub(crate) struct SourceWire<'a> {
    #[serde(borrow)]
    pub version: Cow<'a, str>,
    #[serde(borrow)]
    pub connector: Cow<'a, str>,
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    pub ts_ms: i64,
    #[serde(borrow)]
    pub snapshot: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub db: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub sequence: Option<Cow<'a, str>>,
    pub ts_us: Option<i64>,
    pub ts_ns: Option<i64>,
    #[serde(borrow)]
    pub collection: Option<Cow<'a, str>>,
    /// Flink mode only: the collection again, where Flink's `value.source.table` looks.
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    pub table: Option<Cow<'a, str>>,
    /// The cluster time's increment; -1 for snapshot reads.
    pub ord: i64,
    #[serde(borrow)]
    pub lsid: Option<Cow<'a, str>>,
    #[serde(rename = "txnNumber")]
    pub txn_number: Option<i64>,
    #[serde(rename = "wallTime")]
    pub wall_time: Option<i64>,
    /// Ours: the source replica set.
    #[serde(borrow)]
    pub rs: Option<Cow<'a, str>>,
}

#[derive(Serialize, Deserialize, Clone, Copy)]
pub(crate) struct ClusterTimeWire {
    pub t: u32,
    pub i: u32,
}

/// The additive block our sink reads and standard consumers ignore.
#[derive(Serialize, Deserialize)]
pub(crate) struct CdcWire<'a> {
    pub v: u32,
    pub seq: u64,
    #[serde(rename = "clusterTime")]
    pub cluster_time: ClusterTimeWire,
    #[serde(rename = "resumeToken", default, borrow)]
    pub resume_token: Option<Cow<'a, str>>,
    #[serde(rename = "documentKey", default, borrow, skip_serializing_if = "Option::is_none")]
    pub document_key: Option<Cow<'a, str>>,
    /// The change's own operation when the Debezium `op` had to differ from it: `u` for an
    /// update whose looked-up document is gone, sent as `d`.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub op: Option<Cow<'a, str>>,
    /// The re-send request the event answers, if it answers one.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub resend: Option<Cow<'a, str>>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct TransactionWire {
    pub id: String,
    #[serde(default)]
    pub total_order: u64,
    #[serde(default)]
    pub data_collection_order: u64,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct TruncatedArrayWire {
    pub field: String,
    pub size: u32,
}

/// `before` / `after` / `updatedFields`: a string of extended JSON (Debezium) or an object
/// (Flink mode).
#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum PayloadOut {
    Text(String),
    Object(Box<RawValue>),
}

#[derive(Serialize)]
pub(crate) struct UpdateOut {
    #[serde(rename = "removedFields")]
    pub removed_fields: Option<Vec<String>>,
    #[serde(rename = "updatedFields")]
    pub updated_fields: Option<PayloadOut>,
    #[serde(rename = "truncatedArrays")]
    pub truncated_arrays: Option<Vec<TruncatedArrayWire>>,
}

/// A change event's value, fields in Debezium's order.
#[derive(Serialize)]
pub(crate) struct ChangeOut<'a> {
    pub before: Option<PayloadOut>,
    pub after: Option<PayloadOut>,
    #[serde(rename = "updateDescription")]
    pub update_description: Option<UpdateOut>,
    pub source: SourceWire<'a>,
    pub op: &'static str,
    pub ts_ms: i64,
    pub transaction: Option<TransactionWire>,
    pub cdc: CdcWire<'a>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct NamespaceWire {
    pub db: String,
    pub collection: String,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct DdlWire {
    #[serde(rename = "type")]
    pub kind: String,
    pub db: String,
    pub collection: Option<String>,
    #[serde(default)]
    pub to: Option<NamespaceWire>,
    #[serde(default)]
    pub markers: u32,
    /// Topic → copies on it; omitted when empty.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub topics: std::collections::BTreeMap<String, u32>,
    /// What a create, createIndexes, dropIndexes or modify carries, as strict extended JSON of
    /// a document (`{"options": …}`, `{"indexes": […]}`, `{"names": […]}`, `{"changes": …}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
}

/// A watermark's key (its value is empty), shaped like a control event's.
#[derive(Serialize)]
pub(crate) struct WatermarkOut<'a> {
    pub id: Option<String>,
    pub watermark: ClusterTimeWire,
    pub source: SourceWire<'a>,
    pub ts_ms: i64,
}

#[derive(Deserialize)]
pub(crate) struct WatermarkIn<'a> {
    pub watermark: ClusterTimeWire,
    #[serde(default, borrow)]
    pub source: Option<SourceWire<'a>>,
    #[serde(default)]
    pub ts_ms: Option<i64>,
}

/// A control event's key (its value is empty): `id` null first, so Debezium-shaped consumers
/// take the record for a tombstone of no document and skip it.
#[derive(Serialize)]
pub(crate) struct ControlOut<'a> {
    pub id: Option<String>,
    pub ddl: DdlWire,
    pub source: SourceWire<'a>,
    pub ts_ms: i64,
    pub cdc: CdcWire<'a>,
}

/// A control event as found in a key (now) or a value (envelopes written before).
#[derive(Deserialize)]
pub(crate) struct ControlIn<'a> {
    pub ddl: DdlWire,
    #[serde(default, borrow)]
    pub source: Option<SourceWire<'a>>,
    #[serde(default)]
    pub ts_ms: Option<i64>,
    #[serde(default, borrow)]
    pub cdc: Option<CdcWire<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct UpdateIn {
    #[serde(rename = "removedFields", default)]
    pub removed_fields: Option<Vec<String>>,
    #[serde(rename = "updatedFields", default)]
    pub updated_fields: Option<Box<RawValue>>,
    #[serde(rename = "truncatedArrays", default)]
    pub truncated_arrays: Option<Vec<TruncatedArrayWire>>,
}

/// Any value we may meet: ours, Debezium's own, or either wrapped by Kafka Connect's
/// `JsonConverter` with schemas (`{"schema": …, "payload": …}`).
/// The documents and the wrapped payload are borrowed from the record, not copied.
#[derive(Deserialize)]
pub(crate) struct ValueIn<'a> {
    #[serde(default, borrow)]
    pub before: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub after: Option<&'a RawValue>,
    #[serde(rename = "updateDescription", default)]
    pub update_description: Option<UpdateIn>,
    #[serde(default, borrow)]
    pub source: Option<SourceWire<'a>>,
    #[serde(default, borrow)]
    pub op: Option<Cow<'a, str>>,
    #[serde(default)]
    pub ts_ms: Option<i64>,
    #[serde(default)]
    pub transaction: Option<TransactionWire>,
    /// A control event written before they moved to the key.
    #[serde(default)]
    pub ddl: Option<DdlWire>,
    #[serde(default, borrow)]
    pub cdc: Option<CdcWire<'a>>,
    #[serde(default, borrow)]
    pub payload: Option<&'a RawValue>,
}
