//! Reading extended JSON straight into BSON bytes ([`RawDocumentBuf`]), for a reader that only
//! passes documents on to the server (sink-writer): no `Document` tree, no allocation per field.
//!
//! The common shapes are read here: plain values, arrays, documents, and the wrappers `$oid`,
//! `$numberLong`, `$numberInt` and `$date` (milliseconds, or `$numberLong`). Anything else — other
//! or malformed wrappers, field names that merely start with `$`, a name holding NUL, a name
//! twice in one document — is left to the tree reading ([`document_from_str`]), whose document
//! is then encoded. Same input, same BSON bytes, same refusals: a property test holds them equal.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use bson::oid::ObjectId;
use bson::RawDocumentBuf;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::read::{document_from_str, ExtJsonError};

const DOUBLE: u8 = 0x01;
const STRING: u8 = 0x02;
const DOCUMENT: u8 = 0x03;
const ARRAY: u8 = 0x04;
const OBJECT_ID: u8 = 0x07;
const BOOLEAN: u8 = 0x08;
const DATE_TIME: u8 = 0x09;
const NULL: u8 = 0x0A;
const INT32: u8 = 0x10;
const INT64: u8 = 0x12;

/// A document from extended JSON text, as BSON bytes (see the module documentation).
pub fn raw_document_from_str(text: &str) -> Result<RawDocumentBuf, ExtJsonError> {
    if let Some(raw) = fast(text) {
        return Ok(raw);
    }
    let doc = document_from_str(text)?;
    RawDocumentBuf::from_document(&doc).map_err(|e| ExtJsonError(e.to_string()))
}

/// The fast path's reading, `None` where it declines.
fn fast(text: &str) -> Option<RawDocumentBuf> {
    let mut out = Vec::with_capacity(text.len() + 16);
    let mut de = serde_json::Deserializer::from_str(text);
    let kind = ValueSeed(&mut out).deserialize(&mut de).and_then(|kind| de.end().map(|()| kind)).ok()?;
    (kind == DOCUMENT).then(|| RawDocumentBuf::from_bytes(out).ok()).flatten()
}

/// The fast path declines: the tree reading takes over.
fn decline<E: de::Error>(why: &str) -> E {
    E::custom(why)
}

/// Writes one value's bytes and returns its BSON element type (the caller wrote the type
/// byte's place and the name before it).
struct ValueSeed<'a>(&'a mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = u8;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<u8, D::Error> {
        deserializer.deserialize_any(ValueVisitor(self.0))
    }
}

struct ValueVisitor<'a>(&'a mut Vec<u8>);

