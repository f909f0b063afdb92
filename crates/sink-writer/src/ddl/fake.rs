//! Unit tests' DDL log and target catalog, in memory (test builds only). Each call does what its query does on the
//! server (an upsert with `$addToSet` and `$setOnInsert`, a conditional claim, a step fixed only
//! once), atomically, so partition tasks racing over one entry meet the same rules as on the
//! server. Faults are injected by the test: the next calls fail as a network would.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bson::{doc, Bson, DateTime, Document};
use envelope::{Ddl, Namespace};
use futures::future::BoxFuture;

use crate::ddl::catalog::Catalog;
use crate::ddl::log::Log;
use crate::error::{Common, Error, Failure};

#[derive(Default)]
struct State {
    /// Entries by `_id`.
    entries: BTreeMap<String, Document>,
    /// Calls still to fail as a network would.
    fail_next: usize,
    /// Every call received, by the context its errors carry.
    calls: Vec<&'static str>,
}

/// The DDL log, in memory; its clones share it.
#[derive(Default, Clone)]
pub struct FakeLog {
    state: Arc<Mutex<State>>,
}

impl FakeLog {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next `n` calls fail before reaching the log (a network error, an election).
    pub fn fail_next(&self, n: usize) {
        self.lock().fail_next = n;
    }

    /// The entry `id` as the log holds it.
    pub fn get(&self, id: &str) -> Option<Document> {
        self.lock().entries.get(id).cloned()
    }

    /// Sets `fields` in the entry `id` as another replica would.
    pub fn set(&self, id: &str, fields: Document) {
        self.lock().entries.entry(id.to_string()).or_insert_with(|| doc! {"_id": id}).extend(fields);
    }

    /// How many calls were made with this context (`"claim ddl"`, `"mark ddl applied"`, …).
    pub fn calls(&self, context: &str) -> usize {
        self.lock().calls.iter().filter(|c| **c == context).count()
    }

    /// One call: counted, failed if a fault is due, else `op` on the entries.
    fn call<T: Send + 'static>(
        &self,
        context: &'static str,
        op: impl FnOnce(&mut BTreeMap<String, Document>) -> T,
    ) -> BoxFuture<'static, Result<T, Error>> {
        let mut state = self.lock();
        state.calls.push(context);
        let outcome = if state.fail_next > 0 {
            state.fail_next -= 1;
            Err(Error::Common(Common::Mongo(Failure::retriable(context, "connection reset (injected)"))))
        } else {
            Ok(op(&mut state.entries))
        };
        Box::pin(async move { outcome })
    }
}

fn add_to_set(entry: &mut Document, field: &str, value: Bson) {
    let set = match entry.get_array_mut(field) {
        Ok(set) => set,
        Err(_) => {
            entry.insert(field, Vec::<Bson>::new());
            entry.get_array_mut(field).expect("just inserted")
        }
    };
    if !set.contains(&value) {
        set.push(value);
    }
}

impl Log for FakeLog {
    fn arrive<'a>(
        &'a self,
        id: &'a str,
        arrival: &'a str,
        offset: i64,
        new: Document,
    ) -> BoxFuture<'a, Result<Option<Document>, Error>> {
        self.call("record ddl arrival", |entries| {
            let entry = entries.entry(id.to_string()).or_insert_with(|| {
                let mut created = doc! {"_id": id};
                created.extend(new);
                created
            });
            add_to_set(entry, "arrived", arrival.into());
            add_to_set(entry, "arrivals", doc! {"at": arrival, "offset": offset}.into());
            Some(entry.clone())
        })
    }

    fn entry<'a>(&'a self, id: &'a str, context: &'static str) -> BoxFuture<'a, Result<Option<Document>, Error>> {
        self.call(context, |entries| entries.get(id).cloned())
    }

    fn claim<'a>(
        &'a self,
        id: &'a str,
        by: &'a str,
        now: DateTime,
        until: DateTime,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        self.call("claim ddl", |entries| {
            let Some(entry) = entries.get_mut(id) else { return false };
            let applied = entry.get_bool("applied").unwrap_or(false);
            let held = entry.get_datetime("claimed_until").is_ok_and(|held_until| *held_until >= now);
            if applied || held {
                return false;
            }
            entry.insert("claimed_by", by);
            entry.insert("claimed_until", until);
            true
        })
    }

    fn fix_step<'a>(&'a self, id: &'a str, step: &'static str) -> BoxFuture<'a, Result<(), Error>> {
        self.call("record ddl step", |entries| {
            if let Some(entry) = entries.get_mut(id).filter(|e| !e.contains_key("step")) {
                entry.insert("step", step);
            }
        })
    }

    fn mark<'a>(&'a self, id: &'a str, fields: Document) -> BoxFuture<'a, Result<(), Error>> {
        self.call("mark ddl applied", |entries| {
            if let Some(entry) = entries.get_mut(id) {
                entry.extend(fields);
            }
        })
    }

    fn applied<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<Vec<Document>, Error>> {
        self.call("read applied ddl", |entries| {
            entries
                .values()
                .filter(|e| e.get_bool("applied") == Ok(true))
                .filter(|e| e.get("group").is_none_or(|g| g.as_str() == Some(group)))
                .cloned()
                .collect()
        })
    }

    fn arrivals<'a>(&'a self, group: &'a str, arrival: &'a str) -> BoxFuture<'a, Result<Vec<Document>, Error>> {
        self.call("read ddl arrivals", |entries| {
            entries
                .values()
                .filter(|e| e.get_str("group") == Ok(group))
                .filter(|e| {
                    e.get_array("arrivals").is_ok_and(|a| {
                        a.iter().any(|a| a.as_document().is_some_and(|a| a.get_str("at") == Ok(arrival)))
                    })
                })
                .map(|e| {
                    let mut projected = doc! {"_id": e.get("_id").cloned().unwrap_or(Bson::Null)};
                    projected.insert("arrivals", e.get("arrivals").cloned().unwrap_or(Bson::Null));
                    projected
                })
                .collect()
        })
    }
}

