//! Writes one round to the target: per namespace, unordered `update` commands (replacements
//! with upsert, partial updates), `insert` commands (replacements of documents the target was
//! seen without) and `delete` commands, all in parallel. These are the plain
//! commands MongoDB 6.0 and Amazon DocumentDB both accept (`bulkWrite` needs 8.0).
//!
//! Each command stays under the server's 16 MiB limit by the BSON size of its statements (a
//! batch is bounded by JSON bytes, and BSON of numeric arrays is ~3× larger); a lone statement
//! over it goes by itself and, if refused, is refused alone. What each statement came to is
//! reported: applied, refused for now by a unique index (a value another document still holds
//! here), or refused for good.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bson::{doc, rawdoc, Bson, RawDocumentBuf};
use envelope::Namespace;
use mongodb::ClientSession;
use service_kit::failure::TRANSIENT_MONGO_CODES;

use crate::apply::command;
use service_kit::failure::code::{
    ATLAS_UNAUTHORIZED, AUTHENTICATION_FAILED, DUPLICATE_KEY, UNAUTHORIZED, USER_NOT_FOUND,
};

use crate::apply::target::{CommandError, Target};
use crate::apply::write_plan::{Action, WriteOp};
use crate::error::{Common, Error, Failure};

/// The BSON bytes of statements one command may carry: the server takes commands up to 16 MiB
/// plus 16 KiB; the rest is headroom for the command's own fields.
const MAX_COMMAND_STATEMENT_BYTES: usize = 16 * 1024 * 1024 - 64 * 1024;
/// The server's `maxWriteBatchSize`.
const MAX_COMMAND_STATEMENTS: usize = 100_000;
/// Refusals that say nothing about the document: the sink's own permissions. Retried (and the
/// service shows not ready) rather than dead-lettering every document.
const ENVIRONMENT_CODES: [i32; 4] = [UNAUTHORIZED, AUTHENTICATION_FAILED, USER_NOT_FOUND, ATLAS_UNAUTHORIZED];

pub struct Writer {
    write_concern: RawDocumentBuf,
}

/// What one write came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Applied,
    /// A unique secondary index refused it: another document holds the value here for now.
    Conflict(Conflict),
    /// The target refuses it for good (it goes to the dead-letter topic).
    Rejected(String),
}

/// A unique index's refusal: why, and the value (as the index keys it) another document holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub reason: String,
    /// `keyValue` of the duplicate key error: the fields and values the holder has.
    pub key_value: Option<bson::Document>,
}

/// Where a command goes: the target, or a session's transaction on it.
enum Via<'s> {
    Target(&'s dyn Target),
    Session(&'s mut ClientSession),
}

/// A group of statements sent as one command.
struct Command<'a> {
    ns: &'a Namespace,
    name: &'static str,
    /// Indexes into the round, and each statement.
    statements: Vec<(usize, RawDocumentBuf)>,
}

impl Writer {
    pub fn new(w: &str, journal: bool) -> Self {
        let w = w.parse::<i32>().map_or_else(|_| Bson::String(w.to_string()), Bson::Int32);
        let write_concern = RawDocumentBuf::from_document(&doc! {"w": w, "j": journal})
            .unwrap_or_else(|_| rawdoc! {"w": "majority", "j": journal});
        Self { write_concern }
    }

    /// Applies a round; the outcomes follow the round's order. A transient failure of any part
    /// fails the whole round (it is idempotent and retried).
    pub async fn apply(&self, target: &dyn Target, round: &[WriteOp]) -> Result<Vec<Outcome>, Error> {
        let (commands, mut outcomes) = commands(round, false);
        let results = futures::future::join_all(commands.into_iter().map(|c| self.run_isolating(target, c))).await;
        for result in results {
            for (index, outcome) in result? {
                outcomes[index] = outcome;
            }
        }
        Ok(outcomes)
    }

