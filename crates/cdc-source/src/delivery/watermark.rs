//! Watermarks: now and then (`delivery.watermark_interval_ms`) a record on every partition of
//! every topic this source writes, saying up to which source cluster time everything captured is
//! in Kafka. The time comes from the stream's position once it is durable: an event's resume
//! token, or while the stream is idle the post-batch resume token, whose cluster time MongoDB
//! encodes in `_data` (DocumentDB's cannot be read: there the last event's cluster time counts).
//! It is always just before that position, since the events of a transaction share their cluster
//! time and some may still follow. Pure but for the clock.

use std::time::{Duration, Instant};

use bson::{Bson, Document};
use envelope::{ClusterTime, SourceInfo, Watermark};

use crate::capture::watch::prev_tick;
use crate::delivery::checkpoint::CheckpointUpdate;
use crate::delivery::record::Item;

/// The cluster time a MongoDB resume token stands for: `_data` is the hex of a KeyString whose
/// first value is the event's Timestamp, type byte `0x82` then the timestamp's 8 bytes,
/// big-endian, seconds then increment. None for other forms (DocumentDB's tokens, `_data` as
/// binary on servers before 4.2).
pub fn token_time(token: &Document) -> Option<ClusterTime> {
    let Some(Bson::String(data)) = token.get("_data") else { return None };
    if data.len() < 18 || !data.is_char_boundary(18) || !data[..2].eq_ignore_ascii_case("82") {
        return None;
    }
    let t = u32::from_str_radix(&data[2..10], 16).ok()?;
    let i = u32::from_str_radix(&data[10..18], 16).ok()?;
    Some(ClusterTime { t, i })
}

/// Up to which cluster time everything captured is in Kafka once `progress` is durable: just
/// before the stream's position. Snapshot progress proves nothing (documents not copied yet
/// may have changed before any time).
pub fn covered(progress: &CheckpointUpdate) -> Option<ClusterTime> {
    match progress {
        CheckpointUpdate::Stream { resume_token, cluster_time } => {
            token_time(resume_token).or(*cluster_time).map(prev_tick)
        }
        _ => None,
    }
}

/// When the next watermark is due, and what it says.
pub struct Watermarks {
    /// None: no watermarks.
    interval: Option<Duration>,
    source: SourceInfo,
    /// What the durable and the batch being delivered prove.
    covered: Option<ClusterTime>,
    /// The last watermark written, and when.
    written: Option<(ClusterTime, Instant)>,
}

impl Watermarks {
    pub fn new(interval_ms: u64, source: SourceInfo) -> Self {
        let interval = (interval_ms > 0).then(|| Duration::from_millis(interval_ms));
        Self { interval, source, covered: None, written: None }
    }

    /// Takes in a batch about to be delivered; the watermark to deliver with it, when one is due
    /// and the time has moved since the last.
    pub fn next(&mut self, batch: &[Item], now_ms: i64) -> Option<Watermark> {
        let interval = self.interval?;
        for time in batch.iter().filter_map(|item| item.progress.as_ref().and_then(covered)) {
            self.covered = Some(self.covered.map_or(time, |c| c.max(time)));
        }
        let covered = self.covered?;
        match self.written {
            Some((time, at)) if time >= covered || at.elapsed() < interval => None,
            _ => Some(Watermark { cluster_time: covered, source: self.source.clone(), ts_ms: now_ms }),
        }
    }

    /// The watermark is durable.
    pub fn written(&mut self, watermark: &Watermark) {
        self.written = Some((watermark.cluster_time, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn stream(token: &str, cluster_time: Option<ClusterTime>) -> Item {
        Item::progress_only(CheckpointUpdate::Stream { resume_token: doc! {"_data": token}, cluster_time })
    }

    #[test]
    fn mongodb_tokens_carry_their_cluster_time() {
        // A token the real 6.0.5 server gave for an event at Timestamp(1796166476, 2).
        let token = doc! {"_data": "826B0F534C000000022B022C0100296E5A10043AC8277AB516437F93FA7D9A2F3EBB8946"};
        assert_eq!(token_time(&token), Some(ClusterTime { t: 1_796_166_476, i: 2 }));
        assert_eq!(token_time(&doc! {"_data": "826b0f534c0000000a"}), Some(ClusterTime { t: 1_796_166_476, i: 10 }));
        assert_eq!(token_time(&doc! {"_data": "0100000000"}), None, "not a timestamp first");
        assert_eq!(token_time(&doc! {"_data": "82abc"}), None, "too short");
        assert_eq!(
            token_time(
                &doc! {"_data": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![0x82] }}
            ),
            None
        );
        assert_eq!(token_time(&doc! {"$oid": "x"}), None, "DocumentDB's form");
    }

    #[test]
    fn the_time_covered_is_just_before_the_position() {
        let event = CheckpointUpdate::Stream {
            resume_token: doc! {"_data": "826B0F534C00000005"},
            cluster_time: Some(ClusterTime { t: 1, i: 1 }),
        };
        assert_eq!(covered(&event), Some(ClusterTime { t: 1_796_166_476, i: 4 }), "the token wins");
        let documentdb = CheckpointUpdate::Stream {
            resume_token: doc! {"_data": "opaque"},
            cluster_time: Some(ClusterTime { t: 9, i: 0 }),
        };
        assert_eq!(covered(&documentdb), Some(ClusterTime { t: 8, i: u32::MAX }), "else the event's time");
        let idle = CheckpointUpdate::Stream { resume_token: doc! {"_data": "opaque"}, cluster_time: None };
        assert_eq!(covered(&idle), None);
        let copy = CheckpointUpdate::SnapshotCompleted { at: ClusterTime { t: 9, i: 0 } };
        assert_eq!(covered(&copy), None);
    }

    #[test]
    fn a_watermark_is_due_once_per_interval_when_the_time_moved() {
        let mut marks = Watermarks::new(3_600_000, SourceInfo::default());
        assert_eq!(marks.next(&[], 1), None, "nothing covered yet");
        let first = marks.next(&[stream("8200000001000000030000", None)], 1).expect("the first is due at once");
        assert_eq!(first.cluster_time, ClusterTime { t: 1, i: 2 });
        marks.written(&first);
        assert_eq!(marks.next(&[stream("8200000002000000010000", None)], 2), None, "within the interval");

        let mut every_time = Watermarks::new(1, SourceInfo::default());
        let first = every_time.next(&[stream("8200000001000000030000", None)], 1).expect("due");
        every_time.written(&first);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(every_time.next(&[], 2), None, "the time did not move");
        let later = every_time.next(&[stream("8200000002000000010000", None)], 2).expect("moved");
        assert_eq!(later.cluster_time, ClusterTime { t: 2, i: 0 });
        assert_eq!(Watermarks::new(0, SourceInfo::default()).next(&[stream("8200000002000000010000", None)], 2), None);
    }
}
