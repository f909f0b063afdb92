//! Both service binaries on MSK IAM against the broker's SASL_SSL listener, whose validator
//! (scripts/kafka/MskIamTokenValidator.java) accepts only tokens signed for the cluster's region
//! (`KAFKA_IAM_REGION`) with the test keys, and ends each session when its token expires.
//!
//! The processes run as deployed in the target region: `AWS_REGION` is the pod's own region,
//! another than the cluster's. The loopback broker has no MSK host name, so a test names the
//! cluster's host in `kafka.aws_region_host` (the setting for bootstrap servers reached under
//! other names), which the services read the region from exactly as from a bootstrap host.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bson::{doc, Document};
use test_support::{eventually, http_get, services};

use crate::aws_endpoints::Endpoint;
use crate::pipeline::compare_databases;
use crate::process::Proc;

/// How a process learns the region its tokens are signed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionSetting {
    /// `kafka.aws_region` names the cluster's region.
    Configured,
    /// Only the cluster's host name does (`kafka.aws_region_host`).
    FromHost,
}

/// The region of the test cluster: the only one its validator accepts.
pub fn cluster_region() -> String {
    services().kafka_iam.region
}

/// The region the processes run in (their `AWS_REGION`): never the cluster's.
pub fn pod_region() -> &'static str {
    if cluster_region() == "us-west-2" {
        "us-east-1"
    } else {
        "us-west-2"
    }
}

/// A broker host name of an MSK cluster in `region`, as `aws kafka get-bootstrap-brokers` lists it.
pub fn msk_host(region: &str) -> String {
    format!("b-1.source.abc123.c2.kafka.{region}.amazonaws.com")
}

/// `{prefix}__KAFKA__…` for the SASL_SSL listener with MSK IAM and tokens of `lifetime_secs`.
pub fn kafka_env(prefix: &str, region: RegionSetting, lifetime_secs: u64) -> Vec<(String, String)> {
    let s = services();
    let mut env = vec![
        (format!("{prefix}__KAFKA__BOOTSTRAP_SERVERS"), s.kafka_sasl_ssl.bootstrap),
        (format!("{prefix}__KAFKA__AUTH"), "aws_msk_iam".into()),
        (format!("{prefix}__KAFKA__IAM_TOKEN_LIFETIME_SECONDS"), lifetime_secs.to_string()),
        (format!("{prefix}__KAFKA__OPTIONS__SSL_CA_LOCATION"), s.kafka_sasl_ssl.ca_file),
    ];
    env.push(match region {
        RegionSetting::Configured => (format!("{prefix}__KAFKA__AWS_REGION"), cluster_region()),
        RegionSetting::FromHost => (format!("{prefix}__KAFKA__AWS_REGION_HOST"), msk_host(&cluster_region())),
    });
    env
}