    /// Applies a round inside `session`'s transaction, one command after the other (statements
    /// alone when `singly`). The first statement the target refuses ends the transaction (the
    /// server aborts it): it is returned with what it came to, and nothing counts as applied.
    pub async fn apply_in(
        &self,
        session: &mut ClientSession,
        round: &[WriteOp],
        singly: bool,
    ) -> Result<InTransaction, Error> {
        let (commands, outcomes) = commands(round, singly);
        if let Some((index, outcome)) = outcomes.into_iter().enumerate().find(|(_, o)| *o != Outcome::Applied) {
            return Ok(InTransaction::Refused(index, outcome, Vec::new()));
        }
        let mut passed = Vec::with_capacity(round.len());
        for command in commands {
            let alone = command.statements.len() == 1;
            match self.run(command.ns, command.name, &command.statements, Via::Session(&mut *session)).await {
                Ok(done) => {
                    // The server stops at the first refused statement inside a transaction.
                    let refused = done.iter().position(|(_, o)| *o != Outcome::Applied);
                    let taken = refused.unwrap_or(done.len());
                    passed.extend(done[..taken].iter().map(|(index, _)| *index));
                    if let Some(at) = refused {
                        let (index, outcome) = done[at].clone();
                        return Ok(InTransaction::Refused(index, outcome, passed));
                    }
                }
                Err(CommandError::Failed(e)) => return Err(e),
                Err(CommandError::Refused { code, reason }) if alone => {
                    if ENVIRONMENT_CODES.contains(&code) {
                        return Err(Error::Common(Common::Mongo(Failure::retriable(command.name, reason))));
                    }
                    let index = command.statements[0].0;
                    let outcome = Outcome::Rejected(format!("{}: {reason}", command.ns));
                    return Ok(InTransaction::Refused(index, outcome, passed));
                }
                // Which statement made the whole command fail is found by sending each alone.
                Err(CommandError::Refused { .. }) => return Ok(InTransaction::Isolate),
            }
        }
        Ok(InTransaction::Applied)
    }

    /// Runs a command; a refusal of the command as a whole (not of one statement) is narrowed
    /// down by halves to the statement that causes it.
    async fn run_isolating(&self, target: &dyn Target, command: Command<'_>) -> Result<Vec<(usize, Outcome)>, Error> {
        let mut pending = vec![command.statements];
        let mut outcomes = Vec::new();
        while let Some(statements) = pending.pop() {
            match self.run(command.ns, command.name, &statements, Via::Target(target)).await {
                Ok(done) => outcomes.extend(done),
                Err(CommandError::Failed(e)) => return Err(e),
                Err(CommandError::Refused { code, reason }) if statements.len() == 1 => {
                    if ENVIRONMENT_CODES.contains(&code) {
                        return Err(Error::Common(Common::Mongo(Failure::retriable(command.name, reason))));
                    }
                    outcomes.push((statements[0].0, Outcome::Rejected(format!("{}: {reason}", command.ns))));
                }
                Err(CommandError::Refused { .. }) => {
                    let mut first = statements;
                    let second = first.split_off(first.len() / 2);
                    pending.push(second);
                    pending.push(first);
                }
            }
        }
        Ok(outcomes)
    }

