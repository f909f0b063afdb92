//! What `verify` found: per namespace, then overall; as text for a terminal or JSON for CI.

use std::fmt;

use bson::Bson;
use envelope::Namespace;
use serde_json::json;

use super::documents::Kind;

#[derive(Debug)]
pub struct NamespaceReport {
    pub source: Namespace,
    pub target: Namespace,
    pub compared: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    /// Some `_id`s of each kind (at most `max_listed` each), as relaxed extended JSON.
    pub listed: Vec<(Kind, String)>,
    /// Whether replication was seen to pass every difference before it was checked again
    /// (false: the differences may still be in flight).
    pub confirmed: bool,
    /// Differences seen first that were equal once replication passed them (changes in flight).
    pub in_flight: u64,
    /// Index and collection option differences.
    pub schema: Vec<String>,
}

/// What comparing one namespace found.
pub struct Findings {
    pub compared: u64,
    /// What stayed different after the rechecks.
    pub differences: Vec<(Bson, Kind)>,
    pub confirmed: bool,
    pub in_flight: u64,
    pub schema: Vec<String>,
}

impl NamespaceReport {
    pub fn new(source: Namespace, target: Namespace, findings: Findings, max_listed: usize) -> Self {
        let Findings { compared, differences, confirmed, in_flight, schema } = findings;
        let count = |kind: Kind| differences.iter().filter(|(_, k)| *k == kind).count() as u64;
        let mut listed = Vec::new();
        for kind in [Kind::Missing, Kind::Extra, Kind::Different] {
            listed.extend(
                differences
                    .iter()
                    .filter(|(_, k)| *k == kind)
                    .take(max_listed)
                    .map(|(id, _)| (kind, envelope::extjson::value_to_string(id, envelope::extjson::Style::Relaxed))),
            );
        }
        Self {
            source,
            target,
            compared,
            missing: count(Kind::Missing),
            extra: count(Kind::Extra),
            different: count(Kind::Different),
            listed,
            confirmed,
            in_flight,
            schema,
        }
    }

    pub fn differences(&self) -> u64 {
        self.missing + self.extra + self.different + self.schema.len() as u64
    }

    fn equal_documents(&self) -> u64 {
        self.compared.saturating_sub(self.missing + self.different)
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub namespaces: Vec<NamespaceReport>,
    pub seconds: f64,
    pub mode: &'static str,
}

impl Report {
    pub fn equal(&self) -> bool {
        self.differences() == 0
    }

    pub fn differences(&self) -> u64 {
        self.namespaces.iter().map(NamespaceReport::differences).sum()
    }

    fn compared(&self) -> u64 {
        self.namespaces.iter().map(|n| n.compared).sum()
    }

    pub fn to_json(&self) -> String {
        let namespaces: Vec<serde_json::Value> = self
            .namespaces
            .iter()
            .map(|n| {
                let ids = |kind: Kind| -> Vec<&str> {
                    n.listed.iter().filter(|(k, _)| *k == kind).map(|(_, id)| id.as_str()).collect()
                };
                json!({
                    "namespace": n.source.to_string(), "target": n.target.to_string(), "compared": n.compared,
                    "equal": n.equal_documents(), "missing": n.missing, "extra": n.extra, "different": n.different,
                    "missing_ids": ids(Kind::Missing), "extra_ids": ids(Kind::Extra), "different_ids": ids(Kind::Different),
                    "schema": n.schema, "confirmed": n.confirmed, "in_flight": n.in_flight,
                })
            })
            .collect();
        let in_flight: u64 = self.namespaces.iter().map(|n| n.in_flight).sum();
        json!({
            "equal": self.equal(), "mode": self.mode, "in_flight": in_flight, "compared": self.compared(), "differences": self.differences(),
            "seconds": self.seconds, "docs_per_second": self.compared() as f64 / self.seconds.max(0.001),
            "namespaces": namespaces,
        })
        .to_string()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<40} {:>10} {:>10} {:>8} {:>8} {:>10}  schema",
            "namespace", "compared", "equal", "missing", "extra", "different"
        )?;
        for n in &self.namespaces {
            writeln!(
                f,
                "{:<40} {:>10} {:>10} {:>8} {:>8} {:>10}  {}",
                n.source.to_string(),
                n.compared,
                n.equal_documents(),
                n.missing,
                n.extra,
                n.different,
                if n.schema.is_empty() { "equal".to_string() } else { format!("{} differences", n.schema.len()) }
            )?;
            for (kind, id) in &n.listed {
                writeln!(f, "    {kind:?}: _id {id}")?;
            }
            for line in &n.schema {
                writeln!(f, "    {line}")?;
            }
            if !n.confirmed && n.differences() > 0 {
                writeln!(f, "    (replication did not pass these in time: they may still be in flight)")?;
            }
        }
        let rate = self.compared() as f64 / self.seconds.max(0.001);
        writeln!(
            f,
            "{}: {} documents in {} namespaces compared ({}) in {:.1} s, {rate:.0}/s; {} differences",
            if self.equal() { "EQUAL" } else { "DIFFERENT" },
            self.compared(),
            self.namespaces.len(),
            self.mode,
            self.seconds,
            self.differences()
        )
    }
}
