//! Both service binaries authenticating with MSK IAM (SASL OAUTHBEARER, SigV4-presigned token)
//! to the broker's SASL_SSL listener, whose validator (scripts/kafka/MskIamTokenValidator.java)
//! checks the signature and ends each session when its token expires. Tokens live 20 s here, so
//! a client that does not renew its token loses its connections within the test: the data still
//! arriving after three lifetimes, including a topic created by the admin client then, shows
//! every client kind (transactional producer, admin, checkpoint reader, consumer group,
//! dead-letter producer, readiness probe) renews. cdc-source takes its keys from the
//! environment, sink-writer from a container credentials endpoint (ECS task role / EKS Pod
//! Identity style) served by this test.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::doc;
use e2e::pipeline::compare_databases;
use e2e::process::Proc;
use test_support::{eventually, http_get, metric, services, unique};

const LIFETIME_SECONDS: u64 = 20;

/// Serves the test credentials as the ECS agent does, to requests carrying `authorization`.
fn container_credentials_endpoint(authorization: &'static str) -> (String, Arc<AtomicUsize>) {
    let iam = services().kafka_iam;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/v2/credentials/replicator", listener.local_addr().expect("addr"));
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let n = stream.read(&mut request).unwrap_or(0);
            let request = String::from_utf8_lossy(&request[..n]);
            if !request.contains(&format!("Authorization: {authorization}\r\n")) {
                let _ = stream.write_all(b"HTTP/1.0 401 Unauthorized\r\n\r\n");
                continue;
            }
            count.fetch_add(1, Ordering::Relaxed);
            let expiration = bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() + 3_600_000);
            let body = format!(
                r#"{{"AccessKeyId":"{}","SecretAccessKey":"{}","Token":"{}","Expiration":"{}"}}"#,
                iam.access_key_id,
                iam.secret_access_key,
                iam.session_token,
                expiration.try_to_rfc3339_string().expect("rfc3339")
            );
            let _ = write!(stream, "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{body}");
        }
    });
    (url, served)
}

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

#[tokio::test(flavor = "multi_thread")]
async fn the_pipeline_runs_on_msk_iam_tokens_renewed_before_they_expire() {
    let servers = services();
    let iam = servers.kafka_iam.clone();
    let name = unique("iam");
    let dir = test_support::workspace_root().join(".cache/e2e").join(&name);
    std::fs::create_dir_all(&dir).expect("log dir");
    let (source_http, sink_http) = (e2e::free_addr(), e2e::free_addr());

    let mut source_env = kafka_env("CDC_SOURCE");
    source_env.extend(e2e::source_process_env(&name, 2));
    source_env.extend([
        ("CDC_SOURCE__HTTP__LISTEN_ADDR".into(), source_http.to_string()),
        ("CDC_SOURCE__MONGO__URI".into(), servers.mongo_source_uri.clone()),
        ("AWS_ACCESS_KEY_ID".into(), iam.access_key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY".into(), iam.secret_access_key.clone()),
        ("AWS_SESSION_TOKEN".into(), iam.session_token.clone()),
    ]);
    let (credentials_url, credentials_served) = container_credentials_endpoint("pod-identity-token");
    let mut sink_env = kafka_env("SINK_WRITER");
    sink_env.extend(e2e::sink_process_env(&name));
    sink_env.extend([
        ("SINK_WRITER__HTTP__LISTEN_ADDR".into(), sink_http.to_string()),
        ("SINK_WRITER__MONGO__URI".into(), servers.mongo_target_uri.clone()),
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI".into(), credentials_url),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN".into(), "pod-identity-token".into()),
    ]);
    let mut source = Proc::new("cdc-source", e2e::binary("cdc-source"), vec![], source_env, &dir);
    let mut sink = Proc::new("sink-writer", e2e::binary("sink-writer"), vec![], sink_env, &dir);
    let source_db = test_support::mongo(&servers.mongo_source_uri).await.database(&name);
    let target_db = test_support::mongo(&servers.mongo_target_uri).await.database(&name);
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
    assert!(credentials_served.load(Ordering::Relaxed) >= 1, "sink-writer fetched container credentials");
    // Temporary credentials are cached, not fetched for every token.
    assert!(credentials_served.load(Ordering::Relaxed) <= 2, "credentials fetched for every token");
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
    env.push(("MONGO__URI".into(), servers.mongo_target_uri.clone()));

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

/// `doctor` where the AWS_* variables are passed unprefixed, as AWS tooling sets them.
async fn doctor_raw(service: &str, env: &[(String, String)]) -> (bool, String) {
    let prefix = if service == "cdc-source" { "CDC_SOURCE" } else { "SINK_WRITER" };
    let env: Vec<(String, String)> = env
        .iter()
        .map(
            |(k, v)| if k.starts_with("AWS_") { (k.clone(), v.clone()) } else { (format!("{prefix}__{k}"), v.clone()) },
        )
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
