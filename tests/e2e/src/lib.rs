//! End-to-end helpers: the service binaries as processes (as a user runs them), and both
//! services in-process with a convergence check.

pub mod pipeline;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;

use tokio::process::{Child, Command};

/// Path of a workspace binary built next to this test (`make test` builds them first).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let path = exe.parent().and_then(|deps| deps.parent()).expect("target dir").join(name);
    assert!(path.is_file(), "{} is missing: run `cargo build --workspace` first", path.display());
    path
}

/// A free loopback port (bound, read, released).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port")
}

/// Starts `name` with the given environment on top of a clean one (PATH kept).
pub fn spawn(name: &str, args: &[&str], env: &HashMap<String, String>) -> Child {
    Command::new(binary(name))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"))
}

/// Sends SIGTERM, as Kubernetes and ECS do on stop.
pub async fn terminate(child: &Child) {
    let pid = child.id().expect("child still running");
    let status = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await.expect("kill runs");
    assert!(status.success(), "kill -TERM {pid} failed");
}
