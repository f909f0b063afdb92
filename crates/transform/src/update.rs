//! An update's `updateDescription` through the field rules, path by path, so that it says what
//! changed in the transformed document and carries nothing the rules hide:
//!
//! | path of the update | updatedFields | removedFields | truncatedArrays |
//! |---|---|---|---|
//! | excluded, or inside an excluded field | dropped | dropped | dropped |
//! | renamed (or inside a renamed field) | under the new name | under the new name | under the new name |
//! | above rules (`addresses.2` set whole) | the value through the rules | kept | kept |
//! | a masked or hashed value, or an array element of one | the value masked or hashed | kept | kept (arrays are taken element by element) |
//! | inside a masked value (a document, or one in its array) | dropped: a masked document is always `{}` | dropped | dropped |
//! | inside a hashed value | that value hashed again, from the looked-up document (dropped without one) | the same | the same |

use bson::{Bson, Document};
use envelope::{TruncatedArray, UpdateDescription};

use crate::fields::{is_index, Action, Fields, Located};

impl Fields {
    /// The description through the rules; `after` is the looked-up source document, before the
    /// rules, when there is one.
    pub fn update(&self, description: &UpdateDescription, after: Option<&Document>) -> UpdateDescription {
        if self.is_empty() {
            return description.clone();
        }
        let mut out = UpdateDescription::default();
        let rehash = |out: &mut UpdateDescription, key: String, source: &str, action: Action| {
            if let (Action::Hash(_), Some(value)) = (action, after.and_then(|doc| lookup(doc, source))) {
                out.updated_fields.insert(key, self.act(action, value));
            }
        };
        for (path, value) in &description.updated_fields {
            match self.locate(path) {
                Located::Keep(key) => {
                    out.updated_fields.insert(key, value.clone());
                }
                Located::Drop => {}
                Located::Inside(key, node) => {
                    out.updated_fields.insert(key, self.apply_value(node, value));
                }
                Located::Value(key, action) => {
                    out.updated_fields.insert(key, self.act(action, value));
                }
                Located::Within { out: key, source, action } => rehash(&mut out, key, &source, action),
            }
        }
        for path in &description.removed_fields {
            match self.locate(path) {
                Located::Keep(key) | Located::Inside(key, _) | Located::Value(key, _) => out.removed_fields.push(key),
                Located::Drop => {}
                Located::Within { out: key, source, action } => rehash(&mut out, key, &source, action),
            }
        }
        for truncated in &description.truncated_arrays {
            match self.locate(&truncated.field) {
                Located::Keep(field) | Located::Inside(field, _) | Located::Value(field, _) => {
                    out.truncated_arrays.push(TruncatedArray { field, size: truncated.size })
                }
                Located::Drop => {}
                Located::Within { out: key, source, action } => rehash(&mut out, key, &source, action),
            }
        }
        out
    }
}

/// The value at a dotted path of the source (array positions as numbers).
fn lookup<'a>(doc: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut parts = path.split('.');
    let mut value = doc.get(parts.next()?)?;
    for part in parts {
        value = match value {
            Bson::Document(d) => d.get(part)?,
            Bson::Array(items) if is_index(part) => items.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// Whether an update may have changed what `paths` read: one of its paths and one of them
/// are the same, or one is inside the other (array positions left out of both).
pub fn touches(description: &UpdateDescription, paths: &[String]) -> bool {
    let changed = description
        .updated_fields
        .keys()
        .chain(&description.removed_fields)
        .chain(description.truncated_arrays.iter().map(|t| &t.field));
    let plain = |path: &str| -> Vec<String> {
        path.split('.').enumerate().filter(|(i, p)| *i == 0 || !is_index(p)).map(|(_, p)| p.to_string()).collect()
    };
    let read: Vec<Vec<String>> = paths.iter().map(|p| plain(p)).collect();
    changed.map(|c| plain(c)).any(|c| read.iter().any(|r| c.iter().zip(r).all(|(a, b)| a == b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HashOutput;
    use crate::values::Hasher;
    use bson::doc;
    use std::collections::BTreeMap;

    fn fields() -> Fields {
        let actions = vec![
            ("ssn".to_string(), Action::Exclude),
            ("addresses.phone".to_string(), Action::Exclude),
            ("phones".to_string(), Action::Mask),
            ("email".to_string(), Action::Hash(HashOutput::String)),
            ("geo".to_string(), Action::Hash(HashOutput::String)),
            ("card".to_string(), Action::Mask),
        ];
        let renames: BTreeMap<String, String> = [("addresses.zip".to_string(), "postcode".to_string())].into();
        let mut problems = Vec::new();
        let f = Fields::build(&actions, &renames, Some(Hasher::new(b"0123456789abcdef")), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        f
    }

    #[test]
    fn every_kind_of_path_of_an_update() {
        let f = fields();
        let hash = |v: Bson| f.act(Action::Hash(HashOutput::String), &v);
        let after = doc! {"_id": 1, "geo": [{"lat": 1}, {"lat": 2}], "email": "a@b.c"};
        let description = UpdateDescription {
            updated_fields: doc! {
                "ssn": "123", "name": "Ada", "addresses.1.zip": "75", "addresses.1.phone": "555",
                "addresses.0": {"zip": "1", "phone": "2", "city": "X"}, "phones.2": "+33", "email": "a@b.c",
                "geo.1.lat": 2, "card.number": "4111", "addresses.0.postcode": "shadowed"
            },
            removed_fields: vec![
                "ssn".into(),
                "nick".into(),
                "addresses.2.zip".into(),
                "card.cvv".into(),
                "geo.0.lng".into(),
            ],
            truncated_arrays: vec![
                TruncatedArray { field: "phones".into(), size: 1 },
                TruncatedArray { field: "addresses".into(), size: 2 },
                TruncatedArray { field: "ssn".into(), size: 0 },
            ],
        };
        let out = f.update(&description, Some(&after));
        assert_eq!(
            out.updated_fields,
            doc! {
                "name": "Ada", "addresses.1.postcode": "75", "addresses.0": {"postcode": "1", "city": "X"},
                "phones.2": "****", "email": hash(Bson::String("a@b.c".into())),
                "geo.1": hash(Bson::Document(doc! {"lat": 2})), "geo.0": hash(Bson::Document(doc! {"lat": 1}))
            }
        );
        assert_eq!(out.removed_fields, vec!["nick".to_string(), "addresses.2.postcode".to_string()]);
        assert_eq!(
            out.truncated_arrays,
            vec![
                TruncatedArray { field: "phones".into(), size: 1 },
                TruncatedArray { field: "addresses".into(), size: 2 }
            ]
        );
        let without = f.update(&description, None);
        assert!(!without.updated_fields.contains_key("geo.1"), "no looked-up document: nothing to hash");
    }

    #[test]
    fn an_update_touches_a_filter_through_parents_children_and_positions() {
        let paths = vec!["status".to_string(), "addresses.country".to_string()];
        let touch =
            |fields: Document| touches(&UpdateDescription { updated_fields: fields, ..Default::default() }, &paths);
        assert!(touch(doc! {"status": 1}));
        assert!(touch(doc! {"addresses": []}));
        assert!(touch(doc! {"addresses.3.country": "FR"}));
        assert!(touch(doc! {"addresses.3": {}}));
        assert!(!touch(doc! {"addresses.3.city": "Paris"}));
        assert!(!touch(doc! {"statusNote": 1, "name": "x"}));
        let removed = UpdateDescription { removed_fields: vec!["status".into()], ..Default::default() };
        assert!(touches(&removed, &paths));
    }
}
