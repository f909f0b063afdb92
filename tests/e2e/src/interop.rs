//! The real tools of the interop tests: Kafka Connect workers (the MongoDB Kafka Connector, the
//! Debezium MongoDB connector) and a Flink SQL mini-cluster, installed by
//! `scripts/interop/install.sh` into `.cache/interop/` and run as JVM processes that end with
//! the test.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// The directory `install.sh` fills.
pub fn cache() -> PathBuf {
    test_support::workspace_root().join(".cache/interop")
}

/// Installs (or finds installed) every tool, once per test process.
pub fn install() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let script = test_support::workspace_root().join("scripts/interop/install.sh");
        let status = std::process::Command::new("bash").arg(&script).status().expect("install.sh runs");
        assert!(status.success(), "{} failed", script.display());
    });
}

/// A scratch directory for one tool run (configuration, offsets, logs), kept after the test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("interop-{name}"));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The JVM of a test's tool: a small heap and the serial collector (tests run side by side).
pub const TEST_JVM: &[&str] = &["-Xmx512m", "-XX:+UseSerialGC"];

fn java(classpath: &str, log: &Path, jvm: &[&str]) -> Command {
    let mut cmd = Command::new("java");
    cmd.args(jvm)
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            test_support::workspace_root().join("scripts/interop/log4j2.properties").display()
        ))
        .arg("-cp")
        .arg(classpath)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log.with_extension("out")).expect("log file"))
        .stderr(std::fs::File::create(log).expect("log file"))
        .kill_on_drop(true);
    cmd
}

/// Debezium's MongoDB connector properties capturing `db` into topics prefixed `db` (four
/// partitions each), JSON with or without schemas.
pub fn debezium_properties(db: &str, schemas: bool) -> String {
    format!(
        "connector.class=io.debezium.connector.mongodb.MongoDbConnector\n\
         tasks.max=1\n\
         mongodb.connection.string={}\n\
         topic.prefix={db}\n\
         database.include.list={db}\n\
         capture.mode=change_streams_update_full\n\
         topic.creation.default.replication.factor=1\n\
         topic.creation.default.partitions=4\n\
         key.converter=org.apache.kafka.connect.json.JsonConverter\n\
         value.converter=org.apache.kafka.connect.json.JsonConverter\n\
         key.converter.schemas.enable={schemas}\n\
         value.converter.schemas.enable={schemas}\n",
        test_support::services().mongo_source_uri,
    )
}

/// Which Kafka Connect installation to run.
#[derive(Debug, Clone, Copy)]
pub enum ConnectKind {
    /// Connect 4.4.0 with the MongoDB Kafka Connector 2.0.1.
    MongoKafkaConnector,
    /// Connect 4.1.1 with Debezium's MongoDB connector 3.6.1.Final.
    Debezium,
}

/// A standalone Kafka Connect worker.
pub struct Connect {
    child: Child,
    pub rest: std::net::SocketAddr,
    pub log: PathBuf,
}

impl Connect {
    /// Starts a standalone worker on the test broker (reading committed records only) with the
    /// given connectors (`(name, properties)`); converters default to JSON without schemas.
    pub async fn start(kind: ConnectKind, dir: &Path, connectors: &[(&str, String)]) -> Connect {
        Self::start_with(kind, dir, connectors, "", TEST_JVM).await
    }

    /// [`Connect::start`] with more worker properties (`key=value` lines) and JVM flags.
    pub async fn start_with(
        kind: ConnectKind,
        dir: &Path,
        connectors: &[(&str, String)],
        worker_extra: &str,
        jvm: &[&str],
    ) -> Connect {
        install();
        let libs = match kind {
            ConnectKind::MongoKafkaConnector => "connect-mkc",
            ConnectKind::Debezium => "connect-debezium",
        };
        let rest = crate::free_addr();
        let worker = dir.join("worker.properties");
        std::fs::write(
            &worker,
            format!(
                "bootstrap.servers={bootstrap}\n\
                 key.converter=org.apache.kafka.connect.json.JsonConverter\n\
                 value.converter=org.apache.kafka.connect.json.JsonConverter\n\
                 key.converter.schemas.enable=false\n\
                 value.converter.schemas.enable=false\n\
                 offset.storage.file.filename={offsets}\n\
                 offset.flush.interval.ms=1000\n\
                 listeners=http://{rest}\n\
                 consumer.isolation.level=read_committed\n\
                 consumer.auto.offset.reset=earliest\n{worker_extra}",
                bootstrap = test_support::services().kafka_bootstrap,
                offsets = dir.join("offsets").display(),
            ),
        )
        .expect("worker properties");
        let mut args = vec![worker.display().to_string()];
        for (name, properties) in connectors {
            let path = dir.join(format!("{name}.properties"));
            std::fs::write(&path, format!("name={name}\n{properties}")).expect("connector properties");
            args.push(path.display().to_string());
        }
        let log = dir.join("connect.log");
        let classpath = format!("{}/*", cache().join(libs).join("libs").display());
        let child = java(&classpath, &log, jvm)
            .arg("org.apache.kafka.connect.cli.ConnectStandalone")
            .args(&args)
            .spawn()
            .expect("java starts");
        Connect { child, rest, log }
    }

