//! Golden fixtures: every op and control event, in both modes, byte for byte. Regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p envelope --test golden` after an intended format change.

mod common;

use std::path::PathBuf;

use envelope::{decode, encode_change, encode_control, encode_key, Event, Mode, Op};

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(format!("{name}.json"))
}

/// Compares (or, with UPDATE_GOLDEN=1, writes) a fixture holding `{"key": …, "value": …}`; a
/// null value is `null`, a zero-byte one `""`.
fn check(name: &str, key: &[u8], value: Option<&[u8]>) {
    let key: serde_json::Value = serde_json::from_slice(key).expect("key is JSON");
    let value: serde_json::Value = match value {
        None => serde_json::Value::Null,
        Some([]) => serde_json::Value::String(String::new()),
        Some(bytes) => serde_json::from_slice(bytes).expect("value is JSON"),
    };
    let produced = serde_json::json!({"key": key, "value": value});
    let path = fixture_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&produced).expect("serializes") + "\n").expect("write");
        return;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    let expected: serde_json::Value = serde_json::from_str(&text).expect("fixture is JSON");
    // Compare as compact text: field order is part of the format.
    assert_eq!(
        serde_json::to_string(&produced).expect("serializes"),
        serde_json::to_string(&expected).expect("serializes"),
        "fixture {name} differs"
    );
}

#[test]
fn change_events_match_fixtures_and_decode_back() {
    for (name, event) in common::samples() {
        let key = encode_key(event.id().expect("has _id"));
        for mode in [Mode::Debezium, Mode::Flink] {
            let value = encode_change(&event, mode);
            check(&format!("{name}.{}", if mode == Mode::Debezium { "debezium" } else { "flink" }), &key, Some(&value));

            let Event::Change(decoded) = decode(Some(&key), Some(&value)).expect("decodes") else {
                panic!("{name}: not a change event");
            };
            match mode {
                Mode::Debezium => assert_eq!(*decoded, event, "{name} round trip"),
                Mode::Flink => {
                    assert_eq!(decoded.op, event.op);
                    assert_eq!(decoded.update_description.is_some(), event.update_description.is_some());
                    assert_eq!(decoded.ns, event.ns);
                    assert_eq!(decoded.document_key, event.document_key);
                    assert_eq!(decoded.after.is_some(), event.after.is_some());
                    if event.before.is_none() && matches!(event.op, Op::Update | Op::Delete) {
                        assert_eq!(decoded.before.as_ref(), Some(&event.document_key), "{name}: before holds the key");
                    }
                }
            }
        }
    }
}

#[test]
fn tombstone_follows_delete_with_the_same_key() {
    let (_, delete) = common::samples().into_iter().find(|(n, _)| *n == "delete").expect("sample");
    let key = encode_key(delete.id().expect("id"));
    check("tombstone", &key, None);
    assert_eq!(
        decode(Some(&key), None).expect("tombstone decodes"),
        Event::Tombstone { id: delete.id().cloned().expect("id") }
    );
}

#[test]
fn control_events_match_fixtures_and_decode_back() {
    for (name, event) in common::controls() {
        let (key, value) = encode_control(&event);
        check(&format!("{name}.control"), &key, Some(&value));
        // An empty value, and a key with `id` (null): Debezium consumers skip it as a tombstone.
        assert!(value.is_empty(), "control events have an empty value");
        assert!(String::from_utf8_lossy(&key).starts_with(r#"{"id":null,"ddl":{"#));
        assert_eq!(decode(Some(&key), Some(&value)).expect("decodes"), Event::Control(Box::new(event.clone())));
        assert_eq!(decode(Some(&key), None).expect("decodes"), Event::Control(Box::new(event)));
    }
}

#[test]
fn watermarks_match_their_fixture_and_decode_back() {
    let watermark = common::watermark();
    let (key, value) = envelope::encode_watermark(&watermark);
    check("watermark", &key, Some(&value));
    assert!(value.is_empty(), "a watermark has an empty value");
    assert!(String::from_utf8_lossy(&key).starts_with(r#"{"id":null,"watermark":{"#));
    let decoded = decode(Some(&key), Some(&value)).expect("decodes");
    let Event::Watermark(decoded) = decoded else { panic!("not a watermark: {decoded:?}") };
    assert_eq!(decoded.cluster_time, watermark.cluster_time);
    assert_eq!(decoded.ts_ms, watermark.ts_ms);
    assert_eq!(decoded.source.name, watermark.source.name);
}

#[test]
fn keys_render_ids_as_debezium_does() {
    use bson::{doc, oid::ObjectId, Bson};
    let cases: Vec<(Bson, &str)> = vec![
        (Bson::Int32(1234), r#"{"id":"1234"}"#),
        (Bson::Int64(1234), r#"{"id":"1234"}"#),
        (Bson::String("a".into()), r#"{"id":"\"a\""}"#),
        (
            Bson::ObjectId(ObjectId::parse_str("596e275826f08b2730779e1f").expect("oid")),
            r#"{"id":"{\"$oid\": \"596e275826f08b2730779e1f\"}"}"#,
        ),
        (Bson::Document(doc! {"a": 1, "b": "x"}), r#"{"id":"{\"a\": 1,\"b\": \"x\"}"}"#),
        (Bson::Double(1e21), r#"{"id":"1.0E21"}"#),
        (Bson::Double(0.001), r#"{"id":"0.001"}"#),
        (Bson::Double(1.5e-7), r#"{"id":"1.5E-7"}"#),
        (Bson::Double(1234567.0), r#"{"id":"1234567.0"}"#),
        (Bson::Double(-12345678.9), r#"{"id":"-1.23456789E7"}"#),
        (Bson::DateTime(bson::DateTime::from_millis(120)), r#"{"id":"{\"$date\": \"1970-01-01T00:00:00.12Z\"}"}"#),
        (Bson::String("a\u{301}\u{0}\u{7f}🎉".into()), r#"{"id":"\"a\\u0301\\u0000\\u007f\\ud83c\\udf89\""}"#),
    ];
    for (id, expected) in cases {
        assert_eq!(String::from_utf8(encode_key(&id)).expect("utf8"), expected);
    }
}
