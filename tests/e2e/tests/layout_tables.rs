//! Every crate's map is true: each `lib.rs` and `mod.rs` (or `name.rs` of a folder `name/`)
//! opens with a table naming every file and folder beside it, and names none that is gone.
//! No servers.

use std::collections::BTreeSet;
use std::path::Path;

/// The names in backticks in the table rows of a file's leading `//!` comment: all of them, and
/// those of the first column.
fn table(owner: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let text = std::fs::read_to_string(owner).expect("read");
    let (mut all, mut first) = (BTreeSet::new(), BTreeSet::new());
    for line in text.lines().take_while(|l| l.starts_with("//!")) {
        let Some(row) = line.strip_prefix("//! |") else { continue };
        for (i, cell) in row.split('|').enumerate() {
            for name in cell.split('`').skip(1).step_by(2) {
                all.insert(name.to_string());
                if i == 0 {
                    first.insert(name.to_string());
                }
            }
        }
    }
    (all, first)
}

fn check(dir: &Path, owner: &Path, problems: &mut Vec<String>) {
    let (named, first_column) = table(owner);
    let mut present = BTreeSet::new();
    for entry in std::fs::read_dir(dir).expect("list") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().to_string();
        let is_dir = entry.file_type().expect("type").is_dir();
        if is_dir {
            present.insert(format!("{name}/"));
            // Test fixtures of a module (`convert/tests/`) are its own business.
            if name == "tests" {
                continue;
            }
            let sub = entry.path();
            let owner = ["mod.rs", "lib.rs"].iter().map(|o| sub.join(o)).find(|o| o.exists());
            match owner.or_else(|| Some(dir.join(format!("{name}.rs"))).filter(|o| o.exists())) {
                Some(owner) => check(&sub, &owner, problems),
                None => problems.push(format!("{}: a folder without mod.rs or {name}.rs", sub.display())),
            }
        } else if name.ends_with(".rs") {
            present.insert(name);
        }
    }
    let owner_name = owner.file_name().expect("name").to_string_lossy().to_string();
    for entry in &present {
        let own = owner.parent() == Some(dir) && *entry == owner_name;
        if !own && entry != "main.rs" && !named.contains(entry) {
            problems.push(format!("{}: `{entry}` is not in its Layout table", owner.display()));
        }
    }
    for name in first_column.iter().filter(|n| n.ends_with(".rs") || n.ends_with('/')) {
        if owner.parent() == Some(dir) && !present.contains(name) {
            problems.push(format!("{}: the Layout table names `{name}`, which is gone", owner.display()));
        }
    }
}

#[test]
fn every_lib_and_mod_names_every_file_beside_it() {
    let crates = test_support::workspace_root().join("crates");
    let mut problems = Vec::new();
    for krate in std::fs::read_dir(&crates).expect("crates") {
        let src = krate.expect("crate").path().join("src");
        let lib = src.join("lib.rs");
        if lib.exists() {
            check(&src, &lib, &mut problems);
        }
    }
    assert!(problems.is_empty(), "Layout tables out of date:\n{}", problems.join("\n"));
}
