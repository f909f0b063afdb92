//! The whole of a service's `main`: parse arguments, load configuration, start logging and the
//! runtime, then hand over to the service's `run(config, shutdown)`.

use std::future::Future;
use std::process::ExitCode;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::cli::{self, Action};
use crate::config::{self, Validate};
use crate::http::HttpConfig;
use crate::probe;
use crate::telemetry::{self, LogConfig};

/// What the shell needs from a service's configuration.
pub trait ServiceConfig: DeserializeOwned + Serialize + Default + Validate {
    fn log(&self) -> &LogConfig;
    fn http(&self) -> &HttpConfig;
}

pub use crate::cli::{Command, CommandFuture};

/// Runs a service binary to completion and returns its exit status: 0 after a clean stop,
/// 1 when the service failed, 2 for bad arguments or configuration.
pub fn main<C, F, Fut, E, D, DFut>(name: &str, env_prefix: &str, run: F, doctor: D) -> ExitCode
where
    C: ServiceConfig,
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
    D: FnOnce(C) -> DFut,
    DFut: Future<Output = crate::doctor::Report>,
{
    main_with(name, env_prefix, run, doctor, &[])
}

/// [`main`] for a service with commands of its own.
pub fn main_with<C, F, Fut, E, D, DFut>(
    name: &str,
    env_prefix: &str,
    run: F,
    doctor: D,
    commands: &[Command<C>],
) -> ExitCode
where
    C: ServiceConfig,
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
    D: FnOnce(C) -> DFut,
    DFut: Future<Output = crate::doctor::Report>,
{
    let cli = match cli::parse(std::env::args(), name, env_prefix, commands) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and end with 0; usage errors go to stderr, 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let config: C = match config::load(cli.config_file.as_deref(), env_prefix) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    match &cli.action {
        Action::Run => {}
        Action::PrintConfig => {
            match serde_json::to_string_pretty(&config) {
                Ok(text) => println!("{text}"),
                Err(e) => eprintln!("{name}: cannot print configuration: {e}"),
            }
            return ExitCode::SUCCESS;
        }
        Action::Probe(path) => {
            let addr = probe::target(config.http().listen_addr);
            return match probe::check(addr, path, std::time::Duration::from_secs(3)) {
                Ok(_) => ExitCode::SUCCESS,
                Err(reason) => {
                    eprintln!("{name}: probe failed: {reason}");
                    ExitCode::FAILURE
                }
            };
        }
        Action::Doctor => {
            let Some(runtime) = runtime(name) else { return ExitCode::FAILURE };
            println!("{name} doctor\n");
            let report = runtime.block_on(doctor(config));
            print!("{report}");
            return if report.blockers() == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE };
        }
        Action::Command(command, matches) => {
            let Some(command) = commands.iter().find(|c| c.name() == command) else { return ExitCode::from(2) };
            let future = match command.start(config, matches) {
                Ok(future) => future,
                Err(e) => {
                    let _ = e.print();
                    return ExitCode::from(2);
                }
            };
            let Some(runtime) = runtime(name) else { return ExitCode::from(2) };
            return runtime.block_on(future);
        }
    }
    if let Err(e) = telemetry::init(config.log()) {
        eprintln!("{name}: {e}");
        return ExitCode::from(2);
    }
    let Some(runtime) = runtime(name) else { return ExitCode::FAILURE };
    let status = runtime.block_on(async {
        let shutdown = match crate::shutdown::on_signals() {
            Ok(token) => token,
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers");
                return ExitCode::FAILURE;
            }
        };
        match run(config, shutdown).await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "stopped on error");
                ExitCode::FAILURE
            }
        }
    });
    // A blocking Kafka call (init_transactions, a metadata request) may still wait for an
    // unreachable broker: the service has stopped, so do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    status
}

/// The multi-threaded runtime, or `None` (said on stderr) when it cannot start.
fn runtime(name: &str) -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            None
        }
    }
}
