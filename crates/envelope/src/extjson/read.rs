//! Extended JSON text → BSON tree (`Document`, `Bson`): the reference reading, and the one-pass
//! reading held equal to it.
//!
//! The reference ([`document_from_json_text`], [`value_from_json`]) parses the text as JSON
//! (`serde_json::Value`), rewrites the legacy `$binary`/`$type` and `$regex`/`$options` forms,
//! then lets the bson crate convert the tree, which takes canonical and relaxed Extended JSON v2
//! alike. Slower; it decides what a text means.
//!
//! [`document_from_str`] reads in one pass: numbers, strings, arrays and documents become BSON as
//! they are read, with no `serde_json::Value` tree in between (decoded events' documents, resume
//! tokens, and whatever the raw reading declines are read this way).
//!
//! Objects whose keys start with `$` keep the reference reading ([`value_from_json`]):
//! a type wrapper (`{"$oid": …}`) is read into JSON and the common canonical ones are converted
//! directly, anything else (legacy forms, field names that merely start with `$`, malformed
//! wrappers) goes through the reference; so does a document in which a `$` key follows plain
//! ones, rebuilt from what was read (canonical extended JSON is exact). Same input, same BSON,
//! same refusals: a property test holds the two readings equal.

use std::fmt;

use bson::{oid::ObjectId, Bson, DateTime, Decimal128, Document};
use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Reads a document from extended JSON text (any of the forms `extjson` lists), in one pass.
pub fn document_from_str(text: &str) -> Result<Document, ExtJsonError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = BsonSeed.deserialize(&mut de).map_err(|e| ExtJsonError(e.to_string()))?;
    de.end().map_err(|e| ExtJsonError(e.to_string()))?;
    into_document(value)
}

fn into_document(value: Bson) -> Result<Document, ExtJsonError> {
    match value {
        Bson::Document(doc) => Ok(doc),
        other => Err(ExtJsonError(format!("expected a document, found {:?}", other.element_type()))),
    }
}

struct BsonSeed;

impl<'de> DeserializeSeed<'de> for BsonSeed {
    type Value = Bson;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Bson, D::Error> {
        deserializer.deserialize_any(BsonVisitor)
    }
}

struct BsonVisitor;

impl<'de> Visitor<'de> for BsonVisitor {
    type Value = Bson;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("extended JSON")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Bson, E> {
        Ok(Bson::Boolean(v))
    }

    /// As the reference: an integer within Int32 is one, else Int64.
    fn visit_i64<E>(self, v: i64) -> Result<Bson, E> {
        Ok(i32::try_from(v).map_or(Bson::Int64(v), Bson::Int32))
    }

