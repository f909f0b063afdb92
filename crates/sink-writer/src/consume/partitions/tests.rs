//! The owned partitions without servers: a consumer that records what it was told (pause, resume,
//! seek) and fake tasks that take their records one by one, fail, panic or ignore a stop.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::message::{Message, OwnedMessage, Timestamp};
use rdkafka::Offset;
use service_kit::budget::MemoryBudget;
use service_kit::health::Health;
use tokio::sync::{mpsc, Semaphore};

use super::fetch::Fetch;
use super::{Control, Limits, NewTask, Partitions, Tasks, Ties};
use crate::consume::fence::{Owner, StandStill};
use crate::consume::offsets::Tp;
use crate::consume::reader::Decoded;
use crate::error::Error;
use crate::metrics::Metrics;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Told {
    Pause(Tp),
    Resume(Tp),
    Seek(Tp, i64),
}

/// The consumer: remembers what it was told.
#[derive(Default)]
struct Consumer(Mutex<Vec<Told>>);

impl Consumer {
    fn told(&self) -> Vec<Told> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl Fetch for Consumer {
    fn pause(&self, tp: &Tp, pause: bool) {
        self.0.lock().unwrap().push(if pause { Told::Pause(tp.clone()) } else { Told::Resume(tp.clone()) });
    }

    fn seek(&self, tp: &Tp, offset: Offset) {
        let Offset::Offset(offset) = offset else { panic!("seek to {offset:?}") };
        self.0.lock().unwrap().push(Told::Seek(tp.clone(), offset));
    }
}

/// What a fake task does.
#[derive(Clone, Copy)]
enum Does {
    /// Takes each record once the gate lets one through; its durable offset follows.
    Take,
    /// Takes records like `Take`, then fails at this offset (before taking it).
    FailAt(i64),
    Panic,
    /// Ends as if its queue closed, without being stopped.
    End,
    /// Takes records like `Take`, but a stop does not end it.
    IgnoreStop,
}

/// Fake tasks: each new task does the next scripted thing (the last one again when the script
/// runs out) and records the records it took, with its generation.
struct FakeTasks {
    script: Mutex<VecDeque<Does>>,
    taken: Arc<Mutex<Vec<(u64, i64)>>>,
    gate: Arc<Semaphore>,
}

impl FakeTasks {
    fn new(script: &[Does], open: bool) -> Arc<Self> {
        let permits = if open { Semaphore::MAX_PERMITS } else { 0 };
        Arc::new(Self {
            script: Mutex::new(script.iter().copied().collect()),
            taken: Arc::default(),
            gate: Arc::new(Semaphore::new(permits)),
        })
    }

    fn taken(&self) -> Vec<i64> {
        self.taken.lock().unwrap().iter().map(|(_, offset)| *offset).collect()
    }

    fn generations(&self) -> Vec<u64> {
        self.taken.lock().unwrap().iter().map(|(generation, _)| *generation).collect()
    }
}

impl Tasks for FakeTasks {
    fn run(&self, task: NewTask, mut records: mpsc::Receiver<Decoded>) -> BoxFuture<'static, Result<(), Error>> {
        let does = {
            let mut script = self.script.lock().unwrap();
            if script.len() > 1 { script.pop_front() } else { script.front().copied() }.unwrap_or(Does::Take)
        };
        let (taken, gate) = (self.taken.clone(), self.gate.clone());
        Box::pin(async move {
            match does {
                Does::Panic => panic!("a bug"),
                Does::End => return Ok(()),
                _ => {}
            }
            loop {
                let record = tokio::select! {
                    _ = task.stop.cancelled(), if !matches!(does, Does::IgnoreStop) => return Err(Error::Stopped),
                    record = async {
                        gate.acquire().await.expect("gate").forget();
                        records.recv().await
                    } => record,
                };
                let Some(record) = record else { return Ok(()) };
                let offset = record.message.offset();
                if matches!(does, Does::FailAt(at) if at == offset) {
                    return Err(Error::fatal(format!("refused at {offset}")));
                }
                taken.lock().unwrap().push((task.generation, offset));
                task.marks.reached(offset + 1, None);
            }
        })
    }
}

struct AlwaysOwner;

impl Owner for AlwaysOwner {
    fn commit(&self, _topic: &str, _partition: i32, _offset: i64) -> Result<(), String> {
        Ok(())
    }
}

struct Setup {
    partitions: Partitions,
    control: mpsc::Receiver<Control>,
    consumer: Consumer,
    metrics: Metrics,
    health: Health,
}

fn setup(tasks: Arc<FakeTasks>, queue_records: usize, drain_timeout: Duration) -> Setup {
    let metrics = Metrics::register(&prometheus::Registry::new()).expect("metrics");
    let health = Health::new();
    // The rest of the service is up: readiness shows only what the partitions say.
    health.set_ready("kafka-consumer");
    let (control_tx, control) = mpsc::channel(64);
    let ties = Ties {
        owner: Arc::new(AlwaysOwner),
        standstill: StandStill::start(Duration::from_secs(60), &tokio::runtime::Handle::current()),
        control: control_tx,
    };
    let limits = Limits { queue_records, restart_pause: Duration::from_millis(10), drain_timeout };
    let budget = MemoryBudget::new(64 << 20);
    let partitions = Partitions::new(tasks, metrics.clone(), health.clone(), budget, ties, limits);
    Setup { partitions, control, consumer: Consumer::default(), metrics, health }
}

