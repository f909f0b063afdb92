//! Reading ahead of the change stream loop: a task of its own drives the cursor (each `getMore`
//! and the split of its reply into events) while the loop converts the events before, so a
//! backlog is read at the rate of the slower of the two rather than of their sum. The driver asks
//! for the next batch only once its current one is taken, so without this the server idles
//! while the loop converts and the loop idles while the server reads.
//!
//! What it hands on is exactly what `next_if_any` returned, in order: events, an empty batch with
//! the post-batch resume token as of then, or the error with the token as of then. At most
//! [`AHEAD_BYTES`] of events wait (one larger event always passes), so read-ahead adds one
//! reply's worth to what the process holds (`DeliveryConfig::FIXED_BYTES`).

use std::sync::Arc;

use bson::RawDocumentBuf;
use mongodb::change_stream::event::ResumeToken;
use mongodb::change_stream::ChangeStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

/// Bytes of events read ahead and not yet taken by the loop: one change-stream reply's worth.
pub const AHEAD_BYTES: usize = 16 * 1024 * 1024;

/// One `next_if_any` result, with what the stream said about its position at that moment.
enum Read {
    /// An event, holding its bytes of the read-ahead room until the loop takes it.
    Event(RawDocumentBuf, OwnedSemaphorePermit),
    /// A batch with no events: where the stream stands.
    Empty(Option<ResumeToken>),
    /// The stream failed (the driver already resumed what it could): where it stood.
    Failed(mongodb::error::Error, Option<ResumeToken>),
}

/// A change stream read by its own task; dropping it stops the task (and the cursor with it).
pub struct Prefetch {
    reads: mpsc::Receiver<Read>,
    reader: JoinHandle<()>,
    /// The resume token as of the last empty batch or error handed out.
    token: Option<ResumeToken>,
}

impl Prefetch {
    pub fn start(mut stream: ChangeStream<RawDocumentBuf>) -> Self {
        let room = Arc::new(Semaphore::new(AHEAD_BYTES));
        // Events are counted by bytes (the room); the channel only has to hold them all.
        let (tx, reads) = mpsc::channel(AHEAD_BYTES / 64);
        let reader = tokio::spawn(async move {
            loop {
                let read = match stream.next_if_any().await {
                    Ok(Some(event)) => {
                        let bytes = event.as_bytes().len().clamp(1, AHEAD_BYTES) as u32;
                        let Ok(permit) = room.clone().acquire_many_owned(bytes).await else { return };
                        Read::Event(event, permit)
                    }
                    Ok(None) => Read::Empty(stream.resume_token()),
                    Err(e) => Read::Failed(e, stream.resume_token()),
                };
                let failed = matches!(read, Read::Failed(..));
                if tx.send(read).await.is_err() || failed {
                    return;
                }
            }
        });
        Self { reads, reader, token: None }
    }

    /// The next event, `None` for a batch with no events, or the stream's error, as the
    /// stream's own `next_if_any` would have returned them.
    pub async fn next_if_any(&mut self) -> Result<Option<RawDocumentBuf>, mongodb::error::Error> {
        match self.reads.recv().await {
            Some(Read::Event(event, _room)) => Ok(Some(event)),
            Some(Read::Empty(token)) => {
                self.token = token;
                Ok(None)
            }
            Some(Read::Failed(e, token)) => {
                self.token = token;
                Err(e)
            }
            None => Err(mongodb::error::Error::custom("the change stream's reader stopped")),
        }
    }

    /// The stream's resume token as of the last empty batch or error [`Prefetch::next_if_any`]
    /// returned (where the stream's own `resume_token` is read in the loop).
    pub fn resume_token(&self) -> Option<ResumeToken> {
        self.token.clone()
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
