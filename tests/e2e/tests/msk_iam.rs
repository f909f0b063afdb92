//! Both service binaries authenticating with MSK IAM (SASL OAUTHBEARER, SigV4-presigned token)
//! to the broker's SASL_SSL listener, whose validator (scripts/kafka/MskIamTokenValidator.java)
//! checks the signature and ends each session when its token expires. Tokens live 20 s here, so
//! a client that does not renew its token loses its connections within the test: the data still
//! arriving after three lifetimes, including a topic created by the admin client then, shows
//! every client kind (transactional producer, admin, checkpoint reader, consumer group,
//! dead-letter producer, readiness probe) renews.
//!
//! Credentials come from every source of the AWS SDK's chain, served on loopback by
//! `e2e::aws_endpoints` with the broker's test keys: environment keys and the container endpoint
//! (ECS task role / EKS Pod Identity) in one pipeline, a web identity token exchanged at STS
//! (EKS IRSA) and EC2 instance metadata (IMDSv2) in another, and `doctor` on each source plus
//! a shared profile with keys and an IAM Identity Center (SSO) profile.

use std::path::Path;
use std::time::{Duration, Instant};

use bson::doc;
use e2e::aws_endpoints::{self, Endpoint};
use e2e::pipeline::compare_databases;
use e2e::process::Proc;
use test_support::{eventually, http_get, metric, services, unique};

const LIFETIME_SECONDS: u64 = 20;

fn kafka_env(prefix: &str) -> Vec<(String, String)> {
    let s = services();
    vec![
        (format!("{prefix}__KAFKA__BOOTSTRAP_SERVERS"), s.kafka_sasl_ssl.bootstrap),
        (format!("{prefix}__KAFKA__AUTH"), "aws_msk_iam".into()),
        (format!("{prefix}__KAFKA__AWS_REGION"), s.kafka_iam.region),
        (format!("{prefix}__KAFKA__IAM_TOKEN_LIFETIME_SECONDS"), LIFETIME_SECONDS.to_string()),
        (format!("{prefix}__KAFKA__OPTIONS__SSL_CA_LOCATION"), s.kafka_sasl_ssl.ca_file),
    ]
}

