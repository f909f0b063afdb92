//! The process's AWS credentials between two lookups, and when to look again. `aws_identity`
//! keeps one of these, refreshed by a background task; token signing only reads it.
//!
//! Temporary credentials are looked up again at half their remaining life (an hour's STS or
//! IMDS credentials at 30 minutes, an ECS task's 6 h ones at 3 h), long-term keys every 15
//! minutes. A failed lookup keeps the previous credentials while they are valid and is
//! retried with capped backoff, faster as their expiry nears.
//!
//! Pure: credentials, failures and time come in.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;

/// Credentials without an expiry (keys in the environment or a profile) are read again this often.
pub const RECHECK_LONG_TERM: Duration = Duration::from_secs(900);
/// The shortest pause between two lookups.
const MIN_PAUSE: Duration = Duration::from_secs(1);

/// What the last lookups brought.
#[derive(Debug, Default)]
pub struct CredentialCache {
    credentials: Option<Credentials>,
    /// Why the last lookup failed, while no lookup succeeded since.
    failure: Option<String>,
    attempts: u64,
    /// Lookups that brought credentials, and lookups that failed.
    pub loaded: u64,
    pub failed: u64,
}

impl CredentialCache {
    pub fn loaded(&mut self, credentials: Credentials) {
        self.credentials = Some(credentials);
        self.failure = None;
        self.attempts += 1;
        self.loaded += 1;
    }

    pub fn failed(&mut self, reason: String) {
        self.failure = Some(reason);
        self.attempts += 1;
        self.failed += 1;
    }

    /// When the kept credentials expire (`None`: none kept, or they do not expire).
    pub fn expiry(&self) -> Option<SystemTime> {
        self.credentials.as_ref().and_then(Credentials::expiry)
    }

    /// Whether credentials are kept that are still valid at `now`.
    pub fn valid_at(&self, now: SystemTime) -> bool {
        self.credentials.as_ref().is_some_and(|c| c.expiry().is_none_or(|at| now < at))
    }

    /// Credentials valid at `now`, or why there are none (never the keys).
    pub fn usable(&self, now: SystemTime) -> Result<Credentials, String> {
        if let Some(credentials) = self.credentials.as_ref().filter(|_| self.valid_at(now)) {
            return Ok(credentials.clone());
        }
        let why = self.failure.as_deref().unwrap_or("no lookup succeeded since");
        match (&self.credentials, self.attempts) {
            (Some(expired), _) => {
                let at = expired.expiry().map(rfc3339).unwrap_or_default();
                Err(format!("AWS credentials expired at {at}; cannot refresh them: {why}"))
            }
            (None, 0) => Err("loading AWS credentials".to_string()),
            (None, _) => Err(format!("no AWS credentials: {why}")),
        }
    }
}

/// After a successful lookup at `now`: when to look again.
pub fn refresh_delay(expiry: Option<SystemTime>, now: SystemTime) -> Duration {
    match expiry {
        None => RECHECK_LONG_TERM,
        Some(at) => (at.duration_since(now).unwrap_or_default() / 2).max(MIN_PAUSE),
    }
}

/// After a failed lookup at `now`: the backoff's pause, but at most a quarter of the time the
/// kept credentials have left, so a recovered source is used before they expire.
pub fn retry_delay(backoff: Duration, expiry: Option<SystemTime>, now: SystemTime) -> Duration {
    let left = expiry.and_then(|at| at.duration_since(now).ok());
    match left {
        Some(left) => backoff.min(left / 4).max(MIN_PAUSE),
        None => backoff.max(MIN_PAUSE),
    }
}

/// A time as RFC 3339, UTC.
pub fn rfc3339(at: SystemTime) -> String {
    bson::DateTime::from_system_time(at).try_to_rfc3339_string().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws_identity::example_credentials;
    use std::time::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    #[test]
    fn credentials_are_looked_up_again_at_half_their_life() {
        assert_eq!(refresh_delay(Some(at(3600)), at(0)), Duration::from_secs(1800));
        assert_eq!(refresh_delay(Some(at(60)), at(0)), Duration::from_secs(30), "rotating every 60 s");
        assert_eq!(refresh_delay(Some(at(1)), at(0)), Duration::from_secs(1));
        assert_eq!(refresh_delay(Some(at(0)), at(5)), Duration::from_secs(1), "already expired");
        assert_eq!(refresh_delay(None, at(0)), RECHECK_LONG_TERM, "long-term keys");
    }

    #[test]
    fn retries_come_faster_as_the_kept_credentials_near_their_expiry() {
        let backoff = Duration::from_secs(15);
        assert_eq!(retry_delay(backoff, Some(at(1800)), at(0)), backoff);
        assert_eq!(retry_delay(backoff, Some(at(20)), at(0)), Duration::from_secs(5));
        assert_eq!(retry_delay(backoff, Some(at(2)), at(0)), Duration::from_secs(1));
        assert_eq!(retry_delay(backoff, Some(at(0)), at(10)), backoff, "expired: the backoff alone");
        assert_eq!(retry_delay(backoff, None, at(0)), backoff);
    }

    #[test]
    fn kept_credentials_serve_until_they_expire_then_say_why_there_are_none() {
        let mut cache = CredentialCache::default();
        assert_eq!(cache.usable(at(0)).map(|_| ()), Err("loading AWS credentials".into()));
        cache.failed("STS: 503 Service Unavailable".into());
        assert_eq!(cache.usable(at(0)).map(|_| ()), Err("no AWS credentials: STS: 503 Service Unavailable".into()));

        cache.loaded(example_credentials(Some("t"), Some(at(60))));
        assert!(cache.usable(at(59)).is_ok());
        cache.failed("STS: 503 Service Unavailable".into());
        assert!(cache.usable(at(59)).is_ok(), "a failed refresh keeps valid credentials");
        let expired = cache.usable(at(60)).map(|_| ()).expect_err("expired");
        assert_eq!(
            expired,
            "AWS credentials expired at 2027-01-15T08:01:00Z; cannot refresh them: STS: 503 Service Unavailable"
        );
        assert!(!expired.contains("EXAMPLE"), "never the keys");
        cache.loaded(example_credentials(Some("t"), Some(at(120))));
        assert!(cache.usable(at(61)).is_ok());
        assert_eq!((cache.loaded, cache.failed), (2, 2));

        let mut keys = CredentialCache::default();
        keys.loaded(example_credentials(None, None));
        assert!(keys.usable(at(1_000_000)).is_ok(), "long-term keys do not expire");
    }
}
