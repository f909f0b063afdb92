//! docs/cli.md is every binary's `--help`, command by command, as clap renders it: this test
//! fails when a flag, a command or an exit status changes and the page does not.
//! `UPDATE_CLI_DOC=1 cargo test -p e2e --test cli_doc` writes the page again.

use std::fmt::Write;

fn section(page: &mut String, path: &str, command: &mut clap::Command) {
    let help = command.render_long_help().to_string();
    let _ = write!(page, "\n## `{path}`\n\n```text\n{}\n```\n", help.trim_end());
    let mut subcommands: Vec<clap::Command> = command.get_subcommands().cloned().collect();
    for sub in &mut subcommands {
        if sub.get_name() != "help" {
            section(page, &format!("{path} {}", sub.get_name()), sub);
        }
    }
}

fn page() -> String {
    let mut page = String::from(
        "# Command lines\n\nEvery binary's `--help`, as it prints it (generated: `UPDATE_CLI_DOC=1 cargo test -p e2e \
         --test cli_doc` writes this page, and the test fails while it differs from the binaries).\n",
    );
    let none: Vec<service_kit::app::Command<cdc_source::Config>> = Vec::new();
    let mut source = service_kit::cli::definition("cdc-source", cdc_source::ENV_PREFIX, &none);
    source.build();
    section(&mut page, "cdc-source", &mut source);
    let mut sink = service_kit::cli::definition("sink-writer", sink_writer::ENV_PREFIX, &sink_writer::cli::commands());
    sink.build();
    section(&mut page, "sink-writer", &mut sink);
    page
}

#[test]
fn docs_cli_md_is_the_binaries_help() {
    let path = test_support::workspace_root().join("docs/cli.md");
    let expected = page();
    if std::env::var("UPDATE_CLI_DOC").is_ok() {
        std::fs::write(&path, &expected).expect("write docs/cli.md");
    }
    let written = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        written == expected,
        "docs/cli.md differs from the binaries' --help: run UPDATE_CLI_DOC=1 cargo test -p e2e --test cli_doc"
    );
}
