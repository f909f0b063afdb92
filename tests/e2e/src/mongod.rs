//! A mongod of a test's own: a single-node replica set started from the same 6.0.5 binary the
//! harness installs, with test commands enabled so a test can set server failpoints
//! (`failCommand`) without disturbing the servers other tests share.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bson::{doc, Document};
use test_support::{unique, workspace_root};

pub struct PrivateMongod {
    child: tokio::process::Child,
    dir: std::path::PathBuf,
    pub port: u16,
    pub uri: String,
    pub client: mongodb::Client,
}

/// Spawns the harness's mongod as member `set` of a single-node replica set on `port`, its data
/// and log under `dir`, with `extra` arguments; it is killed when the child is dropped.
pub fn spawn<I, A>(dir: &Path, set: &str, port: u16, extra: I) -> tokio::process::Child
where
    I: IntoIterator<Item = A>,
    A: AsRef<std::ffi::OsStr>,
{
    tokio::process::Command::new(workspace_root().join(".cache/mongodb/fiftyone/db/bin/mongod"))
        .args(["--replSet", set, "--port", &port.to_string(), "--bind_ip", "127.0.0.1"])
        .arg("--dbpath")
        .arg(dir.join("db"))
        .args(["--setParameter", "diagnosticDataCollectionEnabled=false"])
        .args(["--wiredTigerCacheSizeGB", "0.25"])
        .arg("--logpath")
        .arg(dir.join("mongod.log"))
        .args(extra)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("mongod starts")
}

impl PrivateMongod {
    /// Starts it and waits until it is primary.
    pub async fn start() -> PrivateMongod {
        let dir = workspace_root().join(".cache/data").join(unique("own"));
        std::fs::create_dir_all(dir.join("db")).expect("data dir");
        let port = crate::free_addr().port();
        let set = "own";
        let test_commands = ["--setParameter", "enableTestCommands=1"];
        let child = spawn(&dir, set, port, test_commands.iter().map(std::ffi::OsStr::new));
        let direct = mongodb::Client::with_uri_str(format!("mongodb://127.0.0.1:{port}/?directConnection=true"))
            .await
            .expect("client");
        initiate(&direct, set, port, &dir.join("mongod.log")).await;
        let uri = format!("mongodb://127.0.0.1:{port}/?replicaSet={set}");
        let client = mongodb::Client::with_uri_str(&uri).await.expect("client");
        PrivateMongod { child, dir, port, uri, client }
    }

    /// Sets the `failCommand` failpoint: `mode` as the server takes it (`"alwaysOn"`,
    /// `{"times": n}`, `"off"`), `data` its filter and effect.
    pub async fn fail_command(&self, mode: bson::Bson, data: Document) {
        self.client
            .database("admin")
            .run_command(doc! {"configureFailPoint": "failCommand", "mode": mode, "data": data})
            .await
            .expect("configureFailPoint");
    }

    /// Turns the `failCommand` failpoint off.
    pub async fn fail_nothing(&self) {
        self.fail_command(bson::Bson::String("off".into()), doc! {}).await;
    }
}

/// Makes a fresh mongod started with `--replSet set` the primary of a one-node replica set,
/// through `direct` (a direct connection, before any user exists). Panics with the log's last
/// lines when it does not answer or elect itself within a minute.
pub async fn initiate(direct: &mongodb::Client, set: &str, port: u16, log: &std::path::Path) {
    let admin = direct.database("admin");
    let deadline = Instant::now() + Duration::from_secs(60);
    let tail = || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        text.lines().rev().take(3).collect::<Vec<_>>().join("\n")
    };
    while admin.run_command(doc! {"ping": 1}).await.is_err() {
        let fatal = std::fs::read_to_string(log).unwrap_or_default().contains("\"s\":\"F\"");
        assert!(Instant::now() < deadline && !fatal, "mongod did not answer: {}", tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    admin
        .run_command(
            doc! {"replSetInitiate": {"_id": set, "members": [{"_id": 0, "host": format!("127.0.0.1:{port}")}]}},
        )
        .await
        .expect("replSetInitiate");
    while !admin.run_command(doc! {"hello": 1}).await.is_ok_and(|h| h.get_bool("isWritablePrimary") == Ok(true)) {
        assert!(Instant::now() < deadline, "mongod did not become primary: {}", tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Drop for PrivateMongod {
    /// Stops it and removes its data: tests leave nothing behind in `.cache/data`.
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
