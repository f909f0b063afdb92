//! MongoDB's expanded change events (`showExpandedEvents`, 6.0+) → schema DDL: `create` (a
//! collection with its options, or a view with `viewOn` and `pipeline`), `createIndexes`,
//! `dropIndexes` and `modify` (a `collMod`). The driver types them as `OperationType::Other`
//! without the fields that say what changed, so those are read from the raw event. Pure.

use bson::{Bson, Document, RawDocumentBuf};
use envelope::{Ddl, Namespace};

/// What an expanded event says beyond its kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Described {
    /// `operationDescription`: the options created, the indexes built or dropped, the fields set.
    pub description: Document,
    /// `stateBeforeChange` of a `modify`: `collectionOptions` and, for an index, `indexOptions`.
    pub before: Option<Document>,
}

/// The operation types whose description is read.
const DESCRIBED: [&str; 5] = ["create", "createIndexes", "dropIndexes", "modify", "shardCollection"];

/// Reads the description of an expanded event from its raw form; none for other events.
pub fn described(raw: &RawDocumentBuf) -> Option<Described> {
    let kind = raw.get_str("operationType").ok()?;
    if !DESCRIBED.contains(&kind) {
        return None;
    }
    let document = |key| raw.get_document(key).ok().and_then(|d| Document::try_from(d).ok());
    Some(Described {
        description: document("operationDescription").unwrap_or_default(),
        before: document("stateBeforeChange"),
    })
}

/// The DDL an expanded event of `kind` on `ns` asks the target for; none when there is nothing
/// to do there (a `shardCollection`, a `collMod` that changed nothing, an unknown kind).
pub fn ddl(kind: &str, ns: Namespace, described: &Described) -> Option<Ddl> {
    let description = &described.description;
    match kind {
        "create" => {
            // `idIndex` is the `_id` index every collection gets; listCollections' options do
            // not have it either.
            let mut options = description.clone();
            options.remove("idIndex");
            Some(Ddl::Create { ns, options })
        }
        "createIndexes" => {
            let indexes = index_specs(description);
            (!indexes.is_empty()).then_some(Ddl::CreateIndexes { ns, indexes })
        }
        "dropIndexes" => {
            let names: Vec<String> =
                index_specs(description).iter().filter_map(|i| i.get_str("name").ok().map(str::to_string)).collect();
            (!names.is_empty()).then_some(Ddl::DropIndexes { ns, names })
        }
        "modify" => {
            let changes = changed(description, described.before.as_ref());
            (!changes.is_empty()).then_some(Ddl::Modify { ns, changes })
        }
        _ => None,
    }
}

fn index_specs(description: &Document) -> Vec<Document> {
    let specs = description.get_array("indexes").map(Vec::as_slice).unwrap_or_default();
    specs.iter().filter_map(|spec| spec.as_document().cloned()).collect()
}

