//! Change events over 16 MiB (an `updateLookup` document plus a large update): the server fails
//! the batch holding one with BSONObjectTooLarge (10334), and would again on every restart.
//!
//! Where the server has `$changeStreamSplitLargeEvent` (MongoDB 6.0.9+, 7.0+) the stream ends
//! with it and the fragments are put together again here. Elsewhere (MongoDB 6.0.5, DocumentDB),
//! and for an event even its fragments cannot hold, the stream reads the events one at a time
//! up to the one that fails, reads that one again without the large fields (`fullDocument`,
//! `fullDocumentBeforeChange`, `updateDescription.updatedFields`), looks its document up by key
//! (what `updateLookup` gives: the document now, or none) and goes on after it.

use bson::{doc, Bson, Document, RawDocumentBuf};
use envelope::ClusterTime;
use mongodb::change_stream::event::ChangeStreamEvent;

use crate::capture::watch::{open, How, Start};
use crate::config::{CaptureConfig, Compat};
use crate::error::Error;

/// BSONObjectTooLarge.
use service_kit::failure::code::BSON_OBJECT_TOO_LARGE as TOO_LARGE;
/// Empty batches after which a re-read gives up finding its event (and the pipeline restarts).
const REREAD_EMPTY_BATCHES: u32 = 60;

/// How events over 16 MiB are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// `$changeStreamSplitLargeEvent` splits them; the fragments are reassembled.
    Split,
    /// Read again without their documents, which are looked up.
    Reread,
}

impl Support {
    /// What the deployment allows: the split stage needs MongoDB 6.0.9+ or 7.0+.
    pub fn for_version(compat: Compat, version: &[i64]) -> Support {
        let split = match version {
            [major, ..] if *major >= 7 => true,
            [6, 0, patch, ..] => *patch >= 9,
            _ => false,
        };
        if split && compat != Compat::Documentdb {
            Support::Split
        } else {
            Support::Reread
        }
    }

    /// For `doctor` and the logs.
    pub fn describe(self) -> &'static str {
        match self {
            Support::Split => "split by $changeStreamSplitLargeEvent and reassembled",
            Support::Reread => {
                "read again without their documents, which are looked up by key ($changeStreamSplitLargeEvent \
                 needs MongoDB 6.0.9+ or 7.0+)"
            }
        }
    }
}

/// Whether the server refused an event (or a batch) for its size.
pub fn is_too_large(e: &mongodb::error::Error) -> bool {
    crate::error::command_code(e) == Some(TOO_LARGE)
}

/// The stage that leaves the large fields out of a re-read event (`_id`, the resume token, stays).
pub fn without_large_fields() -> Document {
    doc! {"$project": {"fullDocument": 0, "fullDocumentBeforeChange": 0, "updateDescription.updatedFields": 0}}
}

/// The stage that keeps only what names an event.
pub fn names_only() -> Document {
    doc! {"$project": {"operationType": 1, "ns": 1, "documentKey": 1, "clusterTime": 1}}
}

/// A change stream event, its documents kept as the server's BSON bytes (they are written out
/// as extended JSON straight from them).
pub type StreamEvent = ChangeStreamEvent<RawDocumentBuf>;

/// The event as typed, from its raw form.
pub fn typed(raw: &RawDocumentBuf) -> Result<StreamEvent, Error> {
    let event: StreamEvent =
        bson::from_slice(raw.as_bytes()).map_err(|e| Error::fatal(format!("a change event did not decode: {e}")))?;
    checked(event)
}

/// The event, once its documents (kept as bytes) read all the way down: one holding a string
/// that is not UTF-8 stops the service, naming it, as a `Document` event always did.
fn checked(event: StreamEvent) -> Result<StreamEvent, Error> {
    for doc in [&event.full_document, &event.full_document_before_change].into_iter().flatten() {
        if let Err(e) = envelope::extjson::check_raw_document(doc) {
            let key = event.document_key.as_ref().map(|k| k.to_string()).unwrap_or_default();
            let ns = event
                .ns
                .as_ref()
                .map(|ns| format!("{}.{}", ns.db, ns.coll.as_deref().unwrap_or("")))
                .unwrap_or_default();
            return Err(Error::fatal(format!(
                "a change event of {ns} (document {key}) did not decode: {e}; fix the document in the source, then restart"
            )));
        }
    }
    Ok(event)
}

/// The event as typed, from an event assembled as a document.
fn typed_from(event: &Document, what: &str) -> Result<StreamEvent, Error> {
    let bytes = bson::to_vec(event).map_err(|e| Error::fatal(format!("{what} did not encode: {e}")))?;
    checked(bson::from_slice(&bytes).map_err(|e| Error::fatal(format!("{what} did not decode: {e}")))?)
}

