//! The wire format between cdc-source and sink-writer: Debezium MongoDB change events (keys
//! byte-identical to Debezium 3.6's), plus an additive `cdc` block that lets our sink rebuild the
//! source exactly, and DDL control events that Debezium-shaped consumers skip. Pure: no I/O.
//!
//! ```text
//!  cdc-source:  change stream event ──► ChangeEvent ──encode_key/encode_change──► Kafka record
//!  sink-writer: Kafka record ──decode──► Event::{Change, Control, Watermark, Tombstone} | DecodeError ──► DLQ
//! ```
//!
//! # Specification (envelope version 1)
//!
//! ## Records
//! | record            | key                                  | value                         |
//! |-------------------|--------------------------------------|-------------------------------|
//! | change (c/u/d/r)  | `{"id": "<_id as Debezium writes it>"}` | change value, below        |
//! | tombstone         | the deleted document's key           | null (follows each delete unless disabled) |
//! | control (DDL)     | `{"id": null, "ddl": {…}, "source": {…}, "ts_ms", "cdc": {…}}` | empty (zero bytes) |
//!
//! The key is byte-identical to Debezium 3.6's for every `_id` type (checked against keys the
//! real connector wrote, `tests/fixtures/debezium/keys.json`): `id` is the MongoDB Java driver's
//! relaxed JSON of `_id` ([`extjson::Style::Key`]): `1234` → `"1234"`, `"a"` → `"\"a\""`, an
//! ObjectId → `"{\"$oid\": \"…\"}"`, `{tenant: 4, n: 77}` → `"{\"tenant\": 4,\"n\": 77}"` (`,`
//! between fields and items), a double → Java's `Double.toString` (`2.0`, `1.0E21`), a date →
//! `{"$date": "2023-11-14T22:13:20.123Z"}` (1970–9999, fraction trimmed) or
//! `{"$date": {"$numberLong": "…"}}`, binary → `{"$binary": {"base64": "…","subType": "04"}}`,
//! strings with Java's escapes. Keys are deterministic, and the producer partitions with the Java
//! client's murmur2, so one document always lands on the partition Debezium would choose.
//!
//! ## Change value (Debezium MongoDB shape)
//! - `before`, `after`: in the default [`Mode::Debezium`], strings of *type-preserving* extended
//!   JSON ([`extjson::Style::Strict`]: `Int64` as `{"$numberLong": …}`, doubles always with `.`
//!   or exponent, canonical forms for every other BSON type), so the exact BSON (types, field
//!   order) is rebuilt; or null. `after` of an insert, replace or snapshot read is the document;
//!   of an update it is the `updateLookup` result, i.e. the document as it is *now*. `before` is
//!   the pre-image when the collection records them (`capture.pre_images`). In [`Mode::Flink`],
//!   both are JSON objects in relaxed extended JSON, and `before` of an update or delete without
//!   pre-image holds the document key (so Flink's `-U`/`-D` rows carry only the key columns).
//! - `updateDescription`: for updates, `{"removedFields": [..]|null, "updatedFields": "<ext
//!   JSON>", "truncatedArrays": [{"field", "size"}]|null}`; null otherwise (a replace is a `u`
//!   with `after` and no description).
//! - `source`: `{version, connector: "mongodb", name, ts_ms, snapshot: "true"|"last"|"false",
//!   db, sequence, ts_us, ts_ns, collection, ord, lsid, txnNumber, wallTime, rs}`, Debezium 3.6's
//!   fields in its order, then ours. As in Debezium, `ts_ms` is the change's wall time (the
//!   server's `wallTime`; a snapshot read's read time), `ts_us`/`ts_ns` the same instant, and
//!   `ord` the cluster time's increment (-1 for snapshot reads). In Flink mode `source` also has
//!   `table` (= `collection`), which Flink's `value.source.table` metadata reads.
//! - `op`: `c` insert, `u` update or replace, `d` delete, `r` snapshot read. An update whose
//!   looked-up document is gone (`after` would be null: the document was deleted since, and its
//!   delete follows) is sent as `d` with `cdc.op: "u"`: the MongoDB Kafka Connector and Flink
//!   refuse an update without `after` (the task or job fails), and both apply a delete of the
//!   key, where the document ends anyway. Our decoder returns the update (with its
//!   `updateDescription`).
//! - `ts_ms`: when cdc-source processed the event.
//! - `transaction`: null, or `{"id": "<lsid>:<txnNumber>", "total_order", "data_collection_order"}`.
//! - `cdc` (additive; standard consumers ignore it): `{"v": 1, "seq": <per-source sequence>,
//!   "clusterTime": {"t", "i"}, "resumeToken": "<ext JSON>"|null, "documentKey": "<ext JSON>",
//!   "op"?, "resend"?}`. `documentKey` is the exact (strict) key including shard key fields; `op`
//!   the change's own operation where the Debezium `op` differs; `resend` the id of the re-send
//!   request the event answers (below).
//!
//! ## Re-sent documents
//! An operator may ask cdc-source to send documents' current state again ([`resend`]: `sink-writer
//! verify --repair`, `sink-writer dead-letters retry`). cdc-source reads them while streaming and
//! sends them ordered with the stream, as Debezium's incremental snapshots send their reads: `op:
//! "r"`, `source.snapshot: "incremental"`, `cdc.clusterTime` the read's time, and `cdc.resend`
//! the request id; an `_id` the source no longer has goes out as a delete (`op: "d"`, also
//! `"incremental"`, then a tombstone). A requested document whose own change came through the
//! stream while it was read gets no copy: that change (which carries the newer state) carries
//! `cdc.resend` instead. Consumers of Debezium's format apply them as any read or delete.
//!
//! ## Control events (DDL)
//! Key `{"id": null, "ddl": {"type": "drop"|"rename"|"dropDatabase"|"create"|"createIndexes"|
//! "dropIndexes"|"modify", "db", "collection"|null, "to": {"db", "collection"}|null, "markers": N,
//! "topics": {"<topic>": n, …}, "spec"?: "<ext JSON>"}, "source": {…},
//! "ts_ms", "cdc": {…}}`, value empty (zero bytes; not null, so compaction keeps it). Consumers
//! of Debezium's format skip it with their default settings: the MongoDB Kafka Connector's
//! Debezium handlers (`MongoDbHandler`, `ChangeStreamHandler`) skip a record whose key has `id`
//! and whose value is empty, as a tombstone (a `ddl` value without `op` made them throw a
//! NullPointerException), Flink's `debezium-json` skips empty values, and no document has a
//! JSON-null key. The source writes one copy to every partition that may hold older events of
//! the namespace, in order with the data; `markers` says how many in all and `topics` how many on
//! each topic (a rename's copies go to the old and the new name's topics). A sink applies the DDL
//! once it has reached every copy on the topics it reads (all older events are applied by then);
//! without `topics` (older events), it waits for `markers` copies. Its `cdc.clusterTime` orders
//! it against the namespace's data events: a sink applies it after every earlier change of the
//! namespace and ignores later-arriving older ones. Key and value both depend on the counts, so
//! the producer encodes them once it knows the partitions ([`encode_control`]). Control events
//! written before this shape (key `{"ddl": "<ns>"}`, the event as the value, no `op`) still
//! decode.
//!
//! Schema control events carry what changed in `ddl.spec`, strict extended JSON of a document:
//! `create` (a collection or view was created; also sent before a snapshot copies a collection)
//! `{"options": {…}}` as `listCollections` reports them (`validator`, `collation`, `capped`,
//! `timeseries`, `clusteredIndex`, `viewOn` and `pipeline` for a view, …); `createIndexes`
//! `{"indexes": [{…}, …]}` as `listIndexes` reports them; `dropIndexes` `{"names": […]}`;
//! `modify` `{"changes": {…}}`, the fields of the `collMod` (`validator`, `validationLevel`,
//! `index: {name, expireAfterSeconds | hidden}`, …). They follow the same ordering rule (a copy on
//! every partition of the namespace's topic, applied once after every earlier change), but they
//! leave documents as they are: no event is ever skipped because of them.
//!
//! ## Watermarks
//! Key `{"id": null, "watermark": {"t", "i"}, "source": {…, "db": null, "collection": null},
//! "ts_ms"}`, value empty, so Debezium-shaped consumers skip it as they skip control events.
//! The source writes one now and then (`delivery.watermark_interval_ms`) to every partition it
//! writes, in the same transaction as the data in exactly-once mode: every change it captured
//! at or before that cluster time that belongs on the partition is on it, before the
//! watermark. A sink that has applied everything before a partition's watermark is consistent
//! with the source up to that time for the partition; the minimum over all partitions is the
//! point up to which the target equals the source (`sink_writer_consistent_up_to_timestamp_seconds`).
//!
//! Compatibility: a sink-writer built before this shape reads the new control events as
//! undecodable tombstones and a snapshot read's `ord: -1` as an error, so upgrade sink-writer
//! before cdc-source. This decoder reads both shapes.
//!
//! ## Examples (Debezium mode; see `tests/fixtures/` for every op in both modes)
//! Insert of `{"_id": 1, "name": "Pen", "qty": {"$numberLong": "244"}}`, key `{"id":"1"}`:
//! ```json
//! {"before":null,"after":"{\"_id\": 1, \"name\": \"Pen\", \"qty\": {\"$numberLong\": \"244\"}}",
//!  "updateDescription":null,"source":{"version":"0.1.0","connector":"mongodb","name":"src",
//!  "ts_ms":1700000000123,"snapshot":"false","db":"inventory","sequence":null,
//!  "ts_us":1700000000123000,"ts_ns":1700000000123000000,"collection":"products","ord":1,
//!  "lsid":null,"txnNumber":null,"wallTime":1700000000123,"rs":"source"},
//!  "op":"c","ts_ms":1700000000200,"transaction":null,"cdc":{"v":1,"seq":1,
//!  "clusterTime":{"t":1700000000,"i":1},"resumeToken":"{\"_data\": \"8265…\"}",
//!  "documentKey":"{\"_id\": 1}"}}
//! ```
//! Update (`$set: {qty: 240}`, `$unset: {tag: ""}`): `"op":"u"`, `"after"` the looked-up
//! document, `"updateDescription":{"removedFields":["tag"],"updatedFields":"{\"qty\": 240}",
//! "truncatedArrays":null}`. The same update after which the document was deleted: `"op":"d"`,
//! `"after":null`, the same `updateDescription`, `"cdc":{…,"op":"u"}`.
//! Delete: `"op":"d"`, `"before":null`, `"after":null`, then a tombstone with key `{"id":"1"}`.
//! Snapshot read: `"op":"r"`, `"source":{…"snapshot":"true"…"ord":-1…}`, `"resumeToken":null`.
//! Drop: value empty, key `{"id":null,"ddl":{"type":"drop","db":"inventory","collection":
//! "products","to":null,"markers":4,"topics":{"cdc.inventory.products":4}},"source":{…},
//! "ts_ms":…,"cdc":{"v":1,"seq":9,"clusterTime":{"t":1700000100,"i":1},"resumeToken":"…"}}`.
//!
//! ## Decoding
//! [`decode`] accepts our envelopes in both modes, control events in both shapes, and plain
//! Debezium MongoDB events (also wrapped in Kafka Connect's `{"schema", "payload"}`), and returns
//! a [`DecodeError`] — never a panic — for malformed JSON, an unknown `op`, a newer envelope
//! version, a missing key or field, or a payload that is not extended JSON. Those records belong
//! on the dead-letter topic. A plain Debezium event has no `cdc` block: its document key is the
//! `_id` of its `after` (or `before`), exact, and only for a delete the `_id` read from the
//! record key, which is relaxed JSON (an Int64 that fits an Int32 reads back as Int32, also
//! inside a sub-document; MongoDB matches either). Its [`Position`] is
//! rebuilt from `source.ts_ms / 1000` and `source.ord` (0 for a snapshot read's -1) and marked
//! `exact: false`. That position is the wall clock, not the cluster time, and a snapshot read's
//! is its read time, which can be later than changes streamed after it: a sink must not order or
//! discard such events by it.
//!
//! ## Differences from Debezium 3.6.1, and why
//! - `before`/`after`/`updatedFields` text: ours is [`extjson::Style::Strict`] (canonical v2
//!   `$binary`/`$regularExpression`, `", "` separators, `Int64` typed in `updatedFields` too);
//!   Debezium writes the Java driver's legacy strict JSON in `before`/`after` and relaxed JSON in
//!   `updatedFields`, where an `Int64` becomes a plain number. Ours keeps every BSON type; the
//!   MongoDB Kafka Connector and sink-writer parse both.
//! - `source.version` is ours; `source.rs` (the replica set, which Debezium 1.x had) is kept for
//!   operators telling several sources apart; consumers ignore unknown fields.
//! - `source.ts_us`/`ts_ns` are `ts_ms` scaled (Debezium has micro/nanosecond read times for
//!   snapshot reads).
//! - `source.lsid` is the session's UUID (`lsid.id`); Debezium writes the whole lsid (`id` and
//!   `uid`, a hash of the user name) as legacy extended JSON. The UUID with `txnNumber` names the
//!   transaction, and no user-derived hash leaves the source.
//! - `transaction` is filled for changes made in a multi-document transaction (Debezium: null
//!   unless `provide.transaction.metadata=true`, then the same three fields), so consumers can
//!   group a transaction's changes.
//! - `cdc` is ours (exact position, resume token, exact document key, `resend`).
//! - Re-sent documents are shaped as Debezium's incremental snapshot reads, but requested through
//!   cdc-source's request topic rather than a signalling collection in the source (no source
//!   writes, so DocumentDB and read-only users work), and a document's own change during the read
//!   makes its copy moot rather than being buffered beside it.
//! - An update whose looked-up document is gone is a `d` (Debezium: `u` with `after` null).
//! - Control events are ours: Debezium emits nothing for a drop, rename or dropped database, nor
//!   for collection options and indexes. Watermarks are ours too.
//! - Flink mode is ours (objects instead of strings, `before` = key without pre-image,
//!   `source.table`).
//! - Keys are identical, with two caveats inherited from the JVM Debezium runs on: a string `_id`
//!   holding code points that JVM's Unicode tables do not know (we use Unicode 16; Java 17 has
//!   13) is escaped differently, and JDKs before 19 print a few doubles with one digit more than
//!   the shortest form we (and JDK 19+) write.
//!
//! # Layout
//! | file | owns |
//! |---|---|
//! | `event.rs` | the typed events cdc-source builds and sink-writer decodes |
//! | `wire.rs` | the JSON shapes on the wire (serde structs the encoder and decoder share) |
//! | `encode.rs` | events → record keys and values |
//! | `decode.rs` | record keys and values → events, a typed error for anything else |
//! | `error.rs` | why a record could not be decoded (permanent for that record) |
//! | `resend.rs` | re-send requests and their replies |
//! | `extjson/` | BSON ⇄ extended JSON text: the reference writer and reading (`Document` path), the raw-BSON fast paths held equal to them; its `mod.rs` has the map |

mod decode;
mod encode;
mod error;
mod event;
pub mod extjson;
pub mod resend;
mod wire;

pub use decode::{decode, decode_key, decode_raw, Payload};
pub use encode::{encode_change, encode_control, encode_key, encode_watermark, CONNECTOR_VERSION};
pub use error::DecodeError;
pub use event::{
    ChangeEvent, ClusterTime, ControlEvent, Ddl, Event, Mode, Namespace, Op, Position, ResumeToken, Snapshot,
    SourceInfo, Transaction, TruncatedArray, UpdateDescription, Watermark, ENVELOPE_VERSION,
};
