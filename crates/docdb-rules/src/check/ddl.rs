//! Collections and indexes: `create` options, validators, `collMod`, index kinds and options,
//! partial filters, and `listCollections` filters.

use bson::{Bson, Document};

use super::{query, Context};
use crate::refusal::Refusal;
use crate::rules;

/// `create`: only the collection options DocumentDB has, never inside a transaction.
pub(crate) fn create(cx: Context<'_>, command: &Document) -> Result<(), Refusal> {
    if cx.in_transaction {
        return Err(Refusal::feature("creating a collection in a transaction"));
    }
    for (option, value) in command.iter().skip(1) {
        if !rules::COLLECTION_OPTIONS.iter().any(|(name, _)| name == option) {
            continue; // the command's own fields: writeConcern, comment, lsid, …
        }
        let harmless = option == "capped" && value.as_bool() == Some(false);
        if !rules::supported(rules::COLLECTION_OPTIONS, option) && !harmless {
            return Err(Refusal::option(option));
        }
    }
    validation(command)
}

/// `collMod`: the validation settings and an index's TTL, nothing else.
pub(crate) fn coll_mod(command: &Document) -> Result<(), Refusal> {
    for (option, value) in command.iter().skip(1) {
        if is_command_field(option) {
            continue;
        }
        if !rules::COLL_MOD_OPTIONS.contains(&option.as_str()) {
            return Err(Refusal::option(option));
        }
        if let ("index", Bson::Document(index)) = (option.as_str(), value) {
            if let Some(field) = index.keys().find(|field| !rules::COLL_MOD_INDEX_OPTIONS.contains(&field.as_str())) {
                return Err(Refusal::option(&format!("index.{field}")));
            }
        }
    }
    validation(command)
}

/// Fields every command may carry (sessions, concerns, API version, comments).
fn is_command_field(name: &str) -> bool {
    name.starts_with('$')
        || matches!(
            name,
            "lsid"
                | "txnNumber"
                | "autocommit"
                | "startTransaction"
                | "writeConcern"
                | "readConcern"
                | "comment"
                | "maxTimeMS"
                | "apiVersion"
                | "apiStrict"
                | "apiDeprecationErrors"
                | "dryRun"
        )
}

/// `validator` (a `$jsonSchema` and nothing else), `validationLevel`, `validationAction`.
fn validation(command: &Document) -> Result<(), Refusal> {
    if let Ok(validator) = command.get_document("validator") {
        if !validator.is_empty() {
            if validator.keys().any(|key| key != "$jsonSchema") {
                return Err(Refusal::feature("validator other than $jsonSchema"));
            }
            query::json_schema(validator.get("$jsonSchema").unwrap_or(&Bson::Null))?;
        }
    }
    if let Ok(level) = command.get_str("validationLevel") {
        if !rules::VALIDATION_LEVELS.contains(&level) {
            return Err(Refusal::feature(&format!("validationLevel {level}")));
        }
    }
    if let Ok(action) = command.get_str("validationAction") {
        if !rules::VALIDATION_ACTIONS.contains(&action) {
            return Err(Refusal::feature(&format!("validationAction {action}")));
        }
    }
    Ok(())
}

/// `createIndexes`: index kinds and options from the table, partial filters with the documented
/// operators, never inside a transaction.
pub(crate) fn create_indexes(cx: Context<'_>, command: &Document) -> Result<(), Refusal> {
    if cx.in_transaction {
        return Err(Refusal::feature("creating a collection in a transaction"));
    }
    let indexes = command.get_array("indexes").map(Vec::as_slice).unwrap_or(&[]);
    for index in indexes.iter().filter_map(Bson::as_document) {
        if let Some(option) = index.keys().find(|option| !rules::supported(rules::INDEX_OPTIONS, option)) {
            return Err(Refusal::option(option));
        }
        for (field, kind) in index.get_document("key").into_iter().flatten() {
            if !rules::WILDCARD_INDEXES && (field == "$**" || field.ends_with(".$**")) {
                return Err(Refusal::feature("wildcard index"));
            }
            if let Bson::String(kind) = kind {
                if !rules::supported(rules::INDEX_KINDS, kind) {
                    return Err(Refusal::feature(&format!("{kind} index")));
                }
            }
        }
        if let Ok(filter) = index.get_document("partialFilterExpression") {
            partial_filter(filter, true)?;
        }
    }
    Ok(())
}

/// A `partialFilterExpression`: `$eq`, `$exists`, `$gt`/`$gte`/`$lt`/`$lte`, `$and` at the top.
fn partial_filter(filter: &Document, top: bool) -> Result<(), Refusal> {
    for (key, value) in filter {
        if key == "$and" && top {
            for clause in value.as_array().into_iter().flatten().filter_map(Bson::as_document) {
                partial_filter(clause, false)?;
            }
            continue;
        }
        if key.starts_with('$') {
            return Err(Refusal::feature(&format!("{key} in partialFilterExpression")));
        }
        let Bson::Document(condition) = value else { continue };
        for operator in condition.keys().filter(|operator| operator.starts_with('$')) {
            if operator == "$and" || !rules::PARTIAL_FILTER_OPERATORS.contains(&operator.as_str()) {
                return Err(Refusal::feature(&format!("{operator} in partialFilterExpression")));
            }
        }
    }
    Ok(())
}

