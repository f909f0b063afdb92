//! The `[transforms]` rules on the way out (the `transform` crate): every change event, snapshot
//! read and schema event of a namespace with a rule goes through it before it is encoded, so
//! what a rule hides never reaches Kafka. Pure but for the log lines saying what a rule leaves
//! out of the target's schema.

use std::collections::HashSet;
use std::sync::Mutex;

use bson::RawDocumentBuf;
use envelope::{ChangeEvent, Ddl, Namespace};
use transform::Rules;

use crate::error::Error;

/// A change event through its namespace's rule: `None` when nothing is to be sent.
pub fn change(rules: &Rules, event: ChangeEvent<RawDocumentBuf>) -> Result<Option<ChangeEvent<RawDocumentBuf>>, Error> {
    if rules.is_empty() {
        return Ok(Some(event));
    }
    match rules.for_namespace(&event.ns.to_string()) {
        None => Ok(Some(event)),
        Some(rule) => rule.change(event).map_err(|e| Error::fatal(e.to_string())),
    }
}

/// A document read whole: `None` when the filter leaves it out.
pub fn read(rules: &Rules, ns: &Namespace, doc: RawDocumentBuf) -> Result<Option<RawDocumentBuf>, Error> {
    if rules.is_empty() {
        return Ok(Some(doc));
    }
    match rules.for_namespace(&ns.to_string()) {
        None => Ok(Some(doc)),
        Some(rule) => rule.read(&ns.to_string(), &doc).map_err(|e| Error::fatal(e.to_string())),
    }
}

/// What was said in the log already: the periodic index comparison sends every index again
/// after a start, and each thing left out is worth one line per run of the pipeline.
#[derive(Debug, Default)]
pub struct Reported(Mutex<HashSet<String>>);

impl Reported {
    fn first(&self, line: String) -> Option<String> {
        let mut seen = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        seen.insert(line.clone()).then_some(line)
    }
}

/// A schema event as the target gets it: indexes on hidden fields and validators left out (and
/// said in the log, once); `None` when nothing is left of it.
pub fn ddl(rules: &Rules, reported: &Reported, ddl: Ddl) -> Option<Ddl> {
    let Some(ns) = ddl.namespace().filter(|_| !rules.is_empty()).cloned() else { return Some(ddl) };
    let Some(rule) = rules.for_namespace(&ns.to_string()) else { return Some(ddl) };
    let (ddl, left_out) = match ddl {
        Ddl::CreateIndexes { ns, indexes } => {
            let (indexes, left_out) = rule.indexes(indexes);
            (Ddl::CreateIndexes { ns, indexes }, left_out)
        }
        Ddl::Create { ns, options } => {
            let (options, left_out) = rule.options(options);
            (Ddl::Create { ns, options }, left_out)
        }
        Ddl::Modify { ns, changes } => {
            let (changes, left_out) = rule.options(changes);
            (Ddl::Modify { ns, changes }, left_out)
        }
        other => (other, Vec::new()),
    };
    for what in left_out.into_iter().filter_map(|what| reported.first(format!("{ns}: {what}"))) {
        tracing::warn!(rule = %rule.namespaces, "transforms: {what}");
    }
    match &ddl {
        Ddl::CreateIndexes { indexes, .. } if indexes.is_empty() => None,
        Ddl::Modify { changes, .. } if changes.is_empty() => None,
        _ => Some(ddl),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;
    use transform::{RuleConfig, TransformConfig};

    #[test]
    fn schema_events_lose_what_the_rules_hide() {
        let config = TransformConfig {
            rules: vec![RuleConfig {
                namespaces: r"crm\.people".into(),
                exclude: vec!["ssn".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let rules = Rules::load(&config).expect("valid");
        let ns = Namespace::new("crm", "people");
        let reported = Reported::default();
        let only_ssn = Ddl::CreateIndexes { ns: ns.clone(), indexes: vec![doc! {"key": {"ssn": 1}, "name": "ssn_1"}] };
        assert_eq!(ddl(&rules, &reported, only_ssn), None);
        let validator = Ddl::Modify { ns: ns.clone(), changes: doc! {"validator": {"a": 1}} };
        assert_eq!(ddl(&rules, &reported, validator), None);
        let other = Ddl::CreateIndexes { ns: Namespace::new("crm", "orders"), indexes: vec![doc! {"key": {"ssn": 1}}] };
        assert_eq!(ddl(&rules, &reported, other.clone()), Some(other));
        assert_eq!(ddl(&rules, &reported, Ddl::Drop(ns.clone())), Some(Ddl::Drop(ns)));
    }
}
