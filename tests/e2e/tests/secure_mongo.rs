//! The pipeline against a mongod that requires TLS (certificates made here with `openssl`, the
//! way DocumentDB hands out its CA bundle) and authentication (SCRAM-SHA-256 for the source,
//! SCRAM-SHA-1 for the target): the data arrives; a wrong password is a clear blocker that
//! never shows the password.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bson::doc;
use e2e::pipeline::{compare_databases, Pipeline};
use e2e::{doctor, free_addr};
use service_kit::config::SecretUri;
use test_support::{unique, workspace_root};

const PASSWORD: &str = "S3cret-pw_for-tests";

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA, and a server certificate for localhost / 127.0.0.1 signed by it.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=test-ca",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").expect("ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    let pem =
        [std::fs::read(dir.join("server.key")).expect("key"), std::fs::read(dir.join("server.crt")).expect("crt")]
            .concat();
    std::fs::write(dir.join("server.pem"), pem).expect("server.pem");
}

struct SecureMongo {
    child: tokio::process::Child,
    dir: PathBuf,
    port: u16,
    ca: PathBuf,
}

impl Drop for SecureMongo {
    /// Stops it and removes its data and certificates.
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl SecureMongo {
    async fn start() -> SecureMongo {
        let dir = workspace_root().join(".cache/data").join(unique("tls"));
        std::fs::create_dir_all(dir.join("db")).expect("dirs");
        certificates(&dir);
        let keyfile = dir.join("keyfile");
        // Base64 characters only: the replica set's internal authentication key.
        let key: String = unique("k").chars().filter(char::is_ascii_alphanumeric).collect();
        std::fs::write(&keyfile, format!("{}{key}", "replicaSetKey".repeat(3))).expect("keyfile");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&keyfile, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let port = free_addr().port();
        let tls: Vec<std::ffi::OsString> = vec![
            "--tlsMode".into(),
            "requireTLS".into(),
            "--tlsAllowConnectionsWithoutCertificates".into(),
            "--tlsCertificateKeyFile".into(),
            dir.join("server.pem").into(),
            "--tlsCAFile".into(),
            dir.join("ca.pem").into(),
            "--auth".into(),
            "--keyFile".into(),
            keyfile.clone().into(),
        ];
        let child = e2e::mongod::spawn(&dir, "secure", port, tls);
        let mongo = SecureMongo { child, dir: dir.clone(), port, ca: dir.join("ca.pem") };
        // The localhost exception allows initiating the set and creating the first user.
        let setup = mongodb::Client::with_uri_str(format!(
            "mongodb://127.0.0.1:{port}/?directConnection=true&tls=true&tlsCAFile={}",
            mongo.ca.display()
        ))
        .await
        .expect("client");
        e2e::mongod::initiate(&setup, "secure", port, &dir.join("mongod.log")).await;
        let admin = setup.database("admin");
        admin
            .run_command(
                doc! {"createUser": "replicator", "pwd": PASSWORD, "roles": ["root"], "mechanisms": ["SCRAM-SHA-256"]},
            )
            .await
            .expect("first user");
        // The exception is gone now: the second user needs the first.
        let root = mongodb::Client::with_uri_str(mongo.uri("replicator", PASSWORD, "")).await.expect("client");
        root.database("admin")
            .run_command(
                doc! {"createUser": "legacy", "pwd": PASSWORD, "roles": ["root"], "mechanisms": ["SCRAM-SHA-1"]},
            )
            .await
            .expect("SCRAM-SHA-1 user");
        mongo
    }

    fn uri(&self, user: &str, password: &str, extra: &str) -> String {
        format!(
            "mongodb://{user}:{password}@127.0.0.1:{}/?replicaSet=secure&tls=true&tlsCAFile={}&authSource=admin{extra}",
            self.port,
            self.ca.display()
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pipeline_runs_over_tls_with_scram_sha_256_and_sha_1() {
    let mongo = SecureMongo::start().await;
    let mut p = Pipeline::new("tls", 2).await;
    let source_uri = mongo.uri("replicator", PASSWORD, "");
    let target_uri = mongo.uri("legacy", PASSWORD, "&authMechanism=SCRAM-SHA-1");
    p.source_config.mongo.uri = SecretUri::new(source_uri.clone());
    p.sink_config.mongo.uri = SecretUri::new(target_uri);
    // One server plays both sides: the sink writes into <name>_copy.
    let copy = format!("{}_copy", p.name);
    p.sink_config.apply.mapping =
        vec![sink_writer::MappingRule { source: format!("{}\\.(.*)", p.name), target: format!("{copy}.${{1}}") }];
    p.source = mongodb::Client::with_uri_str(&source_uri).await.expect("client");
    let coll = p.source_db().collection::<bson::Document>("orders");
    coll.insert_many((0..200).map(|i| doc! {"_id": i, "v": i, "nested": {"a": [i, i + 1]}})).await.expect("insert");
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    coll.update_many(doc! {"v": {"$lt": 50}}, doc! {"$inc": {"v": 1000}}).await.expect("update");
    coll.delete_many(doc! {"v": {"$gte": 150, "$lt": 200}}).await.expect("delete");
    let target = p.source.database(&copy);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = compare_databases(&p.source_db(), &target).await;
        if c.first.is_none() && c.source_documents == 150 {
            break;
        }
        assert!(Instant::now() < deadline, "no convergence over TLS: {:?}", c.first);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    sink.stop().await;
    source.stop().await;
}

#[tokio::test]
async fn a_wrong_password_is_a_clear_blocker_that_never_shows_the_password() {
    let mongo = SecureMongo::start().await;
    let wrong = "Wr0ng-password-here";
    let servers = test_support::services();
    let (ok, report) = doctor(
        "sink-writer",
        &[
            ("MONGO__URI", mongo.uri("replicator", wrong, "")),
            ("MONGO__SERVER_SELECTION_TIMEOUT_MS", "5000".into()),
            ("KAFKA__BOOTSTRAP_SERVERS", servers.kafka_bootstrap.clone()),
        ],
    )
    .await;
    assert!(!ok, "{report}");
    assert!(report.contains("FAIL  target mongodb") && report.contains("Authentication failed"), "{report}");
    assert!(report.contains("check the user, password"), "{report}");
    assert!(!report.contains(wrong), "the password leaked: {report}");
    // Without the CA the server's certificate is refused, also clearly.
    let no_ca = format!("mongodb://replicator:{PASSWORD}@127.0.0.1:{}/?replicaSet=secure&tls=true", mongo.port);
    let (ok, report) = doctor(
        "cdc-source",
        &[
            ("MONGO__URI", no_ca),
            ("MONGO__SERVER_SELECTION_TIMEOUT_MS", "3000".into()),
            ("KAFKA__BOOTSTRAP_SERVERS", servers.kafka_bootstrap.clone()),
        ],
    )
    .await;
    assert!(!ok && report.contains("FAIL  source mongodb"), "{report}");
    assert!(!report.contains(PASSWORD), "the password leaked: {report}");
}