/// `listCollections`: "The `type` key in the filter option is not supported."
pub(crate) fn list_collections(command: &Document) -> Result<(), Refusal> {
    fn mentions_type(filter: &Document) -> bool {
        filter.iter().any(|(key, value)| {
            key == "type"
                || (key.starts_with('$')
                    && value.as_array().into_iter().flatten().filter_map(Bson::as_document).any(mentions_type))
        })
    }
    match command.get_document("filter") {
        Ok(filter) if mentions_type(filter) => Err(Refusal::feature("type in the listCollections filter")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use crate::check::check;

    #[test]
    fn create_takes_json_schema_validation_and_nothing_else() {
        let schema = doc! {"$jsonSchema": {"bsonType": "object", "required": ["a"]}};
        let ok = doc! {"create": "c", "validator": schema, "validationLevel": "moderate",
        "validationAction": "error", "writeConcern": {"w": "majority"}, "$db": "app"};
        assert_eq!(check(&ok), Ok(()));
        assert_eq!(check(&doc! {"create": "c", "capped": false, "$db": "app"}), Ok(()));
        for (option, value) in [
            ("capped", bson::Bson::Boolean(true)),
            ("collation", doc! {"locale": "fr"}.into()),
            ("timeseries", doc! {"timeField": "t"}.into()),
            ("clusteredIndex", doc! {"key": {"_id": 1}}.into()),
            ("changeStreamPreAndPostImages", doc! {"enabled": true}.into()),
            ("viewOn", "base".into()),
            ("expireAfterSeconds", 5.into()),
            ("storageEngine", doc! {}.into()),
        ] {
            let refusal = check(&doc! {"create": "c", option: value, "$db": "app"}).expect_err(option);
            assert_eq!((refusal.code, refusal.errmsg), (303, format!("option {option} is currently not supported.")));
        }
    }

    #[test]
    fn validators_are_json_schema_with_documented_levels_and_actions() {
        let query_validator = doc! {"create": "c", "validator": {"qty": {"$type": "number"}}, "$db": "app"};
        assert_eq!(
            check(&query_validator).expect_err("query").errmsg,
            "Feature not supported: 'validator other than $jsonSchema'"
        );
        let warn = doc! {"create": "c", "validator": {"$jsonSchema": {}}, "validationAction": "warn", "$db": "app"};
        assert!(check(&warn).is_err());
        assert!(check(&doc! {"collMod": "c", "validationLevel": "everything", "$db": "app"}).is_err());
    }

    #[test]
    fn coll_mod_changes_validation_and_ttl_only() {
        let ttl = doc! {"collMod": "c", "index": {"keyPattern": {"t": 1}, "expireAfterSeconds": 60}, "$db": "app"};
        assert_eq!(check(&ttl), Ok(()));
        let hidden = doc! {"collMod": "c", "index": {"name": "t_1", "hidden": true}, "$db": "app"};
        assert_eq!(check(&hidden).expect_err("hidden").errmsg, "option index.hidden is currently not supported.");
        let images = doc! {"collMod": "c", "changeStreamPreAndPostImages": {"enabled": true}, "$db": "app"};
        assert!(check(&images).is_err());
        assert!(check(&doc! {"collMod": "c", "viewOn": "x", "pipeline": [], "$db": "app"}).is_err());
    }

    #[test]
    fn index_kinds_and_options_come_from_the_table() {
        let indexes = |spec: bson::Document| doc! {"createIndexes": "c", "indexes": [spec], "$db": "app"};
        let ok = doc! {"key": {"a": 1, "b": -1}, "name": "ab", "unique": true, "sparse": true, "background": true};
        assert_eq!(check(&indexes(ok)), Ok(()));
        assert_eq!(check(&indexes(doc! {"key": {"t": "text"}, "name": "t", "weights": {"t": 2}})), Ok(()));
        assert_eq!(check(&indexes(doc! {"key": {"loc": "2dsphere"}, "name": "l"})), Ok(()));
        assert_eq!(check(&indexes(doc! {"key": {"t": 1}, "name": "ttl", "expireAfterSeconds": 5})), Ok(()));
        for kind in ["hashed", "2d"] {
            let refusal = check(&indexes(doc! {"key": {"a": kind}, "name": "k"})).expect_err(kind);
            assert_eq!(refusal.errmsg, format!("Feature not supported: '{kind} index'"));
        }
        assert!(check(&indexes(doc! {"key": {"$**": 1}, "name": "w"})).is_err());
        for option in ["collation", "hidden", "wildcardProjection"] {
            let refusal = check(&indexes(doc! {"key": {"a": 1}, "name": "a", option: {}})).expect_err(option);
            assert_eq!(refusal.errmsg, format!("option {option} is currently not supported."));
        }
    }

    #[test]
    fn partial_filters_use_the_documented_operators() {
        let partial = |filter: bson::Document| {
            doc! {"createIndexes": "c", "indexes": [{"key": {"a": 1}, "name": "a", "partialFilterExpression": filter}],
            "$db": "app"}
        };
        let ok = doc! {"$and": [{"a": {"$exists": true}}, {"b": {"$gte": 5}}], "c": true};
        assert_eq!(check(&partial(ok)), Ok(()));
        assert!(check(&partial(doc! {"a": {"$type": "string"}})).is_err());
        assert!(check(&partial(doc! {"$or": [{"a": 1}]})).is_err());
        assert!(check(&partial(doc! {"$and": [{"$and": [{"a": 1}]}]})).is_err());
    }

    #[test]
    fn no_collection_creation_in_a_transaction() {
        let create = doc! {"create": "c", "$db": "app", "txnNumber": 1_i64, "autocommit": false};
        assert_eq!(check(&create).expect_err("txn").code, 303);
    }

    #[test]
    fn list_collections_filters_may_not_name_the_type() {
        assert!(check(&doc! {"listCollections": 1, "filter": {"type": "collection"}, "$db": "app"}).is_err());
        assert!(check(&doc! {"listCollections": 1, "filter": {"$or": [{"type": "view"}]}, "$db": "app"}).is_err());
        assert_eq!(check(&doc! {"listCollections": 1, "filter": {"name": "c"}, "$db": "app"}), Ok(()));
    }
}
