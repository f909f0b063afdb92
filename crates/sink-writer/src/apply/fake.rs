//! Unit tests' target and dead-letter topic, in memory (test builds only). The fake target runs
//! the `insert`, `update` and `delete` commands the writer builds (replacements, upserts,
//! `$set`/`$unset`, deletes by key) against documents it holds, enforces unique indexes as the
//! server does (a write error 11000 with `keyValue`), and replies as the server does, so what
//! the writer reads from a reply is tested too. Faults are injected by the test: the next
//! commands fail as a network would, a statement is refused for good or makes its whole command
//! fail, a reply loses its write errors' `index` or says the write concern was not met, the
//! target says it lacks every document.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bson::{doc, Bson, Document, RawDocumentBuf};
use envelope::Namespace;
use futures::future::BoxFuture;
use prometheus::IntCounter;
use service_kit::health::Health;

use crate::apply::retry::Retrier;
use crate::apply::round::{Destination, Writes};
use crate::apply::target::{CommandError, Target};
use crate::apply::write_plan::{identity, Action, DocKey, WriteOp};
use crate::apply::writer::Writer;
use crate::consume::fence::{Fence, Owner, StandStill};
use crate::dead_letters::{Letter, Recorder};
use crate::dlq::{DeadLetterTopic, Origin};
use crate::error::{Common, Error, Failure};
use crate::metrics::Metrics;

/// The code a poisoned statement is refused with (BadValue).
pub const POISON_CODE: i32 = 2;

#[derive(Default)]
struct State {
    /// Documents per `db.coll`, in insertion order.
    docs: HashMap<String, Vec<Document>>,
    /// Unique secondary indexes: `db.coll` → fields.
    unique: HashMap<String, Vec<String>>,
    /// Commands still to fail as a network would.
    fail_next: usize,
    /// Replies still to lose their write errors' `index`.
    drop_index_next: usize,
    /// Replies still to carry a `writeConcernError` (the statements applied, not yet durable).
    write_concern_error_next: usize,
    /// `_id`s (as identities) whose statements are refused for good.
    poison: HashSet<String>,
    /// `_id`s whose statements make their whole command fail for good.
    command_poison: HashSet<String>,
    /// Whether `present` answers that no document exists.
    blind: bool,
    /// Every command received: name and its statements' `_id`s.
    commands: Vec<(String, Vec<Bson>)>,
    /// Every statement that changed a document: `_id` and the document after it (`None`: deleted).
    applied: Vec<(Bson, Option<Document>)>,
}

/// The target, in memory.
#[derive(Default)]
pub struct FakeTarget {
    state: Mutex<State>,
}

impl FakeTarget {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn unique_index(&self, ns: &Namespace, field: &str) {
        self.lock().unique.entry(ns.to_string()).or_default().push(field.to_string());
    }

    /// Puts a document as another writer of the target would (no unique check).
    pub fn put(&self, ns: &Namespace, document: Document) {
        let mut state = self.lock();
        let docs = state.docs.entry(ns.to_string()).or_default();
        let id = document.get("_id").cloned();
        docs.retain(|d| d.get("_id") != id.as_ref());
        docs.push(document);
    }

    pub fn get(&self, ns: &Namespace, id: impl Into<Bson>) -> Option<Document> {
        let id = id.into();
        self.lock().docs.get(&ns.to_string())?.iter().find(|d| d.get("_id") == Some(&id)).cloned()
    }

    /// The next `n` commands fail before reaching any document (a network error, an election).
    pub fn fail_next(&self, n: usize) {
        self.lock().fail_next = n;
    }

    /// The next `n` replies carrying write errors lose their `index`.
    pub fn drop_index_next(&self, n: usize) {
        self.lock().drop_index_next = n;
    }

    /// The next `n` commands apply their statements, but their replies say the write concern
    /// was not met.
    pub fn write_concern_error_next(&self, n: usize) {
        self.lock().write_concern_error_next = n;
    }

    /// Every statement on this `_id` is refused for good (a write error).
    pub fn poison(&self, id: impl Into<Bson>) {
        self.lock().poison.insert(key(&id.into()));
    }

    /// Every command holding a statement on this `_id` is refused for good as a whole.
    pub fn poison_command(&self, id: impl Into<Bson>) {
        self.lock().command_poison.insert(key(&id.into()));
    }

    /// `present` answers that no document exists (another writer added them meanwhile).
    pub fn blind(&self) {
        self.lock().blind = true;
    }

