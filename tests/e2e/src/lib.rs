//! End-to-end helpers: the service binaries as processes (as a user runs them), and both
//! services in-process with a convergence check.

pub mod aws_endpoints;
pub mod bench;
pub mod chaos;
pub mod delay_line;
pub mod iam;
pub mod interop;
pub mod kafka_log;
pub mod mongod;
pub mod monotonic;
pub mod pipeline;
pub mod process;
pub mod schema;
pub mod sink_commands;
pub mod standby;
pub mod toxiproxy;
pub mod workload;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;

use tokio::process::{Child, Command};

/// Path of a workspace binary built next to the running one: beside a `src/bin` program
/// (target/<profile>/<bin>), or one level up from a test (target/<profile>/deps/<test>).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("target dir");
    let candidates = [dir.join(name), dir.parent().map(|d| d.join(name)).unwrap_or_default()];
    candidates.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| {
        panic!("{name} is missing next to {}: build it first (cargo build --workspace)", exe.display())
    })
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

/// Runs `<service> doctor` with `env` (keys without the service's prefix, e.g. `MONGO__URI`) on
/// top of an empty environment: whether it found no blocker, and everything it printed.
pub async fn doctor(service: &str, env: &[(&str, String)]) -> (bool, String) {
    let prefix = if service == "cdc-source" { "CDC_SOURCE" } else { "SINK_WRITER" };
    let env: HashMap<String, String> = env.iter().map(|(k, v)| (format!("{prefix}__{k}"), v.clone())).collect();
    let out = Command::new(binary(service)).arg("doctor").env_clear().envs(&env).output().await.expect("doctor runs");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// In the DocumentDB profile ([`test_support::documentdb_profile`]), the service's `compat`
/// setting, without the service's prefix: `CAPTURE__COMPAT` or `APPLY__COMPAT` = `documentdb`.
pub fn profile_compat(service: &str) -> Option<(String, String)> {
    test_support::documentdb_profile().then(|| {
        let key = if service == "cdc-source" { "CAPTURE__COMPAT" } else { "APPLY__COMPAT" };
        (key.to_string(), "documentdb".to_string())
    })
}

/// `CDC_SOURCE__…` settings of a cdc-source process capturing database `name` into topics of
/// the same prefix with `partitions` each (and the profile's `compat`); the caller adds HTTP,
/// MongoDB and Kafka.
pub fn source_process_env(name: &str, partitions: i32) -> Vec<(String, String)> {
    [
        ("CAPTURE__NAME".to_string(), name.to_string()),
        ("CAPTURE__SCOPE".into(), "database".into()),
        ("CAPTURE__DATABASE".into(), name.to_string()),
        ("CAPTURE__MAX_AWAIT_MS".into(), "200".into()),
        ("TOPICS__PREFIX".into(), name.to_string()),
        ("TOPICS__PARTITIONS".into(), partitions.to_string()),
    ]
    .into_iter()
    .chain(profile_compat("cdc-source"))
    .map(|(k, v)| (format!("CDC_SOURCE__{k}"), v))
    .collect()
}

/// `SINK_WRITER__…` settings of a sink-writer process replicating what
/// [`source_process_env`]`(name, …)` captures (its topics, group, dead-letter topic, metadata
/// database); the caller adds HTTP, MongoDB and Kafka.
pub fn sink_process_env(name: &str) -> Vec<(String, String)> {
    [
        ("KAFKA__OPTIONS__TOPIC_METADATA_REFRESH_INTERVAL_MS".to_string(), "1000".to_string()),
        ("CONSUME__TOPICS".into(), format!("^{name}\\..*")),
        ("CONSUME__GROUP_ID".into(), format!("{name}-sink")),
        ("CONSUME__DEAD_LETTER_TOPIC".into(), format!("{name}-dlq")),
        ("CONSUME__COMMIT_INTERVAL_MS".into(), "200".into()),
        ("APPLY__METADATA_DATABASE".into(), format!("{name}_meta")),
    ]
    .into_iter()
    .chain(profile_compat("sink-writer"))
    .map(|(k, v)| (format!("SINK_WRITER__{k}"), v))
    .collect()
}

/// The partition Kafka's default partitioner (murmur2, as the Java client and cdc-source's
/// `murmur2_random` use for keyed records) gives `key` among `partitions`.
pub fn partition_of(key: &[u8], partitions: i32) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ key.len() as u32;
    let mut chunks = key.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (i, byte) in rest.iter().enumerate().rev() {
            h ^= u32::from(*byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    ((h & 0x7fff_ffff) % partitions as u32) as i32
}

/// `count` integer `_id`s, starting at `from`, whose records land on `partition` of `partitions`.
pub fn ids_on_partition(partition: i32, partitions: i32, from: i32, count: usize) -> Vec<i32> {
    (from..)
        .filter(|id| partition_of(&envelope::encode_key(&bson::Bson::Int32(*id)), partitions) == partition)
        .take(count)
        .collect()
}
