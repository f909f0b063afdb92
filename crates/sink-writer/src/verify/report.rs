//! What `verify` found: per namespace, then overall; as text for a terminal or JSON for CI; and
//! the outcome, which decides the exit status.

use std::fmt;

use bson::Bson;
use envelope::Namespace;
use serde_json::json;

use super::documents::{Counts, Kind};
use super::scope;

/// What a verify concluded, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Differences that stayed while replication was seen to pass them.
    Different,
    /// Differences replication was not seen to pass (stopped, behind, or the source kept
    /// changing them): neither equal nor known to differ.
    Unconfirmed,
    Equal,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Different => "different",
            Outcome::Unconfirmed => "unconfirmed",
            Outcome::Equal => "equal",
        }
    }

    /// The exit status: 0 equal, 1 different, 3 unconfirmed (2 is an error).
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Equal => 0,
            Outcome::Different => 1,
            Outcome::Unconfirmed => 3,
        }
    }
}

/// What comparing one namespace found, after the rechecks.
pub struct Findings {
    pub kind: scope::Kind,
    pub only_on_target: bool,
    pub compared: u64,
    /// Every difference the comparison found, before the rechecks.
    pub found: Counts,
    /// What stayed different while replication passed it.
    pub different: Vec<(Bson, Kind)>,
    /// What replication was not seen to pass.
    pub unconfirmed: Vec<(Bson, Kind)>,
    /// Found, then seen equal once replication passed it.
    pub in_flight: u64,
    /// Found but not kept to be checked again (over `verify.max_rechecked`).
    pub not_rechecked: u64,
    /// Documents only on the target of a namespace only there.
    pub extra_documents: u64,
    /// Schema differences (what the namespace is, options, indexes) that stayed, and those
    /// replication was not seen to pass.
    pub schema: Vec<String>,
    pub schema_unconfirmed: Vec<String>,
}

impl Findings {
    /// A namespace that could not be compared, and why (a difference of its own).
    pub fn unreadable(kind: scope::Kind, why: String) -> Self {
        Findings {
            kind,
            only_on_target: false,
            compared: 0,
            found: Counts::default(),
            different: Vec::new(),
            unconfirmed: Vec::new(),
            in_flight: 0,
            not_rechecked: 0,
            extra_documents: 0,
            schema: vec![why].into_iter().filter(|w| !w.is_empty()).collect(),
            schema_unconfirmed: Vec::new(),
        }
    }
}

#[derive(Debug)]
pub struct NamespaceReport {
    pub source: Namespace,
    pub target: Namespace,
    pub kind: scope::Kind,
    pub only_on_target: bool,
    pub compared: u64,
    pub found: Counts,
    /// Confirmed differences by kind.
    pub confirmed: Counts,
    pub unconfirmed: u64,
    pub not_rechecked: u64,
    pub in_flight: u64,
    /// Some `_id`s of each kind (at most `max_listed` each), as relaxed extended JSON; the
    /// unconfirmed ones apart.
    pub listed: Vec<(Kind, String)>,
    pub listed_unconfirmed: Vec<String>,
    pub schema: Vec<String>,
    pub schema_unconfirmed: Vec<String>,
}

impl NamespaceReport {
    pub fn new(source: Namespace, target: Namespace, findings: Findings, max_listed: usize) -> Self {
        let text = |id: &Bson| envelope::extjson::value_to_string(id, envelope::extjson::Style::Relaxed);
        let mut confirmed = Counts::default();
        for (_, kind) in &findings.different {
            confirmed.add(*kind);
        }
        confirmed.extra += findings.extra_documents;
        let mut listed = Vec::new();
        for kind in [Kind::Missing, Kind::Extra, Kind::Different] {
            let of_kind = findings.different.iter().filter(|(_, k)| *k == kind).take(max_listed);
            listed.extend(of_kind.map(|(id, _)| (kind, text(id))));
        }
        Self {
            source,
            target,
            kind: findings.kind,
            only_on_target: findings.only_on_target,
            compared: findings.compared,
            found: findings.found,
            confirmed,
            unconfirmed: findings.unconfirmed.len() as u64 + findings.not_rechecked,
            not_rechecked: findings.not_rechecked,
            in_flight: findings.in_flight,
            listed,
            listed_unconfirmed: findings.unconfirmed.iter().take(max_listed).map(|(id, _)| text(id)).collect(),
            schema: findings.schema,
            schema_unconfirmed: findings.schema_unconfirmed,
        }
    }

    /// Confirmed differences: documents and schema lines.
    pub fn differences(&self) -> u64 {
        self.confirmed.total() + self.schema.len() as u64
    }

    /// Differences not confirmed either way.
    pub fn unconfirmed(&self) -> u64 {
        self.unconfirmed + self.schema_unconfirmed.len() as u64
    }

