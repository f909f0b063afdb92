//! Query filters (`find`, `$match`, `count`, update and delete `q`, `arrayFilters`),
//! projections, and `$jsonSchema`.

use bson::{Bson, Document};

use super::expr;
use crate::refusal::Refusal;
use crate::rules;

/// A filter document: top-level logical operators, `$expr`, `$jsonSchema`, `$text`, and field
/// conditions.
pub(crate) fn filter(filter: &Document) -> Result<(), Refusal> {
    for (key, value) in filter {
        match key.as_str() {
            "$and" | "$or" | "$nor" => {
                for clause in value.as_array().into_iter().flatten() {
                    if let Bson::Document(clause) = clause {
                        self::filter(clause)?;
                    }
                }
            }
            "$expr" => expr::expression(value)?,
            "$jsonSchema" => json_schema(value)?,
            "$text" | "$comment" => {}
            operator if operator.starts_with('$') => return Err(Refusal::feature(operator)),
            _ => condition(value)?,
        }
    }
    Ok(())
}

/// The condition on one field: a value (equality) or an operator document.
pub(crate) fn condition(value: &Bson) -> Result<(), Refusal> {
    let Bson::Document(operators) = value else {
        return Ok(());
    };
    if !operators.keys().next().is_some_and(|key| key.starts_with('$')) {
        return Ok(()); // equality with an embedded document
    }
    for (operator, argument) in operators {
        if !rules::supported(rules::QUERY_OPERATORS, operator) {
            return Err(Refusal::feature(operator));
        }
        match operator.as_str() {
            "$not" => condition(argument)?,
            "$elemMatch" => elem_match(argument)?,
            "$all" | "$in" | "$nin" => list(operator, argument)?,
            "$geoWithin" | "$geoIntersects" | "$near" | "$nearSphere" => condition(argument)?,
            _ => {}
        }
    }
    Ok(())
}

/// `$elemMatch` takes operators (`{$gt: 1}`) or a filter on the elements' fields.
fn elem_match(argument: &Bson) -> Result<(), Refusal> {
    match argument {
        Bson::Document(inner) if inner.keys().next().is_some_and(|key| key.starts_with('$')) => condition(argument),
        Bson::Document(inner) => filter(inner),
        _ => Ok(()),
    }
}

/// `$all`, `$in`, `$nin`: no `$elemMatch` inside `$all`, and no `$`-prefixed fields in the
/// objects they list (functional differences: "Using $elemMatch within an $all expression",
/// "Dollar($) and dot(.) in field names").
fn list(operator: &str, argument: &Bson) -> Result<(), Refusal> {
    for element in argument.as_array().into_iter().flatten() {
        let Bson::Document(object) = element else { continue };
        if operator == "$all" && object.contains_key("$elemMatch") {
            return Err(Refusal::feature("$elemMatch within $all"));
        }
        if has_dollar_field(object) {
            return Err(Refusal::feature(&format!("$-prefixed fields in {operator}")));
        }
    }
    Ok(())
}

fn has_dollar_field(object: &Document) -> bool {
    object.iter().any(|(key, value)| {
        key.starts_with('$')
            || match value {
                Bson::Document(inner) => has_dollar_field(inner),
                Bson::Array(items) => items.iter().filter_map(Bson::as_document).any(has_dollar_field),
                _ => false,
            }
    })
}

/// A `find` projection: inclusions, the projection operators, and (since MongoDB 4.4)
/// aggregation expressions.
pub(crate) fn projection(projection: &Document) -> Result<(), Refusal> {
    for value in projection.values() {
        let Bson::Document(spec) = value else { continue };
        match spec.keys().next().map(String::as_str) {
            Some("$elemMatch") => elem_match(spec.get("$elemMatch").unwrap_or(&Bson::Null))?,
            Some(operator) if rules::supported(rules::PROJECTION_OPERATORS, operator) => {}
            _ => expr::expression(value)?,
        }
    }
    Ok(())
}

