//! The durable position of a source: stream resume token, snapshot progress, sequence. The
//! state and its transitions are pure; `store.rs` keeps it in Kafka or a file.

use std::collections::{BTreeMap, BTreeSet};

use bson::{Bson, Document};
use envelope::extjson::{self, Style};
use envelope::ClusterTime;
use serde::{Deserialize, Serialize};

use crate::config::SnapshotMode;

/// Version of the checkpoint's JSON; a newer one is refused rather than misread.
pub const CHECKPOINT_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub v: u32,
    /// Resume token of the last event (or post-batch token) whose records are durable, as
    /// strict extended JSON.
    pub resume_token: Option<String>,
    /// Cluster time of that event, when known.
    pub cluster_time: Option<ClusterTime>,
    /// The next event sequence number to hand out.
    pub seq: u64,
    /// Progress of the current or last snapshot.
    pub snapshot: Option<SnapshotState>,
    /// When this checkpoint was made, ms since the epoch.
    pub written_at_ms: i64,
    /// Every topic this source has written records to: watermarks go to all their partitions,
    /// also after a restart.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub topics: BTreeSet<String>,
    /// The next record of the request topic to answer (`resend/`): every request before it was
    /// answered by a transaction this checkpoint was part of. None: from the topic's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_offset: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotState {
    /// The stream position fixed before copying; streaming starts here afterwards.
    pub start_at: Option<ClusterTime>,
    pub completed: bool,
    /// When the last collection was copied: a rename streamed up to then may have moved a
    /// collection while it was copied, so its destination is copied again.
    #[serde(default)]
    pub completed_at: Option<ClusterTime>,
    /// Per `db.collection`.
    pub collections: BTreeMap<String, CollectionProgress>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CollectionProgress {
    /// `_id` of the last copied document (strict extended JSON of `{"_id": …}`).
    pub last_id: Option<String>,
    pub copied: u64,
    pub done: bool,
    /// A collection copied by several readers: its `_id` ranges, in order, each with its own
    /// progress. Empty: one reader, the fields above.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<RangeProgress>,
}

/// One `_id` range of a collection's copy: from `from` (inclusive, the collection's start
/// without) to `to` (exclusive, its end without), in the `_id` index's order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RangeProgress {
    pub from: Option<String>,
    pub to: Option<String>,
    pub last_id: Option<String>,
    pub copied: u64,
    pub done: bool,
}

/// `{"_id": id}` as strict extended JSON, the form ids are kept in.
fn id_text(id: Bson) -> String {
    let mut key = Document::new();
    key.insert("_id", id);
    extjson::document_to_string(&key, Style::Strict)
}

fn id_of(text: Option<&str>) -> Option<Bson> {
    let doc = extjson::document_from_str(text?).ok()?;
    doc.get("_id").cloned()
}

impl CollectionProgress {
    /// The `_id` to continue after.
    pub fn last_id(&self) -> Option<Bson> {
        id_of(self.last_id.as_deref())
    }
}

impl RangeProgress {
    pub fn from(&self) -> Option<Bson> {
        id_of(self.from.as_deref())
    }

    pub fn to(&self) -> Option<Bson> {
        id_of(self.to.as_deref())
    }

    /// The `_id` to continue after.
    pub fn last_id(&self) -> Option<Bson> {
        id_of(self.last_id.as_deref())
    }
}

/// A change to the checkpoint, carried with the records it covers.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckpointUpdate {
    /// The stream reached this token (after an event, or idle).
    Stream { resume_token: Document, cluster_time: Option<ClusterTime> },
    /// A snapshot begins; streaming will start at `start_at`.
    SnapshotStarted { start_at: ClusterTime, namespaces: Vec<String> },
    /// A collection's copy advanced.
    SnapshotCollection { ns: String, last_id: Bson, copied: u64, done: bool },
    /// A collection is copied by several readers, split at these `_id`s (ascending).
    SnapshotRanges { ns: String, splits: Vec<Bson> },
    /// One range of a collection's copy advanced.
    SnapshotRange { ns: String, range: usize, last_id: Bson, copied: u64, done: bool },
    /// Every collection is copied, by this cluster time.
    SnapshotCompleted { at: ClusterTime },
    /// Re-send requests before this offset of the request topic are answered.
    Requests { next: i64 },
}

