//! The process's AWS identity, for MSK IAM tokens and MONGODB-AWS: the AWS SDK's own default
//! credential chain (aws-config), looked up in this order:
//!
//! ```text
//!  AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN)     environment
//!  shared profile AWS_PROFILE: keys, SSO, credential_process, role_arn   shared profile, SSO, …
//!  AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN → STS (EKS IRSA)           WebIdentityToken
//!  container endpoint: ECS task role, EKS Pod Identity                   container endpoint
//!  EC2 instance metadata, IMDSv2 (instance profile)                      IMDSv2
//! ```
//!
//! One chain per process, run by a task of its own on a runtime of its own: it looks the
//! credentials up at start and again before they expire (`credential_cache`: half their remaining
//! life), retries failures with capped backoff and keeps the previous credentials while they are
//! valid. Signing an MSK IAM token (in librdkafka's callbacks, which may run on a Tokio worker
//! polling a consumer) only reads what it keeps ([`current`]), so no thread ever waits for STS,
//! IMDS or the container endpoint there. The MongoDB driver and `doctor` wait asynchronously
//! ([`credentials`]). The chain reads the process's own region (`AWS_REGION`): STS calls stay
//! regional there, whatever region MSK IAM tokens are signed for.
//!
//! Every lookup is logged and counted; [`readiness`] is not ready once no valid credentials are
//! kept, and says why.

use std::sync::{Mutex, MutexGuard, Once, OnceLock};
use std::time::{Duration, SystemTime};

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_credential_types::credential_feature::AwsCredentialFeature;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{future, ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;

use crate::backoff::Backoff;
use crate::credential_cache::{refresh_delay, retry_delay, rfc3339, CredentialCache};

/// The longest one lookup may take (a chain that ends at IMDS waits for it to time out).
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest pause between two lookups after failures.
const MAX_RETRY: Duration = Duration::from_secs(15);

struct Identity {
    runtime: tokio::runtime::Runtime,
    started: Once,
    cache: Mutex<CredentialCache>,
    /// Counts finished lookups: what [`credentials`] waits on.
    lookups: tokio::sync::watch::Sender<u64>,
}

static IDENTITY: OnceLock<Identity> = OnceLock::new();

fn identity() -> &'static Identity {
    IDENTITY.get_or_init(|| Identity {
        runtime: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("aws-identity")
            .enable_all()
            .build()
            .expect("a one-thread runtime for AWS credentials"),
        started: Once::new(),
        cache: Mutex::new(CredentialCache::default()),
        lookups: tokio::sync::watch::Sender::new(0),
    })
}

/// The identity, once something asked for AWS credentials.
fn in_use() -> Option<&'static Identity> {
    IDENTITY.get().filter(|identity| identity.started.is_completed())
}

/// A poisoned lock only means a thread panicked while holding it; the cache stays usable.
fn cache() -> MutexGuard<'static, CredentialCache> {
    identity().cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts the refreshing task (once per process); returns at once.
pub fn start() {
    let identity = identity();
    identity.started.call_once(|| {
        identity.runtime.spawn(refresh());
    });
}

/// Looks the credentials up, keeps them, and looks again before they expire, for ever.
async fn refresh() {
    let chain = DefaultCredentialsChain::builder().build().await;
    let mut backoff = Backoff::new(Duration::from_secs(1), MAX_RETRY);
    loop {
        let loaded = tokio::time::timeout(LOAD_TIMEOUT, chain.provide_credentials())
            .await
            .unwrap_or_else(|_| Err(CredentialsError::provider_timed_out(LOAD_TIMEOUT)));
        let pause = record(loaded.map_err(|e| explain(&e)), SystemTime::now(), &mut backoff);
        identity().lookups.send_modify(|n| *n += 1);
        tokio::time::sleep(pause).await;
    }
}