fn tp(partition: i32) -> Tp {
    ("orders".to_string(), partition)
}

fn record(tp: &Tp, offset: i64) -> OwnedMessage {
    let payload = Some(br#"{"not":"an envelope"}"#.to_vec());
    OwnedMessage::new(payload, None, tp.0.clone(), Timestamp::NotAvailable, tp.1, offset, None)
}

/// Waits until `check` holds (the tasks run beside the test).
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never happened: {what}");
}

impl Setup {
    /// The next control the partitions sent to the consumer loop.
    async fn control(&mut self) -> Control {
        tokio::time::timeout(Duration::from_secs(15), self.control.recv()).await.expect("a control").expect("open")
    }

    /// Hands the records to their partitions, as the consumer loop does; returns the offsets
    /// that found no room.
    fn dispatch(&self, tp: &Tp, offsets: impl IntoIterator<Item = i64>) -> Vec<super::Waiting> {
        offsets.into_iter().filter_map(|offset| self.partitions.dispatch(&record(tp, offset))).collect()
    }

    fn readiness(&self) -> Result<(), Vec<String>> {
        self.health.readiness()
    }
}

#[tokio::test]
async fn records_reach_their_partitions_task_in_order_and_refetched_or_foreign_ones_are_dropped() {
    let tasks = FakeTasks::new(&[Does::Take], true);
    let s = setup(tasks.clone(), 16, Duration::from_secs(1));
    s.partitions.assign(&[tp(0)]);
    assert!(s.dispatch(&tp(0), [0, 1, 2]).is_empty());
    assert!(s.dispatch(&tp(0), [1]).is_empty(), "a record fetched again is dropped");
    assert!(s.dispatch(&tp(1), [0, 1]).is_empty(), "a partition not owned takes nothing");
    assert!(s.dispatch(&tp(0), [3]).is_empty());
    until("four records taken", || tasks.taken().len() == 4).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(tasks.taken(), vec![0, 1, 2, 3], "each record once, in order");
    assert_eq!(s.metrics.assigned_partitions.get(), 1);
    assert_eq!(s.partitions.due(), vec![(tp(0), 4)], "the durable offset the task reached");
    assert_eq!(s.partitions.due(), vec![], "due once");
}