/// Where to start, decided from the stored checkpoint and the snapshot mode.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Copy (from scratch, or continuing the stored progress), then stream from its start.
    Snapshot(SnapshotState),
    /// Stream after this resume token, stored with the cluster time of its position (for
    /// tokens that say no time: DocumentDB's).
    ResumeAfter(Document, Option<ClusterTime>),
    /// Stream after this cluster time (a snapshot's position or a fixed "now": what happened at
    /// it is covered already).
    StartAfter(ClusterTime),
    /// Stream from now.
    StartNow,
    /// Nothing to do (`initial_only` after its snapshot).
    Idle,
}

impl Checkpoint {
    pub fn apply(&mut self, progress: CheckpointUpdate) {
        match progress {
            CheckpointUpdate::Stream { resume_token, cluster_time } => {
                self.resume_token = Some(extjson::document_to_string(&resume_token, Style::Strict));
                if let Some(ct) = cluster_time {
                    self.cluster_time = Some(ct);
                }
            }
            CheckpointUpdate::SnapshotStarted { start_at, namespaces } => {
                // A new snapshot replaces the stream position: streaming restarts at start_at.
                self.resume_token = None;
                self.cluster_time = Some(start_at);
                self.snapshot = Some(SnapshotState {
                    start_at: Some(start_at),
                    completed: false,
                    completed_at: None,
                    collections: namespaces.into_iter().map(|ns| (ns, CollectionProgress::default())).collect(),
                });
            }
            CheckpointUpdate::SnapshotCollection { ns, last_id, copied, done } => {
                if let Some(state) = &mut self.snapshot {
                    let entry = state.collections.entry(ns).or_default();
                    entry.last_id = Some(id_text(last_id));
                    entry.copied = copied;
                    entry.done = done;
                    // Read whole (or done): ranges no longer say where it stands.
                    entry.ranges.clear();
                }
            }
            CheckpointUpdate::SnapshotRanges { ns, splits } => {
                if let Some(state) = &mut self.snapshot {
                    let bounds: Vec<Option<String>> =
                        std::iter::once(None).chain(splits.into_iter().map(|id| Some(id_text(id)))).collect();
                    let ranges = (0..bounds.len())
                        .map(|i| RangeProgress {
                            from: bounds[i].clone(),
                            to: bounds.get(i + 1).cloned().flatten(),
                            ..RangeProgress::default()
                        })
                        .collect();
                    state.collections.entry(ns).or_default().ranges = ranges;
                }
            }
            CheckpointUpdate::SnapshotRange { ns, range, last_id, copied, done } => {
                let entry = self.snapshot.as_mut().and_then(|s| s.collections.get_mut(&ns));
                if let Some(progress) = entry.and_then(|c| c.ranges.get_mut(range)) {
                    progress.last_id = Some(id_text(last_id));
                    progress.copied = copied;
                    progress.done = done;
                }
            }
            CheckpointUpdate::SnapshotCompleted { at } => {
                if let Some(state) = &mut self.snapshot {
                    state.completed = true;
                    state.completed_at = Some(at);
                }
            }
            CheckpointUpdate::Requests { next } => {
                self.requests_offset = Some(self.requests_offset.unwrap_or(0).max(next))
            }
        }
    }

    /// The stored resume token, if it parses.
    pub fn resume_token(&self) -> Option<Document> {
        extjson::document_from_str(self.resume_token.as_deref()?).ok()
    }
}

/// Decides where to start. `stored` is the last durable checkpoint, if any.
pub fn plan(stored: Option<&Checkpoint>, mode: SnapshotMode) -> Plan {
    let Some(checkpoint) = stored else {
        return match mode {
            SnapshotMode::Never => Plan::StartNow,
            SnapshotMode::Initial | SnapshotMode::WhenNeeded | SnapshotMode::InitialOnly => {
                Plan::Snapshot(SnapshotState::default())
            }
        };
    };
    if let Some(state) = checkpoint.snapshot.as_ref().filter(|s| !s.completed) {
        return Plan::Snapshot(state.clone());
    }
    if mode == SnapshotMode::InitialOnly {
        return Plan::Idle;
    }
    if let Some(token) = checkpoint.resume_token() {
        return Plan::ResumeAfter(token, checkpoint.cluster_time);
    }
    match checkpoint.cluster_time {
        Some(time) => Plan::StartAfter(time),
        None => Plan::StartNow,
    }
}

