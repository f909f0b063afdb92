//! Indexes and collection options as the target gets them under a rule: an index on an excluded
//! field (or inside a masked or hashed value) is not created; a unique index on a masked field,
//! whose values would all be equal, neither; index keys, text index weights and partial filters
//! follow renames; an index on a hashed field stays (equal values hash equally, so a unique one
//! still holds). A validator describes the source's documents: under field rules it is not
//! carried. Each thing left out comes back with the reason, for the log and `doctor`.

use bson::{Bson, Document};

use crate::fields::{Action, Fields, Located};
use crate::rules::Rule;

/// Collection options a validator is made of.
const VALIDATION: [&str; 3] = ["validator", "validationLevel", "validationAction"];

impl Rule {
    /// The indexes to create on the target, and one line per index left out.
    pub fn indexes(&self, indexes: Vec<Document>) -> (Vec<Document>, Vec<String>) {
        if self.fields.is_empty() {
            return (indexes, Vec::new());
        }
        let mut kept = Vec::new();
        let mut left_out = Vec::new();
        for spec in indexes {
            let name = spec.get_str("name").unwrap_or("?").to_string();
            match self.index(&spec) {
                Ok(spec) => kept.push(spec),
                Err(reason) => left_out.push(format!("index {name} not created: {reason}")),
            }
        }
        (kept, left_out)
    }

    fn index(&self, spec: &Document) -> Result<Document, String> {
        let unique = spec.get_bool("unique").unwrap_or(false);
        let mut out = Document::new();
        for (key, value) in spec {
            let value = match (key.as_str(), value) {
                ("key" | "weights", Bson::Document(paths)) => {
                    let mut renamed = Document::new();
                    for (path, direction) in paths {
                        renamed.insert(self.index_path(path, unique)?, direction.clone());
                    }
                    Bson::Document(renamed)
                }
                ("partialFilterExpression", Bson::Document(expr)) => Bson::Document(self.partial(expr)?),
                _ => value.clone(),
            };
            out.insert(key.clone(), value);
        }
        Ok(out)
    }

    fn index_path(&self, path: &str, unique: bool) -> Result<String, String> {
        if path.starts_with("_fts") || path == "$**" {
            return Ok(path.to_string());
        }
        match self.fields.locate(path) {
            Located::Keep(out) => Ok(out),
            Located::Drop => Err(format!("its key '{path}' is excluded")),
            Located::Inside(_, node) if unique && Fields::changes_inside(node) => {
                Err(format!("unique over '{path}', parts of which the rules change"))
            }
            Located::Inside(out, _) => Ok(out),
            Located::Value(_, Action::Mask) if unique => {
                Err(format!("unique on '{path}', which is masked (every value would be the same)"))
            }
            Located::Value(out, _) => Ok(out),
            Located::Within { .. } => Err(format!("its key '{path}' is inside a masked or hashed value")),
        }
    }

    /// A partial filter's field paths renamed; one reading a field the rules change is refused.
    fn partial(&self, expr: &Document) -> Result<Document, String> {
        let mut out = Document::new();
        for (key, value) in expr {
            let value = match (key.as_str(), value) {
                ("$and" | "$or", Bson::Array(parts)) => Bson::Array(
                    parts
                        .iter()
                        .map(|part| match part {
                            Bson::Document(d) => self.partial(d).map(Bson::Document),
                            other => Ok(other.clone()),
                        })
                        .collect::<Result<Vec<Bson>, String>>()?,
                ),
                _ => value.clone(),
            };
            let key = match self.fields.locate(key) {
                _ if key.starts_with('$') => key.clone(),
                Located::Keep(out) => out,
                Located::Inside(out, node) if !Fields::changes_inside(node) => out,
                _ => return Err(format!("its partial filter reads '{key}', which the rules change")),
            };
            out.insert(key, value);
        }
        Ok(out)
    }

    /// Collection options (of a `create`, or the changes of a `collMod`) for the target, and one
    /// line per option left out.
    pub fn options(&self, mut options: Document) -> (Document, Vec<String>) {
        if self.fields.is_empty() || !VALIDATION.iter().any(|k| options.contains_key(*k)) {
            return (options, Vec::new());
        }
        for key in VALIDATION {
            options.remove(key);
        }
        let why =
            "validator not carried: it describes the source's documents, which the field rules change".to_string();
        (options, vec![why])
    }
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use crate::config::{HashKey, RuleConfig, TransformConfig};
    use crate::rules::Rules;

    #[test]
    fn indexes_follow_the_rules_and_say_why_not() {
        let config = TransformConfig {
            rules: vec![RuleConfig {
                namespaces: ".*".into(),
                exclude: vec!["ssn".into(), "addresses.phone".into()],
                mask: vec!["phone".into()],
                hash: vec!["email".into()],
                rename: [("addresses.zip".to_string(), "postcode".to_string())].into(),
                ..Default::default()
            }],
            hash_key: HashKey::new("0123456789abcdef"),
            ..Default::default()
        };
        let rule = Rules::load(&config).expect("valid").for_namespace("a.b").expect("rule");
        let indexes = vec![
            doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"},
            doc! {"v": 2, "key": {"ssn": 1}, "name": "ssn_1", "unique": true},
            doc! {"v": 2, "key": {"email": 1}, "name": "email_1", "unique": true},
            doc! {"v": 2, "key": {"phone": 1}, "name": "phone_1", "unique": true},
            doc! {"v": 2, "key": {"phone": 1}, "name": "phone_plain"},
            doc! {"v": 2, "key": {"addresses.zip": 1, "age": -1}, "name": "zip_age",
            "partialFilterExpression": {"addresses.zip": {"$exists": true}}},
            doc! {"v": 2, "key": {"addresses": 1}, "name": "addresses_1", "unique": true},
            doc! {"v": 2, "key": {"age": 1}, "name": "adults", "partialFilterExpression": {"$and": [{"email": {"$exists": true}}]}},
        ];
        let (kept, left_out) = rule.indexes(indexes);
        let names: Vec<&str> = kept.iter().map(|i| i.get_str("name").expect("name")).collect();
        assert_eq!(names, ["_id_", "email_1", "phone_plain", "zip_age"], "{left_out:#?}");
        assert_eq!(
            kept[3],
            doc! {"v": 2, "key": {"addresses.postcode": 1, "age": -1}, "name": "zip_age",
            "partialFilterExpression": {"addresses.postcode": {"$exists": true}}}
        );
        assert_eq!(left_out.len(), 4, "{left_out:#?}");
        assert!(left_out[0].starts_with("index ssn_1 not created: its key 'ssn' is excluded"), "{left_out:#?}");
        let (options, dropped) = rule.options(doc! {"validator": {"$jsonSchema": {}}, "collation": {"locale": "fr"}});
        assert_eq!((options, dropped.len()), (doc! {"collation": {"locale": "fr"}}, 1));
    }
}