#[tokio::test]
async fn a_partition_with_no_room_is_paused_and_resumed_from_the_record_after_the_one_it_held() {
    let tasks = FakeTasks::new(&[Does::Take], false);
    let mut s = setup(tasks.clone(), 4, Duration::from_secs(1));
    s.partitions.assign(&[tp(0)]);
    // The task takes nothing yet: its queues (and the decoder's hand) fill up.
    let mut offset = 0;
    let waiting = loop {
        assert!(offset < 100, "the queue never filled");
        if let Some(waiting) = s.dispatch(&tp(0), [offset]).pop() {
            break waiting;
        }
        offset += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let held = offset;
    s.partitions.wait_or_pause(&s.consumer, waiting).await;
    assert_eq!(s.consumer.told(), vec![Told::Pause(tp(0))], "no room within the short wait: paused");
    assert_eq!(s.metrics.partition_pauses.get(), 1);
    assert!(s.dispatch(&tp(0), [held + 1, held + 2]).is_empty());

    tasks.gate.add_permits(Semaphore::MAX_PERMITS);
    let Control::Resume { next, .. } = s.control().await else { panic!("expected a resume") };
    assert_eq!(next, held + 1, "resumes after the record it held");
    s.partitions.handle(&s.consumer, Control::Resume { tp: tp(0), next, generation: 0 });
    assert_eq!(s.consumer.told(), vec![Told::Seek(tp(0), held + 1), Told::Resume(tp(0))]);
    assert!(s.dispatch(&tp(0), held + 1..held + 3).is_empty());
    until("every record taken", || tasks.taken().len() == usize::try_from(held + 3).unwrap()).await;
    assert_eq!(tasks.taken(), (0..held + 3).collect::<Vec<_>>(), "nothing lost or doubled across the pause");
}

#[tokio::test]
async fn a_failed_task_is_reported_and_started_again_from_its_durable_offset() {
    let tasks = FakeTasks::new(&[Does::FailAt(3), Does::Take], true);
    let mut s = setup(tasks.clone(), 16, Duration::from_secs(1));
    s.partitions.assign(&[tp(0)]);
    assert!(s.dispatch(&tp(0), 0..5).is_empty());
    let failed = s.control().await;
    let Control::Failed { generation, ref error, .. } = failed else { panic!("expected a failure, got {failed:?}") };
    assert!(error.contains("refused at 3"), "{error}");
    s.partitions.handle(&s.consumer, failed);
    assert_eq!(s.metrics.partition_restarts.get(), 1);
    let reasons = s.readiness().expect_err("not ready while the partition restarts");
    assert!(reasons.iter().any(|r| r.contains("orders/0") && r.contains("refused at 3")), "{reasons:?}");

    let restart = s.control().await;
    assert!(matches!(restart, Control::Restart { generation: g, .. } if g == generation), "{restart:?}");
    s.partitions.handle(&s.consumer, restart);
    assert_eq!(
        s.consumer.told(),
        vec![Told::Seek(tp(0), 3), Told::Resume(tp(0))],
        "fetched again from its durable offset"
    );
    assert_eq!(s.readiness(), Ok(()), "ready again once restarted");
    // A late report of the old task changes nothing.
    s.partitions.handle(&s.consumer, Control::Failed { tp: tp(0), generation, error: "late".into() });
    assert_eq!(s.metrics.partition_restarts.get(), 1);

    assert!(s.dispatch(&tp(0), 3..6).is_empty());
    until("the new task took 3 to 5", || tasks.taken().len() == 6).await;
    assert_eq!(tasks.taken(), vec![0, 1, 2, 3, 4, 5]);
    let generations = tasks.generations();
    assert!(generations[3..].iter().all(|g| *g > generation), "the rest by the new task: {generations:?}");
}

#[tokio::test]
async fn a_task_that_panics_or_ends_unasked_is_a_failure_too() {
    for (does, says) in [(Does::Panic, "the task panicked: a bug"), (Does::End, "its record queue ended")] {
        let tasks = FakeTasks::new(&[does], true);
        let mut s = setup(tasks, 16, Duration::from_secs(1));
        s.partitions.assign(&[tp(0)]);
        match s.control().await {
            Control::Failed { error, .. } => assert_eq!(error, says),
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_seek_asked_by_a_task_moves_the_fetch_position_only_forward() {
    let tasks = FakeTasks::new(&[Does::Take], true);
    let s = setup(tasks.clone(), 16, Duration::from_secs(1));
    s.partitions.assign(&[tp(0)]);
    s.partitions.handle(&s.consumer, Control::Seek { tp: tp(0), offset: 10, generation: 0 });
    assert_eq!(s.consumer.told(), vec![Told::Seek(tp(0), 10)]);
    s.partitions.handle(&s.consumer, Control::Seek { tp: tp(0), offset: 4, generation: 0 });
    s.partitions.handle(&s.consumer, Control::Seek { tp: tp(0), offset: 20, generation: 7 });
    assert_eq!(s.consumer.told(), vec![], "backwards, or from another task: ignored");
    assert!(s.dispatch(&tp(0), [5, 10, 11]).is_empty());
    until("two records taken", || tasks.taken().len() == 2).await;
    assert_eq!(tasks.taken(), vec![10, 11], "records before the seek are dropped");
}

#[tokio::test]
async fn a_stop_returns_the_durable_offsets_and_abandons_a_task_past_the_drain_deadline() {
    let tasks = FakeTasks::new(&[Does::Take, Does::IgnoreStop], true);
    let s = setup(tasks.clone(), 16, Duration::from_millis(100));
    s.partitions.assign(&[tp(0)]);
    s.partitions.assign(&[tp(1)]);
    assert!(s.dispatch(&tp(0), 0..5).is_empty());
    assert!(s.dispatch(&tp(1), 0..2).is_empty());
    until("seven records taken", || tasks.taken().len() == 7).await;
    let mut offsets = s.partitions.stop(None).await;
    offsets.sort();
    assert_eq!(offsets, vec![(tp(0), 5), (tp(1), 2)], "each partition's durable offset, to commit");
    assert_eq!(s.metrics.writes_abandoned.get(), 1, "the task that ignored the stop");
    assert_eq!(s.metrics.assigned_partitions.get(), 0);
    assert!(s.partitions.due().is_empty());
    assert!(s.dispatch(&tp(0), [5]).is_empty() && tasks.taken().len() == 7, "a stopped partition takes nothing");
}

#[tokio::test]
async fn stopping_some_partitions_leaves_the_others_running() {
    let tasks = FakeTasks::new(&[Does::Take], true);
    let s = setup(tasks.clone(), 16, Duration::from_secs(1));
    s.partitions.assign(&[tp(0), tp(1)]);
    assert!(s.dispatch(&tp(0), [0]).is_empty() && s.dispatch(&tp(1), [0]).is_empty());
    until("both took a record", || tasks.taken().len() == 2).await;
    assert_eq!(s.partitions.stop(Some(&[tp(0)])).await, vec![(tp(0), 1)]);
    assert!(s.dispatch(&tp(1), [1]).is_empty());
    until("partition 1 goes on", || tasks.taken().len() == 3).await;
    assert_eq!(s.partitions.marks().len(), 1);
    assert_eq!(s.metrics.assigned_partitions.get(), 1);
}
