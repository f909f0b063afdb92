//! The wire format between cdc-source and sink-writer: Debezium MongoDB change events, plus an
//! additive `cdc` block that lets our sink rebuild the source exactly. Pure: no I/O.
//!
//! ```text
//!  cdc-source:  change stream event ──► ChangeEvent ──encode_key/encode_change──► Kafka record
//!  sink-writer: Kafka record ──decode──► Event::{Change, Control, Tombstone} | DecodeError ──► DLQ
//! ```
//!
//! # Specification (envelope version 1)
//!
//! ## Records
//! | record            | key                                  | value                         |
//! |-------------------|--------------------------------------|-------------------------------|
//! | change (c/u/d/r)  | `{"id": "<relaxed ext JSON of _id>"}`| change value, below           |
//! | tombstone         | the deleted document's key           | null (follows each delete unless disabled) |
//! | control (DDL)     | `{"ddl": "<db>.<coll>"}` or `{"ddl": "<db>"}` | control value, below |
//!
//! The key's `id` is rendered exactly as Debezium renders it: `1234` → `"1234"`, `"a"` →
//! `"\"a\""`, an ObjectId → `"{\"$oid\": \"…\"}"`, a sub-document → its JSON text. Keys are
//! deterministic, so one document always hashes to one partition and its events stay in order.
//!
//! ## Change value (Debezium MongoDB shape)
//! - `before`, `after`: in the default [`Mode::Debezium`], strings of *type-preserving* extended
//!   JSON ([`extjson::Style::Strict`]: `Int64` as `{"$numberLong": …}`, doubles always with `.`
//!   or exponent, canonical forms for every other BSON type), so the exact BSON (types, field
//!   order) is rebuilt; or null. `after` of an insert, replace or snapshot read is the document;
//!   of an update it is the `updateLookup` result, i.e. the document as it is *now* (null if it
//!   was deleted since). `before` is the pre-image when the collection records them. In
//!   [`Mode::Flink`], both are JSON objects in relaxed extended JSON, and `before` of an update or
//!   delete without pre-image holds the document key.
//! - `updateDescription`: for updates, `{"removedFields": [..]|null, "updatedFields": "<ext
//!   JSON>", "truncatedArrays": [{"field", "size"}]|null}`; null otherwise (a replace is an
//!   `u` with `after` and no description).
//! - `source`: `{version, connector: "mongodb", name, ts_ms, snapshot: "true"|"last"|"false",
//!   db, sequence, rs, collection, ord, lsid, txnNumber, wallTime}`; `ts_ms` and `ord` are the
//!   change's cluster time (seconds × 1000, increment).
//! - `op`: `c` insert, `u` update or replace, `d` delete, `r` snapshot read.
//! - `ts_ms`: when cdc-source processed the event.
//! - `transaction`: null, or `{"id": "<lsid>:<txnNumber>", "total_order", "data_collection_order"}`.
//! - `cdc` (additive; standard consumers ignore it): `{"v": 1, "seq": <per-source sequence>,
//!   "clusterTime": {"t", "i"}, "resumeToken": "<ext JSON>"|null, "documentKey": "<ext JSON>"}`.
//!   `documentKey` is the exact (strict) key including shard key fields.
//!
//! ## Control value (DDL)
//! `{"ddl": {"type": "drop"|"rename"|"dropDatabase", "db", "collection"|null, "to": {"db",
//! "collection"}|null, "markers": N, "topics": {"<topic>": n, …}}, "source": {…}, "ts_ms",
//! "cdc": {…}}` and no `op`. The source writes one copy to every partition that may hold older
//! events of the namespace; `markers` says how many in all and `topics` how many on each topic
//! (a rename's copies go to the old and the new name's topics). A sink applies the DDL once it
//! has reached every copy on the topics it reads (all older events are applied by then);
//! without `topics` (older events), it waits for `markers` copies. Debezium-shaped
//! consumers (the MongoDB Kafka Connector's Debezium handler among them) skip it. Its
//! `cdc.clusterTime` orders it against the namespace's data events: a sink applies it after
//! every earlier change of the namespace and ignores later-arriving older ones.
//!
//! ## Examples (Debezium mode; see `tests/fixtures/` for every op in both modes)
//! Insert of `{"_id": 1, "name": "Pen", "qty": {"$numberLong": "244"}}`, key `{"id":"1"}`:
//! ```json
//! {"before":null,"after":"{\"_id\": 1, \"name\": \"Pen\", \"qty\": {\"$numberLong\": \"244\"}}",
//!  "updateDescription":null,"source":{"version":"0.1.0","connector":"mongodb","name":"src",
//!  "ts_ms":1700000000000,"snapshot":"false","db":"inventory","sequence":null,"rs":"source",
//!  "collection":"products","ord":1,"lsid":null,"txnNumber":null,"wallTime":1700000000123},
//!  "op":"c","ts_ms":1700000000200,"transaction":null,"cdc":{"v":1,"seq":1,
//!  "clusterTime":{"t":1700000000,"i":1},"resumeToken":"{\"_data\": \"8265…\"}",
//!  "documentKey":"{\"_id\": 1}"}}
//! ```
//! Update (`$set: {qty: 240}`, `$unset: {tag: ""}`): `"op":"u"`, `"after"` the looked-up
//! document, `"updateDescription":{"removedFields":["tag"],"updatedFields":"{\"qty\": 240}",
//! "truncatedArrays":null}`.
//! Delete: `"op":"d"`, `"before":null`, `"after":null`, then a tombstone with key `{"id":"1"}`.
//! Snapshot read: `"op":"r"`, `"source":{…"snapshot":"true"…}`, `"resumeToken":null`.
//! Drop: key `{"ddl":"inventory.products"}`, value
//! `{"ddl":{"type":"drop","db":"inventory","collection":"products","to":null,"markers":4},"source":{…},
//! "ts_ms":…,"cdc":{"v":1,"seq":9,"clusterTime":{"t":1700000100,"i":1},"resumeToken":"…"}}`.
//!
//! ## Decoding
//! [`decode`] accepts our envelopes in both modes and plain Debezium MongoDB events (also
//! wrapped in Kafka Connect's `{"schema", "payload"}`), and returns a [`DecodeError`] — never a
//! panic — for malformed JSON, an unknown `op`, a newer envelope version, a missing key or
//! field, or a payload that is not extended JSON. Those records belong on the dead-letter topic.

mod decode;
mod encode;
mod error;
mod event;
pub mod extjson;
mod wire;

pub use decode::{decode, decode_key};
pub use encode::{encode_change, encode_control, encode_key, CONNECTOR_VERSION};
pub use error::DecodeError;
pub use event::{
    ChangeEvent, ClusterTime, ControlEvent, Ddl, Event, Mode, Namespace, Op, Position, Snapshot, SourceInfo,
    Transaction, TruncatedArray, UpdateDescription, ENVELOPE_VERSION,
};
