//! One memory budget per service: every buffer that grows with the data (queued records,
//! batches being written) reserves its bytes here first, so the process stays within the limit
//! whatever the number of partitions or the size of documents.
//!
//! A holder (a partition, a queue) that holds nothing may always take one reservation, even
//! beyond the budget: a single record larger than the budget still passes, and one stage
//! waiting for budget can never wait for bytes it holds itself.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
    released: Notify,
}

/// What one holder has reserved, shared by its reservations.
#[derive(Debug, Default, Clone)]
pub struct Holder(Arc<AtomicUsize>);

impl Holder {
    pub fn bytes(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// Bytes taken from the budget; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    holder: Holder,
    bytes: usize,
}

impl Reservation {
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.holder.0.fetch_sub(self.bytes, Ordering::AcqRel);
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
        self.budget.released.notify_waiters();
    }
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { limit, used: AtomicUsize::new(0), released: Notify::new() })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Takes `bytes` for `holder` if the budget has room, or if the holder holds nothing.
    pub fn try_reserve(self: &Arc<Self>, bytes: usize, holder: &Holder) -> Option<Reservation> {
        let alone = holder.bytes() == 0;
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            if !alone && used.saturating_add(bytes) > self.limit {
                return None;
            }
            match self.used.compare_exchange_weak(used, used + bytes, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => used = now,
            }
        }
        holder.0.fetch_add(bytes, Ordering::AcqRel);
        Some(Reservation { budget: self.clone(), holder: holder.clone(), bytes })
    }

    /// Waits until `bytes` more would fit (or `holder` holds nothing), taking nothing: a
    /// paused reader resumes only with room for more than the one record it waited for.
    pub async fn room(&self, bytes: usize, holder: &Holder) {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if holder.bytes() == 0 || self.used().saturating_add(bytes) <= self.limit {
                return;
            }
            released.await;
        }
    }

    /// Takes `bytes` for `holder`, waiting until the budget has room (or the holder holds
    /// nothing).
    pub async fn reserve(self: &Arc<Self>, bytes: usize, holder: &Holder) -> Reservation {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(reservation) = self.try_reserve(bytes, holder) {
                return reservation;
            }
            released.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reservations_stay_within_the_limit_unless_the_holder_holds_nothing() {
        let budget = MemoryBudget::new(100);
        let (a, b) = (Holder::default(), Holder::default());
        let first = budget.try_reserve(60, &a).expect("room");
        assert!(budget.try_reserve(60, &a).is_none(), "over the limit");
        let alone = budget.try_reserve(500, &b).expect("b holds nothing: it may always take one");
        assert_eq!(budget.used(), 560);
        assert!(budget.try_reserve(1, &b).is_none());
        drop(alone);
        drop(first);
        assert_eq!((budget.used(), a.bytes(), b.bytes()), (0, 0, 0));
    }

    #[tokio::test]
    async fn a_waiting_reservation_gets_the_bytes_given_back() {
        let budget = MemoryBudget::new(100);
        let holder = Holder::default();
        let held = budget.try_reserve(80, &holder).expect("room");
        let waiter = {
            let (budget, holder) = (budget.clone(), holder.clone());
            tokio::spawn(async move { budget.reserve(50, &holder).await.bytes() })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "waits while the budget is spent");
        drop(held);
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").expect("joins"), 50);
    }

    #[tokio::test]
    async fn room_waits_for_a_margin_without_taking_it() {
        let budget = MemoryBudget::new(100);
        let (reader, other) = (Holder::default(), Holder::default());
        let own = budget.try_reserve(10, &reader).expect("room");
        let others = budget.try_reserve(70, &other).expect("room");
        let waiter = {
            let (budget, reader) = (budget.clone(), reader.clone());
            tokio::spawn(async move { budget.room(50, &reader).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "80 used: no room for 50 more");
        drop(others);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").expect("joins");
        assert_eq!(budget.used(), 10, "room takes nothing");
        drop(own);
    }
}
