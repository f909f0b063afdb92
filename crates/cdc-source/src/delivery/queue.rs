//! The queue between capture and delivery, bounded by count (`delivery.queue_capacity`) and by
//! bytes (a share of `delivery.memory_budget_bytes`). An item's bytes stay reserved until
//! delivery drops it, after its batch is durable: the queue and the batch in flight together stay
//! within the bound. An item larger than the whole bound waits for everything before it to be
//! released and then passes alone, so nothing is ever too large to pass.

use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::delivery::record::Item;

/// An item in the queue, and its share of the byte bound.
#[derive(Debug)]
pub struct Queued {
    pub item: Item,
    pub held: Held,
}

/// A share of the byte bound, released when dropped.
#[derive(Debug)]
pub struct Held {
    _permit: OwnedSemaphorePermit,
}

/// The receiving end is gone (delivery stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

#[derive(Clone)]
pub struct Sender {
    tx: mpsc::Sender<Queued>,
    bytes: Arc<Semaphore>,
    bound: u32,
}

pub struct Receiver {
    rx: mpsc::Receiver<Queued>,
    bytes: Arc<Semaphore>,
    bound: u32,
}

/// A queue of at most `items` items and `bytes` bytes (keys and values of the records).
pub fn bounded(items: usize, bytes: usize) -> (Sender, Receiver) {
    let bound = u32::try_from(bytes.max(1)).unwrap_or(u32::MAX);
    let semaphore = Arc::new(Semaphore::new(bound as usize));
    let (tx, rx) = mpsc::channel(items.max(1));
    (Sender { tx, bytes: semaphore.clone(), bound }, Receiver { rx, bytes: semaphore, bound })
}

impl Sender {
    /// Waits for room (items and bytes), then queues `item`.
    pub async fn send(&self, item: Item) -> Result<(), Closed> {
        let need = u32::try_from(item.bytes()).unwrap_or(u32::MAX).min(self.bound);
        let permit = self.bytes.clone().acquire_many_owned(need).await.map_err(|_| Closed)?;
        self.tx.send(Queued { item, held: Held { _permit: permit } }).await.map_err(|_| Closed)
    }
}

impl Receiver {
    pub async fn recv(&mut self) -> Option<Queued> {
        self.rx.recv().await
    }

    /// Bytes queued or in the batch being delivered.
    pub fn held_bytes(&self) -> usize {
        (self.bound as usize).saturating_sub(self.bytes.available_permits())
    }
}

impl Drop for Receiver {
    /// Capture waiting for room stops waiting: nothing will be delivered any more.
    fn drop(&mut self) {
        self.bytes.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::record::{Record, Target};
    use std::time::Duration;

    fn item(bytes: usize) -> Item {
        let record = Record {
            target: Target::Keyed("t".into()),
            key: vec![b'k'; bytes],
            value: None,
            control: None,
            op: "c",
            namespace: String::new(),
        };
        Item { records: vec![record], progress: None, cluster_time: None }
    }

    async fn sent(tx: &Sender, bytes: usize) -> bool {
        tokio::time::timeout(Duration::from_millis(50), tx.send(item(bytes))).await.is_ok()
    }

    #[tokio::test]
    async fn bytes_are_bounded_until_delivery_drops_the_items() {
        let (tx, mut rx) = bounded(100, 100);
        assert!(sent(&tx, 40).await && sent(&tx, 40).await);
        assert_eq!(rx.held_bytes(), 80);
        assert!(!sent(&tx, 40).await, "over the byte bound: waits, although there is room for items");
        let first = rx.recv().await.expect("an item");
        assert!(!sent(&tx, 40).await, "received but not yet delivered: still held");
        drop(first);
        assert!(sent(&tx, 40).await, "delivered: room again");
        assert_eq!(rx.held_bytes(), 80);
    }

    #[tokio::test]
    async fn an_item_larger_than_the_bound_passes_alone() {
        let (tx, mut rx) = bounded(100, 100);
        assert!(sent(&tx, 10).await);
        let big = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(item(500)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!big.is_finished(), "waits while anything else is held");
        drop(rx.recv().await.expect("the small item"));
        big.await.expect("joins").expect("the large item passes once the rest is released");
        assert_eq!(rx.held_bytes(), 100, "it holds the whole bound");
        assert!(!sent(&tx, 1).await, "nothing passes beside it");
        drop(rx.recv().await.expect("the large item"));
        assert!(sent(&tx, 1).await);
    }

    #[tokio::test]
    async fn a_closed_queue_refuses() {
        let (tx, rx) = bounded(1, 10);
        drop(rx);
        assert_eq!(tx.send(item(1)).await, Err(Closed));
    }
}
