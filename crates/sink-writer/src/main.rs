use std::process::ExitCode;

use service_kit::app::Command;

fn main() -> ExitCode {
    let commands = [
        Command {
            name: "verify",
            help: "[--namespace db.coll …] [--full | --sample N] [--json] [--max-docs-per-second N]: compares the \
                   target with the source (verify.source_uri); exit 0 equal, 1 differences, 3 unconfirmed (replication \
                   was not seen to pass them)",
            run: sink_writer::verify::command,
        },
        Command {
            name: "status",
            help: "[--json] [--max-lag-seconds N]: the last second every change of which is on the target, lag, \
                   open dead letters, DDL waiting, schema conflicts, cdc-source's checkpoint, last full verify, and \
                   whether to cut over now (exit 0 when ready) or what blocks it",
            run: sink_writer::status::command,
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
