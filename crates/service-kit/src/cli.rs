//! Command-line arguments, shared by both binaries.

use std::path::PathBuf;

/// What the binary was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run the service until SIGTERM/SIGINT.
    Run,
    /// Print the effective configuration (secrets redacted) as JSON and exit.
    PrintConfig,
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
    let usage = format!(
        "usage: {name} [--config FILE] [--print-config]\n\n\
         Configuration is layered: built-in defaults, then FILE (TOML), then environment\n\
         variables {env_prefix}__SECTION__KEY (for example {env_prefix}__KAFKA__BOOTSTRAP_SERVERS).\n\
         --print-config prints the effective configuration, secrets redacted, and exits."
    );
    let mut cli = Cli { config_file: None, action: Action::Run };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-c" | "--config" => match args.next() {
                Some(path) => cli.config_file = Some(PathBuf::from(path)),
                None => return Err(CliError::Usage(format!("{arg} needs a file path\n\n{usage}"))),
            },
            "--print-config" => cli.action = Action::PrintConfig,
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
        assert!(matches!(parse(args(&["-h"]), "x", "X"), Err(CliError::Help(m)) if m.contains("X__KAFKA")));
    }
}
