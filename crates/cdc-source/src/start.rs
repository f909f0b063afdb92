//! A capture's configured start (`capture.start_after_cluster_time`): a capture without a
//! checkpoint streams the changes after a given source cluster time, without a snapshot. A
//! failback's reverse capture starts right after the new primary's promotion, and the original
//! direction again after the switch back (docs/operations.md, section 15): the other side already
//! holds everything before that time, so nothing is copied. `startAtOperationTime` opens the
//! stream there, which Amazon DocumentDB has too. Pure.

use envelope::ClusterTime;

use crate::config::{CaptureConfig, SnapshotMode};
use crate::delivery::checkpoint::{Checkpoint, Plan};

/// `"<seconds>:<increment>"` as a cluster time; empty text is none.
pub fn parse(text: &str) -> Result<Option<ClusterTime>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let (t, i) = text.split_once(':').ok_or_else(|| format!("'{text}' is not of the form <seconds>:<increment>"))?;
    let number = |part: &str, what: &str| {
        part.trim().parse::<u32>().map_err(|e| format!("'{text}': the {what} '{part}' is not a number: {e}"))
    };
    Ok(Some(ClusterTime { t: number(t, "seconds")?, i: number(i, "increment")? }))
}

/// What is wrong with the setting (for `Config::validate`).
pub fn problems(capture: &CaptureConfig, mode: SnapshotMode) -> Vec<String> {
    match parse(&capture.start_after_cluster_time) {
        Err(e) => vec![format!("capture.start_after_cluster_time: {e}")],
        Ok(Some(_)) if mode != SnapshotMode::Never => {
            vec!["capture.start_after_cluster_time needs snapshot.mode = \"never\": the capture starts from that time \
             instead of a copy"
                .into()]
        }
        Ok(_) => Vec::new(),
    }
}

/// The plan once the configured start is taken into account: a capture that has no checkpoint
/// yet streams after `configured`; one with a checkpoint follows it (`planned`).
pub fn plan(stored: Option<&Checkpoint>, configured: Option<ClusterTime>, planned: Plan) -> Plan {
    match (stored, configured) {
        (None, Some(at)) => Plan::StartAfter(at),
        _ => planned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::checkpoint::SnapshotState;

    #[test]
    fn a_cluster_time_is_seconds_and_increment() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse(" 1718000000:7 "), Ok(Some(ClusterTime { t: 1_718_000_000, i: 7 })));
        assert!(parse("1718000000.7").is_err(), "a decimal point would be ambiguous");
        assert!(parse("x:1").is_err());
        assert!(parse("1:-1").is_err());
    }

    #[test]
    fn the_start_needs_no_snapshot() {
        let mut capture = CaptureConfig { start_after_cluster_time: "10:1".into(), ..CaptureConfig::default() };
        assert_eq!(problems(&capture, SnapshotMode::Never), Vec::<String>::new());
        assert_eq!(problems(&capture, SnapshotMode::Initial).len(), 1);
        capture.start_after_cluster_time = "yesterday".into();
        assert_eq!(problems(&capture, SnapshotMode::Never).len(), 1);
    }

    #[test]
    fn only_a_capture_without_a_checkpoint_starts_there() {
        let at = ClusterTime { t: 10, i: 1 };
        assert_eq!(plan(None, Some(at), Plan::StartNow), Plan::StartAfter(at));
        assert_eq!(plan(None, None, Plan::StartNow), Plan::StartNow);
        let stored = Checkpoint::default();
        let snapshot = Plan::Snapshot(SnapshotState::default());
        assert_eq!(plan(Some(&stored), Some(at), snapshot.clone()), snapshot, "the checkpoint wins");
    }
}
