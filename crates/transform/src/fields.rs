//! The field rules of one namespace as a tree of source field names, checked for conflicts when
//! built, then applied to whole documents ([`Fields::document`]) or located for one dotted path
//! of an update or an index ([`Fields::locate`]).
//!
//! Paths name fields, never array positions: a path goes through arrays of documents the way
//! MongoDB's dotted paths do, so `addresses.phone` is the `phone` of every element. In a path
//! from the source (an update's `addresses.2.phone`) a part made of digits below the top level
//! is read as an array position.

use std::collections::{BTreeMap, BTreeSet};

use bson::{Bson, Document};

use crate::config::HashOutput;
use crate::values::{self, Hasher};

/// What happens to the value at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Exclude,
    Mask,
    Hash(HashOutput),
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Exclude => "exclude",
            Action::Mask => "mask",
            Action::Hash(_) => "hash",
        }
    }
}

/// One field name in the tree.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Node {
    children: BTreeMap<String, Node>,
    /// The name this field is written under.
    rename: Option<String>,
    action: Option<Action>,
    /// Names children are renamed to: a field of the source already called so is dropped.
    reserved: BTreeSet<String>,
}

impl Node {
    /// Whether a value action applies at or below this node.
    fn changes_values(&self) -> bool {
        self.action.is_some() || self.children.values().any(Node::changes_values)
    }
}

/// The field rules of one namespace.
#[derive(Debug, Default, Clone)]
pub struct Fields {
    root: Node,
    hasher: Option<Hasher>,
}

/// Where a dotted source path stands against the rules.
#[derive(Debug, PartialEq)]
pub enum Located<'a> {
    /// No rule at or below it: the value as it is, at `out`.
    Keep(String),
    /// Excluded (or hidden by a rename onto its name): gone.
    Drop,
    /// Rules apply below it: its value goes through `node`.
    Inside(String, &'a Node),
    /// A masked or hashed value, or an element of one that is an array: `action` applies.
    Value(String, Action),
    /// Inside a masked or hashed value (a document, or a document in its array): the value or
    /// element at `source` (dotted, in the source's names) changed as a whole, written at `out`.
    Within { out: String, source: String, action: Action },
}

/// Whether a path part is an array position.
pub fn is_index(part: &str) -> bool {
    !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit())
}

/// A configured path's problem, if any.
pub fn check_path(path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Some(format!("'{path}' is not a dotted field path"));
    }
    if parts[0] == "_id" {
        return Some(format!("'{path}': rules cannot change _id (it keys every record)"));
    }
    if parts.iter().any(|p| p.starts_with('$')) {
        return Some(format!("'{path}': a part starts with '$'"));
    }
    if parts.iter().any(|p| is_index(p)) {
        return Some(format!("'{path}': array positions are not supported (a path applies to every element)"));
    }
    None
}

impl Fields {
    /// Builds the tree; `problems` gets every conflict (two actions on one path, one inside
    /// another's, a rename onto a name another rule uses or another rename takes).
    pub fn build(
        actions: &[(String, Action)],
        renames: &BTreeMap<String, String>,
        hasher: Option<Hasher>,
        problems: &mut Vec<String>,
    ) -> Fields {
        let mut root = Node::default();
        let mut sorted: Vec<&(String, Action)> = actions.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (i, (path, action)) in sorted.iter().enumerate() {
            if let Some(problem) = check_path(path) {
                problems.push(problem);
                continue;
            }
            if let Some((other, other_action)) =
                sorted[..i].iter().map(|(p, a)| (p, a)).find(|(p, _)| p.as_str() == path || inside(path, p))
            {
                problems.push(format!(
                    "path conflict: {} '{path}' and {} '{other}' (one inside the other, or the same path twice)",
                    action.name(),
                    other_action.name()
                ));
                continue;
            }
            node_at(&mut root, path).action = Some(*action);
        }
        for (path, name) in renames {
            if let Some(problem) = check_path(path) {
                problems.push(problem);
                continue;
            }
            if name.is_empty() || name.contains('.') || name.starts_with('$') || is_index(name) {
                problems.push(format!("rename '{path}' to '{name}': the new name must be one field name"));
                continue;
            }
            let parent = path.rsplit_once('.').map(|(p, _)| p);
            if parent.is_none() && name == "_id" {
                problems.push(format!("rename '{path}' to '_id': rules cannot change _id"));
                continue;
            }
            if let Some((other, action)) = actions.iter().find(|(p, _)| inside(path, p)) {
                problems.push(format!(
                    "path conflict: rename '{path}' is inside {} '{other}', which replaces it",
                    action.name()
                ));
                continue;
            }
            if let Some((_, Action::Exclude)) = actions.iter().find(|(p, _)| p == path) {
                problems.push(format!("path conflict: '{path}' is both excluded and renamed"));
                continue;
            }
            let target = parent.map_or(name.clone(), |p| format!("{p}.{name}"));
            let named =
                actions.iter().map(|(p, _)| p).chain(renames.keys()).any(|p| *p == target || inside(p, &target));
            if named {
                problems
                    .push(format!("rename '{path}' to '{name}': '{target}' is an existing field another rule names"));
                continue;
            }
            if !node_at(&mut root, parent.unwrap_or_default()).reserved.insert(name.clone()) {
                problems.push(format!("rename '{path}' to '{name}': another rename takes that name"));
                continue;
            }
            node_at(&mut root, path).rename = Some(name.clone());
        }
        Fields { root, hasher }
    }

