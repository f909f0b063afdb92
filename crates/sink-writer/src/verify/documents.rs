//! Comparing one namespace's documents: the source's `_id` space split into ranges read in
//! parallel (each range from both sides at once, a chunk at a time), or a random sample; then
//! every difference checked again once replication has passed the moment it was seen, so only
//! what stays different is reported.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Bson, RawDocumentBuf};
use futures::{StreamExt, TryStreamExt};
use service_kit::id_order;

use super::read::{self, Seen};
use crate::error::Error;

/// Documents read per chunk and side.
const CHUNK: usize = 1000;
/// Rounds of checking a difference again before it counts.
const RECHECKS: usize = 3;

/// The two sides of one namespace.
pub struct Pair {
    pub source: mongodb::Collection<RawDocumentBuf>,
    pub target: mongodb::Collection<RawDocumentBuf>,
}

/// How a document differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Missing,
    Extra,
    Different,
}

#[derive(Debug, Default)]
pub struct Tally {
    pub compared: u64,
    pub equal: u64,
    pub differences: Vec<(Bson, Kind)>,
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

    async fn take(&self, documents: u64) {
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
pub async fn compare_all(pair: &Pair, parallel: usize, pace: &Pace) -> Result<Tally, Error> {
    let bounds = split_points(pair, parallel).await?;
    let mut ranges: Vec<(Option<Bson>, Option<Bson>)> = Vec::new();
    let mut lo = None;
    for point in bounds {
        ranges.push((lo, Some(point.clone())));
        lo = Some(point);
    }
    ranges.push((lo, None));
    let tallies: Vec<Tally> = futures::stream::iter(ranges)
        .map(|(lo, hi)| compare_range(pair, lo, hi, pace))
        .buffer_unordered(parallel.max(1))
        .try_collect()
        .await?;
    let mut tally = Tally::default();
    for t in tallies {
        tally.compared += t.compared;
        tally.equal += t.equal;
        tally.differences.extend(t.differences);
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
/// up to the chunk's last `_id`.
async fn compare_range(pair: &Pair, lo: Option<Bson>, hi: Option<Bson>, pace: &Pace) -> Result<Tally, Error> {
    let mut tally = Tally::default();
    let mut from = lo;
    // The last `_id` compared: the next chunk starts there, inclusive, and leaves it out.
    let mut done: Option<Vec<u8>> = None;
    loop {
        let mut chunk = read::read(&pair.source, from.as_ref(), hi.as_ref(), CHUNK + 1).await?;
        chunk.retain(|s| Some(&s.key) != done.as_ref());
        pace.take(chunk.len() as u64).await;
        let Some(last) = chunk.last().map(|s| s.id.clone()) else {
            // The source has nothing more here: whatever the target still has is extra.
            let rest = read::read(&pair.target, from.as_ref(), hi.as_ref(), usize::MAX).await?;
            for extra in rest.into_iter().filter(|s| Some(&s.key) != done.as_ref()) {
                tally.differences.push((extra.id, Kind::Extra));
            }
            return Ok(tally);
        };
        let (mut target, last_one) = tokio::try_join!(
            read::read(&pair.target, from.as_ref(), Some(&last), usize::MAX),
            read::one(&pair.target, &last)
        )?;
        target.extend(last_one);
        let mut targets: HashMap<Vec<u8>, Seen> =
            target.into_iter().filter(|s| Some(&s.key) != done.as_ref()).map(|s| (s.key.clone(), s)).collect();
        for seen in &chunk {
            tally.compared += 1;
            match targets.remove(&seen.key) {
                None => tally.differences.push((seen.id.clone(), Kind::Missing)),
                Some(t) if t.hash != seen.hash => tally.differences.push((seen.id.clone(), Kind::Different)),
                Some(_) => tally.equal += 1,
            }
        }
        tally.differences.extend(targets.into_values().map(|t| (t.id, Kind::Extra)));
        pace.done.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        done = chunk.last().map(|s| s.key.clone());
        from = Some(last);
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

/// Compares `size` random source documents with the target's.
pub async fn compare_sample(pair: &Pair, size: usize, pace: &Pace) -> Result<Tally, Error> {
    let sample = random(&pair.source, size, None).await?;
    pace.take(sample.len() as u64).await;
    let mut tally = Tally::default();
    for seen in sample.iter().filter_map(Seen::of) {
        tally.compared += 1;
        match read::one(&pair.target, &seen.id).await? {
            None => tally.differences.push((seen.id, Kind::Missing)),
            Some(t) if t.hash != seen.hash => tally.differences.push((seen.id, Kind::Different)),
            Some(_) => tally.equal += 1,
        }
        pace.done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(tally)
}

/// Checks differences again, each round once `settled(source time now)` says replication has
/// passed that moment; what is equal by then was in flight, and so is what the source changed
/// again since the round before the last (a workload that keeps writing a document: its target
/// copy is always one change behind when read). Returns what stays different, and whether
/// replication settled every round (false: the differences are unconfirmed).
pub async fn recheck<F, Fut>(
    pair: &Pair,
    differences: Vec<(Bson, Kind)>,
    settled: F,
) -> Result<(Vec<(Bson, Kind)>, bool), Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<bool, Error>>,
{
    let mut confirmed = true;
    // Each difference with the source's state (its hash, or `None` when absent) at the last
    // round; `None` before the first.
    let mut pending: Vec<(Bson, Kind, Option<Option<u64>>)> =
        differences.into_iter().map(|(id, kind)| (id, kind, None)).collect();
    for round in 0..RECHECKS {
        if pending.is_empty() {
            break;
        }
        confirmed &= settled().await?;
        let last = round + 1 == RECHECKS;
        let mut left = Vec::new();
        for (id, _, before) in pending {
            let (source, target) = tokio::try_join!(read::one(&pair.source, &id), read::one(&pair.target, &id))?;
            let state = source.as_ref().map(|s| s.hash);
            let kind = match (source, target) {
                (None, None) => continue,
                (Some(s), Some(t)) if s.hash == t.hash => continue,
                (Some(_), None) => Kind::Missing,
                (None, Some(_)) => Kind::Extra,
                (Some(_), Some(_)) => Kind::Different,
            };
            if last && before.is_some_and(|before| before != state) {
                continue; // still changing at the source: in flight
            }
            left.push((id, kind, Some(state)));
        }
        pending = left;
    }
    Ok((pending.into_iter().map(|(id, kind, _)| (id, kind)).collect(), confirmed))
}