    async fn run(
        &self,
        ns: &Namespace,
        name: &'static str,
        statements: &[(usize, RawDocumentBuf)],
        via: Via<'_>,
    ) -> Result<Vec<(usize, Outcome)>, CommandError> {
        let body = command::write_command(
            name,
            &ns.coll,
            match name {
                "update" => "updates",
                "insert" => "documents",
                _ => "deletes",
            },
            statements.iter().map(|(_, statement)| statement),
            matches!(via, Via::Target(_)).then_some(&self.write_concern),
        )
        .map_err(|reason| CommandError::Refused { code: 0, reason })?;
        let reply = match via {
            Via::Target(target) => target.write(&ns.db, name, body).await?,
            Via::Session(session) => {
                let db = session.client().database(&ns.db);
                db.run_raw_command(body).session(session).await.map_err(|e| CommandError::from_driver(name, e))?
            }
        };
        if let Ok(wce) = reply.get_document("writeConcernError") {
            return Err(CommandError::Failed(Error::Common(Common::Mongo(Failure::retriable(
                name,
                format!("write concern: {}", wce.get_str("errmsg").unwrap_or("unknown")),
            )))));
        }
        let mut outcomes: Vec<(usize, Outcome)> = statements.iter().map(|(i, _)| (*i, Outcome::Applied)).collect();
        if let Ok(errors) = reply.get_array("writeErrors") {
            for error in errors.iter() {
                let Some(error) = error.as_document() else {
                    return Err(CommandError::Failed(Error::Common(Common::Mongo(Failure::retriable(
                        name,
                        format!("a write error that is not a document: {error:?}"),
                    )))));
                };
                let code = error.get_i32("code").unwrap_or(0);
                let message = error.get_str("errmsg").unwrap_or("").to_string();
                if TRANSIENT_MONGO_CODES.contains(&code) || ENVIRONMENT_CODES.contains(&code) {
                    return Err(CommandError::Failed(Error::Common(Common::Mongo(Failure::retriable(name, message)))));
                }
                // A statement the reply cannot be matched to is a reply not understood: never
                // taken as success.
                let Some(slot) =
                    usize::try_from(error.get_i32("index").unwrap_or(-1)).ok().and_then(|i| outcomes.get_mut(i))
                else {
                    return Err(CommandError::Failed(Error::Common(Common::Mongo(Failure::retriable(
                        name,
                        format!("a write error names no statement of the command: code {code}: {message}"),
                    )))));
                };
                slot.1 = if code == DUPLICATE_KEY {
                    Outcome::Conflict(Conflict {
                        reason: format!("{ns}: code {code}: {message}"),
                        key_value: error.get_document("keyValue").ok().cloned(),
                    })
                } else {
                    Outcome::Rejected(format!("{ns}: code {code}: {message}"))
                };
            }
        }
        Ok(outcomes)
    }
}

/// What a round inside a transaction came to.
#[derive(Debug, Clone, PartialEq)]
pub enum InTransaction {
    /// Every statement was taken (for now: the transaction commits them or none).
    Applied,
    /// The statement at this index of the round was refused; the transaction is over. The
    /// statements the target had taken before it (they would pass again from the same state)
    /// are listed.
    Refused(usize, Outcome, Vec<usize>),
    /// A command was refused as a whole: try again with every statement alone.
    Isolate,
}

/// The round's statements as commands per namespace and kind, under the command limits (one
/// statement each when `singly`), and the outcomes of statements that cannot even be built.
fn commands(round: &[WriteOp], singly: bool) -> (Vec<Command<'_>>, Vec<Outcome>) {
    let mut by_ns: BTreeMap<(&Namespace, &'static str), Vec<(usize, RawDocumentBuf)>> = BTreeMap::new();
    let mut outcomes = vec![Outcome::Applied; round.len()];
    for (index, op) in round.iter().enumerate() {
        match statement(op) {
            Ok(statement) => by_ns.entry((&op.ns, command_name(op))).or_default().push((index, statement)),
            Err(reason) => outcomes[index] = Outcome::Rejected(reason),
        }
    }
    let commands = by_ns
        .into_iter()
        .flat_map(|((ns, name), statements)| {
            let groups = if singly { statements.into_iter().map(|s| vec![s]).collect() } else { split(statements) };
            groups.into_iter().map(move |s| Command { ns, name, statements: s })
        })
        .collect();
    (commands, outcomes)
}

fn command_name(op: &WriteOp) -> &'static str {
    match op.action {
        Action::Delete => "delete",
        Action::Insert(_) => "insert",
        _ => "update",
    }
}

