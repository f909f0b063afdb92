//! Kafka authentication that librdkafka's own options cannot express: Amazon MSK IAM, i.e. SASL
//! OAUTHBEARER with a SigV4-presigned token, handed to every client and renewed before expiry.
//!
//! ```text
//!  aws_identity (the AWS SDK's    ──►  msk_iam::token(region, lifetime)  ──►  OAUTHBEARER token
//!  chain, refreshed in the background,                      │
//!  only read here)     region: msk_region                   │
//!          ┌────────────────────────────────────────────────┴──────────────────┐
//!          ▼                                                                   ▼
//!  consumers and producers: librdkafka asks at 80% of the        admin clients, whose main queue
//!  lifetime through the context's `generate_oauth_token`,         rdkafka never polls: a thread of
//!  served when the client polls (metadata-only consumers          their own sets the token at start
//!  call `serve_events` before asking)                             and again at 80% of its lifetime
//! ```
//!
//! With `auth = "options"` (the default) nothing here is used: SCRAM, TLS and plaintext are
//! librdkafka options.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::admin::AdminClient;
use rdkafka::client::{Client, OAuthToken};
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::{ClientConfig, ClientContext};
use serde::{Deserialize, Serialize};

use crate::{aws_identity, msk_iam};

/// How the services authenticate to Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaAuth {
    /// Whatever `kafka.options` say: plaintext, TLS, SASL/SCRAM (`sasl.username`, …).
    #[default]
    Options,
    /// Amazon MSK IAM: SASL_SSL + OAUTHBEARER with a signed token from the AWS credentials.
    AwsMskIam,
}

/// Signs MSK IAM tokens for one region.
#[derive(Debug, Clone)]
pub struct TokenSource {
    pub region: String,
    pub lifetime: Duration,
}

static SIGNED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);
static EXPIRES_MS: AtomicI64 = AtomicI64::new(0);
static SIGNED_AT_MS: AtomicI64 = AtomicI64::new(0);

/// The process's MSK IAM tokens so far, for the metrics.
#[derive(Debug, Clone, Copy)]
pub struct TokenStats {
    pub signed: u64,
    pub failed: u64,
    /// When the newest token was signed and when it expires, Unix ms (0 before the first).
    pub signed_at_ms: i64,
    pub expires_ms: i64,
}

pub fn token_stats() -> TokenStats {
    TokenStats {
        signed: SIGNED.load(Ordering::Relaxed),
        failed: FAILED.load(Ordering::Relaxed),
        signed_at_ms: SIGNED_AT_MS.load(Ordering::Relaxed),
        expires_ms: EXPIRES_MS.load(Ordering::Relaxed),
    }
}

impl TokenSource {
    /// A token signed now with the credentials `aws_identity` keeps, never waiting for a
    /// credential source; counted in the metrics either way. It lives `lifetime`, or less when
    /// the credentials expire sooner (a token signed with them is no good after that).
    pub fn token(&self) -> Result<OAuthToken, String> {
        let now = SystemTime::now();
        let signed = aws_identity::current().and_then(|credentials| {
            let lifetime = lifetime_within(self.lifetime, credentials.expiry(), now);
            let (token, lifetime_ms) = msk_iam::token(&self.region, &credentials, now, lifetime)?;
            Ok(OAuthToken { token, principal_name: credentials.access_key_id().to_string(), lifetime_ms })
        });
        match &signed {
            Ok(token) => {
                SIGNED.fetch_add(1, Ordering::Relaxed);
                EXPIRES_MS.store(token.lifetime_ms, Ordering::Relaxed);
                SIGNED_AT_MS.store(unix_ms(now), Ordering::Relaxed);
                tracing::debug!(region = %self.region, expires_ms = token.lifetime_ms, "signed an MSK IAM token");
            }
            Err(reason) => {
                FAILED.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%reason, "cannot sign an MSK IAM token");
            }
        }
        signed
    }
}

/// `lifetime`, cut to the whole seconds the credentials have left (at least one).
fn lifetime_within(lifetime: Duration, expiry: Option<SystemTime>, now: SystemTime) -> Duration {
    match expiry.map(|at| at.duration_since(now).unwrap_or_default()) {
        Some(left) if left < lifetime => Duration::from_secs(left.as_secs().max(1)),
        _ => lifetime,
    }
}

fn unix_ms(at: SystemTime) -> i64 {
    i64::try_from(at.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(i64::MAX)
}

/// The context of clients that need nothing but authentication. Other contexts hold a
/// `Option<TokenSource>` and answer `generate_oauth_token` with [`AuthContext::generate`].
#[derive(Debug, Clone, Default)]
pub struct AuthContext(pub Option<TokenSource>);

impl AuthContext {
    /// The answer to librdkafka's token request, for this and every other context.
    pub fn generate(source: &Option<TokenSource>) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        match source {
            Some(source) => source.token().map_err(Into::into),
            None => Err("sasl.mechanism is OAUTHBEARER but kafka.auth is not aws_msk_iam".into()),
        }
    }
}

impl ClientContext for AuthContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(&self, _: Option<&str>) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        Self::generate(&self.0)
    }
}

impl ConsumerContext for AuthContext {}

/// Serves what waits on a consumer's main queue (a token request above all) without taking
/// messages: for consumers that only ask for metadata or have nothing assigned yet.
pub fn serve_events<C: ConsumerContext>(consumer: &BaseConsumer<C>) {
    for _ in 0..3 {
        if consumer.poll(Duration::ZERO).is_some() {
            tracing::debug!("an event arrived while serving the main queue");
        }
    }
}

