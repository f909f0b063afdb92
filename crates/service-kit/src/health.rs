//! Liveness and readiness state, set by the service's loops and read by the probes.
//!
//! Liveness means "every registered loop beat within its stall limit": it never depends on
//! MongoDB or Kafka being up, so an orchestrator restarts a wedged process, not a waiting one.
//! Readiness means "every declared component reports ok" (connected, assigned, streaming). A
//! component many tasks write to (the target's writes, one task per partition) is ready only
//! while none of its writers fails: each writer's state is kept apart, so one that succeeds never
//! hides another that fails, and a writer that goes away (a revoked partition) is forgotten.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A component's state, read when readiness is asked for.
pub type Probe = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    started: Instant,
    loops: Mutex<Vec<LoopEntry>>,
    components: Mutex<BTreeMap<String, Result<(), String>>>,
    /// Failing writers of shared components: component → writer → reason.
    failing: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    /// Components whose state is asked for at every readiness check (process-wide state).
    probes: Mutex<Vec<(String, Probe)>>,
    /// Things worth knowing that do not make the service unready (shown on `/health/readyz`).
    notes: Mutex<BTreeMap<String, String>>,
    /// What this instance does among several of one kind (`active`, `standby`), when it says.
    role: Mutex<Option<String>>,
}

struct LoopEntry {
    name: String,
    stall_after: Duration,
    last_beat_ms: Arc<AtomicU64>,
}

/// A loop's handle: call [`LoopBeat::beat`] on every turn, including idle ones. Dropping it
/// unregisters the loop.
pub struct LoopBeat {
    inner: Arc<Inner>,
    last_beat_ms: Arc<AtomicU64>,
}

impl LoopBeat {
    pub fn beat(&self) {
        self.last_beat_ms.store(self.inner.elapsed_ms(), Ordering::Relaxed);
    }
}

impl Drop for LoopBeat {
    fn drop(&mut self) {
        lock(&self.inner.loops).retain(|entry| !Arc::ptr_eq(&entry.last_beat_ms, &self.last_beat_ms));
    }
}