/// The statement for one write. A replacement holding a top-level field whose name starts with
/// `$` goes as a pipeline update (`$replaceWith` of the literal document): the server refuses
/// such a name in a replacement document (code 52) but stores it.
fn statement(op: &WriteOp) -> Result<RawDocumentBuf, String> {
    if let Action::Insert(doc) = &op.action {
        return Ok(doc.clone());
    }
    // Each document encoded once and copied once into a statement of its exact size.
    let filter = command::encode(&op.filter)?;
    let (u, pipeline): (Option<Cow<'_, [u8]>>, bool) = match &op.action {
        Action::Replace(doc) => (Some(Cow::Borrowed(doc.as_bytes())), dollar_name(doc)),
        Action::Update(update) => {
            command::encode_update(update).map(|(u, pipeline)| (Some(Cow::Owned(u)), pipeline))?
        }
        Action::Delete | Action::Insert(_) => (None, false),
    };
    let capacity = 4 + 3 + filter.len() + u.as_ref().map_or(0, |u| u.len()) + 64;
    let mut statement = command::Builder::with_capacity(capacity);
    statement.document("q", &filter);
    match (&op.action, u) {
        (Action::Replace(_), Some(doc)) if pipeline => {
            statement.open("u", true);
            statement.open("0", false);
            statement.open("$replaceWith", false);
            statement.document("$literal", &doc);
            statement.close();
            statement.close();
            statement.close();
            statement.boolean("upsert", true);
        }
        (Action::Replace(_), Some(doc)) => {
            statement.document("u", &doc);
            statement.boolean("upsert", true);
        }
        (Action::Update(_), Some(update)) => {
            // Operators, or an aggregation pipeline (for `$`-prefixed fields).
            if pipeline {
                statement.array("u", &update);
            } else {
                statement.document("u", &update);
            }
            statement.boolean("upsert", false);
        }
        _ => statement.int32("limit", 1),
    }
    statement.finish()
}

/// Whether a top-level field name starts with `$`.
pub(crate) fn dollar_name(doc: &RawDocumentBuf) -> bool {
    doc.iter_elements().any(|element| element.is_ok_and(|element| element.key().starts_with('$')))
}

