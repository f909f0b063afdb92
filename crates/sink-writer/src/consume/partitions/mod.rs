//! The partitions this replica owns: a task each, fed by the consumer through a bounded queue,
//! every record holding its bytes of the service's memory budget. A partition whose queue is full
//! or which finds the budget spent gets a moment to make room (writing frees some within a
//! round); then it is paused at the consumer (its prefetch is dropped) with the
//! one record in hand waiting for room; it resumes from the record after it once there is room
//! for many more (half its queue, an eighth of the budget), so pauses stay rare. On revoke (and
//! stop) the tasks stop starting writes, the writes already sent are awaited up to the drain
//! deadline, and the durable offsets are returned for commit. A task that fails is started again
//! from its durable offset after a pause, and readiness says so meanwhile.
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | the owned partitions: routing records to their tasks' queues, pause/resume, restart, stop |
//! | `fetch.rs` | the consumer as the partitions need it (pause, seek) and the records it hands over |
//! | `tests.rs` | unit tests over a recording consumer and fake tasks (no servers) |

pub(crate) mod fetch;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::Offset;
use service_kit::backoff::Backoff;
use service_kit::budget::{Holder, MemoryBudget, Reservation};
use service_kit::health::Health;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::consume::fence::{Fence, Owner, StandStill};
use crate::consume::offsets::{Marks, PartitionOffsets, Tp};
use crate::consume::partitions::fetch::{Fetch, Record};
use crate::consume::reader::{self, Decoded, Fetched};
use crate::error::Error;
use crate::metrics::Metrics;

/// Records queued per partition between the consumer and the decoder, and between the decoder
/// and the task, at least (the memory budget bounds their bytes)...
const QUEUE_RECORDS: usize = 1024;
/// ...and at least this many batches: while a batch is written, the next ones are fetched and
/// decoded. With one batch's worth, a partition writing one transaction at a time
/// (`exactly_once`) filled its queues during each write and was paused, and a refetch after a
/// pause takes up to seconds (the consumer's one prefetch queue is full of other partitions').
const QUEUE_BATCHES: usize = 2;

/// How long the consumer waits for a full partition to make room before pausing it.
const WAIT_BEFORE_PAUSE: Duration = Duration::from_millis(25);

/// A paused partition resumes once its queue has room for this fraction of its records...
const RESUME_ROOM_DIVISOR: usize = 2;
/// ...and the budget this fraction of its bytes (or the partition holds nothing).
const RESUME_ROOM_BUDGET_DIVISOR: usize = 8;

/// Readiness component: every partition's task runs (a failed one shows here until it restarts).
const PARTITIONS: &str = "partitions";

/// What works through a partition's records: the apply task (`apply::partition`) in service, a
/// fake in unit tests. It runs until stopped (`Err(Error::Stopped)` or `Ok` once `stop` is
/// cancelled); any other end is a failure, and the partition's task is started again.
pub trait Tasks: Send + Sync {
    fn run(&self, task: NewTask, records: mpsc::Receiver<Decoded>) -> BoxFuture<'static, Result<(), Error>>;
}

/// What a partition's new task is given.
pub struct NewTask {
    pub tp: Tp,
    /// Its durable offset and watermark reached (kept across its restarts).
    pub marks: Marks,
    pub stop: CancellationToken,
    /// Proof of ownership before writing, after the process stood still.
    pub fence: Arc<Fence>,
    /// Where it asks the consumer to move its fetch position.
    pub control: mpsc::Sender<Control>,
    /// Its generation among the partition's restarts.
    pub generation: u64,
}

/// The partitions' limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Records a partition's queues hold at most (the memory budget bounds their bytes).
    pub queue_records: usize,
    /// The pause before a failed task starts again (jittered).
    pub restart_pause: Duration,
    /// How long a stop waits for writes already sent.
    pub drain_timeout: Duration,
}

impl Limits {
    /// `batch_max_docs`: a partition queues at least [`QUEUE_BATCHES`] batches.
    pub fn new(batch_max_docs: usize, max_backoff: Duration, drain_timeout: Duration) -> Self {
        Self {
            queue_records: QUEUE_RECORDS.max(QUEUE_BATCHES * batch_max_docs),
            restart_pause: max_backoff.min(Duration::from_secs(5)),
            drain_timeout,
        }
    }
}

