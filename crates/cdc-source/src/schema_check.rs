//! Where the change stream does not report index changes (Amazon DocumentDB, MongoDB before
//! 6.0): every `capture.schema_check_interval_ms` the indexes of every captured collection are
//! listed and compared with the last listing; new or changed ones go out as `createIndexes`,
//! dropped ones as `dropIndexes`. What changed while the service was stopped is not known, so
//! the first listing after a start sends every index again (a sink builds an index that exists
//! already as a no-op); an index dropped while it was stopped stays on the target.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bson::Document;
use envelope::{ClusterTime, Ddl, Namespace};

use crate::convert::Converter;
use crate::error::Error;
use crate::record::Item;
use crate::schema;
use crate::server::{cluster_time, now_ms};
use crate::watch::next_tick;

/// A collection's indexes by name.
type Indexes = BTreeMap<String, Document>;

pub struct IndexCheck {
    interval: Duration,
    last: Instant,
    /// The last listing; none before the first.
    known: Option<BTreeMap<Namespace, Indexes>>,
    /// Where the last changes were positioned: each comparison's come later.
    at: Option<ClusterTime>,
}

impl IndexCheck {
    /// A check every `interval`; none when it is zero.
    pub fn every(interval: Duration) -> Option<Self> {
        (!interval.is_zero()).then(|| Self { interval, last: Instant::now(), known: None, at: None })
    }

    pub fn due(&self) -> bool {
        self.last.elapsed() >= self.interval
    }

    /// Lists and compares; returns the changes, positioned at the source's cluster time now.
    pub async fn run(&mut self, client: &mongodb::Client, converter: &Converter) -> Result<Option<Item>, Error> {
        self.last = Instant::now();
        let mut listing = BTreeMap::new();
        for listed in schema::captured(client, &converter.filter).await?.into_iter().filter(|l| !l.view) {
            let mut specs = schema::indexes(client, &listed.ns).await?;
            schema::simple_collation(&listed.options, &mut specs);
            let indexes: Indexes =
                specs.into_iter().map(|spec| (spec.get_str("name").unwrap_or_default().to_string(), spec)).collect();
            listing.insert(listed.ns, indexes);
        }
        let mut ddl = Vec::new();
        for (ns, now) in &listing {
            let before = self.known.as_ref().and_then(|known| known.get(ns));
            let (created, dropped) = changes(before, now);
            if !dropped.is_empty() {
                ddl.push(Ddl::DropIndexes { ns: ns.clone(), names: dropped });
            }
            if !created.is_empty() {
                ddl.push(Ddl::CreateIndexes { ns: ns.clone(), indexes: created });
            }
        }
        let first = self.known.is_none();
        self.known = Some(listing);
        if ddl.is_empty() {
            return Ok(None);
        }
        // A sink knows a DDL by kind, namespace and time: each comparison gets a time of its own.
        let mut at = cluster_time(client).await?;
        if let Some(last) = self.at {
            at = at.max(next_tick(last));
        }
        self.at = Some(at);
        tracing::info!(changes = ddl.len(), first, "index comparison: sending what changed");
        let now = now_ms();
        let records = ddl.into_iter().flat_map(|ddl| converter.schema_records(ddl, at, now)).collect();
        Ok(Some(Item { records, progress: None, cluster_time: Some(at) }))
    }
}

/// What changed between two listings of a collection's indexes: the indexes to build (new, or
/// with other options) and the names of those dropped. Without an earlier listing, every index
/// is new.
pub fn changes(before: Option<&Indexes>, now: &Indexes) -> (Vec<Document>, Vec<String>) {
    let empty = Indexes::new();
    let before = before.unwrap_or(&empty);
    let created = now.iter().filter(|(name, spec)| before.get(*name) != Some(spec)).map(|(_, spec)| spec.clone());
    let dropped = before.keys().filter(|name| !now.contains_key(*name)).cloned();
    (created.collect(), dropped.collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn listing(specs: &[Document]) -> Indexes {
        specs.iter().map(|s| (s.get_str("name").unwrap_or_default().to_string(), s.clone())).collect()
    }

    #[test]
    fn new_changed_and_dropped_indexes() {
        let a = doc! {"key": {"a": 1}, "name": "a_1"};
        let b = doc! {"key": {"b": 1}, "name": "b_1", "expireAfterSeconds": 60};
        let b_later = doc! {"key": {"b": 1}, "name": "b_1", "expireAfterSeconds": 30};
        let c = doc! {"key": {"c": 1}, "name": "c_1"};
        let before = listing(&[a.clone(), b.clone()]);
        assert_eq!(changes(Some(&before), &before), (vec![], vec![]), "nothing changed");
        let (created, dropped) = changes(Some(&before), &listing(&[b_later.clone(), c.clone()]));
        assert_eq!(created, vec![b_later, c]);
        assert_eq!(dropped, vec!["a_1".to_string()]);
        assert_eq!(changes(None, &before), (vec![a, b], vec![]), "without an earlier listing all are new");
    }

    #[test]
    fn a_check_needs_an_interval() {
        assert!(IndexCheck::every(Duration::ZERO).is_none());
        let check = IndexCheck::every(Duration::from_secs(3600)).expect("a check");
        assert!(!check.due());
    }
}
