//! Aggregation pipelines: stages from the table, what each stage holds, `$lookup`'s forms,
//! change streams, and pipeline-style updates.

use bson::{Bson, Document};

use super::{expr, query, write, Context};
use crate::refusal::Refusal;
use crate::rules;

/// The pipeline of an `aggregate` command.
pub(crate) fn aggregate(cx: Context<'_>, stages: &[Bson]) -> Result<(), Refusal> {
    let mut stages = stages.iter().filter_map(Bson::as_document).map(stage).peekable();
    if let Some(("$changeStream", options)) = stages.peek().copied() {
        stages.next();
        change_stream_options(options)?;
        for (name, spec) in stages {
            if !rules::CHANGE_STREAM_STAGES.contains(&name) {
                return Err(Refusal::stage(name));
            }
            contents(cx, name, spec)?;
        }
        return Ok(());
    }
    for (name, spec) in stages {
        if !rules::supported(rules::STAGES, name) {
            return Err(Refusal::stage(name));
        }
        if cx.in_transaction && rules::STAGES_NOT_IN_TRANSACTIONS.contains(&name) {
            return Err(Refusal::feature(&format!("{name} in a transaction")));
        }
        contents(cx, name, spec)?;
    }
    Ok(())
}

/// The pipeline of a pipeline-style update (`u: [...]`, `findAndModify.update: [...]`): its
/// stages, and the values it writes as `$literal`s, which are stored as they are.
pub(crate) fn update(stages: &[Bson]) -> Result<(), Refusal> {
    let cx = Context { db: "", in_transaction: false };
    for (name, spec) in stages.iter().filter_map(Bson::as_document).map(stage) {
        if !rules::UPDATE_PIPELINE_STAGES.contains(&name) {
            return Err(Refusal::stage(name));
        }
        contents(cx, name, spec)?;
        literals(spec)?;
    }
    Ok(())
}

/// Every `$literal` value inside `value` must be storable.
fn literals(value: &Bson) -> Result<(), Refusal> {
    match value {
        Bson::Document(object) => object.iter().try_for_each(|(key, argument)| match key.as_str() {
            "$literal" => write::stored(argument),
            _ => literals(argument),
        }),
        Bson::Array(items) => items.iter().try_for_each(literals),
        _ => Ok(()),
    }
}

/// A stage's name and its argument.
fn stage(stage: &Document) -> (&str, &Bson) {
    stage.iter().next().map_or(("", &Bson::Null), |(name, spec)| (name.as_str(), spec))
}

/// What a stage holds: filters, expressions, sub-pipelines.
fn contents(cx: Context<'_>, name: &str, spec: &Bson) -> Result<(), Refusal> {
    match (name, spec) {
        ("$match", Bson::Document(filter)) => query::filter(filter),
        ("$project" | "$addFields" | "$group" | "$redact" | "$bucket", _) => expr::expression(spec),
        ("$replaceRoot", Bson::Document(spec)) => expr::expression(spec.get("newRoot").unwrap_or(&Bson::Null)),
        ("$geoNear", Bson::Document(spec)) => spec.get_document("query").map_or(Ok(()), query::filter),
        ("$lookup", Bson::Document(spec)) => lookup(cx, spec),
        _ => Ok(()),
    }
}

/// `$lookup`: equality matches and uncorrelated subqueries; no correlated subqueries
/// (functional differences), neither with `let` nor in the concise form (observed errors).
fn lookup(cx: Context<'_>, spec: &Document) -> Result<(), Refusal> {
    let Ok(pipeline) = spec.get_array("pipeline") else {
        return Ok(());
    };
    if spec.contains_key("let") {
        return Err(Refusal::stage("$lookup on multiple join conditions and uncorrelated subquery"));
    }
    if spec.contains_key("localField") || spec.contains_key("foreignField") {
        return Err(Refusal::failed_to_parse("$lookup concise correlated subquery is not supported"));
    }
    aggregate(cx, pipeline)
}

