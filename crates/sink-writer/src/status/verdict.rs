//! Whether to cut over, from what `status` gathered: every condition that fails, named. Pure.

use serde::Serialize;

/// The last verify as recorded in `<metadata_database>.verify`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyRecord {
    /// `full` (every document) or `sample`.
    pub mode: String,
    /// `all` (every namespace the configuration selects) or `namespaces` (`--namespace`).
    pub scope: String,
    /// `equal`, `different` or `unconfirmed`.
    pub outcome: String,
    pub differences: i64,
    pub unconfirmed: i64,
    pub age_seconds: i64,
}

impl VerifyRecord {
    /// Whether it compared every document of every namespace.
    pub fn is_full(&self) -> bool {
        self.mode == "full" && self.scope == "all"
    }
}

/// cdc-source's checkpoint, as read from its topic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckpointState {
    pub capture: String,
    pub topic: String,
    /// Seconds since it was written; none when none was found.
    pub age_seconds: Option<i64>,
    /// Why it could not be read.
    pub error: Option<String>,
}

/// What the verdict depends on.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Now minus the point's last complete second; none while the point is unknown.
    pub lag: Option<u64>,
    pub max_lag: u64,
    /// Partitions that keep the point unknown.
    pub unknown: Vec<String>,
    /// The last full verify (others do not count).
    pub verify: Option<VerifyRecord>,
    pub verify_max_age: u64,
    pub schema_conflicts: usize,
    pub ddl_waiting: usize,
    pub open_dead_letters: u64,
    pub checkpoints: Vec<CheckpointState>,
    pub checkpoint_max_age: u64,
}

/// Every condition for a cutover that fails now, one line each; empty: ready.
pub fn blockers(f: &Facts) -> Vec<String> {
    let mut found = Vec::new();
    match f.lag {
        None => found.push(match f.unknown.first() {
            Some(which) => format!(
                "no consistency point yet: {which} has passed no watermark ({} partitions unknown)",
                f.unknown.len()
            ),
            None => "no consistency point yet (does cdc-source write watermarks?)".to_string(),
        }),
        Some(lag) if lag > f.max_lag => found.push(format!("consistency lag {lag} s > {} s", f.max_lag)),
        Some(_) => {}
    }
    match &f.verify {
        None => found.push("no full verify of every namespace yet (--namespace and --sample do not count)".into()),
        Some(v) if v.age_seconds < 0 || v.age_seconds as u64 > f.verify_max_age => found.push(format!(
            "the last full verify is too old: {} s > {} s (status.verify_max_age_seconds)",
            v.age_seconds, f.verify_max_age
        )),
        Some(v) if v.outcome == "equal" => {}
        Some(v) if v.outcome == "unconfirmed" => found.push(format!(
            "the last full verify could not confirm {} differences (replication was not seen to pass them)",
            v.unconfirmed
        )),
        Some(v) => found.push(format!("the last full verify found {} differences", v.differences)),
    }
    if f.schema_conflicts > 0 {
        found.push(format!("schema changes the target refuses: {}", f.schema_conflicts));
    }
    if f.ddl_waiting > 0 {
        found.push(format!("{} DDL waiting at a barrier", f.ddl_waiting));
    }
    if f.open_dead_letters > 0 {
        let plural = if f.open_dead_letters == 1 { "" } else { "s" };
        found.push(format!("{} unresolved dead letter{plural} of this group", f.open_dead_letters));
    }
    if f.checkpoints.is_empty() {
        found.push("status.capture_names is not set: cdc-source's checkpoint cannot be checked".into());
    }
    for c in &f.checkpoints {
        match (&c.error, c.age_seconds) {
            (Some(e), _) => found.push(format!("cannot read the cdc-source checkpoint of '{}': {e}", c.capture)),
            (None, None) => found.push(format!("no cdc-source checkpoint of '{}' in {}", c.capture, c.topic)),
            (None, Some(age)) if age < 0 || age as u64 > f.checkpoint_max_age => found.push(format!(
                "the cdc-source checkpoint of '{}' is {age} s old (> {} s): is cdc-source running?",
                c.capture, f.checkpoint_max_age
            )),
            (None, Some(_)) => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> Facts {
        Facts {
            lag: Some(2),
            max_lag: 10,
            verify: Some(VerifyRecord {
                mode: "full".into(),
                scope: "all".into(),
                outcome: "equal".into(),
                differences: 0,
                unconfirmed: 0,
                age_seconds: 60,
            }),
            verify_max_age: 86_400,
            checkpoints: vec![CheckpointState {
                capture: "c".into(),
                topic: "__cdc_source.c.checkpoint".into(),
                age_seconds: Some(1),
                error: None,
            }],
            checkpoint_max_age: 60,
            ..Facts::default()
        }
    }

    #[test]
    fn ready_only_when_nothing_blocks_and_each_blocker_is_named_alone() {
        assert!(blockers(&ready()).is_empty());
        type Breaks = Box<dyn Fn(&mut Facts)>;
        let cases: Vec<(&str, Breaks)> = vec![
            ("consistency lag", Box::new(|f| f.lag = Some(11))),
            ("no consistency point", Box::new(|f| f.lag = None)),
            ("no full verify", Box::new(|f| f.verify = None)),
            ("too old", Box::new(|f| f.verify.as_mut().into_iter().for_each(|v| v.age_seconds = 86_401))),
            (
                "could not confirm",
                Box::new(|f| f.verify.as_mut().into_iter().for_each(|v| v.outcome = "unconfirmed".into())),
            ),
            (
                "found 0 differences",
                Box::new(|f| f.verify.as_mut().into_iter().for_each(|v| v.outcome = "different".into())),
            ),
            ("schema changes", Box::new(|f| f.schema_conflicts = 1)),
            ("DDL waiting", Box::new(|f| f.ddl_waiting = 2)),
            ("1 unresolved dead letter of", Box::new(|f| f.open_dead_letters = 1)),
            ("status.capture_names", Box::new(|f| f.checkpoints.clear())),
            ("is 61 s old", Box::new(|f| f.checkpoints[0].age_seconds = Some(61))),
            ("no cdc-source checkpoint", Box::new(|f| f.checkpoints[0].age_seconds = None)),
        ];
        for (named, break_it) in cases {
            let mut facts = ready();
            break_it(&mut facts);
            let found = blockers(&facts);
            assert_eq!(found.len(), 1, "{named}: {found:?}");
            assert!(found[0].contains(named), "{named}: {found:?}");
        }
    }
}
