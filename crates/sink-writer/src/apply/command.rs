//! BSON of write commands assembled from parts already encoded, each part copied once into an
//! allocation of the exact final size. Building them with `RawDocumentBuf::append` copied every
//! statement two more times into buffers grown by doubling (up to twice the command's size
//! each), which put a 64 KiB-document backlog's peak memory at ~1.6× the memory budget.

use bson::{Bson, Document, RawDocumentBuf};

const DOCUMENT: u8 = 0x03;
const ARRAY: u8 = 0x04;
const STRING: u8 = 0x02;
const BOOLEAN: u8 = 0x08;
const INT32: u8 = 0x10;

/// A BSON document being written: elements appended in order, nested documents opened and
/// closed (their lengths filled in when closed).
pub struct Builder {
    bytes: Vec<u8>,
    open: Vec<usize>,
}

impl Builder {
    /// A document of at most `capacity` bytes (more only reallocates).
    pub fn with_capacity(capacity: usize) -> Self {
        let mut bytes = Vec::with_capacity(capacity.max(5));
        bytes.extend_from_slice(&[0; 4]);
        Self { bytes, open: vec![0] }
    }

    fn key(&mut self, kind: u8, key: &str) {
        self.bytes.push(kind);
        self.bytes.extend_from_slice(key.as_bytes());
        self.bytes.push(0);
    }

    /// Opens an embedded document (`array` false) or array under `key`.
    pub fn open(&mut self, key: &str, array: bool) {
        self.key(if array { ARRAY } else { DOCUMENT }, key);
        self.open.push(self.bytes.len());
        self.bytes.extend_from_slice(&[0; 4]);
    }