/// Keeps, logs and counts what one lookup brought; returns when to look again.
fn record(loaded: Result<Credentials, String>, now: SystemTime, backoff: &mut Backoff) -> Duration {
    // A source may hand back what it had (IMDS does while it is unavailable), even expired.
    let loaded = loaded.and_then(|credentials| match credentials.expiry() {
        Some(at) if at <= now => Err(format!("the source returned credentials that expired at {}", rfc3339(at))),
        _ => Ok(credentials),
    });
    let mut cache = cache();
    match loaded {
        Ok(credentials) => {
            tracing::info!(source = %describe(&credentials), "loaded AWS credentials");
            let pause = refresh_delay(credentials.expiry(), now);
            cache.loaded(credentials);
            backoff.reset();
            pause
        }
        Err(reason) => {
            cache.failed(reason.clone());
            let retry_in = retry_delay(backoff.next_delay(), cache.expiry(), now);
            match cache.usable(now) {
                Ok(kept) => {
                    let until = kept.expiry().map(rfc3339).unwrap_or_default();
                    tracing::warn!(%reason, %until, retry_in_s = retry_in.as_secs(), "cannot refresh AWS credentials, using the previous ones until they expire");
                }
                Err(none) => {
                    tracing::error!(reason = %none, retry_in_s = retry_in.as_secs(), "no usable AWS credentials")
                }
            }
            retry_in
        }
    }
}

/// Credentials valid now, never waiting: for signing tokens in librdkafka's callbacks.
pub fn current() -> Result<Credentials, String> {
    start();
    cache().usable(SystemTime::now())
}

/// Credentials valid now; when none are kept, waits (asynchronously, on any runtime) for the
/// next lookup to finish.
pub async fn credentials() -> Result<Credentials, String> {
    start();
    let mut lookups = identity().lookups.subscribe();
    if let Ok(credentials) = current() {
        return Ok(credentials);
    }
    if tokio::time::timeout(LOAD_TIMEOUT + Duration::from_secs(5), lookups.changed()).await.is_err() {
        return Err(format!("no AWS credentials within {} s", LOAD_TIMEOUT.as_secs()));
    }
    current()
}

/// Readiness: fine while no AWS credentials are used or valid ones are kept; else why not.
pub fn readiness() -> Result<(), String> {
    match in_use() {
        Some(_) => current().map(|_| ()),
        None => Ok(()),
    }
}

/// Lookups that brought credentials, lookups that failed, and when the kept ones expire (Unix
/// seconds; 0 without any or without an expiry).
pub fn lookups() -> (u64, u64, i64) {
    if in_use().is_none() {
        return (0, 0, 0);
    }
    let cache = cache();
    let expiry = cache.expiry().and_then(|at| at.duration_since(SystemTime::UNIX_EPOCH).ok());
    (cache.loaded, cache.failed, expiry.map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)))
}

/// The same credentials as a provider, for the MongoDB driver's MONGODB-AWS.
pub fn provider() -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(Chain)
}

#[derive(Debug)]
struct Chain;

impl ProvideCredentials for Chain {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async { credentials().await.map_err(CredentialsError::provider_error) })
    }
}

/// Which source of the chain answered, from the features the SDK's providers record on the
/// credentials they return (for its user agent): the innermost source first.
pub fn source_of(credentials: &Credentials) -> &'static str {
    use AwsCredentialFeature as F;
    let features = credentials.get_property::<Vec<AwsCredentialFeature>>().map(Vec::as_slice).unwrap_or_default();
    let sources: [(F, &'static str); 9] = [
        (F::CredentialsSso, "SSO (IAM Identity Center profile)"),
        (F::CredentialsProcess, "credential_process (shared profile)"),
        (F::CredentialsStsAssumeRole, "assumed role (shared profile role_arn)"),
        (F::CredentialsProfileStsWebIdToken, "WebIdentityToken (AWS_WEB_IDENTITY_TOKEN_FILE, EKS IRSA)"),
        (F::CredentialsStsAssumeRoleWebId, "WebIdentityToken (AWS_WEB_IDENTITY_TOKEN_FILE, EKS IRSA)"),
        (F::CredentialsHttp, "container endpoint (ECS task role or EKS Pod Identity)"),
        (F::CredentialsImds, "IMDSv2 (EC2 instance profile)"),
        (F::CredentialsEnvVars, "environment (AWS_ACCESS_KEY_ID)"),
        (F::CredentialsProfile, "shared profile (keys)"),
    ];
    sources.into_iter().find(|(feature, _)| features.contains(feature)).map_or("unknown source", |(_, name)| name)
}

