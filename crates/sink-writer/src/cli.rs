//! The service's own commands (beside running, `doctor`, `--print-config` and `--probe`): their
//! arguments live with each command, their help and exit status here; docs/cli.md is their
//! `--help`, kept equal by `tests/e2e/tests/cli_doc.rs`.

use service_kit::app::Command;

use crate::config::Config;

/// `verify`, `status`, `dead-letters`, `failover` and `failback`.
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
        Command::new(
            "failover",
            "At a failover, with the forward sink's settings and the sink stopped: records the old primary's \
             consistency point T and the new primary's cluster time F (where the reverse capture starts)",
            "0 done, 1 refused (every unmet precondition listed) or not complete, 2 errors",
            crate::failback::failover_command,
        ),
        Command::new(
            "failback",
            "Going back without a full copy, with the reverse sink's settings: reconcile the old primary's writes \
             after T, switch back, report what was rolled back",
            "0 done, 1 refused (every unmet precondition listed) or not complete (run it again), 2 errors",
            crate::failback::failback_command,
        ),
    ]
}
