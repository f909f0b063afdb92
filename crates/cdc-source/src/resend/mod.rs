//! Re-sending documents' current state when an operator asks (`sink-writer verify --repair`,
//! `sink-writer dead-letters retry`), ordered with the stream so that a concurrent change is never
//! overwritten by an older copy: the watermark idea of DBLog and of Debezium's incremental
//! snapshots, without writing to the source (DocumentDB too).
//!
//! ```text
//!  request topic ─► reader (thread) ─► bounded channel ─► Resender, between two stream events:
//!    open:   read the documents (majority), the read's time T = its operationTime
//!    stream: a requested document's own change ≤ T ─► no copy; the change carries cdc.resend
//!            a drop / rename / dropDatabase of the namespace ─► no copies
//!    close:  the stream passes T (an event or a post-batch token after T) ─► the copies (r; d for
//!            an _id the source no longer has) go out before it, then the reply and the request's
//!            offset with them: one Kafka transaction with the stream at that position
//! ```
//!
//! A copy read at T holds every change up to T; the stream's changes up to T came before it (or
//! made it moot), those after T come after it. One request at a time, a window holding at most
//! [`WINDOW_BYTES`] of copies (a larger request takes several windows); requests are answered in
//! order, and the checkpoint keeps the next one to answer, so a restart answers what was not.
//! On a source whose stream reports no position while idle (DocumentDB), a window closes with
//! the next change in the captured scope.
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | requests in turn, windows opened and closed; what the stream loop calls |
//! | `reader.rs` | the request topic, read from the checkpoint's offset |
//! | `window.rs` | one window: its copies, what the stream made moot, its records (pure) |
//! | `read.rs` | reading the documents and the read's cluster time |

mod read;
mod reader;
mod window;

use std::collections::VecDeque;

use bson::Bson;
use envelope::resend::{encode_reply, ResendReply, ResendRequest};
use envelope::{ClusterTime, Namespace};

use crate::capture::convert::Converter;
use crate::capture::large_events::StreamEvent;
use crate::config::Config;
use crate::delivery::checkpoint::CheckpointUpdate;
use crate::delivery::record::{Item, Record, Target, REPLY};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::server::now_ms;
use reader::{Incoming, Requests};
use window::{Counts, Window};

/// Most bytes of copies one window holds (one document larger than that goes alone).
pub const WINDOW_BYTES: usize = 16 * 1024 * 1024;

/// The request topic in use (`topics.request_topic`).
pub fn request_topic(config: &Config) -> String {
    if config.topics.request_topic.is_empty() {
        format!("__cdc_source.{}.requests", config.capture.name)
    } else {
        config.topics.request_topic.clone()
    }
}

/// A request being answered.
struct Answering {
    request: ResendRequest,
    ns: Namespace,
    offset: i64,
    /// `_id`s not read yet.
    left: VecDeque<Bson>,
    counts: Counts,
}

pub struct Resender {
    requests: Requests,
    topic: String,
    answering: Option<Answering>,
    window: Option<Window>,
    metrics: Metrics,
}

impl Resender {
    /// Starts reading requests after the last one the checkpoint says was answered.
    pub async fn start(config: &Config, answered: Option<i64>, metrics: Metrics) -> Result<Self, Error> {
        let topic = request_topic(config);
        let requests = Requests::start(&config.kafka, &topic, answered).await?;
        Ok(Self { requests, topic, answering: None, window: None, metrics })
    }

