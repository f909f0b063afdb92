//! Amazon MSK IAM authentication tokens: a `kafka-cluster:Connect` request for
//! `kafka.<region>.amazonaws.com`, presigned with SigV4 by AWS's own signer (aws-sigv4) and
//! base64url-encoded, which the broker accepts as the SASL OAUTHBEARER token. Valid 15 minutes
//! unless configured shorter; librdkafka asks for a new one at 80% of its lifetime (see
//! `kafka_auth`, which hands it to every client).
//!
//! Pure: credentials and time come in, the token goes out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings};
use aws_sigv4::sign::v4;
use base64::Engine;

/// How long a token is valid, as MSK's own signers set it (and the longest allowed).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);
const USER_AGENT: &str = concat!("mongo-kafka-replicator/", env!("CARGO_PKG_VERSION"));

/// A token for `region` signed at `now` (to the second, as SigV4 dates are), valid for
/// `lifetime`, and the Unix time in ms when it expires.
pub fn token(
    region: &str,
    credentials: &Credentials,
    now: SystemTime,
    lifetime: Duration,
) -> Result<(String, i64), String> {
    let signed_at = UNIX_EPOCH + Duration::from_secs(now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs());
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(lifetime);
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("kafka-cluster")
        .time(signed_at)
        .settings(settings)
        .build()
        .map_err(|e| format!("MSK IAM signing parameters: {e}"))?
        .into();
    let mut url = format!("https://kafka.{region}.amazonaws.com/?Action=kafka-cluster%3AConnect");
    let request = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| format!("MSK IAM request: {e}"))?;
    let (instructions, _) = sign(request, &params).map_err(|e| format!("MSK IAM signing: {e}"))?.into_parts();
    for (name, value) in instructions.params() {
        url.push_str(&format!("&{}={}", encode(name), encode(value)));
    }
    // Not signed: MSK reads it for its logs, as from AWS's own signers.
    url.push_str(&format!("&User-Agent={}", encode(USER_AGENT)));
    let expires = signed_at.duration_since(UNIX_EPOCH).unwrap_or_default() + lifetime;
    let expires_ms = i64::try_from(expires.as_millis()).unwrap_or(i64::MAX);
    Ok((base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url), expires_ms))
}

/// URI-encodes everything but the unreserved characters (SigV4's rule for query values).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws_identity::example_credentials;

    fn decoded(token: &str) -> String {
        String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).expect("base64url"))
            .expect("utf8")
    }

    #[test]
    fn an_msk_token_is_a_presigned_connect_url() {
        let credentials = example_credentials(Some("session/token+x"), None);
        let now = UNIX_EPOCH + Duration::from_millis(1_795_600_000_250);
        let (token, expires_ms) = token("us-west-2", &credentials, now, TOKEN_LIFETIME).expect("signed");
        assert_eq!(expires_ms, 1_795_600_900_000, "the second it was signed in, plus the lifetime");
        assert!(!token.contains('=') && !token.contains('+') && !token.contains('/'), "base64url, no padding");
        let url = decoded(&token);
        assert!(url.starts_with("https://kafka.us-west-2.amazonaws.com/?Action=kafka-cluster%3AConnect&"), "{url}");
        for part in [
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
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
        assert!(!url.contains("wJalrXUtnFEMI"), "the secret never appears");
    }

    #[test]
    fn the_lifetime_and_the_second_change_the_token() {
        let credentials = example_credentials(None, None);
        let now = UNIX_EPOCH + Duration::from_secs(1_795_600_000);
        let short = token("us-east-1", &credentials, now, Duration::from_secs(20)).expect("signed");
        assert_eq!(short.1, 1_795_600_020_000);
        let url = decoded(&short.0);
        assert!(url.contains("X-Amz-Expires=20&") && !url.contains("X-Amz-Security-Token"), "{url}");
        let later = token("us-east-1", &credentials, now + Duration::from_secs(1), Duration::from_secs(20)).unwrap();
        assert_ne!(short.0, later.0);
    }
}
