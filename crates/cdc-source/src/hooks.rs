//! Fault injection for the test suites: nothing here runs unless a test arms it. A snapshot's
//! copy of a collection can be held after a given number of documents, so that a test's stop
//! lands exactly there (the last copied `_id` is then known).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

fn armed() -> &'static Mutex<HashMap<String, u64>> {
    static ARMED: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
    ARMED.get_or_init(Default::default)
}

/// The next copy of `namespace` (`db.collection`) stops reading once it has sent `documents`
/// documents, and waits for the stop request (once: the hook is then disarmed).
pub fn hold_copy_after(namespace: &str, documents: u64) {
    armed().lock().unwrap_or_else(|p| p.into_inner()).insert(namespace.to_string(), documents);
}

/// Whether a test holds the copy of `namespace` now that it has sent `copied` documents.
pub(crate) fn copy_held(namespace: &str, copied: u64) -> bool {
    let mut armed = armed().lock().unwrap_or_else(|p| p.into_inner());
    if armed.is_empty() || armed.get(namespace) != Some(&copied) {
        return false;
    }
    armed.remove(namespace);
    true
}
