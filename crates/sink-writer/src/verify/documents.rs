//! Comparing one namespace's documents: the source's `_id` space split into ranges read in
//! parallel (each range from both sides a chunk at a time: the source's next chunk, then the
//! target's documents up to its last `_id`, a page at a time), or a random sample. Memory stays
//! bounded whatever the size: every difference is counted, and only `verify.max_rechecked` of
//! them are kept to be checked again (`recheck.rs`); [`Held`] counts the documents held.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Bson, RawDocumentBuf};
use futures::{StreamExt, TryStreamExt};
use service_kit::id_order;

use super::read::{self, Seen};
use crate::error::Error;

/// Documents read per chunk and side (and per page of the target).
const CHUNK: usize = 1000;

/// The two sides of one namespace.
pub struct Pair {
    pub source: mongodb::Collection<RawDocumentBuf>,
    pub target: mongodb::Collection<RawDocumentBuf>,
    /// The transform rule the source's documents go through (`[transforms]`), if any.
    pub rule: Option<std::sync::Arc<transform::Rule>>,
}

impl Pair {
    pub fn view(&self) -> read::View<'_> {
        self.rule.as_deref()
    }
}

/// How a document differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Missing,
    Extra,
    Different,
}

/// A document that differed when compared: its `_id`, and the source's state then (the hash of
/// its BSON, none when the source has no such document).
#[derive(Debug, Clone)]
pub struct Difference {
    pub id: Bson,
    pub key: Vec<u8>,
    pub kind: Kind,
    pub source: Option<u64>,
}

/// Differences by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
}

impl Counts {
    pub fn add(&mut self, kind: Kind) {
        match kind {
            Kind::Missing => self.missing += 1,
            Kind::Extra => self.extra += 1,
            Kind::Different => self.different += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.missing + self.extra + self.different
    }
}

/// What comparing found: every difference counted, the first `cap` kept.
#[derive(Debug)]
pub struct Tally {
    pub compared: u64,
    pub found: Counts,
    pub kept: Vec<Difference>,
    cap: usize,
}

impl Tally {
    pub fn new(cap: usize) -> Self {
        Self { compared: 0, found: Counts::default(), kept: Vec::new(), cap }
    }

    fn push(&mut self, difference: Difference, held: &Held) {
        self.found.add(difference.kind);
        if self.kept.len() < self.cap {
            held.add(1);
            self.kept.push(difference);
        }
    }

    fn merge(&mut self, other: Tally, held: &Held) {
        self.compared += other.compared;
        self.found.counts_of(other.found);
        let room = self.cap.saturating_sub(self.kept.len());
        held.sub(other.kept.len().saturating_sub(room));
        self.kept.extend(other.kept.into_iter().take(room));
    }
}

impl Counts {
    fn counts_of(&mut self, other: Counts) {
        self.missing += other.missing;
        self.extra += other.extra;
        self.different += other.different;
    }
}

/// Documents (their digests) held at once, and the most ever: what memory follows.
#[derive(Debug, Default)]
pub struct Held {
    now: AtomicU64,
    peak: AtomicU64,
}

impl Held {
    pub fn add(&self, n: usize) {
        let now = self.now.fetch_add(n as u64, Ordering::AcqRel) + n as u64;
        self.peak.fetch_max(now, Ordering::AcqRel);
    }

    pub fn sub(&self, n: usize) {
        self.now.fetch_sub(n as u64, Ordering::AcqRel);
    }

    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Acquire)
    }
}

/// Source reads per second, shared by every reader (0: no limit).
pub struct Pace {
    per_second: u64,
    started: Instant,
    taken: AtomicU64,
    /// Documents compared so far, for the progress line.
    pub done: AtomicU64,
}

impl Pace {
    pub fn new(per_second: u64) -> Arc<Pace> {
        Arc::new(Pace { per_second, started: Instant::now(), taken: AtomicU64::new(0), done: AtomicU64::new(0) })
    }

