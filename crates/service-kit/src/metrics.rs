//! The metrics the shell adds to every service's registry besides `{prefix}_build_info` and
//! `{prefix}_ready` (`shell`): MSK IAM tokens and the AWS credentials they are signed with. Each
//! service's own metrics live in its `metrics.rs`. Read at every scrape from `kafka_auth` and
//! `aws_identity`, which count for the whole process.
//!
//! | metric | meaning |
//! |---|---|
//! | `{prefix}_kafka_auth_tokens_total{outcome="signed\|failed"}` | MSK IAM tokens signed, and token requests that failed |
//! | `{prefix}_kafka_auth_token_expiry_timestamp_seconds` | when the newest token expires (0: none) |
//! | `{prefix}_kafka_auth_token_signed_timestamp_seconds` | when the newest token was signed (0: none) |
//! | `{prefix}_aws_credentials_refreshes_total{outcome="loaded\|failed"}` | lookups of the AWS credentials |
//! | `{prefix}_aws_credentials_expiry_timestamp_seconds` | when the kept credentials expire (0: none kept, or keys without expiry) |

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, IntGauge, Opts};

use crate::{aws_identity, kafka_auth};

pub struct AuthCollector {
    tokens: IntCounterVec,
    token_expiry: IntGauge,
    token_signed: IntGauge,
    refreshes: IntCounterVec,
    credentials_expiry: IntGauge,
}

impl AuthCollector {
    pub fn new(prefix: &str) -> prometheus::Result<Self> {
        let tokens = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_kafka_auth_tokens_total"),
                "MSK IAM tokens signed for the Kafka clients, and token requests that failed.",
            ),
            &["outcome"],
        )?;
        let token_expiry = IntGauge::new(
            format!("{prefix}_kafka_auth_token_expiry_timestamp_seconds"),
            "When the newest MSK IAM token expires (Unix time); 0 without MSK IAM.",
        )?;
        let token_signed = IntGauge::new(
            format!("{prefix}_kafka_auth_token_signed_timestamp_seconds"),
            "When the newest MSK IAM token was signed (Unix time); 0 without MSK IAM.",
        )?;
        let refreshes = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_aws_credentials_refreshes_total"),
                "Lookups of the process's AWS credentials (the SDK's chain), by outcome.",
            ),
            &["outcome"],
        )?;
        let credentials_expiry = IntGauge::new(
            format!("{prefix}_aws_credentials_expiry_timestamp_seconds"),
            "When the AWS credentials kept expire (Unix time); 0 without any or without expiry.",
        )?;
        for outcome in ["signed", "failed"] {
            tokens.with_label_values(&[outcome]);
        }
        for outcome in ["loaded", "failed"] {
            refreshes.with_label_values(&[outcome]);
        }
        Ok(Self { tokens, token_expiry, token_signed, refreshes, credentials_expiry })
    }
}

/// Moves a counter up to the process's total.
fn catch_up(counters: &IntCounterVec, outcome: &str, total: u64) {
    let counter = counters.with_label_values(&[outcome]);
    counter.inc_by(total.saturating_sub(counter.get()));
}

impl Collector for AuthCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut desc = self.tokens.desc();
        desc.extend(self.token_expiry.desc());
        desc.extend(self.token_signed.desc());
        desc.extend(self.refreshes.desc());
        desc.extend(self.credentials_expiry.desc());
        desc
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let tokens = kafka_auth::token_stats();
        catch_up(&self.tokens, "signed", tokens.signed);
        catch_up(&self.tokens, "failed", tokens.failed);
        self.token_expiry.set(tokens.expires_ms / 1000);
        self.token_signed.set(tokens.signed_at_ms / 1000);
        let (loaded, failed, expiry) = aws_identity::lookups();
        catch_up(&self.refreshes, "loaded", loaded);
        catch_up(&self.refreshes, "failed", failed);
        self.credentials_expiry.set(expiry);
        let mut families = self.tokens.collect();
        families.extend(self.token_expiry.collect());
        families.extend(self.token_signed.collect());
        families.extend(self.refreshes.collect());
        families.extend(self.credentials_expiry.collect());
        families
    }
}