/// Where credentials came from and when they expire; never the keys.
pub fn describe(credentials: &Credentials) -> String {
    let expiry = match credentials.expiry() {
        Some(at) => {
            format!("expire {}", bson::DateTime::from_system_time(at).try_to_rfc3339_string().unwrap_or_default())
        }
        None => "no expiry".to_string(),
    };
    format!("{}, {expiry}", source_of(credentials))
}

/// A credential error with its causes, and where the chain looked when it found nothing.
pub fn explain(error: &CredentialsError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    if matches!(error, CredentialsError::CredentialsNotLoaded(_)) {
        text.push_str(
            " (looked at AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the shared profile AWS_PROFILE (keys, SSO), \
             AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN (EKS IRSA), the container endpoint (ECS task role, \
             EKS Pod Identity) and EC2 instance metadata (IMDSv2))",
        );
    }
    text
}

/// Shared between tests of several modules: the keys AWS's documentation uses, as the web
/// identity provider would return them.
#[cfg(test)]
pub(crate) fn example_credentials(session_token: Option<&str>, expiry: Option<SystemTime>) -> Credentials {
    let mut credentials = Credentials::new(
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        session_token.map(String::from),
        expiry,
        "WebIdentityToken",
    );
    credentials.set_property(vec![AwsCredentialFeature::CredentialsProfileStsWebIdToken]);
    credentials
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn a_lookup_that_brings_expired_credentials_is_a_failure() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut backoff = Backoff::new(Duration::from_secs(1), MAX_RETRY);
        let stale = example_credentials(Some("t"), Some(now - Duration::from_secs(1)));
        let failed_before = cache().failed;
        let pause = record(Ok(stale), now, &mut backoff);
        assert!(pause <= Duration::from_secs(1), "looked up again soon: {pause:?}");
        assert_eq!(cache().failed, failed_before + 1, "counted as a failure");
    }

    #[test]
    fn a_description_names_the_source_and_expiry_never_the_keys() {
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let text = describe(&example_credentials(Some("session-token"), Some(at)));
        assert_eq!(text, "WebIdentityToken (AWS_WEB_IDENTITY_TOKEN_FILE, EKS IRSA), expire 2027-01-15T08:00:00Z");
        assert!(!text.contains("EXAMPLE") && !text.contains("session-token"), "no key");
        // A profile's SSO credentials carry both features: the inner source names them.
        let mut sso = example_credentials(None, None);
        sso.set_property(vec![AwsCredentialFeature::CredentialsSso, AwsCredentialFeature::CredentialsProfile]);
        assert_eq!(describe(&sso), "SSO (IAM Identity Center profile), no expiry");
        let bare = Credentials::new("AKID", "secret", None, None, "test");
        assert_eq!(describe(&bare), "unknown source, no expiry");
    }

    #[test]
    fn nothing_found_says_where_the_chain_looked() {
        let text = explain(&CredentialsError::not_loaded("no providers in chain provided credentials"));
        assert!(text.contains("no providers in chain"), "{text}");
        for place in ["AWS_ACCESS_KEY_ID", "AWS_WEB_IDENTITY_TOKEN_FILE", "IMDSv2", "EKS Pod Identity"] {
            assert!(text.contains(place), "{place} missing: {text}");
        }
    }
}
