//! The rules compiled and checked: every configuration problem at once (unknown operators, path
//! conflicts, renames onto fields in use, filters on excluded fields, a missing hash key), then
//! one [`Rule`] per configured namespace pattern, the first match winning.

use std::collections::BTreeMap;
use std::sync::Arc;

use regex::Regex;

use crate::config::{RuleConfig, TransformConfig};
use crate::fields::{inside, Action, Fields};
use crate::filter::Filter;
use crate::values::Hasher;

/// The shortest hash key taken, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// What applies to one namespace's documents.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The configured `namespaces` pattern, for descriptions.
    pub namespaces: String,
    pub(crate) fields: Fields,
    pub(crate) filter: Option<Filter>,
}

/// Every rule, in order.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<(Regex, Arc<Rule>)>,
}

impl Rules {
    /// Compiles the configuration; `Err` lists every problem, each naming its rule.
    pub fn load(config: &TransformConfig) -> Result<Rules, Vec<String>> {
        let mut problems = Vec::new();
        if !config.rules_file.is_empty() && !config.rules.is_empty() {
            problems.push("set transforms.rules or transforms.rules_file, not both".into());
        }
        let configured = config.load_rules().unwrap_or_else(|e| {
            problems.push(e);
            Vec::new()
        });
        let hashes = configured.iter().any(|r| !r.hash.is_empty());
        let hasher = match config.load_key() {
            Ok(Some(key)) if key.len() < MIN_KEY_BYTES => {
                problems.push(format!(
                    "the transforms hash key has {} bytes: at least {MIN_KEY_BYTES} are needed",
                    key.len()
                ));
                None
            }
            Ok(Some(key)) => Some(Hasher::new(&key)),
            Ok(None) if hashes => {
                problems.push(
                    "hash rules need a key: set transforms.hash_key (from the environment) or transforms.hash_key_file"
                        .into(),
                );
                None
            }
            Ok(None) => None,
            Err(e) => {
                problems.push(e);
                None
            }
        };
        let mut rules = Vec::new();
        for (i, rule) in configured.iter().enumerate() {
            let at = format!("transforms.rules[{i}] ({})", rule.namespaces);
            let mut found = Vec::new();
            let compiled = compile(rule, hasher.clone(), &mut found);
            problems.extend(found.into_iter().map(|p| format!("{at}: {p}")));
            if let Some(compiled) = compiled {
                rules.push(compiled);
            }
        }
        if problems.is_empty() {
            Ok(Rules { rules })
        } else {
            Err(problems)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule for `db.collection`, if any: the first whose pattern matches.
    pub fn for_namespace(&self, namespace: &str) -> Option<Arc<Rule>> {
        self.rules.iter().find(|(re, _)| re.is_match(namespace)).map(|(_, rule)| rule.clone())
    }

    /// Every rule, in order.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Rule>> {
        self.rules.iter().map(|(_, rule)| rule)
    }
}

fn compile(config: &RuleConfig, hasher: Option<Hasher>, problems: &mut Vec<String>) -> Option<(Regex, Arc<Rule>)> {
    if config.namespaces.is_empty() {
        problems.push("namespaces must be set (a regular expression over db.collection; '.*' for all)".into());
    }
    let pattern = Regex::new(&format!("^(?:{})$", config.namespaces))
        .map_err(|e| problems.push(format!("namespaces is not a valid regular expression: {e}")))
        .ok();
    let mut actions: Vec<(String, Action)> = Vec::new();
    actions.extend(config.exclude.iter().map(|p| (p.clone(), Action::Exclude)));
    actions.extend(config.mask.iter().map(|p| (p.clone(), Action::Mask)));
    actions.extend(config.hash.iter().map(|p| (p.clone(), Action::Hash(config.hash_output))));
    let fields = Fields::build(&actions, &config.rename, hasher, problems);
    let filter = match config.filter.trim() {
        "" => None,
        text => match Filter::parse(text) {
            Ok(filter) => Some(filter),
            Err(found) => {
                problems.extend(found);
                None
            }
        },
    };
    if let Some(filter) = &filter {
        for path in filter.paths() {
            let plain: String = path.split('.').filter(|p| !crate::fields::is_index(p)).collect::<Vec<_>>().join(".");
            for excluded in &config.exclude {
                if plain == *excluded || inside(&plain, excluded) || inside(excluded, &plain) {
                    problems.push(format!(
                        "the filter reads '{path}', which is excluded: the target could never be checked against it"
                    ));
                }
            }
        }
    }
    let rule = Rule { namespaces: config.namespaces.clone(), fields, filter };
    pattern.map(|re| (re, Arc::new(rule)))
}

impl Rule {
    /// Whether documents pass the filter (all do without one).
    pub fn passes(&self, doc: &bson::Document) -> bool {
        self.filter.as_ref().is_none_or(|f| f.matches(doc))
    }

