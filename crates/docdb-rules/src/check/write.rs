//! Writes: the documents DocumentDB would store (field names, BSON types), update operators,
//! and the statements of `update`, `delete` and `findAndModify`.

use bson::{Bson, Document};

use super::{natural, options, pipeline, query};
use crate::refusal::Refusal;
use crate::rules;

/// A document to store: no field name with a dot or a leading `$` (ASSUMED, see `rules`), no
/// BSON type DocumentDB lacks, at any depth.
pub(crate) fn stored(document: &Bson) -> Result<(), Refusal> {
    match document {
        Bson::Document(fields) => fields.iter().try_for_each(|(name, value)| {
            if name.starts_with('$') {
                return Err(Refusal::bad_value(format!("Document can't have $ prefixed field names: {name}")));
            }
            if name.contains('.') {
                return Err(Refusal::bad_value(format!("Document can't have '.' in field names: '{name}'")));
            }
            stored(value)
        }),
        Bson::Array(items) => items.iter().try_for_each(stored),
        other => data_type(other),
    }
}

/// DBPointer, JavaScript (with or without scope), Symbol and Undefined: "Data types: No".
fn data_type(value: &Bson) -> Result<(), Refusal> {
    let name = match value {
        Bson::DbPointer(_) => "DBPointer",
        Bson::JavaScriptCode(_) => "JavaScript",
        Bson::JavaScriptCodeWithScope(_) => "JavaScript (with scope)",
        Bson::Symbol(_) => "Symbol",
        Bson::Undefined => "Undefined",
        _ => return Ok(()),
    };
    debug_assert!(rules::UNSUPPORTED_TYPES.contains(&name));
    Err(Refusal::feature(&format!("data type {name}")))
}

/// One statement of `update`: filter, update (operators, replacement or pipeline), array filters.
pub(crate) fn update_statement(statement: &Document) -> Result<(), Refusal> {
    options(statement, rules::REFUSED_OPTIONS)?;
    natural(statement, "hint")?;
    statement.get_document("q").map_or(Ok(()), query::filter)?;
    array_filters(statement)?;
    statement.get("u").map_or(Ok(()), update)
}

/// One statement of `delete`.
pub(crate) fn delete_statement(statement: &Document) -> Result<(), Refusal> {
    options(statement, rules::REFUSED_OPTIONS)?;
    natural(statement, "hint")?;
    statement.get_document("q").map_or(Ok(()), query::filter)
}

/// `findAndModify`: filter, sort, projection, update, array filters.
pub(crate) fn find_and_modify(command: &Document) -> Result<(), Refusal> {
    options(command, rules::REFUSED_OPTIONS)?;
    natural(command, "sort")?;
    natural(command, "hint")?;
    command.get_document("query").map_or(Ok(()), query::filter)?;
    command.get_document("fields").map_or(Ok(()), query::projection)?;
    array_filters(command)?;
    command.get("update").map_or(Ok(()), update)
}

fn array_filters(statement: &Document) -> Result<(), Refusal> {
    let filters = statement.get_array("arrayFilters").map(Vec::as_slice).unwrap_or(&[]);
    filters.iter().filter_map(Bson::as_document).try_for_each(query::filter)
}

/// An update: operators (`{$set: …}`), a replacement document, or a pipeline.
fn update(update: &Bson) -> Result<(), Refusal> {
    match update {
        Bson::Array(stages) => pipeline::update(stages),
        Bson::Document(operators) if operators.keys().next().is_some_and(|key| key.starts_with('$')) => {
            operators.iter().try_for_each(|(operator, fields)| update_operator(operator, fields))
        }
        replacement => stored(replacement),
    }
}

fn update_operator(operator: &str, fields: &Bson) -> Result<(), Refusal> {
    if !rules::supported(rules::UPDATE_OPERATORS, operator) {
        return Err(Refusal::feature(operator));
    }
    let Bson::Document(fields) = fields else {
        return Ok(());
    };
    for value in fields.values() {
        match operator {
            "$pull" => match value {
                Bson::Document(condition) if condition.keys().next().is_some_and(|k| k.starts_with('$')) => {
                    query::condition(value)?
                }
                Bson::Document(condition) => query::filter(condition)?,
                _ => {}
            },
            "$push" | "$addToSet" => push(value)?,
            // Values that are operators or names, not stored documents.
            "$currentDate" | "$rename" | "$unset" | "$bit" | "$pop" => {}
            _ => stored(value)?,
        }
    }
    Ok(())
}