impl Inner {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// A poisoned lock only means another thread panicked while holding it; the maps stay usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                started: Instant::now(),
                loops: Mutex::new(Vec::new()),
                components: Mutex::new(BTreeMap::new()),
                failing: Mutex::new(BTreeMap::new()),
                probes: Mutex::new(Vec::new()),
                notes: Mutex::new(BTreeMap::new()),
                role: Mutex::new(None),
            }),
        }
    }

    /// Registers a loop that must beat at least every `stall_after`.
    pub fn register_loop(&self, name: impl Into<String>, stall_after: Duration) -> LoopBeat {
        let last_beat_ms = Arc::new(AtomicU64::new(self.inner.elapsed_ms()));
        lock(&self.inner.loops).push(LoopEntry { name: name.into(), stall_after, last_beat_ms: last_beat_ms.clone() });
        LoopBeat { inner: self.inner.clone(), last_beat_ms }
    }

    /// Declares a component that readiness waits for; it starts as not ready.
    pub fn declare(&self, component: &str) {
        lock(&self.inner.components).entry(component.to_string()).or_insert_with(|| Err("starting".to_string()));
    }

    /// A component whose state `probe` answers at every readiness check: for state the process
    /// keeps anyway (e.g. whether valid AWS credentials are kept), so nothing has to copy it.
    pub fn declare_probe(&self, component: &str, probe: impl Fn() -> Result<(), String> + Send + Sync + 'static) {
        lock(&self.inner.probes).push((component.to_string(), Box::new(probe)));
    }

    /// Sets a component's state. The reason is shown on `/health/readyz`: never put a secret in it.
    pub fn set(&self, component: &str, state: Result<(), String>) {
        lock(&self.inner.components).insert(component.to_string(), state);
    }

    pub fn set_ready(&self, component: &str) {
        self.set(component, Ok(()));
    }

    /// Sets one writer's state of a shared component: the component is ready only while none of
    /// its writers fails.
    pub fn set_for(&self, component: &str, writer: &str, state: Result<(), String>) {
        let mut failing = lock(&self.inner.failing);
        match state {
            Ok(()) => {
                if let Some(writers) = failing.get_mut(component) {
                    writers.remove(writer);
                    if writers.is_empty() {
                        failing.remove(component);
                    }
                }
            }
            Err(reason) => {
                failing.entry(component.to_string()).or_default().insert(writer.to_string(), reason);
            }
        }
    }

    /// Forgets a writer that went away (a revoked partition), in every component.
    pub fn forget_writer(&self, writer: &str) {
        let mut failing = lock(&self.inner.failing);
        failing.retain(|_, writers| {
            writers.remove(writer);
            !writers.is_empty()
        });
    }

    pub fn set_not_ready(&self, component: &str, reason: impl Into<String>) {
        self.set(component, Err(reason.into()));
    }

    /// Sets (or, with `None`, clears) a note: something an operator should see on
    /// `/health/readyz` that does not make the service unready (e.g. an index the target cannot
    /// build). Never put a secret in it.
    pub fn note(&self, topic: &str, note: Option<String>) {
        let mut notes = lock(&self.inner.notes);
        match note {
            Some(note) => notes.insert(topic.to_string(), note),
            None => notes.remove(topic),
        };
    }

    /// The notes, as `topic: note` lines.
    pub fn notes(&self) -> Vec<String> {
        lock(&self.inner.notes).iter().map(|(topic, note)| format!("{topic}: {note}")).collect()
    }

    /// Sets the role `/health/readyz` reports (`role: <role>`): e.g. a standby instance is ready
    /// (connected, able to take over) but not working, and says so.
    pub fn set_role(&self, role: &str) {
        *lock(&self.inner.role) = Some(role.to_string());
    }

    pub fn role(&self) -> Option<String> {
        lock(&self.inner.role).clone()
    }

    /// `Ok` when every loop beat within its limit; otherwise the stalled loops.
    pub fn liveness(&self) -> Result<(), Vec<String>> {
        let now = self.inner.elapsed_ms();
        let stalled: Vec<String> = lock(&self.inner.loops)
            .iter()
            .filter_map(|entry| {
                let quiet = Duration::from_millis(now.saturating_sub(entry.last_beat_ms.load(Ordering::Relaxed)));
                (quiet > entry.stall_after).then(|| format!("{}: no progress for {}s", entry.name, quiet.as_secs()))
            })
            .collect();
        if stalled.is_empty() {
            Ok(())
        } else {
            Err(stalled)
        }
    }

    /// `Ok` when every declared component is ready (and at least one was declared).
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let components = lock(&self.inner.components);
        if components.is_empty() {
            return Err(vec!["starting".to_string()]);
        }
        let mut waiting: Vec<String> = components
            .iter()
            .filter_map(|(name, state)| state.as_ref().err().map(|reason| format!("{name}: {reason}")))
            .collect();
        drop(components);
        for (name, writers) in lock(&self.inner.failing).iter() {
            for (writer, reason) in writers {
                waiting.push(format!("{name} ({writer}): {reason}"));
            }
        }
        for (name, probe) in lock(&self.inner.probes).iter() {
            if let Err(reason) = probe() {
                waiting.push(format!("{name}: {reason}"));
            }
        }
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(waiting)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_waits_for_every_component() {
        let health = Health::new();
        assert!(health.readiness().is_err(), "nothing declared yet");
        health.declare("kafka");
        health.declare("mongodb");
        health.set_ready("kafka");
        assert_eq!(health.readiness(), Err(vec!["mongodb: starting".to_string()]));
        health.set_ready("mongodb");
        assert_eq!(health.readiness(), Ok(()));
        health.set_not_ready("kafka", "broker unreachable");
        assert_eq!(health.readiness(), Err(vec!["kafka: broker unreachable".to_string()]));
        health.set_ready("kafka");
        health.note("index a.b x_1", Some("duplicate keys".into()));
        assert_eq!(health.readiness(), Ok(()), "a note does not make the service unready");
        assert_eq!(health.notes(), vec!["index a.b x_1: duplicate keys".to_string()]);
        health.note("index a.b x_1", None);
        assert!(health.notes().is_empty());
        let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let state = failing.clone();
        health.declare_probe("aws-credentials", move || {
            if state.load(Ordering::Relaxed) {
                Err("expired".into())
            } else {
                Ok(())
            }
        });
        assert_eq!(health.readiness(), Err(vec!["aws-credentials: expired".to_string()]), "asked at every check");
        failing.store(false, Ordering::Relaxed);
        assert_eq!(health.readiness(), Ok(()));
        assert_eq!(health.role(), None);
        health.set_role("standby");
        assert_eq!((health.role().as_deref(), health.readiness()), (Some("standby"), Ok(())), "a standby is ready");
    }

    #[test]
    fn a_shared_component_is_ready_only_while_none_of_its_writers_fails() {
        let health = Health::new();
        health.set_ready("kafka");
        health.set_for("target-writes", "t/0", Err("refused".into()));
        health.set_for("target-writes", "t/1", Ok(()));
        assert_eq!(health.readiness(), Err(vec!["target-writes (t/0): refused".to_string()]), "t/1 hides nothing");
        health.set_for("target-writes", "t/1", Err("timeout".into()));
        health.set_for("target-writes", "t/0", Ok(()));
        assert_eq!(health.readiness(), Err(vec!["target-writes (t/1): timeout".to_string()]));
        health.forget_writer("t/1");
        assert_eq!(health.readiness(), Ok(()), "a writer that went away is forgotten");
    }

    #[test]
    fn liveness_follows_loop_beats() {
        let health = Health::new();
        let beat = health.register_loop("stream", Duration::from_millis(30));
        assert_eq!(health.liveness(), Ok(()));
        std::thread::sleep(Duration::from_millis(60));
        assert!(health.liveness().is_err());
        beat.beat();
        assert_eq!(health.liveness(), Ok(()));
        std::thread::sleep(Duration::from_millis(60));
        drop(beat);
        assert_eq!(health.liveness(), Ok(()), "a finished loop is not a stalled one");
    }
}
