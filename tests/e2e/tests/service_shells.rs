//! Both binaries, as processes against the real servers: configuration from the environment,
//! probes, metrics, redaction, clean stop on SIGTERM, clear errors for bad configuration.

use std::collections::HashMap;
use std::time::Duration;

use e2e::{free_addr, spawn, terminate};
use test_support::{eventually, http_get, services};

struct Service {
    binary: &'static str,
    prefix: &'static str,
    metric: &'static str,
    mongo_component: &'static str,
}

const SERVICES: [Service; 2] = [
    Service {
        binary: "cdc-source",
        prefix: "CDC_SOURCE",
        metric: "cdc_source_build_info",
        mongo_component: "source-mongodb",
    },
    Service {
        binary: "sink-writer",
        prefix: "SINK_WRITER",
        metric: "sink_writer_build_info",
        mongo_component: "target-mongodb",
    },
];

/// The given settings, plus a private database and topics so the services touch nothing else.
fn env(service: &Service, pairs: &[(&str, String)]) -> HashMap<String, String> {
    let name = test_support::unique("shell");
    let private: Vec<(&str, String)> = if service.binary == "cdc-source" {
        vec![
            ("CAPTURE__NAME", name.clone()),
            ("CAPTURE__SCOPE", "database".into()),
            ("CAPTURE__DATABASE", name.clone()),
            ("TOPICS__PREFIX", name),
        ]
    } else {
        vec![
            ("CONSUME__TOPICS", format!("^{name}\\..*")),
            ("CONSUME__GROUP_ID", name.clone()),
            ("CONSUME__DEAD_LETTER_TOPIC", format!("{name}-dlq")),
            ("APPLY__METADATA_DATABASE", format!("{name}_meta")),
        ]
    };
    let compat = e2e::profile_compat(service.binary);
    let compat = compat.iter().map(|(key, value)| (key.as_str(), value.clone()));
    private
        .iter()
        .map(|(key, value)| (*key, value.clone()))
        .chain(compat)
        .chain(pairs.iter().map(|(key, value)| (*key, value.clone())))
        .map(|(key, value)| (format!("{}__{key}", service.prefix), value))
        .collect()
}

#[tokio::test]
async fn binaries_answer_probes_and_stop_cleanly_on_sigterm() {
    let servers = services();
    for service in &SERVICES {
        let addr = free_addr();
        let mongo_uri =
            if service.binary == "cdc-source" { &servers.service_source_uri } else { &servers.service_target_uri };
        let mut child = spawn(
            service.binary,
            &[],
            &env(
                service,
                &[
                    ("HTTP__LISTEN_ADDR", addr.to_string()),
                    ("MONGO__URI", mongo_uri.clone()),
                    ("KAFKA__BOOTSTRAP_SERVERS", servers.kafka_bootstrap.clone()),
                    ("LOG__FORMAT", "json".into()),
                ],
            ),
        );
        let body = eventually(&format!("{} ready", service.binary), Duration::from_secs(30), || async {
            match http_get(addr, "/health/readyz").await {
                Ok((200, body)) => Some(body),
                _ => None,
            }
        })
        .await;
        // cdc-source says which role it has (alone: always active; see tests/standby.rs).
        let expected = if service.binary == "cdc-source" { "ok\nrole: active\n" } else { "ok\n" };
        assert_eq!(body, expected);
        assert_eq!(http_get(addr, "/health/livez").await.expect("livez").0, 200);
        let (status, metrics) = http_get(addr, "/metrics").await.expect("metrics");
        assert_eq!(status, 200);
        assert!(metrics.contains(&format!("{}{{version=", service.metric)), "{metrics}");
        assert!(metrics.contains("process_resident_memory_bytes"), "{metrics}");
        assert_eq!(http_get(addr, "/admin").await.expect("404").0, 404, "nothing but probes and metrics");

        terminate(&child).await;
        let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .expect("stops within 15 s of SIGTERM")
            .expect("exit status");
        assert_eq!(status.code(), Some(0), "{} exit status", service.binary);
    }
}

#[tokio::test]
async fn unreachable_mongodb_is_not_ready_and_the_reason_hides_the_password() {
    let servers = services();
    for service in &SERVICES {
        let addr = free_addr();
        let dead = free_addr();
        let mut child = spawn(
            service.binary,
            &[],
            &env(
                service,
                &[
                    ("HTTP__LISTEN_ADDR", addr.to_string()),
                    ("MONGO__URI", format!("mongodb://admin:hunter2@{dead}/?directConnection=true")),
                    ("MONGO__SERVER_SELECTION_TIMEOUT_MS", "500".into()),
                    ("KAFKA__BOOTSTRAP_SERVERS", servers.kafka_bootstrap.clone()),
                ],
            ),
        );
        let body = eventually("a readiness verdict on MongoDB", Duration::from_secs(30), || async {
            match http_get(addr, "/health/readyz").await {
                Ok((503, body)) if body.contains(&format!("{}: unreachable", service.mongo_component)) => Some(body),
                _ => None,
            }
        })
        .await;
        assert!(!body.contains("hunter2"), "{body}");
        assert_eq!(http_get(addr, "/health/livez").await.expect("livez").0, 200, "alive while waiting for MongoDB");
        terminate(&child).await;
        let output = tokio::time::timeout(Duration::from_secs(15), child.wait()).await.expect("stops").expect("status");
        assert_eq!(output.code(), Some(0));
        let mut logs = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            use tokio::io::AsyncReadExt;
            stderr.read_to_string(&mut logs).await.expect("stderr");
        }
        assert!(!logs.contains("hunter2"), "password in logs: {logs}");
    }
}

