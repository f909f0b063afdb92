//! Bad records give typed errors (never panics), and foreign Debezium records still decode.

use bson::{doc, spec::BinarySubtype, Binary, Bson};
use envelope::{decode, DecodeError, Event, Op, Snapshot};

fn err(key: Option<&str>, value: Option<&str>) -> DecodeError {
    decode(key.map(str::as_bytes), value.map(str::as_bytes)).expect_err("must not decode")
}

const GOOD_KEY: &str = r#"{"id":"1"}"#;

fn value_with(op: &str, cdc: &str) -> String {
    format!(
        r#"{{"before":null,"after":"{{\"_id\": 1}}","updateDescription":null,
            "source":{{"db":"d","collection":"c","ts_ms":1000,"ord":1}},"op":"{op}","ts_ms":5{cdc}}}"#
    )
}

#[test]
fn malformed_json_is_a_json_error() {
    assert!(matches!(err(Some(GOOD_KEY), Some("{not json")), DecodeError::Json { part: "value", .. }));
    assert!(matches!(err(Some("nope"), None), DecodeError::Json { part: "key", .. }));
}

#[test]
fn unknown_op_is_named() {
    assert_eq!(err(Some(GOOD_KEY), Some(&value_with("x", ""))), DecodeError::UnknownOp("x".into()));
}

