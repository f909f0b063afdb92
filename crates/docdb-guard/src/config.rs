//! The guard's settings, from its command line.

use std::net::SocketAddr;

use crate::error::GuardError;

pub const USAGE: &str = "usage: docdb-guard --listen HOST:PORT --upstream HOST:PORT [--advertise HOST:PORT]";

/// Where the guard listens and what it guards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The address clients connect to.
    pub listen: SocketAddr,
    /// The mongod behind the guard, as `host:port`: also how it names itself in `hello`
    /// replies (its replica-set member host), which the guard replaces with `advertise`.
    pub upstream: String,
    /// The guard's address in `hello` replies; default: `listen`.
    pub advertise: String,
}

impl Config {
    /// Reads `--listen`, `--upstream` and `--advertise` (each `--name value` or `--name=value`).
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Self, GuardError> {
        let (mut listen, mut upstream, mut advertise) = (None, None, None);
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name.to_string(), Some(value.to_string())),
                None => (arg, None),
            };
            let slot = match name.as_str() {
                "--listen" => &mut listen,
                "--upstream" => &mut upstream,
                "--advertise" => &mut advertise,
                "-h" | "--help" => return Err(GuardError::Config(USAGE.into())),
                other => return Err(GuardError::Config(format!("unknown argument '{other}'\n{USAGE}"))),
            };
            let value = inline.or_else(|| args.next());
            *slot = Some(value.ok_or_else(|| GuardError::Config(format!("{name} needs a value\n{USAGE}")))?);
        }
        let listen = listen.ok_or_else(|| GuardError::Config(format!("--listen is required\n{USAGE}")))?;
        let listen: SocketAddr =
            listen.parse().map_err(|e| GuardError::Config(format!("--listen '{listen}': {e}\n{USAGE}")))?;
        let upstream = upstream.ok_or_else(|| GuardError::Config(format!("--upstream is required\n{USAGE}")))?;
        if !upstream.contains(':') {
            return Err(GuardError::Config(format!("--upstream '{upstream}' needs HOST:PORT\n{USAGE}")));
        }
        let advertise = advertise.unwrap_or_else(|| listen.to_string());
        Ok(Self { listen, upstream, advertise })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, GuardError> {
        Config::from_args(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn listen_and_upstream_are_required_and_advertise_defaults_to_listen() {
        let config = parse(&["--listen", "127.0.0.1:27118", "--upstream=127.0.0.1:27117"]).expect("valid");
        assert_eq!(config.advertise, "127.0.0.1:27118");
        assert_eq!(config.upstream, "127.0.0.1:27117");
        let advertised = parse(&["--listen=0.0.0.0:1", "--upstream", "db:2", "--advertise", "guard:1"]).expect("valid");
        assert_eq!(advertised.advertise, "guard:1");
        assert!(parse(&["--listen", "127.0.0.1:1"]).is_err());
        assert!(parse(&["--upstream", "a:1"]).is_err());
        assert!(parse(&["--listen", "nowhere", "--upstream", "a:1"]).is_err());
        assert!(parse(&["--listen", "127.0.0.1:1", "--upstream", "a:1", "--bogus", "x"]).is_err());
        assert!(parse(&["--listen"]).is_err());
    }
}