/// Keeps each process's chain to what the test gives it: no shared profile of the machine, no
/// instance metadata (which would leave loopback) unless the test serves it; `AWS_REGION` is
/// the pod's region, as EKS and ECS inject it.
pub fn isolated_aws_env(dir: &Path) -> Vec<(String, String)> {
    vec![
        ("AWS_CONFIG_FILE".into(), dir.join("no-aws-config").display().to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE".into(), dir.join("no-aws-credentials").display().to_string()),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ("AWS_REGION".into(), pod_region().into()),
    ]
}

/// `vars` over `base`, a later value replacing an earlier one.
pub fn with(base: Vec<(String, String)>, vars: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> =
        base.into_iter().filter(|(k, _)| !vars.iter().any(|(name, _)| name == k)).collect();
    env.extend(vars.iter().map(|(k, v)| (k.to_string(), v.clone())));
    env
}

/// AWS variables for one credential source.
pub type AwsEnv = Vec<(&'static str, String)>;

pub fn env_keys() -> AwsEnv {
    let iam = services().kafka_iam;
    vec![
        ("AWS_ACCESS_KEY_ID", iam.access_key_id),
        ("AWS_SECRET_ACCESS_KEY", iam.secret_access_key),
        ("AWS_SESSION_TOKEN", iam.session_token),
    ]
}

/// A container endpoint with a fixed authorization token.
pub fn container_env(endpoint: &Endpoint) -> AwsEnv {
    vec![
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", format!("{}/v2/credentials/replicator", endpoint.url)),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "pod-identity-token".into()),
    ]
}

/// EKS Pod Identity: the agent's URI and the token file the kubelet keeps current.
pub fn pod_identity_env(agent: &Endpoint, token_file: &Path) -> AwsEnv {
    vec![
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", format!("{}/v1/credentials", agent.url)),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_file.display().to_string()),
    ]
}

/// ECS task role: the relative URI the ECS agent injects; the agent is reached as the HTTP proxy
/// (see [`crate::aws_endpoints::ecs_agent`]), every other address directly.
pub fn ecs_task_env(agent: &Endpoint, relative_uri: &str) -> AwsEnv {
    vec![
        ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", relative_uri.into()),
        ("HTTP_PROXY", agent.url.clone()),
        ("NO_PROXY", "127.0.0.1,localhost".into()),
    ]
}

pub const ROLE_ARN: &str = "arn:aws:iam::111122223333:role/replicator";
pub const WEB_IDENTITY_TOKEN: &str = "eyJ-service-account-token-of-the-test";

/// EKS IRSA: the projected service account token and the role, exchanged at STS.
pub fn web_identity_env(sts: &Endpoint, dir: &Path) -> AwsEnv {
    let token_file = dir.join("eks.amazonaws.com-serviceaccount-token");
    std::fs::write(&token_file, WEB_IDENTITY_TOKEN).expect("token file");
    vec![
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.display().to_string()),
        ("AWS_ROLE_ARN", ROLE_ARN.into()),
        ("AWS_ROLE_SESSION_NAME", "replicator".into()),
        ("AWS_ENDPOINT_URL_STS", sts.url.clone()),
    ]
}

pub fn imds_env(imds: &Endpoint) -> AwsEnv {
    vec![("AWS_EC2_METADATA_DISABLED", "false".into()), ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url.clone())]
}

/// A directory of its own under `.cache/e2e` for a test's logs and files.
pub fn log_dir(name: &str) -> PathBuf {
    let dir = test_support::workspace_root().join(".cache/e2e").join(name);
    std::fs::create_dir_all(&dir).expect("log dir");
    dir
}

/// One of the two services of an [`IamPipeline`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Source,
    Sink,
}

impl Service {
    pub fn binary(self) -> &'static str {
        match self {
            Service::Source => "cdc-source",
            Service::Sink => "sink-writer",
        }
    }

    pub fn metric_prefix(self) -> &'static str {
        match self {
            Service::Source => "cdc_source",
            Service::Sink => "sink_writer",
        }
    }
}

/// What [`IamPipeline::write_for`] saw.
#[derive(Debug, Default)]
pub struct Writes {
    /// The longest a probe document took from the source to the target.
    pub max_apply_latency: Duration,
    pub probes: usize,
}

/// cdc-source and sink-writer as processes on MSK IAM, replicating database `name`.
pub struct IamPipeline {
    pub name: String,
    pub dir: PathBuf,
    source: Proc,
    sink: Proc,
    pub source_http: std::net::SocketAddr,
    pub sink_http: std::net::SocketAddr,
    source_db: mongodb::Database,
    target_db: mongodb::Database,
    next_id: i64,
    started: Instant,
}