/// An event read again without its large fields.
#[derive(Debug)]
pub struct Reread {
    /// Its resume token: the stream goes on after it.
    pub token: Document,
    pub cluster_time: Option<ClusterTime>,
    /// The event with its looked-up document; `None` when nothing is left to send.
    pub event: Option<StreamEvent>,
}

/// Reads the event right after `start` again without its large fields and looks its document
/// up. An event too large even so stops the service, naming it.
pub async fn reread(
    client: &mongodb::Client,
    config: &CaptureConfig,
    start: &Start,
    normal: &How,
) -> Result<Reread, Error> {
    let how = How { batch_size: 1, project: Some(without_large_fields()), ..normal.clone() };
    let raw = match first_event(client, config, start, &how).await {
        Ok(raw) => raw,
        Err(e) if is_too_large(&e) => return Err(unreadable(client, config, start, normal).await),
        Err(e) => return Err(Error::mongo("re-read a large change event", e)),
    };
    let event = Document::try_from(raw.as_ref())
        .map_err(|e| Error::fatal(format!("a re-read change event did not decode: {e}")))?;
    let token = event.get_document("_id").cloned().unwrap_or_default();
    let cluster_time = event.get_timestamp("clusterTime").ok().map(ClusterTime::from);
    let document = lookup(client, &event).await?;
    let event = match with_document(event, document) {
        Some(event) => Some(typed_from(&event, "a re-read change event")?),
        None => None,
    };
    Ok(Reread { token, cluster_time, event })
}

/// The first event of a stream opened at `start`.
async fn first_event(
    client: &mongodb::Client,
    config: &CaptureConfig,
    start: &Start,
    how: &How,
) -> Result<RawDocumentBuf, mongodb::error::Error> {
    let mut stream = open(client, config, start, how).await?;
    for _ in 0..REREAD_EMPTY_BATCHES {
        if let Some(raw) = stream.next_if_any().await? {
            return Ok(raw);
        }
    }
    Err(mongodb::error::Error::custom("the large change event was not found again"))
}

/// The document an insert, update or replace event is about, as it is now.
async fn lookup(client: &mongodb::Client, event: &Document) -> Result<Option<Document>, Error> {
    if !matches!(event.get_str("operationType"), Ok("insert" | "update" | "replace")) {
        return Ok(None);
    }
    let (Ok(ns), Ok(key)) = (event.get_document("ns"), event.get_document("documentKey")) else {
        return Ok(None);
    };
    let (Ok(db), Ok(coll)) = (ns.get_str("db"), ns.get_str("coll")) else { return Ok(None) };
    let collection = client.database(db).collection::<Document>(coll);
    collection.find_one(key.clone()).await.map_err(|e| Error::mongo("look up a large event's document", e))
}

/// The error for an event no stream can read: named as far as the server lets it be.
async fn unreadable(client: &mongodb::Client, config: &CaptureConfig, start: &Start, normal: &How) -> Error {
    let how = How { batch_size: 1, project: Some(names_only()), ..normal.clone() };
    let named =
        first_event(client, config, start, &how).await.ok().and_then(|raw| Document::try_from(raw.as_ref()).ok());
    let what = match named {
        Some(event) => {
            let text = |key: &str| match event.get(key) {
                Some(Bson::Document(d)) => envelope::extjson::document_to_string(d, envelope::extjson::Style::Relaxed),
                Some(other) => other.to_string(),
                None => "?".to_string(),
            };
            let ns = event.get_document("ns").ok();
            let name = |key| ns.and_then(|ns| ns.get_str(key).ok()).unwrap_or("?");
            format!(
                "the {} of {}.{} with key {} ({})",
                event.get_str("operationType").unwrap_or("change"),
                name("db"),
                name("coll"),
                text("documentKey"),
                text("clusterTime"),
            )
        }
        None => format!("the change event after {start:?}"),
    };
    Error::fatal(format!(
        "{what} is over 16 MiB even without its documents: no change stream can read it; to go past it, start \
         from a new snapshot (remove this source's checkpoint, capture.name '{}', and restart)",
        config.name
    ))
}

/// Puts split events together: fragment 1 of n starts one, fragment n completes it.
#[derive(Debug, Default)]
pub struct Fragments {
    event: Option<(Document, i32)>,
}

