//! Which namespaces are captured, and which topic each goes to. Pure.

use envelope::Namespace;
use regex::Regex;

use crate::config::{CaptureConfig, Scope, TopicConfig};
use crate::delivery::record::Target;

/// Decides whether a namespace is captured: scope first, then `include`, then `exclude`.
#[derive(Debug, Clone)]
pub struct NamespaceFilter {
    scope: Scope,
    database: String,
    collections: Vec<String>,
    include: Option<Regex>,
    exclude: Option<Regex>,
}

/// Databases that never hold user data.
const SYSTEM_DATABASES: [&str; 3] = ["admin", "config", "local"];

impl NamespaceFilter {
    /// Builds the filter; the patterns were checked by `Config::validate`.
    pub fn new(config: &CaptureConfig) -> Result<Self, regex::Error> {
        let compile = |pattern: &str| -> Result<Option<Regex>, regex::Error> {
            if pattern.is_empty() {
                Ok(None)
            } else {
                Regex::new(&format!("^(?:{pattern})$")).map(Some)
            }
        };
        Ok(Self {
            scope: config.scope,
            database: config.database.clone(),
            collections: config.collections.clone(),
            include: compile(&config.include)?,
            exclude: compile(&config.exclude)?,
        })
    }

    /// Whether a database can hold captured collections (for listing and `dropDatabase`).
    pub fn wants_database(&self, db: &str) -> bool {
        if SYSTEM_DATABASES.contains(&db) {
            return false;
        }
        match self.scope {
            Scope::Deployment => true,
            Scope::Database => db == self.database,
            Scope::Collections => self.collections.iter().any(|c| c.split_once('.').is_some_and(|(d, _)| d == db)),
        }
    }

    pub fn wants(&self, ns: &Namespace) -> bool {
        if !self.wants_database(&ns.db) || ns.coll.starts_with("system.") {
            return false;
        }
        let full = ns.to_string();
        if self.scope == Scope::Collections && !self.collections.contains(&full) {
            return false;
        }
        self.include.as_ref().is_none_or(|re| re.is_match(&full))
            && !self.exclude.as_ref().is_some_and(|re| re.is_match(&full))
    }
}

/// Maps a namespace to its topic.
#[derive(Debug, Clone)]
pub struct TopicRouter {
    prefix: String,
    single_topic: Option<String>,
}

impl TopicRouter {
    pub fn new(config: &TopicConfig) -> Self {
        Self {
            prefix: config.prefix.clone(),
            single_topic: (!config.single_topic.is_empty()).then(|| config.single_topic.clone()),
        }
    }

    /// `<prefix>.<db>.<coll>` (characters Kafka forbids become `_`), or the single topic.
    pub fn topic(&self, ns: &Namespace) -> String {
        if let Some(topic) = &self.single_topic {
            return topic.clone();
        }
        let raw = format!("{}.{}.{}", self.prefix, ns.db, ns.coll);
        let mut topic: String =
            raw.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
        topic.truncate(249);
        topic
    }

    /// Where a dropped database's markers go: every partition of the single topic, or of every
    /// topic named after the database's collections.
    /// Where a rename's markers go: every partition of the old and the new name's topics (one
    /// topic in single-topic mode).
    pub fn rename_target(&self, from: &Namespace, to: &Namespace) -> Target {
        let (from, to) = (self.topic(from), self.topic(to));
        if from == to {
            Target::AllPartitions(from)
        } else {
            Target::AllPartitionsOf(vec![from, to])
        }
    }

    pub fn database_target(&self, db: &str) -> Target {
        match &self.single_topic {
            Some(topic) => Target::AllPartitions(topic.clone()),
            None => Target::AllTopicsWithPrefix(self.topic(&Namespace::new(db, ""))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(scope: Scope, f: impl FnOnce(&mut CaptureConfig)) -> NamespaceFilter {
        let mut config = CaptureConfig { scope, ..CaptureConfig::default() };
        f(&mut config);
        NamespaceFilter::new(&config).expect("valid patterns")
    }

    #[test]
    fn scope_then_include_then_exclude_decide_what_is_captured() {
        let all = filter(Scope::Deployment, |_| {});
        assert!(all.wants(&Namespace::new("shop", "orders")));
        assert!(!all.wants(&Namespace::new("admin", "users")));
        assert!(!all.wants(&Namespace::new("shop", "system.views")));

        let db = filter(Scope::Database, |c| c.database = "shop".into());
        assert!(db.wants(&Namespace::new("shop", "orders")));
        assert!(!db.wants(&Namespace::new("other", "orders")));

        let colls = filter(Scope::Collections, |c| c.collections = vec!["shop.orders".into()]);
        assert!(colls.wants(&Namespace::new("shop", "orders")));
        assert!(!colls.wants(&Namespace::new("shop", "carts")));
        assert!(colls.wants_database("shop"));

        let patterns = filter(Scope::Deployment, |c| {
            c.include = r"shop\..*".into();
            c.exclude = r".*\.tmp_.*".into();
        });
        assert!(patterns.wants(&Namespace::new("shop", "orders")));
        assert!(!patterns.wants(&Namespace::new("shop", "tmp_1")));
        assert!(
            !patterns.wants(&Namespace::new("shopping", "orders")),
            "anchored: shop\\. is not a prefix of shopping"
        );
    }

    #[test]
    fn topics_follow_debezium_naming() {
        let router = TopicRouter::new(&TopicConfig::default());
        assert_eq!(router.topic(&Namespace::new("inventory", "products")), "cdc.inventory.products");
        assert_eq!(router.topic(&Namespace::new("in v", "a$b")), "cdc.in_v.a_b");
        assert_eq!(router.database_target("inventory"), Target::AllTopicsWithPrefix("cdc.inventory.".into()));
        let single = TopicRouter::new(&TopicConfig { single_topic: "all".into(), ..TopicConfig::default() });
        assert_eq!(single.topic(&Namespace::new("a", "b")), "all");
        assert_eq!(single.database_target("a"), Target::AllPartitions("all".into()));
        let (a, b) = (Namespace::new("shop", "a"), Namespace::new("shop", "b"));
        assert_eq!(
            router.rename_target(&a, &b),
            Target::AllPartitionsOf(vec!["cdc.shop.a".into(), "cdc.shop.b".into()])
        );
        assert_eq!(single.rename_target(&a, &b), Target::AllPartitions("all".into()));
    }
}
