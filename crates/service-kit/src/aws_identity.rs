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
//! One chain per process, on a runtime of its own: librdkafka asks for tokens synchronously from
//! its own threads (or from a task polling a consumer), the MongoDB driver asynchronously from
//! the service's runtime; both wait on this one. The chain does not cache (the SDK's clients
//! do that themselves), so credentials are kept here until 5 minutes before they expire.

use std::sync::{mpsc, OnceLock};
use std::time::{Duration, SystemTime};

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_credential_types::credential_feature::AwsCredentialFeature;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{future, ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;

/// Temporary credentials are fetched again this long before they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);
/// The longest one lookup may take (a chain that ends at IMDS waits for it to time out).
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);

struct Identity {
    runtime: tokio::runtime::Runtime,
    chain: tokio::sync::OnceCell<DefaultCredentialsChain>,
    cached: tokio::sync::Mutex<Option<Credentials>>,
}

fn identity() -> &'static Identity {
    static IDENTITY: OnceLock<Identity> = OnceLock::new();
    IDENTITY.get_or_init(|| Identity {
        runtime: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("aws-identity")
            .enable_all()
            .build()
            .expect("a one-thread runtime for AWS credentials"),
        chain: tokio::sync::OnceCell::new(),
        cached: tokio::sync::Mutex::new(None),
    })
}

impl Identity {
    async fn current(&self) -> Result<Credentials, CredentialsError> {
        let mut cached = self.cached.lock().await;
        if let Some(credentials) = cached.as_ref().filter(|c| is_fresh(c, SystemTime::now())) {
            return Ok(credentials.clone());
        }
        let chain = self.chain.get_or_init(|| DefaultCredentialsChain::builder().build()).await;
        let loaded = tokio::time::timeout(LOAD_TIMEOUT, chain.provide_credentials())
            .await
            .unwrap_or_else(|_| Err(CredentialsError::provider_timed_out(LOAD_TIMEOUT)));
        match loaded {
            Ok(credentials) => {
                tracing::info!(source = %describe(&credentials), "loaded AWS credentials");
                *cached = Some(credentials.clone());
                Ok(credentials)
            }
            // Credentials that have not expired yet still work while the source is unavailable.
            Err(error) => match cached.as_ref().filter(|c| c.expiry().is_none_or(|at| SystemTime::now() < at)) {
                Some(previous) => {
                    tracing::warn!(error = %explain(&error), "cannot refresh AWS credentials, using the previous ones");
                    Ok(previous.clone())
                }
                None => Err(error),
            },
        }
    }
}

/// Whether cached credentials are still good for more than [`REFRESH_BEFORE_EXPIRY`].
fn is_fresh(credentials: &Credentials, now: SystemTime) -> bool {
    credentials.expiry().is_none_or(|at| now + REFRESH_BEFORE_EXPIRY < at)
}

/// The current credentials; for async callers on any runtime.
pub async fn credentials() -> Result<Credentials, String> {
    let task = identity().runtime.spawn(async { identity().current().await });
    match task.await {
        Ok(result) => result.map_err(|e| explain(&e)),
        Err(e) => Err(format!("AWS credential lookup failed: {e}")),
    }
}

/// The current credentials, waiting for them on the calling thread (librdkafka's callbacks).
pub fn credentials_blocking() -> Result<Credentials, String> {
    let (answer, receive) = mpsc::sync_channel(1);
    identity().runtime.spawn(async move {
        let _ = answer.send(identity().current().await);
    });
    match receive.recv_timeout(LOAD_TIMEOUT + Duration::from_secs(5)) {
        Ok(result) => result.map_err(|e| explain(&e)),
        Err(_) => Err(format!("no AWS credentials within {} s", LOAD_TIMEOUT.as_secs())),
    }
}

/// The same chain and cache as a provider, for the MongoDB driver's MONGODB-AWS.
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
        future::ProvideCredentials::new(async {
            identity()
                .runtime
                .spawn(async { identity().current().await })
                .await
                .unwrap_or_else(|e| Err(CredentialsError::unhandled(e)))
        })
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
    fn temporary_credentials_are_refreshed_five_minutes_before_they_expire() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let expiring = |secs| example_credentials(Some("t"), Some(now + Duration::from_secs(secs)));
        assert!(is_fresh(&expiring(301), now));
        assert!(!is_fresh(&expiring(300), now));
        assert!(!is_fresh(&expiring(10), now));
        assert!(is_fresh(&example_credentials(None, None), now), "long-term keys do not expire");
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