/// What the partitions tell the consumer loop.
#[derive(Debug)]
pub enum Control {
    /// A paused partition's held record went through: read on from `next`.
    Resume { tp: Tp, next: i64, generation: u64 },
    /// A partition task ended with an error.
    Failed { tp: Tp, generation: u64, error: String },
    /// Time to start a failed partition's task again.
    Restart { tp: Tp, generation: u64 },
    /// The task found the target holds everything before `offset`: fetch from there.
    Seek { tp: Tp, offset: i64, generation: u64 },
}

/// A fetched record its partition has no room for yet.
pub struct Waiting {
    tp: Tp,
    record: OwnedMessage,
    bytes: usize,
    tx: mpsc::Sender<Fetched>,
    holder: Holder,
    generation: u64,
}

struct Route {
    tx: mpsc::Sender<Fetched>,
    holder: Holder,
    offsets: PartitionOffsets,
    stop: CancellationToken,
    task: JoinHandle<()>,
    /// Paused at the consumer, one record waiting for room.
    paused: bool,
    /// The next offset this partition's task expects.
    next: i64,
    /// Counts the task's restarts: messages and controls of an older one are ignored.
    generation: u64,
}

pub struct Partitions {
    routes: Mutex<HashMap<Tp, Route>>,
    tasks: Arc<dyn Tasks>,
    metrics: Metrics,
    health: Health,
    budget: Arc<MemoryBudget>,
    owner: Arc<dyn Owner>,
    standstill: Arc<StandStill>,
    control: mpsc::Sender<Control>,
    runtime: tokio::runtime::Handle,
    limits: Limits,
    /// The next task's generation: never one an earlier task had, so a report still on its way
    /// from a task of a former assignment never passes for the current one's.
    generations: std::sync::atomic::AtomicU64,
}

/// Who the partitions answer to: the group member (ownership), the process's stand-still
/// clock, and the consumer loop (controls).
pub struct Ties {
    pub owner: Arc<dyn Owner>,
    pub standstill: Arc<StandStill>,
    pub control: mpsc::Sender<Control>,
}

