use std::process::ExitCode;

use service_kit::app::Command;

fn main() -> ExitCode {
    let commands = [
        Command {
            name: "verify",
            help: "[--namespace db.coll …] [--full | --sample N] [--json] [--max-docs-per-second N] [--repair]: \
                   compares the target with the source (verify.source_uri); exit 0 equal, 1 differences, 3 unconfirmed \
                   (replication was not seen to pass them); --repair has cdc-source send the documents found \
                   different again, ordered with its stream, and checks them again",
            run: sink_writer::verify::command,
        },
        Command {
            name: "status",
            help: "[--json] [--max-lag-seconds N]: the last second every change of which is on the target, lag, \
                   open dead letters, DDL waiting, schema conflicts, cdc-source's checkpoint, last full verify, and \
                   whether to cut over now (exit 0 when ready) or what blocks it",
            run: sink_writer::status::command,
        },
        Command {
            name: "dead-letters",
            help:
                "list [--open] [--json] | retry [ID…|--all] [--json] | skip [ID…|--all] --reason TEXT [--json]: this \
                   group's dead letters; retry asks cdc-source to send each document's current state again (the dead \
                   letter stays open until it is applied), skip records the decision; open ones hold the consistency \
                   point",
            run: sink_writer::dead_letters::command::command,
        },
        Command {
            name: "failover",
            help: "record [--dry-run] [--json]: with the forward sink stopped, records in the new primary's metadata \
                   database the consistency point T of the old primary and the new primary's cluster time F \
                   (where the reverse capture starts)",
            run: sink_writer::failback::failover_command,
        },
        Command {
            name: "failback",
            help: "reconcile | switch-back | report [--dry-run] [--json]: with the reverse sink's settings; reconcile \
                   saves the old primary's writes after T in <metadata>.rollback and has the new primary send those \
                   documents again; switch-back checks the way back is complete and records the point the original \
                   direction restarts after; report lists what was rolled back per namespace",
            run: sink_writer::failback::failback_command,
        },
    ];
    service_kit::app::main_with(
        "sink-writer",
        sink_writer::ENV_PREFIX,
        sink_writer::run,
        sink_writer::doctor::run,
        &commands,
    )
}
