//! `docs/operations.md`'s DocumentDB table is the rule table's: fails when the two disagree.
//! `UPDATE_DOCS=1 cargo test -p docdb-rules --test operations_doc` rewrites the doc's block.

use docdb_rules::summary::{markdown, BEGIN, END};

#[test]
fn the_runbooks_documentdb_table_is_generated_from_the_rule_table() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/operations.md");
    let doc = std::fs::read_to_string(&path).expect("docs/operations.md");
    let (Some(begin), Some(end)) = (doc.find(BEGIN), doc.find(END)) else {
        panic!("docs/operations.md has no generated block: add the lines\n{BEGIN}\n{END}");
    };
    let start = begin + BEGIN.len() + 1;
    let generated = markdown();
    if doc.get(start..end) == Some(generated.as_str()) {
        return;
    }
    if std::env::var("UPDATE_DOCS").is_ok() {
        let updated = format!("{}{generated}{}", &doc[..start], &doc[end..]);
        std::fs::write(&path, updated).expect("rewrite docs/operations.md");
        return;
    }
    panic!(
        "docs/operations.md's DocumentDB table differs from the rule table; after a change of rules.rs run \
         UPDATE_DOCS=1 cargo test -p docdb-rules --test operations_doc and review the diff. Generated:\n{generated}"
    );
}