    /// The document as the field rules make it.
    pub fn document(&self, doc: &bson::Document) -> bson::Document {
        self.fields.document(doc)
    }

    /// Whether any field rule is there.
    pub fn changes_fields(&self) -> bool {
        !self.fields.is_empty()
    }

    /// What the rule does, one line per field rule and one for the filter.
    pub fn describe(&self) -> Vec<String> {
        let mut by_path: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (path, what) in self.fields.list() {
            by_path.entry(path).or_default().push(what);
        }
        let mut lines: Vec<String> =
            by_path.into_iter().map(|(path, what)| format!("{path}: {}", what.join(", "))).collect();
        if let Some(filter) = &self.filter {
            lines.push(format!("filter {}", filter.text()));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HashKey;

    fn rule(f: impl FnOnce(&mut RuleConfig)) -> RuleConfig {
        let mut rule = RuleConfig { namespaces: r"crm\.people".into(), ..Default::default() };
        f(&mut rule);
        rule
    }

    #[test]
    fn every_problem_of_every_rule_is_reported() {
        let config = TransformConfig {
            rules: vec![
                rule(|r| {
                    r.exclude = vec!["ssn".into(), "addresses.phone".into()];
                    r.hash = vec!["email".into()];
                    r.filter = r#"{"ssn": {"$exists": true}, "addresses": {"$size": 1}}"#.into();
                }),
                rule(|r| {
                    r.namespaces = "(".into();
                    r.mask = vec!["a".into(), "a.b".into()];
                    r.rename = [("c".to_string(), "a".to_string())].into();
                    r.filter = r#"{"x": {"$elemMatch": {}}}"#.into();
                }),
            ],
            ..Default::default()
        };
        let problems = Rules::load(&config).expect_err("invalid");
        let text = problems.join("\n");
        assert!(text.contains("hash rules need a key"), "{text}");
        assert!(text.contains("reads 'ssn', which is excluded"), "{text}");
        assert!(text.contains("reads 'addresses', which is excluded"), "{text}");
        assert!(text.contains("unknown operator $elemMatch"), "{text}");
        assert!(text.contains("transforms.rules[1] ((): namespaces is not a valid"), "{text}");
        assert!(text.contains("path conflict"), "{text}");
        assert!(text.contains("existing field"), "{text}");
        assert_eq!(problems.len(), 7, "{text}");
    }

    #[test]
    fn the_first_matching_rule_applies() {
        let config = TransformConfig {
            rules: vec![rule(|r| r.exclude = vec!["ssn".into()]), rule(|r| r.namespaces = "crm\\..*".into())],
            hash_key: HashKey::new("short"),
            ..Default::default()
        };
        assert!(Rules::load(&config).is_err(), "a key of 5 bytes");
        let rules =
            Rules::load(&TransformConfig { hash_key: HashKey::new("0123456789abcdef"), ..config }).expect("valid");
        assert!(rules.for_namespace("crm.people").expect("rule").changes_fields());
        assert!(!rules.for_namespace("crm.orders").expect("rule").changes_fields());
        assert!(rules.for_namespace("xcrm.people").is_none(), "anchored");
        assert!(rules.for_namespace("shop.people").is_none());
    }
}