    /// Between two stream events: with no window open, takes up the next request (or the rest of
    /// the current one) and opens a window. Returns what goes out at once: the reply to a request
    /// answered without a window.
    pub async fn turn(&mut self, client: &mongodb::Client, converter: &Converter) -> Result<Option<Item>, Error> {
        if self.window.is_some() {
            return Ok(None);
        }
        if self.answering.is_none() {
            let Some(Incoming { offset, request }) = self.requests.next() else { return Ok(None) };
            let request = match request {
                Ok(request) => request,
                Err((id, reason)) => {
                    tracing::warn!(offset, %reason, "a re-send request that cannot be read: answered with the reason");
                    let refused = ResendReply { id, error: Some(reason), ..ResendReply::default() };
                    return Ok(Some(self.reply(refused, offset)));
                }
            };
            let ns = match request.ns.split_once('.') {
                Some((db, coll)) => Namespace::new(db, coll),
                None => Namespace::new(request.ns.clone(), ""),
            };
            if !converter.filter.wants(&ns) {
                let reply = ResendReply {
                    id: request.id.clone(),
                    ns: request.ns.clone(),
                    error: Some(format!("{} is not captured by this source", request.ns)),
                    ..ResendReply::default()
                };
                return Ok(Some(self.reply(reply, offset)));
            }
            tracing::info!(request = %request.id, namespace = %ns, documents = request.ids.len(), reason = %request.reason, "re-sending documents");
            let left = request.ids.iter().cloned().collect();
            self.answering = Some(Answering { request, ns, offset, left, counts: Counts::default() });
        }
        let Some(answering) = self.answering.as_mut() else { return Ok(None) };
        if answering.left.is_empty() {
            return Ok(self.finish(Vec::new(), None));
        }
        let read = read::documents(client, &answering.ns, &mut answering.left, WINDOW_BYTES).await;
        let read = match read {
            Ok(read) => read,
            Err(e) if !e.is_retriable() => {
                let Some(answering) = self.answering.take() else { return Ok(None) };
                tracing::warn!(request = %answering.request.id, error = %e, "cannot re-read the documents: answered with the reason");
                let reply = ResendReply {
                    id: answering.request.id.clone(),
                    ns: answering.request.ns.clone(),
                    error: Some(e.to_string()),
                    ..ResendReply::default()
                };
                return Ok(Some(self.reply(reply, answering.offset)));
            }
            Err(e) => return Err(e),
        };
        self.window = Some(Window::open(&answering.request.id, answering.ns.clone(), read));
        Ok(None)
    }

    /// Before a streamed event is converted: the request it answers, when it changes a document
    /// whose copy an open window holds.
    pub fn claim(&mut self, event: &StreamEvent) -> Option<String> {
        let window = self.window.as_mut()?;
        let ns = event.ns.as_ref()?;
        let id = event.document_key.as_ref()?.get("_id")?;
        let ns = Namespace::new(&ns.db, ns.coll.clone().unwrap_or_default());
        window.claim(&ns, id).then(|| window.request.clone())
    }

    /// What the stream is about to send: DDL that ends the window's namespace makes its copies moot.
    pub fn sending(&mut self, records: &[Record]) {
        if let Some(window) = self.window.as_mut() {
            for control in records.iter().filter_map(|r| r.control.as_ref()) {
                window.ddl(&control.ddl);
            }
        }
    }

    /// The stream is at `at`: once past the window's read, its copies (and, for the request's
    /// last window, the reply) go out now, before whatever comes next.
    pub fn passed(&mut self, at: ClusterTime, converter: &Converter) -> Option<Item> {
        if !self.window.as_ref().is_some_and(|w| w.passed(at)) {
            return None;
        }
        let window = self.window.take()?;
        let close_at = window.close_at;
        let (records, counts) = window.close(converter, now_ms());
        for (outcome, n) in [("resent", counts.resent), ("deleted", counts.deleted), ("superseded", counts.superseded)]
        {
            self.metrics.resent.with_label_values(&[outcome]).inc_by(n);
        }
        let answering = self.answering.as_mut()?;
        answering.counts.resent += counts.resent;
        answering.counts.deleted += counts.deleted;
        answering.counts.superseded += counts.superseded;
        if !answering.left.is_empty() {
            return Some(Item { records, progress: None, cluster_time: Some(close_at) });
        }
        let mut item = self.finish(records, Some(close_at))?;
        item.cluster_time = Some(close_at);
        Some(item)
    }

    /// The current request is done: its copies (sent at `closed_at`), its reply, and the offset
    /// past it.
    fn finish(&mut self, mut records: Vec<Record>, closed_at: Option<ClusterTime>) -> Option<Item> {
        let answering = self.answering.take()?;
        let Counts { resent, deleted, superseded } = answering.counts;
        let reply = ResendReply {
            id: answering.request.id.clone(),
            ns: answering.request.ns.clone(),
            resent,
            deleted,
            superseded,
            closed_at,
            error: None,
            at_ms: now_ms(),
        };
        tracing::info!(request = %reply.id, namespace = %reply.ns, resent, deleted, superseded, "documents re-sent");
        let Item { records: reply_records, progress, .. } = self.reply(reply, answering.offset);
        records.extend(reply_records);
        Some(Item { records, progress, cluster_time: None })
    }

    /// The reply record, with the request's offset passed.
    fn reply(&self, reply: ResendReply, offset: i64) -> Item {
        let record = Record {
            target: Target::Keyed(self.topic.clone()),
            key: reply.id.clone().into_bytes(),
            value: Some(encode_reply(&reply)),
            control: None,
            op: REPLY,
            namespace: String::new(),
        };
        Item {
            records: vec![record],
            progress: Some(CheckpointUpdate::Requests { next: offset + 1 }),
            cluster_time: None,
        }
    }
}
