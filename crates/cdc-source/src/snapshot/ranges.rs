//! How a snapshot shares a large collection among readers: `_id` split points sampled with
//! `$sample`, one range per reader, and where each continues after a restart. `copy.rs` reads
//! the shares.

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use mongodb::Collection;

use crate::config::Compat;
use crate::delivery::checkpoint::CollectionProgress;
use crate::error::Error;

/// How a snapshot splits a large collection among readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ranges {
    /// Readers of one collection at the same time.
    pub readers: usize,
    /// Fewest documents per range, by the estimated count.
    pub min_documents: u64,
}

/// One reader's share of a collection: the whole of it, or one `_id` range.
#[derive(Debug, Clone)]
pub struct Share {
    /// The range's place in the collection's progress; `None` for the whole collection.
    pub range: Option<usize>,
    /// Inclusive lower bound (`None`: from the start).
    pub from: Option<Bson>,
    /// Exclusive upper bound (`None`: to the end).
    pub to: Option<Bson>,
    /// The last document copied before a restart.
    pub resume_after: Option<Bson>,
    pub copied: u64,
}

/// Where a copy stored in ranges continues: `(true, its ranges not done)`, each after its last
/// copied `_id`. Split under `compat = mongodb` but resumed as `documentdb`, which cannot bound a
/// read by a range: `(false, the whole collection again)` by one reader (what was copied is applied
/// again, idempotently; its first progress forgets the ranges). `None`: not in ranges.
pub fn resumed_shares(progress: &CollectionProgress, compat: Compat) -> Option<(bool, Vec<Share>)> {
    if progress.ranges.is_empty() {
        return None;
    }
    if compat == Compat::Documentdb {
        return Some((false, vec![Share { range: None, from: None, to: None, resume_after: None, copied: 0 }]));
    }
    let shares = progress
        .ranges
        .iter()
        .enumerate()
        .filter(|(_, range)| !range.done)
        .map(|(i, range)| Share {
            range: Some(i),
            from: range.from(),
            to: range.to(),
            resume_after: range.last_id(),
            copied: range.copied,
        })
        .collect();
    Some((true, shares))
}

/// `parts - 1` ascending `_id`s that cut the collection into about equal ranges, from a
/// random sample (the server reads a sample of a large collection without scanning it).
pub async fn split_points(collection: &Collection<Document>, parts: usize) -> Result<Vec<Bson>, Error> {
    const SAMPLES_PER_PART: usize = 32;
    let pipeline = [
        doc! {"$sample": {"size": i64::try_from(parts * SAMPLES_PER_PART).unwrap_or(i64::MAX)}},
        doc! {"$project": {"_id": 1}},
        doc! {"$sort": {"_id": 1}},
    ];
    let sampled: Vec<Document> = collection
        .aggregate(pipeline)
        .await
        .map_err(|e| Error::mongo("sample split points", e))?
        .try_collect()
        .await
        .map_err(|e| Error::mongo("sample split points", e))?;
    let ids: Vec<Bson> = sampled.into_iter().filter_map(|mut d| d.remove("_id")).collect();
    let mut splits: Vec<Bson> = (1..parts).filter_map(|k| ids.get(k * ids.len() / parts).cloned()).collect();
    splits.dedup();
    Ok(splits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::checkpoint::{Checkpoint, CheckpointUpdate};
    use envelope::ClusterTime;

    fn split_progress() -> CollectionProgress {
        let mut cp = Checkpoint::default();
        cp.apply(CheckpointUpdate::SnapshotStarted {
            start_at: ClusterTime { t: 1, i: 1 },
            namespaces: vec!["d.c".into()],
        });
        cp.apply(CheckpointUpdate::SnapshotRanges { ns: "d.c".into(), splits: vec![Bson::Int32(10), Bson::Int32(20)] });
        cp.apply(CheckpointUpdate::SnapshotRange {
            ns: "d.c".into(),
            range: 1,
            last_id: Bson::Int32(12),
            copied: 3,
            done: false,
        });
        cp.apply(CheckpointUpdate::SnapshotRange {
            ns: "d.c".into(),
            range: 2,
            last_id: Bson::Int32(29),
            copied: 9,
            done: true,
        });
        cp.snapshot.expect("snapshot").collections["d.c"].clone()
    }

    #[test]
    fn a_copy_in_ranges_resumes_each_range_not_done_after_its_last_id() {
        let (ranged, shares) = resumed_shares(&split_progress(), Compat::Mongodb).expect("in ranges");
        assert!(ranged);
        let described: Vec<_> =
            shares.iter().map(|s| (s.range, s.from.clone(), s.to.clone(), s.resume_after.clone())).collect();
        assert_eq!(
            described,
            vec![
                (Some(0), None, Some(Bson::Int32(10)), None),
                (Some(1), Some(Bson::Int32(10)), Some(Bson::Int32(20)), Some(Bson::Int32(12))),
            ]
        );
        assert!(resumed_shares(&CollectionProgress::default(), Compat::Mongodb).is_none());
    }

    #[test]
    fn ranges_resumed_as_documentdb_copy_the_whole_collection_again() {
        let (ranged, shares) = resumed_shares(&split_progress(), Compat::Documentdb).expect("in ranges");
        assert!(!ranged);
        assert_eq!(shares.len(), 1);
        let whole = &shares[0];
        assert!(whole.range.is_none() && whole.from.is_none() && whole.to.is_none() && whole.resume_after.is_none());
    }
}
