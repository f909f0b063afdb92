//! Both service binaries authenticating with MSK IAM (SASL OAUTHBEARER, SigV4-presigned token)
//! to the broker's SASL_SSL listener, whose validator (scripts/kafka/MskIamTokenValidator.java)
//! accepts only tokens signed for the cluster's region and ends each session when its token
//! expires. Tokens live 20 s here, so a client that does not renew its token loses its
//! connections within the test: the data still arriving after three lifetimes, including a topic
//! created by the admin client then, shows every client kind (transactional producer, admin,
//! checkpoint reader, consumer group, dead-letter producer, readiness probe) renews.
//!
//! The processes run as in the target region: `AWS_REGION` is the pod's region, not the
//! cluster's (`e2e::iam`). Credentials come from every source of the AWS SDK's chain, served on
//! loopback by `e2e::aws_endpoints` with the broker's test keys: the ECS task role (relative URI)
//! and EKS Pod Identity (token file, rotated during the run) with credentials that rotate every
//! 60 s; a web identity token exchanged at a slow STS (EKS IRSA) and EC2 instance metadata
//! (IMDSv2); an STS outage shorter and longer than the credentials' life; and `doctor` on each
//! source plus environment keys, a shared profile with keys and an IAM Identity Center (SSO)
//! profile, and on the region decision.
//!
//! `credentials_rotating_every_60_s_through_five_minutes` is ignored by default (5 minutes):
//! `cargo test -p e2e --test msk_iam -- --ignored`.

use std::path::Path;
use std::time::{Duration, Instant};

use e2e::aws_endpoints::{self, Endpoint};
use e2e::iam::{
    assert_clean_log, cluster_region, container_env, doctor_raw, ecs_task_env, env_keys, imds_env, isolated_aws_env,
    kafka_env, log_dir, msk_host, pod_identity_env, pod_region, token_metrics, web_identity_env, with, AwsEnv,
    IamPipeline, RegionSetting, Service, ROLE_ARN, WEB_IDENTITY_TOKEN,
};
use test_support::{eventually, metric, services, unique};

const LIFETIME_SECONDS: u64 = 20;
const ECS_RELATIVE_URI: &str = "/v2/credentials/6f1c2d0e-replicator-task";

#[tokio::test(flavor = "multi_thread")]
async fn the_target_region_pipeline_signs_for_the_clusters_region_on_rotating_container_credentials() {
    rotating_container_credentials(Duration::from_secs(3 * LIFETIME_SECONDS)).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "five minutes: run with --ignored"]
async fn credentials_rotating_every_60_s_through_five_minutes() {
    rotating_container_credentials(Duration::from_secs(300)).await;
}

