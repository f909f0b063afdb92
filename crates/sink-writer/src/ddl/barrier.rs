//! The barrier at a DDL marker, over the DDL log (`log.rs`): each partition records its arrival
//! and waits; the arrival that completes the markers claims the DDL (with a lease, in case it
//! dies), applies it and marks it applied; the others pass once it is. A partition counts once
//! however often it arrives (a new owner arriving again after a former one): it is a name in a
//! set, not a count, so a takeover never passes a barrier that another partition still holds.

use std::time::Duration;

use bson::{doc, DateTime, Document};
use tokio_util::sync::CancellationToken;

use crate::apply::retry::Retrier;
use crate::ddl::log::Log;
use crate::error::Error;

const CLAIM_LEASE: Duration = Duration::from_secs(60);
/// The readiness component of DDL bookkeeping and application (writes to the target).
pub(crate) const COMPONENT: &str = crate::apply::retry::WRITES;
/// How often a waiting arrival reads the entry again.
const POLL: Duration = Duration::from_millis(100);

/// How a barrier ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    /// This arrival applied it.
    pub here: bool,
    /// The target refused it for good (then it is marked applied, with this reason).
    pub refused: Option<String>,
}

/// One partition's copy of a DDL marker.
pub struct Arrival<'a> {
    /// The DDL's entry in the log.
    pub id: &'a str,
    /// The partition (`topic/partition`).
    pub at: &'a str,
    /// The marker's offset there (everything before it is applied).
    pub offset: i64,
    /// How many copies of the marker the topics this sink reads hold.
    pub required: u32,
    /// What the entry starts with, if this arrival is the first.
    pub new: Document,
}

/// Records `arrival` and waits until every copy of its marker has arrived, then makes sure the
/// DDL is applied exactly once: by the arrival that claims it, with `apply` (given the entry;
/// `Some(reason)` when the target refuses the DDL for good). Every step is retried; `stop` ends
/// the wait with `Stopped`.
pub async fn wait<F, Fut>(
    log: &dyn Log,
    retrier: &Retrier,
    arrival: Arrival<'_>,
    stop: &CancellationToken,
    mut apply: F,
) -> Result<Passed, Error>
where
    F: FnMut(Document) -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>, Error>>,
{
    let Arrival { id, at, offset, required, new } = arrival;
    let mut entry =
        retrier.run(COMPONENT, at, stop, || log.arrive(id, at, offset, new.clone())).await?.unwrap_or_default();
    let mut passed = Passed { here: false, refused: None };
    loop {
        if entry.get_bool("applied").unwrap_or(false) {
            passed.refused = passed.refused.or_else(|| entry.get_str("refused").ok().map(str::to_string));
            return Ok(passed);
        }
        let arrived = entry.get_array("arrived").map_or(0, Vec::len);
        let markers = entry.get_i64("markers").map_or(required as usize, |m| usize::try_from(m).unwrap_or(usize::MAX));
        if arrived >= markers && retrier.run(COMPONENT, at, stop, || claim(log, id, at)).await? {
            let refused = apply(entry).await?;
            let mut mark = doc! {"applied": true, "applied_at": DateTime::now()};
            if let Some(reason) = &refused {
                tracing::error!(ddl = %id, %reason, "the target refuses this DDL: marked applied, record dead-lettered");
                mark.insert("refused", reason);
            } else {
                tracing::info!(ddl = %id, "applied");
            }
            retrier.run(COMPONENT, at, stop, || log.mark(id, mark.clone())).await?;
            passed = Passed { here: true, refused };
        } else {
            tokio::select! {
                _ = stop.cancelled() => return Err(Error::Stopped),
                _ = tokio::time::sleep(POLL) => {}
            }
        }
        entry = retrier.run(COMPONENT, at, stop, || log.entry(id, "read ddl state")).await?.unwrap_or_default();
    }
}

