//! Command-line arguments, shared by both binaries.

use std::path::PathBuf;

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
    /// A command of the service's own (e.g. `verify`), with its arguments.
    Command(String, Vec<String>),
}

/// Parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    /// `--config FILE`: optional TOML file layered between defaults and environment.
    pub config_file: Option<PathBuf>,
    pub action: Action,
}

/// Why the command line was not accepted; `Help` is not an error but ends the program too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliError {
    Help(String),
    Usage(String),
}

/// Parses `args` (without the program name).
pub fn parse(args: impl IntoIterator<Item = String>, name: &str, env_prefix: &str) -> Result<Cli, CliError> {
    parse_with(args, name, env_prefix, &[])
}

/// Parses `args`, knowing the service's own commands (name, one line of help); a command takes
/// every argument after it but `--config FILE`.
pub fn parse_with(
    args: impl IntoIterator<Item = String>,
    name: &str,
    env_prefix: &str,
    commands: &[(&str, &str)],
) -> Result<Cli, CliError> {
    let names: Vec<&str> = commands.iter().map(|(n, _)| *n).collect();
    let command_help: String = commands.iter().map(|(n, help)| format!("{n} {help}\n")).collect();
    let usage = format!(
        "usage: {name} [doctor{}] [--config FILE] [--print-config | --probe PATH]\n\n\
         Configuration is layered: built-in defaults, then FILE (TOML), then environment\n\
         variables {env_prefix}__SECTION__KEY (for example {env_prefix}__KAFKA__BOOTSTRAP_SERVERS).\n\
         doctor checks the configuration against MongoDB and Kafka and prints a report\n\
         (exit status 1 when something blocks the service).\n\
         --print-config prints the effective configuration, secrets redacted, and exits.\n\
         --probe PATH asks the running service's HTTP port for PATH (e.g. /health/livez) and\n\
         exits 0 when it answers 200: a health check for images without a shell.\n{command_help}",
        names.iter().map(|n| format!(" | {n} …")).collect::<String>()
    );
    let mut cli = Cli { config_file: None, action: Action::Run };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if let Action::Command(_, rest) = &mut cli.action {
            match arg.as_str() {
                "-c" | "--config" => match args.next() {
                    Some(path) => cli.config_file = Some(PathBuf::from(path)),
                    None => return Err(CliError::Usage(format!("{arg} needs a file path\n\n{usage}"))),
                },
                _ => rest.push(arg),
            }
            continue;
        }
        if names.contains(&arg.as_str()) {
            cli.action = Action::Command(arg, Vec::new());
            continue;
        }
        match arg.as_str() {
            "-c" | "--config" => match args.next() {
                Some(path) => cli.config_file = Some(PathBuf::from(path)),
                None => return Err(CliError::Usage(format!("{arg} needs a file path\n\n{usage}"))),
            },
            "--print-config" => cli.action = Action::PrintConfig,
            "doctor" => cli.action = Action::Doctor,
            "--probe" => match args.next() {
                Some(path) if path.starts_with('/') => cli.action = Action::Probe(path),
                _ => return Err(CliError::Usage(format!("{arg} needs a path such as /health/livez\n\n{usage}"))),
            },
            "-h" | "--help" => return Err(CliError::Help(usage)),
            other => return Err(CliError::Usage(format!("unknown argument '{other}'\n\n{usage}"))),
        }
    }
    Ok(cli)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_config_and_print() {
        let cli = parse(args(&["--config", "a.toml", "--print-config"]), "x", "X").expect("valid");
        assert_eq!(cli.config_file, Some(PathBuf::from("a.toml")));
        assert_eq!(cli.action, Action::PrintConfig);
    }

    #[test]
    fn rejects_unknown_and_incomplete_arguments() {
        assert!(matches!(parse(args(&["--nope"]), "x", "X"), Err(CliError::Usage(m)) if m.contains("--nope")));
        assert!(matches!(parse(args(&["--config"]), "x", "X"), Err(CliError::Usage(_))));
        assert!(matches!(parse(args(&["--probe", "livez"]), "x", "X"), Err(CliError::Usage(_))));
        let probe = parse(args(&["--probe", "/health/livez"]), "x", "X").expect("valid");
        assert_eq!(probe.action, Action::Probe("/health/livez".into()));
        let doctor = parse(args(&["doctor", "--config", "a.toml"]), "x", "X").expect("valid");
        assert_eq!(doctor.action, Action::Doctor);
        assert!(matches!(parse(args(&["-h"]), "x", "X"), Err(CliError::Help(m)) if m.contains("X__KAFKA")));
    }

    #[test]
    fn service_commands_take_their_arguments_but_the_config_file() {
        let commands = [("verify", "compares")];
        let cli = parse_with(args(&["verify", "--json", "--config", "a.toml", "--sample", "5"]), "x", "X", &commands)
            .expect("valid");
        assert_eq!(cli.config_file, Some(PathBuf::from("a.toml")));
        assert_eq!(cli.action, Action::Command("verify".into(), args(&["--json", "--sample", "5"])));
        assert!(parse(args(&["verify"]), "x", "X").is_err(), "unknown to a service without it");
    }
}
