//! Property tests: any BSON document survives the Debezium-mode envelope byte for byte (every
//! type, Int32/Int64/Double kept apart, field order kept), and keys decode to their `_id`.

use bson::spec::BinarySubtype;
use bson::{oid::ObjectId, Binary, Bson, DateTime, Decimal128, Document, JavaScriptCodeWithScope, Regex, Timestamp};
use envelope::extjson::{
    document_from_json_text, document_from_str, document_to_string, raw_document_from_str, raw_document_to_string,
    Style,
};
use envelope::{
    decode, decode_key, encode_change, encode_key, ChangeEvent, ClusterTime, Event, Mode, Namespace, Op, Position,
    SourceInfo, UpdateDescription,
};
use proptest::prelude::*;

fn field_name() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_ é]{0,7}"
}

fn double() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_map(|f| if f.is_nan() { f64::NAN } else { f }),
        (-1000_i32..1000).prop_map(f64::from),
        Just(0.0),
        Just(-0.0),
        Just(1.0),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::MIN_POSITIVE),
        Just(9_007_199_254_740_993.0),
    ]
}

fn decimal() -> impl Strategy<Value = Decimal128> {
    (any::<i64>(), -20_i32..20).prop_map(|(m, e)| format!("{m}E{e}").parse::<Decimal128>().expect("decimal"))
}

fn binary() -> impl Strategy<Value = Binary> {
    let subtypes = prop_oneof![
        Just(BinarySubtype::Generic),
        Just(BinarySubtype::Function),
        Just(BinarySubtype::UuidOld),
        Just(BinarySubtype::Uuid),
        Just(BinarySubtype::Md5),
        Just(BinarySubtype::Encrypted),
        Just(BinarySubtype::Column),
        Just(BinarySubtype::UserDefined(0x80)),
        Just(BinarySubtype::UserDefined(0xff)),
    ];
    (subtypes, proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(subtype, bytes)| Binary { subtype, bytes })
}

fn leaf() -> impl Strategy<Value = Bson> {
    prop_oneof![
        double().prop_map(Bson::Double),
        any::<String>().prop_map(Bson::String),
        any::<bool>().prop_map(Bson::Boolean),
        Just(Bson::Null),
        prop_oneof![any::<i32>(), -1000_i32..1000].prop_map(Bson::Int32),
        // Small Int64s matter most: relaxed JSON would read them back as Int32.
        prop_oneof![any::<i64>(), -1000_i64..1000].prop_map(Bson::Int64),
        any::<[u8; 12]>().prop_map(|b| Bson::ObjectId(ObjectId::from_bytes(b))),
        any::<i64>().prop_map(|ms| Bson::DateTime(DateTime::from_millis(ms))),
        (any::<u32>(), any::<u32>()).prop_map(|(time, increment)| Bson::Timestamp(Timestamp { time, increment })),
        binary().prop_map(Bson::Binary),
        ("[^\u{0}]{0,12}", "i?l?m?s?u?x?")
            .prop_map(|(pattern, options)| Bson::RegularExpression(Regex { pattern, options })),
        decimal().prop_map(Bson::Decimal128),
        Just(Bson::MinKey),
        Just(Bson::MaxKey),
        Just(Bson::Undefined),
        any::<String>().prop_map(Bson::Symbol),
        any::<String>().prop_map(Bson::JavaScriptCode),
    ]
}

fn value() -> impl Strategy<Value = Bson> {
    leaf().prop_recursive(3, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Bson::Array),
            proptest::collection::vec((field_name(), inner.clone()), 0..6)
                .prop_map(|fields| Bson::Document(fields.into_iter().collect())),
            ("[a-z(){}; ]{0,10}", proptest::collection::vec((field_name(), inner), 0..3)).prop_map(|(code, scope)| {
                Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope { code, scope: scope.into_iter().collect() })
            }),
        ]
    })
}

fn document() -> impl Strategy<Value = Document> {
    (leaf(), proptest::collection::vec((field_name(), value()), 0..10)).prop_map(|(id, fields)| {
        let mut doc = Document::new();
        doc.insert("_id", id);
        for (k, v) in fields {
            doc.insert(k, v);
        }
        doc
    })
}

fn bytes(doc: &Document) -> Vec<u8> {
    bson::to_vec(doc).expect("serializable")
}

fn event(doc: Document, update: Option<Document>) -> ChangeEvent {
    ChangeEvent {
        op: if update.is_some() { Op::Update } else { Op::Create },
        ns: Namespace::new("db", "coll"),
        document_key: bson::doc! {"_id": doc.get("_id").cloned().unwrap_or(Bson::Null)},
        before: Some(doc.clone()),
        after: Some(doc),
        update_description: update.map(|updated_fields| UpdateDescription { updated_fields, ..Default::default() }),
        source: SourceInfo { name: "p".into(), ..Default::default() },
        transaction: None,
        position: Position { cluster_time: ClusterTime { t: 1, i: 2 }, resume_token: None, seq: 3, exact: true },
        ts_ms: 4,
        resend: None,
    }
}

