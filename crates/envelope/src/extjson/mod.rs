//! BSON ⇄ MongoDB Extended JSON text, written directly (no intermediate tree) and read back
//! exactly.
//!
//! | file | owns | look here for |
//! |---|---|---|
//! | `mod.rs` | [`Style`] and the public names | which style a field is written in |
//! | `write.rs` | `Document`/`Bson` → text, every type in every style: **the reference writer** | how a type is written; Java's doubles, dates and escapes for keys |
//! | `write_raw.rs` | BSON bytes → the same text without a tree (cdc-source's path); the check that bytes read all the way down | a document cdc-source read as bytes |
//! | `read.rs` | text → `Document`: **the reference reading** (JSON tree, legacy forms, the bson crate) and the one-pass reading held equal to it | what a text means; `ExtJsonError` |
//! | `read_raw.rs` | text → BSON bytes in one pass (sink-writer's path), declining uncommon forms to `read.rs` | how the sink reads a document |
//!
//! # Which is the reference
//! - **Writing**: the `Document` path (`write.rs`, [`document_to_string`], [`value_to_string`]).
//!   The raw-BSON fast path ([`raw_document_to_string`]) writes the same text for the same
//!   document in every style (`writing_from_bytes_equals_writing_from_the_tree`,
//!   `tests/roundtrip.rs`), and hands bytes that are not valid BSON and the rarer types to it.
//!   For exact documents the reference style is [`Style::Strict`], ours: neither canonical nor
//!   relaxed Extended JSON v2, but relaxed where relaxed is lossless and typed where it is not,
//!   so reading it back gives the identical BSON (`every_type_round_trips_in_strict`).
//! - **Reading**: [`document_from_json_text`] / [`value_from_json`] (`read.rs`): the text as
//!   JSON, the legacy forms rewritten, then the bson crate's conversion, which reads canonical
//!   and relaxed v2 alike. The one-pass [`document_from_str`] and the raw-BSON
//!   [`raw_document_from_str`] give the same BSON and refuse what it refuses
//!   (`one_pass_reading_equals_the_reference`, `tests/roundtrip.rs`, and the odd inputs in each
//!   file's tests).
//!
//! # Styles
//! - [`Style::Strict`]: our `before`/`after`/`updatedFields` rendering. Relaxed where
//!   relaxed is lossless, typed where it is not: `Int32` is a bare integer, `Int64` is
//!   `{"$numberLong": "…"}`, a finite `Double` always carries a `.` or an exponent, dates are
//!   `{"$date": <ms>}`. Reading it back gives the identical BSON (types and field order).
//! - [`Style::Relaxed`]: relaxed Extended JSON v2, for Flink mode: plain numbers and ISO dates
//!   that generic JSON consumers read, at the price of `Int32` vs `Int64` width.
//! - [`Style::Key`]: the key `id` exactly as Debezium 3.6 writes it, which is the MongoDB Java
//!   driver's relaxed JSON: `,` between fields and items (`": "` after names), Java's
//!   `Double.toString` (`1.0E21`), ISO dates with Java's trimmed fraction, upper-case binary
//!   subtypes, and `\uXXXX` escapes for every UTF-16 unit Java does not print as is (controls,
//!   format characters, marks, separators of lines and paragraphs, private use, unassigned
//!   code points, and both halves of a surrogate pair). Checked byte for byte against keys the
//!   real connector wrote (`tests/fixtures/debezium/keys.json`).
//!
//! Reading accepts canonical, relaxed and the legacy forms Debezium and older tools write
//! (`{"$binary": "…", "$type": "00"}`, `{"$regex": …, "$options": …}`, `{"$date": <ms>}`).

mod read;
mod read_raw;
mod write;
mod write_raw;

pub use read::{document_from_json_text, document_from_str, value_from_json, ExtJsonError};
pub use read_raw::raw_document_from_str;
pub use write::{document_to_string, value_to_string};
pub use write_raw::{check_raw_document, raw_document_to_string};

/// How numbers and dates are written; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Strict,
    Relaxed,
    Key,
}

impl Style {
    /// Between the fields of a document and the items of an array.
    fn separator(self) -> &'static str {
        match self {
            Style::Key => ",",
            Style::Strict | Style::Relaxed => ", ",
        }
    }
}
