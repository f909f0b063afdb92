//! Kafka record (key, value) → [`Event`], with a typed error for anything else.

use bson::{Bson, Document, RawDocumentBuf};
use serde_json::value::RawValue;

use crate::error::DecodeError;
use crate::event::{
    ChangeEvent, ClusterTime, ControlEvent, Ddl, Event, Namespace, Op, Position, ResumeToken, Snapshot, SourceInfo,
    Transaction, TruncatedArray, UpdateDescription, Watermark, ENVELOPE_VERSION,
};
use crate::extjson::{
    document_from_str, document_to_string, raw_document_from_str, raw_document_to_string, value_from_json,
    ExtJsonError, Style,
};
use crate::wire::{CdcWire, ControlIn, KeyWire, SourceWire, ValueIn, WatermarkIn};

/// Decodes one record. Reads our envelopes in both modes, control events in their key (now)
/// or value (before), and plain Debezium MongoDB events (with or without Kafka Connect's schema
/// wrapper); those lack the `cdc` block, so their position is approximate, rebuilt from
/// `source.ts_ms`/`source.ord` ([`Position::exact`] false).
pub fn decode(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Event, DecodeError> {
    decode_as(key, value)
}

/// [`decode`] with `before`/`after` read straight into BSON bytes, for a reader that passes the
/// documents on unchanged (no `Document` tree is built for them).
pub fn decode_raw(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Event<RawDocumentBuf>, DecodeError> {
    decode_as(key, value)
}

/// The form a change event's `before`/`after` documents take: a `Document` tree, or BSON bytes
/// for a reader or writer that only passes them on.
pub trait Payload: Sized {
    fn from_ext_json(text: &str) -> Result<Self, ExtJsonError>;
    fn to_ext_json(&self, style: Style) -> String;
    /// The document's `_id`.
    fn id(&self) -> Option<Bson>;
}

impl Payload for Document {
    fn from_ext_json(text: &str) -> Result<Self, ExtJsonError> {
        document_from_str(text)
    }

    fn to_ext_json(&self, style: Style) -> String {
        document_to_string(self, style)
    }

    fn id(&self) -> Option<Bson> {
        self.get("_id").cloned()
    }
}

impl Payload for RawDocumentBuf {
    fn from_ext_json(text: &str) -> Result<Self, ExtJsonError> {
        raw_document_from_str(text)
    }

    fn to_ext_json(&self, style: Style) -> String {
        raw_document_to_string(self, style)
    }

    fn id(&self) -> Option<Bson> {
        let id = self.get("_id").ok()??;
        Bson::try_from(id.to_raw_bson()).ok()
    }
}

fn decode_as<D: Payload>(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Event<D>, DecodeError> {
    let key = key.filter(|k| !k.is_empty());
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        let key = key.ok_or(DecodeError::Empty)?;
        match event_in_key(key)? {
            Some(InKey::Control(control)) => return control_event(*control),
            Some(InKey::Watermark(watermark)) => return watermark_event(*watermark),
            None => {}
        }
        return Ok(Event::Tombstone { id: decode_key(key)? });
    };
    let mut parsed: ValueIn = serde_json::from_slice(value).map_err(|e| json_error("value", e))?;
    if let Some(payload) = parsed.payload.take() {
        parsed = serde_json::from_str(payload.get()).map_err(|e| json_error("value payload", e))?;
    }
    if let Some(ddl) = parsed.ddl.take() {
        return control_event(ControlIn { ddl, source: parsed.source, ts_ms: parsed.ts_ms, cdc: parsed.cdc });
    }

    check_version(parsed.cdc.as_ref())?;
    let source = parsed.source.take().ok_or(DecodeError::MissingField("source"))?;
    let position = position(&source, parsed.cdc.as_ref())?;
    let ts_ms = parsed.ts_ms.unwrap_or_default();

    // `cdc.op` is the change's own operation where the Debezium `op` differs (see encode_change).
    let code = match parsed.cdc.as_mut().and_then(|c| c.op.take()) {
        Some(own) => own,
        None => parsed.op.take().ok_or(DecodeError::MissingField("op"))?,
    };
    let op = Op::from_code(&code).ok_or_else(|| DecodeError::UnknownOp(code.to_string()))?;
    let ns = Namespace::new(
        source.db.as_deref().ok_or(DecodeError::MissingField("source.db"))?,
        source.collection.as_deref().ok_or(DecodeError::MissingField("source.collection"))?,
    );
    let before = payload(parsed.before, "before")?;
    let after = payload(parsed.after, "after")?;
    let document_key = match parsed.cdc.as_ref().and_then(|c| c.document_key.as_deref()) {
        Some(text) => document_from_str(text).map_err(|e| ext_error("cdc.documentKey", e))?,
        None => {
            // A Debezium key is relaxed JSON (an Int64 `_id` reads back as Int32): the
            // document's own `_id`, when the event has the document, is the exact one.
            let key = key.ok_or(DecodeError::MissingKey)?;
            let from_key = decode_key(key)?;
            let exact = after.as_ref().or(before.as_ref()).and_then(Payload::id);
            let mut doc = Document::new();
            doc.insert("_id", exact.unwrap_or(from_key));
            doc
        }
    };
    let update_description = match parsed.update_description.take() {
        None => None,
        Some(ud) => Some(UpdateDescription {
            updated_fields: payload::<Document>(ud.updated_fields.as_deref(), "updateDescription.updatedFields")?
                .unwrap_or_default(),
            removed_fields: ud.removed_fields.unwrap_or_default(),
            truncated_arrays: ud
                .truncated_arrays
                .unwrap_or_default()
                .into_iter()
                .map(|t| TruncatedArray { field: t.field, size: t.size })
                .collect(),
        }),
    };
    Ok(Event::Change(Box::new(ChangeEvent {
        op,
        ns,
        document_key,
        before,
        after,
        update_description,
        source: source_info(&source),
        transaction: parsed.transaction.take().map(|t| Transaction {
            id: t.id,
            total_order: t.total_order,
            data_collection_order: t.data_collection_order,
        }),
        position,
        ts_ms,
        resend: parsed.cdc.as_ref().and_then(|c| c.resend.as_deref()).map(str::to_owned),
    })))
}

fn as_document(value: Bson, field: &'static str) -> Result<Document, DecodeError> {
    match value {
        Bson::Document(doc) => Ok(doc),
        _ => Err(DecodeError::MissingField(field)),
    }
}

fn as_array(value: Bson, field: &'static str) -> Result<Vec<Bson>, DecodeError> {
    match value {
        Bson::Array(items) => Ok(items),
        _ => Err(DecodeError::MissingField(field)),
    }
}

fn check_version(cdc: Option<&CdcWire>) -> Result<(), DecodeError> {
    let version = cdc.map_or(ENVELOPE_VERSION, |c| c.v);
    if version > ENVELOPE_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: version });
    }
    Ok(())
}