impl<'de> Visitor<'de> for ValueVisitor<'_> {
    type Value = u8;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("extended JSON")
    }

    fn visit_bool<E>(self, v: bool) -> Result<u8, E> {
        self.0.push(u8::from(v));
        Ok(BOOLEAN)
    }

    /// As the tree reading: an integer within Int32 is one, else Int64.
    fn visit_i64<E>(self, v: i64) -> Result<u8, E> {
        match i32::try_from(v) {
            Ok(small) => {
                self.0.extend_from_slice(&small.to_le_bytes());
                Ok(INT32)
            }
            Err(_) => {
                self.0.extend_from_slice(&v.to_le_bytes());
                Ok(INT64)
            }
        }
    }

    /// Beyond Int64, a double.
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u8, E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) => self.visit_f64(v as f64),
        }
    }

    fn visit_f64<E>(self, v: f64) -> Result<u8, E> {
        self.0.extend_from_slice(&v.to_le_bytes());
        Ok(DOUBLE)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u8, E> {
        let len = i32::try_from(v.len() + 1).map_err(|_| decline::<E>("string too long"))?;
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(v.as_bytes());
        self.0.push(0);
        Ok(STRING)
    }

    fn visit_unit<E>(self) -> Result<u8, E> {
        Ok(NULL)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u8, A::Error> {
        let out = self.0;
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        let mut index = 0usize;
        loop {
            let element = out.len();
            out.push(0);
            push_index(out, index);
            match seq.next_element_seed(ValueSeed(out))? {
                Some(kind) => out[element] = kind,
                None => {
                    out.truncate(element);
                    break;
                }
            }
            index += 1;
        }
        close(out, start)?;
        Ok(ARRAY)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u8, A::Error> {
        let out = self.0;
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        let mut names = Names::default();
        loop {
            let element = out.len();
            out.push(0);
            let Some(dollar) = map.next_key_seed(NameSeed(out))? else {
                out.truncate(element);
                break;
            };
            let name = &out[element + 1..out.len() - 1];
            if dollar {
                // Only a document's sole key can be a type wrapper.
                if !names.is_empty() {
                    return Err(decline("a '$' name among others"));
                }
                let wrapper = Wrapper::named(name).ok_or_else(|| decline("not a wrapper read here"))?;
                out.truncate(start);
                let kind = wrapper.read(&mut map, out)?;
                if map.next_key::<IgnoredAny>()?.is_some() {
                    return Err(decline("a wrapper with more keys"));
                }
                return Ok(kind);
            }
            if !names.insert(name) {
                return Err(decline("a name twice"));
            }
            out[element] = map.next_value_seed(ValueSeed(out))?;
        }
        close(out, start)?;
        Ok(DOCUMENT)
    }
}

/// Ends a document or array begun at `start`: its terminator and length.
fn close<E: de::Error>(out: &mut Vec<u8>, start: usize) -> Result<(), E> {
    out.push(0);
    let len = i32::try_from(out.len() - start).map_err(|_| decline::<E>("document too large"))?;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// An array index as an element name.
fn push_index(out: &mut Vec<u8>, index: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = index;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.push(0);
}

/// The names of one document so far, to find one given twice (which a `Document` would keep
/// once): hashes, compared in a list while few, then in a set.
#[derive(Default)]
struct Names {
    list: Vec<u64>,
    set: Option<HashSet<u64>>,
}

impl Names {
    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// False when the name (or another with its hash: then the tree reading decides) was seen.
    fn insert(&mut self, name: &[u8]) -> bool {
        // FNV-1a.
        let hash =
            name.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
        if let Some(set) = &mut self.set {
            return set.insert(hash);
        }
        if self.list.contains(&hash) {
            return false;
        }
        self.list.push(hash);
        if self.list.len() > 32 {
            self.set = Some(self.list.iter().copied().collect());
        }
        true
    }
}

/// Writes a field name (a BSON C string) and says whether it starts with `$`.
struct NameSeed<'a>(&'a mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for NameSeed<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NameSeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        if v.as_bytes().contains(&0) {
            return Err(decline("NUL in a name"));
        }
        self.0.extend_from_slice(v.as_bytes());
        self.0.push(0);
        Ok(v.starts_with('$'))
    }
}

/// The type wrappers read here.
#[derive(Clone, Copy)]
enum Wrapper {
    Oid,
    Long,
    Int,
    Date,
}

impl Wrapper {
    fn named(name: &[u8]) -> Option<Self> {
        match name {
            b"$oid" => Some(Self::Oid),
            b"$numberLong" => Some(Self::Long),
            b"$numberInt" => Some(Self::Int),
            b"$date" => Some(Self::Date),
            _ => None,
        }
    }

    /// Reads the wrapper's value and writes the BSON value it stands for.
    fn read<'de, A: MapAccess<'de>>(self, map: &mut A, out: &mut Vec<u8>) -> Result<u8, A::Error> {
        match self {
            Self::Oid => {
                let text = map.next_value::<Text>()?.0;
                let oid = ObjectId::parse_str(text.as_ref()).map_err(|_| decline::<A::Error>("an invalid $oid"))?;
                out.extend_from_slice(&oid.bytes());
                Ok(OBJECT_ID)
            }
            Self::Long => {
                let v: i64 = parse(&map.next_value::<Text>()?.0)?;
                out.extend_from_slice(&v.to_le_bytes());
                Ok(INT64)
            }
            Self::Int => {
                let v: i32 = parse(&map.next_value::<Text>()?.0)?;
                out.extend_from_slice(&v.to_le_bytes());
                Ok(INT32)
            }
            Self::Date => {
                let ms = map.next_value_seed(Millis)?;
                out.extend_from_slice(&ms.to_le_bytes());
                Ok(DATE_TIME)
            }
        }
    }
}

fn parse<T: std::str::FromStr, E: de::Error>(text: &str) -> Result<T, E> {
    text.parse().map_err(|_| decline("an invalid number"))
}

/// A JSON string, borrowed from the text when it has no escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// A `$date` value: milliseconds as a JSON integer, or `{"$numberLong": "…"}`.
struct Millis;

impl<'de> DeserializeSeed<'de> for Millis {
    type Value = i64;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<i64, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Millis {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("milliseconds")
    }

    fn visit_i64<E>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| decline("a date beyond Int64"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<i64, A::Error> {
        let key = map.next_key::<Text>()?.ok_or_else(|| decline::<A::Error>("an empty $date"))?;
        if key.0 != "$numberLong" {
            return Err(decline("a $date read elsewhere"));
        }
        let ms = parse(&map.next_value::<Text>()?.0)?;
        if map.next_key::<IgnoredAny>()?.is_some() {
            return Err(decline("a $date with more keys"));
        }
        Ok(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::super::read::document_from_json_text;
    use super::*;

    /// The reference: the tree reading, encoded.
    fn reference(text: &str) -> Result<Vec<u8>, ExtJsonError> {
        document_from_json_text(text).and_then(|d| bson::to_vec(&d).map_err(|e| ExtJsonError(e.to_string())))
    }

    #[test]
    fn texts_the_fast_path_reads_or_declines_give_the_reference_bytes() {
        let many: String = (0..40).map(|i| format!("\"f{i}\": {i}, ")).collect();
        let texts = [
            r#"{"a": 1, "b": -2147483649, "c": 2147483648, "d": 18446744073709551615, "e": 1.5, "f": -0.0}"#,
            r#"{"s": "x\"y\u0000z é", "t": true, "n": null, "arr": [1, [2, []], {"k": {}}], "e": {}}"#,
            r#"{"_id": {"$oid": "5f0c1a2b3c4d5e6f70819203"}, "l": {"$numberLong": "-7"}, "i": {"$numberInt": "3"}}"#,
            r#"{"d1": {"$date": 1700000000123}, "d2": {"$date": {"$numberLong": "-5"}}, "d3": {"$date": "2023-11-14T22:13:20.123Z"}}"#,
            r#"{"a": 1, "a": 2, "b": 3}"#,
            r#"{"a\u0000b": 1}"#,
            r#"{"x": {"$oid": "5f0c1a2b3c4d5e6f70819203", "y": 1}}"#,
            r#"{"x": {"y": 1, "$oid": "5f0c1a2b3c4d5e6f70819203"}}"#,
            r#"{"x": {"$set": 1}, "$y": 2}"#,
            r#"{"x": {"$numberLong": 5}}"#,
            r#"{"x": {"$numberDecimal": "1.5"}, "b": {"$binary": {"base64": "AQID", "subType": "00"}}}"#,
            r#"{"$oid": "5f0c1a2b3c4d5e6f70819203"}"#,
            r#"[1, 2]"#,
            r#"{"a": 1} trailing"#,
            r#"{"a": 1"#,
        ];
        // The common shapes take the fast path.
        for text in &texts[..4] {
            assert_eq!(fast(text).is_some(), !text.contains("d3"), "{text}");
        }
        let dup = format!("{{{many}\"f7\": \"again\"}}");
        let wide = format!("{{{many}\"last\": 1}}");
        assert!(fast(&dup).is_none() && fast(&wide).is_some());
        for text in texts.iter().copied().chain([dup.as_str(), wide.as_str()]) {
            let raw = raw_document_from_str(text).map(|d| d.as_bytes().to_vec());
            match (&raw, reference(text)) {
                (Ok(a), Ok(b)) => assert_eq!(a, &b, "{text}"),
                (Err(_), Err(_)) => {}
                (raw, reference) => panic!("{text}: raw {raw:?}, reference {reference:?}"),
            }
        }
    }
}