    /// Closes the innermost open document.
    pub fn close(&mut self) {
        self.bytes.push(0);
        let start = self.open.pop().unwrap_or(0);
        let len = i32::try_from(self.bytes.len() - start).unwrap_or(i32::MAX);
        self.bytes[start..start + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// An encoded document under `key`.
    pub fn document(&mut self, key: &str, encoded: &[u8]) {
        self.key(DOCUMENT, key);
        self.bytes.extend_from_slice(encoded);
    }

    /// An encoded array (a document keyed "0", "1", …) under `key`.
    pub fn array(&mut self, key: &str, encoded: &[u8]) {
        self.key(ARRAY, key);
        self.bytes.extend_from_slice(encoded);
    }

    pub fn string(&mut self, key: &str, value: &str) {
        self.key(STRING, key);
        let len = i32::try_from(value.len() + 1).unwrap_or(i32::MAX);
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(value.as_bytes());
        self.bytes.push(0);
    }

    pub fn boolean(&mut self, key: &str, value: bool) {
        self.key(BOOLEAN, key);
        self.bytes.push(u8::from(value));
    }

    pub fn int32(&mut self, key: &str, value: i32) {
        self.key(INT32, key);
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    /// Closes the document (and anything still open in it).
    pub fn finish(mut self) -> Result<RawDocumentBuf, String> {
        while !self.open.is_empty() {
            self.close();
        }
        RawDocumentBuf::from_bytes(self.bytes).map_err(|e| format!("assembled BSON is invalid: {e}"))
    }
}

/// `doc` as BSON.
pub fn encode(doc: &Document) -> Result<Vec<u8>, String> {
    bson::to_vec(doc).map_err(|e| format!("cannot encode the write as BSON: {e}"))
}

/// An update as BSON, and whether it is a pipeline (an array).
pub fn encode_update(update: &Bson) -> Result<(Vec<u8>, bool), String> {
    match update {
        Bson::Document(doc) => Ok((encode(doc)?, false)),
        Bson::Array(stages) => {
            let keyed: Document = stages.iter().enumerate().map(|(i, stage)| (i.to_string(), stage.clone())).collect();
            Ok((encode(&keyed)?, true))
        }
        other => Err(format!("an update must be a document or a pipeline, not {:?}", other.element_type())),
    }
}

/// Bytes an element adds besides its value: the type byte, the key and its terminator.
pub fn element_overhead(key: &str) -> usize {
    key.len() + 2
}

/// A write command (`insert`/`update`/`delete`) over `statements`, in their order:
/// `{<name>: <collection>, <list>: [statements…], ordered: false, writeConcern: …}` (no write
/// concern inside a transaction: its commit has it).
pub fn write_command<'a>(
    name: &str,
    collection: &str,
    list: &str,
    statements: impl ExactSizeIterator<Item = &'a RawDocumentBuf> + Clone,
    write_concern: Option<&RawDocumentBuf>,
) -> Result<RawDocumentBuf, String> {
    let mut keys = Keys::default();
    let statement_bytes: usize =
        statements.clone().enumerate().map(|(i, s)| element_overhead(keys.get(i)) + s.as_bytes().len()).sum();
    let capacity = 4
        + element_overhead(name)
        + 5
        + collection.len()
        + element_overhead(list)
        + 5
        + statement_bytes
        + element_overhead("ordered")
        + 1
        + element_overhead("writeConcern")
        + write_concern.map_or(0, |w| w.as_bytes().len())
        + 1;
    let mut command = Builder::with_capacity(capacity);
    command.string(name, collection);
    command.open(list, true);
    for (i, statement) in statements.enumerate() {
        command.document(keys.get(i), statement.as_bytes());
    }
    command.close();
    command.boolean("ordered", false);
    if let Some(write_concern) = write_concern {
        command.document("writeConcern", write_concern.as_bytes());
    }
    command.finish()
}

/// Array keys ("0", "1", …) without an allocation per key.
#[derive(Default)]
struct Keys {
    buffer: String,
}

impl Keys {
    fn get(&mut self, i: usize) -> &str {
        use std::fmt::Write;
        self.buffer.clear();
        let _ = write!(self.buffer, "{i}");
        &self.buffer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, rawdoc};

    #[test]
    fn a_command_is_the_bson_the_driver_would_build_and_no_larger_than_its_capacity() {
        let statements = [
            rawdoc! {"q": {"_id": 1}, "u": {"_id": 1, "s": "x".repeat(300)}, "upsert": true},
            rawdoc! {"q": {"_id": 2}, "u": {"_id": 2, "n": [1, 2.5, {"d": null}]}, "upsert": true},
        ];
        let concern = rawdoc! {"w": "majority", "j": true};
        let built = write_command("update", "coll", "updates", statements.iter(), Some(&concern)).expect("command");
        let expected = doc! {
            "update": "coll",
            "updates": [
                {"q": {"_id": 1}, "u": {"_id": 1, "s": "x".repeat(300)}, "upsert": true},
                {"q": {"_id": 2}, "u": {"_id": 2, "n": [1, 2.5, {"d": null}]}, "upsert": true},
            ],
            "ordered": false,
            "writeConcern": {"w": "majority", "j": true},
        };
        assert_eq!(built.as_bytes(), bson::to_vec(&expected).expect("bson").as_slice());
        let bytes = built.into_bytes();
        assert_eq!(bytes.capacity(), bytes.len(), "one allocation of the exact size");
    }

    #[test]
    fn nested_documents_close_with_their_lengths() {
        let mut b = Builder::with_capacity(0);
        b.open("u", true);
        b.open("0", false);
        b.open("$replaceWith", false);
        b.document("$literal", &encode(&doc! {"$price": 5}).expect("bson"));
        b.close();
        b.close();
        b.close();
        b.int32("limit", 1);
        let built = b.finish().expect("valid");
        let expected = doc! {"u": [{"$replaceWith": {"$literal": {"$price": 5}}}], "limit": 1};
        assert_eq!(built.as_bytes(), bson::to_vec(&expected).expect("bson").as_slice());
    }
}
