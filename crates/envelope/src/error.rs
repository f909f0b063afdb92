//! Why a record could not be decoded. Every variant is permanent for that record: the sink
//! sends it to the dead-letter topic and moves on.

use crate::event::ENVELOPE_VERSION;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{part} is not valid JSON: {reason}")]
    Json { part: &'static str, reason: String },
    #[error("record has neither key nor value")]
    Empty,
    #[error("record has no key (the document id is needed to apply it)")]
    MissingKey,
    #[error("key is not a Debezium MongoDB key ({{\"id\": \"<extended JSON>\"}}): {0}")]
    InvalidKey(String),
    #[error("unknown op '{0}' (expected c, u, d or r)")]
    UnknownOp(String),
    #[error("envelope version {found} is newer than this sink understands ({ENVELOPE_VERSION}): upgrade sink-writer")]
    UnsupportedVersion { found: u32 },
    #[error("field `{0}` is missing")]
    MissingField(&'static str),
    #[error("field `{field}` does not hold a document in extended JSON: {reason}")]
    ExtJson { field: &'static str, reason: String },
    #[error("unknown DDL type '{0}' (expected drop, rename or dropDatabase)")]
    UnknownDdl(String),
}
