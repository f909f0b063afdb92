//! `mongo.auth = "aws"`: MONGODB-AWS with the process's AWS credential chain (MongoDB Atlas,
//! Amazon DocumentDB IAM authentication). What runs here: the configuration is accepted (and a
//! password beside it refused), and `doctor` against the real target mongod names the
//! credentials it found and explains the refusal (MongoDB Community has no MONGODB-AWS server
//! side, so the server refuses the mechanism) without printing a key. The exchange with a real
//! Atlas or DocumentDB and STS needs an AWS account and is not run.

use test_support::{services, unique};

const SECRET: &str = "mongodb-aws/test+secret-key";
const SESSION: &str = "mongodb-aws-session-token";

/// Runs `sink-writer ARGS` with only `env` (no AWS profile or instance metadata of the machine).
async fn sink_writer(args: &[&str], env: &[(&str, String)]) -> (i32, String) {
    let dir = test_support::workspace_root().join(".cache/e2e").join(unique("mongodb-aws"));
    std::fs::create_dir_all(&dir).expect("dir");
    let out = tokio::process::Command::new(e2e::binary("sink-writer"))
        .args(args)
        .env_clear()
        .env("AWS_CONFIG_FILE", dir.join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("none"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_REGION", "us-east-1")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .await
        .expect("sink-writer runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn keys() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "ASIAMONGODBAWSTEST01".into()),
        ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
        ("AWS_SESSION_TOKEN", SESSION.into()),
    ]
}

#[tokio::test]
async fn aws_auth_is_accepted_and_a_password_beside_it_refused() {
    let target = services().mongo_target_uri;
    let (status, text) = sink_writer(
        &["--print-config"],
        &[("SINK_WRITER__MONGO__URI", target), ("SINK_WRITER__MONGO__AUTH", "aws".into())],
    )
    .await;
    assert_eq!(status, 0, "{text}");
    assert!(text.contains(r#""auth": "aws""#), "{text}");

    let with_password = "mongodb://replicator:pw-not-for-aws@db.example:27017/".to_string();
    let (status, text) = sink_writer(
        &["--print-config"],
        &[("SINK_WRITER__MONGO__URI", with_password), ("SINK_WRITER__MONGO__AUTH", "aws".into())],
    )
    .await;
    assert_eq!(status, 2, "{text}");
    assert!(text.contains("mongo.auth = aws") && text.contains("remove the user and password"), "{text}");
    assert!(!text.contains("pw-not-for-aws"), "{text}");
}

#[tokio::test]
async fn doctor_names_the_credentials_and_explains_a_refused_mongodb_aws_without_printing_them() {
    let servers = services();
    let mut base = vec![
        ("SINK_WRITER__MONGO__URI", format!("{}&serverSelectionTimeoutMS=5000", servers.service_target_uri)),
        ("SINK_WRITER__MONGO__AUTH", "aws".to_string()),
        ("SINK_WRITER__KAFKA__BOOTSTRAP_SERVERS", servers.kafka_bootstrap.clone()),
    ];
    if let Some((_, compat)) = e2e::profile_compat("sink-writer") {
        base.push(("SINK_WRITER__APPLY__COMPAT", compat));
    }

    // Credentials found: named with their source; the server refuses the mechanism.
    let (status, report) = sink_writer(&["doctor"], &[base.clone(), keys()].concat()).await;
    assert_eq!(status, 1, "{report}");
    assert!(
        report.contains("ok    target mongodb auth")
            && report.contains("MONGODB-AWS: credentials from environment (AWS_ACCESS_KEY_ID), no expiry"),
        "{report}"
    );
    let line = report.lines().find(|l| l.starts_with("FAIL  target mongodb ")).unwrap_or_default();
    assert!(line.contains("MONGODB-AWS refused") && line.contains("role ARN"), "{report}");
    for secret in [SECRET, SESSION] {
        assert!(!report.contains(secret), "a credential in the report: {report}");
    }

    // None found: a blocker saying where the chain looked, and no connection attempt.
    let (status, report) = sink_writer(&["doctor"], &base).await;
    assert_eq!(status, 1, "{report}");
    let line = report.lines().find(|l| l.starts_with("FAIL  target mongodb auth")).unwrap_or_default();
    assert!(line.contains("MONGODB-AWS") && line.contains("AWS_WEB_IDENTITY_TOKEN_FILE"), "{report}");
}
