//! Fault injection for the test suites: nothing here runs unless a test arms it. A partition's
//! decoder can be made to panic on its next records, to prove that a task which dies is seen; a
//! failback command can be made to stop after a step, to prove that running it again goes on.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

fn armed() -> &'static Mutex<HashMap<(String, i32), u32>> {
    static ARMED: OnceLock<Mutex<HashMap<(String, i32), u32>>> = OnceLock::new();
    ARMED.get_or_init(Default::default)
}

/// The decoder of `topic`/`partition` panics on the next `times` records it decodes.
pub fn panic_decoding(topic: &str, partition: i32, times: u32) {
    armed().lock().unwrap_or_else(|p| p.into_inner()).insert((topic.to_string(), partition), times);
}

/// Panics if a test armed this partition's decoder.
pub(crate) fn before_decoding(topic: &str, partition: i32) {
    let mut armed = armed().lock().unwrap_or_else(|p| p.into_inner());
    if armed.is_empty() {
        return;
    }
    if let Some(left) = armed.get_mut(&(topic.to_string(), partition)) {
        *left -= 1;
        if *left == 0 {
            armed.remove(&(topic.to_string(), partition));
        }
        drop(armed);
        panic!("test hook: the decoder of {topic}/{partition} panics");
    }
}

fn failback_stop() -> &'static Mutex<Option<String>> {
    static STOP: OnceLock<Mutex<Option<String>>> = OnceLock::new();
    STOP.get_or_init(Default::default)
}

/// The next failback command of this process stops (as if it crashed) once it has recorded
/// `phase` (e.g. `saved`), once.
pub fn stop_failback_after(phase: &str) {
    *failback_stop().lock().unwrap_or_else(|p| p.into_inner()) = Some(phase.to_string());
}

/// An error if a test asked the failback to stop after `phase`.
pub(crate) fn failback_step(phase: &str) -> Result<(), String> {
    let mut stop = failback_stop().lock().unwrap_or_else(|p| p.into_inner());
    if stop.as_deref() == Some(phase) {
        *stop = None;
        return Err(format!("test hook: the failback stops after {phase}"));
    }
    Ok(())
}
