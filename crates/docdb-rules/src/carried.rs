//! What an Amazon DocumentDB target will not carry of a source collection, and what replication
//! does instead: every verdict is [`check`] of the command sink-writer would send (`create`,
//! `createIndexes`, a document's write), so the guard's table decides, once. Pure.
//!
//! sink-writer creates a collection with the options the target takes and reports the rest
//! ([`Outcome::LeftOut`]); builds an index without a collation the target refuses (also
//! `LeftOut`) but not an index whose kind or other property the target refuses
//! ([`Outcome::NotBuilt`]: reported, tried again); never creates a view the target refuses
//! ([`Outcome::NotCreated`]); dead-letters a document the target cannot store
//! ([`Outcome::DeadLettered`]: the only one that loses data).

use std::fmt;

use bson::{doc, Bson, Document};

use crate::check::check;

/// What happens to something the target refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Left out; the collection or index is created with everything else.
    LeftOut,
    /// The index is not built (reported by sink-writer and tried again).
    NotBuilt,
    /// The view is not created.
    NotCreated,
    /// Documents go to the dead-letter topic instead of the target: data is lost there.
    DeadLettered,
}

impl Outcome {
    pub fn loses_data(self) -> bool {
        self == Outcome::DeadLettered
    }

    fn describe(self) -> &'static str {
        match self {
            Outcome::LeftOut => "left out",
            Outcome::NotBuilt => "index not built",
            Outcome::NotCreated => "not created",
            Outcome::DeadLettered => "dead-lettered",
        }
    }
}

/// One thing the target will not carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    /// What: `view`, `option capped+size`, `index geo`, `index by_name option collation`,
    /// `documents`.
    pub what: String,
    pub outcome: Outcome,
    /// DocumentDB's refusal.
    pub reason: String,
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}: {})", self.what, self.outcome.describe(), self.reason)
    }
}

/// A collection's (or view's) options as `listCollections` reports them (without `uuid`): what
/// the target leaves out.
pub fn collection(db: &str, coll: &str, options: &Document) -> Vec<Loss> {
    if options.contains_key("viewOn") {
        let view = only(options, |k| matches!(k, "viewOn" | "pipeline"));
        return refused(db, "create", coll, view)
            .map(|reason| Loss { what: "view".into(), outcome: Outcome::NotCreated, reason })
            .into_iter()
            .collect();
    }
    option_groups(options)
        .into_iter()
        .filter_map(|group| {
            let fields = only(options, |k| group.iter().any(|g| g == k));
            let reason = refused(db, "create", coll, fields)?;
            Some(Loss { what: format!("option {}", group.join("+")), outcome: Outcome::LeftOut, reason })
        })
        .collect()
}

/// One index as `listIndexes` reports it, on a collection with `collection_options`: what the
/// target refuses of it.
pub fn index(db: &str, coll: &str, spec: &Document, collection_options: &Document) -> Vec<Loss> {
    let name = spec.get_str("name").unwrap_or("?").to_string();
    let mut spec = only(spec, |k| !matches!(k, "v" | "ns"));
    // `simple` means "not the collection's default": no collation at all where the target
    // collection has none, which is where its collation is not carried either.
    let simple = spec.get_document("collation").is_ok_and(|c| c == &doc! {"locale": "simple"});
    let default_carried = collection_options.contains_key("collation")
        && collection(db, coll, &only(collection_options, |k| k == "collation")).is_empty();
    if simple && !default_carried {
        spec.remove("collation");
    }
    let base = only(&spec, |k| matches!(k, "key" | "name"));
    let build = |index: Document| refused(db, "createIndexes", coll, doc! {"indexes": [index]});
    if let Some(reason) = build(base.clone()) {
        return vec![Loss { what: format!("index {name}"), outcome: Outcome::NotBuilt, reason }];
    }
    spec.iter()
        .filter(|(k, _)| !base.contains_key(*k))
        .filter_map(|(property, value)| {
            let mut one = base.clone();
            one.insert(property.clone(), value.clone());
            let reason = build(one)?;
            let outcome = if property == "collation" { Outcome::LeftOut } else { Outcome::NotBuilt };
            Some(Loss { what: format!("index {name} option {property}"), outcome, reason })
        })
        .collect()
}

/// A document: dead-lettered when the target cannot store it (field names, BSON types).
pub fn document(db: &str, coll: &str, document: &Document) -> Option<Loss> {
    let reason = refused(db, "insert", coll, doc! {"documents": [document.clone()]})?;
    Some(Loss { what: "documents".into(), outcome: Outcome::DeadLettered, reason })
}

