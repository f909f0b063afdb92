//! `doctor` of both services against real servers: a healthy setup reports no blockers; a
//! standalone mongod (no change streams) and an unreachable broker are blockers, named clearly.

use std::process::Stdio;
use std::time::Duration;

use bson::doc;
use e2e::{doctor, free_addr};
use test_support::{services, unique, workspace_root};

/// `cdc-source doctor` on the loopback servers, capturing database `name` into topics prefixed
/// `name` (in the DocumentDB profile: `compat = "documentdb"`, through the guard).
async fn source_doctor(name: &str) -> (bool, String) {
    let servers = services();
    doctor(
        "cdc-source",
        &[
            ("MONGO__URI", servers.service_source_uri.clone()),
            ("KAFKA__BOOTSTRAP_SERVERS", servers.kafka_bootstrap.clone()),
            ("CAPTURE__NAME", name.to_string()),
            ("CAPTURE__SCOPE", "database".into()),
            ("CAPTURE__DATABASE", name.to_string()),
            ("TOPICS__PREFIX", name.to_string()),
            ("CAPTURE__COMPAT", compat()),
        ],
    )
    .await
}

/// The services' `compat` in this run's profile.
fn compat() -> String {
    if test_support::documentdb_profile() { "documentdb" } else { "auto" }.to_string()
}

#[tokio::test]
async fn a_healthy_setup_has_no_blockers() {
    let servers = services();
    let name = unique("doctor");
    let (ok, report) = source_doctor(&name).await;
    assert!(ok, "{report}");
    let history = if test_support::documentdb_profile() { "DocumentDB's default retention" } else { "oplog window" };
    for line in ["ok    source mongodb", "replica set 'source'", "ok    change streams", history, "no blockers"] {
        assert!(report.contains(line), "missing '{line}' in:\n{report}");
    }
    let (ok, report) = doctor(
        "sink-writer",
        &[
            ("MONGO__URI", servers.service_target_uri.clone()),
            ("KAFKA__BOOTSTRAP_SERVERS", servers.kafka_bootstrap.clone()),
            ("CONSUME__TOPICS", format!("^{name}\\..*")),
            ("APPLY__METADATA_DATABASE", format!("{name}_meta")),
            ("APPLY__COMPAT", compat()),
        ],
    )
    .await;
    assert!(ok, "{report}");
    assert!(report.contains("ok    target writes") && report.contains("no blockers"), "{report}");
    // A topic not there (yet) is named: a warning, since the source creates topics on first write.
    assert!(report.contains("WARN  topics") && report.contains(&format!("^{name}")), "{report}");
}

/// A standalone mongod (no replica set) of the same build, on a free port.
struct Standalone {
    child: tokio::process::Child,
    port: u16,
    _dir: std::path::PathBuf,
}

impl Standalone {
    async fn start() -> Standalone {
        let port = free_addr().port();
        let dir = workspace_root().join(".cache/data").join(unique("standalone"));
        std::fs::create_dir_all(&dir).expect("dbpath");
        let mongod = workspace_root().join(".cache/mongodb/fiftyone/db/bin/mongod");
        let child = tokio::process::Command::new(mongod)
            .args(["--port", &port.to_string(), "--bind_ip", "127.0.0.1", "--dbpath"])
            .arg(&dir)
            .args(["--wiredTigerCacheSizeGB", "0.25"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("mongod starts");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(std::time::Instant::now() < deadline, "standalone mongod did not listen");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Standalone { child, port, _dir: dir }
    }
}

#[tokio::test]
async fn a_standalone_mongod_and_a_dead_broker_are_blockers() {
    let servers = services();
    let mut standalone = Standalone::start().await;
    let name = unique("doctor");
    let (ok, report) = doctor(
        "cdc-source",
        &[
            ("MONGO__URI", format!("mongodb://127.0.0.1:{}/?directConnection=true", standalone.port)),
            ("KAFKA__BOOTSTRAP_SERVERS", servers.kafka_bootstrap.clone()),
            ("CAPTURE__NAME", name.clone()),
        ],
    )
    .await;
    assert!(!ok, "a standalone mongod must be a blocker:\n{report}");
    assert!(report.contains("standalone"), "{report}");
    assert!(report.contains("FAIL  change streams") && report.contains("replica set"), "{report}");
    assert!(report.contains("1 blocker(s)"), "{report}");
    let _ = standalone.child.kill().await;

    let dead = free_addr();
    let (ok, report) = doctor(
        "sink-writer",
        &[
            ("MONGO__URI", servers.mongo_target_uri.clone()),
            ("KAFKA__BOOTSTRAP_SERVERS", dead.to_string()),
            ("APPLY__METADATA_DATABASE", format!("{name}_meta")),
        ],
    )
    .await;
    assert!(!ok, "{report}");
    assert!(report.contains("FAIL  kafka") && report.contains(&dead.to_string()), "{report}");
}

#[tokio::test]
async fn a_topic_that_takes_smaller_records_than_the_source_may_send_is_named() {
    use rdkafka::admin::AdminClient;
    use rdkafka::client::DefaultClientContext;
    let servers = services();
    let name = unique("doctor_limit");
    let topic = format!("{name}.{name}.docs");
    let admin: AdminClient<DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &servers.kafka_bootstrap).create().expect("admin");
    service_kit::connect::create_topic(&admin, &topic, 1, 1, &[("max.message.bytes", "1048588")]).await.expect("topic");
    let (ok, report) = source_doctor(&name).await;
    assert!(ok, "a warning, not a blocker: {report}");
    assert!(report.contains("WARN  record size") && report.contains(&format!("{topic} (1048588)")), "{report}");
}

/// A source database holding what Amazon DocumentDB cannot: a collection with a collation and
/// indexes DocumentDB lacks (wildcard, 2d, a partial filter with `$in`, hidden) beside two it has
/// (text, unique), a capped collection, a view, documents with dotted field names; and a plain
/// collection. Written directly to the source mongod.
async fn source_documentdb_cannot_hold(name: &str) {
    let db = test_support::mongo(&services().mongo_source_uri).await.database(name);
    let run = |command: bson::Document| {
        let db = db.clone();
        async move { db.run_command(command.clone()).await.unwrap_or_else(|e| panic!("{command}: {e}")) }
    };
    run(doc! {"create": "items", "collation": {"locale": "fr", "strength": 2}}).await;
    run(doc! {"createIndexes": "items", "indexes": [
        {"key": {"title": "text"}, "name": "search", "collation": {"locale": "simple"}},
        {"key": {"sku": 1}, "name": "sku", "unique": true},
        {"key": {"$**": 1}, "name": "everything", "collation": {"locale": "simple"}},
        {"key": {"loc": "2d"}, "name": "flat", "collation": {"locale": "simple"}},
        {"key": {"kind": 1}, "name": "some_kinds", "partialFilterExpression": {"kind": {"$in": ["a", "b"]}}},
        {"key": {"seen": 1}, "name": "quiet", "hidden": true},
    ]})
    .await;
    run(doc! {"create": "logs", "capped": true, "size": 65536}).await;
    run(doc! {"create": "cheap", "viewOn": "items", "pipeline": [{"$match": {"price": {"$lt": 5}}}]}).await;
    db.collection("items").insert_one(doc! {"_id": 1, "sku": "a", "title": "pen"}).await.expect("insert");
    db.collection("dotted").insert_many([doc! {"_id": 1, "a.b": 1}, doc! {"_id": 2, "a": 1}]).await.expect("insert");
    db.collection("plain").insert_one(doc! {"_id": 1, "a": 1}).await.expect("insert");
}

/// The report's line for `ns` among the "documentdb target" checks.
fn target_line<'a>(report: &'a str, ns: &str) -> Option<&'a str> {
    report.lines().find(|line| line.contains("documentdb target") && line.contains(&format!("{ns} ")))
}