/// `$changeStream`'s options: `resumeAfter` or `startAtOperationTime`, `fullDocument:
/// updateLookup`; no `startAfter`, no pre/post images, no expanded events.
fn change_stream_options(options: &Bson) -> Result<(), Refusal> {
    let Bson::Document(options) = options else {
        return Ok(());
    };
    for (option, value) in options {
        if !rules::supported(rules::CHANGE_STREAM_OPTIONS, option) {
            return Err(match option.as_str() {
                "startAfter" => Refusal::feature("startAfter"),
                // ASSUMED: fields DocumentDB 5.0's change streams do not know.
                _ => Refusal::unrecognized_field(option),
            });
        }
        if option == "fullDocument" {
            let mode = value.as_str().unwrap_or_default();
            if !rules::FULL_DOCUMENT_VALUES.contains(&mode) {
                return Err(Refusal::feature(&format!("fullDocument: {mode}")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bson::bson;

    use super::*;

    const CX: Context<'static> = Context { db: "app", in_transaction: false };

    fn run(pipeline: Bson) -> Result<(), Refusal> {
        aggregate(CX, pipeline.as_array().expect("array"))
    }

    #[test]
    fn supported_stages_pass() {
        let pipeline = bson!([{"$match": {"a": {"$gt": 1}}}, {"$sample": {"size": 3}}, {"$sort": {"_id": 1}},
            {"$group": {"_id": "$k", "n": {"$sum": 1}, "f": {"$first": "$a"}}}, {"$project": {"n": 1, "x": "$f"}},
            {"$addFields": {"y": {"$concat": ["a", "b"]}}}, {"$replaceRoot": {"newRoot": "$$ROOT"}},
            {"$unwind": "$list"}, {"$limit": 5}, {"$count": "n"}, {"$out": "other"}]);
        assert_eq!(run(pipeline), Ok(()));
    }

    #[test]
    fn stages_documentdb_lacks_are_refused_with_the_observed_message() {
        for stage in [
            "$facet",
            "$bucketAuto",
            "$graphLookup",
            "$merge",
            "$set",
            "$unset",
            "$replaceWith",
            "$unionWith",
            "$setWindowFields",
            "$sortByCount",
            "$densify",
            "$fill",
            "$documents",
        ] {
            let refusal = run(bson!([{stage: {}}])).expect_err(stage);
            assert_eq!((refusal.code, refusal.errmsg), (304, format!("Aggregation stage not supported: '{stage}'")));
        }
    }

    #[test]
    fn expressions_inside_stages_are_checked() {
        assert!(run(bson!([{"$project": {"r": {"$round": "$a"}}}])).is_err());
        assert!(run(bson!([{"$group": {"_id": null, "s": {"$stdDevSamp": "$a"}}}])).is_err());
        assert!(run(bson!([{"$match": {"$where": "1"}}])).is_err());
        assert!(run(bson!([{"$replaceRoot": {"newRoot": {"$getField": "a"}}}])).is_err());
    }

    #[test]
    fn lookup_allows_equality_and_uncorrelated_subqueries_only() {
        let equality = bson!([{"$lookup": {"from": "b", "localField": "x", "foreignField": "y", "as": "j"}}]);
        assert_eq!(run(equality), Ok(()));
        let uncorrelated = bson!([{"$lookup": {"from": "b", "pipeline": [{"$match": {"k": 1}}], "as": "j"}}]);
        assert_eq!(run(uncorrelated), Ok(()));
        let correlated = bson!([{"$lookup": {"from": "b", "let": {"v": "$x"}, "pipeline": [], "as": "j"}}]);
        assert_eq!(run(correlated).expect_err("let").code, 304);
        let concise =
            bson!([{"$lookup": {"from": "b", "localField": "x", "foreignField": "y", "pipeline": [], "as": "j"}}]);
        let refusal = run(concise).expect_err("concise");
        assert_eq!(
            (refusal.code, refusal.errmsg.as_str()),
            (9, "$lookup concise correlated subquery is not supported")
        );
        let nested = bson!([{"$lookup": {"from": "b", "pipeline": [{"$facet": {}}], "as": "j"}}]);
        assert!(run(nested).is_err());
    }

    #[test]
    fn change_streams_take_resume_after_start_at_operation_time_and_update_lookup() {
        let ok = bson!([{"$changeStream": {"fullDocument": "updateLookup", "resumeAfter": {"_data": "00"}}},
            {"$match": {"operationType": "insert"}}, {"$project": {"x": 1}}, {"$addFields": {"y": 1}},
            {"$redact": "$$KEEP"}, {"$replaceRoot": {"newRoot": "$$ROOT"}}]);
        assert_eq!(run(ok), Ok(()));
        let at = bson!([{"$changeStream": {"startAtOperationTime": bson::Timestamp { time: 1, increment: 0 },
            "allChangesForCluster": true}}]);
        assert_eq!(run(at), Ok(()));
    }

    #[test]
    fn change_stream_options_documentdb_lacks_are_refused() {
        let expanded = run(bson!([{"$changeStream": {"showExpandedEvents": true}}])).expect_err("expanded");
        assert_eq!((expanded.code, expanded.errmsg.as_str()), (9, "Unrecognized field: 'showExpandedEvents'"));
        let after = run(bson!([{"$changeStream": {"startAfter": {"_data": "00"}}}])).expect_err("startAfter");
        assert_eq!(after.errmsg, "Feature not supported: 'startAfter'");
        assert!(run(bson!([{"$changeStream": {"fullDocumentBeforeChange": "whenAvailable"}}])).is_err());
        let post = run(bson!([{"$changeStream": {"fullDocument": "required"}}])).expect_err("post-image");
        assert_eq!(post.errmsg, "Feature not supported: 'fullDocument: required'");
    }

    #[test]
    fn change_stream_pipelines_hold_only_the_documented_stages() {
        for stage in ["$set", "$unset", "$changeStreamSplitLargeEvent", "$replaceWith", "$limit"] {
            let refusal = run(bson!([{"$changeStream": {}}, {stage: {}}])).expect_err(stage);
            assert_eq!(refusal.errmsg, format!("Aggregation stage not supported: '{stage}'"));
        }
    }

    #[test]
    fn transactions_hold_no_out_or_statistics_stages() {
        let cx = Context { db: "app", in_transaction: true };
        let out = bson!([{"$match": {}}, {"$out": "x"}]);
        assert_eq!(aggregate(cx, out.as_array().expect("array")).expect_err("out").code, 303);
    }

    #[test]
    fn pipeline_updates_take_the_supported_update_stages() {
        let ok = bson!([{"$addFields": {"a": {"$literal": {"x": 1}}}}, {"$replaceRoot": {"newRoot": {"$literal": {}}}},
            {"$project": {"gone": 0}}]);
        assert_eq!(update(ok.as_array().expect("array")), Ok(()));
        let with = bson!([{"$replaceWith": {"$literal": {"a": 1}}}]);
        assert_eq!(update(with.as_array().expect("array")).expect_err("replaceWith").code, 304);
        let dollar = bson!([{"$replaceRoot": {"newRoot": {"$literal": {"_id": 1, "$price": 5}}}}]);
        let refusal = update(dollar.as_array().expect("array")).expect_err("stored $ name");
        assert_eq!(refusal.errmsg, "Document can't have $ prefixed field names: $price");
        let set_field =
            bson!([{"$replaceRoot": {"newRoot": {"$setField": {"field": "a", "input": "$$ROOT", "value": 1}}}}]);
        assert!(update(set_field.as_array().expect("array")).is_err());
    }
}
