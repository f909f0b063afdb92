//! Amazon MSK IAM authentication tokens: a SigV4-presigned `kafka-cluster:Connect` URL for
//! `kafka.<region>.amazonaws.com`, base64url-encoded, which the broker accepts as the SASL
//! OAUTHBEARER token. Valid 15 minutes unless configured shorter; librdkafka asks for a new one
//! at 80% of its lifetime (see `kafka_auth`, which hands it to every client).
//!
//! Pure: credentials and time come in, the token goes out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// How long a token is valid, as MSK's own signers set it (and the longest allowed).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);
const USER_AGENT: &str = concat!("mongo-kafka-replicator/", env!("CARGO_PKG_VERSION"));

/// AWS credentials (an IAM user's keys, or a role's temporary keys with their session token).
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

/// A token for `region` signed at `now`, valid for `lifetime`, and the Unix time in ms when it
/// expires.
pub fn token(region: &str, credentials: &Credentials, now: SystemTime, lifetime: Duration) -> (String, i64) {
    let host = format!("kafka.{region}.amazonaws.com");
    let mut query = vec![("Action".to_string(), "kafka-cluster:Connect".to_string())];
    if let Some(session) = &credentials.session_token {
        query.push(("X-Amz-Security-Token".to_string(), session.clone()));
    }
    let empty_payload = hex(&Sha256::digest(b""));
    let signed = presign(&Request {
        method: "GET",
        host: &host,
        path: "/",
        query,
        service: "kafka-cluster",
        region,
        credentials,
        now,
        expires: lifetime,
        payload_hash: &empty_payload,
    });
    let url = format!("https://{host}/?{signed}&User-Agent={}", encode(USER_AGENT));
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let expires_ms = i64::try_from((since_epoch + lifetime).as_millis()).unwrap_or(i64::MAX);
    (base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url), expires_ms)
}

/// What to presign.
pub struct Request<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    /// Query parameters besides the `X-Amz-*` ones this adds.
    pub query: Vec<(String, String)>,
    pub service: &'a str,
    pub region: &'a str,
    pub credentials: &'a Credentials,
    pub now: SystemTime,
    pub expires: Duration,
    /// Hex SHA-256 of the payload, or `UNSIGNED-PAYLOAD` (S3).
    pub payload_hash: &'a str,
}

/// The canonical query string with `X-Amz-Signature` last (SigV4, signed header `host`).
pub fn presign(r: &Request<'_>) -> String {
    let (date, time) = amz_date(r.now);
    let scope = format!("{date}/{}/{}/aws4_request", r.region, r.service);
    let mut query = r.query.clone();
    query.push(("X-Amz-Algorithm".into(), "AWS4-HMAC-SHA256".into()));
    query.push(("X-Amz-Credential".into(), format!("{}/{scope}", r.credentials.access_key_id)));
    query.push(("X-Amz-Date".into(), format!("{date}T{time}Z")));
    query.push(("X-Amz-Expires".into(), r.expires.as_secs().to_string()));
    query.push(("X-Amz-SignedHeaders".into(), "host".into()));
    let mut encoded: Vec<(String, String)> = query.iter().map(|(k, v)| (encode(k), encode(v))).collect();
    encoded.sort();
    let canonical_query = encoded.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let canonical_request =
        format!("{}\n{}\n{canonical_query}\nhost:{}\n\nhost\n{}", r.method, r.path, r.host, r.payload_hash);
    let string_to_sign =
        format!("AWS4-HMAC-SHA256\n{date}T{time}Z\n{scope}\n{}", hex(&Sha256::digest(canonical_request.as_bytes())));
    let mut key = hmac(format!("AWS4{}", r.credentials.secret_access_key).as_bytes(), date.as_bytes());
    for part in [r.region, r.service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex(&hmac(&key, string_to_sign.as_bytes()));
    format!("{canonical_query}&X-Amz-Signature={signature}")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any size");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// URI-encodes everything but the unreserved characters (SigV4's rule).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// (`YYYYMMDD`, `HHMMSS`) in UTC.
fn amz_date(now: SystemTime) -> (String, String) {
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (format!("{year:04}{month:02}{day:02}"), format!("{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_credentials() -> Credentials {
        Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    #[test]
    fn matches_the_presigned_url_example_of_the_aws_documentation() {
        // Amazon S3 API reference, "Authenticating Requests: Using Query Parameters (SigV4)".
        let credentials = example_credentials();
        let query = presign(&Request {
            method: "GET",
            host: "examplebucket.s3.amazonaws.com",
            path: "/test.txt",
            query: vec![],
            service: "s3",
            region: "us-east-1",
            credentials: &credentials,
            now: UNIX_EPOCH + Duration::from_secs(1_369_353_600), // 2013-05-24T00:00:00Z
            expires: Duration::from_secs(86_400),
            payload_hash: "UNSIGNED-PAYLOAD",
        });
        assert_eq!(
            query,
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[test]
    fn an_msk_token_is_a_presigned_connect_url_valid_for_15_minutes() {
        let mut credentials = example_credentials();
        credentials.session_token = Some("session/token+x".into());
        let now = UNIX_EPOCH + Duration::from_secs(1_795_600_000);
        let (token, expires_ms) = token("us-west-2", &credentials, now, TOKEN_LIFETIME);
        assert_eq!(expires_ms, 1_795_600_900_000);
        assert!(!token.contains('=') && !token.contains('+') && !token.contains('/'), "base64url, no padding");
        let url = String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&token).expect("base64"))
            .expect("utf8");
        assert!(url.starts_with("https://kafka.us-west-2.amazonaws.com/?Action=kafka-cluster%3AConnect&"), "{url}");
        for part in [
            "X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20261125%2Fus-west-2%2Fkafka-cluster%2Faws4_request",
            "X-Amz-Date=20261125T094640Z",
            "X-Amz-Expires=900",
            "X-Amz-Security-Token=session%2Ftoken%2Bx",
            "X-Amz-SignedHeaders=host",
            "&User-Agent=mongo-kafka-replicator%2F",
        ] {
            assert!(url.contains(part), "{part} missing in {url}");
        }
        let signature = url.split("X-Amz-Signature=").nth(1).and_then(|s| s.split('&').next()).expect("signature");
        assert_eq!(signature.len(), 64);
        // Another second, another signature; the secret never appears.
        let (later, _) = super::token("us-west-2", &credentials, now + Duration::from_secs(1), TOKEN_LIFETIME);
        assert_ne!(token, later);
        assert!(!url.contains("wJalrXUtnFEMI"));
        assert!(!format!("{credentials:?}").contains("wJalrXUtnFEMI"), "Debug hides the secret");
    }

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(amz_date(UNIX_EPOCH), ("19700101".into(), "000000".into()));
        assert_eq!(
            amz_date(UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723)),
            ("20000229".into(), "010203".into())
        );
    }
}