    pub async fn take(&self, documents: u64) {
        let taken = self.taken.fetch_add(documents, Ordering::AcqRel) + documents;
        if self.per_second == 0 {
            return;
        }
        let due = Duration::from_secs_f64(taken as f64 / self.per_second as f64);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Compares every document: the `_id` space cut where a sample of the source says, when the
/// source's smallest and largest `_id` share a type bracket (then every `_id` does).
pub async fn compare_all(pair: &Pair, parallel: usize, pace: &Pace, held: &Held, cap: usize) -> Result<Tally, Error> {
    let bounds = split_points(pair, parallel).await?;
    let mut ranges: Vec<(Option<Bson>, Option<Bson>)> = Vec::new();
    let mut lo = None;
    for point in bounds {
        ranges.push((lo, Some(point.clone())));
        lo = Some(point);
    }
    ranges.push((lo, None));
    let mut tallies = futures::stream::iter(ranges)
        .map(|(lo, hi)| compare_range(pair, lo, hi, pace, held, cap))
        .buffer_unordered(parallel.max(1));
    let mut tally = Tally::new(cap);
    while let Some(range) = tallies.try_next().await? {
        tally.merge(range, held);
    }
    Ok(tally)
}

async fn split_points(pair: &Pair, parallel: usize) -> Result<Vec<Bson>, Error> {
    if parallel < 2 {
        return Ok(Vec::new());
    }
    let edge = |direction: i32| async move {
        let first: Option<RawDocumentBuf> =
            pair.source.find_one(doc! {}).sort(doc! {"_id": direction}).await.map_err(|e| Error::mongo("verify", e))?;
        Ok::<_, Error>(first.as_ref().and_then(Seen::of).map(|s| s.id))
    };
    let (Some(first), Some(last)) = (edge(1).await?, edge(-1).await?) else { return Ok(Vec::new()) };
    if !id_order::same_bracket(&first, &last) {
        return Ok(Vec::new());
    }
    let sample = random(&pair.source, parallel * 32, Some(doc! {"$project": {"_id": 1}})).await?;
    let mut ids: Vec<Bson> = sample.iter().filter_map(Seen::of).map(|s| s.id).collect();
    ids.sort_by(compare_in_bracket);
    ids.dedup();
    let step = (ids.len() / parallel).max(1);
    Ok(ids.into_iter().skip(step).step_by(step).take(parallel - 1).collect())
}

/// The order of two `_id`s of one bracket, as far as splitting needs it (numbers by value,
/// strings and ObjectIds by bytes, anything else by its extended JSON).
fn compare_in_bracket(a: &Bson, b: &Bson) -> std::cmp::Ordering {
    let number = |v: &Bson| match v {
        Bson::Int32(n) => Some(f64::from(*n)),
        Bson::Int64(n) => Some(*n as f64),
        Bson::Double(n) => Some(*n),
        _ => None,
    };
    match (number(a), number(b), a, b) {
        (Some(x), Some(y), _, _) => x.total_cmp(&y),
        (_, _, Bson::String(x), Bson::String(y)) => x.cmp(y),
        (_, _, Bson::ObjectId(x), Bson::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (_, _, Bson::DateTime(x), Bson::DateTime(y)) => x.cmp(y),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// Compares `[lo, hi)` a chunk at a time: the source's next chunk, and the target's documents
/// up to the chunk's last `_id`, a page at a time.
async fn compare_range(
    pair: &Pair,
    lo: Option<Bson>,
    hi: Option<Bson>,
    pace: &Pace,
    held: &Held,
    cap: usize,
) -> Result<Tally, Error> {
    let mut tally = Tally::new(cap);
    let mut from = lo;
    // The last `_id` compared: the next chunk starts there, inclusive, and leaves it out.
    let mut done: Option<Vec<u8>> = None;
    loop {
        let mut chunk = read::read_as(&pair.source, pair.view(), from.as_ref(), hi.as_ref(), CHUNK + 1).await?;
        chunk.retain(|s| Some(&s.key) != done.as_ref());
        held.add(chunk.len());
        let read = chunk.len();
        pace.take(read as u64).await;
        let last = chunk.last().map(|s| (s.id.clone(), s.key.clone()));
        // Left out by the filter: as if the source had no such document.
        let mut sources: HashMap<Vec<u8>, Seen> =
            chunk.into_iter().filter(|s| !s.filtered).map(|s| (s.key.clone(), s)).collect();
        tally.compared += sources.len() as u64;
        pace.done.fetch_add(sources.len() as u64, Ordering::Relaxed);
        let mut compare = |target: Seen, tally: &mut Tally| {
            let difference = match sources.remove(&target.key) {
                None => Some((Kind::Extra, None)),
                Some(s) if s.hash != target.hash => Some((Kind::Different, Some(s.hash))),
                Some(_) => None,
            };
            if let Some((kind, source)) = difference {
                tally.push(Difference { id: target.id, key: target.key, kind, source }, held);
            }
        };
        // The target up to the chunk's last `_id` (the source has nothing more: up to `hi`), then
        // that `_id` itself.
        let until = last.as_ref().map(|(id, _)| id).or(hi.as_ref());
        let mut skip = done.clone();
        let mut at = from.clone();
        loop {
            let page = read::read(&pair.target, at.as_ref(), until, CHUNK + 1).await?;
            held.add(page.len());
            let size = page.len();
            let next = page.last().map(|s| (s.id.clone(), s.key.clone()));
            for target in page.into_iter().filter(|t| Some(&t.key) != skip.as_ref()) {
                compare(target, &mut tally);
            }
            held.sub(size);
            match next {
                Some((id, key)) if size > CHUNK => (at, skip) = (Some(id), Some(key)),
                _ => break,
            }
        }
        if let Some((id, _)) = &last {
            if let Some(target) = read::one(&pair.target, id).await? {
                compare(target, &mut tally);
            }
        }
        for (key, source) in sources {
            tally.push(Difference { id: source.id, key, kind: Kind::Missing, source: Some(source.hash) }, held);
        }
        held.sub(read);
        let Some((id, key)) = last else { return Ok(tally) };
        (from, done) = (Some(id), Some(key));
    }
}

/// `size` random documents (`$sample`), through `then` when given.
async fn random(
    coll: &mongodb::Collection<RawDocumentBuf>,
    size: usize,
    then: Option<bson::Document>,
) -> Result<Vec<RawDocumentBuf>, Error> {
    let mut pipeline = vec![doc! {"$sample": {"size": i64::try_from(size).unwrap_or(i64::MAX)}}];
    pipeline.extend(then);
    coll.aggregate(pipeline)
        .with_type::<RawDocumentBuf>()
        .await
        .map_err(|e| Error::mongo("verify sample", e))?
        .try_collect()
        .await
        .map_err(|e| Error::mongo("verify sample", e))
}

/// Compares `size` random source documents with the target's, one at a time.
pub async fn compare_sample(pair: &Pair, size: usize, pace: &Pace, held: &Held, cap: usize) -> Result<Tally, Error> {
    let mut tally = Tally::new(cap);
    let sample = vec![doc! {"$sample": {"size": i64::try_from(size).unwrap_or(i64::MAX)}}];
    let mut cursor = pair
        .source
        .aggregate(sample)
        .with_type::<RawDocumentBuf>()
        .await
        .map_err(|e| Error::mongo("verify sample", e))?;
    while let Some(raw) = cursor.try_next().await.map_err(|e| Error::mongo("verify sample", e))? {
        pace.take(1).await;
        let Some(seen) = Seen::viewed(&pair.source, &raw, pair.view())?.filter(|s| !s.filtered) else { continue };
        tally.compared += 1;
        let kind = match read::one(&pair.target, &seen.id).await? {
            None => Some(Kind::Missing),
            Some(t) if t.hash != seen.hash => Some(Kind::Different),
            Some(_) => None,
        };
        if let Some(kind) = kind {
            tally.push(Difference { id: seen.id, key: seen.key, kind, source: Some(seen.hash) }, held);
        }
        pace.done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(tally)
}
