//! Every difference found is checked again, and only replication seen at work clears one:
//!
//! 1. the source's present cluster time is taken (after every comparison), and the consistency
//!    point must pass it (`verify.settle_timeout_ms`); if it does not, nothing can be said: every
//!    difference is **unconfirmed** (a stopped sink, a backlog);
//! 2. then both sides are read a few times a second for a while: a difference whose target
//!    document equals a state the source document had since it was found (or that both lack) was
//!    **in flight**: replication moved past it;
//! 3. what is left is read on the source, the point must pass the present again, then the target
//!    and the source are read once more: the same on the source before and after, and still
//!    different on the target, it is a **difference**; the source changed meanwhile, it is
//!    **unconfirmed**.
//!
//! Reads are paced like the comparison's (`verify.max_docs_per_second`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bson::{doc, Bson};
use envelope::ClusterTime;

use super::documents::{Difference, Held, Kind, Pace, Pair};
use super::read;
use crate::error::Error;
use crate::point::PointReader;

/// How often both sides are read while watching.
const POLL: Duration = Duration::from_millis(100);
/// Source states remembered per difference.
const STATES: usize = 64;

/// The replication a recheck waits for: the source's clock and the consistency point.
pub struct Replication<'a> {
    pub source: &'a mongodb::Client,
    pub point: &'a PointReader,
    /// The longest a wait for the point may take (`verify.settle_timeout_ms`).
    pub timeout: Duration,
}

