//! The checks: a command document in (as the client sent it, document sequences folded in as
//! arrays), allowed or the refusal Amazon DocumentDB 5.0 would give. Pure functions over BSON;
//! every decision reads `rules`.
//!
//! | file          | what it checks                                                          |
//! |---------------|-------------------------------------------------------------------------|
//! | `mod.rs`      | the command itself, sessions and transactions, read concern, options    |
//! | `query.rs`    | query filters, projections, `$jsonSchema`                               |
//! | `expr.rs`     | aggregation expressions, accumulators, system variables                 |
//! | `pipeline.rs` | aggregation stages, `$lookup`, change streams, pipeline-style updates   |
//! | `write.rs`    | stored documents (field names, types), update operators, write commands |
//! | `ddl.rs`      | `create`, `collMod`, `createIndexes`, validators, `listCollections`     |

mod ddl;
mod expr;
mod pipeline;
mod query;
mod write;

use bson::{Bson, Document};

use crate::refusal::Refusal;
use crate::rules;

/// Where a command runs: its database and whether it is part of a multi-document transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    pub db: &'a str,
    pub in_transaction: bool,
}

/// Allows `command`, or says how DocumentDB would refuse it.
pub fn check(command: &Document) -> Result<(), Refusal> {
    let db = command.get_str("$db").unwrap_or("");
    // The driver marks every statement of a transaction with `autocommit: false`.
    let in_transaction = command.contains_key("autocommit");
    if command.contains_key("txnNumber") && !in_transaction {
        // A retryable write (functional differences: "Unrecognized field: 'txnNumber'").
        return Err(Refusal::unrecognized_field("txnNumber"));
    }
    read_concern(command)?;
    check_in(Context { db, in_transaction }, command)
}

fn check_in(cx: Context<'_>, command: &Document) -> Result<(), Refusal> {
    let Some((name, target)) = command.iter().next() else {
        return Ok(());
    };
    if !rules::supported(rules::COMMANDS, name) {
        return Err(Refusal::no_such_command(name));
    }
    if let Bson::String(collection) = target {
        if name != "renameCollection" {
            namespace(cx.db, collection)?;
        }
    }
    match name.as_str() {
        "find" => {
            options(command, rules::REFUSED_OPTIONS)?;
            options(command, rules::REFUSED_FIND_OPTIONS)?;
            document(command, "filter").map_or(Ok(()), query::filter)?;
            document(command, "projection").map_or(Ok(()), query::projection)?;
            natural(command, "sort")?;
            natural(command, "hint")
        }
        "aggregate" => {
            options(command, rules::REFUSED_OPTIONS)?;
            natural(command, "hint")?;
            pipeline::aggregate(cx, array(command, "pipeline"))
        }
        "count" | "distinct" => {
            options(command, rules::REFUSED_OPTIONS)?;
            natural(command, "hint")?;
            document(command, "query").map_or(Ok(()), query::filter)
        }
        "insert" => array(command, "documents").iter().try_for_each(write::stored),
        "update" => {
            options(command, rules::REFUSED_OPTIONS)?;
            statements(command, "updates").try_for_each(write::update_statement)
        }
        "delete" => {
            options(command, rules::REFUSED_OPTIONS)?;
            statements(command, "deletes").try_for_each(write::delete_statement)
        }
        "findAndModify" => write::find_and_modify(command),
        "create" => ddl::create(cx, command),
        "collMod" => ddl::coll_mod(command),
        "createIndexes" => ddl::create_indexes(cx, command),
        "listCollections" => ddl::list_collections(command),
        "renameCollection" => {
            for key in ["renameCollection", "to"] {
                if let Some((db, collection)) = command.get_str(key).ok().and_then(|ns| ns.split_once('.')) {
                    namespace(db, collection)?;
                }
            }
            Ok(())
        }
        "getMore" if cx.in_transaction => Err(Refusal::feature("cursors within a transaction")),
        "explain" => match command.get_document("explain") {
            Ok(inner) => check_in(cx, inner),
            Err(_) => Ok(()),
        },
        _ => Ok(()),
    }
}

/// No causal consistency (`afterClusterTime`), no linearizable reads, and (ASSUMED) no
/// point-in-time reads (`atClusterTime`).
fn read_concern(command: &Document) -> Result<(), Refusal> {
    let Ok(concern) = command.get_document("readConcern") else {
        return Ok(());
    };
    if concern.contains_key("afterClusterTime") {
        return Err(Refusal::feature("causal consistency"));
    }
    if concern.contains_key("atClusterTime") {
        return Err(Refusal::feature("atClusterTime"));
    }
    match concern.get_str("level") {
        Ok(level) if rules::REFUSED_READ_CONCERN_LEVELS.contains(&level) => {
            Err(Refusal::feature(&format!("readConcern level {level}")))
        }
        _ => Ok(()),
    }
}

/// No user data in the admin, local or config databases, nor in `system.*` collections.
fn namespace(db: &str, collection: &str) -> Result<(), Refusal> {
    if rules::SYSTEM_DATABASES.contains(&db) {
        return Err(Refusal::feature(&format!("collections in the {db} database")));
    }
    if collection.starts_with("system.") {
        return Err(Refusal::feature(&format!("{collection} collections")));
    }
    Ok(())
}

/// Refuses the first of `names` present in `command`.
fn options(command: &Document, names: &[&str]) -> Result<(), Refusal> {
    match names.iter().find(|name| command.contains_key(**name)) {
        Some(name) => Err(Refusal::option(name)),
        None => Ok(()),
    }
}