    /// Whether any field rule is there.
    pub fn is_empty(&self) -> bool {
        self.root.children.is_empty()
    }

    /// The document as the rules make it (field order kept; a renamed field stays in place).
    pub fn document(&self, doc: &Document) -> Document {
        if self.is_empty() {
            return doc.clone();
        }
        self.apply_document(&self.root, doc)
    }

    fn apply_document(&self, node: &Node, doc: &Document) -> Document {
        let mut out = Document::new();
        for (name, value) in doc {
            if node.reserved.contains(name) {
                continue;
            }
            let Some(child) = node.children.get(name) else {
                out.insert(name.clone(), value.clone());
                continue;
            };
            let name = child.rename.clone().unwrap_or_else(|| name.clone());
            match child.action {
                Some(Action::Exclude) => {}
                Some(action) => {
                    out.insert(name, self.act(action, value));
                }
                None => {
                    out.insert(name, self.apply_value(child, value));
                }
            }
        }
        out
    }

    /// A value below `node`: a document through the node's rules, an array element by element.
    pub fn apply_value(&self, node: &Node, value: &Bson) -> Bson {
        match value {
            Bson::Document(doc) => Bson::Document(self.apply_document(node, doc)),
            Bson::Array(items) => Bson::Array(items.iter().map(|item| self.apply_value(node, item)).collect()),
            other => other.clone(),
        }
    }

    /// Mask or hash a value (exclusion is the caller's).
    pub fn act(&self, action: Action, value: &Bson) -> Bson {
        match (action, &self.hasher) {
            (Action::Hash(output), Some(hasher)) => hasher.hash(value, output),
            // Without a key the rules did not compile: never reached, and never the clear value.
            (Action::Hash(_), None) | (Action::Mask, _) => values::mask(value),
            (Action::Exclude, _) => Bson::Null,
        }
    }

    /// Where a dotted path of the source (an update's field, an index key) stands.
    pub fn locate<'a>(&'a self, path: &str) -> Located<'a> {
        let parts: Vec<&str> = path.split('.').collect();
        let mut node = &self.root;
        let mut out: Vec<&str> = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            if let Some(child) = node.children.get(*part) {
                out.push(child.rename.as_deref().unwrap_or(part));
                match child.action {
                    Some(Action::Exclude) => return Located::Drop,
                    Some(action) => {
                        let rest = &parts[i + 1..];
                        let positions = rest.iter().take_while(|p| is_index(p)).count();
                        out.extend(&rest[..positions]);
                        if positions == rest.len() {
                            return Located::Value(out.join("."), action);
                        }
                        let source = parts[..=i + positions].join(".");
                        return Located::Within { out: out.join("."), source, action };
                    }
                    None => {
                        node = child;
                        continue;
                    }
                }
            }
            if node.reserved.contains(*part) {
                return Located::Drop;
            }
            if i > 0 && is_index(part) {
                out.push(part);
                continue;
            }
            out.extend(&parts[i..]);
            return Located::Keep(out.join("."));
        }
        if node.children.is_empty() && node.reserved.is_empty() {
            return Located::Keep(out.join("."));
        }
        Located::Inside(out.join("."), node)
    }

    /// Whether a value below the located path is changed by a rule (not only renamed).
    pub fn changes_inside(node: &Node) -> bool {
        node.children.values().any(Node::changes_values) || !node.reserved.is_empty()
    }

    /// Every rule as `(path, what)`, for descriptions.
    pub fn list(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        list(&self.root, "", &mut out);
        out
    }
}

fn list(node: &Node, prefix: &str, out: &mut Vec<(String, String)>) {
    for (name, child) in &node.children {
        let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
        if let Some(to) = &child.rename {
            out.push((path.clone(), format!("rename to {to}")));
        }
        match child.action {
            Some(Action::Hash(HashOutput::String)) => out.push((path.clone(), "hash (string)".into())),
            Some(Action::Hash(HashOutput::Binary)) => out.push((path.clone(), "hash (binary)".into())),
            Some(action) => out.push((path.clone(), action.name().into())),
            None => {}
        }
        list(child, &path, out);
    }
}

