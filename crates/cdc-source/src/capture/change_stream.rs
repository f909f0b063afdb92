//! The change stream loop: open at the planned position, convert every event, and hand the
//! items to the producer through the bounded queue (a full queue pauses reading). The stream is
//! read ahead by a task of its own (`prefetch.rs`). Events over 16 MiB are read as
//! `large_events.rs` says.

use std::time::{Duration, Instant};

use envelope::{ClusterTime, Namespace};
use mongodb::change_stream::event::{OperationType, ResumeToken};
use service_kit::health::LoopBeat;
use tokio_util::sync::CancellationToken;

use crate::capture::convert::{Converted, Converter, Recopy};
use crate::capture::large_events::{self, Fragments, StreamEvent, Support};
use crate::capture::prefetch::Prefetch;
use crate::capture::schema;
use crate::capture::schema_check::IndexCheck;
use crate::capture::schema_events::{self, Described};
use crate::capture::watch::{self, open, How, Start};
use crate::config::{CaptureConfig, IndexTiming};
use crate::delivery::checkpoint::{CheckpointUpdate, CollectionProgress};
use crate::delivery::queue;
use crate::delivery::record::Item;
use crate::delivery::watermark::token_time;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::resend::Resender;
use crate::server::{self, now_ms};
use crate::snapshot::copy::{Copier, Tracking};

pub struct StreamLoop<'a> {
    pub client: &'a mongodb::Client,
    pub config: &'a CaptureConfig,
    pub converter: Converter,
    pub tx: queue::Sender,
    pub beat: LoopBeat,
    pub idle_checkpoint_interval: Duration,
    pub metrics: Metrics,
    /// Readiness: `component` is set ready once the stream is open.
    pub health: service_kit::health::Health,
    pub component: &'static str,
    /// Where idle heartbeats go, if anywhere.
    pub heartbeat_topic: Option<String>,
    /// Documents per read batch when a rename makes the stream copy a collection.
    pub copy_batch_size: u32,
    /// How often indexes are compared where the stream does not report their changes.
    pub schema_check_interval: Duration,
    /// Documents re-sent at an operator's request, ordered with the stream (`resend/`).
    pub resender: Option<Resender>,
    /// The cluster time stored with the resume token the stream starts after (DocumentDB's
    /// tokens say none themselves).
    pub resumed_at: Option<ClusterTime>,
}

/// The namespace of a change that may be a collection's first (an insert, or an upsert).
fn first_change(event: &StreamEvent) -> Option<Namespace> {
    let ns = event.ns.as_ref()?;
    matches!(event.operation_type, OperationType::Insert | OperationType::Update | OperationType::Replace)
        .then(|| Namespace::new(&ns.db, ns.coll.clone().unwrap_or_default()))
}

/// What one event (or an idle moment) asks of the loop.
enum Step {
    Send(Item),
    Skip,
    Reopen(Start),
    Stop,
}