impl IamPipeline {
    /// Starts both services (cdc-source with `source_aws`, sink-writer with `sink_aws` in their
    /// environment) and waits until both are ready.
    pub async fn start(
        name: &str,
        region: RegionSetting,
        lifetime_secs: u64,
        source_aws: &[(&str, String)],
        sink_aws: &[(&str, String)],
    ) -> IamPipeline {
        let servers = services();
        let dir = log_dir(name);
        let (source_http, sink_http) = (crate::free_addr(), crate::free_addr());
        let mut source_env = kafka_env("CDC_SOURCE", region, lifetime_secs);
        source_env.extend(crate::source_process_env(name, 2));
        source_env.extend([
            ("CDC_SOURCE__HTTP__LISTEN_ADDR".into(), source_http.to_string()),
            ("CDC_SOURCE__MONGO__URI".into(), servers.service_source_uri.clone()),
        ]);
        let mut sink_env = kafka_env("SINK_WRITER", region, lifetime_secs);
        sink_env.extend(crate::sink_process_env(name));
        sink_env.extend([
            ("SINK_WRITER__HTTP__LISTEN_ADDR".into(), sink_http.to_string()),
            ("SINK_WRITER__MONGO__URI".into(), servers.service_target_uri.clone()),
        ]);
        let source_env = with([source_env, isolated_aws_env(&dir)].concat(), source_aws);
        let sink_env = with([sink_env, isolated_aws_env(&dir)].concat(), sink_aws);
        let source = Proc::new("cdc-source", crate::binary("cdc-source"), vec![], source_env, &dir);
        let sink = Proc::new("sink-writer", crate::binary("sink-writer"), vec![], sink_env, &dir);
        let source_db = test_support::mongo(&servers.mongo_source_uri).await.database(name);
        let target_db = test_support::mongo(&servers.mongo_target_uri).await.database(name);
        source_db.collection::<Document>("orders").insert_one(doc! {"_id": -1_i64}).await.expect("insert");
        let mut pipeline = IamPipeline {
            name: name.into(),
            dir,
            source,
            sink,
            source_http,
            sink_http,
            source_db,
            target_db,
            next_id: 0,
            started: Instant::now(),
        };
        pipeline.source.start();
        pipeline.sink.start();
        for service in [Service::Source, Service::Sink] {
            let addr = pipeline.http(service);
            eventually(&format!("{} ready over MSK IAM", service.binary()), Duration::from_secs(60), || async move {
                http_get(addr, "/health/readyz").await.ok().filter(|(status, _)| *status == 200)
            })
            .await;
        }
        pipeline.started = Instant::now();
        pipeline
    }

    pub fn http(&self, service: Service) -> std::net::SocketAddr {
        match service {
            Service::Source => self.source_http,
            Service::Sink => self.sink_http,
        }
    }

