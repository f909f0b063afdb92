//! A capture's configured start (`capture.start_after_cluster_time`): a capture without a
//! checkpoint streams the changes after a given source cluster time, without a snapshot. A
//! failback's reverse capture starts right after the new primary's promotion, and the original
//! direction again after the switch back (docs/operations.md, section 15): the other side already
//! holds everything before that time, so nothing is copied. `startAtOperationTime` opens the
//! stream there, which Amazon DocumentDB has too. The setting read and checked here; the plan it
//! leads to is `delivery::checkpoint::configured_start`. Pure.

use envelope::ClusterTime;

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

/// What is wrong with the setting `start_after_cluster_time` (for `Config::validate`), given
/// whether `snapshot.mode` is `never`.
pub fn problems(start_after_cluster_time: &str, snapshot_never: bool) -> Vec<String> {
    match parse(start_after_cluster_time) {
        Err(e) => vec![format!("capture.start_after_cluster_time: {e}")],
        Ok(Some(_)) if !snapshot_never => {
            vec!["capture.start_after_cluster_time needs snapshot.mode = \"never\": the capture starts from that time \
             instead of a copy"
                .into()]
        }
        Ok(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(problems("10:1", true), Vec::<String>::new());
        assert_eq!(problems("10:1", false).len(), 1, "with a snapshot");
        assert_eq!(problems("yesterday", true).len(), 1);
    }
}