    pub fn commands(&self) -> Vec<(String, Vec<Bson>)> {
        self.lock().commands.clone()
    }

    /// The states one document went through, in order (`None`: deleted).
    pub fn history(&self, id: impl Into<Bson>) -> Vec<Option<Document>> {
        let id = id.into();
        self.lock().applied.iter().filter(|(i, _)| *i == id).map(|(_, d)| d.clone()).collect()
    }

    fn run(&self, db: &str, name: &str, command: &Document) -> Result<Document, CommandError> {
        let mut state = self.lock();
        let coll = command.get_str(name).map_err(|e| refused(&format!("no collection: {e}")))?;
        let ns = format!("{db}.{coll}");
        let list = match name {
            "insert" => "documents",
            "update" => "updates",
            _ => "deletes",
        };
        let statements: Vec<Document> = command
            .get_array(list)
            .map_err(|e| refused(&format!("no {list}: {e}")))?
            .iter()
            .filter_map(|s| s.as_document().cloned())
            .collect();
        let ids: Vec<Bson> = statements.iter().map(|s| statement_id(name, s)).collect();
        state.commands.push((name.to_string(), ids.clone()));
        if state.fail_next > 0 {
            state.fail_next -= 1;
            return Err(CommandError::Failed(Error::Common(Common::Mongo(Failure::retriable(
                name,
                "connection reset (injected)",
            )))));
        }
        if let Some(id) = ids.iter().find(|id| state.command_poison.contains(&key(id))) {
            return Err(CommandError::Refused { code: POISON_CODE, reason: format!("command refused for {id}") });
        }
        let mut errors = Vec::new();
        let mut n = 0;
        for (index, (statement, id)) in statements.iter().zip(&ids).enumerate() {
            let index = i32::try_from(index).unwrap_or(i32::MAX);
            let outcome = if state.poison.contains(&key(id)) {
                Err((POISON_CODE, "poison (injected)".to_string(), None))
            } else {
                state.statement(&ns, name, statement)
            };
            match outcome {
                Ok(changed) => n += i32::from(changed),
                Err((code, errmsg, key_value)) => {
                    let mut error = doc! {"index": index, "code": code, "errmsg": errmsg};
                    if let Some(key_value) = key_value {
                        error.insert("keyValue", key_value);
                    }
                    errors.push(error);
                }
            }
        }
        let mut reply = doc! {"n": n, "ok": 1.0};
        if !errors.is_empty() {
            if state.drop_index_next > 0 {
                state.drop_index_next -= 1;
                for error in &mut errors {
                    error.remove("index");
                }
            }
            reply.insert("writeErrors", errors);
        }
        if state.write_concern_error_next > 0 {
            state.write_concern_error_next -= 1;
            reply.insert("writeConcernError", doc! {"code": 64, "errmsg": "waiting for replication timed out"});
        }
        Ok(reply)
    }
}

/// A write error: code, message, the unique index's `keyValue`.
type WriteError = (i32, String, Option<Document>);

impl State {
    /// One statement; whether it changed a document.
    fn statement(&mut self, ns: &str, name: &str, statement: &Document) -> Result<bool, WriteError> {
        let docs = self.docs.get(ns).cloned().unwrap_or_default();
        let (filter, after) = match name {
            "insert" => {
                let id = statement.get("_id").cloned().unwrap_or(Bson::Null);
                if docs.iter().any(|d| d.get("_id") == Some(&id)) {
                    return Err(duplicate(ns, "_id", &id));
                }
                (doc! {"_id": id}, Some(statement.clone()))
            }
            "update" => {
                let filter = statement.get_document("q").cloned().unwrap_or_default();
                let upsert = statement.get_bool("upsert").unwrap_or(false);
                let before = docs.iter().find(|d| matches(d, &filter)).cloned();
                if before.is_none() && !upsert {
                    return Ok(false);
                }
                let after = updated(before, &filter, statement.get("u"))?;
                (filter, Some(after))
            }
            _ => {
                let filter = statement.get_document("q").cloned().unwrap_or_default();
                if !docs.iter().any(|d| matches(d, &filter)) {
                    return Ok(false);
                }
                (filter, None)
            }
        };
        if let Some(after) = &after {
            for field in self.unique.get(ns).into_iter().flatten() {
                let Some(value) = after.get(field) else { continue };
                if docs.iter().any(|d| !matches(d, &filter) && d.get(field) == Some(value)) {
                    return Err(duplicate(ns, field, value));
                }
            }
        }
        let docs = self.docs.entry(ns.to_string()).or_default();
        let at = docs.iter().position(|d| matches(d, &filter));
        let id = filter.get("_id").cloned().unwrap_or(Bson::Null);
        match (&after, at) {
            (Some(after), Some(at)) => docs[at] = after.clone(),
            (Some(after), None) => docs.push(after.clone()),
            (None, Some(at)) => {
                docs.remove(at);
            }
            (None, None) => {}
        }
        self.applied.push((id, after));
        Ok(true)
    }
}

