//! `sink-writer doctor`: the target deployment and write permission there, what an Amazon
//! DocumentDB target will not carry of the source's collections (read through
//! `verify.source_uri`), Kafka, the topics the configuration selects (with their partition
//! counts, the ceiling on useful replicas) and the dead-letter topic, and the transform rules
//! `verify` reads the source through.

use regex::Regex;
use service_kit::connect::{Compat, MongoConnection};
use service_kit::doctor::{self, Report};
use service_kit::documentdb_fit;

use crate::config::Config;
use crate::consume::subscription::Subscription;

/// Runs every check; the report says what blocks the service.
pub async fn run(config: Config) -> Report {
    let mut report = Report::default();
    if let Some(client) = doctor::mongo(&mut report, "target mongodb", &config.mongo, config.apply.compat).await {
        let db = &config.apply.metadata_database;
        match doctor::can_write(&client, db, "doctor").await {
            Ok(()) => report.ok("target writes", format!("insert and delete allowed (probed in {db}.doctor)")),
            Err(e) => report.fail("target writes", format!("cannot write to {db}: {e}")),
        }
    }
    documentdb_target(&mut report, &config).await;
    transforms(&mut report, &config);
    let Some(topics) = doctor::kafka(&mut report, &config.kafka).await else { return report };
    let selected = select(&config, &topics);
    match selected {
        Err(e) => report.fail("topics", e),
        Ok(found) if found.is_empty() => report.warn(
            "topics",
            format!("nothing matches {:?} yet (subscribed patterns pick up new topics)", config.consume.topics),
        ),
        Ok(found) => {
            record_limits(&mut report, &config, &found).await;
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
    if Subscription::new(&config.consume.topics, dlq).is_ok_and(|s| s.matches_dead_letter_topic()) {
        report.warn(
            "dead-letter topic",
            format!("consume.topics matches {dlq}: it is never read (a refused record would loop), but a name outside the pattern is clearer"),
        );
    }
    if topics.iter().any(|(name, _)| name == dlq) {
        report.ok("dead-letter topic", format!("{dlq} present"));
    } else {
        report.ok("dead-letter topic", format!("{dlq} absent: created on start (needs Create permission)"));
    }
    report
}

/// On an Amazon DocumentDB target (by `apply.compat`, or its host's name): what it will not carry
/// of the source collections `verify.include` / `exclude` select, one line per collection. What
/// is left out or not built is a warning; documents it cannot store would be dead-lettered, data
/// the target never gets: a blocker.
async fn documentdb_target(report: &mut Report, config: &Config) {
    if config.apply.compat.resolve(config.mongo.uri.expose()) != Compat::Documentdb {
        return;
    }
    if config.verify.source_uri.expose().is_empty() {
        return report.ok(
            "documentdb target",
            "not compared with the source: set verify.source_uri (a read-only user there) to list what this \
             DocumentDB target will not carry",
        );
    }
    let anchored = |pattern: &str| (!pattern.is_empty()).then(|| Regex::new(&format!("^(?:{pattern})$")));
    let (include, exclude) =
        match (anchored(&config.verify.include).transpose(), anchored(&config.verify.exclude).transpose()) {
            (Ok(include), Ok(exclude)) => (include, exclude),
            (Err(e), _) | (_, Err(e)) => {
                return report.fail("documentdb target", format!("verify.include / exclude: {e}"))
            }
        };
    let connection = MongoConnection { uri: config.verify.source_uri.clone(), ..config.mongo.clone() };
    let Some(source) = doctor::mongo(report, "source mongodb", &connection, config.apply.compat).await else { return };
    let metadata = &config.apply.metadata_database;
    let wanted = |db: &str, coll: &str| {
        let name = format!("{db}.{coll}");
        include.as_ref().is_none_or(|r| r.is_match(&name)) && !exclude.as_ref().is_some_and(|r| r.is_match(&name))
    };
    match documentdb_fit::survey(&source, |db| db != metadata, wanted).await {
        Ok(fits) => documentdb_fit::report(report, &fits, "", true),
        Err(e) => report
            .warn("documentdb target", format!("cannot read the source's collections: {}", doctor::explain_mongo(&e))),
    }
}

/// The contract on record size: every record the topics may hold is one this service can always
/// fetch (a larger one would stall every partition of the consumer).
async fn record_limits(report: &mut Report, config: &Config, topics: &[(String, usize)]) {
    let limit = config.consume.max_record_bytes;
    let names: Vec<&str> = topics.iter().map(|(name, _)| name.as_str()).collect();
    match doctor::topic_record_limits(&config.kafka, &names).await {
        Err(e) => report.warn("record size", format!("cannot read topic configurations: {e}")),
        Ok(limits) => {
            let large: Vec<String> = limits
                .iter()
                .filter(|(_, bytes)| *bytes > limit)
                .map(|(name, bytes)| format!("{name} ({bytes})"))
                .collect();
            if large.is_empty() {
                report.ok(
                    "record size",
                    format!("records up to consume.max_record_bytes ({limit}) are fetched; no topic takes larger ones"),
                );
            } else {
                report.fail(
                    "record size",
                    format!(
                        "{} take records larger than consume.max_record_bytes ({limit}): such a record could not be \
                         fetched; raise consume.max_record_bytes to cdc-source's delivery.max_message_bytes",
                        large.join(", ")
                    ),
                );
            }
        }
    }
}

/// The existing topics the configuration selects (never the dead-letter topic).
fn select(config: &Config, topics: &[(String, usize)]) -> Result<Vec<(String, usize)>, String> {
    let subscription = Subscription::new(&config.consume.topics, &config.consume.dead_letter_topic)
        .map_err(|e| format!("consume.topics: not a valid pattern: {e}"))?;
    Ok(topics.iter().filter(|(name, _)| subscription.reads(name)).cloned().collect())
}

/// The `[transforms]` rules `verify` applies to the source, one line per rule.
fn transforms(report: &mut Report, config: &Config) {
    match transform::Rules::load(&config.transforms) {
        Ok(rules) => {
            for rule in rules.all() {
                report.ok("transforms", format!("verify: '{}': {}", rule.namespaces, rule.describe().join("; ")));
            }
        }
        Err(problems) => report.fail("transforms", problems.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_patterns_select_topics_but_never_the_dead_letter_topic() {
        let topics = vec![
            ("cdc.a.x".to_string(), 4),
            ("cdc.b.y".to_string(), 2),
            ("other".to_string(), 1),
            ("cdc.dlq".to_string(), 1),
        ];
        let mut config = Config::default();
        config.consume.dead_letter_topic = "cdc.dlq".into();
        config.consume.topics = vec!["^cdc\\..*".to_string()];
        assert_eq!(select(&config, &topics).expect("valid").len(), 2);
        config.consume.topics = vec!["other".to_string()];
        assert_eq!(select(&config, &topics).expect("valid"), vec![("other".to_string(), 1)]);
        config.consume.topics = vec!["^(".to_string()];
        assert!(select(&config, &topics).is_err());
    }
}