/// `$push` / `$addToSet`: a value, or `$each` with the modifiers DocumentDB has.
fn push(value: &Bson) -> Result<(), Refusal> {
    let Bson::Document(spec) = value else {
        return stored(value);
    };
    if !spec.contains_key("$each") {
        return stored(value);
    }
    for (modifier, argument) in spec {
        if !rules::supported(rules::UPDATE_MODIFIERS, modifier) {
            return Err(Refusal::feature(modifier));
        }
        if modifier == "$each" {
            stored(argument)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bson::{bson, doc, oid::ObjectId, JavaScriptCodeWithScope};

    use crate::check::check;

    fn insert(document: bson::Document) -> bson::Document {
        doc! {"insert": "c", "documents": [document], "$db": "app"}
    }

    #[test]
    fn stored_field_names_with_dots_or_dollars_are_refused() {
        let dotted = check(&insert(doc! {"_id": 1, "a": {"b.c": 1}})).expect_err("dot");
        assert_eq!((dotted.code, dotted.errmsg.as_str()), (2, "Document can't have '.' in field names: 'b.c'"));
        let dollar = check(&insert(doc! {"_id": 1, "list": [{"$price": 5}]})).expect_err("dollar");
        assert_eq!(dollar.errmsg, "Document can't have $ prefixed field names: $price");
        let dbref = check(&insert(doc! {"_id": 1, "r": {"$ref": "c", "$id": 1}}));
        assert!(dbref.is_err(), "DBRefs: No");
        assert_eq!(check(&insert(doc! {"_id": ObjectId::new(), "a": {"b": [1, {"c": "d.e"}]}})), Ok(()));
    }

    #[test]
    fn bson_types_documentdb_lacks_are_refused() {
        let symbol = check(&insert(doc! {"_id": 1, "s": bson::Bson::Symbol("x".into())})).expect_err("symbol");
        assert_eq!((symbol.code, symbol.errmsg.as_str()), (303, "Feature not supported: 'data type Symbol'"));
        assert!(check(&insert(doc! {"_id": 1, "u": bson::Bson::Undefined})).is_err());
        assert!(check(&insert(doc! {"_id": 1, "j": bson::Bson::JavaScriptCode("f()".into())})).is_err());
        let scoped = JavaScriptCodeWithScope { code: "f()".into(), scope: doc! {} };
        assert!(check(&insert(doc! {"_id": 1, "j": [scoped]})).is_err());
    }

    #[test]
    fn updates_check_filters_operators_values_and_replacements() {
        let update = |statement: bson::Document| doc! {"update": "c", "updates": [statement], "$db": "app"};
        let ok = doc! {"q": {"_id": 1}, "u": {"$set": {"a.b": 1, "c": {"d": 2}}, "$unset": {"x": ""},
        "$push": {"l": {"$each": [1], "$slice": -2}}, "$currentDate": {"t": {"$type": "date"}}}, "upsert": true};
        assert_eq!(check(&update(ok)), Ok(()));
        assert!(check(&update(doc! {"q": {}, "u": {"$set": {"a": {"$x": 1}}}})).is_err());
        assert!(check(&update(doc! {"q": {}, "u": {"a.b": 1}})).is_err(), "replacement with a dotted name");
        assert!(check(&update(doc! {"q": {"$where": "1"}, "u": {"a": 1}})).is_err());
        assert!(check(&update(doc! {"q": {}, "u": {"a": 1}, "collation": {"locale": "fr"}})).is_err());
        assert!(check(&update(doc! {"q": {}, "u": [{"$replaceWith": {"$literal": {"a": 1}}}]})).is_err());
        assert_eq!(check(&update(doc! {"q": {}, "u": {"$pull": {"l": {"$gt": 3}}}})), Ok(()));
        assert!(check(&update(doc! {"q": {}, "u": {"$pull": {"l": {"$where": "1"}}}})).is_err());
        let filters = doc! {"q": {}, "u": {"$set": {"a.$[e]": 1}}, "arrayFilters": [{"e": {"$round": 1}}]};
        assert!(check(&update(filters)).is_err());
    }

    #[test]
    fn find_and_modify_checks_its_parts() {
        let ok = doc! {"findAndModify": "c", "query": {"_id": 1}, "update": {"$inc": {"n": 1}}, "$db": "app"};
        assert_eq!(check(&ok), Ok(()));
        let replacement = doc! {"findAndModify": "c", "query": {}, "update": {"$bad": 1}, "$db": "app"};
        assert!(check(&replacement).is_err());
        let pipeline = bson!({"findAndModify": "c", "update": [{"$set": {"a": 1}}], "$db": "app"});
        assert!(check(pipeline.as_document().expect("doc")).is_err());
    }

    #[test]
    fn deletes_check_their_filters() {
        let delete = doc! {"delete": "c", "deletes": [{"q": {"a": {"$in": [{"$x": 1}]}}, "limit": 0}], "$db": "app"};
        assert!(check(&delete).is_err());
        assert_eq!(check(&doc! {"delete": "c", "deletes": [{"q": {"_id": 1}, "limit": 1}], "$db": "app"}), Ok(()));
    }
}