/// Whether dotted `path` is strictly inside `outer`.
pub fn inside(path: &str, outer: &str) -> bool {
    path.len() > outer.len() && path.starts_with(outer) && path.as_bytes()[outer.len()] == b'.'
}

fn node_at<'a>(root: &'a mut Node, path: &str) -> &'a mut Node {
    let mut node = root;
    if path.is_empty() {
        return node;
    }
    for part in path.split('.') {
        node = node.children.entry(part.to_string()).or_default();
    }
    node
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn fields(actions: &[(&str, Action)], renames: &[(&str, &str)]) -> (Fields, Vec<String>) {
        let actions: Vec<(String, Action)> = actions.iter().map(|(p, a)| (p.to_string(), *a)).collect();
        let renames: BTreeMap<String, String> = renames.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        let mut problems = Vec::new();
        let f = Fields::build(&actions, &renames, Some(Hasher::new(b"0123456789abcdef")), &mut problems);
        (f, problems)
    }

    #[test]
    fn documents_lose_rename_mask_and_hash_fields_through_arrays() {
        let (f, problems) = fields(
            &[("ssn", Action::Exclude), ("addresses.phone", Action::Exclude), ("name.last", Action::Mask)],
            &[("addresses.zip", "postcode"), ("name", "fullName")],
        );
        assert!(problems.is_empty(), "{problems:?}");
        let doc = doc! {"_id": 1, "name": {"first": "Ada", "last": "L"}, "ssn": "1",
        "addresses": [{"zip": "75", "phone": "555", "postcode": "old"}, "not a document", {"city": "X"}]};
        assert_eq!(
            f.document(&doc),
            doc! {"_id": 1, "fullName": {"first": "Ada", "last": "****"},
            "addresses": [{"postcode": "75"}, "not a document", {"city": "X"}]}
        );
    }

    #[test]
    fn paths_of_updates_are_located_with_array_positions() {
        let (f, _) = fields(
            &[
                ("ssn", Action::Exclude),
                ("addresses.phone", Action::Exclude),
                ("email", Action::Hash(HashOutput::String)),
                ("geo", Action::Mask),
            ],
            &[("addresses.zip", "postcode"), ("addresses", "addrs")],
        );
        assert_eq!(f.locate("age"), Located::Keep("age".into()));
        assert_eq!(f.locate("ssn"), Located::Drop);
        assert_eq!(f.locate("ssn.x"), Located::Drop);
        assert_eq!(f.locate("addresses.3.phone"), Located::Drop);
        assert_eq!(f.locate("addresses.3.postcode"), Located::Drop, "hidden by the rename onto its name");
        assert_eq!(f.locate("addresses.3.zip"), Located::Keep("addrs.3.postcode".into()));
        assert_eq!(f.locate("addresses.3.city"), Located::Keep("addrs.3.city".into()));
        assert!(matches!(f.locate("addresses.3"), Located::Inside(out, _) if out == "addrs.3"));
        assert!(matches!(f.locate("addresses"), Located::Inside(out, _) if out == "addrs"));
        assert_eq!(f.locate("email"), Located::Value("email".into(), Action::Hash(HashOutput::String)));
        assert_eq!(f.locate("email.1"), Located::Value("email.1".into(), Action::Hash(HashOutput::String)));
        assert_eq!(
            f.locate("geo.2.lat"),
            Located::Within { out: "geo.2".into(), source: "geo.2".into(), action: Action::Mask }
        );
    }

    #[test]
    fn conflicts_are_all_reported() {
        let (_, problems) = fields(
            &[
                ("a", Action::Exclude),
                ("a.b", Action::Mask),
                ("c", Action::Mask),
                ("c", Action::Exclude),
                ("_id", Action::Mask),
                ("d.0", Action::Mask),
                ("x", Action::Mask),
            ],
            &[("a.z", "q"), ("e", "f"), ("g", "f"), ("h", "x"), ("i", "j.k"), ("x", "hashed_x")],
        );
        let text = problems.join("\n");
        assert_eq!(problems.len(), 8, "{text}");
        assert!(text.contains("rules cannot change _id"), "{text}");
        assert!(text.contains("array positions"), "{text}");
        assert!(text.contains("another rename takes that name"), "{text}");
        assert!(text.contains("existing field another rule names"), "{text}");
        assert!(text.contains("must be one field name"), "{text}");
    }
}
