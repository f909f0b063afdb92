//! `sink-writer verify` and `sink-writer status` run as a user runs them (the built binary, its
//! JSON output and exit status) with a [`Pipeline`]'s sink settings, and the source's clock.

use bson::{doc, Document};

use crate::pipeline::Pipeline;

/// The environment of a `sink-writer` command with this pipeline's sink settings, `verify`
/// reading the pipeline's source and comparing only its database, and `status` reading its
/// cdc-source's checkpoint; `extra` (keys without the `SINK_WRITER__` prefix) overrides any of
/// them.
pub fn sink_env(p: &Pipeline, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = p.sink_process_env(crate::free_addr(), p.sink_config.mongo.uri.expose());
    let defaults = [
        ("VERIFY__SOURCE_URI", p.source_config.mongo.uri.expose().to_string()),
        ("VERIFY__INCLUDE", format!("{}\\..*", p.name)),
        ("VERIFY__SETTLE_TIMEOUT_MS", "30000".to_string()),
        ("STATUS__CAPTURE_NAMES", p.source_config.capture.name.clone()),
    ];
    let extra = extra.iter().map(|(k, v)| (*k, v.to_string()));
    for (key, value) in defaults.into_iter().chain(extra) {
        let key = format!("SINK_WRITER__{key}");
        env.retain(|(k, _)| *k != key);
        env.push((key, value));
    }
    env
}

/// Runs `sink-writer <command> --json` with [`sink_env`]: the exit code and the JSON printed.
pub async fn sink_command(p: &Pipeline, command: &[&str], extra: &[(&str, &str)]) -> (i32, serde_json::Value) {
    let out = tokio::process::Command::new(crate::binary("sink-writer"))
        .args(command)
        .arg("--json")
        .env_clear()
        .envs(sink_env(p, extra))
        .output()
        .await
        .expect("sink-writer runs");
    (out.status.code().unwrap_or(-1), json_of(command, &out.stdout, &out.stderr))
}

/// What a command printed, as JSON.
pub fn json_of(command: &[&str], stdout: &[u8], stderr: &[u8]) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("{command:?}: not JSON ({e}): {stdout}\nstderr: {}", String::from_utf8_lossy(stderr))
    })
}

/// The source's present cluster time.
pub async fn source_now(p: &Pipeline) -> envelope::ClusterTime {
    let reply = p.source.database("admin").run_command(doc! {"ping": 1}).await.expect("ping");
    reply.get_timestamp("operationTime").expect("operationTime").into()
}

/// Runs one write command (`insert`, `update`, `delete`) on the source database and returns the
/// cluster time the server acknowledged it at.
pub async fn timed_write(db: &mongodb::Database, command: Document) -> envelope::ClusterTime {
    let reply = db.run_command(command.clone()).await.unwrap_or_else(|e| panic!("{command}: {e}"));
    assert!(reply.get_array("writeErrors").is_err(), "{command}: {reply}");
    reply.get_timestamp("operationTime").expect("operationTime").into()
}