/// cdc-source on the ECS task role (relative URI), sink-writer on EKS Pod Identity (token file,
/// rotated by the "kubelet" half-way), both granted credentials for 60 s, in the pod's region
/// with the region only in the cluster's host name; writes for `run_for`.
async fn rotating_container_credentials(run_for: Duration) {
    const CREDENTIALS: Duration = Duration::from_secs(60);
    let name = unique("iam-rotate");
    let dir = log_dir(&name);
    let token_file = dir.join("eks-pod-identity-token");
    std::fs::write(&token_file, "pod-identity-token-1").expect("token file");
    let agent = aws_endpoints::pod_identity_agent(token_file.clone()).grant_for(CREDENTIALS);
    let ecs = aws_endpoints::ecs_agent(ECS_RELATIVE_URI).grant_for(CREDENTIALS);
    let started = Instant::now();
    let mut p = IamPipeline::start(
        &name,
        RegionSetting::FromHost,
        LIFETIME_SECONDS,
        &ecs_task_env(&ecs, ECS_RELATIVE_URI),
        &pod_identity_env(&agent, &token_file),
    )
    .await;
    let first = p.write_for(run_for / 2).await;
    std::fs::write(&token_file, "pod-identity-token-2").expect("rotate the token file");
    let before_rotation = agent.served();
    let second = p.write_for(run_for / 2).await;
    assert!(p.converged(Duration::from_secs(60)).await > 300);
    let elapsed = started.elapsed().as_secs();
    assert!(agent.served() > before_rotation, "no credentials fetched with the rotated token file");
    assert_eq!((agent.refused(), ecs.refused()), (0, 0), "a credential request was refused");
    for (endpoint, what) in [(&agent, "EKS Pod Identity"), (&ecs, "ECS task role")] {
        // Renewed before they expire (at least once a lifetime), not fetched for every token.
        let served = endpoint.served() as u64;
        assert!(served > elapsed / 60, "{what}: {served} fetches of 60 s credentials in {elapsed} s");
        assert!(served <= 2 + elapsed / 15, "{what}: {served} fetches in {elapsed} s: fetched per token?");
    }
    for writes in [&first, &second] {
        assert!(writes.max_apply_latency < Duration::from_secs(5), "a write took {writes:?} to reach the target");
    }
    for service in [Service::Source, Service::Sink] {
        let body = p.metrics(service).await;
        let (signed, failed) = token_metrics(&body, service, LIFETIME_SECONDS);
        let prefix = service.metric_prefix();
        // Every client signs at start and again at 80% of each lifetime.
        assert!(signed >= 6.0, "{prefix}: {signed} tokens signed in {elapsed} s");
        assert_eq!(failed, 0.0, "{prefix}: token failures");
        let refresh_failures =
            metric(&body, &format!("{prefix}_aws_credentials_refreshes_total{{outcome=\"failed\"}}"));
        assert_eq!(refresh_failures, 0.0, "{prefix}: credential refreshes failed");
        let expiry = metric(&body, &format!("{prefix}_aws_credentials_expiry_timestamp_seconds"));
        let now = bson::DateTime::now().timestamp_millis() as f64 / 1000.0;
        assert!(expiry > now && expiry <= now + 61.0, "{prefix}: credentials expire at {expiry}, now {now}");
        if service == Service::Source {
            // A client whose token lapsed fails its requests; the pipeline would recover by
            // restarting, which is not what renewal is for.
            assert_eq!(metric(&body, "cdc_source_restarts_total"), 0.0, "pipeline restarts");
        }
    }
    p.stop();
    for service in [Service::Source, Service::Sink] {
        assert_clean_log(service, &p.log(service), &p.dir);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_sts_never_stalls_the_pipeline_on_web_identity_and_instance_profile_credentials() {
    // STS answers every exchange after the first in 8 s; the credentials last a minute, so they
    // are renewed during the run. Signing a token must not wait for STS.
    let sts = aws_endpoints::sts(ROLE_ARN, WEB_IDENTITY_TOKEN)
        .grant_for(Duration::from_secs(60))
        .slow_after_first(Duration::from_secs(8));
    let imds = aws_endpoints::imds("replicator-node").grant_for(Duration::from_secs(60));
    let name = unique("iam-irsa");
    let dir = log_dir(&name);
    // Here kafka.aws_region names the cluster's region: the override, over the pod's AWS_REGION.
    let mut p = IamPipeline::start(
        &name,
        RegionSetting::Configured,
        LIFETIME_SECONDS,
        &imds_env(&imds),
        &web_identity_env(&sts, &dir),
    )
    .await;
    let writes = p.write_for(Duration::from_secs(3 * LIFETIME_SECONDS)).await;
    assert!(p.converged(Duration::from_secs(60)).await > 300);
    assert!(writes.probes >= 20, "{writes:?}");
    assert!(writes.max_apply_latency < Duration::from_secs(5), "a write took {writes:?} to reach the target");
    for (endpoint, what) in [(&sts, "STS web identity"), (&imds, "instance metadata")] {
        assert!(endpoint.served() >= 2, "{what} credentials were not renewed: {}", endpoint.served());
        assert!(endpoint.served() <= 8, "{what} credentials fetched for every token: {}", endpoint.served());
    }
    for service in [Service::Source, Service::Sink] {
        let (signed, failed) = token_metrics(&p.metrics(service).await, service, LIFETIME_SECONDS);
        assert!(signed >= 6.0 && failed == 0.0, "{service:?}: {signed} signed, {failed} failed");
    }
    p.stop();
    for service in [Service::Source, Service::Sink] {
        assert_clean_log(service, &p.log(service), &p.dir);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_sts_outage_keeps_sessions_while_credentials_last_and_shows_once_they_expired() {
    const TOKENS: u64 = 10;
    let sts = aws_endpoints::sts(ROLE_ARN, WEB_IDENTITY_TOKEN).grant_for(Duration::from_secs(30));
    let name = unique("iam-outage");
    let dir = log_dir(&name);
    let mut p =
        IamPipeline::start(&name, RegionSetting::Configured, TOKENS, &env_keys(), &web_identity_env(&sts, &dir)).await;
    let sink_metric = |body: &str, name: &str| metric(body, &format!("sink_writer_{name}"));

    // 1. STS fails right after a renewal for 22 s: longer than the renewal interval (half the
    //    credentials' 30 s) and than a token's (8 s), shorter than the credentials' life.
    let fetched = sts.served();
    while sts.served() == fetched {
        p.write_for(Duration::from_millis(500)).await;
    }
    sts.fail(true);
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(22) {
        p.write_for(Duration::from_secs(1)).await;
        let (status, body) = p.readyz(Service::Sink).await;
        assert_eq!(status, 200, "not ready {:?} into an outage the credentials outlast: {body}", outage.elapsed());
    }
    sts.fail(false);
    let renewed = sts.served();
    let back = Instant::now();
    while sts.served() == renewed {
        assert!(back.elapsed() < Duration::from_secs(20), "credentials not renewed after STS came back");
        p.write_for(Duration::from_millis(500)).await;
    }
    let body = p.metrics(Service::Sink).await;
    assert!(sink_metric(&body, "aws_credentials_refreshes_total{outcome=\"failed\"}") >= 1.0, "{body}");
    assert_eq!(sink_metric(&body, "kafka_auth_tokens_total{outcome=\"failed\"}"), 0.0, "a token failed");
    // No session ended for a lapsed token while the old credentials were valid.
    assert_clean_log(Service::Sink, &p.log(Service::Sink), &p.dir);
    let log_before = p.log(Service::Sink).len();

    // 2. STS fails until the credentials expire: no token can be signed; readiness, metrics and
    //    the log say why, and all recovers once STS answers again.
    sts.fail(true);
    let (_, reason) = eventually("sink-writer not ready once its credentials expired", Duration::from_secs(60), || {
        let addr = p.sink_http;
        async move {
            let (status, body) = test_support::http_get(addr, "/health/readyz").await.ok()?;
            (status == 503 && body.contains("aws-credentials")).then_some((status, body))
        }
    })
    .await;
    assert!(reason.contains("expired"), "readiness names the expired credentials: {reason}");
    let body = p.metrics(Service::Sink).await;
    let now = bson::DateTime::now().timestamp_millis() as f64 / 1000.0;
    assert!(sink_metric(&body, "aws_credentials_expiry_timestamp_seconds") < now, "{body}");
    eventually("a token request failed", Duration::from_secs(30), || async {
        let body = p.metrics(Service::Sink).await;
        (sink_metric(&body, "kafka_auth_tokens_total{outcome=\"failed\"}") >= 1.0).then_some(())
    })
    .await;
    sts.fail(false);
    eventually("sink-writer ready again after STS came back", Duration::from_secs(90), || async {
        (p.readyz(Service::Sink).await.0 == 200).then_some(())
    })
    .await;
    p.write_for(Duration::from_secs(5)).await;
    assert!(p.converged(Duration::from_secs(90)).await > 100);
    p.stop();
    let log = p.log(Service::Sink);
    assert!(log[..log_before].contains("cannot refresh AWS credentials"), "the failed renewals are logged");
    assert!(log[log_before..].contains("AWS credentials expired"), "the expiry is logged");
    let iam = services().kafka_iam;
    assert!(!log.contains(&iam.secret_access_key) && !log.contains(&iam.session_token), "a credential logged");
    assert_clean_log(Service::Source, &p.log(Service::Source), &p.dir);
}

/// The doctor's environment (unprefixed keys) for the SASL_SSL listener with MSK IAM.
fn doctor_env(region: RegionSetting, dir: &Path) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> =
        kafka_env("X", region, LIFETIME_SECONDS).into_iter().map(|(k, v)| (k.replacen("X__", "", 1), v)).collect();
    env.push(("MONGO__URI".into(), services().mongo_target_uri.clone()));
    env.extend(isolated_aws_env(dir));
    env
}

/// The detail of `report`'s line with `status` (`ok`, `WARN`, `FAIL`) for `check`, if any.
fn check_line<'a>(report: &'a str, status: &str, check: &str) -> Option<&'a str> {
    report.lines().find_map(|line| {
        let rest = line.strip_prefix(status)?.trim_start().strip_prefix(check)?;
        rest.starts_with("  ").then(|| rest.trim_start())
    })
}

#[tokio::test]
async fn doctor_shows_the_region_it_signs_for_and_why() {
    let (cluster, pod) = (cluster_region(), pod_region());
    let dir = log_dir(&unique("iam-region"));
    let keys: Vec<(&str, String)> = env_keys();

    // The target-region deployment: the pod's AWS_REGION, the cluster's region in its host name.
    let env = with(doctor_env(RegionSetting::FromHost, &dir), &keys);
    let (ok, report) = doctor_raw("sink-writer", &env).await;
    assert!(ok && report.contains("broker(s)"), "the broker accepts tokens for the cluster's region: {report}");
    let decided = check_line(&report, "ok", "kafka region").unwrap_or_default();
    assert!(decided.starts_with(&format!("{cluster}, named by the host {}", msk_host(&cluster))), "{report}");
    let warned = check_line(&report, "WARN", "kafka region").unwrap_or_default();
    assert!(warned.starts_with(&format!("AWS_REGION is {pod}")), "the pod's other region is pointed out: {report}");
    assert!(check_line(&report, "ok", "kafka auth").is_some_and(|l| l.starts_with(&format!("MSK IAM for {cluster}:"))));

    // kafka.aws_region overrides the host, here wrongly (the pod's region): said, and refused.
    let wrong = with(env.clone(), &[("KAFKA__AWS_REGION", pod.to_string())]);
    let (ok, report) = doctor_raw("sink-writer", &wrong).await;
    assert!(!ok, "{report}");
    let decided = check_line(&report, "ok", "kafka region").unwrap_or_default();
    assert!(decided.starts_with(&format!("{pod}, set by kafka.aws_region")), "{report}");
    let warned = check_line(&report, "WARN", "kafka region").unwrap_or_default();
    assert!(warned.starts_with(&format!("kafka.aws_region {pod} overrides {cluster}, named by")), "{report}");
    assert!(check_line(&report, "FAIL", "kafka").is_some(), "the broker refuses tokens for {pod}: {report}");

    // No region in any host name: AWS_REGION, said so, nothing to warn about.
    let from_env: Vec<(String, String)> = env.iter().filter(|(k, _)| k != "KAFKA__AWS_REGION_HOST").cloned().collect();
    let (ok, report) = doctor_raw("sink-writer", &with(from_env, &[("AWS_REGION", cluster.clone())])).await;
    assert!(ok, "{report}");
    let decided = check_line(&report, "ok", "kafka region").unwrap_or_default();
    assert!(decided.starts_with(&format!("{cluster}, from AWS_REGION: no bootstrap host names a region")), "{report}");
    assert!(check_line(&report, "WARN", "kafka region").is_none(), "{report}");
}

#[tokio::test]
async fn doctor_names_a_rejected_iam_signature_and_missing_credentials_without_printing_secrets() {
    let iam = services().kafka_iam;
    let wrong = "Wrong/secret+key-for-msk-iam";
    let env = doctor_env(RegionSetting::Configured, &log_dir(&unique("iam-doctor")));

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
    let iam = services().kafka_iam;
    let dir = log_dir(&unique("iam-sources"));
    let base = doctor_env(RegionSetting::Configured, &dir);
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
