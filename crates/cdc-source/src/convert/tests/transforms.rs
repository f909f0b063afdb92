use super::*;

#[test]
fn transform_rules_apply_before_encoding_and_the_filter_only_moves_the_position() {
    let mut c = converter("", true);
    let config = transform::TransformConfig {
        rules: vec![transform::RuleConfig {
            namespaces: r"shop\.orders".into(),
            exclude: vec!["card".into()],
            filter: r#"{"x": {"$gte": 1}}"#.into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    c.transforms = transform::Rules::load(&config).expect("valid");
    let sent = item(c.change(
        event("insert", "orders", 1, doc! {"fullDocument": {"_id": 7, "x": 1, "card": "4111"}}),
        None,
        5,
    ));
    let value = String::from_utf8(sent.records[0].value.clone().expect("value")).expect("utf8");
    assert!(value.contains(r#"\"x\": 1"#) && !value.contains("4111"), "{value}");
    let left = item(c.change(event("insert", "orders", 2, doc! {"fullDocument": {"_id": 8, "x": 0}}), None, 5));
    assert!(left.records.is_empty() && left.progress.is_some());
    assert_eq!(c.seq.load(Ordering::Relaxed), 11, "only what is sent is numbered");
    let raw = RawDocumentBuf::from_document(&doc! {"_id": 9, "x": 0}).expect("raw");
    let read = c.snapshot_read(&Namespace::new("shop", "orders"), raw, ClusterTime::default(), false, 5);
    assert!(matches!(read, Ok(None)));
}

#[test]
fn flink_mode_carries_the_same_transformed_event() {
    let mut c = converter("", true);
    c.mode = Mode::Flink;
    let config = transform::TransformConfig {
        rules: vec![transform::RuleConfig {
            namespaces: r"shop\.orders".into(),
            exclude: vec!["card".into()],
            rename: [("x".to_string(), "y".to_string())].into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    c.transforms = transform::Rules::load(&config).expect("valid");
    let update = doc! {"fullDocument": {"_id": 7, "x": 1, "card": "4111"},
    "updateDescription": {"updatedFields": {"x": 1, "card": "4111"}, "removedFields": []}};
    let sent = item(c.change(event("update", "orders", 1, update), None, 5));
    let value: serde_json::Value =
        serde_json::from_slice(sent.records[0].value.as_deref().expect("value")).expect("json");
    assert_eq!(value["after"], serde_json::json!({"_id": 7, "y": 1}), "{value}");
    assert!(!value.to_string().contains("4111"), "{value}");
}
