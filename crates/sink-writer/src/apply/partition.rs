//! One task per assigned partition: gather a batch of decoded records, plan it, write it, and
//! advance the partition's durable offset strictly in order once the target has acknowledged
//! everything before it. Up to `max_in_flight` batches overlap when they touch disjoint
//! documents. At a DDL marker everything before it is applied first; the marker's own offset
//! becomes durable only once the DDL is applied.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use envelope::{ControlEvent, Event};
use rdkafka::message::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::apply::flight::{Covered, Flight};
use crate::apply::parking::Parking;
use crate::apply::round::{DeadLetterer, Destination};
use crate::apply::shared::Shared;
use crate::apply::write_plan::{self, DocKey};
use crate::apply::{write_batch, Batch};
use crate::consume::fence::Fence;
use crate::consume::offsets::Marks;
use crate::consume::partitions::{Control, NewTask, Tasks};
use crate::consume::reader::Decoded;
use crate::error::Error;

pub struct PartitionTask {
    pub topic: String,
    pub partition: i32,
    pub shared: Arc<Shared>,
    /// The next offset to commit (everything below it is applied or dead-lettered) and the
    /// watermark reached.
    pub marks: Marks,
    pub stop: CancellationToken,
    /// Proof of ownership before writing, after the process stood still.
    pub fence: Arc<Fence>,
    /// Where the task asks the consumer to move its fetch position.
    pub control: mpsc::Sender<Control>,
    /// This task's generation among the partition's restarts.
    pub generation: u64,
}

/// The partitions' tasks in service: each applies its records to the target.
pub struct Apply(pub Arc<Shared>);

impl Tasks for Apply {
    fn run(
        &self,
        task: NewTask,
        records: mpsc::Receiver<Decoded>,
    ) -> futures::future::BoxFuture<'static, Result<(), Error>> {
        let NewTask { tp: (topic, partition), marks, stop, fence, control, generation } = task;
        let task = PartitionTask { topic, partition, shared: self.0.clone(), marks, stop, fence, control, generation };
        Box::pin(task.run(records))
    }
}