/// Splits statements into groups under the command limits, keeping their order.
fn split(statements: Vec<(usize, RawDocumentBuf)>) -> Vec<Vec<(usize, RawDocumentBuf)>> {
    let mut groups = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for statement in statements {
        let size = statement.1.as_bytes().len();
        if !current.is_empty()
            && (bytes + size > MAX_COMMAND_STATEMENT_BYTES || current.len() >= MAX_COMMAND_STATEMENTS)
        {
            groups.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(statement);
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::fake::{self, FakeTarget};
    use bson::Document;

    fn writer() -> Writer {
        Writer::new("majority", true)
    }

    #[tokio::test]
    async fn a_duplicate_key_is_a_conflict_with_the_value_another_document_holds() {
        let target = FakeTarget::default();
        target.unique_index(&fake::ns(), "email");
        target.put(&fake::ns(), doc! {"_id": 9, "email": "x"});
        let round = [fake::replace(1, doc! {"email": "x"}, 10, 0), fake::replace(2, doc! {"email": "y"}, 11, 1)];
        let outcomes = writer().apply(&target, &round).await.expect("a reply");
        let Outcome::Conflict(conflict) = &outcomes[0] else { panic!("a conflict: {outcomes:?}") };
        assert_eq!(conflict.key_value, Some(doc! {"email": "x"}));
        assert_eq!(outcomes[1], Outcome::Applied);
        assert_eq!(target.get(&fake::ns(), 1), None);
    }

    #[tokio::test]
    async fn a_reply_the_writer_does_not_understand_is_an_error_not_success() {
        let target = FakeTarget::default();
        target.unique_index(&fake::ns(), "email");
        target.put(&fake::ns(), doc! {"_id": 9, "email": "x"});
        target.drop_index_next(1);
        let round = [fake::replace(1, doc! {"email": "x"}, 10, 0)];
        let failed = writer().apply(&target, &round).await.expect_err("a write error naming no statement");
        assert!(failed.is_retriable(), "the round is tried again: {failed}");
        let outcomes = writer().apply(&target, &round).await.expect("a reply it reads");
        assert!(matches!(outcomes[0], Outcome::Conflict(_)), "{outcomes:?}");
    }

    #[tokio::test]
    async fn a_statement_refused_for_good_is_rejected_alone() {
        let target = FakeTarget::default();
        target.poison(2);
        let round: Vec<WriteOp> = (1..=3).map(|id| fake::replace(id, doc! {"n": id}, 10, 0)).collect();
        let outcomes = writer().apply(&target, &round).await.expect("a reply");
        assert_eq!(outcomes[0], Outcome::Applied);
        assert!(matches!(&outcomes[1], Outcome::Rejected(reason) if reason.contains("code 2")), "{outcomes:?}");
        assert_eq!(outcomes[2], Outcome::Applied);
        assert_eq!(target.commands().len(), 1, "one command");
    }

    #[tokio::test]
    async fn a_command_refused_as_a_whole_is_narrowed_to_the_statement_that_causes_it() {
        let target = FakeTarget::default();
        target.poison_command(3);
        let round: Vec<WriteOp> = (1..=4).map(|id| fake::replace(id, doc! {"n": id}, 10, 0)).collect();
        let outcomes = writer().apply(&target, &round).await.expect("a reply");
        assert!(matches!(outcomes[2], Outcome::Rejected(_)), "{outcomes:?}");
        for i in [0, 1, 3] {
            assert_eq!(outcomes[i], Outcome::Applied, "statement {i}");
            let id = i32::try_from(i).expect("small") + 1;
            assert_eq!(target.history(id).len(), 1, "document {id} written once");
        }
        let sizes: Vec<usize> = target.commands().iter().map(|(_, ids)| ids.len()).collect();
        assert_eq!(sizes, [4, 2, 2, 1, 1], "by halves");
    }

    fn replace(doc: Document) -> WriteOp {
        WriteOp {
            ns: Namespace::new("db", "c"),
            filter: doc! {"_id": 1},
            action: Action::Replace(RawDocumentBuf::from_document(&doc).expect("bson")),
            offset: 0,
            doc: 0,
        }
    }

    #[test]
    fn commands_stay_under_the_size_limit_in_order() {
        let big = RawDocumentBuf::from_document(&doc! {"x": "y".repeat(6 * 1024 * 1024)}).expect("bson");
        let small = RawDocumentBuf::from_document(&doc! {"x": 1}).expect("bson");
        let statements =
            vec![(0, big.clone()), (1, small.clone()), (2, big.clone()), (3, big.clone()), (4, small.clone())];
        let groups = split(statements);
        let indexes: Vec<Vec<usize>> = groups.iter().map(|g| g.iter().map(|(i, _)| *i).collect()).collect();
        assert_eq!(indexes, vec![vec![0, 1, 2], vec![3, 4]]);
        let huge = RawDocumentBuf::from_document(&doc! {"x": "y".repeat(17 * 1024 * 1024)}).expect("bson");
        assert_eq!(split(vec![(0, small), (1, huge)]).len(), 2, "one too large goes alone");
    }

    #[test]
    fn a_top_level_dollar_field_is_replaced_through_a_pipeline() {
        let plain = statement(&replace(doc! {"_id": 1, "a.b": 1, "n": {"$x": 1}})).expect("statement");
        assert!(plain.get_document("u").is_ok(), "dotted and nested $ names are fine in a replacement");
        let dollar = statement(&replace(doc! {"_id": 1, "$price": 5})).expect("statement");
        assert!(dollar.get_array("u").is_ok(), "a pipeline update");
    }
}