/// Keeps each process's chain to what the test gives it: no shared profile of the machine, no
/// instance metadata (which would leave loopback) unless the test serves it.
fn isolated_aws_env(dir: &Path) -> Vec<(String, String)> {
    vec![
        ("AWS_CONFIG_FILE".into(), dir.join("no-aws-config").display().to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE".into(), dir.join("no-aws-credentials").display().to_string()),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ("AWS_REGION".into(), services().kafka_iam.region),
    ]
}

/// `vars` over `base`, a later value replacing an earlier one.
fn with(base: Vec<(String, String)>, vars: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> =
        base.into_iter().filter(|(k, _)| !vars.iter().any(|(name, _)| name == k)).collect();
    env.extend(vars.iter().map(|(k, v)| (k.to_string(), v.clone())));
    env
}

/// AWS variables for one credential source.
type AwsEnv = Vec<(&'static str, String)>;

fn env_keys() -> AwsEnv {
    let iam = services().kafka_iam;
    vec![
        ("AWS_ACCESS_KEY_ID", iam.access_key_id),
        ("AWS_SECRET_ACCESS_KEY", iam.secret_access_key),
        ("AWS_SESSION_TOKEN", iam.session_token),
    ]
}

fn container_env(endpoint: &Endpoint) -> AwsEnv {
    vec![
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", format!("{}/v2/credentials/replicator", endpoint.url)),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "pod-identity-token".into()),
    ]
}

const ROLE_ARN: &str = "arn:aws:iam::111122223333:role/replicator";
const WEB_IDENTITY_TOKEN: &str = "eyJ-service-account-token-of-the-test";

/// EKS IRSA: the projected service account token and the role, exchanged at STS.
fn web_identity_env(sts: &Endpoint, dir: &Path) -> AwsEnv {
    let token_file = dir.join("eks.amazonaws.com-serviceaccount-token");
    std::fs::write(&token_file, WEB_IDENTITY_TOKEN).expect("token file");
    vec![
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.display().to_string()),
        ("AWS_ROLE_ARN", ROLE_ARN.into()),
        ("AWS_ROLE_SESSION_NAME", "replicator".into()),
        ("AWS_ENDPOINT_URL_STS", sts.url.clone()),
    ]
}

fn imds_env(imds: &Endpoint) -> AwsEnv {
    vec![("AWS_EC2_METADATA_DISABLED", "false".into()), ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url.clone())]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pipeline_runs_on_msk_iam_tokens_renewed_before_they_expire() {
    let container = aws_endpoints::container("pod-identity-token");
    let name = unique("iam");
    run_pipeline_on_iam(&name, &env_keys(), &container_env(&container)).await;
    assert!(container.served() >= 1, "sink-writer fetched container credentials");
    // Temporary credentials are cached, not fetched for every token.
    assert!(container.served() <= 2, "credentials fetched for every token: {}", container.served());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pipeline_runs_on_web_identity_and_instance_profile_credentials() {
    let (sts, imds) = (aws_endpoints::sts(ROLE_ARN, WEB_IDENTITY_TOKEN), aws_endpoints::imds("replicator-node"));
    let name = unique("iam-irsa");
    let dir = log_dir(&name);
    run_pipeline_on_iam(&name, &web_identity_env(&sts, &dir), &imds_env(&imds)).await;
    for (endpoint, what) in [(&sts, "STS web identity"), (&imds, "instance metadata")] {
        assert!(endpoint.served() >= 1, "{what} credentials were not asked for");
        assert!(endpoint.served() <= 2, "{what} credentials fetched for every token: {}", endpoint.served());
    }
}

fn log_dir(name: &str) -> std::path::PathBuf {
    let dir = test_support::workspace_root().join(".cache/e2e").join(name);
    std::fs::create_dir_all(&dir).expect("log dir");
    dir
}

/// Runs both services on MSK IAM with 20 s tokens for three lifetimes, cdc-source with
/// `source_aws` in its environment and sink-writer with `sink_aws`, and checks the target, the
/// token metrics and that no credential reached logs or metrics.
async fn run_pipeline_on_iam(name: &str, source_aws: &[(&str, String)], sink_aws: &[(&str, String)]) {
    let servers = services();
    let iam = servers.kafka_iam.clone();
    let dir = log_dir(name);
    let (source_http, sink_http) = (e2e::free_addr(), e2e::free_addr());

    let mut source_env = kafka_env("CDC_SOURCE");
    source_env.extend(e2e::source_process_env(name, 2));
    source_env.extend([
        ("CDC_SOURCE__HTTP__LISTEN_ADDR".into(), source_http.to_string()),
        ("CDC_SOURCE__MONGO__URI".into(), servers.service_source_uri.clone()),
    ]);
    let mut sink_env = kafka_env("SINK_WRITER");
    sink_env.extend(e2e::sink_process_env(name));
    sink_env.extend([
        ("SINK_WRITER__HTTP__LISTEN_ADDR".into(), sink_http.to_string()),
        ("SINK_WRITER__MONGO__URI".into(), servers.service_target_uri.clone()),
    ]);
    let source_env = with([source_env, isolated_aws_env(&dir)].concat(), source_aws);
    let sink_env = with([sink_env, isolated_aws_env(&dir)].concat(), sink_aws);
    let mut source = Proc::new("cdc-source", e2e::binary("cdc-source"), vec![], source_env, &dir);
    let mut sink = Proc::new("sink-writer", e2e::binary("sink-writer"), vec![], sink_env, &dir);
    let source_db = test_support::mongo(&servers.mongo_source_uri).await.database(name);
    let target_db = test_support::mongo(&servers.mongo_target_uri).await.database(name);
    source_db.collection::<bson::Document>("orders").insert_one(doc! {"_id": -1}).await.expect("insert");
    source.start();
    sink.start();
    for addr in [source_http, sink_http] {
        eventually("both services ready over MSK IAM", Duration::from_secs(60), || async move {
            http_get(addr, "/health/readyz").await.ok().filter(|(status, _)| *status == 200)
        })
        .await;
    }

    // Writes for three token lifetimes; a new collection (a topic the admin client creates)
    // only after two of them.
    let orders = source_db.collection::<bson::Document>("orders");
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(3 * LIFETIME_SECONDS) {
        orders.insert_one(doc! {"_id": i, "at": bson::DateTime::now()}).await.expect("insert");
        orders.update_one(doc! {"_id": i / 2}, doc! {"$inc": {"n": 1}}).await.expect("update");
        if started.elapsed() > Duration::from_secs(2 * LIFETIME_SECONDS) && i % 10 == 0 {
            source_db.collection::<bson::Document>("late").insert_one(doc! {"_id": i}).await.expect("insert");
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let comparison = eventually("the target equals the source", Duration::from_secs(60), || {
        let (s, t) = (source_db.clone(), target_db.clone());
        async move { Some(compare_databases(&s, &t).await).filter(|c| c.lost + c.divergent + c.extra == 0) }
    })
    .await;
    assert!(comparison.source_documents > 300, "{comparison:?}");

    for (addr, prefix) in [(source_http, "cdc_source"), (sink_http, "sink_writer")] {
        let (status, body) = http_get(addr, "/metrics").await.expect("metrics");
        assert_eq!(status, 200);
        let signed = metric(&body, &format!("{prefix}_kafka_auth_tokens_total{{outcome=\"signed\"}}"));
        let failed = metric(&body, &format!("{prefix}_kafka_auth_tokens_total{{outcome=\"failed\"}}"));
        // Every client signs at start and again at 80% of each lifetime.
        assert!(signed >= 6.0, "{prefix}: {signed} tokens signed in {:?}", started.elapsed());
        assert_eq!(failed, 0.0, "{prefix}: token failures");
        let expiry = metric(&body, &format!("{prefix}_kafka_auth_token_expiry_timestamp_seconds"));
        let now = bson::DateTime::now().timestamp_millis() as f64 / 1000.0;
        assert!(expiry > now && expiry <= now + LIFETIME_SECONDS as f64 + 1.0, "{prefix}: expiry {expiry}, now {now}");
        for secret in [&iam.secret_access_key, &iam.session_token] {
            assert!(!body.contains(secret.as_str()), "{prefix} metrics show a credential");
        }
        if prefix == "cdc_source" {
            // A client whose token lapsed fails its requests; the pipeline would recover by
            // restarting, which is not what renewal is for.
            assert_eq!(metric(&body, "cdc_source_restarts_total"), 0.0, "pipeline restarts");
        }
    }
    sink.stop();
    source.stop();
    for service in ["cdc-source", "sink-writer"] {
        let log = std::fs::read_to_string(dir.join(format!("{service}.log"))).expect("log");
        for secret in [&iam.secret_access_key, &iam.session_token] {
            assert!(!log.contains(secret.as_str()), "{service} logged a credential");
        }
        for lapse in ["invalid_token", "Authentication failure"] {
            assert!(!log.contains(lapse), "{service}: a token lapsed ({lapse}); log in {}", dir.display());
        }
    }
}

#[tokio::test]
async fn doctor_names_a_rejected_iam_signature_and_missing_credentials_without_printing_secrets() {
    let servers = services();
    let iam = servers.kafka_iam.clone();
    let wrong = "Wrong/secret+key-for-msk-iam";
    let mut env: Vec<(String, String)> =
        kafka_env("X").into_iter().map(|(k, v)| (k.replacen("X__", "", 1), v)).collect();
    env.push(("MONGO__URI".into(), servers.service_target_uri.clone()));
    env.extend(e2e::profile_compat("sink-writer"));
    env.extend(isolated_aws_env(&log_dir(&unique("iam-doctor"))));

    // No credentials anywhere: a blocker that says where they are looked for.
    let (ok, report) = doctor_raw("sink-writer", &env).await;
    assert!(!ok, "{report}");
    assert!(report.contains("FAIL  kafka auth") && report.contains("AWS_ACCESS_KEY_ID"), "{report}");

    // Keys the broker does not accept: the signature is checked and refused.
    let doctor_with = |secret: &str| {
        let mut keyed = env.clone();
        keyed.push(("AWS_ACCESS_KEY_ID".into(), iam.access_key_id.clone()));
        keyed.push(("AWS_SECRET_ACCESS_KEY".into(), secret.to_string()));
        keyed.push(("AWS_SESSION_TOKEN".into(), iam.session_token.clone()));
        keyed
    };
    let keyed = doctor_with(wrong);
    let (ok, report) = doctor_raw("sink-writer", &keyed).await;
    assert!(!ok, "{report}");
    assert!(report.contains("ok    kafka auth"), "{report}");
    assert!(report.contains("FAIL  kafka"), "{report}");
    assert!(report.to_lowercase().contains("authentication"), "the reason names authentication: {report}");
    assert!(!report.contains(wrong), "the secret leaked: {report}");

    let keyed = doctor_with(&iam.secret_access_key);
    let (ok, report) = doctor_raw("sink-writer", &keyed).await;
    assert!(ok && report.contains("broker(s)"), "the right keys pass: {report}");
    assert!(!report.contains(&iam.secret_access_key) && !report.contains(&iam.session_token), "{report}");
}

const SSO_ACCESS_TOKEN: &str = "sso-access-token-of-the-test";

/// A developer's IAM Identity Center profile as `aws configure sso` writes it, with the access
/// token `aws sso login` caches under `home`.
fn sso_env(portal: &Endpoint, dir: &Path) -> AwsEnv {
    let home = dir.join("home");
    let cache = home.join(".aws/sso/cache");
    std::fs::create_dir_all(&cache).expect("sso cache");
    let config = dir.join("aws-config");
    std::fs::write(
        &config,
        "[profile replicator-dev]\nsso_session = corp\nsso_account_id = 111122223333\nsso_role_name = Replicator\n\
         region = us-east-1\n\n[sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\nsso_region = us-east-1\n",
    )
    .expect("aws config");
    // The cache file is named by the SHA-1 of the session name: sha1("corp").
    std::fs::write(
        cache.join("ee0bfd2552fbd840c02cc48b6e823320543c450f.json"),
        format!(
            r#"{{"accessToken":"{SSO_ACCESS_TOKEN}","expiresAt":"2099-01-01T00:00:00Z","region":"us-east-1","startUrl":"https://corp.awsapps.com/start"}}"#
        ),
    )
    .expect("sso token");
    vec![
        ("HOME", home.display().to_string()),
        ("AWS_CONFIG_FILE", config.display().to_string()),
        ("AWS_PROFILE", "replicator-dev".into()),
        ("AWS_ENDPOINT_URL_SSO", portal.url.clone()),
    ]
}

/// A shared credentials file with a role's keys (`aws configure`).
fn profile_env(dir: &Path) -> AwsEnv {
    let iam = services().kafka_iam;
    let file = dir.join("aws-credentials");
    std::fs::write(
        &file,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\naws_session_token = {}\n",
            iam.access_key_id, iam.secret_access_key, iam.session_token
        ),
    )
    .expect("credentials file");
    vec![("AWS_SHARED_CREDENTIALS_FILE", file.display().to_string())]
}

#[tokio::test]
async fn doctor_connects_with_each_credential_source_and_names_it_with_its_expiry() {
    let servers = services();
    let iam = servers.kafka_iam.clone();
    let dir = log_dir(&unique("iam-sources"));
    let mut base: Vec<(String, String)> =
        kafka_env("X").into_iter().map(|(k, v)| (k.replacen("X__", "", 1), v)).collect();
    base.push(("MONGO__URI".into(), servers.service_target_uri.clone()));
    base.extend(e2e::profile_compat("sink-writer"));
    base.extend(isolated_aws_env(&dir));
    let (container, sts, imds, portal) = (
        aws_endpoints::container("pod-identity-token"),
        aws_endpoints::sts(ROLE_ARN, WEB_IDENTITY_TOKEN),
        aws_endpoints::imds("replicator-node"),
        aws_endpoints::sso_portal(SSO_ACCESS_TOKEN),
    );
    let sources: Vec<(&str, AwsEnv, bool)> = vec![
        ("environment (AWS_ACCESS_KEY_ID), no expiry", env_keys(), false),
        ("shared profile (keys), no expiry", profile_env(&dir), false),
        ("SSO (IAM Identity Center profile), expire ", sso_env(&portal, &dir), true),
        ("WebIdentityToken (AWS_WEB_IDENTITY_TOKEN_FILE, EKS IRSA), expire ", web_identity_env(&sts, &dir), true),
        ("container endpoint (ECS task role or EKS Pod Identity), expire ", container_env(&container), true),
        ("IMDSv2 (EC2 instance profile), expire ", imds_env(&imds), true),
    ];
    // Every source is tried; the failures are reported together.
    let mut failures = Vec::new();
    for (source, vars, expires) in sources {
        let (ok, report) = doctor_raw("sink-writer", &with(base.clone(), &vars)).await;
        let line = report.lines().find(|l| l.starts_with("ok    kafka auth")).unwrap_or_default();
        let expiry = line.split("expire ").nth(1).and_then(|t| t.split(';').next()).unwrap_or_default();
        // Within the hour the endpoints grant.
        let expiry_left = bson::DateTime::parse_rfc3339_str(expiry)
            .map(|at| at.timestamp_millis() - bson::DateTime::now().timestamp_millis())
            .unwrap_or(-1);
        if !(ok && report.contains("broker(s)")) {
            failures.push(format!("{source}: the broker did not accept its token:\n{report}"));
        } else if !line.contains(&format!("credentials from {source}")) {
            failures.push(format!("{source}: not named in '{line}'"));
        } else if expires && !(3_000_000..=3_600_000).contains(&expiry_left) {
            failures.push(format!("{source}: expiry '{expiry}' is not the granted one in '{line}'"));
        }
        for secret in [&iam.secret_access_key, &iam.session_token] {
            assert!(!report.contains(secret.as_str()), "{source}: a credential in {report}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for (endpoint, what) in [(&container, "container"), (&sts, "STS"), (&imds, "IMDS"), (&portal, "SSO portal")] {
        assert_eq!(endpoint.served(), 1, "{what} credentials asked for once");
    }
}

/// `doctor` where the AWS_* variables are passed unprefixed, as AWS tooling sets them.
async fn doctor_raw(service: &str, env: &[(String, String)]) -> (bool, String) {
    let prefix = if service == "cdc-source" { "CDC_SOURCE" } else { "SINK_WRITER" };
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| {
            if k.starts_with("AWS_") || k == "HOME" {
                (k.clone(), v.clone())
            } else {
                (format!("{prefix}__{k}"), v.clone())
            }
        })
        .collect();
    let out = tokio::process::Command::new(e2e::binary(service))
        .arg("doctor")
        .env_clear()
        .envs(env)
        .output()
        .await
        .expect("doctor runs");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}