    /// Beyond Int64 the reference reads a double.
    fn visit_u64<E>(self, v: u64) -> Result<Bson, E> {
        Ok(i64::try_from(v).map_or(Bson::Double(v as f64), |v| i32::try_from(v).map_or(Bson::Int64(v), Bson::Int32)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Bson, E> {
        Ok(Bson::Double(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Bson, E> {
        Ok(Bson::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Bson, E> {
        Ok(Bson::String(v))
    }

    fn visit_unit<E>(self) -> Result<Bson, E> {
        Ok(Bson::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bson, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(BsonSeed)? {
            items.push(item);
        }
        Ok(Bson::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Bson, A::Error> {
        let Some(first) = map.next_key::<String>()? else { return Ok(Bson::Document(Document::new())) };
        if first.starts_with('$') {
            let mut object = Map::new();
            object.insert(first, map.next_value::<Value>()?);
            rest_as_json(&mut map, &mut object)?;
            return wrapper(&object)
                .map_or_else(|| value_from_json(Value::Object(object)), Ok)
                .map_err(A::Error::custom);
        }
        let mut doc = Document::new();
        doc.insert(first, map.next_value_seed(BsonSeed)?);
        while let Some(key) = map.next_key::<String>()? {
            if key.starts_with('$') {
                let mut object: Map<String, Value> =
                    doc.into_iter().map(|(k, v)| (k, v.into_canonical_extjson())).collect();
                object.insert(key, map.next_value::<Value>()?);
                rest_as_json(&mut map, &mut object)?;
                return value_from_json(Value::Object(object)).map_err(A::Error::custom);
            }
            doc.insert(key, map.next_value_seed(BsonSeed)?);
        }
        Ok(Bson::Document(doc))
    }
}

fn rest_as_json<'de, A: MapAccess<'de>>(map: &mut A, object: &mut Map<String, Value>) -> Result<(), A::Error> {
    while let Some(key) = map.next_key::<String>()? {
        let value = map.next_value::<Value>()?;
        object.insert(key, value);
    }
    Ok(())
}

/// The common canonical wrappers, read directly; `None` leaves the object to the reference
/// (which also words the refusal of a malformed one).
fn wrapper(object: &Map<String, Value>) -> Option<Bson> {
    if object.len() != 1 {
        return None;
    }
    let (key, value) = object.iter().next()?;
    let text = value.as_str();
    match key.as_str() {
        "$oid" => ObjectId::parse_str(text?).ok().map(Bson::ObjectId),
        "$numberLong" => text?.parse().ok().map(Bson::Int64),
        "$numberInt" => text?.parse().ok().map(Bson::Int32),
        "$numberDecimal" => text?.parse::<Decimal128>().ok().map(Bson::Decimal128),
        // What the strict style writes: milliseconds as a JSON integer.
        "$date" if value.is_i64() => value.as_i64().map(|ms| Bson::DateTime(DateTime::from_millis(ms))),
        "$date" => {
            let inner = value.as_object().filter(|o| o.len() == 1)?;
            let millis = inner.get("$numberLong")?.as_str()?.parse().ok()?;
            Some(Bson::DateTime(DateTime::from_millis(millis)))
        }
        _ => None,
    }
}

/// Why a text is not the extended JSON of a document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExtJsonError(pub String);

/// The reference reading of [`document_from_str`]: the text as JSON, then the bson crate's
/// conversion. Slower; the one-pass reading is held equal to it.
pub fn document_from_json_text(text: &str) -> Result<Document, ExtJsonError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| ExtJsonError(e.to_string()))?;
    into_document(value_from_json(value)?)
}

/// Reads one value from parsed JSON.
pub fn value_from_json(mut value: serde_json::Value) -> Result<Bson, ExtJsonError> {
    upgrade_legacy(&mut value)?;
    Bson::try_from(value).map_err(|e| ExtJsonError(e.to_string()))
}

/// Rewrites the legacy `$binary`/`$type` and `$regex`/`$options` forms into their v2 shapes,
/// which the bson crate reads.
fn upgrade_legacy(value: &mut serde_json::Value) -> Result<(), ExtJsonError> {
    match value {
        serde_json::Value::Array(items) => items.iter_mut().try_for_each(upgrade_legacy),
        serde_json::Value::Object(map) => {
            if map.len() == 2 && map.get("$binary").is_some_and(|v| v.is_string()) {
                let base64 = map.get("$binary").cloned().unwrap_or_default();
                let subtype = match map.get("$type") {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    _ => return Err(ExtJsonError("legacy $binary without a string $type".into())),
                };
                let subtype = format!("{:0>2}", subtype.to_ascii_lowercase());
                *value = serde_json::json!({"$binary": {"base64": base64, "subType": subtype}});
                return Ok(());
            }
            if map.contains_key("$regex") && map.get("$regex").is_some_and(|v| v.is_string()) {
                let pattern = map.get("$regex").cloned().unwrap_or_default();
                let options = map.get("$options").cloned().unwrap_or(serde_json::Value::String(String::new()));
                *value = serde_json::json!({"$regularExpression": {"pattern": pattern, "options": options}});
                return Ok(());
            }
            map.values_mut().try_for_each(upgrade_legacy)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::spec::BinarySubtype;
    use bson::{doc, Binary, Regex};

    /// The reference reading: JSON first, then the bson crate's conversion.
    fn reference(text: &str) -> Result<Vec<u8>, ExtJsonError> {
        document_from_json_text(text).map(|d| bson::to_vec(&d).expect("bson"))
    }

    #[test]
    fn odd_inputs_read_as_the_reference_reads_them() {
        let cases = [
            r#"{}"#,
            r#"{"a": 1, "b": -1, "c": 2147483648, "d": -2147483649, "e": 18446744073709551615, "f": -0, "g": -0.0}"#,
            r#"{"a": 1.0, "b": 1e21, "c": 5e-324, "d": null, "e": true, "f": "x\u0000y", "g": [1, [2, {}], []]}"#,
            r#"{"_id": {"$oid": "596e275826f08b2730779e1f"}, "n": {"$numberLong": "5"}, "i": {"$numberInt": "7"}}"#,
            r#"{"d": {"$date": {"$numberLong": "-5"}}, "r": {"$date": "2023-11-14T22:13:20.123Z"}, "l": {"$date": 5}}"#,
            r#"{"m": {"$numberDecimal": "1.50"}, "x": {"$numberDouble": "NaN"}, "y": {"$numberDouble": "-0.0"}}"#,
            r#"{"b": {"$binary": "AQID", "$type": "0"}, "r": {"$regex": "^x", "$options": "i"}}"#,
            r#"{"b": {"$binary": {"base64": "AQID", "subType": "80"}}, "u": {"$uuid": "00112233-4455-6677-8899-aabbccddeeff"}}"#,
            r#"{"t": {"$timestamp": {"t": 4294967295, "i": 1}}, "c": {"$code": "f", "$scope": {"a": {"$numberLong": "1"}}}}"#,
            r#"{"p": {"$dbPointer": {"$ref": "db.c", "$id": {"$oid": "596e275826f08b2730779e1f"}}}}"#,
            r#"{"k": {"$minKey": 1}, "K": {"$maxKey": 1}, "u": {"$undefined": true}, "s": {"$symbol": "s"}}"#,
            r#"{"ref": {"$ref": "c", "$id": 5, "$db": "d"}, "dollar": {"$price": 5, "plain": 1}}"#,
            r#"{"a": 1, "$price": 2, "b": {"c": 3}}"#,
            r#"{"a": 1, "$regex": "x"}"#,
            r#"{"a": 1, "$oid": "596e275826f08b2730779e1f"}"#,
            r#"{"a": {"$oid": "596e275826f08b2730779e1f", "b": 1}}"#,
            r#"{"a": {"$oid": "nothex"}}"#,
            r#"{"a": {"$numberLong": 5}}"#,
            r#"{"a": {"$numberLong": "99999999999999999999"}}"#,
            r#"{"a": {"$date": {"$numberLong": "1", "x": 2}}}"#,
            r#"{"a": 1, "a": 2, "b": 3}"#,
            r#"{"$oid": "596e275826f08b2730779e1f"}"#,
            r#"[1]"#,
            r#"{"a": 1} x"#,
            r#"{"a": "#,
        ];
        for text in cases {
            let fast = document_from_str(text).map(|d| bson::to_vec(&d).expect("bson"));
            match (fast, reference(text)) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{text}"),
                (Err(_), Err(_)) => {}
                (a, b) => panic!("{text}: one pass {a:?}, reference {b:?}"),
            }
        }
    }

    #[test]
    fn legacy_extended_json_forms_are_read() {
        let doc = document_from_str(
            r#"{"b": {"$binary": "AQID", "$type": "0"}, "r": {"$regex": "^x", "$options": "i"}, "d": {"$date": 5}}"#,
        )
        .expect("legacy forms");
        assert_eq!(
            doc,
            doc! {
                "b": Binary { subtype: BinarySubtype::Generic, bytes: vec![1, 2, 3] },
                "r": Regex { pattern: "^x".into(), options: "i".into() },
                "d": DateTime::from_millis(5),
            }
        );
    }

    #[test]
    fn a_payload_that_is_not_a_document_is_refused() {
        assert!(document_from_str("[1]").is_err());
        assert!(document_from_str("{").is_err());
        assert!(document_from_str(r#"{"a": {"$numberLong": "x"}}"#).is_err());
    }
}
