//! Opening a change stream: the position, the options and the pipeline for the configured scope.

use std::time::Duration;

use bson::{doc, Bson, Document, RawDocumentBuf};
use envelope::ClusterTime;
use mongodb::change_stream::event::ResumeToken;
use mongodb::change_stream::ChangeStream;
use mongodb::options::{ChangeStreamOptions, FullDocumentBeforeChangeType, FullDocumentType};

use crate::config::{CaptureConfig, Compat, Scope};

/// Where the stream opens.
#[derive(Debug, Clone)]
pub enum Start {
    ResumeAfter(Document),
    /// Strictly after this cluster time: `startAtOperationTime` is inclusive, and every position
    /// stored as a time (a snapshot's, a fixed "now", an invalidate) is covered already.
    After(ClusterTime),
    Now,
}

/// The first cluster time after `time`.
pub fn next_tick(time: ClusterTime) -> ClusterTime {
    match time.i.checked_add(1) {
        Some(i) => ClusterTime { t: time.t, i },
        None => ClusterTime { t: time.t.saturating_add(1), i: 0 },
    }
}

/// The last cluster time before `time`.
pub fn prev_tick(time: ClusterTime) -> ClusterTime {
    match time.i.checked_sub(1) {
        Some(i) => ClusterTime { t: time.t, i },
        None => ClusterTime { t: time.t.saturating_sub(1), i: u32::MAX },
    }
}

/// How a stream is opened beyond its position.
#[derive(Debug, Clone)]
pub struct How {
    /// End the pipeline with `$changeStreamSplitLargeEvent`.
    pub split: bool,
    /// Events per batch.
    pub batch_size: u32,
    /// A stage leaving out or keeping fields, for an event too large to read whole: no
    /// `updateLookup` and no pre-images then.
    pub project: Option<Document>,
    /// `showExpandedEvents`: collection and view creation, index builds and drops, `collMod`.
    pub expanded: bool,
}

impl How {
    pub fn normal(config: &CaptureConfig, split: bool, expanded: bool) -> Self {
        Self { split, batch_size: config.batch_size, project: None, expanded }
    }
}

/// Whether the stream can report schema changes (`showExpandedEvents`, MongoDB 6.0+); elsewhere
/// (Amazon DocumentDB, older MongoDB) a periodic comparison of the indexes stands in.
pub fn expanded_events(compat: Compat, version: &[i64]) -> bool {
    compat != Compat::Documentdb && version.first().is_some_and(|major| *major >= 6)
}

/// Opens the stream for the configured scope at `start`; events come raw (split events arrive
/// in fragments).
pub async fn open(
    client: &mongodb::Client,
    config: &CaptureConfig,
    start: &Start,
    how: &How,
) -> Result<ChangeStream<RawDocumentBuf>, mongodb::error::Error> {
    let mut options = ChangeStreamOptions::default();
    if how.project.is_none() {
        options.full_document = Some(FullDocumentType::UpdateLookup);
        if config.pre_images && config.compat == Compat::Mongodb {
            options.full_document_before_change = Some(FullDocumentBeforeChangeType::WhenAvailable);
        }
    }
    options.max_await_time = Some(Duration::from_millis(config.max_await_ms));
    if how.expanded {
        options.show_expanded_events = Some(true);
    }
    options.batch_size = Some(how.batch_size);
    match start {
        Start::ResumeAfter(token) => {
            let token: ResumeToken = bson::from_document(token.clone()).map_err(mongodb::error::Error::from)?;
            options.resume_after = Some(token);
        }
        Start::After(time) => options.start_at_operation_time = Some(next_tick(*time).into()),
        Start::Now => {}
    }
    let mut pipeline = Vec::new();
    if config.scope == Scope::Collections {
        pipeline.push(doc! {"$match": collections_filter(&config.collections)});
    }
    pipeline.extend(how.project.clone());
    if how.split {
        pipeline.push(doc! {"$changeStreamSplitLargeEvent": {}});
    }
    let stream = match config.scope {
        Scope::Deployment => client.watch().pipeline(pipeline).with_options(options).await?,
        Scope::Database => client.database(&config.database).watch().pipeline(pipeline).with_options(options).await?,
        Scope::Collections => {
            let databases: std::collections::BTreeSet<&str> =
                config.collections.iter().filter_map(|c| c.split_once('.').map(|(db, _)| db)).collect();
            match databases.iter().next() {
                Some(db) if databases.len() == 1 => {
                    client.database(db).watch().pipeline(pipeline).with_options(options).await?
                }
                _ => client.watch().pipeline(pipeline).with_options(options).await?,
            }
        }
    };
    Ok(stream.with_type::<RawDocumentBuf>())
}

/// `$match` for a list of `db.collection`: their events, renames into them, and `dropDatabase`
/// of their databases.
fn collections_filter(collections: &[String]) -> Document {
    let mut any: Vec<Bson> = Vec::new();
    let mut databases = std::collections::BTreeSet::new();
    for name in collections {
        if let Some((db, coll)) = name.split_once('.') {
            any.push(Bson::Document(doc! {"ns.db": db, "ns.coll": coll}));
            any.push(Bson::Document(doc! {"operationType": "rename", "to.db": db, "to.coll": coll}));
            databases.insert(db.to_string());
        }
    }
    for db in databases {
        any.push(Bson::Document(doc! {"operationType": "dropDatabase", "ns.db": db}));
    }
    any.push(Bson::Document(doc! {"operationType": "invalidate"}));
    doc! {"$or": any}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expanded_events_need_mongodb_6() {
        assert!(expanded_events(Compat::Mongodb, &[6, 0, 5, 0]));
        assert!(expanded_events(Compat::Mongodb, &[7, 0, 0, 0]));
        assert!(!expanded_events(Compat::Mongodb, &[5, 0, 9, 0]));
        assert!(!expanded_events(Compat::Documentdb, &[8, 0, 0, 0]), "DocumentDB has no expanded events");
        assert!(!expanded_events(Compat::Mongodb, &[]));
    }

    #[test]
    fn the_next_and_previous_ticks_are_strictly_later_and_earlier() {
        assert_eq!(next_tick(ClusterTime { t: 5, i: 7 }), ClusterTime { t: 5, i: 8 });
        assert_eq!(next_tick(ClusterTime { t: 5, i: u32::MAX }), ClusterTime { t: 6, i: 0 });
        assert_eq!(prev_tick(ClusterTime { t: 5, i: 7 }), ClusterTime { t: 5, i: 6 });
        assert_eq!(prev_tick(ClusterTime { t: 6, i: 0 }), ClusterTime { t: 5, i: u32::MAX });
    }
}
