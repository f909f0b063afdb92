//! The Kafka cluster both services connect to (Amazon MSK or Apache Kafka): bootstrap servers,
//! librdkafka options passed through, and MSK IAM (the signing region: `msk_region`).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::config::{deserialize_string_map, serialize_redacted_map};
use crate::kafka_auth::{self, AuthContext, KafkaAuth, TokenSource};
use crate::msk_region::{self, SigningRegion};

/// A Kafka cluster (Amazon MSK or Apache Kafka).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConnection {
    /// Comma-separated `host:port` bootstrap list.
    pub bootstrap_servers: String,
    /// librdkafka properties passed through, e.g. `"security.protocol" = "SASL_SSL"`,
    /// `"sasl.mechanism"`, `"ssl.ca.location"`, `"linger.ms"`. `_` in a key stands for `.`
    /// (librdkafka names have no `_`), so the environment can set them:
    /// `…__KAFKA__OPTIONS__SASL_PASSWORD`. Credential-like values are redacted when printed.
    #[serde(serialize_with = "serialize_redacted_map", deserialize_with = "deserialize_string_map")]
    pub options: BTreeMap<String, String>,
    /// `options` (default: SCRAM, TLS or plaintext as the options say) or `aws_msk_iam`.
    pub auth: KafkaAuth,
    /// The region MSK IAM tokens are signed for, which must be the cluster's. Empty (best): the
    /// region the cluster's host names carry (`aws_region_host`, else the bootstrap servers');
    /// `AWS_REGION` / `AWS_DEFAULT_REGION` only when no host names one. EKS and ECS set
    /// `AWS_REGION` to the pod's own region, so never set this to it for a cluster elsewhere.
    pub aws_region: String,
    /// A host name of the cluster as MSK lists its brokers (`b-1.<cluster>.<id>.c2.kafka.<region>.amazonaws.com`)
    /// whose region MSK IAM tokens are signed for, when `bootstrap_servers` reach the cluster under
    /// names that carry no region (a DNS alias, a load balancer, a tunnel). Only its region is
    /// used; nothing connects to it. Empty: the bootstrap hosts.
    pub aws_region_host: String,
    /// How long an MSK IAM token is valid (at most 900 s, MSK's own clients' value); librdkafka
    /// asks for a new one at 80% of it.
    pub iam_token_lifetime_seconds: u64,
}

impl Default for KafkaConnection {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".to_string(),
            options: BTreeMap::new(),
            auth: KafkaAuth::Options,
            aws_region: String::new(),
            aws_region_host: String::new(),
            iam_token_lifetime_seconds: crate::msk_iam::TOKEN_LIFETIME.as_secs(),
        }
    }
}

impl KafkaConnection {
    /// Where MSK IAM tokens come from; `None` unless `auth = "aws_msk_iam"`.
    pub fn token_source(&self) -> Option<TokenSource> {
        (self.auth == KafkaAuth::AwsMskIam).then(|| TokenSource {
            region: self.signing_region().map(|r| r.region).unwrap_or_default(),
            lifetime: Duration::from_secs(self.iam_token_lifetime_seconds),
        })
    }

    /// The region MSK IAM tokens are signed for, and why (see `msk_region`).
    pub fn signing_region(&self) -> Result<SigningRegion, msk_region::RegionError> {
        msk_region::signing_region(
            &self.aws_region,
            &self.aws_region_host,
            &self.bootstrap_servers,
            msk_region::process_env,
        )
    }

    /// With MSK IAM: says which region tokens are signed for, and waits (without blocking a
    /// thread) for the first AWS credentials, so the clients created next get their first
    /// token at once. Without them the services start anyway: readiness says what is missing
    /// and the credentials keep being asked for in the background.
    pub async fn prepare_auth(&self) {
        if self.auth != KafkaAuth::AwsMskIam {
            return;
        }
        if let Ok(signing) = self.signing_region() {
            tracing::info!(region = %signing.region, why = %signing, "MSK IAM tokens are signed for the cluster's region");
        }
        if let Err(reason) = crate::aws_identity::credentials().await {
            tracing::warn!(%reason, "no AWS credentials yet for MSK IAM; still trying");
        }
    }

    /// The context for a client that needs nothing but authentication.
    pub fn context(&self) -> AuthContext {
        AuthContext(self.token_source())
    }

    /// An admin client that stays authenticated.
    pub fn admin(&self) -> rdkafka::error::KafkaResult<kafka_auth::Admin> {
        kafka_auth::Admin::new(&self.client_config(), self.token_source())
    }

    /// librdkafka configuration: bootstrap servers, then the pass-through options.
    pub fn client_config(&self) -> ClientConfig {
        self.client_config_with(&[])
    }

    /// The service's `defaults` first, then the bootstrap servers and the pass-through options,
    /// so an operator can override any default.
    pub fn client_config_with(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        config.set("bootstrap.servers", &self.bootstrap_servers);
        if self.auth == KafkaAuth::AwsMskIam {
            config.set("security.protocol", "SASL_SSL").set("sasl.mechanism", "OAUTHBEARER");
        }
        for (key, value) in &self.options {
            config.set(key.replace('_', "."), value);
        }
        config
    }

    pub fn validate(&self, section: &str, problems: &mut Vec<String>) {
        if self.bootstrap_servers.trim().is_empty() {
            problems.push(format!("{section}.bootstrap_servers must name at least one host:port"));
        }
        if self.options.contains_key("bootstrap.servers") {
            problems.push(format!("{section}.options must not set bootstrap.servers: use {section}.bootstrap_servers"));
        }
        if self.auth == KafkaAuth::AwsMskIam {
            if let Err(e) = self.signing_region() {
                problems.push(format!("{section}.auth = aws_msk_iam: {e}"));
            }
            if self.client_config().get("sasl.mechanism") != Some("OAUTHBEARER") {
                problems.push(format!(
                    "{section}.auth = aws_msk_iam uses SASL OAUTHBEARER: remove sasl.mechanism from {section}.options"
                ));
            }
        }
        if !(10..=900).contains(&self.iam_token_lifetime_seconds) {
            problems.push(format!("{section}.iam_token_lifetime_seconds must be between 10 and 900"));
        }
    }
}