#[test]
fn newer_envelope_version_is_refused() {
    let value = value_with("c", r#","cdc":{"v":99,"seq":1,"clusterTime":{"t":1,"i":1}}"#);
    assert_eq!(err(Some(GOOD_KEY), Some(&value)), DecodeError::UnsupportedVersion { found: 99 });
}

#[test]
fn missing_key_and_missing_fields_are_named() {
    assert_eq!(err(None, Some(&value_with("c", ""))), DecodeError::MissingKey);
    assert_eq!(err(None, None), DecodeError::Empty);
    assert_eq!(err(Some(GOOD_KEY), Some(r#"{"op":"c"}"#)), DecodeError::MissingField("source"));
    assert_eq!(
        err(Some(GOOD_KEY), Some(r#"{"op":"c","source":{"db":"d"}}"#)),
        DecodeError::MissingField("source.collection")
    );
    assert_eq!(err(Some(GOOD_KEY), Some(r#"{"source":{"db":"d","collection":"c"}}"#)), DecodeError::MissingField("op"));
    assert!(matches!(err(Some(r#"{"other":1}"#), None), DecodeError::MissingKey));
    assert!(matches!(err(Some(r#"{"id":"{bad"}"#), None), DecodeError::InvalidKey(_)));
}

#[test]
fn bad_payloads_are_extjson_errors() {
    let value = value_with("c", "").replace(r#""{\"_id\": 1}""#, r#""{\"_id\": {\"$numberLong\": \"x\"}}""#);
    assert!(matches!(err(Some(GOOD_KEY), Some(&value)), DecodeError::ExtJson { field: "after", .. }), "{value}");
    let value = value_with("c", "").replace(r#""{\"_id\": 1}""#, "7");
    assert!(matches!(err(Some(GOOD_KEY), Some(&value)), DecodeError::ExtJson { field: "after", .. }));
    let ddl = r#"{"ddl":{"type":"truncate","db":"d","collection":"c"},"source":{}}"#;
    assert_eq!(err(Some(r#"{"ddl":"d.c"}"#), Some(ddl)), DecodeError::UnknownDdl("truncate".into()));
}

/// A record as Debezium's own MongoDB connector writes it through Kafka Connect's JsonConverter
/// with schemas enabled: legacy `$binary`, no `cdc` block.
#[test]
fn decodes_plain_debezium_with_schema_wrapper() {
    let key = r#"{"schema":{"type":"struct","fields":[{"type":"string","field":"id"}]},"payload":{"id":"{\"$oid\": \"596e275826f08b2730779e1f\"}"}}"#;
    let value = r#"{"schema":{"type":"struct"},"payload":{
        "before":null,
        "after":"{\"_id\": {\"$oid\": \"596e275826f08b2730779e1f\"},\"first_name\": \"Anne\",\"n\": {\"$numberLong\": \"7\"},\"b\": {\"$binary\": \"AQID\", \"$type\": \"00\"}}",
        "updateDescription":null,
        "source":{"version":"2.7.0.Final","connector":"mongodb","name":"dbserver1","ts_ms":1558965508000,
                  "snapshot":"incremental","db":"inventory","sequence":null,"rs":"rs0","collection":"customers",
                  "ord":31,"lsid":null,"txnNumber":null,"wallTime":1558965508123},
        "op":"r","ts_ms":1558965515240,"transaction":null}}"#;
    let Event::Change(event) = decode(Some(key.as_bytes()), Some(value.as_bytes())).expect("decodes") else {
        panic!("not a change");
    };
    assert_eq!(event.op, Op::Read);
    assert_eq!(event.ns.to_string(), "inventory.customers");
    assert_eq!(event.source.snapshot, Snapshot::Incremental, "Debezium's incremental snapshot read");
    assert_eq!(event.position.cluster_time.t, 1_558_965_508);
    assert_eq!(event.position.cluster_time.i, 31);
    let after = event.after.expect("after");
    assert_eq!(after.get("n"), Some(&Bson::Int64(7)));
    assert_eq!(after.get("b"), Some(&Bson::Binary(Binary { subtype: BinarySubtype::Generic, bytes: vec![1, 2, 3] })));
    assert_eq!(event.document_key, doc! {"_id": after.get("_id").cloned().expect("id")});
}

/// Control events written before they moved to the key (value with `ddl` and no `op`, key
/// `{"ddl": "<ns>"}`) stay readable: topics already hold them.
#[test]
fn control_events_of_the_old_shape_still_decode() {
    let key = r#"{"ddl":"inventory.products"}"#;
    let value = r#"{"ddl":{"type":"drop","db":"inventory","collection":"products","to":null,"markers":4,
        "topics":{"cdc.inventory.products":4}},"source":{"version":"0.1.0","connector":"mongodb","name":"src",
        "ts_ms":1700000000000,"snapshot":"false","db":"inventory","sequence":null,"rs":"source",
        "collection":"products","ord":5,"lsid":null,"txnNumber":null,"wallTime":1700000000123},
        "ts_ms":1700000000300,"cdc":{"v":1,"seq":15,"clusterTime":{"t":1700000000,"i":5},"resumeToken":null}}"#;
    let Event::Control(control) = decode(Some(key.as_bytes()), Some(value.as_bytes())).expect("decodes") else {
        panic!("not a control event");
    };
    assert_eq!(control.ddl, envelope::Ddl::Drop(envelope::Namespace::new("inventory", "products")));
    assert_eq!(control.markers, 4);
    assert_eq!(control.topics.get("cdc.inventory.products"), Some(&4));
    assert_eq!(control.position.cluster_time, envelope::ClusterTime { t: 1_700_000_000, i: 5 });
    assert!(control.position.exact);
}

/// A Debezium key is relaxed JSON: `{"id":"8"}` for an Int64 8. The document key of an event
/// carrying the document takes the document's exact `_id`; a delete has only the key.
#[test]
fn plain_debezium_document_keys_keep_the_exact_id_type() {
    let key = br#"{"id":"8"}"#;
    let with = |op: &str, after: &str| {
        format!(
            r#"{{"before":null,"after":{after},"source":{{"db":"d","collection":"c","ts_ms":1000,"ord":1}},"op":"{op}"}}"#
        )
    };
    let Event::Change(insert) =
        decode(Some(key), Some(with("c", r#""{\"_id\": {\"$numberLong\": \"8\"}}""#).as_bytes())).expect("decodes")
    else {
        panic!("not a change");
    };
    assert_eq!(insert.document_key, doc! {"_id": Bson::Int64(8)});
    let Event::Change(delete) = decode(Some(key), Some(with("d", "null").as_bytes())).expect("decodes") else {
        panic!("not a change");
    };
    assert_eq!(delete.document_key, doc! {"_id": Bson::Int32(8)}, "only the relaxed key is known");
}
