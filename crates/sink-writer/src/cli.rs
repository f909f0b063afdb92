//! The service's own commands (beside running, `doctor`, `--print-config` and `--probe`): their
//! arguments live with each command, their help and exit status here; docs/cli.md is their
//! `--help`, kept equal by `tests/e2e/tests/cli_doc.rs`.

use service_kit::app::Command;

use crate::config::Config;

/// `verify`, `status` and `dead-letters`.
pub fn commands() -> Vec<Command<Config>> {
    vec![
        Command::new(
            "verify",
            "Compare the target with the source (verify.source_uri), document by document, with options and indexes",
            "0 equal, 1 differences, 2 errors, 3 unconfirmed (differences replication was not seen to pass)",
            crate::verify::command,
        ),
        Command::new(
            "status",
            "The last second every change of which is on the target, lag, open dead letters, DDL waiting, schema \
         conflicts, cdc-source's checkpoint, the last full verify, and whether to cut over now",
            "0 ready to cut over, 1 something blocks it (listed), 2 errors",
            crate::status::command,
        ),
        Command::new(
            "dead-letters",
            "This group's dead letters; retry has cdc-source send a document's current state again, skip records the \
         decision; open ones hold the consistency point",
            "0 done, 1 a retry was not answered (or refused) by cdc-source in time, 2 errors",
            crate::dead_letters::command::command,
        ),
    ]
}