fn duplicate(ns: &str, field: &str, value: &Bson) -> WriteError {
    let message =
        format!("E11000 duplicate key error collection: {ns} index: {field}_1 dup key: {{ {field}: {value} }}");
    (11000, message, Some(doc! {field: value.clone()}))
}

/// The document an update statement leaves: a replacement, `$set`/`$unset`, or a
/// `$replaceWith` of a literal.
fn updated(before: Option<Document>, filter: &Document, u: Option<&Bson>) -> Result<Document, WriteError> {
    let unsupported = |what: &str| (POISON_CODE, format!("the fake target does not support {what}"), None);
    let mut after = match u {
        Some(Bson::Document(u)) if u.keys().next().is_some_and(|k| k.starts_with('$')) => {
            let mut after = before.unwrap_or_else(|| filter.clone());
            for (operator, fields) in u {
                let Bson::Document(fields) = fields else { return Err(unsupported(operator)) };
                for (field, value) in fields {
                    match operator.as_str() {
                        "$set" => {
                            after.insert(field, value.clone());
                        }
                        "$unset" => {
                            after.remove(field);
                        }
                        other => return Err(unsupported(other)),
                    }
                }
            }
            after
        }
        Some(Bson::Document(replacement)) => replacement.clone(),
        Some(Bson::Array(pipeline)) => match pipeline.as_slice() {
            [Bson::Document(stage)] => stage
                .get_document("$replaceWith")
                .and_then(|r| r.get_document("$literal"))
                .cloned()
                .map_err(|_| unsupported("this pipeline"))?,
            _ => return Err(unsupported("this pipeline")),
        },
        _ => return Err(unsupported("this update")),
    };
    if let Some(id) = filter.get("_id") {
        after.insert("_id", id.clone());
    }
    Ok(after)
}

fn matches(document: &Document, filter: &Document) -> bool {
    filter.iter().all(|(field, value)| document.get(field) == Some(value))
}

fn statement_id(name: &str, statement: &Document) -> Bson {
    let id = match name {
        "insert" => statement.get("_id"),
        _ => statement.get_document("q").ok().and_then(|q| q.get("_id")),
    };
    id.cloned().unwrap_or(Bson::Null)
}

fn key(id: &Bson) -> String {
    identity(&doc! {"_id": id.clone()})
}

fn refused(reason: &str) -> CommandError {
    CommandError::Refused { code: POISON_CODE, reason: reason.to_string() }
}

impl Target for FakeTarget {
    fn write<'a>(
        &'a self,
        db: &'a str,
        name: &'static str,
        command: RawDocumentBuf,
    ) -> BoxFuture<'a, Result<Document, CommandError>> {
        Box::pin(async move {
            let command = command.to_document().map_err(|e| refused(&e.to_string()))?;
            self.run(db, name, &command)
        })
    }

    fn present<'a>(&'a self, ns: &'a Namespace, ids: Vec<Bson>) -> BoxFuture<'a, Result<Vec<Document>, Error>> {
        Box::pin(async move {
            let state = self.lock();
            if state.blind {
                return Ok(Vec::new());
            }
            let docs = state.docs.get(&ns.to_string()).map(Vec::as_slice).unwrap_or_default();
            Ok(docs
                .iter()
                .filter_map(|d| d.get("_id").filter(|id| ids.contains(id)).map(|id| doc! {"_id": id.clone()}))
                .collect())
        })
    }
}

/// A dead letter as the fakes saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub offset: i64,
    pub stage: String,
    pub reason: String,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

/// The dead-letter topic and the dead-letter book, in memory.
#[derive(Default)]
pub struct FakeDeadLetters {
    sent: Mutex<Vec<Sent>>,
    recorded: Mutex<Vec<Sent>>,
    /// Sends still to fail (the broker unreachable).
    fail_next: Mutex<usize>,
}

