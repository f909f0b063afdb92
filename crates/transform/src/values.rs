//! What `mask` and `hash` make of one value. Arrays are taken element by element (so their
//! length, and a truncation, stay as they were); null, undefined, MinKey and MaxKey stay as they
//! are.

use bson::spec::BinarySubtype;
use bson::{Binary, Bson, Decimal128, Document};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::HashOutput;

/// The text every masked string becomes.
pub const MASKED_TEXT: &str = "****";

/// A fixed value of the same BSON type: strings `"****"`, numbers 0 of their type, false, the
/// epoch, the zero ObjectId and Timestamp, empty binary of the same subtype (16 zero bytes for a
/// UUID), an empty document, an empty regular expression or code; arrays element by element.
pub fn mask(value: &Bson) -> Bson {
    match value {
        Bson::Array(items) => Bson::Array(items.iter().map(mask).collect()),
        Bson::String(_) => Bson::String(MASKED_TEXT.into()),
        Bson::Symbol(_) => Bson::Symbol(MASKED_TEXT.into()),
        Bson::Int32(_) => Bson::Int32(0),
        Bson::Int64(_) => Bson::Int64(0),
        Bson::Double(_) => Bson::Double(0.0),
        // 0E+0: biased exponent 6176 in the top bits.
        Bson::Decimal128(_) => {
            Bson::Decimal128(Decimal128::from_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0x30]))
        }
        Bson::Boolean(_) => Bson::Boolean(false),
        Bson::DateTime(_) => Bson::DateTime(bson::DateTime::from_millis(0)),
        Bson::Timestamp(_) => Bson::Timestamp(bson::Timestamp { time: 0, increment: 0 }),
        Bson::ObjectId(_) => Bson::ObjectId(bson::oid::ObjectId::from_bytes([0; 12])),
        Bson::Binary(b) => {
            let bytes = if matches!(b.subtype, BinarySubtype::Uuid | BinarySubtype::UuidOld) {
                vec![0; 16]
            } else {
                Vec::new()
            };
            Bson::Binary(Binary { subtype: b.subtype, bytes })
        }
        Bson::Document(_) => Bson::Document(Document::new()),
        Bson::RegularExpression(_) => {
            Bson::RegularExpression(bson::Regex { pattern: String::new(), options: String::new() })
        }
        Bson::JavaScriptCode(_) => Bson::JavaScriptCode(String::new()),
        Bson::JavaScriptCodeWithScope(_) => {
            Bson::JavaScriptCodeWithScope(bson::JavaScriptCodeWithScope { code: String::new(), scope: Document::new() })
        }
        Bson::DbPointer(_) => Bson::Null,
        Bson::Null | Bson::Undefined | Bson::MinKey | Bson::MaxKey => value.clone(),
    }
}

/// HMAC-SHA-256 keyed once, for every `hash` rule.
#[derive(Clone)]
pub struct Hasher {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hasher(***)")
    }
}

impl Hasher {
    pub fn new(key: &[u8]) -> Self {
        // HMAC takes a key of any length.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable_key());
        Self { mac }
    }

    /// The value's HMAC, written as `output` says; arrays element by element. The input is a
    /// string's UTF-8 bytes (so `openssl dgst -sha256 -hmac KEY` gives the same hash), else the
    /// BSON type byte followed by the value's BSON bytes (so 5 as Int32 and as Int64 differ).
    pub fn hash(&self, value: &Bson, output: HashOutput) -> Bson {
        match value {
            Bson::Array(items) => Bson::Array(items.iter().map(|item| self.hash(item, output)).collect()),
            Bson::Null | Bson::Undefined | Bson::MinKey | Bson::MaxKey => value.clone(),
            Bson::String(text) => self.write(text.as_bytes(), output),
            other => self.write(&typed_bytes(other), output),
        }
    }

    fn write(&self, input: &[u8], output: HashOutput) -> Bson {
        let mut mac = self.mac.clone();
        mac.update(input);
        let digest = mac.finalize().into_bytes();
        match output {
            HashOutput::String => Bson::String(digest.iter().map(|b| format!("{b:02x}")).collect()),
            HashOutput::Binary => Bson::Binary(Binary { subtype: BinarySubtype::Generic, bytes: digest.to_vec() }),
        }
    }
}

fn unreachable_key() -> Hmac<Sha256> {
    // `new_from_slice` refuses no key length for HMAC; keep a keyed MAC all the same.
    <Hmac<Sha256> as Mac>::new(&Default::default())
}

/// The type byte and the value's bytes as BSON writes them (read out of `{"": value}`).
fn typed_bytes(value: &Bson) -> Vec<u8> {
    let mut doc = Document::new();
    doc.insert("", value.clone());
    let bytes = bson::to_vec(&doc).unwrap_or_default();
    // length (4), type (1), empty name (1), value, document end (1).
    if bytes.len() < 7 {
        return bytes;
    }
    let mut out = vec![bytes[4]];
    out.extend_from_slice(&bytes[6..bytes.len() - 1]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, oid::ObjectId};

    #[test]
    fn masks_keep_the_type_and_array_lengths() {
        assert_eq!(mask(&Bson::String("a@b.c".into())), Bson::String("****".into()));
        assert_eq!(mask(&Bson::Int64(77)), Bson::Int64(0));
        assert_eq!(mask(&Bson::Double(1.5)), Bson::Double(0.0));
        assert_eq!(mask(&Bson::Document(doc! {"a": 1})), Bson::Document(doc! {}));
        assert_eq!(mask(&bson::bson!(["x", 3, null])), bson::bson!(["****", 0, null]));
        assert_eq!(mask(&Bson::ObjectId(ObjectId::new())), Bson::ObjectId(ObjectId::from_bytes([0; 12])));
        assert_eq!(mask(&Bson::Null), Bson::Null);
        let decimal = mask(&Bson::Decimal128("12.5".parse().expect("decimal")));
        assert_eq!(decimal.to_string(), "0", "{decimal:?}");
        let uuid = Bson::Binary(Binary { subtype: BinarySubtype::Uuid, bytes: vec![7; 16] });
        assert_eq!(mask(&uuid), Bson::Binary(Binary { subtype: BinarySubtype::Uuid, bytes: vec![0; 16] }));
    }

    #[test]
    fn hashes_are_hmac_sha256_deterministic_and_typed() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let hasher = Hasher::new(b"Jefe");
        assert_eq!(
            hasher.hash(&Bson::String("what do ya want for nothing?".into()), HashOutput::String),
            Bson::String("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843".into())
        );
        let a = hasher.hash(&Bson::String("a@b.c".into()), HashOutput::Binary);
        assert_eq!(a, hasher.hash(&Bson::String("a@b.c".into()), HashOutput::Binary));
        assert!(matches!(&a, Bson::Binary(b) if b.bytes.len() == 32));
        assert_ne!(hasher.hash(&Bson::Int32(5), HashOutput::String), hasher.hash(&Bson::Int64(5), HashOutput::String));
        assert_ne!(
            Hasher::new(b"other").hash(&Bson::Int32(5), HashOutput::String),
            hasher.hash(&Bson::Int32(5), HashOutput::String)
        );
        let hashed = hasher.hash(&bson::bson!(["x", null]), HashOutput::String);
        assert!(matches!(&hashed, Bson::Array(items) if items.len() == 2 && items[1] == Bson::Null));
        assert_eq!(typed_bytes(&Bson::Int32(1)), vec![0x10, 1, 0, 0, 0]);
    }
}