#[tokio::test]
async fn what_a_documentdb_target_will_not_carry_is_listed_per_collection() {
    let servers = services();
    let name = unique("doctor_fit");
    source_documentdb_cannot_hold(&name).await;
    let ns = |coll: &str| format!("{name}.{coll}");
    let expected = [
        ("items", vec!["collation", "index everything", "index flat", "index some_kinds", "index quiet option hidden"]),
        ("logs", vec!["capped"]),
        ("cheap", vec!["view"]),
        ("dotted", vec!["1 of 2 sampled documents", "a.b"]),
    ];
    let listed = |report: &str| {
        for (coll, parts) in &expected {
            let line = target_line(report, &ns(coll)).unwrap_or_else(|| panic!("no line for {coll}:\n{report}"));
            for part in parts {
                assert!(line.contains(part), "'{part}' missing for {coll}: {line}");
            }
            // The text index is carried whole; the unique one without the collection's collation.
            for carried in ["index search", "index sku ("] {
                assert!(!line.contains(carried), "{carried} is carried: {line}");
            }
        }
        assert!(target_line(report, &ns("plain")).is_none(), "nothing lost of plain:\n{report}");
    };

    // cdc-source does not know its target: what a DocumentDB target would not carry, as warnings.
    let (ok, report) = source_doctor(&name).await;
    assert!(ok, "warnings only:\n{report}");
    listed(&report);
    assert!(target_line(&report, &ns("dotted")).is_some_and(|l| l.starts_with("WARN")), "{report}");

    // sink-writer reads the source's collections through verify.source_uri; its target is DocumentDB.
    let sink_doctor = |compat: &str, exclude: &str| {
        // A MongoDB target is the target mongod itself, never behind the guard.
        let target = if compat == "mongodb" { &servers.mongo_target_uri } else { &servers.service_target_uri };
        let env = [
            ("MONGO__URI", target.clone()),
            ("KAFKA__BOOTSTRAP_SERVERS", servers.kafka_bootstrap.clone()),
            ("CONSUME__TOPICS", format!("^{name}\\..*")),
            ("APPLY__METADATA_DATABASE", format!("{name}_meta")),
            ("APPLY__COMPAT", compat.to_string()),
            ("VERIFY__SOURCE_URI", servers.service_source_uri.clone()),
            ("VERIFY__INCLUDE", format!("{name}\\..*")),
            ("VERIFY__EXCLUDE", exclude.to_string()),
        ];
        async move { doctor("sink-writer", &env).await }
    };
    let (ok, report) = sink_doctor("documentdb", &format!("{name}\\.dotted")).await;
    assert!(ok, "what is left out or not built is a warning:\n{report}");
    for coll in ["items", "logs", "cheap"] {
        assert!(target_line(&report, &ns(coll)).is_some_and(|l| l.starts_with("WARN")), "{coll}:\n{report}");
    }
    assert!(target_line(&report, &ns("dotted")).is_none(), "excluded:\n{report}");
    let (ok, report) = sink_doctor("documentdb", "").await;
    assert!(!ok, "documents the target cannot store are data lost: a blocker\n{report}");
    listed(&report);
    assert!(target_line(&report, &ns("dotted")).is_some_and(|l| l.starts_with("FAIL")), "{report}");
    // A MongoDB target carries everything.
    let (ok, report) = sink_doctor("mongodb", "").await;
    assert!(ok && !report.contains("documentdb target"), "{report}");
}
