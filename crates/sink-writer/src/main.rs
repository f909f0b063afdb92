use std::process::ExitCode;

fn main() -> ExitCode {
    let commands = sink_writer::cli::commands();
    service_kit::app::main_with(
        "sink-writer",
        sink_writer::ENV_PREFIX,
        sink_writer::run,
        sink_writer::doctor::run,
        &commands,
    )
}
