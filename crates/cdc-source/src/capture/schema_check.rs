//! Where the change stream does not report schema changes (Amazon DocumentDB, MongoDB before
//! 6.0): every `capture.schema_check_interval_ms` every captured collection is listed and
//! compared with the last listing. A collection new since then goes out as `create` with its
//! options (so a collection created while streaming reaches the target with its validator, not
//! bare); changed validation settings as `modify`; new or changed indexes as `createIndexes`,
//! dropped ones as `dropIndexes`. What changed while the service was stopped is not known, so the
//! first listing after a start sends every collection and index again (a sink creates what
//! exists already as a no-op, and brings an existing collection's validation in line); an index
//! dropped while it was stopped stays on the target. sink-writer compares the target's indexes
//! with what was announced (extra ones are reported there).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use envelope::{ClusterTime, Ddl, Namespace, Snapshot};

use crate::capture::convert::Converter;
use crate::capture::schema;
use crate::capture::watch::{next_tick, prev_tick};
use crate::delivery::checkpoint::CheckpointUpdate;
use crate::delivery::record::Item;
use crate::error::Error;
use crate::server::{cluster_time, now_ms};

/// A collection's indexes by name.
type Indexes = BTreeMap<String, Document>;

/// A collection as listed: its options and its indexes.
#[derive(Debug, Clone, PartialEq)]
struct Listing {
    options: Document,
    indexes: Indexes,
}

/// The collection options a `collMod` changes.
const MODIFIABLE: [&str; 4] = ["validator", "validationLevel", "validationAction", "changeStreamPreAndPostImages"];

/// The value of a [`MODIFIABLE`] option that means "none" (the server's default).
fn none(field: &str) -> Bson {
    match field {
        "validationLevel" => Bson::String("strict".into()),
        "validationAction" => Bson::String("error".into()),
        "changeStreamPreAndPostImages" => Bson::Document(doc! {"enabled": false}),
        _ => Bson::Document(Document::new()),
    }
}

pub struct IndexCheck {
    interval: Duration,
    last: Instant,
    /// The last listing; none before the first.
    known: Option<BTreeMap<Namespace, Listing>>,
    /// Where the last changes were positioned, and which DDL (kind and namespace) went there: a
    /// sink knows a DDL by kind, namespace and time, so none goes twice at one time.
    sent: Option<(ClusterTime, Vec<String>)>,
    /// How far the stream has read: every change before this cluster time is read, none after
    /// it (changes at it may be, as a transaction's share one time). A comparison's changes are
    /// positioned here; none when the stream has said nothing yet.
    read_up_to: Option<ClusterTime>,
    /// The stream's position as a checkpoint (its last token, with its time when known): a
    /// comparison's changes carry it, so that a restart resumes past them and never sends what
    /// they said again at an earlier position.
    position: Option<CheckpointUpdate>,
}

impl IndexCheck {
    /// A check every `interval`; none when it is zero.
    pub fn every(interval: Duration) -> Option<Self> {
        // The first listing is due at once: until it, new collections cannot be told apart.
        let last = Instant::now().checked_sub(interval).unwrap_or_else(Instant::now);
        (!interval.is_zero()).then(|| Self {
            interval,
            last,
            known: None,
            sent: None,
            read_up_to: None,
            position: None,
        })
    }

    pub fn due(&self) -> bool {
        self.last.elapsed() >= self.interval
    }

    /// The stream has read up to `at` (an event's time, or an empty batch's resume token's; the
    /// start's before anything is read), and, where there is one, up to `token`, whose position
    /// `at` is (or is before, where the token says no time: DocumentDB's).
    pub fn read_up_to(&mut self, at: Option<ClusterTime>, token: Option<Document>) {
        self.read_up_to = self.read_up_to.max(at);
        if let Some(resume_token) = token {
            self.position = Some(CheckpointUpdate::Stream { resume_token, cluster_time: at });
        }
    }