impl Partitions {
    pub fn new(
        tasks: Arc<dyn Tasks>,
        metrics: Metrics,
        health: Health,
        budget: Arc<MemoryBudget>,
        ties: Ties,
        limits: Limits,
    ) -> Self {
        let Ties { owner, standstill, control } = ties;
        Self {
            routes: Mutex::new(HashMap::new()),
            tasks,
            metrics,
            health,
            budget,
            owner,
            standstill,
            control,
            runtime: tokio::runtime::Handle::current(),
            limits,
            generations: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Tp, Route>> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a task for each newly assigned partition.
    pub fn assign(&self, tps: &[Tp]) {
        let mut routes = self.lock();
        for tp in tps {
            let route = self.spawn(tp, PartitionOffsets::default());
            if let Some(old) = routes.insert(tp.clone(), route) {
                old.stop.cancel();
            }
        }
        self.metrics.assigned_partitions.set(i64::try_from(routes.len()).unwrap_or(0));
    }

    fn spawn(&self, tp: &Tp, offsets: PartitionOffsets) -> Route {
        let generation = self.generations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let records = self.limits.queue_records;
        let (tx, fetched) = mpsc::channel(records);
        let (decoded_tx, decoded) = mpsc::channel(records);
        let stop = CancellationToken::new();
        let fence = Fence::new(self.owner.clone(), &tp.0, tp.1, offsets.marks.durable.clone(), self.standstill.clone());
        let task = NewTask {
            tp: tp.clone(),
            marks: offsets.marks.clone(),
            stop: stop.clone(),
            fence: Arc::new(fence),
            control: self.control.clone(),
            generation,
        };
        let (control, tp_owned, stopped) = (self.control.clone(), tp.clone(), stop.clone());
        let tasks = self.tasks.clone();
        let task = self.runtime.spawn(async move {
            let mut decoder = tokio::spawn(reader::decode(fetched, decoded_tx));
            // A panic (a bug) must not leave a silent dead partition either, nor may any end
            // that was not asked for: every end but a stop is a failure, restarted.
            let run = async move { tasks.run(task, decoded).await };
            let outcome = std::panic::AssertUnwindSafe(run).catch_unwind().await;
            let error = match outcome {
                Ok(Err(Error::Stopped)) => None,
                Ok(Ok(())) if stopped.is_cancelled() => None,
                Ok(Ok(())) => Some(match tokio::time::timeout(Duration::from_secs(1), &mut decoder).await {
                    Ok(Err(e)) if e.is_panic() => format!("its decoder panicked: {}", panic_message(e.into_panic())),
                    _ => "its record queue ended".to_string(),
                }),
                Ok(Err(e)) => Some(e.to_string()),
                Err(panic) => Some(format!("the task panicked: {}", panic_message(panic))),
            };
            decoder.abort();
            if let Some(error) = error {
                let _ = control.send(Control::Failed { tp: tp_owned, generation, error }).await;
            }
        });
        let next = offsets.durable();
        Route { tx, holder: Holder::default(), offsets, stop, task, paused: false, next, generation }
    }

    /// Hands a fetched record to its partition's task. A record of a partition not (or no
    /// longer) ours, one before what its task expects, or one fetched while its partition is
    /// paused is dropped: it is fetched again where its task needs it. A record its partition
    /// has no room for yet is returned, to [`Partitions::wait_or_pause`].
    pub fn dispatch(&self, message: &impl Record) -> Option<Waiting> {
        let tp: Tp = (message.topic().to_string(), message.partition());
        let mut routes = self.lock();
        let route = routes.get_mut(&tp)?;
        if route.paused || message.offset() < route.next {
            return None;
        }
        route.next = message.offset() + 1;
        let bytes = reader::footprint(message.key(), message.payload());
        let record = message.to_owned_record();
        if let (Ok(permit), Some(reservation)) = (route.tx.try_reserve(), self.budget.try_reserve(bytes, &route.holder))
        {
            permit.send(Fetched { message: record, reservation });
            return None;
        }
        let (tx, holder, generation) = (route.tx.clone(), route.holder.clone(), route.generation);
        Some(Waiting { tp, record, bytes, tx, holder, generation })
    }

    /// Waits a little for room for `waiting` (a partition being written usually frees some
    /// within one write); if none comes, pauses the partition at the consumer and waits aside
    /// with the record in hand. A pause costs a refetch of what was prefetched for the
    /// partition, the short wait holds up the other partitions: the wait is kept short.
    pub async fn wait_or_pause(&self, consumer: &impl Fetch, waiting: Waiting) {
        let Waiting { tp, record, bytes, tx, holder, generation } = waiting;
        match tokio::time::timeout(WAIT_BEFORE_PAUSE, room(&self.budget, bytes, &holder, &tx)).await {
            Ok(Some((permit, reservation))) => {
                permit.send(Fetched { message: record, reservation });
                return;
            }
            // The task is gone (stopped or restarting): its records are fetched again.
            Ok(None) => return,
            Err(_) => {}
        }
        let mut routes = self.lock();
        let Some(route) = routes.get_mut(&tp).filter(|r| r.generation == generation && !r.paused) else {
            return;
        };
        // No room: stop fetching this partition and wait with the record in hand.
        route.paused = true;
        consumer.pause(&tp, true);
        self.metrics.partition_pauses.inc();
        let (budget, stop) = (self.budget.clone(), route.stop.clone());
        let (control, next) = (self.control.clone(), record.offset() + 1);
        self.runtime.spawn(async move {
            let delivered = async {
                let (permit, reservation) = room(&budget, bytes, &holder, &tx).await?;
                permit.send(Fetched { message: record, reservation });
                // Resume with room for many records, not one: a pause drops what librdkafka
                // prefetched for the partition, so resuming at the first free slot would fetch
                // (and decompress) the same records again and again.
                drop(tx.reserve_many(tx.max_capacity() / RESUME_ROOM_DIVISOR).await.ok()?);
                budget.room(budget.limit() / RESUME_ROOM_BUDGET_DIVISOR, &holder).await;
                Some(())
            };
            let delivered = tokio::select! {
                _ = stop.cancelled() => None,
                delivered = delivered => delivered,
            };
            if delivered.is_some() {
                let _ = control.send(Control::Resume { tp, next, generation }).await;
            }
        });
    }

    /// Acts on what a partition reported.
    pub fn handle(&self, consumer: &impl Fetch, control: Control) {
        match control {
            Control::Resume { tp, next, generation } => {
                let mut routes = self.lock();
                let Some(route) = routes.get_mut(&tp).filter(|r| r.generation == generation && r.paused) else {
                    return;
                };
                route.paused = false;
                route.next = next;
                consumer.seek(&tp, Offset::Offset(next));
                consumer.pause(&tp, false);
            }
            Control::Seek { tp, offset, generation } => {
                let mut routes = self.lock();
                let Some(route) = routes.get_mut(&tp).filter(|r| r.generation == generation) else { return };
                // Only forward: what the consumer holds below the offset the task drops itself.
                if offset > route.next && !route.paused {
                    route.next = offset;
                    consumer.seek(&tp, Offset::Offset(offset));
                }
            }
            Control::Failed { tp, generation, error } => {
                if self.lock().get(&tp).is_none_or(|r| r.generation != generation) {
                    return;
                }
                self.metrics.partition_restarts.inc();
                let writer = format!("{}/{}", tp.0, tp.1);
                self.health.set_for(PARTITIONS, &writer, Err(format!("failed, restarting: {error}")));
                tracing::error!(topic = %tp.0, partition = tp.1, %error, "partition task failed: starting it again from its durable offset");
                // Jittered: partitions that failed together (the target went away) start apart.
                let step = self.limits.restart_pause;
                let (control, pause_for) = (self.control.clone(), Backoff::new(step, step).next_delay());
                tokio::spawn(async move {
                    tokio::time::sleep(pause_for).await;
                    let _ = control.send(Control::Restart { tp, generation }).await;
                });
            }
            Control::Restart { tp, generation } => {
                let mut routes = self.lock();
                let Some(old) = routes.remove(&tp) else { return };
                if old.generation != generation {
                    routes.insert(tp, old);
                    return;
                }
                old.stop.cancel();
                let durable = old.offsets.durable();
                let route = self.spawn(&tp, old.offsets);
                routes.insert(tp.clone(), route);
                drop(routes);
                consumer.seek(&tp, if durable >= 0 { Offset::Offset(durable) } else { Offset::Stored });
                consumer.pause(&tp, false);
                self.health.set_for(PARTITIONS, &format!("{}/{}", tp.0, tp.1), Ok(()));
            }
        }
    }

    /// [`Partitions::stop`] from a thread of the runtime that must not await: the rebalance
    /// callback, which runs while the consumer is polled.
    pub fn stop_blocking(&self, which: Option<&[Tp]>) -> Vec<(Tp, i64)> {
        tokio::task::block_in_place(|| self.runtime.block_on(self.stop(which)))
    }

    /// Stops the tasks of `which` (all when None): no new write starts, the writes already sent
    /// are awaited up to the drain deadline, then abandoned. Returns the durable offsets to
    /// commit.
    pub async fn stop(&self, which: Option<&[Tp]>) -> Vec<(Tp, i64)> {
        let stopped: Vec<(Tp, Route)> = {
            let mut routes = self.lock();
            let keys: Vec<Tp> = match which {
                Some(tps) => tps.to_vec(),
                None => routes.keys().cloned().collect(),
            };
            let stopped = keys.into_iter().filter_map(|k| routes.remove(&k).map(|r| (k, r))).collect();
            self.metrics.assigned_partitions.set(i64::try_from(routes.len()).unwrap_or(0));
            stopped
        };
        for (tp, route) in &stopped {
            route.stop.cancel();
            // A partition that went away is no one's concern here any more.
            self.health.forget_writer(&format!("{}/{}", tp.0, tp.1));
        }
        let deadline = tokio::time::Instant::now() + self.limits.drain_timeout;
        let mut offsets = Vec::new();
        for (tp, mut route) in stopped {
            if tokio::time::timeout_at(deadline, &mut route.task).await.is_err() {
                route.task.abort();
                self.metrics.writes_abandoned.inc();
                tracing::error!(
                    topic = %tp.0,
                    partition = tp.1,
                    drain_timeout_ms = self.limits.drain_timeout.as_millis() as u64,
                    "writes already sent were not answered within the drain deadline: abandoned (on a link slower \
                     than that, one may still land after the next owner's)"
                );
            }
            if let Some(offset) = route.offsets.due() {
                offsets.push((tp, offset));
            }
        }
        offsets
    }

    /// Durable offsets not yet committed.
    pub fn due(&self) -> Vec<(Tp, i64)> {
        self.lock().iter_mut().filter_map(|(tp, route)| route.offsets.due().map(|o| (tp.clone(), o))).collect()
    }

    /// Every owned partition's marks (durable offset, watermark reached).
    pub fn marks(&self) -> Vec<(Tp, Marks)> {
        self.lock().iter().map(|(tp, route)| (tp.clone(), route.offsets.marks.clone())).collect()
    }
}

/// What a panic said, when it said it with a string.
fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "no message".to_string())
}

/// Room for one record of `bytes` in a partition's queue: its share of the budget, then a slot
/// (`None` when the partition's task is gone).
async fn room<'a>(
    budget: &Arc<MemoryBudget>,
    bytes: usize,
    holder: &Holder,
    tx: &'a mpsc::Sender<Fetched>,
) -> Option<(mpsc::Permit<'a, Fetched>, Reservation)> {
    let reservation = budget.reserve(bytes, holder).await;
    let permit = tx.reserve().await.ok()?;
    Some((permit, reservation))
}
