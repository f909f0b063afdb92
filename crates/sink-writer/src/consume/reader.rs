//! A partition's records on their way to its task: fetched from the consumer (holding their
//! share of the memory budget), then decoded here, ahead of the writer, so the JSON work of the
//! next batch overlaps the writes of the last.

use bson::RawDocumentBuf;
use envelope::{DecodeError, Event};
use rdkafka::message::{Message, OwnedMessage};
use service_kit::budget::Reservation;
use tokio::sync::mpsc;

use crate::config::ApplyConfig;

/// A record fetched for a partition, with the memory it holds until it is written.
pub struct Fetched {
    pub message: OwnedMessage,
    pub reservation: Reservation,
}

/// A record and what it decodes to.
pub struct Decoded {
    pub message: OwnedMessage,
    /// Documents as BSON bytes: they go to the server as they are.
    pub event: Result<Event<RawDocumentBuf>, DecodeError>,
    pub reservation: Reservation,
}

/// Whether a batch being gathered takes another record: it ends at a control event (a DDL
/// marker, applied after everything before it) or at `apply.batch_max_docs` / `batch_max_bytes`.
pub fn takes_more(batch: &[Decoded], bytes: usize, limits: &ApplyConfig) -> bool {
    !matches!(batch.last(), Some(Decoded { event: Ok(Event::Control(_)), .. }))
        && batch.len() < limits.batch_max_docs
        && bytes < limits.batch_max_bytes
}

/// The newest watermark among a batch's records, if any.
pub fn newest_watermark(batch: &[Decoded]) -> Option<envelope::ClusterTime> {
    batch
        .iter()
        .filter_map(|d| match &d.event {
            Ok(Event::Watermark(w)) => Some(w.cluster_time),
            _ => None,
        })
        .max()
}

/// How much memory a record holds from fetch to write: its bytes as fetched, decoded into
/// documents, its statement, the command holding the statement, and the driver's copy of the
/// command on the wire (five copies; BSON of numbers is larger than their JSON, and the headroom
/// covers it).
pub fn footprint(key: Option<&[u8]>, payload: Option<&[u8]>) -> usize {
    let raw = key.map_or(0, <[u8]>::len) + payload.map_or(0, <[u8]>::len);
    raw * 6 + 512
}

/// Decodes records until either side is gone.
pub async fn decode(mut rx: mpsc::Receiver<Fetched>, tx: mpsc::Sender<Decoded>) {
    while let Some(Fetched { message, reservation }) = rx.recv().await {
        crate::hooks::before_decoding(message.topic(), message.partition());
        let event = envelope::decode_raw(message.key(), message.payload());
        if tx.send(Decoded { message, event, reservation }).await.is_err() {
            return;
        }
    }
}