/// What a key may hold besides a document id.
enum InKey<'a> {
    Control(Box<ControlIn<'a>>),
    Watermark(Box<WatermarkIn<'a>>),
}

/// A key holding a control event (`ddl` an object) or a watermark, if this one does.
fn event_in_key(key: &[u8]) -> Result<Option<InKey<'_>>, DecodeError> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(key) else {
        return Ok(None);
    };
    let is_object = |field: &str| map.get(field).is_some_and(serde_json::Value::is_object);
    if is_object("ddl") {
        let control = serde_json::from_slice(key).map_err(|e| json_error("control key", e))?;
        return Ok(Some(InKey::Control(Box::new(control))));
    }
    if is_object("watermark") {
        let watermark = serde_json::from_slice(key).map_err(|e| json_error("watermark key", e))?;
        return Ok(Some(InKey::Watermark(Box::new(watermark))));
    }
    Ok(None)
}

fn watermark_event<D>(watermark: WatermarkIn) -> Result<Event<D>, DecodeError> {
    let source = watermark.source.ok_or(DecodeError::MissingField("source"))?;
    Ok(Event::Watermark(Box::new(Watermark {
        cluster_time: ClusterTime { t: watermark.watermark.t, i: watermark.watermark.i },
        source: source_info(&source),
        ts_ms: watermark.ts_ms.unwrap_or_default(),
    })))
}