/// Takes the right to apply, unless someone holds an unexpired claim.
async fn claim(log: &dyn Log, id: &str, by: &str) -> Result<bool, Error> {
    let now = DateTime::now();
    let until = DateTime::from_millis(now.timestamp_millis() + CLAIM_LEASE.as_millis() as i64);
    log.claim(id, by, now, until).await
}

/// The offset of the newest marker `arrival` (`topic/partition`) reached in `group`.
pub async fn reached(log: &dyn Log, group: &str, arrival: &str) -> Result<Option<i64>, Error> {
    let found = log.arrivals(group, arrival).await?;
    Ok(found
        .iter()
        .flat_map(|entry| entry.get_array("arrivals").map(|a| a.iter().collect::<Vec<_>>()).unwrap_or_default())
        .filter_map(|a| a.as_document())
        .filter(|a| a.get_str("at") == Ok(arrival))
        .filter_map(|a| a.get_i64("offset").ok())
        .max())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use prometheus::IntCounter;
    use service_kit::health::Health;

    use super::*;
    use crate::ddl::fake::FakeLog;

    const ID: &str = "g|drop:db.people@5.1";
    /// Long enough for a waiting arrival to read the entry a few times.
    const A_WHILE: Duration = Duration::from_millis(400);

    /// The real retry loop, with pauses of a few milliseconds: retries are counted, not timed.
    fn retrier() -> (Retrier, IntCounter) {
        let retries = IntCounter::new("retries", "retries").expect("a counter");
        (Retrier::new(Health::new(), retries.clone(), Duration::from_millis(5)), retries)
    }

    /// Partition `at`'s copy of a drop's marker, one of `required`.
    fn arrival(at: &str, offset: i64, required: u32) -> Arrival<'_> {
        let new = doc! {"kind": "drop", "scope": "db.people", "scopes": ["db.people"],
        "markers": i64::from(required), "group": "g"};
        Arrival { id: ID, at, offset, required, new }
    }

    /// The DDL applied on the target, counted; `refused` is what the target answers.
    #[derive(Default)]
    struct Target {
        applied: AtomicUsize,
        refused: Option<String>,
    }

    impl Target {
        async fn apply(&self, _entry: Document) -> Result<Option<String>, Error> {
            self.applied.fetch_add(1, Ordering::SeqCst);
            Ok(self.refused.clone())
        }

        fn times(&self) -> usize {
            self.applied.load(Ordering::SeqCst)
        }
    }

    fn now_ms() -> i64 {
        DateTime::now().timestamp_millis()
    }

    fn applied(log: &FakeLog) -> bool {
        log.get(ID).is_some_and(|e| e.get_bool("applied") == Ok(true))
    }

    fn arrived(log: &FakeLog) -> Vec<String> {
        let entry = log.get(ID).unwrap_or_default();
        entry
            .get_array("arrived")
            .map(|a| a.iter().filter_map(|b| b.as_str().map(String::from)).collect())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_ddl_is_applied_once_when_every_partition_has_arrived() {
        let (log, (retrier, _), target, stop) =
            (FakeLog::default(), retrier(), Target::default(), CancellationToken::new());
        let wait = |at| wait(&log, &retrier, arrival(at, 7, 3), &stop, |e| target.apply(e));
        let passed = tokio::join!(wait("t/0"), wait("t/1"), wait("t/2"));
        let passed = [passed.0, passed.1, passed.2].map(|p| p.expect("passed"));

        assert_eq!(target.times(), 1, "applied once");
        assert_eq!(passed.iter().filter(|p| p.here).count(), 1, "by one of them: {passed:?}");
        assert!(passed.iter().all(|p| p.refused.is_none()));
        assert!(applied(&log));
        assert_eq!(arrived(&log).len(), 3);
    }

    #[tokio::test]
    async fn a_partition_that_has_not_arrived_holds_the_ddl() {
        let (log, (retrier, _), target, stop) =
            (FakeLog::default(), retrier(), Target::default(), CancellationToken::new());
        let first = wait(&log, &retrier, arrival("t/0", 7, 2), &stop, |e| target.apply(e));
        let second = async {
            tokio::time::sleep(A_WHILE).await;
            assert_eq!((target.times(), applied(&log)), (0, false), "t/1 has not arrived: nothing applied");
            wait(&log, &retrier, arrival("t/1", 3, 2), &stop, |e| target.apply(e)).await
        };
        let (first, second) = tokio::join!(first, second);

        assert!(first.is_ok() && second.is_ok(), "both pass once it is applied");
        assert_eq!(target.times(), 1);
        assert!(applied(&log));
    }

    #[tokio::test]
    async fn a_new_owner_arriving_again_counts_once_so_another_partition_still_holds_the_ddl() {
        let (log, (retrier, _), target) = (FakeLog::default(), retrier(), Target::default());
        // The former owner of t/0 arrives and dies while it waits.
        let former = CancellationToken::new();
        let waiting = wait(&log, &retrier, arrival("t/0", 7, 2), &former, |e| target.apply(e));
        let dies = async {
            tokio::time::sleep(A_WHILE).await;
            former.cancel();
        };
        let (ended, ()) = tokio::join!(tokio::time::timeout(Duration::from_secs(10), waiting), dies);
        assert!(matches!(ended, Ok(Err(Error::Stopped))), "{ended:?}");

        // Its successor starts at the marker and arrives again; t/1 still replays older events.
        assert_eq!(reached(&log, "g", "t/0").await.expect("read"), Some(7), "the successor starts at the marker");
        let stop = CancellationToken::new();
        let successor = wait(&log, &retrier, arrival("t/0", 7, 2), &stop, |e| target.apply(e));
        let other = async {
            tokio::time::sleep(A_WHILE).await;
            assert_eq!((target.times(), applied(&log)), (0, false), "t/0 twice is not t/0 and t/1");
            wait(&log, &retrier, arrival("t/1", 3, 2), &stop, |e| target.apply(e)).await
        };
        let (successor, other) = tokio::join!(successor, other);

        assert!(successor.is_ok() && other.is_ok());
        assert_eq!(target.times(), 1);
        assert_eq!(arrived(&log), ["t/0", "t/1"]);
    }

    #[tokio::test]
    async fn a_new_owner_starts_at_the_newest_marker_its_partition_reached_in_its_group() {
        let (log, (retrier, _), target, stop) =
            (FakeLog::default(), retrier(), Target::default(), CancellationToken::new());
        for (id, at, offset) in [("g|a", "t/0", 7), ("g|b", "t/0", 20), ("g|b", "t/1", 30)] {
            let copy = Arrival { id, ..arrival(at, offset, 2) };
            let _ = tokio::time::timeout(Duration::ZERO, wait(&log, &retrier, copy, &stop, |e| target.apply(e))).await;
        }
        log.set("h|c", doc! {"group": "h", "arrivals": [{"at": "t/0", "offset": 99_i64}]});

        assert_eq!(reached(&log, "g", "t/0").await.expect("read"), Some(20), "not t/1's 30, not group h's 99");
        assert_eq!(reached(&log, "g", "t/2").await.expect("read"), None, "no marker reached: from the start");
    }

    #[tokio::test]
    async fn a_failing_log_is_retried_and_the_ddl_is_still_applied_once() {
        let (log, (retrier, retries), target, stop) =
            (FakeLog::default(), retrier(), Target::default(), CancellationToken::new());
        log.fail_next(1);
        let passed = wait(&log, &retrier, arrival("t/0", 7, 1), &stop, |e| {
            // Applied; now marking it fails twice.
            log.fail_next(2);
            target.apply(e)
        })
        .await
        .expect("passed");

        assert!(passed.here);
        assert_eq!(target.times(), 1, "a retried mark does not apply it again");
        assert_eq!(retries.get(), 3);
        assert_eq!((log.calls("record ddl arrival"), log.calls("mark ddl applied")), (2, 3));
        assert!(applied(&log));
    }

    #[tokio::test]
    async fn a_stopped_partition_ends_the_wait_with_stopped() {
        let (log, (retrier, _), target, stop) =
            (FakeLog::default(), retrier(), Target::default(), CancellationToken::new());
        let waiting = wait(&log, &retrier, arrival("t/0", 7, 2), &stop, |e| target.apply(e));
        let stops = async {
            tokio::time::sleep(A_WHILE).await;
            stop.cancel();
        };
        let (ended, ()) = tokio::join!(tokio::time::timeout(Duration::from_secs(10), waiting), stops);

        assert!(matches!(ended, Ok(Err(Error::Stopped))), "{ended:?}");
        assert_eq!((target.times(), applied(&log)), (0, false));
        assert_eq!(arrived(&log), ["t/0"], "its arrival stays: a successor starts at the marker");
    }

    #[tokio::test]
    async fn while_another_replica_holds_the_claim_this_one_waits_and_does_not_apply() {
        let (log, (retrier, _), target, stop) =
            (FakeLog::default(), retrier(), Target::default(), CancellationToken::new());
        let until = DateTime::from_millis(now_ms() + 60_000);
        log.set(ID, doc! {"claimed_by": "t/9", "claimed_until": until});
        let waiting = wait(&log, &retrier, arrival("t/0", 7, 1), &stop, |e| target.apply(e));
        let other_applies = async {
            tokio::time::sleep(A_WHILE).await;
            assert!(!applied(&log));
            log.set(ID, doc! {"applied": true, "refused": "not here"});
        };
        let (passed, ()) = tokio::join!(waiting, other_applies);

        let passed = passed.expect("passed");
        assert_eq!(passed, Passed { here: false, refused: Some("not here".into()) });
        assert_eq!(target.times(), 0, "applied by the claimer only");
    }

    #[tokio::test]
    async fn a_claim_whose_lease_ran_out_is_taken_over_and_the_ddl_applied() {
        let (log, (retrier, _), target, stop) =
            (FakeLog::default(), retrier(), Target::default(), CancellationToken::new());
        let expired = DateTime::from_millis(now_ms() - 1_000);
        log.set(ID, doc! {"claimed_by": "t/9", "claimed_until": expired});
        let passed = wait(&log, &retrier, arrival("t/0", 7, 1), &stop, |e| target.apply(e)).await.expect("passed");

        assert!(passed.here);
        assert_eq!(target.times(), 1);
        let entry = log.get(ID).expect("an entry");
        assert_eq!(entry.get_str("claimed_by"), Ok("t/0"));
        let lease = entry.get_datetime("claimed_until").expect("a lease").timestamp_millis() - now_ms();
        assert!(lease > 50_000, "claimed for a minute, in case this one dies too: {lease} ms");
    }

    #[tokio::test]
    async fn a_ddl_the_target_refuses_is_marked_applied_with_the_reason_once() {
        let (log, (retrier, _), stop) = (FakeLog::default(), retrier(), CancellationToken::new());
        let target = Target { refused: Some("bad option".into()), ..Target::default() };
        let wait = |at| wait(&log, &retrier, arrival(at, 7, 2), &stop, |e| target.apply(e));
        let (a, b) = tokio::join!(wait("t/0"), wait("t/1"));
        let (a, b) = (a.expect("passed"), b.expect("passed"));

        assert_eq!(target.times(), 1);
        assert!(a.here != b.here, "one claimer: {a:?} {b:?}");
        assert!([&a, &b].iter().all(|p| p.refused.as_deref() == Some("bad option")), "both see why");
        let entry = log.get(ID).expect("an entry");
        assert_eq!((entry.get_bool("applied"), entry.get_str("refused")), (Ok(true), Ok("bad option")));
    }
}