/// An admin client that stays authenticated: with MSK IAM a thread of its own sets the token
/// (rdkafka never serves an admin client's main queue, where librdkafka would ask for it).
pub struct Admin {
    client: AdminClient<AuthContext>,
    refresher: Option<(Arc<StopSignal>, std::thread::JoinHandle<()>)>,
}

/// `true` once the admin client is being dropped, and the wake-up for its token thread.
type StopSignal = (Mutex<bool>, Condvar);

impl Admin {
    pub fn new(config: &ClientConfig, source: Option<TokenSource>) -> KafkaResult<Admin> {
        let client: AdminClient<AuthContext> = config.create_with_context(AuthContext(source.clone()))?;
        let Some(source) = source else { return Ok(Admin { client, refresher: None }) };
        let handle = native::Handle::of(client.inner());
        let mut next = native::set_token(&handle, &source);
        let stop: Arc<StopSignal> = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kafka-admin-auth".into())
            .spawn(move || {
                let (lock, wake) = &*signal;
                let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    let (guard, _) = wake.wait_timeout(stopped, next).unwrap_or_else(|e| e.into_inner());
                    stopped = guard;
                    if *stopped {
                        return;
                    }
                    // `handle` stays valid: Admin's Drop stops and joins this thread first.
                    next = native::set_token(&handle, &source);
                }
            })
            .map_err(|e| rdkafka::error::KafkaError::ClientCreation(format!("admin auth thread: {e}")))?;
        Ok(Admin { client, refresher: Some((stop, thread)) })
    }
}

impl std::ops::Deref for Admin {
    type Target = AdminClient<AuthContext>;

    fn deref(&self) -> &Self::Target {
        &self.client
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.refresher.take() {
            *stop.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
            stop.1.notify_all();
            let _ = thread.join();
        }
    }
}

/// Setting a token on a client directly: the one place this workspace calls librdkafka itself.
#[allow(unsafe_code)]
mod native {
    use std::ffi::CString;
    use std::time::Duration;

    use super::{AuthContext, Client, SystemTime, TokenSource, UNIX_EPOCH};

    /// A librdkafka client handle, sent to the thread that renews its token.
    pub struct Handle(*mut rdkafka::bindings::rd_kafka_t);

    // SAFETY: librdkafka handles are thread-safe; `rd_kafka_oauthbearer_set_token` may be called
    // from any thread. The owner (`Admin`) joins the thread before the client is destroyed.
    unsafe impl Send for Handle {}

    impl Handle {
        pub fn of(client: &Client<AuthContext>) -> Handle {
            Handle(client.native_ptr())
        }
    }

    /// Signs and sets a token; returns when to do it again (80% of its lifetime, or in 10 s
    /// after a failure, which librdkafka also reports on its connections).
    pub fn set_token(handle: &Handle, source: &TokenSource) -> Duration {
        let retry = Duration::from_secs(10);
        let token = match source.token() {
            Ok(token) => token,
            Err(reason) => {
                fail(handle, &reason);
                return retry;
            }
        };
        let (Ok(value), Ok(principal)) = (CString::new(token.token), CString::new(token.principal_name)) else {
            fail(handle, "token with a NUL byte");
            return retry;
        };
        let mut error = vec![0 as std::ffi::c_char; 512];
        // SAFETY: the handle is live (see `Handle`); the strings outlive the call; no extensions.
        let code = unsafe {
            rdkafka::bindings::rd_kafka_oauthbearer_set_token(
                handle.0,
                value.as_ptr(),
                token.lifetime_ms,
                principal.as_ptr(),
                std::ptr::null_mut(),
                0,
                error.as_mut_ptr(),
                error.len(),
            )
        };
        if code != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            let bytes: Vec<u8> = error.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
            tracing::warn!(reason = %String::from_utf8_lossy(&bytes), "admin client refused the MSK IAM token");
            return retry;
        }
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64;
        let remaining = u64::try_from(token.lifetime_ms - now_ms).unwrap_or(0);
        Duration::from_millis(remaining * 4 / 5).max(Duration::from_secs(1))
    }

    fn fail(handle: &Handle, reason: &str) {
        let reason = CString::new(reason.replace('\0', " ")).unwrap_or_default();
        // SAFETY: as above.
        unsafe { rdkafka::bindings::rd_kafka_oauthbearer_set_token_failure(handle.0, reason.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_never_outlives_its_credentials() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let lifetime = Duration::from_secs(900);
        assert_eq!(lifetime_within(lifetime, None, now), lifetime, "long-term keys");
        assert_eq!(lifetime_within(lifetime, Some(now + Duration::from_secs(3600)), now), lifetime);
        assert_eq!(lifetime_within(lifetime, Some(now + Duration::from_millis(42_700)), now), Duration::from_secs(42));
        assert_eq!(lifetime_within(lifetime, Some(now), now), Duration::from_secs(1), "X-Amz-Expires is at least 1");
    }

    #[test]
    fn without_a_token_source_librdkafka_gets_a_reason() {
        let Err(error) = AuthContext::generate(&None) else { panic!("a token without a source") };
        let error = error.to_string();
        assert!(error.contains("kafka.auth"), "{error}");
    }
}