/// A collection's options in the groups that stand or fall together (capped with its sizes,
/// `expireAfterSeconds` with the time series or clustered index it belongs to), the validation
/// settings last: sink-writer leaves them out group by group, those only when nothing else helps.
pub fn option_groups(options: &Document) -> Vec<Vec<String>> {
    let owner = |key: &str| -> String {
        match key {
            "size" | "max" => "capped",
            "expireAfterSeconds" if options.contains_key("timeseries") => "timeseries",
            "expireAfterSeconds" if options.contains_key("clusteredIndex") => "clusteredIndex",
            other => other,
        }
        .to_string()
    };
    let mut groups: Vec<Vec<String>> = Vec::new();
    for key in options.keys().filter(|key| *key != "uuid") {
        let owner = owner(key);
        match groups.iter_mut().find(|group| group[0] == owner) {
            Some(group) if !group.contains(key) => group.push(key.clone()),
            Some(_) => {}
            None if owner == *key => groups.push(vec![owner]),
            None => groups.push(vec![owner, key.clone()]),
        }
    }
    let validation = |g: &Vec<String>| ["validator", "validationLevel", "validationAction"].contains(&g[0].as_str());
    groups.sort_by_key(validation);
    groups
}

/// The fields of `document` whose names `keep` says, in their order.
fn only(document: &Document, keep: impl Fn(&str) -> bool) -> Document {
    document.iter().filter(|(k, _)| keep(k)).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The refusal of `{<command>: coll, ...fields, $db: db}`, if refused.
fn refused(db: &str, command: &str, coll: &str, fields: Document) -> Option<String> {
    let mut whole = doc! {command: coll};
    whole.extend(fields);
    whole.insert("$db", Bson::String(db.to_string()));
    check(&whole).err().map(|refusal| refusal.errmsg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whats(losses: &[Loss]) -> Vec<(&str, Outcome)> {
        losses.iter().map(|l| (l.what.as_str(), l.outcome)).collect()
    }

    #[test]
    fn collection_options_the_target_lacks_are_left_out_by_group() {
        let options = doc! {"capped": true, "size": 4096, "max": 10, "collation": {"locale": "fr"},
        "validator": {"$jsonSchema": {"required": ["a"]}}, "validationLevel": "moderate"};
        let losses = collection("app", "c", &options);
        assert_eq!(
            whats(&losses),
            [("option capped+size+max", Outcome::LeftOut), ("option collation", Outcome::LeftOut)]
        );
        assert!(losses[1].reason.contains("collation"), "{}", losses[1]);
        let query_validator = collection("app", "c", &doc! {"validator": {"a": {"$type": "string"}}});
        assert_eq!(whats(&query_validator), [("option validator", Outcome::LeftOut)]);
        assert!(collection("app", "c", &doc! {}).is_empty());
        let view = collection("app", "v", &doc! {"viewOn": "c", "pipeline": []});
        assert_eq!(whats(&view), [("view", Outcome::NotCreated)]);
    }

    #[test]
    fn index_kinds_and_properties_the_target_lacks() {
        let none = doc! {};
        let geo = index("app", "c", &doc! {"v": 2, "key": {"loc": "2d"}, "name": "geo"}, &none);
        assert_eq!(whats(&geo), [("index geo", Outcome::NotBuilt)]);
        let wildcard = index("app", "c", &doc! {"key": {"$**": 1}, "name": "all"}, &none);
        assert_eq!(whats(&wildcard), [("index all", Outcome::NotBuilt)]);
        let french = doc! {"key": {"a": 1}, "name": "a", "collation": {"locale": "fr"}, "hidden": true};
        let losses = index("app", "c", &french, &none);
        assert_eq!(
            whats(&losses),
            [("index a option collation", Outcome::LeftOut), ("index a option hidden", Outcome::NotBuilt)]
        );
        let text = doc! {"key": {"_fts": "text", "_ftsx": 1}, "name": "t", "weights": {"t": 5}, "collation": {"locale": "simple"}};
        assert!(index("app", "c", &text, &doc! {"collation": {"locale": "fr"}}).is_empty(), "simple = none there");
        let partial = doc! {"key": {"a": 1}, "name": "p", "partialFilterExpression": {"a": {"$in": [1, 2]}}};
        assert_eq!(
            whats(&index("app", "c", &partial, &none)),
            [("index p option partialFilterExpression", Outcome::NotBuilt)]
        );
        assert!(index(
            "app",
            "c",
            &doc! {"key": {"a": 1}, "name": "u", "unique": true, "expireAfterSeconds": 5},
            &none
        )
        .is_empty());
    }

    #[test]
    fn documents_the_target_cannot_store_are_dead_lettered() {
        let dotted = document("app", "c", &doc! {"_id": 1, "a": {"b.c": 1}}).expect("refused");
        assert!(dotted.outcome.loses_data() && dotted.reason.contains("b.c"), "{dotted}");
        assert!(document("app", "c", &doc! {"_id": 1, "s": Bson::Symbol("x".into())}).is_some());
        assert_eq!(document("app", "c", &doc! {"_id": 1, "a": [{"b": "c.d"}]}), None);
    }

    #[test]
    fn options_fall_in_groups_with_validation_last() {
        let options = doc! {"validator": {"$jsonSchema": {}}, "capped": true, "size": 4096, "collation": {"locale": "fr"},
        "timeseries": {"timeField": "t"}, "expireAfterSeconds": 60, "validationLevel": "strict"};
        let names: Vec<String> = option_groups(&options).iter().map(|g| g.join("+")).collect();
        assert_eq!(
            names,
            ["capped+size", "collation", "timeseries+expireAfterSeconds", "validator", "validationLevel"]
        );
    }
}