/// The plan once the configured start is taken into account: a capture that has no checkpoint
/// yet streams after `configured`; one with a checkpoint follows it (`planned`).
pub fn configured_start(stored: Option<&Checkpoint>, configured: Option<ClusterTime>, planned: Plan) -> Plan {
    match (stored, configured) {
        (None, Some(at)) => Plan::StartAfter(at),
        _ => planned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn ct(t: u32, i: u32) -> ClusterTime {
        ClusterTime { t, i }
    }

    #[test]
    fn no_checkpoint_follows_the_snapshot_mode() {
        assert_eq!(plan(None, SnapshotMode::Never), Plan::StartNow);
        assert_eq!(plan(None, SnapshotMode::Initial), Plan::Snapshot(SnapshotState::default()));
        assert_eq!(plan(None, SnapshotMode::InitialOnly), Plan::Snapshot(SnapshotState::default()));
    }

    #[test]
    fn snapshot_progress_resumes_and_then_streams_from_its_start() {
        let mut cp = Checkpoint::default();
        cp.apply(CheckpointUpdate::SnapshotStarted {
            start_at: ct(100, 1),
            namespaces: vec!["a.b".into(), "a.c".into()],
        });
        cp.apply(CheckpointUpdate::SnapshotCollection {
            ns: "a.b".into(),
            last_id: Bson::Int64(41),
            copied: 41,
            done: false,
        });
        let Plan::Snapshot(state) = plan(Some(&cp), SnapshotMode::Initial) else {
            panic!("should resume the snapshot")
        };
        assert_eq!(state.collections["a.b"].last_id(), Some(Bson::Int64(41)), "exact _id type kept");
        assert_eq!(state.collections["a.b"].copied, 41);
        assert!(!state.collections["a.c"].done);

        cp.apply(CheckpointUpdate::SnapshotCollection {
            ns: "a.b".into(),
            last_id: Bson::Int64(50),
            copied: 50,
            done: true,
        });
        cp.apply(CheckpointUpdate::SnapshotCompleted { at: ct(120, 3) });
        assert_eq!(plan(Some(&cp), SnapshotMode::Initial), Plan::StartAfter(ct(100, 1)));
        assert_eq!(cp.snapshot.as_ref().and_then(|s| s.completed_at), Some(ClusterTime { t: 120, i: 3 }));
        assert_eq!(plan(Some(&cp), SnapshotMode::InitialOnly), Plan::Idle);

        let token = doc! {"_data": "826553"};
        cp.apply(CheckpointUpdate::Stream { resume_token: token.clone(), cluster_time: Some(ct(101, 2)) });
        assert_eq!(plan(Some(&cp), SnapshotMode::Initial), Plan::ResumeAfter(token, Some(ct(101, 2))));
    }

    #[test]
    fn a_collection_split_into_ranges_keeps_each_ranges_progress() {
        let mut cp = Checkpoint::default();
        cp.apply(CheckpointUpdate::SnapshotStarted { start_at: ct(100, 1), namespaces: vec!["a.b".into()] });
        let splits = vec![Bson::Int32(10), Bson::String("m".into())];
        cp.apply(CheckpointUpdate::SnapshotRanges { ns: "a.b".into(), splits });
        cp.apply(CheckpointUpdate::SnapshotRange {
            ns: "a.b".into(),
            range: 1,
            last_id: Bson::Int64(12),
            copied: 3,
            done: false,
        });
        cp.apply(CheckpointUpdate::SnapshotRange {
            ns: "a.b".into(),
            range: 2,
            last_id: Bson::Null,
            copied: 0,
            done: true,
        });
        let text = serde_json::to_string(&cp).expect("serializes");
        let back: Checkpoint = serde_json::from_str(&text).expect("parses");
        let Plan::Snapshot(state) = plan(Some(&back), SnapshotMode::Initial) else { panic!("resumes the snapshot") };
        let ranges = &state.collections["a.b"].ranges;
        assert_eq!(ranges.len(), 3);
        assert_eq!((ranges[0].from(), ranges[0].to()), (None, Some(Bson::Int32(10))));
        assert_eq!((ranges[1].from(), ranges[1].to()), (Some(Bson::Int32(10)), Some(Bson::String("m".into()))));
        assert_eq!((ranges[2].from(), ranges[2].to()), (Some(Bson::String("m".into())), None));
        assert_eq!((ranges[1].last_id(), ranges[1].copied, ranges[1].done), (Some(Bson::Int64(12)), 3, false));
        assert!(ranges[2].done && !ranges[0].done && ranges[0].last_id().is_none());

        // Read whole again (or marked done): the ranges no longer apply.
        cp.apply(CheckpointUpdate::SnapshotCollection {
            ns: "a.b".into(),
            last_id: Bson::Int32(3),
            copied: 1,
            done: false,
        });
        assert!(cp.snapshot.as_ref().expect("snapshot").collections["a.b"].ranges.is_empty());
    }

    #[test]
    fn a_new_snapshot_forgets_the_old_stream_position() {
        let mut cp = Checkpoint::default();
        cp.apply(CheckpointUpdate::Stream { resume_token: doc! {"_data": "old"}, cluster_time: Some(ct(5, 1)) });
        cp.apply(CheckpointUpdate::SnapshotStarted { start_at: ct(200, 0), namespaces: vec![] });
        cp.apply(CheckpointUpdate::SnapshotCompleted { at: ct(200, 5) });
        assert_eq!(plan(Some(&cp), SnapshotMode::WhenNeeded), Plan::StartAfter(ct(200, 0)));
    }

    #[test]
    fn a_checkpoint_without_the_completion_time_still_reads() {
        let text = r#"{"v":1,"resume_token":null,"cluster_time":{"t":1,"i":1},"seq":3,
            "snapshot":{"start_at":{"t":1,"i":1},"completed":true,"collections":{}},"written_at_ms":0}"#;
        let cp: Checkpoint = serde_json::from_str(text).expect("an older checkpoint parses");
        assert_eq!(cp.snapshot.and_then(|s| s.completed_at), None);
    }

    #[test]
    fn answered_requests_move_forward_only() {
        let mut cp = Checkpoint::default();
        assert_eq!(cp.requests_offset, None, "none answered: read the request topic from its start");
        cp.apply(CheckpointUpdate::Requests { next: 4 });
        cp.apply(CheckpointUpdate::Requests { next: 2 });
        assert_eq!(cp.requests_offset, Some(4));
        let text = serde_json::to_string(&Checkpoint::default()).expect("serializes");
        assert!(!text.contains("requests_offset"), "an older cdc-source reads it: {text}");
    }

    #[test]
    fn a_checkpoint_reads_back_as_it_was_written() {
        let mut cp = Checkpoint { v: CHECKPOINT_VERSION, seq: 7, ..Checkpoint::default() };
        cp.apply(CheckpointUpdate::Requests { next: 3 });
        cp.apply(CheckpointUpdate::Stream { resume_token: doc! {"_data": "x"}, cluster_time: None });
        let text = serde_json::to_string(&cp).expect("serializes");
        let back: Checkpoint = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, cp);
    }

    #[test]
    fn only_a_capture_without_a_checkpoint_starts_there() {
        let at = ClusterTime { t: 10, i: 1 };
        assert_eq!(configured_start(None, Some(at), Plan::StartNow), Plan::StartAfter(at));
        assert_eq!(configured_start(None, None, Plan::StartNow), Plan::StartNow);
        let stored = Checkpoint::default();
        let snapshot = Plan::Snapshot(SnapshotState::default());
        assert_eq!(configured_start(Some(&stored), Some(at), snapshot.clone()), snapshot, "the checkpoint wins");
    }
}