/// `$natural` only forwards: a reverse collection scan is an error (functional differences).
fn natural(command: &Document, key: &str) -> Result<(), Refusal> {
    let direction = command.get_document(key).ok().and_then(|spec| spec.get("$natural"));
    let reverse = match direction {
        Some(Bson::Int32(d)) => *d < 0,
        Some(Bson::Int64(d)) => *d < 0,
        Some(Bson::Double(d)) => *d < 0.0,
        _ => false,
    };
    if reverse {
        return Err(Refusal::feature("$natural: -1"));
    }
    Ok(())
}

fn document<'a>(command: &'a Document, key: &str) -> Option<&'a Document> {
    command.get_document(key).ok()
}

fn array<'a>(command: &'a Document, key: &str) -> &'a [Bson] {
    command.get_array(key).map(Vec::as_slice).unwrap_or(&[])
}

/// The statements of a write command (`updates`, `deletes`) that are documents.
fn statements<'a>(command: &'a Document, key: &str) -> impl Iterator<Item = &'a Document> {
    array(command, key).iter().filter_map(Bson::as_document)
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    #[test]
    fn commands_documentdb_lacks_are_refused_as_unknown() {
        for name in ["mapReduce", "dbHash", "connPoolStats", "refreshSessions", "replSetGetStatus", "validate"] {
            let refusal = check(&doc! {name: 1, "$db": "app"}).expect_err(name);
            assert_eq!((refusal.code, refusal.errmsg), (59, format!("no such command: '{name}'")));
        }
        for name in ["ping", "hello", "isMaster", "listDatabases", "killCursors", "dropDatabase"] {
            assert_eq!(check(&doc! {name: 1, "$db": "app"}), Ok(()), "{name}");
        }
    }

    #[test]
    fn retryable_writes_are_refused_with_the_documented_error() {
        let insert = doc! {"insert": "c", "documents": [{"_id": 1}], "$db": "app", "txnNumber": 1_i64};
        let refusal = check(&insert).expect_err("retryable write");
        assert_eq!((refusal.code, refusal.errmsg.as_str()), (9, "Unrecognized field: 'txnNumber'"));
        let mut in_transaction = insert.clone();
        in_transaction.insert("autocommit", false);
        assert_eq!(check(&in_transaction), Ok(()));
    }

    #[test]
    fn causal_consistency_and_linearizable_reads_are_refused() {
        let read = |concern: Document| doc! {"find": "c", "$db": "app", "readConcern": concern};
        let causal = check(&read(doc! {"afterClusterTime": bson::Timestamp { time: 1, increment: 1 }}));
        assert_eq!(causal.expect_err("causal").errmsg, "Feature not supported: 'causal consistency'");
        assert_eq!(causal_code(check(&read(doc! {"level": "linearizable"}))), 303);
        assert_eq!(check(&read(doc! {"level": "majority"})), Ok(()));
    }

    fn causal_code(result: Result<(), Refusal>) -> i32 {
        result.expect_err("refused").code
    }

    #[test]
    fn system_databases_and_collections_hold_no_user_data() {
        assert!(check(&doc! {"find": "oplog.rs", "$db": "local"}).is_err());
        assert!(check(&doc! {"insert": "system.js", "documents": [], "$db": "app"}).is_err());
        let rename = doc! {"renameCollection": "app.a", "to": "admin.b", "$db": "admin"};
        assert_eq!(check(&rename).expect_err("into admin").code, 303);
        assert_eq!(check(&doc! {"renameCollection": "app.a", "to": "app.b", "$db": "admin"}), Ok(()));
        assert_eq!(check(&doc! {"aggregate": 1, "pipeline": [], "cursor": {}, "$db": "admin"}), Ok(()));
    }

    #[test]
    fn find_options_documentdb_lacks_are_refused() {
        for option in ["collation", "let", "max", "min", "noCursorTimeout", "returnKey", "showRecordId", "tailable"] {
            let refusal = check(&doc! {"find": "c", "$db": "app", option: {}}).expect_err(option);
            assert_eq!(refusal.errmsg, format!("option {option} is currently not supported."));
        }
        assert!(check(&doc! {"find": "c", "$db": "app", "allowDiskUse": true}).is_err());
        assert_eq!(check(&doc! {"find": "c", "$db": "app", "hint": {"x": 1}, "sort": {"_id": 1}}), Ok(()));
    }

    #[test]
    fn reverse_natural_scans_are_refused() {
        let refusal = check(&doc! {"find": "c", "$db": "app", "sort": {"$natural": -1}}).expect_err("reverse");
        assert_eq!(refusal.errmsg, "Feature not supported: '$natural: -1'");
        assert!(check(&doc! {"find": "c", "$db": "app", "hint": {"$natural": -1.0}}).is_err());
        assert_eq!(check(&doc! {"find": "c", "$db": "app", "sort": {"$natural": 1}}), Ok(()));
    }

    #[test]
    fn no_cursors_within_a_transaction() {
        let get_more =
            doc! {"getMore": 7_i64, "collection": "c", "$db": "app", "txnNumber": 1_i64, "autocommit": false};
        assert_eq!(check(&get_more).expect_err("txn").errmsg, "Feature not supported: 'cursors within a transaction'");
        assert_eq!(check(&doc! {"getMore": 7_i64, "collection": "c", "$db": "app"}), Ok(()));
    }

    #[test]
    fn explain_checks_the_command_it_explains() {
        let explain = doc! {"explain": {"aggregate": "c", "pipeline": [{"$facet": {}}], "cursor": {}}, "$db": "app"};
        assert_eq!(check(&explain).expect_err("facet").code, 304);
    }
}
