//! Which partitions have open dead letters, for the partition tasks to ask cheaply before they
//! pass a watermark: read from the target every few seconds (by one task), for a partition when a
//! task takes it up, and set at once when this process records a dead letter or resolves one.
//! A partition recorded here after a reading began stays held whatever that reading found. Pure
//! but for the clock.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use crate::consume::offsets::Tp;

#[derive(Default)]
struct State {
    /// As the target said at the last reading.
    read: HashSet<Tp>,
    /// Recorded by this process, and when.
    recorded: HashMap<Tp, Instant>,
}

#[derive(Default)]
pub struct Open {
    state: Mutex<State>,
}

impl Open {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `tp` has an open dead letter: its consistent point must not move.
    pub fn holds(&self, tp: &Tp) -> bool {
        let state = self.lock();
        state.read.contains(tp) || state.recorded.contains_key(tp)
    }

    /// This process recorded a dead letter of `tp` (it is in the target now).
    pub fn recorded(&self, tp: &Tp) {
        self.lock().recorded.insert(tp.clone(), Instant::now());
    }

    /// A reading of every partition's open dead letters, begun at `began`.
    pub fn read_all(&self, open: HashSet<Tp>, began: Instant) {
        let mut state = self.lock();
        state.read = open;
        state.recorded.retain(|_, at| *at >= began);
    }

    /// A reading of one partition's, begun at `began`.
    pub fn read_one(&self, tp: &Tp, open: bool, began: Instant) {
        let mut state = self.lock();
        if open {
            state.read.insert(tp.clone());
        } else {
            state.read.remove(tp);
        }
        if state.recorded.get(tp).is_some_and(|at| *at < began) {
            state.recorded.remove(tp);
        }
    }

    /// Partitions held now.
    pub fn count(&self) -> usize {
        let state = self.lock();
        state.read.union(&state.recorded.keys().cloned().collect()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_recorded_during_a_reading_stays_held() {
        let open = Open::default();
        let (a, b) = (("t".to_string(), 0), ("t".to_string(), 1));
        let began = Instant::now();
        open.recorded(&a);
        open.read_all(HashSet::new(), began);
        assert!(open.holds(&a), "the reading may have missed what was recorded after it began");
        open.read_all(HashSet::new(), Instant::now());
        assert!(!open.holds(&a), "resolved since: a later reading releases it");
        open.read_all([b.clone()].into_iter().collect(), Instant::now());
        assert!(open.holds(&b) && open.count() == 1);
        open.read_one(&b, false, Instant::now());
        assert!(!open.holds(&b));
        open.recorded(&a);
        open.read_one(&a, false, began);
        assert!(open.holds(&a), "read before it was recorded");
    }
}