    /// Lists and compares; returns the changes, positioned where the stream has read up to.
    /// Positioned later (at the source's clock now), a new collection's create would go before
    /// changes of the collection still unread (made while capture was stopped, or while it lags),
    /// though a sink takes a partition's records to come in cluster-time order (it holds the
    /// consistency point just before a new partition's first record). A change that went out at
    /// the same time already (the stream has not moved since) waits for the next comparison.
    pub async fn run(&mut self, client: &mongodb::Client, converter: &Converter) -> Result<Option<Item>, Error> {
        self.last = Instant::now();
        let at = match self.read_up_to {
            Some(read) => read,
            // Nothing read yet, and the stream's start says no time: the clock is all there is.
            None => self.clock(client).await?,
        };
        let mut listing = BTreeMap::new();
        for listed in schema::captured(client, &converter.filter).await?.into_iter().filter(|l| !l.view) {
            let now = listing_of(client, &listed).await?;
            listing.insert(listed.ns, now);
        }
        let mut ddl = Vec::new();
        for (ns, now) in &listing {
            let before = self.known.as_ref().and_then(|known| known.get(ns));
            match before {
                None => ddl.push(Ddl::Create { ns: ns.clone(), options: now.options.clone() }),
                Some(before) => {
                    let changes = option_changes(&before.options, &now.options);
                    if !changes.is_empty() {
                        ddl.push(Ddl::Modify { ns: ns.clone(), changes });
                    }
                }
            }
            let (created, dropped) = changes(before.map(|b| &b.indexes), &now.indexes);
            if !dropped.is_empty() {
                ddl.push(Ddl::DropIndexes { ns: ns.clone(), names: dropped });
            }
            if !created.is_empty() {
                ddl.push(Ddl::CreateIndexes { ns: ns.clone(), indexes: created });
            }
        }
        if !self.may_send(at, &ddl) {
            // `known` stays as it was: the next comparison finds these changes again.
            tracing::info!(position = ?at, "schema comparison: a change like one sent at this position already; waiting for the stream to move");
            return Ok(None);
        }
        let first = self.known.is_none();
        self.known = Some(listing);
        if ddl.is_empty() {
            return Ok(None);
        }
        tracing::info!(changes = ddl.len(), first, "schema comparison: sending what changed");
        let mut item = self.send_at(converter, ddl, at);
        item.progress = self.position.clone();
        Ok(Some(item))
    }

    /// Whether `ddl` may go at `at`: not before what went last, and none of it twice at one time.
    fn may_send(&self, at: ClusterTime, ddl: &[Ddl]) -> bool {
        match &self.sent {
            None => true,
            Some((last, _)) if at > *last => true,
            Some((last, sent)) => at == *last && ddl.iter().all(|d| !sent.contains(&key(d))),
        }
    }

    /// A captured collection the last listing does not know, met in the stream (a change to a
    /// collection created since): its `create` with its options and its indexes, to go before
    /// that change, so that the target creates it as the source did and not bare by the write.
    /// None when it is known, gone, or before the first listing.
    pub async fn introduce(
        &mut self,
        client: &mongodb::Client,
        converter: &Converter,
        ns: &Namespace,
        first_change: Option<ClusterTime>,
    ) -> Result<Option<Item>, Error> {
        let Some(known) = self.known.as_ref() else { return Ok(None) };
        if known.contains_key(ns) || !converter.filter.wants(ns) {
            return Ok(None);
        }
        let Some(listed) = schema::collection(client, ns).await?.filter(|l| !l.view) else { return Ok(None) };
        let now = listing_of(client, &listed).await?;
        let mut ddl = vec![Ddl::Create { ns: ns.clone(), options: now.options.clone() }];
        if !now.indexes.is_empty() {
            ddl.push(Ddl::CreateIndexes { ns: ns.clone(), indexes: now.indexes.values().cloned().collect() });
        }
        self.known.get_or_insert_with(BTreeMap::new).insert(ns.clone(), now);
        tracing::info!(namespace = %ns, "schema comparison: a new collection, sent before its first change");
        // Just before the change that shows the collection, not the source's clock now: the
        // change follows it on the topic's partitions, whose records a sink takes to come in
        // cluster-time order (it holds the consistency point just before a new partition's
        // first record), and the clock has moved on past the change while it was read.
        match first_change {
            Some(change) => Ok(Some(self.item_at(converter, ddl, prev_tick(change)))),
            None => {
                let at = self.clock(client).await?;
                Ok(Some(self.send_at(converter, ddl, at)))
            }
        }
    }

    /// The source's cluster time now, past the last changes sent.
    async fn clock(&self, client: &mongodb::Client) -> Result<ClusterTime, Error> {
        let at = cluster_time(client).await?;
        Ok(self.sent.as_ref().map_or(at, |(last, _)| at.max(next_tick(*last))))
    }

    /// `ddl` as one item at `at`, remembered as sent there.
    fn send_at(&mut self, converter: &Converter, ddl: Vec<Ddl>, at: ClusterTime) -> Item {
        let keys = ddl.iter().map(key);
        match &mut self.sent {
            Some((last, sent)) if *last == at => sent.extend(keys),
            sent => *sent = Some((at, keys.collect())),
        }
        self.item_at(converter, ddl, at)
    }

