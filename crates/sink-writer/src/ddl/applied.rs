//! Applied DDL by source namespace (`db.coll`, or `db.` for a whole database), remembered when
//! a barrier passes and read from the DDL log whenever partitions are assigned (a replica
//! taking a partition over must know what another applied): an event older than a drop or a
//! rename of its namespace is skipped when read again, instead of resurrecting documents.

use std::collections::HashMap;
use std::sync::Mutex;

use envelope::{ClusterTime, Namespace};

use crate::ddl::log::Log;
use crate::error::Error;

#[derive(Default)]
pub struct Applied(Mutex<HashMap<String, ClusterTime>>);

impl Applied {
    /// Remembers what `group` applied, as the log holds it.
    pub async fn load(&self, log: &dyn Log, group: &str) -> Result<(), Error> {
        let applied = log.applied(group).await?;
        for entry in applied {
            let Ok(ts) = entry.get_timestamp("cluster_time") else { continue };
            for scope in entry
                .get_array("scopes")
                .map(|s| s.iter().filter_map(|b| b.as_str()).collect())
                .unwrap_or_else(|_| entry.get_str("scope").map(|s| vec![s]).unwrap_or_default())
            {
                self.remember(scope, ts.into());
            }
        }
        Ok(())
    }

    pub fn remember(&self, scope: &str, at: ClusterTime) {
        let mut applied = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let entry = applied.entry(scope.to_string()).or_default();
        *entry = (*entry).max(at);
    }

    /// Whether an event of `ns` at `at` is older than DDL already applied to its namespace.
    pub fn obsolete(&self, ns: &Namespace, at: ClusterTime) -> bool {
        let applied = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Most of the time no DDL was applied: no names to build.
        !applied.is_empty()
            && [ns.to_string(), format!("{}.", ns.db)].iter().any(|scope| applied.get(scope).is_some_and(|t| at < *t))
    }
}

#[cfg(test)]
mod tests {
    use bson::{doc, Timestamp};

    use super::*;
    use crate::ddl::fake::FakeLog;

    fn at(t: u32) -> ClusterTime {
        ClusterTime { t, i: 1 }
    }

    #[tokio::test]
    async fn ddl_another_replica_applied_makes_older_events_of_its_namespaces_obsolete() {
        let log = FakeLog::default();
        let time = |t| Timestamp { time: t, increment: 1 };
        log.set("g|drop", doc! {"group": "g", "applied": true, "cluster_time": time(10), "scopes": ["db.people"]});
        log.set("g|dropDatabase", doc! {"group": "g", "applied": true, "cluster_time": time(20), "scopes": ["old."]});
        // Written before entries named their group: one scope, no list.
        log.set("rename", doc! {"applied": true, "cluster_time": time(30), "scope": "db.moved"});
        log.set("g|waiting", doc! {"group": "g", "cluster_time": time(40), "scopes": ["db.kept"]});
        log.set("h|drop", doc! {"group": "h", "applied": true, "cluster_time": time(50), "scopes": ["db.other"]});
        let applied = Applied::default();
        applied.load(&log, "g").await.expect("read");

        let obsolete = |db, coll, t| applied.obsolete(&Namespace::new(db, coll), at(t));
        assert!(obsolete("db", "people", 9) && !obsolete("db", "people", 11), "older than the drop only");
        assert!(obsolete("old", "any", 19), "a database's drop covers its collections");
        assert!(obsolete("db", "moved", 29));
        assert!(!obsolete("db", "kept", 39), "not applied yet");
        assert!(!obsolete("db", "other", 49), "another group's DDL");
    }

    #[test]
    fn the_newest_applied_ddl_of_a_namespace_counts() {
        let applied = Applied::default();
        assert!(!applied.obsolete(&Namespace::new("db", "people"), at(1)), "nothing applied");
        applied.remember("db.people", at(10));
        applied.remember("db.people", at(5));
        assert!(applied.obsolete(&Namespace::new("db", "people"), at(9)));
    }
}
