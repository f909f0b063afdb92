use bson::{doc, Document, RawDocumentBuf};
use envelope::{ChangeEvent, Namespace, Op, UpdateDescription};

use crate::config::{HashKey, RuleConfig, TransformConfig};
use crate::rules::{Rule, Rules};

fn rule(filter: &str) -> std::sync::Arc<Rule> {
    let config = TransformConfig {
        rules: vec![RuleConfig {
            namespaces: ".*".into(),
            exclude: vec!["ssn".into()],
            rename: [("nick".to_string(), "alias".to_string())].into(),
            hash: vec!["email".into()],
            filter: filter.into(),
            ..Default::default()
        }],
        hash_key: HashKey::new("0123456789abcdef"),
        ..Default::default()
    };
    Rules::load(&config).expect("valid").for_namespace("crm.people").expect("a rule")
}

fn raw(doc: Document) -> RawDocumentBuf {
    RawDocumentBuf::from_document(&doc).expect("raw")
}

fn event(
    op: Op,
    before: Option<Document>,
    after: Option<Document>,
    set: Option<Document>,
) -> ChangeEvent<RawDocumentBuf> {
    ChangeEvent {
        op,
        ns: Namespace::new("crm", "people"),
        document_key: doc! {"_id": 1},
        before: before.map(raw),
        after: after.map(raw),
        update_description: set.map(|updated_fields| UpdateDescription { updated_fields, ..Default::default() }),
        source: Default::default(),
        transaction: None,
        position: Default::default(),
        ts_ms: 0,
        resend: None,
    }
}

fn after(e: &ChangeEvent<RawDocumentBuf>) -> Option<Document> {
    e.after.as_ref().map(|a| a.to_document().expect("doc"))
}

const ACTIVE: &str = r#"{"status": "active"}"#;

#[test]
fn inserts_and_reads_are_filtered_then_transformed() {
    let r = rule(ACTIVE);
    let doc = doc! {"_id": 1, "status": "active", "ssn": "1", "nick": "A", "email": "a@b.c"};
    let sent = r.change(event(Op::Create, None, Some(doc.clone()), None)).expect("ok").expect("sent");
    let sent = after(&sent).expect("after");
    assert_eq!(sent.keys().collect::<Vec<_>>(), ["_id", "status", "alias", "email"]);
    assert_ne!(sent.get_str("email").ok(), Some("a@b.c"));
    let gone = doc! {"_id": 1, "status": "gone"};
    assert!(r.change(event(Op::Create, None, Some(gone.clone()), None)).expect("ok").is_none());
    assert!(r.read("crm.people", &raw(gone)).expect("ok").is_none());
    assert!(r.read("crm.people", &raw(doc)).expect("ok").is_some());
}

#[test]
fn updates_move_documents_in_and_out_of_the_filter() {
    let r = rule(ACTIVE);
    let (active, gone) = (doc! {"_id": 1, "status": "active", "n": 2}, doc! {"_id": 1, "status": "gone", "n": 2});
    // With pre-images.
    let out = r
        .change(event(Op::Update, Some(active.clone()), Some(gone.clone()), Some(doc! {"status": "gone"})))
        .expect("ok");
    assert_eq!(out.map(|e| (e.op, e.after.is_none())), Some((Op::Delete, true)), "moved out: a delete");
    let out = r
        .change(event(Op::Update, Some(gone.clone()), Some(active.clone()), Some(doc! {"status": "active"})))
        .expect("ok");
    let out = out.expect("moved in");
    assert_eq!((out.op, out.update_description.is_none(), after(&out).is_some()), (Op::Update, true, true), "whole");
    assert!(r
        .change(event(Op::Update, Some(gone.clone()), Some(gone.clone()), Some(doc! {"n": 2})))
        .expect("ok")
        .is_none());
    // Without: what the update touched decides.
    let out = r.change(event(Op::Update, None, Some(gone.clone()), Some(doc! {"status": "gone"}))).expect("ok");
    assert_eq!(out.map(|e| e.op), Some(Op::Delete));
    assert!(r.change(event(Op::Update, None, Some(gone.clone()), Some(doc! {"n": 2}))).expect("ok").is_none());
    let out = r.change(event(Op::Update, None, Some(active.clone()), Some(doc! {"status": "active"}))).expect("ok");
    assert!(out.expect("sent").update_description.is_none(), "may have moved in: whole");
    let out = r.change(event(Op::Update, None, Some(active.clone()), Some(doc! {"n": 2}))).expect("ok");
    assert_eq!(out.expect("sent").update_description.map(|d| d.updated_fields), Some(doc! {"n": 2}));
    // A replace has no description: it may change anything.
    let out = r.change(event(Op::Update, None, Some(gone), None)).expect("ok");
    assert_eq!(out.map(|e| e.op), Some(Op::Delete));
}

#[test]
fn updates_of_hidden_fields_only_and_of_deleted_documents() {
    let plain = rule("");
    let doc = doc! {"_id": 1, "ssn": "2", "nick": "A"};
    assert!(plain.change(event(Op::Update, None, Some(doc.clone()), Some(doc! {"ssn": "2"}))).expect("ok").is_none());
    let gone =
        plain.change(event(Op::Update, None, None, Some(doc! {"ssn": "2", "nick": "B"}))).expect("ok").expect("sent");
    assert_eq!(gone.update_description.map(|d| d.updated_fields), Some(doc! {"alias": "B"}));
    let filtered = rule(ACTIVE);
    let gone = filtered.change(event(Op::Update, None, None, Some(doc! {"nick": "B"}))).expect("ok").expect("sent");
    assert!(gone.update_description.is_none(), "the delete that follows decides");
    let before = doc! {"_id": 1, "status": "gone"};
    assert!(filtered.change(event(Op::Delete, Some(before), None, None)).expect("ok").is_none());
    assert!(filtered.change(event(Op::Delete, None, None, None)).expect("ok").is_some());
}
