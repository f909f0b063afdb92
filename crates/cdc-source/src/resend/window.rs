//! One window of a re-send: the documents read (and the `_id`s the source no longer has), the
//! cluster time of the read, and what the stream did meanwhile. A requested document whose own
//! change the stream brings before the window closes needs no copy (that change carries a state
//! at least as new); a drop, rename or dropped database of the namespace makes every copy moot.
//! Once the stream is past the read's time, the rest goes out as `r` (and `d`) records, before
//! whatever the stream brings next. Pure.

use std::collections::BTreeMap;

use bson::{Bson, Document, RawDocumentBuf};
use envelope::{encode_key, ChangeEvent, ClusterTime, Ddl, Namespace, Op, Payload, Position, Snapshot};

use crate::convert::Converter;
use crate::record::Record;

/// What a read of the source found, and when.
#[derive(Debug, Default)]
pub struct Read {
    pub found: Vec<RawDocumentBuf>,
    /// `_id`s the source no longer has.
    pub gone: Vec<Bson>,
    /// The read's cluster time: it saw every change up to here, and none after.
    pub at: ClusterTime,
}

#[derive(Debug)]
enum Copy {
    Document(RawDocumentBuf),
    Gone(Bson),
}

/// How many documents a window came to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub resent: u64,
    pub deleted: u64,
    pub superseded: u64,
}

#[derive(Debug)]
pub struct Window {
    pub request: String,
    pub ns: Namespace,
    /// The stream passes this: the copies go out.
    pub close_at: ClusterTime,
    /// By record key (the `_id` as the key renders it: one document, one key).
    copies: BTreeMap<Vec<u8>, Copy>,
    superseded: u64,
}

impl Window {
    pub fn open(request: &str, ns: Namespace, read: Read) -> Self {
        let mut copies = BTreeMap::new();
        for doc in read.found {
            let id = Payload::id(&doc).unwrap_or(Bson::Null);
            copies.insert(encode_key(&id), Copy::Document(doc));
        }
        for id in read.gone {
            copies.entry(encode_key(&id)).or_insert(Copy::Gone(id));
        }
        Self { request: request.to_string(), ns, close_at: read.at, copies, superseded: 0 }
    }

    /// A streamed change of document `id` of `ns`: whether it answers this window's request
    /// (its copy is moot).
    pub fn claim(&mut self, ns: &Namespace, id: &Bson) -> bool {
        let claimed = *ns == self.ns && self.copies.remove(&encode_key(id)).is_some();
        self.superseded += u64::from(claimed);
        claimed
    }

    /// A DDL the stream brings: one that ends the namespace's documents makes every copy moot.
    pub fn ddl(&mut self, ddl: &Ddl) {
        let ends = match ddl {
            Ddl::Drop(ns) => *ns == self.ns,
            Ddl::Rename { from, to } => *from == self.ns || *to == self.ns,
            Ddl::DropDatabase { db } => *db == self.ns.db,
            _ => false,
        };
        if ends {
            self.superseded += self.copies.len() as u64;
            self.copies.clear();
        }
    }

    /// Whether the stream at `at` is past the read: every change the read may have missed is out.
    pub fn passed(&self, at: ClusterTime) -> bool {
        at > self.close_at
    }