impl PartitionTask {
    /// Works through the partition's records until stopped; an error ends the task (the
    /// caller starts a new one from the durable offset).
    pub async fn run(self, mut rx: mpsc::Receiver<Decoded>) -> Result<(), Error> {
        // Another replica may have applied DDL while this one did not own the partition.
        let ddl = &self.shared.ddl;
        self.shared.retrier.run(crate::apply::retry::WRITES, &self.name(), &self.stop, || ddl.load()).await?;
        // Another replica may have recorded dead letters of it: they hold its point.
        let (letters, tp) = (&self.shared.dead_letter_book, (self.topic.clone(), self.partition));
        self.shared
            .retrier
            .run(crate::apply::retry::WRITES, &self.name(), &self.stop, || letters.refresh_partition(&tp))
            .await?;
        if self.shared.exactly_once {
            let exact = crate::apply::exact::Exact::claim(&self).await?;
            return exact.run(&mut rx).await;
        }
        // A former owner that reached a DDL marker had applied everything before it: nothing
        // before it is applied again. The consumer starts at the committed offset, most often
        // past the marker; only one behind it is moved up to it (see `gather`).
        let name = self.name();
        let reached =
            self.shared.retrier.run(crate::apply::retry::WRITES, &name, &self.stop, || ddl.reached(&name)).await?;
        let start = reached.unwrap_or(-1);
        let parking = Arc::new(Parking::default());
        let retrying = AbortOnDrop(tokio::spawn(parking.clone().run(
            self.shared.clone(),
            self.destination(),
            self.marks.clone(),
            self.stop.clone(),
        )));
        let (lot, marks, shared) = (parking.clone(), self.marks.clone(), self.shared.clone());
        let mut flight = Flight::new(Box::new(move |covered: Covered| {
            // An open dead letter holds the partition's point where it is.
            let held = shared.dead_letter_book.holds(&tp);
            lot.covered(Covered { watermark: covered.watermark.filter(|_| !held), ..covered }, &marks)
        }));
        let outcome = self.work(&mut flight, &parking, &mut rx, start).await;
        // Stopping: what is on the wire is awaited (a write cannot be called back); nothing new
        // starts, as every attempt checks the stop first.
        let drained = flight.drain().await;
        drop(retrying);
        match outcome {
            Err(Error::Stopped) | Ok(()) => match drained {
                Err(Error::Stopped) | Ok(()) => Ok(()),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// `topic/partition`: who this task is in readiness and in the DDL log.
    pub fn name(&self) -> String {
        format!("{}/{}", self.topic, self.partition)
    }

    /// Asks the consumer to fetch this partition from `offset` on (records before it are in the
    /// target already).
    pub async fn seek(&self, offset: i64) {
        let tp = (self.topic.clone(), self.partition);
        let _ = self.control.send(Control::Seek { tp, offset, generation: self.generation }).await;
    }

    pub(crate) fn destination(&self) -> Destination {
        Destination { topic: self.topic.clone(), partition: self.partition, fence: self.fence.clone() }
    }

    async fn work(
        &self,
        flight: &mut Flight,
        parking: &Arc<Parking>,
        rx: &mut mpsc::Receiver<Decoded>,
        start: i64,
    ) -> Result<(), Error> {
        let max_in_flight = self.shared.apply.max_in_flight;
        let mut behind_start = false;
        while let Some(batch) = self.gather(flight, rx, start, &mut behind_start).await? {
            let control = match batch.last() {
                Some(Decoded { message, event: Ok(Event::Control(control)), .. }) => {
                    Some((message.offset(), control.as_ref().clone()))
                }
                _ => None,
            };
            let last_offset = batch.last().map_or(-1, |d| d.message.offset());
            if self.marks.durable() < 0 {
                // Everything before the first record this task received was done by an earlier
                // owner: the offset an ownership check may commit.
                self.marks.reached(batch.first().map_or(-1, |d| d.message.offset()), None);
            }
            self.shared.metrics.batch_messages.observe(batch.len() as f64);
            self.shared.metrics.consumed.with_label_values(&[&self.topic]).inc_by(batch.len() as u64);
            let watermark = crate::consume::reader::newest_watermark(&batch);
            let resent = crate::dead_letters::resent(&batch);
            let (batch, reservations) = self.plan(batch);
            let keys: HashSet<DocKey> = batch.plan.keys.iter().cloned().collect();
            // Keep per-document order: a batch touching a document still in flight waits for it.
            while flight.len() >= max_in_flight || flight.overlaps(&keys) {
                if self.stop.is_cancelled() {
                    return Err(Error::Stopped);
                }
                flight.complete_one().await?;
            }
            if self.stop.is_cancelled() {
                return Err(Error::Stopped);
            }
            let write = write_batch(self.shared.clone(), self.destination(), batch, parking.clone(), self.stop.clone());
            // A batch ending in a DDL marker covers everything before the marker, not the marker.
            let covered = if control.is_some() { last_offset } else { last_offset + 1 };
            let (shared, name, stop) = (self.shared.clone(), self.name(), self.stop.clone());
            let tp = (self.topic.clone(), self.partition);
            flight.push(
                keys,
                Box::pin(async move {
                    let written = write.await;
                    drop(reservations);
                    written?;
                    // Re-sent documents applied resolve their dead letters before the offset moves.
                    let letters = &shared.dead_letter_book;
                    shared
                        .retrier
                        .run(crate::apply::retry::WRITES, &name, &stop, || letters.applied(&tp, &resent))
                        .await?;
                    Ok(Covered { offset: covered, watermark })
                }),
            );
            if let Some((offset, event)) = control {
                flight.drain().await?;
                parking.until_empty(&self.stop).await?;
                self.pass_marker(offset, &event).await?;
                self.marks.reached(offset + 1, None);
            }
        }
        Ok(())
    }

    /// Waits at a DDL marker until the DDL is applied (here or by another partition).
    pub(crate) async fn pass_marker(&self, offset: i64, event: &ControlEvent) -> Result<(), Error> {
        let arrival = self.name();
        let required = event.markers_for(|topic| self.shared.subscription.reads(topic)).max(1);
        let passed = self.shared.ddl.barrier(event, &arrival, offset, required, &self.stop).await?;
        if passed.here {
            self.shared.metrics.ddl_applied.with_label_values(&[event.ddl.kind()]).inc();
            if let Some(reason) = passed.refused {
                let (key, value) = envelope::encode_control(event);
                let to = self.destination();
                let dead = DeadLetterer { writes: self.shared.writes(), to: &to, stop: &self.stop };
                dead.send(offset, Some(&key), Some(&value), &reason, "ddl").await?;
            }
        }
        Ok(())
    }

    /// The next batch: up to the limits, at most `batch_max_wait_ms` after its first record,
    /// and ending at a control event. `None` once stopped or the queue is closed. Writes in
    /// flight keep completing (and advancing the durable offset) while it waits.
    ///
    /// Records before `start` (the partition's last DDL marker reached) are in the target
    /// already: dropped, and the first of them moves the consumer up to `start` (once:
    /// `behind_start`). A seek made before knowing where the consumer stands could only move
    /// it back from its committed offset.
    async fn gather(
        &self,
        flight: &mut Flight,
        rx: &mut mpsc::Receiver<Decoded>,
        start: i64,
        behind_start: &mut bool,
    ) -> Result<Option<Vec<Decoded>>, Error> {
        let limits = &self.shared.apply;
        let first = loop {
            tokio::select! {
                _ = self.stop.cancelled() => return Ok(None),
                done = flight.next_done(), if !flight.is_empty() => flight.completed(done)?,
                message = rx.recv() => match message {
                    Some(message) if message.message.offset() < start => {
                        if !std::mem::replace(behind_start, true) {
                            self.seek(start).await;
                        }
                    }
                    Some(message) => break message,
                    None => return Ok(None),
                },
            }
        };
        let mut bytes = first.message.payload().map_or(0, <[u8]>::len);
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + Duration::from_millis(limits.batch_max_wait_ms);
        while crate::consume::reader::takes_more(&batch, bytes, limits) {
            let next = tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = tokio::time::sleep_until(deadline) => break,
                done = flight.next_done(), if !flight.is_empty() => {
                    flight.completed(done)?;
                    continue;
                }
                message = rx.recv() => message,
            };
            let Some(message) = next else { break };
            if message.message.offset() < start {
                continue;
            }
            bytes += message.message.payload().map_or(0, <[u8]>::len);
            batch.push(message);
        }
        Ok(Some(batch))
    }

    /// The batch's write plan, and the memory its records hold until it is written.
    pub(crate) fn plan(&self, batch: Vec<Decoded>) -> (Batch, Vec<service_kit::budget::Reservation>) {
        let mut changes = Vec::with_capacity(batch.len());
        let mut undecodable = Vec::new();
        let mut messages = Vec::with_capacity(batch.len());
        let mut reservations = Vec::with_capacity(batch.len());
        for Decoded { message, event, reservation } in batch {
            match event {
                Ok(Event::Change(change)) => changes.push((message.offset(), *change)),
                Ok(Event::Tombstone { .. } | Event::Control(_) | Event::Watermark(_)) => {}
                Err(e) => undecodable.push((message.offset(), e.to_string())),
            }
            messages.push(message);
            reservations.push(reservation);
        }
        let ddl = &self.shared.ddl;
        let plan =
            write_plan::plan(changes, &self.shared.mapper, self.shared.field_names, |ns, at| ddl.obsolete(ns, at));
        (Batch { plan, messages, undecodable }, reservations)
    }
}

/// Aborts the task when dropped.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
