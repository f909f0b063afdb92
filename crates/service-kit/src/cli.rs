//! Command lines, shared by both services (clap): the shell's own flags (`--config FILE` or
//! `--config=FILE`, `--print-config`, `--probe PATH`, `--version`, `doctor`) and each service's
//! commands, every one with its `--help` and its exit status listed there.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;

use clap::{Arg, ArgAction, ArgMatches};

/// The version every binary reports: the package's, with the git revision it was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("SERVICE_KIT_GIT_REVISION"), ")");

/// What a service's own command runs: its exit status, on the async runtime.
pub type CommandFuture = Pin<Box<dyn Future<Output = ExitCode> + Send>>;

type Runner<C> = Box<dyn Fn(C, &ArgMatches) -> Result<CommandFuture, clap::Error>>;

/// A command of a service's own: its arguments (a clap derive struct), help and exit status,
/// and what it runs with the configuration.
pub struct Command<C> {
    definition: clap::Command,
    run: Runner<C>,
}

impl<C: 'static> Command<C> {
    /// `name`, one line `about` it, what its exit statuses mean, and `run` with its parsed
    /// arguments `A`.
    pub fn new<A>(
        name: &'static str,
        about: &'static str,
        exit_status: &'static str,
        run: fn(C, A) -> CommandFuture,
    ) -> Self
    where
        A: clap::Args + clap::FromArgMatches + 'static,
    {
        // After the arguments: their struct's doc comment would be the about otherwise.
        let definition =
            A::augment_args(clap::Command::new(name)).about(about).after_help(format!("Exit status: {exit_status}"));
        Self { definition, run: Box::new(move |config, matches| Ok(run(config, A::from_arg_matches(matches)?))) }
    }
}

impl<C> Command<C> {
    pub fn name(&self) -> &str {
        self.definition.get_name()
    }

    /// Runs it with the arguments clap matched for it.
    pub fn start(&self, config: C, matches: &ArgMatches) -> Result<CommandFuture, clap::Error> {
        (self.run)(config, matches)
    }
}

/// Parses one command's arguments alone (its unit tests).
pub fn parse_command<A>(name: &'static str, args: &[&str]) -> Result<A, clap::Error>
where
    A: clap::Args + clap::FromArgMatches,
{
    let matches = A::augment_args(clap::Command::new(name))
        .try_get_matches_from(std::iter::once(name).chain(args.iter().copied()))?;
    A::from_arg_matches(&matches)
}

/// What the binary was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run the service until SIGTERM/SIGINT.
    Run,
    /// Print the effective configuration (secrets redacted) as JSON and exit.
    PrintConfig,
    /// GET this path from the service's own HTTP port; exit 0 on 200 (container health checks).
    Probe(String),
    /// Check the configuration against the real deployment, print a report, exit 1 on blockers.
    Doctor,
    /// A command of the service's own (e.g. `verify`), with what clap matched for it.
    Command(String, ArgMatches),
}

/// Parsed command line.
#[derive(Debug, Clone)]
pub struct Cli {
    /// `--config FILE`: optional TOML file layered between defaults and environment.
    pub config_file: Option<PathBuf>,
    pub action: Action,
}

/// The whole command line of a service: the shell's flags, `doctor` and `commands`.
pub fn definition<C>(name: &str, env_prefix: &str, commands: &[Command<C>]) -> clap::Command {
    let shell = clap::Command::new(name.to_string())
        .version(VERSION)
        .about(format!("{name}: runs the service until SIGTERM or SIGINT, or one of its commands"))
        .after_help(format!(
            "Configuration is layered: built-in defaults, then FILE (TOML), then environment variables \
             {env_prefix}__SECTION__KEY (for example {env_prefix}__KAFKA__BOOTSTRAP_SERVERS).\n\n\
             Exit status: 0 stopped cleanly (or the command succeeded), 1 the service failed, 2 bad arguments or \
             configuration; each command lists its own."
        ))
        .arg(
            Arg::new("config")
                .short('c')
                .long("config")
                .value_name("FILE")
                .global(true)
                .value_parser(clap::value_parser!(PathBuf))
                .help("TOML configuration file, layered between the defaults and the environment"),
        )
        .arg(
            Arg::new("print-config")
                .long("print-config")
                .action(ArgAction::SetTrue)
                .conflicts_with("probe")
                .help("Print the effective configuration, secrets redacted, as JSON and exit"),
        )
        .arg(Arg::new("probe").long("probe").value_name("PATH").value_parser(probe_path).help(
            "Ask the running service's HTTP port for PATH (e.g. /health/livez); exit 0 on 200 (a health check for \
             images without a shell)",
        ))
        .subcommand(
            clap::Command::new("doctor")
                .about("Check the configuration against MongoDB and Kafka and print a report")
                .after_help(
                    "Exit status: 0 nothing blocks the service, 1 something does, 2 bad arguments or configuration",
                ),
        );
    shell.subcommands(commands.iter().map(|c| c.definition.clone()))
}

