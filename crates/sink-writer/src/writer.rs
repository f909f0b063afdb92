//! Writes one round to the target: per namespace, one unordered `update` command (replacements
//! with upsert, partial updates) and one unordered `delete` command, all in parallel. These are
//! the plain commands MongoDB 6.0 and Amazon DocumentDB both accept (`bulkWrite` needs 8.0).

use std::collections::BTreeMap;

use bson::{doc, Bson, Document};
use envelope::Namespace;

use service_kit::connect::TRANSIENT_MONGO_CODES;

use crate::batcher::WriteOp;
use crate::error::Error;

pub struct Writer {
    client: mongodb::Client,
    write_concern: Document,
}

/// What a round did.
#[derive(Debug, Default)]
pub struct RoundResult {
    /// Writes the target rejected for good: (message offset, reason).
    pub rejected: Vec<(i64, String)>,
    /// Applied writes by kind.
    pub applied: BTreeMap<&'static str, u64>,
}

impl Writer {
    pub fn new(client: mongodb::Client, w: &str, journal: bool) -> Self {
        let w = w.parse::<i32>().map_or_else(|_| Bson::String(w.to_string()), Bson::Int32);
        Self { client, write_concern: doc! {"w": w, "j": journal} }
    }

    /// Applies a round. A transient failure of any part fails the whole round (it is
    /// idempotent and retried); documents the target refuses for good are returned.
    pub async fn apply(&self, round: &[WriteOp]) -> Result<RoundResult, Error> {
        let mut by_ns: BTreeMap<&Namespace, (Vec<&WriteOp>, Vec<&WriteOp>)> = BTreeMap::new();
        for op in round {
            let entry = by_ns.entry(op.ns()).or_default();
            match op {
                WriteOp::Delete { .. } => entry.1.push(op),
                _ => entry.0.push(op),
            }
        }
        let mut commands = Vec::new();
        for (ns, (updates, deletes)) in &by_ns {
            if !updates.is_empty() {
                commands.push(self.run(ns, "update", updates));
            }
            if !deletes.is_empty() {
                commands.push(self.run(ns, "delete", deletes));
            }
        }
        let mut result = RoundResult::default();
        for outcome in futures::future::join_all(commands).await {
            let (rejected, applied) = outcome?;
            result.rejected.extend(rejected);
            for (kind, count) in applied {
                *result.applied.entry(kind).or_default() += count;
            }
        }
        Ok(result)
    }

    async fn run(
        &self,
        ns: &Namespace,
        command: &'static str,
        ops: &[&WriteOp],
    ) -> Result<(Vec<(i64, String)>, BTreeMap<&'static str, u64>), Error> {
        let statements: Vec<Bson> = ops.iter().map(|op| Bson::Document(statement(op))).collect();
        let field = if command == "update" { "updates" } else { "deletes" };
        let body = doc! {
            command: &ns.coll,
            field: statements,
            "ordered": false,
            "writeConcern": self.write_concern.clone(),
        };
        let reply = self.client.database(&ns.db).run_command(body).await.map_err(|e| Error::mongo(command, e))?;
        if let Ok(wce) = reply.get_document("writeConcernError") {
            return Err(Error::Mongo {
                context: command.to_string(),
                retriable: true,
                reason: format!("write concern: {}", wce.get_str("errmsg").unwrap_or("unknown")),
            });
        }
        let mut failed: BTreeMap<usize, (i32, String)> = BTreeMap::new();
        if let Ok(errors) = reply.get_array("writeErrors") {
            for error in errors.iter().filter_map(Bson::as_document) {
                let index = error.get_i32("index").unwrap_or(-1);
                let code = error.get_i32("code").unwrap_or(0);
                let message = error.get_str("errmsg").unwrap_or("").to_string();
                if TRANSIENT_MONGO_CODES.contains(&code) {
                    return Err(Error::Mongo { context: command.to_string(), retriable: true, reason: message });
                }
                failed.insert(usize::try_from(index).unwrap_or(usize::MAX), (code, message));
            }
        }
        let mut rejected = Vec::new();
        let mut applied: BTreeMap<&'static str, u64> = BTreeMap::new();
        for (index, op) in ops.iter().enumerate() {
            match failed.get(&index) {
                Some((code, message)) => rejected.push((op.offset(), format!("{ns}: code {code}: {message}"))),
                None => *applied.entry(op.kind()).or_default() += 1,
            }
        }
        Ok((rejected, applied))
    }
}

fn statement(op: &WriteOp) -> Document {
    match op {
        WriteOp::Replace { filter, doc, .. } => doc! {"q": filter.clone(), "u": doc.clone(), "upsert": true},
        WriteOp::Update { filter, update, .. } => doc! {"q": filter.clone(), "u": update.clone(), "upsert": false},
        WriteOp::Delete { filter, .. } => doc! {"q": filter.clone(), "limit": 1},
    }
}