/// A `$jsonSchema` document: only the keywords DocumentDB understands, at every level.
pub(crate) fn json_schema(schema: &Bson) -> Result<(), Refusal> {
    let Bson::Document(schema) = schema else {
        return Ok(());
    };
    for (keyword, value) in schema {
        if !rules::JSON_SCHEMA_KEYWORDS.contains(&keyword.as_str()) {
            return Err(Refusal::feature(&format!("$jsonSchema keyword {keyword}")));
        }
        match keyword.as_str() {
            "properties" | "patternProperties" | "dependencies" => {
                for nested in value.as_document().into_iter().flat_map(Document::values) {
                    json_schema(nested)?;
                }
            }
            "items" | "allOf" | "anyOf" | "oneOf" => match value {
                Bson::Array(schemas) => schemas.iter().try_for_each(json_schema)?,
                other => json_schema(other)?,
            },
            "additionalItems" | "additionalProperties" | "not" => json_schema(value)?,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    #[test]
    fn supported_query_operators_pass() {
        let ok = doc! {
            "a": {"$gt": 1, "$lte": 5}, "b": {"$in": [1, 2]}, "c": {"$exists": true}, "d": {"$type": [-1, 127]},
            "$or": [{"e": 1}, {"f": {"$regex": "^x", "$options": "i"}}], "g": {"$elemMatch": {"h": {"$ne": 2}}},
            "i": {"$not": {"$size": 2}}, "$expr": {"$eq": ["$a", "$b"]}, "j": {"nested": "equality"},
            "k": {"$all": [1, 2]}, "l": {"$bitsAllSet": 3},
        };
        assert_eq!(filter(&ok), Ok(()));
    }

    #[test]
    fn unsupported_query_operators_are_refused() {
        assert_eq!(filter(&doc! {"$where": "true"}).expect_err("where").errmsg, "Feature not supported: '$where'");
        let geo = doc! {"loc": {"$geoWithin": {"$box": [[0, 0], [1, 1]]}}};
        assert_eq!(filter(&geo).expect_err("box").errmsg, "Feature not supported: '$box'");
        assert!(filter(&doc! {"$expr": {"$getField": "a"}}).is_err());
        assert!(filter(&doc! {"$and": [{"a": {"$sampleRate": 1}}]}).is_err());
    }

    #[test]
    fn elem_match_within_all_is_refused() {
        let query = doc! {"qty": {"$all": [{"$elemMatch": {"part": "xyz"}}, {"$elemMatch": {"num": 40}}]}};
        assert_eq!(filter(&query).expect_err("all").errmsg, "Feature not supported: '$elemMatch within $all'");
    }

    #[test]
    fn dollar_prefixed_fields_in_in_nin_all_are_refused() {
        assert!(filter(&doc! {"field": {"$all": [{"$a": 1}]}}).is_err());
        assert!(filter(&doc! {"field": {"$in": [{"x": {"$b": 1}}]}}).is_err());
        assert!(filter(&doc! {"field": {"$nin": [{"$c": 1}]}}).is_err());
        assert_eq!(filter(&doc! {"field": {"$in": [{"a": 1}]}}), Ok(()));
    }

    #[test]
    fn projections_allow_the_operators_and_check_expressions() {
        assert_eq!(projection(&doc! {"a": 1, "b": {"$slice": 2}, "c": {"$elemMatch": {"x": 1}}}), Ok(()));
        assert_eq!(projection(&doc! {"s": {"$meta": "textScore"}}), Ok(()));
        assert!(projection(&doc! {"a": {"$round": ["$x", 1]}}).is_err());
    }

    #[test]
    fn json_schema_keywords_documentdb_lacks_are_refused() {
        let schema = Bson::Document(doc! {"bsonType": "object", "required": ["a"],
        "properties": {"a": {"bsonType": "string", "maxLength": 3}}, "additionalProperties": false});
        assert_eq!(json_schema(&schema), Ok(()));
        let encrypted = Bson::Document(doc! {"properties": {"ssn": {"encrypt": {"keyId": []}}}});
        assert_eq!(
            json_schema(&encrypted).expect_err("encrypt").errmsg,
            "Feature not supported: '$jsonSchema keyword encrypt'"
        );
    }
}