fn probe_path(path: &str) -> Result<String, String> {
    if path.starts_with('/') {
        Ok(path.to_string())
    } else {
        Err("a path such as /health/livez".into())
    }
}

/// Parses `args` (with the program name first).
pub fn parse<C>(
    args: impl IntoIterator<Item = String>,
    name: &str,
    env_prefix: &str,
    commands: &[Command<C>],
) -> Result<Cli, clap::Error> {
    let matches = definition(name, env_prefix, commands).try_get_matches_from(args)?;
    let config_file = matches.get_one::<PathBuf>("config").cloned();
    let action = match matches.subcommand() {
        Some(("doctor", _)) => Action::Doctor,
        Some((command, sub)) => Action::Command(command.to_string(), sub.clone()),
        None if matches.get_flag("print-config") => Action::PrintConfig,
        None => match matches.get_one::<String>("probe") {
            Some(path) => Action::Probe(path.clone()),
            None => Action::Run,
        },
    };
    Ok(Cli { config_file, action })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Args, Debug)]
    struct Sample {
        #[arg(long)]
        json: bool,
        #[arg(long)]
        sample: Option<u64>,
    }

    fn sample(_: (), _: Sample) -> CommandFuture {
        Box::pin(async { ExitCode::SUCCESS })
    }

    fn commands() -> Vec<Command<()>> {
        vec![Command::new("verify", "compares", "0 equal, 1 not", sample)]
    }

    fn parse_args(list: &[&str]) -> Result<Cli, clap::Error> {
        let args = std::iter::once("x").chain(list.iter().copied()).map(String::from);
        parse(args, "x", "X", &commands())
    }

    #[test]
    fn parses_config_both_ways_and_print() {
        for args in [
            &["--config", "a.toml", "--print-config"][..],
            &["--config=a.toml", "--print-config"],
            &["-c", "a.toml", "--print-config"],
        ] {
            let cli = parse_args(args).expect("valid");
            assert_eq!(cli.config_file, Some(PathBuf::from("a.toml")), "{args:?}");
            assert_eq!(cli.action, Action::PrintConfig);
        }
        assert_eq!(parse_args(&[]).expect("valid").action, Action::Run);
    }

    #[test]
    fn rejects_unknown_and_incomplete_arguments_with_status_2() {
        for bad in [
            &["--nope"][..],
            &["--config"],
            &["--probe", "livez"],
            &["verify", "--sample", "many"],
            &["verify", "--bogus"],
        ] {
            let e = parse_args(bad).expect_err("refused");
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
        let probe = parse_args(&["--probe", "/health/livez"]).expect("valid");
        assert_eq!(probe.action, Action::Probe("/health/livez".into()));
        let doctor = parse_args(&["doctor", "--config", "a.toml"]).expect("valid");
        assert_eq!(doctor.action, Action::Doctor);
        assert_eq!(doctor.config_file, Some(PathBuf::from("a.toml")));
    }

    #[test]
    fn help_and_version_end_the_program_with_status_0() {
        for (args, expect) in [
            (&["--help"][..], "X__KAFKA__BOOTSTRAP_SERVERS"),
            (&["verify", "--help"], "0 equal, 1 not"),
            (&["doctor", "--help"], "Exit status"),
            (&["--version"], VERSION),
        ] {
            let e = parse_args(args).expect_err("help ends the program");
            assert_eq!(e.exit_code(), 0, "{args:?}");
            assert!(e.to_string().contains(expect), "{args:?}: {e}");
        }
        assert!(VERSION.contains(env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn service_commands_take_their_arguments_and_the_config_file_anywhere() {
        let cli = parse_args(&["verify", "--json", "--config", "a.toml", "--sample", "5"]).expect("valid");
        assert_eq!(cli.config_file, Some(PathBuf::from("a.toml")));
        let Action::Command(name, matches) = cli.action else { panic!("a command") };
        assert_eq!(name, "verify");
        let parsed = <Sample as clap::FromArgMatches>::from_arg_matches(&matches).expect("its arguments");
        assert!(parsed.json);
        assert_eq!(parsed.sample, Some(5));
        let none: Vec<Command<()>> = Vec::new();
        assert!(parse(["x", "verify"].map(String::from), "x", "X", &none).is_err(), "unknown to a service without it");
    }
}
