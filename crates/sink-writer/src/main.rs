use std::process::ExitCode;

fn main() -> ExitCode {
    service_kit::app::main("sink-writer", sink_writer::ENV_PREFIX, sink_writer::run, sink_writer::doctor::run)
}
