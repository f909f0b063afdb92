use std::process::ExitCode;

fn main() -> ExitCode {
    service_kit::app::main("cdc-source", cdc_source::ENV_PREFIX, cdc_source::run, cdc_source::doctor::run)
}
