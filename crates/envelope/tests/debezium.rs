//! Against what the real Debezium 3.6.1 MongoDB connector wrote (`tests/fixtures/debezium/`,
//! see its README): our keys are byte-identical to its keys for every `_id` type, and our
//! decoder reads every record it writes, so applying them rebuilds the source exactly.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bson::{Bson, Document};
use envelope::{decode, encode_key, Event, Op, Snapshot};

fn fixture(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/debezium").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn canonical(text: &str) -> Bson {
    let json: serde_json::Value = serde_json::from_str(text).expect("canonical extended JSON");
    Bson::try_from(json).expect("canonical extended JSON")
}

#[test]
fn keys_are_byte_identical_to_debeziums_for_every_id_type() {
    let keys = fixture("keys.json");
    let mut wrong = Vec::new();
    for (name, entry) in keys["keys"].as_object().expect("keys") {
        let id = canonical(entry["_id"].as_str().expect("_id"));
        let ours = String::from_utf8(encode_key(&id)).expect("utf-8");
        for op in ["key_r", "key_c"] {
            let theirs = entry[op].as_str().expect("key");
            if ours != theirs {
                wrong.push(format!("{name}: ours {ours}, Debezium's {theirs}"));
            }
        }
    }
    assert!(wrong.is_empty(), "keys differ from Debezium 3.6.1's:\n{}", wrong.join("\n"));
}

/// Decodes every record of a variant and applies it as an exact sink would (whole documents
/// replace, deletes delete; an update without a document is followed by its delete).
fn apply(variant: &str) -> (Vec<Document>, Vec<envelope::ChangeEvent>) {
    let fixture = fixture(&format!("{variant}.json"));
    let mut target: BTreeMap<String, Document> = BTreeMap::new();
    let mut changes = Vec::new();
    for (i, record) in fixture["records"].as_array().expect("records").iter().enumerate() {
        let key = record["key"].as_str().map(str::as_bytes);
        let value = record["value"].as_str().map(str::as_bytes);
        let event = decode(key, value).unwrap_or_else(|e| panic!("{variant} record {i} does not decode: {e}"));
        let Event::Change(change) = event else { continue };
        let id = envelope::extjson::value_to_string(change.id().expect("_id"), envelope::extjson::Style::Strict);
        match (change.op, &change.after) {
            (Op::Delete, _) => {
                target.remove(&id);
            }
            (_, Some(after)) => {
                target.insert(id, after.clone());
            }
            (_, None) => {}
        }
        changes.push(*change);
    }
    (target.into_values().collect(), changes)
}

fn final_documents(variant: &str) -> Vec<Document> {
    fixture(&format!("{variant}.json"))["final"]
        .as_array()
        .expect("final")
        .iter()
        .map(|d| match canonical(d.as_str().expect("text")) {
            Bson::Document(doc) => doc,
            other => panic!("not a document: {other:?}"),
        })
        .collect()
}

fn bytes(docs: &[Document]) -> Vec<Vec<u8>> {
    docs.iter().map(|d| bson::to_vec(d).expect("bson")).collect()
}

#[test]
fn update_full_records_decode_and_rebuild_the_source_exactly() {
    for variant in ["full", "schema"] {
        let (target, changes) = apply(variant);
        assert_eq!(bytes(&target), bytes(&final_documents(variant)), "{variant}: target differs from the source");
        let reads: Vec<_> = changes.iter().filter(|c| c.op == Op::Read).collect();
        assert_eq!(reads.len(), 3, "{variant}: snapshot reads");
        assert_eq!(reads.last().map(|c| c.source.snapshot), Some(Snapshot::Last));
        // Without our cdc block, positions come from Debezium's source block: approximate.
        assert!(changes.iter().all(|c| !c.position.exact), "{variant}: plain Debezium positions are approximate");
    }
}

#[test]
fn streamed_positions_follow_the_source_order() {
    let (_, changes) = apply("full");
    let streamed: Vec<_> = changes.iter().filter(|c| c.op != Op::Read).collect();
    for pair in streamed.windows(2) {
        assert!(pair[0].position.cluster_time <= pair[1].position.cluster_time, "streamed events in source order");
    }
    // Snapshot reads: Debezium's ord -1 (no cluster time), so increment 0 at the read time.
    assert!(changes.iter().filter(|c| c.op == Op::Read).all(|c| c.position.cluster_time.i == 0));
}

#[test]
fn change_streams_records_decode_with_relaxed_update_fields() {
    let (_, changes) = apply("delta");
    let update = changes
        .iter()
        .find(|c| {
            c.op == Op::Update && c.update_description.as_ref().is_some_and(|u| u.updated_fields.contains_key("i64"))
        })
        .expect("the $set update");
    assert!(update.after.is_none(), "change_streams mode looks nothing up");
    // Debezium writes updatedFields in relaxed JSON: the Int64 arrives as a plain number.
    assert_eq!(update.update_description.as_ref().and_then(|u| u.updated_fields.get("i64")), Some(&Bson::Int32(43)));
}