    /// `ddl` as one item at `at`.
    fn item_at(&self, converter: &Converter, ddl: Vec<Ddl>, at: ClusterTime) -> Item {
        let now = now_ms();
        let records = ddl.into_iter().flat_map(|ddl| converter.schema_records(ddl, at, Snapshot::False, now)).collect();
        // No source event's time: the lag metric is the changes'.
        Item { records, progress: None, cluster_time: None }
    }
}

/// What names a DDL to a sink, besides its time: its kind, namespace and (for changes that only
/// shape a collection) what it sets.
fn key(ddl: &Ddl) -> String {
    let ns = ddl.namespace().map(ToString::to_string).unwrap_or_default();
    format!("{}:{ns}#{:?}", ddl.kind(), ddl.content_digest())
}

/// A collection's options and indexes as the target should get them.
async fn listing_of(client: &mongodb::Client, listed: &schema::Listed) -> Result<Listing, Error> {
    let mut specs = schema::indexes(client, &listed.ns).await?;
    schema::simple_collation(&listed.options, &mut specs);
    let indexes = specs.into_iter().map(|spec| (spec.get_str("name").unwrap_or_default().to_string(), spec)).collect();
    Ok(Listing { options: listed.options.clone(), indexes })
}

/// The `collMod` that brings a collection's options from `before` to `now`: the validation
/// settings and pre/post images that differ (one gone: its "none" value). Other options cannot
/// change on a collection that exists.
fn option_changes(before: &Document, now: &Document) -> Document {
    let mut changes = Document::new();
    for field in MODIFIABLE {
        match (before.get(field), now.get(field)) {
            (was, Some(is)) if was != Some(is) => changes.insert(field, is.clone()),
            (Some(_), None) => changes.insert(field, none(field)),
            _ => None,
        };
    }
    changes
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
    fn validation_settings_that_changed_or_went_away() {
        let before = doc! {"validator": {"$jsonSchema": {"required": ["a"]}}, "validationLevel": "moderate",
        "collation": {"locale": "fr"}};
        assert_eq!(option_changes(&before, &before), doc! {});
        let now = doc! {"validator": {"$jsonSchema": {"required": ["a", "b"]}}, "validationAction": "error",
        "collation": {"locale": "fr"}};
        assert_eq!(
            option_changes(&before, &now),
            doc! {"validator": {"$jsonSchema": {"required": ["a", "b"]}}, "validationLevel": "strict",
            "validationAction": "error"}
        );
        assert_eq!(option_changes(&now, &doc! {}).get_document("validator").ok(), Some(&doc! {}), "no validator");
    }

    #[test]
    fn a_check_needs_an_interval() {
        assert!(IndexCheck::every(Duration::ZERO).is_none());
        let mut check = IndexCheck::every(Duration::from_secs(3600)).expect("a check");
        assert!(check.due(), "the first listing at once");
        check.last = Instant::now();
        assert!(!check.due());
    }

    #[test]
    fn a_change_goes_no_earlier_than_the_last_and_never_twice_at_one_time() {
        let mut check = IndexCheck::every(Duration::from_secs(1)).expect("a check");
        let ns = Namespace::new("shop", "items");
        let (indexes, modify) = (
            Ddl::CreateIndexes { ns: ns.clone(), indexes: vec![doc! {"name": "a"}] },
            Ddl::Modify { ns: ns.clone(), changes: doc! {"validator": {}} },
        );
        let at = ClusterTime { t: 100, i: 5 };
        assert!(check.may_send(at, std::slice::from_ref(&indexes)), "nothing sent yet");
        check.sent = Some((at, vec![key(&indexes)]));
        assert!(!check.may_send(at, std::slice::from_ref(&indexes)), "the same change at the same time");
        let other = Ddl::CreateIndexes { ns: ns.clone(), indexes: vec![doc! {"name": "b"}] };
        assert!(check.may_send(at, std::slice::from_ref(&other)), "a sink tells another index change apart");
        assert!(check.may_send(at, std::slice::from_ref(&modify)), "another kind may share the time");
        assert!(check.may_send(next_tick(at), std::slice::from_ref(&indexes)), "the stream moved on");
        assert!(!check.may_send(prev_tick(at), std::slice::from_ref(&modify)), "never before what went last");
        check.read_up_to(Some(next_tick(at)), None);
        check.read_up_to(Some(at), None);
        assert_eq!(check.read_up_to, Some(next_tick(at)), "how far the stream read never moves back");
    }
}