impl FakeDeadLetters {
    /// The next `n` dead letters are not acknowledged (the broker unreachable).
    pub fn fail_next(&self, n: usize) {
        *self.fail_next.lock().unwrap_or_else(|p| p.into_inner()) = n;
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn recorded(&self) -> Vec<Sent> {
        self.recorded.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl DeadLetterTopic for FakeDeadLetters {
    fn send<'a>(
        &'a self,
        origin: &'a Origin<'a>,
        key: Option<&'a [u8]>,
        value: Option<&'a [u8]>,
        error: &'a str,
    ) -> BoxFuture<'a, Result<(), Error>> {
        let mut failing = self.fail_next.lock().unwrap_or_else(|p| p.into_inner());
        if *failing > 0 {
            *failing -= 1;
            let failed = Error::Common(Common::Kafka(Failure::retriable(
                "dead-letter delivery",
                "message timed out (injected)",
            )));
            return Box::pin(async { Err(failed) });
        }
        drop(failing);
        let sent = Sent {
            offset: origin.offset,
            stage: origin.stage.to_string(),
            reason: error.to_string(),
            key: key.map(<[u8]>::to_vec),
            payload: value.map(<[u8]>::to_vec),
        };
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).push(sent);
        Box::pin(async { Ok(()) })
    }
}

impl Recorder for FakeDeadLetters {
    fn record<'a>(&'a self, letter: &'a Letter<'a>) -> BoxFuture<'a, Result<(), Error>> {
        let recorded = Sent {
            offset: letter.offset,
            stage: letter.stage.to_string(),
            reason: letter.reason.to_string(),
            key: letter.key.map(<[u8]>::to_vec),
            payload: letter.payload.map(<[u8]>::to_vec),
        };
        self.recorded.lock().unwrap_or_else(|p| p.into_inner()).push(recorded);
        Box::pin(async { Ok(()) })
    }
}

/// A group member that always confirms ownership.
struct Member;

impl Owner for Member {
    fn commit(&self, _: &str, _: i32, _: i64) -> Result<(), String> {
        Ok(())
    }
}

/// What the write path runs on in a unit test: the fakes, and the real writer, retry loop and
/// metrics.
pub struct Fakes {
    pub target: FakeTarget,
    pub dead_letters: FakeDeadLetters,
    pub writer: Writer,
    pub retrier: Retrier,
    pub retries: IntCounter,
    pub metrics: Metrics,
}

impl Fakes {
    pub fn new() -> Self {
        let retries = IntCounter::new("retries", "retries").expect("a counter");
        Self {
            target: FakeTarget::default(),
            dead_letters: FakeDeadLetters::default(),
            writer: Writer::new("majority", true),
            // Pauses of a few milliseconds: retries are counted, not timed.
            retrier: Retrier::new(Health::new(), retries.clone(), Duration::from_millis(5)),
            retries,
            metrics: Metrics::register(&prometheus::Registry::new()).expect("metrics"),
        }
    }

    pub fn writes(&self) -> Writes<'_> {
        Writes {
            target: &self.target,
            writer: &self.writer,
            dead_letters: &self.dead_letters,
            book: &self.dead_letters,
            retrier: &self.retrier,
            metrics: &self.metrics,
        }
    }
}

/// Partition 0 of topic `t`, owned for as long as the test runs.
pub fn destination() -> Destination {
    let liveness = StandStill::start(Duration::from_secs(3600), &tokio::runtime::Handle::current());
    let fence = Fence::new(Arc::new(Member), "t", 0, Arc::new(AtomicI64::new(0)), liveness);
    Destination { topic: "t".into(), partition: 0, fence: Arc::new(fence) }
}

pub fn ns() -> Namespace {
    Namespace::new("db", "people")
}

/// The document key `write_plan` gives a document with this `_id` in [`ns`].
pub fn doc_key(id: impl Into<Bson>) -> DocKey {
    (ns(), identity(&doc! {"_id": id.into()}))
}

/// A replacement (upsert) of the document `_id: id` in [`ns`] by `fields`, from `offset`.
pub fn replace(id: i32, fields: Document, offset: i64, doc: usize) -> WriteOp {
    let mut document = doc! {"_id": id};
    document.extend(fields);
    let document = RawDocumentBuf::from_document(&document).expect("bson");
    WriteOp { ns: ns(), filter: doc! {"_id": id}, action: Action::Replace(document), offset, doc }
}

/// A `$set` of `fields` on the document `_id: id`, from `offset`.
pub fn set(id: i32, fields: Document, offset: i64, doc: usize) -> WriteOp {
    WriteOp {
        ns: ns(),
        filter: doc! {"_id": id},
        action: Action::Update(Bson::Document(doc! {"$set": fields})),
        offset,
        doc,
    }
}