    /// Inserts and updates documents for `duration` (ten a second); once two thirds of the
    /// pipeline's run have passed, also into a new collection (a topic the admin client creates
    /// then). Every 2 s a probe document measures how long the source-to-target path takes.
    pub async fn write_for(&mut self, duration: Duration) -> Writes {
        let orders = self.source_db.collection::<Document>("orders");
        let (probes, landed) = (self.source_db.collection::<Document>("probes"), self.target_db.collection("probes"));
        let mut writes = Writes::default();
        let mut pending: Vec<(i64, Instant)> = Vec::new();
        let started = Instant::now();
        let mut last_probe = Instant::now() - Duration::from_secs(2);
        while started.elapsed() < duration || (!pending.is_empty() && started.elapsed() < duration * 2) {
            if started.elapsed() < duration {
                let i = self.next_id;
                orders.insert_one(doc! {"_id": i, "at": bson::DateTime::now()}).await.expect("insert");
                orders.update_one(doc! {"_id": i / 2}, doc! {"$inc": {"n": 1}}).await.expect("update");
                if self.started.elapsed() > duration * 2 / 3 && i % 10 == 0 {
                    self.source_db.collection::<Document>("late").insert_one(doc! {"_id": i}).await.expect("insert");
                }
                if last_probe.elapsed() >= Duration::from_secs(2) {
                    probes.insert_one(doc! {"_id": i}).await.expect("probe");
                    pending.push((i, Instant::now()));
                    last_probe = Instant::now();
                }
                self.next_id += 1;
            }
            if !pending.is_empty() {
                let ids: Vec<i64> = pending.iter().map(|(id, _)| *id).collect();
                let mut found = landed.find(doc! {"_id": {"$in": ids}}).await.expect("find probes");
                let mut seen = Vec::new();
                while found.advance().await.expect("probe cursor") {
                    let document: Document = found.deserialize_current().expect("probe");
                    seen.push(document.get_i64("_id").expect("probe id"));
                }
                pending.retain(|(id, at)| {
                    let arrived = seen.contains(id);
                    if arrived {
                        writes.max_apply_latency = writes.max_apply_latency.max(at.elapsed());
                        writes.probes += 1;
                    }
                    !arrived
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A probe still missing counts with the time it has waited.
        for (_, at) in pending {
            writes.max_apply_latency = writes.max_apply_latency.max(at.elapsed());
        }
        writes
    }

    /// Waits until the target equals the source; the number of documents compared.
    pub async fn converged(&self, timeout: Duration) -> usize {
        let (source_db, target_db) = (self.source_db.clone(), self.target_db.clone());
        let comparison = eventually("the target equals the source", timeout, || {
            let (s, t) = (source_db.clone(), target_db.clone());
            async move { Some(compare_databases(&s, &t).await).filter(|c| c.lost + c.divergent + c.extra == 0) }
        })
        .await;
        comparison.source_documents
    }

    pub async fn metrics(&self, service: Service) -> String {
        let (status, body) = http_get(self.http(service), "/metrics").await.expect("metrics");
        assert_eq!(status, 200);
        body
    }

    /// `/health/readyz`: status and body.
    pub async fn readyz(&self, service: Service) -> (u16, String) {
        http_get(self.http(service), "/health/readyz").await.expect("readyz")
    }

    /// What the service logged so far.
    pub fn log(&self, service: Service) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.log", service.binary()))).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        self.sink.stop();
        self.source.stop();
    }
}

/// The token metrics of one service: tokens signed and tokens that failed. Asserts that the
/// newest token expires within `lifetime_secs` from now and that no credential shows.
pub fn token_metrics(body: &str, service: Service, lifetime_secs: u64) -> (f64, f64) {
    let prefix = service.metric_prefix();
    let signed = test_support::metric(body, &format!("{prefix}_kafka_auth_tokens_total{{outcome=\"signed\"}}"));
    let failed = test_support::metric(body, &format!("{prefix}_kafka_auth_tokens_total{{outcome=\"failed\"}}"));
    let expiry = test_support::metric(body, &format!("{prefix}_kafka_auth_token_expiry_timestamp_seconds"));
    let now = bson::DateTime::now().timestamp_millis() as f64 / 1000.0;
    assert!(expiry > now && expiry <= now + lifetime_secs as f64 + 1.0, "{prefix}: expiry {expiry}, now {now}");
    let iam = services().kafka_iam;
    for secret in [&iam.secret_access_key, &iam.session_token] {
        assert!(!body.contains(secret.as_str()), "{prefix} metrics show a credential");
    }
    (signed, failed)
}

/// Asserts that `log` holds no credential and no sign of a lapsed or refused token.
pub fn assert_clean_log(service: Service, log: &str, dir: &Path) {
    let iam = services().kafka_iam;
    for secret in [&iam.secret_access_key, &iam.session_token] {
        assert!(!log.contains(secret.as_str()), "{} logged a credential", service.binary());
    }
    for lapse in ["invalid_token", "Authentication failure"] {
        assert!(!log.contains(lapse), "{}: a token lapsed ({lapse}); log in {}", service.binary(), dir.display());
    }
}

/// `doctor` where the AWS_* variables (and HOME) are passed unprefixed, as AWS tooling sets them.
pub async fn doctor_raw(service: &str, env: &[(String, String)]) -> (bool, String) {
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
    let out = tokio::process::Command::new(crate::binary(service))
        .arg("doctor")
        .env_clear()
        .envs(env)
        .output()
        .await
        .expect("doctor runs");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}