/// Field names as users write them, `$` ones included (some shaped like type wrappers).
fn any_field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => field_name(),
        1 => "\\$[a-zA-Z]{1,8}",
        1 => prop_oneof![
            Just("$oid"), Just("$date"), Just("$numberLong"), Just("$regex"), Just("$options"),
            Just("$binary"), Just("$type"), Just("$code"), Just("$scope"), Just("$ref"), Just("$id"),
        ]
        .prop_map(String::from),
    ]
}

/// A document whose field names (at the top and one level down) may start with `$`.
fn dollar_document() -> impl Strategy<Value = Document> {
    let inner = proptest::collection::vec((any_field_name(), value()), 0..4)
        .prop_map(|fields| Bson::Document(fields.into_iter().collect()));
    proptest::collection::vec((any_field_name(), prop_oneof![value(), inner]), 0..6)
        .prop_map(|fields| fields.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The one-pass reading of extended JSON gives what the reference reading gives (or refuses
    /// what it refuses), in every style we write, `$` field names included.
    #[test]
    fn one_pass_reading_equals_the_reference(doc in prop_oneof![document(), dollar_document()]) {
        for style in [Style::Strict, Style::Relaxed] {
            let text = document_to_string(&doc, style);
            let fast = document_from_str(&text).map(|d| bytes(&d));
            let raw = raw_document_from_str(&text).map(|d| d.as_bytes().to_vec());
            let reference = document_from_json_text(&text).map(|d| bytes(&d));
            for (reading, read) in [("one pass", &fast), ("raw", &raw)] {
                match (read, &reference) {
                    (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{}: {}", reading, text),
                    (Err(_), Err(_)) => {}
                    _ => prop_assert!(false, "{}: {} {:?}, reference {:?}", text, reading, read, reference),
                }
            }
        }
    }

    /// Extended JSON written straight from BSON bytes is the text written from the tree.
    #[test]
    fn writing_from_bytes_equals_writing_from_the_tree(doc in prop_oneof![document(), dollar_document()]) {
        let raw = bson::RawDocumentBuf::from_document(&doc).expect("bson");
        for style in [Style::Strict, Style::Relaxed, Style::Key] {
            prop_assert_eq!(raw_document_to_string(&raw, style), document_to_string(&doc, style));
        }
    }

    #[test]
    fn documents_survive_debezium_mode_exactly(doc in document(), update in document()) {
        let event = event(doc.clone(), Some(update.clone()));
        let key = encode_key(event.id().expect("id"));
        let value = encode_change(&event, Mode::Debezium);
        let Event::Change(decoded) = decode(Some(&key), Some(&value)).expect("decodes") else {
            panic!("not a change event");
        };
        prop_assert_eq!(bytes(decoded.after.as_ref().expect("after")), bytes(&doc));
        prop_assert_eq!(bytes(decoded.before.as_ref().expect("before")), bytes(&doc));
        prop_assert_eq!(bytes(&decoded.update_description.expect("update").updated_fields), bytes(&update));
        prop_assert_eq!(bytes(&decoded.document_key), bytes(&event.document_key));
    }

    #[test]
    fn flink_mode_is_valid_json_objects(doc in document()) {
        let value = encode_change(&event(doc, None), Mode::Flink);
        let parsed: serde_json::Value = serde_json::from_slice(&value).expect("valid JSON");
        prop_assert!(parsed["after"].is_object());
        let decoded = decode(Some(br#"{"id":"1"}"#), Some(&value));
        prop_assert!(decoded.is_ok(), "{:?}", decoded);
    }

    #[test]
    fn keys_decode_to_their_id(id in leaf()) {
        let decoded = decode_key(&encode_key(&id)).expect("key decodes");
        // The key is relaxed, as Debezium's: numbers may change width (queries match across
        // numeric types), everything else comes back identical.
        match (&id, &decoded) {
            (Bson::Int64(a), Bson::Int32(b)) => prop_assert_eq!(*a, i64::from(*b)),
            (Bson::Double(a), Bson::Double(b)) if a.is_nan() => prop_assert!(b.is_nan()),
            _ => prop_assert_eq!(&decoded, &id),
        }
    }

    #[test]
    fn decoding_never_panics(key in proptest::option::of(any::<Vec<u8>>()), value in proptest::option::of(any::<Vec<u8>>())) {
        let _ = decode(key.as_deref(), value.as_deref());
    }
}
