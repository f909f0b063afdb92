//! The rule table's collection, index and document rules as the runbook's Markdown table: what
//! a DocumentDB target carries and what replication does with the rest. `docs/operations.md`
//! holds this text between two markers; `tests/operations_doc.rs` fails when they differ
//! (`UPDATE_DOCS=1` rewrites the doc). Pure.

use crate::rules::{self, Table};

/// The first marker line of the generated block in `docs/operations.md`.
pub const BEGIN: &str = "<!-- generated from crates/docdb-rules/src/rules.rs by summary.rs: \
UPDATE_DOCS=1 cargo test -p docdb-rules --test operations_doc rewrites it -->";
/// The last marker line.
pub const END: &str = "<!-- end of generated block -->";

/// Index fields that describe no property (name, key, build version, namespace, build mode).
const INDEX_FIELDS: &[&str] = &["key", "name", "v", "ns", "background"];

/// The table, one row per kind of thing.
pub fn markdown() -> String {
    let (options_yes, options_no) = split(rules::COLLECTION_OPTIONS, &["viewOn", "pipeline"]);
    let (kinds_yes, kinds_no) = split(rules::INDEX_KINDS, &[]);
    let (props_yes, props_no) = split(rules::INDEX_OPTIONS, INDEX_FIELDS);
    let props_no: Vec<&str> = props_no.into_iter().filter(|p| *p != "collation").collect();
    let mut kinds_no = codes(&kinds_no);
    if !rules::WILDCARD_INDEXES {
        kinds_no.push_str(", wildcard (`$**`)");
    }
    let index_collmod: Vec<&str> =
        rules::COLL_MOD_INDEX_OPTIONS.iter().copied().filter(|o| !matches!(*o, "name" | "keyPattern")).collect();
    let collmod: Vec<String> = rules::COLL_MOD_OPTIONS
        .iter()
        .map(|o| match *o {
            "index" => format!("an index's {}", codes(&index_collmod)),
            other => format!("`{other}`"),
        })
        .collect();
    let rows = [
        (
            "collection options".to_string(),
            format!(
                "{} (`$jsonSchema` only; levels {}; actions {})",
                codes(&options_yes),
                codes(rules::VALIDATION_LEVELS),
                codes(rules::VALIDATION_ACTIONS)
            ),
            format!("{}: left out, the collection created with the rest; reported", codes(&options_no)),
        ),
        (
            "`$jsonSchema` keywords".to_string(),
            codes(rules::JSON_SCHEMA_KEYWORDS),
            "any other: the validator left out; reported".to_string(),
        ),
        ("views".to_string(), "none".to_string(), "not created (no `viewOn`/`pipeline`); reported".to_string()),
        (
            "index kinds".to_string(),
            format!("single field, compound, multikey, {}", codes(&kinds_yes)),
            format!("{kinds_no}: not built; reported"),
        ),
        (
            "index properties".to_string(),
            codes(&props_yes),
            format!(
                "`collation`: the index built without it, reported (the `simple` collation is no loss); {}: \
                 the index not built; reported",
                codes(&props_no)
            ),
        ),
        (
            "partial filter operators".to_string(),
            format!("{} (`$and` at the top only)", codes(rules::PARTIAL_FILTER_OPERATORS)),
            "any other: the index not built; reported".to_string(),
        ),
        (
            "changes (`collMod`)".to_string(),
            collmod.join(", "),
            "any other (e.g. `hidden`): refused; reported".to_string(),
        ),
        (
            "documents".to_string(),
            "every BSON type but those on the right".to_string(),
            format!(
                "field names with a `.` or a leading `$`, values of type {}: dead-lettered with the reason \
                 (data the target does not get)",
                rules::UNSUPPORTED_TYPES.join(", ")
            ),
        ),
    ];
    let mut out =
        String::from("| | a DocumentDB 5.0 target carries | not carried: what happens instead |\n|---|---|---|\n");
    for (what, yes, no) in rows {
        out.push_str(&format!("| {what} | {yes} | {no} |\n"));
    }
    out
}

/// The names of `table` it supports and those it does not, leaving out `skip`.
fn split(table: Table, skip: &[&str]) -> (Vec<&'static str>, Vec<&'static str>) {
    let names = table.iter().filter(|(name, _)| !skip.contains(name));
    let yes = names.clone().filter(|(_, yes)| *yes).map(|(name, _)| *name).collect();
    let no = names.filter(|(_, yes)| !*yes).map(|(name, _)| *name).collect();
    (yes, no)
}

/// `a`, `b`, `c`.
fn codes(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_says_what_is_carried_and_what_is_not() {
        let text = markdown();
        let row = |what: &str| text.lines().find(|l| l.starts_with(&format!("| {what} |"))).unwrap_or("").to_string();
        assert!(row("collection options").contains("`validator`") && row("collection options").contains("`capped`"));
        assert!(row("index kinds").contains("`2dsphere`") && row("index kinds").contains("wildcard"));
        assert!(
            row("index properties").contains("`hidden`: the index not built")
                || row("index properties").contains("`hidden`,")
        );
        assert!(row("documents").contains("Symbol"));
        assert_eq!(text.lines().count(), 10, "{text}");
    }
}
