//! The single broker's log segments on disk (`.cache/data/kafka`, `scripts/services.sh`): what a
//! consumer fetches from a topic, batch by batch, compressed as the producer sent it. Read from
//! the record batch headers (Kafka's format v2), so a test can say which codec crossed and a
//! benchmark how many bytes.

use std::collections::BTreeSet;
use std::path::PathBuf;

/// A topic's batches on disk.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TopicLog {
    /// Bytes of every batch (data and transaction markers), as a consumer fetches them.
    pub bytes: u64,
    /// Batches holding records (not transaction markers).
    pub data_batches: u64,
    /// Records in those batches.
    pub records: u64,
    /// The codecs of the data batches: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub codecs: BTreeSet<u8>,
}

fn data_dir() -> PathBuf {
    test_support::workspace_root().join(".cache/data/kafka")
}

/// Every partition of `topic` on the single broker.
pub fn topic(topic: &str) -> TopicLog {
    let mut log = TopicLog::default();
    let Ok(dirs) = std::fs::read_dir(data_dir()) else { return log };
    for dir in dirs.flatten() {
        let name = dir.file_name().to_string_lossy().to_string();
        let is_partition = name
            .rsplit_once('-')
            .is_some_and(|(t, p)| t == topic && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if !is_partition {
            continue;
        }
        let Ok(files) = std::fs::read_dir(dir.path()) else { continue };
        for file in files.flatten().filter(|f| f.path().extension().is_some_and(|e| e == "log")) {
            if let Ok(bytes) = std::fs::read(file.path()) {
                add_segment(&mut log, &bytes);
            }
        }
    }
    log
}

/// Walks one segment's batches: baseOffset (8), batchLength (4), partitionLeaderEpoch (4),
/// magic (1), crc (4), attributes (2: codec in bits 0–2, control in bit 5), lastOffsetDelta
/// (4), two timestamps (16), producer id (8), epoch (2), base sequence (4), records count (4).
fn add_segment(log: &mut TopicLog, segment: &[u8]) {
    let mut at = 0;
    while at + 61 <= segment.len() {
        let length = i32::from_be_bytes(segment[at + 8..at + 12].try_into().expect("4 bytes"));
        if length <= 0 {
            break;
        }
        let size = 12 + length as usize;
        if at + size > segment.len() {
            break;
        }
        let attributes = u16::from_be_bytes(segment[at + 21..at + 23].try_into().expect("2 bytes"));
        log.bytes += size as u64;
        if attributes & 0x20 == 0 {
            log.data_batches += 1;
            log.records += u32::from_be_bytes(segment[at + 57..at + 61].try_into().expect("4 bytes")) as u64;
            log.codecs.insert((attributes & 0x07) as u8);
        }
        at += size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(attributes: u16, records: u32, body: usize) -> Vec<u8> {
        let mut b = vec![0u8; 61 + body];
        let length = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&length.to_be_bytes());
        b[16] = 2;
        b[21..23].copy_from_slice(&attributes.to_be_bytes());
        b[57..61].copy_from_slice(&records.to_be_bytes());
        b
    }

    #[test]
    fn data_batches_are_counted_with_their_codec_and_markers_only_in_bytes() {
        let mut segment = batch(4, 10, 100);
        segment.extend(batch(0x20, 1, 5));
        segment.extend(batch(3, 7, 0));
        let mut log = TopicLog::default();
        add_segment(&mut log, &segment);
        assert_eq!(log.bytes, segment.len() as u64);
        assert_eq!((log.data_batches, log.records), (2, 17));
        assert_eq!(log.codecs, BTreeSet::from([3, 4]));
    }
}
