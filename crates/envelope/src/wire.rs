//! The JSON shapes on the wire, as serde structs shared by the encoder and the decoder.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Key of a change event or tombstone: `{"id": "<relaxed extended JSON of _id>"}`.
#[derive(Serialize, Deserialize)]
pub(crate) struct KeyWire {
    pub id: Option<String>,
}

/// Debezium 3.6's MongoDB `source` block, its fields in its order, then ours.
#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
pub(crate) struct SourceWire {
    pub version: String,
    pub connector: String,
    pub name: String,
    pub ts_ms: i64,
    pub snapshot: Option<String>,
    pub db: Option<String>,
    pub sequence: Option<String>,
    pub ts_us: Option<i64>,
    pub ts_ns: Option<i64>,
    pub collection: Option<String>,
    /// Flink mode only: the collection again, where Flink's `value.source.table` looks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// The cluster time's increment; -1 for snapshot reads.
    pub ord: i64,
    pub lsid: Option<String>,
    #[serde(rename = "txnNumber")]
    pub txn_number: Option<i64>,
    #[serde(rename = "wallTime")]
    pub wall_time: Option<i64>,
    /// Ours: the source replica set.
    pub rs: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy)]
pub(crate) struct ClusterTimeWire {
    pub t: u32,
    pub i: u32,
}

/// The additive block our sink reads and standard consumers ignore.
#[derive(Serialize, Deserialize)]
pub(crate) struct CdcWire {
    pub v: u32,
    pub seq: u64,
    #[serde(rename = "clusterTime")]
    pub cluster_time: ClusterTimeWire,
    #[serde(rename = "resumeToken", default)]
    pub resume_token: Option<String>,
    #[serde(rename = "documentKey", default, skip_serializing_if = "Option::is_none")]
    pub document_key: Option<String>,
    /// The change's own operation when the Debezium `op` had to differ from it: `u` for an
    /// update whose looked-up document is gone, sent as `d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
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
pub(crate) struct ChangeOut {
    pub before: Option<PayloadOut>,
    pub after: Option<PayloadOut>,
    #[serde(rename = "updateDescription")]
    pub update_description: Option<UpdateOut>,
    pub source: SourceWire,
    pub op: &'static str,
    pub ts_ms: i64,
    pub transaction: Option<TransactionWire>,
    pub cdc: CdcWire,
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
pub(crate) struct WatermarkOut {
    pub id: Option<String>,
    pub watermark: ClusterTimeWire,
    pub source: SourceWire,
    pub ts_ms: i64,
}

#[derive(Deserialize)]
pub(crate) struct WatermarkIn {
    pub watermark: ClusterTimeWire,
    #[serde(default)]
    pub source: Option<SourceWire>,
    #[serde(default)]
    pub ts_ms: Option<i64>,
}

/// A control event's key (its value is empty): `id` null first, so Debezium-shaped consumers
/// take the record for a tombstone of no document and skip it.
#[derive(Serialize)]
pub(crate) struct ControlOut {
    pub id: Option<String>,
    pub ddl: DdlWire,
    pub source: SourceWire,
    pub ts_ms: i64,
    pub cdc: CdcWire,
}

/// A control event as found in a key (now) or a value (envelopes written before).
#[derive(Deserialize)]
pub(crate) struct ControlIn {
    pub ddl: DdlWire,
    #[serde(default)]
    pub source: Option<SourceWire>,
    #[serde(default)]
    pub ts_ms: Option<i64>,
    #[serde(default)]
    pub cdc: Option<CdcWire>,
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
    #[serde(default)]
    pub source: Option<SourceWire>,
    #[serde(default)]
    pub op: Option<String>,
    #[serde(default)]
    pub ts_ms: Option<i64>,
    #[serde(default)]
    pub transaction: Option<TransactionWire>,
    /// A control event written before they moved to the key.
    #[serde(default)]
    pub ddl: Option<DdlWire>,
    #[serde(default)]
    pub cdc: Option<CdcWire>,
    #[serde(default, borrow)]
    pub payload: Option<&'a RawValue>,
}