fn control_event<D>(control: ControlIn) -> Result<Event<D>, DecodeError> {
    check_version(control.cdc.as_ref())?;
    let source = control.source.ok_or(DecodeError::MissingField("source"))?;
    let position = position(&source, control.cdc.as_ref())?;
    let ddl = control.ddl;
    let from = |coll: Option<String>| -> Result<Namespace, DecodeError> {
        Ok(Namespace::new(ddl.db.clone(), coll.ok_or(DecodeError::MissingField("ddl.collection"))?))
    };
    let kind = match ddl.kind.as_str() {
        "drop" => Ddl::Drop(from(ddl.collection.clone())?),
        "rename" => {
            let to = ddl.to.as_ref().ok_or(DecodeError::MissingField("ddl.to"))?;
            Ddl::Rename { from: from(ddl.collection.clone())?, to: Namespace::new(&to.db, &to.collection) }
        }
        "dropDatabase" => Ddl::DropDatabase { db: ddl.db.clone() },
        "create" | "createIndexes" | "dropIndexes" | "modify" => {
            let ns = from(ddl.collection.clone())?;
            let text = ddl.spec.as_deref().ok_or(DecodeError::MissingField("ddl.spec"))?;
            let spec = document_from_str(text).map_err(|e| ext_error("ddl.spec", e))?;
            let part = |field: &'static str| spec.get(field).cloned().ok_or(DecodeError::MissingField(field));
            match (ddl.kind.as_str(), part) {
                ("create", part) => Ddl::Create { ns, options: as_document(part("options")?, "ddl.spec.options")? },
                ("createIndexes", part) => Ddl::CreateIndexes {
                    ns,
                    indexes: as_array(part("indexes")?, "ddl.spec.indexes")?
                        .into_iter()
                        .map(|index| as_document(index, "ddl.spec.indexes"))
                        .collect::<Result<_, _>>()?,
                },
                ("dropIndexes", part) => Ddl::DropIndexes {
                    ns,
                    names: as_array(part("names")?, "ddl.spec.names")?
                        .into_iter()
                        .map(|name| match name {
                            Bson::String(name) => Ok(name),
                            _ => Err(DecodeError::MissingField("ddl.spec.names")),
                        })
                        .collect::<Result<_, _>>()?,
                },
                (_, part) => Ddl::Modify { ns, changes: as_document(part("changes")?, "ddl.spec.changes")? },
            }
        }
        other => return Err(DecodeError::UnknownDdl(other.to_string())),
    };
    Ok(Event::Control(Box::new(ControlEvent {
        ddl: kind,
        markers: ddl.markers.max(1),
        topics: ddl.topics,
        source: source_info(&source),
        position,
        ts_ms: control.ts_ms.unwrap_or_default(),
    })))
}

/// The `_id` a key names.
pub fn decode_key(key: &[u8]) -> Result<Bson, DecodeError> {
    let mut raw: serde_json::Value = serde_json::from_slice(key).map_err(|e| json_error("key", e))?;
    if let Some(payload) = raw.get_mut("payload").map(serde_json::Value::take) {
        raw = payload;
    }
    let parsed: KeyWire = serde_json::from_value(raw).map_err(|e| DecodeError::InvalidKey(e.to_string()))?;
    let text = parsed.id.ok_or(DecodeError::MissingKey)?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| DecodeError::InvalidKey(format!("id is not JSON: {e}")))?;
    value_from_json(json).map_err(|e| DecodeError::InvalidKey(e.0))
}

/// A `before`/`after`/`updatedFields` payload: null, a string of extended JSON, or an object.
fn payload<D: Payload>(raw: Option<&RawValue>, field: &'static str) -> Result<Option<D>, DecodeError> {
    let Some(raw) = raw else { return Ok(None) };
    let text = raw.get().trim_start();
    let doc = if text.starts_with('"') {
        let inner: String = serde_json::from_str(text).map_err(|e| ext_error(field, e))?;
        D::from_ext_json(&inner)
    } else if text.starts_with("null") {
        return Ok(None);
    } else {
        D::from_ext_json(text)
    };
    doc.map(Some).map_err(|e| ext_error(field, e))
}

fn position(source: &SourceWire, cdc: Option<&CdcWire>) -> Result<Position, DecodeError> {
    match cdc {
        Some(cdc) => Ok(Position {
            cluster_time: ClusterTime { t: cdc.cluster_time.t, i: cdc.cluster_time.i },
            resume_token: cdc.resume_token.as_deref().map(|text| ResumeToken::from_text(text.to_owned())),
            seq: cdc.seq,
            exact: true,
        }),
        // Plain Debezium: `ts_ms` is the wall time (a snapshot read's read time), `ord` the
        // increment (-1 for snapshot reads).
        None => Ok(Position {
            cluster_time: ClusterTime {
                t: u32::try_from(source.ts_ms.div_euclid(1000)).unwrap_or(0),
                i: u32::try_from(source.ord).unwrap_or(0),
            },
            resume_token: None,
            seq: 0,
            exact: false,
        }),
    }
}

fn source_info(source: &SourceWire) -> SourceInfo {
    SourceInfo {
        name: source.name.to_string(),
        rs: source.rs.as_deref().map(str::to_owned),
        snapshot: match source.snapshot.as_deref() {
            Some("last") => Snapshot::Last,
            Some("true") => Snapshot::True,
            Some("incremental") => Snapshot::Incremental,
            _ => Snapshot::False,
        },
        wall_time_ms: source.wall_time,
        lsid: source.lsid.as_deref().map(str::to_owned),
        txn_number: source.txn_number,
    }
}

fn json_error(part: &'static str, e: serde_json::Error) -> DecodeError {
    DecodeError::Json { part, reason: e.to_string() }
}

fn ext_error(field: &'static str, e: impl std::fmt::Display) -> DecodeError {
    DecodeError::ExtJson { field, reason: e.to_string() }
}