impl StreamLoop<'_> {
    /// Streams until `shutdown`, or until an error the caller must handle (it restarts from the
    /// last durable checkpoint, or acts on a lost history).
    pub async fn run(mut self, mut start: Start, shutdown: CancellationToken) -> Result<(), Error> {
        let (version, parts) = server::version(self.client).await?;
        let support = Support::for_version(self.config.compat, &parts);
        let expanded = watch::expanded_events(self.config.compat, &parts);
        tracing::info!(version, expanded, "change events over 16 MiB are {}", support.describe());
        let split = support == Support::Split;
        let mut index_check = if expanded { None } else { IndexCheck::every(self.schema_check_interval) };
        // After a batch too large to read, events come one at a time (for at most a batch's
        // worth) until the one that is too large: that one is read again without its documents.
        let mut one_by_one: u32 = 0;
        'reopen: loop {
            let mut how = How::normal(self.config, split, expanded);
            if one_by_one > 0 {
                how.batch_size = 1;
            }
            let mut stream = match open(self.client, self.config, &start, &how).await {
                Ok(stream) => Prefetch::start(stream),
                Err(e) if large_events::is_too_large(&e) => {
                    match self.too_large(&start, &mut one_by_one, &how, &shutdown).await? {
                        Step::Reopen(at) => start = at,
                        _ => return Ok(()),
                    }
                    continue 'reopen;
                }
                Err(e) => return Err(Error::mongo("open change stream", e)),
            };
            tracing::info!(position = ?start, scope = ?self.config.scope, one_by_one, "change stream open");
            if let Some(check) = index_check.as_mut() {
                check.read_up_to(read_before(&start, self.resumed_at), None);
            }
            self.health.set_ready(self.component);
            let mut last_progress = Instant::now();
            let mut fragments = Fragments::default();
            loop {
                self.beat.beat();
                if let Some(resender) = self.resender.as_mut() {
                    if let Some(item) = resender.turn(self.client, &self.converter).await? {
                        if !self.send(Step::Send(item), &shutdown).await {
                            return Ok(());
                        }
                    }
                }
                if let Some(check) = index_check.as_mut().filter(|check| check.due()) {
                    if let Some(item) = check.run(self.client, &self.converter).await? {
                        if !self.send(Step::Send(item), &shutdown).await {
                            return Ok(());
                        }
                    }
                }
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    next = stream.next_if_any() => next,
                };
                let step = match next {
                    Ok(Some(raw)) => match (schema_events::described(&raw), fragments.push(raw)?) {
                        (_, None) => continue, // a fragment of a split event
                        (mut described, Some(event)) => {
                            let token = bson::to_document(&event.id).unwrap_or_default();
                            if let Some(check) = index_check.as_mut() {
                                let read = token_time(&token).or(event.cluster_time.map(ClusterTime::from));
                                check.read_up_to(read, Some(token.clone()));
                            }
                            if let (Some(described), OperationType::Other(kind), Some(ns)) =
                                (described.as_mut(), &event.operation_type, &event.ns)
                            {
                                let ns = Namespace::new(&ns.db, ns.coll.clone().unwrap_or_default());
                                if self.converter.filter.wants(&ns) {
                                    schema::complete(self.client, kind, &ns, described).await?;
                                }
                            }
                            if let (Some(check), Some(ns)) = (index_check.as_mut(), first_change(&event)) {
                                let at = event.cluster_time.map(ClusterTime::from);
                                if let Some(item) = check.introduce(self.client, &self.converter, &ns, at).await? {
                                    if !self.send(Step::Send(item), &shutdown).await {
                                        return Ok(());
                                    }
                                }
                            }
                            let step = self.event(event, described.as_ref(), &mut last_progress, &shutdown).await?;
                            if one_by_one > 0 && matches!(step, Step::Send(_) | Step::Skip) {
                                one_by_one -= 1;
                                if one_by_one == 0 {
                                    // Past a batch's worth: the large event is gone (a smaller
                                    // lookup); back to whole batches after this event.
                                    if !self.send(step, &shutdown).await {
                                        return Ok(());
                                    }
                                    start = Start::ResumeAfter(token);
                                    continue 'reopen;
                                }
                            }
                            step
                        }
                    },
                    Ok(None) => {
                        let token = stream.resume_token().and_then(|t| bson::to_document(&t).ok());
                        let at = token.as_ref().and_then(token_time);
                        if let (Some(check), Some(token)) = (index_check.as_mut(), token) {
                            check.read_up_to(at, Some(token));
                        }
                        if let Some(at) = at {
                            if !self.resend_before(at, &shutdown).await {
                                return Ok(());
                            }
                        }
                        self.idle(stream.resume_token(), &mut last_progress)
                    }
                    Err(e) if large_events::is_too_large(&e) => {
                        let at = match stream.resume_token().and_then(|t| bson::to_document(&t).ok()) {
                            Some(token) => Start::ResumeAfter(token),
                            None => start.clone(),
                        };
                        self.too_large(&at, &mut one_by_one, &how, &shutdown).await?
                    }
                    Err(e) => return Err(Error::mongo("change stream", e)),
                };
                match step {
                    Step::Skip => continue,
                    Step::Reopen(at) => {
                        start = at;
                        continue 'reopen;
                    }
                    Step::Stop => return Ok(()),
                    Step::Send(_) => {
                        if !self.send(step, &shutdown).await {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    /// Converts one whole event.
    async fn event(
        &mut self,
        event: StreamEvent,
        described: Option<&Described>,
        last_progress: &mut Instant,
        shutdown: &CancellationToken,
    ) -> Result<Step, Error> {
        if let Some(at) = event.cluster_time {
            if !self.resend_before(at.into(), shutdown).await {
                return Ok(Step::Stop);
            }
        }
        self.converter.resend = self.resender.as_mut().and_then(|r| r.claim(&event));
        let converted = self.converter.change(event, described, now_ms());
        self.converter.resend = None;
        if let Some(resender) = self.resender.as_mut() {
            match &converted {
                Converted::Item(item) => resender.sending(&item.records),
                Converted::Copy(copy) => resender.sending(&copy.markers.records),
                Converted::Invalidate { .. } | Converted::Fatal(_) => {}
            }
        }
        let step = match converted {
            // Not captured: only worth a checkpoint now and then.
            Converted::Item(item)
                if item.records.is_empty() && last_progress.elapsed() < self.idle_checkpoint_interval =>
            {
                return Ok(Step::Skip)
            }
            Converted::Item(item) => Step::Send(item),
            Converted::Copy(copy) => {
                let Recopy { markers, ns, at, progress } = *copy;
                if !self.copy(markers, &ns, at, shutdown).await? {
                    return Ok(Step::Stop);
                }
                Step::Send(Item { records: Vec::new(), progress: Some(progress), cluster_time: Some(at) })
            }
            Converted::Fatal(e) => return Err(e),
            Converted::Invalidate { cluster_time } => {
                // startAfter is not available on DocumentDB: reopen just after the invalidating
                // event instead.
                let after = cluster_time.unwrap_or_default();
                self.metrics.restarts.with_label_values(&["invalidate"]).inc();
                tracing::info!(?after, "change stream invalidated: reopening after it");
                return Ok(Step::Reopen(Start::After(after)));
            }
        };
        *last_progress = Instant::now();
        Ok(step)
    }

    /// Idle: the post-batch resume token still advances the checkpoint, now and then.
    fn idle(&self, token: Option<ResumeToken>, last_progress: &mut Instant) -> Step {
        if last_progress.elapsed() < self.idle_checkpoint_interval {
            return Step::Skip;
        }
        let Some(resume_token) = token.and_then(|t| bson::to_document(&t).ok()) else {
            return Step::Skip;
        };
        let mut item =
            Item::progress_only(CheckpointUpdate::Stream { resume_token: resume_token.clone(), cluster_time: None });
        if let Some(topic) = &self.heartbeat_topic {
            item.records.push(self.converter.heartbeat(topic, &resume_token, now_ms()));
        }
        *last_progress = Instant::now();
        Step::Send(item)
    }

    /// The server refused an event after `at` for its size: read one at a time from there, or,
    /// reading one at a time already, read that one again without its documents and go on after it.
    async fn too_large(
        &mut self,
        at: &Start,
        one_by_one: &mut u32,
        how: &How,
        shutdown: &CancellationToken,
    ) -> Result<Step, Error> {
        self.metrics.restarts.with_label_values(&["large_event"]).inc();
        if *one_by_one == 0 {
            tracing::warn!(position = ?at, "a change event over 16 MiB: reading one event at a time up to it");
            *one_by_one = self.config.batch_size.max(1);
            return Ok(Step::Reopen(at.clone()));
        }
        let reread = tokio::select! {
            _ = shutdown.cancelled() => return Ok(Step::Stop),
            reread = large_events::reread(self.client, self.config, at, how) => reread?,
        };
        tracing::warn!(position = ?at, found = reread.event.is_some(), "change event over 16 MiB read again without its documents, which were looked up");
        let progress =
            CheckpointUpdate::Stream { resume_token: reread.token.clone(), cluster_time: reread.cluster_time };
        let step = match reread.event {
            Some(event) => self.event(event, None, &mut Instant::now(), shutdown).await?,
            None => Step::Send(Item::progress_only(progress)),
        };
        match step {
            Step::Send(_) | Step::Skip => {
                if !self.send(step, shutdown).await {
                    return Ok(Step::Stop);
                }
            }
            Step::Stop => return Ok(Step::Stop),
            Step::Reopen(after) => return Ok(Step::Reopen(after)),
        }
        *one_by_one = 0;
        Ok(Step::Reopen(Start::ResumeAfter(reread.token)))
    }

    /// The stream is at `at`: copies of a re-send whose read it passed go out first. False when
    /// stopping.
    async fn resend_before(&mut self, at: ClusterTime, shutdown: &CancellationToken) -> bool {
        let Some(item) = self.resender.as_mut().and_then(|r| r.passed(at, &self.converter)) else { return true };
        self.send(Step::Send(item), shutdown).await
    }

    /// Hands an item to delivery; false when stopping.
    async fn send(&self, step: Step, shutdown: &CancellationToken) -> bool {
        let Step::Send(item) = step else { return true };
        tokio::select! {
            _ = shutdown.cancelled() => false,
            sent = self.tx.send(item) => sent.is_ok(),
        }
    }
}

impl StreamLoop<'_> {
    /// Sends the markers, then `ns` as it is now; false when stopped first.
    async fn copy(
        &self,
        markers: Item,
        ns: &Namespace,
        at: ClusterTime,
        shutdown: &CancellationToken,
    ) -> Result<bool, Error> {
        let copier = Copier {
            client: self.client,
            converter: &self.converter,
            tx: &self.tx,
            batch_size: self.copy_batch_size,
            compat: self.config.compat,
            metrics: &self.metrics,
            tracking: Tracking::None,
            indexes: IndexTiming::BeforeCopy,
        };
        if !copier.send(markers, shutdown).await {
            return Ok(false);
        }
        tracing::info!(namespace = %ns, "a rename moved a collection into the captured scope, or one the snapshot was copying: copying it");
        self.metrics.restarts.with_label_values(&["rename_copy"]).inc();
        copier.copy(ns, CollectionProgress::default(), at, shutdown).await
    }
}

/// How far a stream opened at `start` has read before its first event: up to the token's time,
/// or the time it starts after; none for `Now`. `resumed_at`: the time stored with a token that
/// says none itself (DocumentDB's).
fn read_before(start: &Start, resumed_at: Option<ClusterTime>) -> Option<ClusterTime> {
    match start {
        Start::ResumeAfter(token) => token_time(token).or(resumed_at),
        Start::After(at) => Some(*at),
        Start::Now => None,
    }
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    #[test]
    fn a_stream_has_read_up_to_its_starts_time_before_its_first_event() {
        let at = ClusterTime { t: 1_796_166_476, i: 10 };
        let mongodb_token = doc! {"_data": "826b0f534c0000000a2b"};
        assert_eq!(read_before(&Start::ResumeAfter(mongodb_token), None), Some(at), "the token's own time");
        let documentdb_token = doc! {"_data": "0100000000000001"};
        assert_eq!(read_before(&Start::ResumeAfter(documentdb_token.clone()), Some(at)), Some(at), "the stored time");
        assert_eq!(read_before(&Start::ResumeAfter(documentdb_token), None), None);
        assert_eq!(read_before(&Start::After(at), None), Some(at));
        assert_eq!(read_before(&Start::Now, Some(at)), None, "a start now says nothing of a stored time");
    }
}
