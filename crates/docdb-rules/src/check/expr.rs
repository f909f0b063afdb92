//! Aggregation expressions: operators and accumulators from the table, `$literal` left alone,
//! system variables (`$$NAME`) from the table.

use bson::Bson;

use crate::refusal::Refusal;
use crate::rules;

/// An expression anywhere: an operator document, an object literal, an array, a field path or
/// a variable.
pub(crate) fn expression(value: &Bson) -> Result<(), Refusal> {
    match value {
        Bson::String(path) => variable(path),
        Bson::Array(items) => items.iter().try_for_each(expression),
        Bson::Document(object) => {
            for (key, argument) in object {
                if !key.starts_with('$') {
                    expression(argument)?; // an object literal's field
                } else if key == "$literal" {
                    // Its argument is a value, never evaluated.
                } else if !rules::supported(rules::EXPRESSIONS, key) {
                    return Err(Refusal::expression(key));
                } else {
                    expression(argument)?;
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `$$NAME` system variables come from the table; user variables (`$$this`, `$$value`, names
/// bound by `$let`, `$map`, `$filter`) start with a lowercase letter.
fn variable(path: &str) -> Result<(), Refusal> {
    let Some(name) = path.strip_prefix("$$").map(|rest| rest.split('.').next().unwrap_or(rest)) else {
        return Ok(());
    };
    let system = name.chars().next().is_some_and(|c| c.is_ascii_uppercase());
    if system && !rules::supported(rules::SYSTEM_VARIABLES, name) {
        return Err(Refusal::expression(&format!("$${name}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bson::{bson, doc};

    use super::*;

    #[test]
    fn supported_operators_pass_at_any_depth() {
        let ok = bson!({"total": {"$sum": {"$multiply": ["$price", {"$ifNull": ["$qty", 0]}]}},
            "day": {"$dateToString": {"format": "%Y", "date": "$at"}}, "root": "$$ROOT",
            "names": {"$map": {"input": "$items", "as": "i", "in": "$$i.name"}}, "n": {"$switch": {"branches": []}}});
        assert_eq!(expression(&ok), Ok(()));
    }

    #[test]
    fn operators_documentdb_lacks_are_refused_with_the_observed_message() {
        for operator in ["$setField", "$unsetField", "$getField", "$round", "$trunc", "$pow", "$function", "$isNumber"]
        {
            let refusal = expression(&bson!({"x": {operator: ["$a"]}})).expect_err(operator);
            assert_eq!(
                (refusal.code, refusal.errmsg),
                (304, format!("Aggregation project operator not supported: '{operator}'"))
            );
        }
        assert!(expression(&bson!({"$cond": [true, {"$stdDevPop": "$a"}, 0]})).is_err());
    }

    #[test]
    fn literal_arguments_are_values_not_expressions() {
        assert_eq!(expression(&Bson::Document(doc! {"$literal": {"$setField": 1, "$$NOW": "$$CURRENT"}})), Ok(()));
    }

    #[test]
    fn system_variables_come_from_the_table() {
        for variable in ["$$CURRENT", "$$REMOVE", "$$NOW", "$$CLUSTER_TIME"] {
            assert!(expression(&Bson::String(variable.into())).is_err(), "{variable}");
        }
        for variable in ["$$ROOT.a", "$$KEEP", "$$this", "$$value.total", "$field"] {
            assert_eq!(expression(&Bson::String(variable.into())), Ok(()), "{variable}");
        }
    }
}
