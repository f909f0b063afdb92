//! `sink-writer doctor`: the target deployment and write permission there, Kafka, the topics the
//! configuration selects (with their partition counts, the ceiling on useful replicas) and the
//! dead-letter topic.

use service_kit::doctor::{self, Report};

use crate::config::Config;

/// Runs every check; the report says what blocks the service.
pub async fn run(config: Config) -> Report {
    let mut report = Report::default();
    if let Some(client) = doctor::mongo(&mut report, "target mongodb", &config.mongo).await {
        let db = &config.apply.metadata_database;
        match doctor::can_write(&client, db, "doctor").await {
            Ok(()) => report.ok("target writes", format!("insert and delete allowed (probed in {db}.doctor)")),
            Err(e) => report.fail("target writes", format!("cannot write to {db}: {e}")),
        }
    }
    let Some(topics) = doctor::kafka(&mut report, &config.kafka).await else { return report };
    let selected = select(&config.consume.topics, &topics);
    match selected {
        Err(e) => report.fail("topics", e),
        Ok(found) if found.is_empty() => report.warn(
            "topics",
            format!("nothing matches {:?} yet (subscribed patterns pick up new topics)", config.consume.topics),
        ),
        Ok(found) => {
            let partitions: usize = found.iter().map(|(_, p)| p).sum();
            let names: Vec<String> = found.iter().map(|(n, p)| format!("{n} ({p})")).collect();
            report.ok(
                "topics",
                format!(
                    "{} selected, {partitions} partitions in all (replicas beyond that sit idle): {}",
                    found.len(),
                    names.join(", ")
                ),
            );
        }
    }
    let dlq = &config.consume.dead_letter_topic;
    if topics.iter().any(|(name, _)| name == dlq) {
        report.ok("dead-letter topic", format!("{dlq} present"));
    } else {
        report.ok("dead-letter topic", format!("{dlq} absent: created on start (needs Create permission)"));
    }
    report
}

/// The topics `patterns` (names, or `^regex`) select among `topics`.
fn select(patterns: &[String], topics: &[(String, usize)]) -> Result<Vec<(String, usize)>, String> {
    let mut matchers = Vec::new();
    for p in patterns {
        if p.starts_with('^') {
            matchers
                .push(regex::Regex::new(p).map_err(|e| format!("consume.topics: '{p}' is not a valid pattern: {e}"))?);
        } else {
            matchers.push(regex::Regex::new(&format!("^{}$", regex::escape(p))).map_err(|e| e.to_string())?);
        }
    }
    let mut found: Vec<(String, usize)> =
        topics.iter().filter(|(name, _)| matchers.iter().any(|m| m.is_match(name))).cloned().collect();
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_patterns_select_topics() {
        let topics = vec![("cdc.a.x".to_string(), 4), ("cdc.b.y".to_string(), 2), ("other".to_string(), 1)];
        let found = select(&["^cdc\\..*".to_string()], &topics).expect("valid");
        assert_eq!(found.len(), 2);
        assert_eq!(select(&["other".to_string()], &topics).expect("valid"), vec![("other".to_string(), 1)]);
        assert!(select(&["^(".to_string()], &topics).is_err());
    }
}