impl Replication<'_> {
    /// The source's present cluster time.
    pub async fn now(&self) -> Result<ClusterTime, Error> {
        let reply =
            self.source.database("admin").run_command(doc! {"ping": 1}).await.map_err(|e| Error::mongo("ping", e))?;
        reply
            .get_timestamp("operationTime")
            .map(Into::into)
            .map_err(|_| Error::fatal("the source answers without an operationTime: no cluster time".into()))
    }

    /// Whether the consistency point passes `at` within the timeout.
    pub async fn passes(&self, at: ClusterTime) -> Result<bool, Error> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if self.point.point().await?.is_some_and(|point| point >= at) {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// What the recheck concluded.
#[derive(Debug, Default)]
pub struct Rechecked {
    pub different: Vec<(Bson, Kind)>,
    pub unconfirmed: Vec<(Bson, Kind)>,
    pub in_flight: u64,
}

impl Rechecked {
    /// Differences it concluded on.
    pub fn total(&self) -> u64 {
        self.different.len() as u64 + self.unconfirmed.len() as u64 + self.in_flight
    }
}

/// A difference being watched: the source states seen since it was found (none: no document).
struct Watched {
    difference: Difference,
    states: Vec<Option<u64>>,
}

impl Watched {
    fn seen(&mut self, state: Option<u64>) {
        if self.states.last() != Some(&state) && self.states.len() < STATES {
            self.states.push(state);
        }
    }

    /// Whether the target's state is one the source had since (or both have none).
    fn caught_up(&self, target: Option<u64>) -> bool {
        self.states.contains(&target)
    }
}

/// What is left after watching, once the source is read before and after the point passes the
/// present, and the target in between. Pure.
fn conclude(watched: &Watched, source_before: Option<u64>, target: Option<u64>, source_after: Option<u64>) -> Verdict {
    if watched.caught_up(target) || target == source_before || target == source_after {
        return Verdict::InFlight;
    }
    let kind = match (source_after, target) {
        (Some(_), None) => Kind::Missing,
        (None, Some(_)) => Kind::Extra,
        _ => Kind::Different,
    };
    if source_before == source_after {
        Verdict::Different(kind)
    } else {
        Verdict::Unconfirmed(kind)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    InFlight,
    Different(Kind),
    Unconfirmed(Kind),
}

/// Checks `differences` again as described at the top.
pub async fn recheck(
    pair: &Pair,
    differences: Vec<Difference>,
    replication: &Replication<'_>,
    pace: &Pace,
    held: &Held,
) -> Result<Rechecked, Error> {
    let mut outcome = Rechecked::default();
    if differences.is_empty() {
        return Ok(outcome);
    }
    let waiting = Instant::now();
    if !replication.passes(replication.now().await?).await? {
        outcome.unconfirmed = differences.into_iter().map(|d| (d.id, d.kind)).collect();
        return Ok(outcome);
    }
    // Long enough for a change to go through, as the point just showed.
    let window = (waiting.elapsed() * 2 + Duration::from_secs(1)).min(replication.timeout.max(POLL));
    let mut watched: Vec<Watched> =
        differences.into_iter().map(|d| Watched { states: vec![d.source], difference: d }).collect();
    let until = Instant::now() + window;
    loop {
        let (source, target) = both(pair, &watched, pace).await?;
        held.add(source.len() + target.len());
        watched.retain_mut(|w| {
            w.seen(source.get(&w.difference.key).map(|s| s.hash));
            let caught_up = w.caught_up(target.get(&w.difference.key).map(|t| t.hash));
            outcome.in_flight += u64::from(caught_up);
            !caught_up
        });
        held.sub(source.len() + target.len());
        if watched.is_empty() || Instant::now() >= until {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    if watched.is_empty() {
        return Ok(outcome);
    }
    let before = side(&pair.source, pair.view(), &watched, pace).await?;
    held.add(before.len());
    if !replication.passes(replication.now().await?).await? {
        held.sub(before.len());
        outcome.unconfirmed = watched.into_iter().map(|w| (w.difference.id, w.difference.kind)).collect();
        return Ok(outcome);
    }
    let target = side(&pair.target, None, &watched, pace).await?;
    let after = side(&pair.source, pair.view(), &watched, pace).await?;
    held.add(target.len() + after.len());
    for w in &watched {
        let key = &w.difference.key;
        let state = |side: &HashMap<Vec<u8>, read::Seen>| side.get(key).map(|s| s.hash);
        match conclude(w, state(&before), state(&target), state(&after)) {
            Verdict::InFlight => outcome.in_flight += 1,
            Verdict::Different(kind) => outcome.different.push((w.difference.id.clone(), kind)),
            Verdict::Unconfirmed(kind) => outcome.unconfirmed.push((w.difference.id.clone(), kind)),
        }
    }
    held.sub(before.len() + target.len() + after.len());
    Ok(outcome)
}

/// The watched documents on one side, the source's reads paced.
async fn side(
    coll: &mongodb::Collection<bson::RawDocumentBuf>,
    view: read::View<'_>,
    watched: &[Watched],
    pace: &Pace,
) -> Result<HashMap<Vec<u8>, read::Seen>, Error> {
    let ids: Vec<&Bson> = watched.iter().map(|w| &w.difference.id).collect();
    pace.take(ids.len() as u64).await;
    read::many_as(coll, view, &ids).await
}

type Sides = (HashMap<Vec<u8>, read::Seen>, HashMap<Vec<u8>, read::Seen>);

/// Both sides, the source first.
async fn both(pair: &Pair, watched: &[Watched], pace: &Pace) -> Result<Sides, Error> {
    let source = side(&pair.source, pair.view(), watched, pace).await?;
    let target = side(&pair.target, None, watched, pace).await?;
    Ok((source, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched(states: &[Option<u64>]) -> Watched {
        let difference = Difference { id: Bson::Int32(1), key: vec![1], kind: Kind::Different, source: states[0] };
        Watched { difference, states: states.to_vec() }
    }

    #[test]
    fn only_a_target_seen_to_reach_a_source_state_was_in_flight() {
        // The target reached a state the source had while watched (or has now).
        assert_eq!(conclude(&watched(&[Some(1), Some(2)]), Some(3), Some(2), Some(3)), Verdict::InFlight);
        assert_eq!(conclude(&watched(&[Some(1)]), Some(3), Some(3), Some(3)), Verdict::InFlight);
        assert_eq!(conclude(&watched(&[None]), None, None, None), Verdict::InFlight, "deleted on both sides");
        // The source stood still while the point passed: the target should have it.
        assert_eq!(conclude(&watched(&[Some(1)]), Some(1), Some(9), Some(1)), Verdict::Different(Kind::Different));
        assert_eq!(conclude(&watched(&[Some(1)]), Some(1), None, Some(1)), Verdict::Different(Kind::Missing));
        assert_eq!(conclude(&watched(&[None]), None, Some(9), None), Verdict::Different(Kind::Extra));
        // The source kept changing: nothing can be said.
        assert_eq!(conclude(&watched(&[Some(1)]), Some(4), Some(9), Some(5)), Verdict::Unconfirmed(Kind::Different));
    }

    #[test]
    fn states_are_remembered_once_each_and_bounded() {
        let mut w = watched(&[Some(0)]);
        for state in (1..200).map(Some) {
            w.seen(state);
            w.seen(state);
        }
        assert_eq!(w.states.len(), STATES);
        assert!(w.caught_up(Some(5)) && !w.caught_up(Some(150)));
    }
}