/// The `collMod` fields that change something: those whose value differs from the state
/// before (an index option from `indexOptions`, anything else from `collectionOptions`). All of
/// them when the state before is not known (a view's `viewOn` and `pipeline`).
fn changed(description: &Document, before: Option<&Document>) -> Document {
    let Some(before) = before else { return description.clone() };
    let options = before.get_document("collectionOptions").ok();
    let index_options = before.get_document("indexOptions").ok();
    let mut changes = Document::new();
    for (field, value) in description {
        let unchanged = match (field.as_str(), value) {
            ("index", Bson::Document(index)) => index
                .iter()
                .filter(|(key, _)| !matches!(key.as_str(), "name" | "keyPattern"))
                .all(|(key, value)| index_options.and_then(|was| was.get(key)) == Some(value)),
            _ => options.and_then(|was| was.get(field)) == Some(value),
        };
        if !unchanged {
            changes.insert(field.clone(), value.clone());
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, rawdoc};

    fn ns() -> Namespace {
        Namespace::new("shop", "items")
    }

    fn described(description: Document, before: Option<Document>) -> Described {
        Described { description, before }
    }

    #[test]
    fn only_expanded_events_are_described() {
        let create = rawdoc! {"operationType": "create", "operationDescription": {"capped": true}};
        assert_eq!(super::described(&create).map(|d| d.description), Some(doc! {"capped": true}));
        assert_eq!(super::described(&rawdoc! {"operationType": "insert"}), None);
    }

    #[test]
    fn creates_keep_their_options_without_the_id_index() {
        let collection = described(doc! {"validator": {"a": 1}, "idIndex": {"key": {"_id": 1}, "name": "_id_"}}, None);
        assert_eq!(
            ddl("create", ns(), &collection),
            Some(Ddl::Create { ns: ns(), options: doc! {"validator": {"a": 1}} })
        );
        let view = described(doc! {"viewOn": "items", "pipeline": [{"$match": {"a": 1}}]}, None);
        let Some(Ddl::Create { options, .. }) = ddl("create", ns(), &view) else { panic!("a create") };
        assert_eq!(options, doc! {"viewOn": "items", "pipeline": [{"$match": {"a": 1}}]});
    }

    #[test]
    fn index_builds_and_drops() {
        let spec = doc! {"v": 2, "key": {"a": 1}, "name": "a_1", "unique": true};
        let built = described(doc! {"indexes": [spec.clone()]}, None);
        assert_eq!(ddl("createIndexes", ns(), &built), Some(Ddl::CreateIndexes { ns: ns(), indexes: vec![spec] }));
        assert_eq!(ddl("dropIndexes", ns(), &built), Some(Ddl::DropIndexes { ns: ns(), names: vec!["a_1".into()] }));
        assert_eq!(ddl("dropIndexes", ns(), &described(doc! {}, None)), None);
    }

    #[test]
    fn a_collmod_sends_what_changed() {
        let before = doc! {"collectionOptions": {"validator": {"a": 1}, "validationLevel": "strict"},
        "indexOptions": {"expireAfterSeconds": 3600}};
        let ttl = described(doc! {"index": {"name": "t_1", "expireAfterSeconds": 60}}, Some(before.clone()));
        assert_eq!(
            ddl("modify", ns(), &ttl),
            Some(Ddl::Modify { ns: ns(), changes: doc! {"index": {"name": "t_1", "expireAfterSeconds": 60}} })
        );
        let same_ttl = described(doc! {"index": {"name": "t_1", "expireAfterSeconds": 3600}}, Some(before.clone()));
        assert_eq!(ddl("modify", ns(), &same_ttl), None, "nothing changed");
        let validation = described(
            doc! {"validator": {"a": 1}, "validationLevel": "moderate"},
            Some(doc! {"collectionOptions": {"validator": {"a": 1}, "validationLevel": "strict"}}),
        );
        assert_eq!(
            ddl("modify", ns(), &validation),
            Some(Ddl::Modify { ns: ns(), changes: doc! {"validationLevel": "moderate"} })
        );
        let hidden = described(
            doc! {"index": {"name": "p_1", "hidden": true}},
            Some(doc! {"collectionOptions": {}, "indexOptions": {"hidden": false}}),
        );
        assert!(
            matches!(ddl("modify", ns(), &hidden), Some(Ddl::Modify { changes, .. }) if changes.contains_key("index"))
        );
        let view = described(doc! {"viewOn": "items", "pipeline": []}, None);
        assert_eq!(
            ddl("modify", ns(), &view),
            Some(Ddl::Modify { ns: ns(), changes: doc! {"viewOn": "items", "pipeline": []} })
        );
    }

    #[test]
    fn sharding_events_are_not_replicated() {
        assert_eq!(ddl("shardCollection", ns(), &described(doc! {"shardKey": {"a": 1}}, None)), None);
        assert_eq!(ddl("reshardCollection", ns(), &Described::default()), None);
    }
}