    /// The worker's process id (for its CPU time and memory).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The state of a connector's first task (RUNNING, FAILED with its trace, …), or why none
    /// is known yet.
    pub async fn task_state(&self, connector: &str) -> String {
        match test_support::http_get(self.rest, &format!("/connectors/{connector}/status")).await {
            Ok((200, body)) => {
                let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let task = &status["tasks"][0];
                match task["state"].as_str() {
                    Some("FAILED") => format!("FAILED: {}", task["trace"].as_str().unwrap_or("")),
                    Some(state) => state.to_string(),
                    None => "no task yet".into(),
                }
            }
            Ok((code, body)) => format!("status {code}: {body}"),
            Err(e) => format!("worker not answering: {e}"),
        }
    }

    /// Fails the test (with the task's trace) if a connector's task failed.
    pub async fn assert_not_failed(&self, connector: &str) {
        let state = self.task_state(connector).await;
        assert!(!state.starts_with("FAILED"), "{connector}: {state}\n(worker log: {})", self.log.display());
    }

    /// Stops the worker: SIGTERM, then SIGKILL after 20 s.
    pub async fn stop(mut self) {
        stop(&mut self.child).await;
    }
}

async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
        if tokio::time::timeout(Duration::from_secs(20), child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }
}

/// What the Flink SQL runner printed: the counts of changelog row kinds, and the rows of the
/// table the changelog builds (column name to value).
#[derive(Debug)]
pub struct FlinkTable {
    pub changes: serde_json::Value,
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// Runs SQL statements (the last one a bounded query over a changelog source) in a Flink
/// mini-cluster; `Err` holds the runner's error output.
pub async fn flink_sql(dir: &Path, statements: &[String]) -> Result<FlinkTable, String> {
    install();
    let sql = dir.join("query.sql");
    std::fs::write(&sql, statements.join("\n;\n")).expect("sql file");
    let flink = cache().join("flink");
    let classpath = format!("{}:{}/*", flink.join("classes").display(), flink.join("libs").display());
    let log = dir.join("flink.log");
    let started = Instant::now();
    let mut child = java(&classpath, &log, TEST_JVM).arg("interop.FlinkSql").arg(&sql).spawn().expect("java starts");
    let status = match tokio::time::timeout(Duration::from_secs(240), child.wait()).await {
        Ok(status) => status.expect("flink runner"),
        Err(_) => {
            stop(&mut child).await;
            return Err(format!("the Flink job did not end within 240 s (log: {})", log.display()));
        }
    };
    let out = std::fs::read_to_string(log.with_extension("out")).unwrap_or_default();
    let err = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("flink: ran {:.1} s, log {}", started.elapsed().as_secs_f64(), log.display());
    if !status.success() {
        return Err(err);
    }
    let mut lines = out.lines().filter(|l| l.starts_with('{'));
    let changes: serde_json::Value =
        serde_json::from_str(lines.next().ok_or_else(|| format!("no output; log:\n{err}"))?)
            .map_err(|e| e.to_string())?;
    let rows = lines
        .map(|l| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(l).map_err(|e| format!("{e}: {l}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(FlinkTable { changes: changes["changes"].clone(), rows })
}

/// Waits until `check` holds, failing early (with the task's trace) when the connector's task
/// failed.
pub async fn wait_while_running<F, Fut>(connect: &Connect, connector: &str, what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let Some(last) = check().await else { return };
        connect.assert_not_failed(connector).await;
        assert!(
            Instant::now() < deadline,
            "{what} within {timeout:?}: {last}\n(worker log: {})",
            connect.log.display()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