/// `db.coll` as a namespace.
pub fn ns(name: &str) -> Namespace {
    let (db, coll) = name.split_once('.').expect("db.coll");
    Namespace::new(db, coll)
}

#[derive(Default)]
struct Catalogued {
    collections: std::collections::BTreeSet<Namespace>,
    /// Calls still to fail as a network would.
    fail_next: usize,
    /// What renames answer: refused for good, with this reason.
    refuse_renames: Option<String>,
    /// Every command that reached the catalog (`drop a.b`, `rename a.b a.c`, `change create a.b`, …).
    commands: Vec<String>,
}

/// The target's catalog, in memory: collections by namespace; renames, drops and schema
/// changes as the server does them (idempotent); faults injected by the test. Its clones
/// share it.
#[derive(Default, Clone)]
pub struct FakeCatalog {
    state: Arc<Mutex<Catalogued>>,
}

impl FakeCatalog {
    pub fn with(collections: &[&str]) -> Self {
        let catalog = Self::default();
        catalog.lock().collections = collections.iter().map(|name| ns(name)).collect();
        catalog
    }

    fn lock(&self) -> MutexGuard<'_, Catalogued> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The collections the target has, as `db.coll`.
    pub fn collections_now(&self) -> Vec<String> {
        self.lock().collections.iter().map(ToString::to_string).collect()
    }

    /// The commands that changed the catalog, in order (reads are not listed).
    pub fn commands(&self) -> Vec<String> {
        self.lock().commands.clone()
    }

    /// The next `n` calls fail before reaching the target (a network error, an election).
    pub fn fail_next(&self, n: usize) {
        self.lock().fail_next = n;
    }

    /// Every rename is refused for good with `reason` (as a target refuses a cross-database one).
    pub fn refuse_renames(&self, reason: &str) {
        self.lock().refuse_renames = Some(reason.to_string());
    }

    fn call<T: Send + 'static>(
        &self,
        context: &'static str,
        op: impl FnOnce(&mut Catalogued) -> T,
    ) -> BoxFuture<'static, Result<T, Error>> {
        let mut state = self.lock();
        let outcome = if state.fail_next > 0 {
            state.fail_next -= 1;
            Err(Error::Common(Common::Mongo(Failure::retriable(context, "connection reset (injected)"))))
        } else {
            Ok(op(&mut state))
        };
        Box::pin(async move { outcome })
    }
}

impl Catalog for FakeCatalog {
    fn exists<'a>(&'a self, ns: &'a Namespace) -> BoxFuture<'a, Result<bool, Error>> {
        self.call("list collections", |s| s.collections.contains(ns))
    }

    fn drop_collection<'a>(&'a self, ns: &'a Namespace) -> BoxFuture<'a, Result<(), Error>> {
        self.call("drop collection", |s| {
            s.commands.push(format!("drop {ns}"));
            s.collections.remove(ns);
        })
    }

    fn collections<'a>(&'a self, db: &'a str) -> BoxFuture<'a, Result<Vec<String>, Error>> {
        self.call("list collections", |s| {
            s.collections.iter().filter(|ns| ns.db == db).map(|ns| ns.coll.clone()).collect()
        })
    }

    fn drop_database<'a>(&'a self, db: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        self.call("drop database", |s| {
            s.commands.push(format!("dropDatabase {db}"));
            s.collections.retain(|ns| ns.db != db);
        })
    }

    fn rename<'a>(&'a self, from: &'a Namespace, to: &'a Namespace) -> BoxFuture<'a, Result<Option<String>, Error>> {
        self.call("rename collection", |s| {
            s.commands.push(format!("rename {from} {to}"));
            if let Some(reason) = &s.refuse_renames {
                return Some(format!("rename {from} to {to}: {reason}"));
            }
            // Done already when `from` is gone; else `to` is replaced.
            if s.collections.remove(from) {
                s.collections.insert(to.clone());
            }
            None
        })
    }

    fn change<'a>(&'a self, ddl: &'a Ddl, target: &'a Namespace) -> BoxFuture<'a, Result<(), Error>> {
        self.call("schema change", |s| {
            s.commands.push(format!("change {} {target}", ddl.kind()));
            if matches!(ddl, Ddl::Create { .. }) {
                s.collections.insert(target.clone());
            }
        })
    }
}
