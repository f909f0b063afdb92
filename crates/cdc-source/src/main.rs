use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    service_kit::app::main("cdc-source", cdc_source::ENV_PREFIX, cdc_source::run, cdc_source::doctor::run)
}