    fn equal_documents(&self) -> u64 {
        self.compared.saturating_sub(self.found.missing + self.found.different)
            + (self.found.missing + self.found.different).min(self.in_flight)
    }

    fn to_json(&self) -> serde_json::Value {
        let ids = |kind: Kind| -> Vec<&str> {
            self.listed.iter().filter(|(k, _)| *k == kind).map(|(_, id)| id.as_str()).collect()
        };
        json!({
            "namespace": self.source.to_string(), "target": self.target.to_string(), "kind": self.kind,
            "only_on_target": self.only_on_target, "compared": self.compared, "equal": self.equal_documents(),
            "found": self.found, "missing": self.confirmed.missing, "extra": self.confirmed.extra,
            "different": self.confirmed.different, "missing_ids": ids(Kind::Missing), "extra_ids": ids(Kind::Extra),
            "different_ids": ids(Kind::Different), "unconfirmed": self.unconfirmed,
            "unconfirmed_ids": self.listed_unconfirmed, "not_rechecked": self.not_rechecked,
            "in_flight": self.in_flight, "schema": self.schema, "schema_unconfirmed": self.schema_unconfirmed,
        })
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub namespaces: Vec<NamespaceReport>,
    pub seconds: f64,
    /// `full` or `sample`.
    pub mode: &'static str,
    /// `all` (every namespace selected, and those only on the target) or `namespaces`.
    pub scope: &'static str,
    /// The most document digests held at once.
    pub held_peak: u64,
}

impl Report {
    pub fn outcome(&self) -> Outcome {
        if self.differences() > 0 {
            Outcome::Different
        } else if self.unconfirmed() > 0 {
            Outcome::Unconfirmed
        } else {
            Outcome::Equal
        }
    }

    pub fn differences(&self) -> u64 {
        self.namespaces.iter().map(NamespaceReport::differences).sum()
    }

    pub fn unconfirmed(&self) -> u64 {
        self.namespaces.iter().map(NamespaceReport::unconfirmed).sum()
    }

    fn compared(&self) -> u64 {
        self.namespaces.iter().map(|n| n.compared).sum()
    }

    pub fn to_json(&self) -> String {
        let namespaces: Vec<serde_json::Value> = self.namespaces.iter().map(NamespaceReport::to_json).collect();
        let in_flight: u64 = self.namespaces.iter().map(|n| n.in_flight).sum();
        json!({
            "equal": self.outcome() == Outcome::Equal, "outcome": self.outcome(), "mode": self.mode,
            "scope": self.scope, "in_flight": in_flight, "unconfirmed": self.unconfirmed(),
            "compared": self.compared(), "differences": self.differences(), "seconds": self.seconds,
            "docs_per_second": self.compared() as f64 / self.seconds.max(0.001), "held_peak": self.held_peak,
            "namespaces": namespaces,
        })
        .to_string()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<40} {:>10} {:>10} {:>8} {:>8} {:>10} {:>12}  schema",
            "namespace", "compared", "equal", "missing", "extra", "different", "unconfirmed"
        )?;
        for n in &self.namespaces {
            let what = match (n.only_on_target, n.kind) {
                (true, _) => " (only on the target)",
                (false, scope::Kind::View) => " (view)",
                (false, scope::Kind::Timeseries) => " (time-series)",
                (false, scope::Kind::Collection) => "",
            };
            writeln!(
                f,
                "{:<40} {:>10} {:>10} {:>8} {:>8} {:>10} {:>12}  {}",
                format!("{}{what}", n.source),
                n.compared,
                n.equal_documents(),
                n.confirmed.missing,
                n.confirmed.extra,
                n.confirmed.different,
                n.unconfirmed(),
                if n.schema.is_empty() { "equal".to_string() } else { format!("{} differences", n.schema.len()) }
            )?;
            for (kind, id) in &n.listed {
                writeln!(f, "    {kind:?}: _id {id}")?;
            }
            for line in &n.schema {
                writeln!(f, "    {line}")?;
            }
            for id in &n.listed_unconfirmed {
                writeln!(f, "    unconfirmed: _id {id}")?;
            }
            for line in &n.schema_unconfirmed {
                writeln!(f, "    unconfirmed: {line}")?;
            }
            if n.not_rechecked > 0 {
                writeln!(f, "    {} more differences not checked again (verify.max_rechecked)", n.not_rechecked)?;
            }
        }
        let rate = self.compared() as f64 / self.seconds.max(0.001);
        writeln!(
            f,
            "{}: {} documents in {} namespaces compared ({}) in {:.1} s, {rate:.0}/s; {} differences, {} unconfirmed \
             (replication was not seen to pass them: it is stopped or behind, or the source kept changing them)",
            self.outcome().as_str().to_uppercase(),
            self.compared(),
            self.namespaces.len(),
            self.mode,
            self.seconds,
            self.differences(),
            self.unconfirmed()
        )
    }
}