    /// The copies' records, positioned at the read's time.
    pub fn close(self, converter: &Converter, now_ms: i64) -> (Vec<Record>, Counts) {
        let mut counts = Counts { superseded: self.superseded, ..Counts::default() };
        let mut records = Vec::new();
        for copy in self.copies.into_values() {
            let (op, id, after) = match copy {
                // A re-sent document goes through the same `[transforms]` as every other: what
                // they hide never reaches Kafka; one the filter leaves out is a delete.
                Copy::Document(doc) => {
                    let id = Payload::id(&doc).unwrap_or(Bson::Null);
                    match crate::transforms::read(&converter.transforms, &self.ns, doc) {
                        Ok(Some(doc)) => {
                            counts.resent += 1;
                            (Op::Read, id, Some(doc))
                        }
                        Ok(None) => {
                            counts.deleted += 1;
                            (Op::Delete, id, None)
                        }
                        Err(e) => {
                            tracing::error!(ns = %self.ns, error = %e, "a re-sent document cannot go through its transform rule: not sent");
                            continue;
                        }
                    }
                }
                Copy::Gone(id) => {
                    counts.deleted += 1;
                    (Op::Delete, id, None)
                }
            };
            let mut document_key = Document::new();
            document_key.insert("_id", id);
            let event = ChangeEvent {
                op,
                ns: self.ns.clone(),
                document_key,
                before: None,
                after,
                update_description: None,
                source: converter.source(Snapshot::Incremental),
                transaction: None,
                position: Position {
                    cluster_time: self.close_at,
                    resume_token: None,
                    seq: converter.next_seq(),
                    exact: true,
                },
                ts_ms: now_ms,
                resend: Some(self.request.clone()),
            };
            records.extend(converter.data_records(&event));
        }
        (records, counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CaptureConfig, TopicConfig};
    use crate::routing::{NamespaceFilter, TopicRouter};
    use bson::rawdoc;

    fn converter() -> Converter {
        let filter = NamespaceFilter::new(&CaptureConfig::default()).expect("filter");
        Converter::new(
            "src".into(),
            envelope::Mode::Debezium,
            true,
            TopicRouter::new(&TopicConfig::default()),
            filter,
            1,
        )
    }

    fn window() -> Window {
        let read = Read {
            found: vec![rawdoc! {"_id": 1, "n": 10}, rawdoc! {"_id": 2, "n": 20}, rawdoc! {"_id": 3_i64, "n": 30}],
            gone: vec![Bson::Int32(4)],
            at: ClusterTime { t: 100, i: 5 },
        };
        Window::open("req", Namespace::new("shop", "items"), read)
    }

    fn decoded(record: &Record) -> ChangeEvent {
        match envelope::decode(Some(&record.key), record.value.as_deref()) {
            Ok(envelope::Event::Change(change)) => *change,
            other => panic!("not a change: {other:?}"),
        }
    }

    #[test]
    fn the_copies_go_out_as_incremental_reads_and_deletes_once_the_stream_passes_the_read() {
        let mut window = window();
        assert!(!window.passed(ClusterTime { t: 100, i: 5 }), "a later change of the read's own time may follow");
        assert!(window.passed(ClusterTime { t: 100, i: 6 }));
        // Another namespace's change, or another document's, leaves the copies alone.
        assert!(!window.claim(&Namespace::new("shop", "other"), &Bson::Int32(1)));
        assert!(!window.claim(&Namespace::new("shop", "items"), &Bson::Int32(9)));
        // Document 2 changed while it was read: its change carries a newer state. An Int64 `_id`
        // is the same document as the Int32 one of the same value.
        assert!(window.claim(&Namespace::new("shop", "items"), &Bson::Int32(2)));
        assert!(window.claim(&Namespace::new("shop", "items"), &Bson::Int32(3)));
        let (records, counts) = window.close(&converter(), 7);
        assert_eq!(counts, Counts { resent: 1, deleted: 1, superseded: 2 });
        assert_eq!(records.iter().map(|r| r.op).collect::<Vec<_>>(), ["r", "d", "tombstone"]);
        let read = decoded(&records[0]);
        assert_eq!((read.op, read.source.snapshot), (Op::Read, Snapshot::Incremental));
        assert_eq!(read.resend.as_deref(), Some("req"));
        assert_eq!(read.position.cluster_time, ClusterTime { t: 100, i: 5 });
        assert_eq!(read.after.and_then(|d| d.get("n").cloned()), Some(Bson::Int32(10)));
        let delete = decoded(&records[1]);
        assert_eq!((delete.op, delete.id()), (Op::Delete, Some(&Bson::Int32(4))));
        assert_eq!(delete.source.snapshot, Snapshot::Incremental);
    }

    #[test]
    fn a_drop_of_the_namespace_or_its_database_makes_every_copy_moot() {
        for ddl in [
            Ddl::Drop(Namespace::new("shop", "items")),
            Ddl::Rename { from: Namespace::new("shop", "old"), to: Namespace::new("shop", "items") },
            Ddl::DropDatabase { db: "shop".into() },
        ] {
            let mut window = window();
            window.ddl(&ddl);
            let (records, counts) = window.close(&converter(), 7);
            assert!(records.is_empty(), "{ddl:?}");
            assert_eq!(counts.superseded, 4);
        }
        let mut window = window();
        window.ddl(&Ddl::Drop(Namespace::new("shop", "other")));
        window.ddl(&Ddl::CreateIndexes { ns: Namespace::new("shop", "items"), indexes: vec![] });
        assert_eq!(window.close(&converter(), 7).1.resent, 3);
    }
}