impl Fragments {
    /// Takes one stream document; returns a whole event once there is one (at once for an event
    /// that was not split).
    pub fn push(&mut self, raw: RawDocumentBuf) -> Result<Option<StreamEvent>, Error> {
        let split = raw.get_document("splitEvent").ok().map(|s| {
            let number = |key| s.get_i32(key).unwrap_or(0);
            (number("fragment"), number("of"))
        });
        let Some((fragment, of)) = split else { return typed(&raw).map(Some) };
        let mut part = Document::try_from(raw.as_ref())
            .map_err(|e| Error::fatal(format!("a change event fragment did not decode: {e}")))?;
        part.remove("splitEvent");
        let mut event = match self.event.take() {
            None if fragment == 1 => Document::new(),
            Some((event, previous)) if previous + 1 == fragment => event,
            _ => return Err(Error::fatal(format!("change event fragment {fragment} of {of} arrived out of order"))),
        };
        // Each fragment carries its own resume token: the last one's stands for the event.
        for (key, value) in part {
            event.insert(key, value);
        }
        if fragment < of {
            self.event = Some((event, fragment));
            return Ok(None);
        }
        typed_from(&event, "a reassembled change event").map(Some)
    }
}

/// A re-read event (without its large fields) made whole again: `fullDocument` is `document`,
/// the looked-up document; an update keeps its removed fields and truncated arrays, and says no
/// field was set (the looked-up document stands for them). `None` when an insert or a replace
/// finds its document gone: the delete that removed it follows, and nothing is left to send.
pub fn with_document(mut event: Document, document: Option<Document>) -> Option<Document> {
    let op = event.get_str("operationType").unwrap_or_default().to_string();
    if let Ok(description) = event.get_document_mut("updateDescription") {
        description.insert("updatedFields", Document::new());
    }
    match (op.as_str(), document) {
        (_, Some(document)) => {
            event.insert("fullDocument", Bson::Document(document));
        }
        ("insert" | "replace", None) => return None,
        _ => {}
    }
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::rawdoc;

    #[test]
    fn the_split_stage_needs_6_0_9_or_7_0() {
        assert_eq!(Support::for_version(Compat::Mongodb, &[6, 0, 5, 0]), Support::Reread);
        assert_eq!(Support::for_version(Compat::Mongodb, &[6, 0, 9, 0]), Support::Split);
        assert_eq!(Support::for_version(Compat::Mongodb, &[6, 3, 1, 0]), Support::Reread);
        assert_eq!(Support::for_version(Compat::Mongodb, &[7, 0, 0, 0]), Support::Split);
        assert_eq!(Support::for_version(Compat::Documentdb, &[8, 0, 0, 0]), Support::Reread);
        assert_eq!(Support::for_version(Compat::Mongodb, &[]), Support::Reread);
    }

    fn fragment(n: i32, of: i32, token: &str, fields: Document) -> RawDocumentBuf {
        let mut doc = doc! {"_id": {"_data": token}, "splitEvent": {"fragment": n, "of": of}};
        doc.extend(fields);
        RawDocumentBuf::from_document(&doc).expect("raw")
    }

    #[test]
    fn fragments_become_one_event_with_the_last_token() {
        let mut fragments = Fragments::default();
        let first = fragment(
            1,
            2,
            "t1",
            doc! {"operationType": "update", "ns": {"db": "d", "coll": "c"},
            "documentKey": {"_id": 1}, "fullDocument": {"_id": 1, "big": "x"}},
        );
        assert!(fragments.push(first).expect("first").is_none());
        let second =
            fragment(2, 2, "t2", doc! {"updateDescription": {"updatedFields": {"big": "x"}, "removedFields": []}});
        let event = fragments.push(second).expect("second").expect("whole");
        assert_eq!(bson::to_document(&event.id).expect("token"), doc! {"_data": "t2"});
        assert_eq!(event.full_document, Some(rawdoc! {"_id": 1, "big": "x"}));
        assert_eq!(event.update_description.map(|u| u.updated_fields), Some(doc! {"big": "x"}));

        let whole = rawdoc! {"_id": {"_data": "t3"}, "operationType": "delete", "ns": {"db": "d", "coll": "c"},
        "documentKey": {"_id": 2}};
        assert!(fragments.push(whole).expect("unsplit").is_some());
        assert!(fragments.push(fragment(2, 2, "t4", doc! {})).is_err(), "a fragment without its first");
    }

    #[test]
    fn a_reread_event_takes_the_looked_up_document() {
        let update = doc! {"operationType": "update", "updateDescription": {"removedFields": ["gone"]}};
        let whole = with_document(update.clone(), Some(doc! {"_id": 1})).expect("kept");
        assert_eq!(whole.get_document("fullDocument").ok(), Some(&doc! {"_id": 1}));
        assert_eq!(
            whole.get_document("updateDescription").ok(),
            Some(&doc! {"removedFields": ["gone"], "updatedFields": {}})
        );
        assert!(with_document(update, None).is_some(), "an update of a deleted document still counts");
        assert!(with_document(doc! {"operationType": "insert"}, None).is_none());
    }
}
