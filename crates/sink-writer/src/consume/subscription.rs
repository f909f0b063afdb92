//! Which topics this service reads: the configured names and `^regex` patterns, resolved
//! against the cluster's topics by this service (not by the Kafka client), so that the
//! dead-letter topic and Kafka's internal topics are never read, whatever the patterns say. A
//! sink reading its own dead-letter topic would refuse a poison record, write it there again,
//! read it again: a loop. Pure.

use std::collections::BTreeSet;

use regex::Regex;

#[derive(Debug, Clone)]
pub struct Subscription {
    names: BTreeSet<String>,
    patterns: Vec<Regex>,
    dead_letter_topic: String,
}

impl Subscription {
    /// `topics` as configured: names, and regular expressions starting with `^` (matched as
    /// librdkafka matches them: anywhere after the anchor the pattern sets).
    pub fn new(topics: &[String], dead_letter_topic: &str) -> Result<Self, regex::Error> {
        let mut names = BTreeSet::new();
        let mut patterns = Vec::new();
        for topic in topics {
            if topic.starts_with('^') {
                patterns.push(Regex::new(topic)?);
            } else {
                names.insert(topic.clone());
            }
        }
        Ok(Self { names, patterns, dead_letter_topic: dead_letter_topic.to_string() })
    }

    /// Whether this service reads `topic`.
    pub fn reads(&self, topic: &str) -> bool {
        topic != self.dead_letter_topic
            && (self.names.contains(topic)
                || (!topic.starts_with("__") && self.patterns.iter().any(|p| p.is_match(topic))))
    }

    /// Whether a pattern (or a name) would take in the dead-letter topic: worth a warning.
    pub fn matches_dead_letter_topic(&self) -> bool {
        self.names.contains(&self.dead_letter_topic)
            || self.patterns.iter().any(|p| p.is_match(&self.dead_letter_topic))
    }

    /// The topics to subscribe to, given those the cluster has: every configured name (it may
    /// not exist yet) and every existing topic a pattern matches; never the dead-letter topic.
    pub fn resolve<'a>(&self, existing: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        let mut topics: BTreeSet<String> = self.names.iter().filter(|t| self.reads(t)).cloned().collect();
        if !self.patterns.is_empty() {
            topics.extend(existing.into_iter().filter(|t| self.reads(t)).map(str::to_string));
        }
        topics
    }

    /// Whether the list depends on the cluster's topics (a pattern is configured).
    pub fn has_patterns(&self) -> bool {
        !self.patterns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_never_take_the_dead_letter_topic_or_internal_topics() {
        let sub = Subscription::new(&["^demo\\..*".into(), "other".into()], "demo.dlq").expect("valid");
        let existing = ["demo.shop.orders", "demo.dlq", "__consumer_offsets", "demo.shop.carts", "unrelated"];
        let resolved: Vec<String> = sub.resolve(existing).into_iter().collect();
        assert_eq!(resolved, vec!["demo.shop.carts", "demo.shop.orders", "other"]);
        assert!(sub.matches_dead_letter_topic(), "worth a warning at start");
        assert!(!sub.reads("demo.dlq"));
        assert!(sub.reads("other"), "a configured name is read even before it exists");
    }

    #[test]
    fn names_alone_need_no_cluster_listing() {
        let sub = Subscription::new(&["a".into(), "b".into()], "a-dlq").expect("valid");
        assert!(!sub.has_patterns());
        assert!(!sub.matches_dead_letter_topic());
        assert_eq!(sub.resolve([]).len(), 2);
    }
}