#[tokio::test]
async fn bad_configuration_lists_every_problem_and_exits_2() {
    for service in &SERVICES {
        let child = spawn(
            service.binary,
            &[],
            &env(
                service,
                &[
                    ("MONGO__URI", "postgres://nope".into()),
                    ("KAFKA__BOOTSTRAP_SERVERS", " ".into()),
                    ("KAFKA__BOOTSTRAP", "typo".into()),
                ],
            ),
        );
        let output = child.wait_with_output().await.expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("unknown key `kafka.bootstrap`"), "{stderr}");
        assert!(stderr.contains("mongo.uri must start with mongodb://"), "{stderr}");
        assert!(stderr.contains("kafka.bootstrap_servers must name at least one host:port"), "{stderr}");
    }
}

#[tokio::test]
async fn print_config_redacts_secrets() {
    for service in &SERVICES {
        let child = spawn(
            service.binary,
            &["--print-config"],
            &env(
                service,
                &[
                    ("MONGO__URI", "mongodb://admin:hunter2@db.example:27017/?tls=true".into()),
                    ("KAFKA__OPTIONS__SASL_PASSWORD", "hunter3".into()),
                ],
            ),
        );
        let output = child.wait_with_output().await.expect("runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.contains("mongodb://admin:***@db.example:27017/?tls=true"), "{stdout}");
        assert!(!stdout.contains("hunter2"), "{stdout}");
        assert!(!stdout.contains("hunter3"), "{stdout}");
    }
}

#[tokio::test]
async fn refused_credentials_stay_out_of_logs_metrics_and_probes_even_at_debug_level() {
    let servers = services();
    let (mongo_password, kafka_password) = ("Mongo-Secret-7391", "Kafka-Secret-4826");
    for service in &SERVICES {
        let addr = free_addr();
        let mongo =
            if service.binary == "cdc-source" { &servers.service_source_uri } else { &servers.service_target_uri };
        // The loopback servers have no such user: both refuse, and the failures get reported.
        let mongo_uri = mongo.replacen("mongodb://", &format!("mongodb://replicator:{mongo_password}@"), 1);
        let mut child = spawn(
            service.binary,
            &[],
            &env(
                service,
                &[
                    ("HTTP__LISTEN_ADDR", addr.to_string()),
                    ("LOG__LEVEL", "debug".into()),
                    ("MONGO__URI", mongo_uri),
                    ("MONGO__SERVER_SELECTION_TIMEOUT_MS", "2000".into()),
                    ("KAFKA__BOOTSTRAP_SERVERS", servers.kafka_sasl_ssl.bootstrap.clone()),
                    ("KAFKA__OPTIONS__SECURITY_PROTOCOL", "SASL_SSL".into()),
                    ("KAFKA__OPTIONS__SASL_MECHANISM", "SCRAM-SHA-512".into()),
                    ("KAFKA__OPTIONS__SASL_USERNAME", servers.kafka_sasl_ssl.user.clone()),
                    ("KAFKA__OPTIONS__SASL_PASSWORD", kafka_password.into()),
                    ("KAFKA__OPTIONS__SSL_CA_LOCATION", servers.kafka_sasl_ssl.ca_file.clone()),
                ],
            ),
        );
        // Debug output fills a pipe quickly: read both streams while the service runs.
        let readers: Vec<_> = [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        .map(|mut stream| {
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut text = Vec::new();
                let _ = stream.read_to_end(&mut text).await;
                String::from_utf8_lossy(&text).to_string()
            })
        })
        .collect();
        let mut served = String::new();
        let verdict = eventually("readiness names both refusals", Duration::from_secs(30), || async {
            match http_get(addr, "/health/readyz").await {
                Ok((503, body)) if body.contains("unreachable") && body.contains("kafka: unreachable") => Some(body),
                _ => None,
            }
        })
        .await;
        served.push_str(&verdict);
        for path in ["/health/livez", "/metrics", "/health/readyz"] {
            if let Ok((_, body)) = http_get(addr, path).await {
                served.push_str(&body);
            }
        }
        terminate(&child).await;
        let _ = tokio::time::timeout(Duration::from_secs(15), child.wait()).await.expect("stops");
        let mut logs = String::new();
        for reader in readers {
            logs.push_str(&reader.await.expect("reader"));
        }
        let lower = logs.to_lowercase();
        assert!(lower.contains("authentication"), "{}: the refusals were logged: {logs:.3000}", service.binary);
        for secret in [mongo_password, kafka_password] {
            assert!(!served.contains(secret), "{}: {secret} served over HTTP: {served:.2000}", service.binary);
            assert!(!logs.contains(secret), "{}: {secret} in the logs", service.binary);
        }
    }
}
