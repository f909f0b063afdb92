//! BSON bytes (`RawDocument`) → extended JSON text without building the tree: cdc-source's
//! path, which keeps every document it reads as bytes. The common types are written here with
//! the reference writer's helpers, the rarer ones through their tree form; bytes that are not
//! valid BSON are read into a tree and written by the reference. Same document, same text in
//! every style: the property test `writing_from_bytes_equals_writing_from_the_tree`
//! (`tests/roundtrip.rs`) holds them equal.

use std::fmt::Write as _;

use bson::{Bson, Document, RawBsonRef, RawDocument};

use super::write::{
    write_date_time, write_document, write_double_styled, write_int64, write_object_id, write_str_styled, write_value,
};
use super::Style;

/// Extended JSON text of a whole document held as BSON bytes: the same text as
/// [`document_to_string`](super::document_to_string) of the same document, written without building its tree (a
/// property test holds them equal). Bytes that are not valid BSON are read through the tree.
pub fn raw_document_to_string(doc: &RawDocument, style: Style) -> String {
    let mut out = String::with_capacity(doc.as_bytes().len() + doc.as_bytes().len() / 4 + 16);
    if write_raw_document(&mut out, doc, style).is_err() {
        out.clear();
        write_document(&mut out, &Document::try_from(doc).unwrap_or_default(), style);
    }
    out
}

/// Checks that BSON bytes read as a document all the way down: every element, and every name
/// and string valid UTF-8 (the server stores what a client sends without checking; the bson
/// crate, and so every reader of our events, refuses such text). A reader of raw documents
/// checks them before [`raw_document_to_string`], which has nothing exact to write for them.
pub fn check_raw_document(doc: &RawDocument) -> Result<(), String> {
    for element in doc {
        let (_, value) = element.map_err(|e| e.to_string())?;
        check_raw_value(value)?;
    }
    Ok(())
}

fn check_raw_value(value: RawBsonRef<'_>) -> Result<(), String> {
    match value {
        RawBsonRef::Document(doc) => check_raw_document(doc),
        RawBsonRef::Array(items) => {
            for item in items {
                check_raw_value(item.map_err(|e| e.to_string())?)?;
            }
            Ok(())
        }
        RawBsonRef::JavaScriptCodeWithScope(code) => check_raw_document(code.scope),
        _ => Ok(()),
    }
}

/// Bytes that are not valid BSON: the tree reading decides.
struct Malformed;

fn write_raw_document(out: &mut String, doc: &RawDocument, style: Style) -> Result<(), Malformed> {
    out.push('{');
    for (i, element) in doc.iter().enumerate() {
        let (key, value) = element.map_err(|_| Malformed)?;
        if i > 0 {
            out.push_str(style.separator());
        }
        write_str_styled(out, key, style);
        out.push_str(": ");
        write_raw_value(out, value, style)?;
    }
    out.push('}');
    Ok(())
}

fn write_raw_value(out: &mut String, value: RawBsonRef<'_>, style: Style) -> Result<(), Malformed> {
    match value {
        RawBsonRef::Double(v) => write_double_styled(out, v, style),
        RawBsonRef::String(s) => write_str_styled(out, s, style),
        RawBsonRef::Document(d) => write_raw_document(out, d, style)?,
        RawBsonRef::Array(items) => {
            out.push('[');
            for (i, item) in items.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(style.separator());
                }
                write_raw_value(out, item.map_err(|_| Malformed)?, style)?;
            }
            out.push(']');
        }
        RawBsonRef::Boolean(b) => out.push_str(if b { "true" } else { "false" }),
        RawBsonRef::Null => out.push_str("null"),
        RawBsonRef::Int32(v) => {
            let _ = write!(out, "{v}");
        }
        RawBsonRef::Int64(v) => write_int64(out, v, style),
        RawBsonRef::DateTime(dt) => write_date_time(out, dt, style),
        RawBsonRef::ObjectId(oid) => write_object_id(out, &oid),
        // The rarer types through their tree form: one writer for them.
        other => write_value(out, &Bson::try_from(other.to_raw_bson()).map_err(|_| Malformed)?, style),
    }
    Ok(())
}
