//! AWS credentials for MSK IAM, found where AWS's own SDKs look first:
//!
//! 1. `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`) in the environment;
//! 2. the container credentials endpoint: an ECS task role (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`,
//!    served at 169.254.170.2) or EKS Pod Identity (`AWS_CONTAINER_CREDENTIALS_FULL_URI` with
//!    `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`).
//!
//! Temporary credentials are cached and fetched again five minutes before they expire.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::msk_iam::Credentials;

const ECS_ENDPOINT: &str = "http://169.254.170.2";
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);
const HTTP_TIMEOUT: Duration = Duration::from_secs(3);

/// Where credentials come from, read from the environment once per lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Environment,
    Container { url: String, authorization: Option<Authorization> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    Token,
    TokenFile(String),
}

impl Source {
    /// The first source the environment configures.
    pub fn detect(var: impl Fn(&str) -> Option<String>) -> Result<Source, String> {
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        if var("AWS_ACCESS_KEY_ID").is_some() || var("AWS_SECRET_ACCESS_KEY").is_some() {
            return Ok(Source::Environment);
        }
        let authorization = var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
            .map(Authorization::TokenFile)
            .or_else(|| var("AWS_CONTAINER_AUTHORIZATION_TOKEN").map(|_| Authorization::Token));
        if let Some(relative) = var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
            return Ok(Source::Container { url: format!("{ECS_ENDPOINT}{relative}"), authorization });
        }
        if let Some(url) = var("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
            return Ok(Source::Container { url, authorization });
        }
        Err("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run with an ECS task role \
             or EKS Pod Identity (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI / _FULL_URI)"
            .into())
    }

    pub fn describe(&self) -> String {
        match self {
            Source::Environment => "environment (AWS_ACCESS_KEY_ID)".into(),
            Source::Container { url, .. } => format!("container credentials endpoint {url}"),
        }
    }
}

struct Cached {
    source: Source,
    credentials: Credentials,
    expires: Option<SystemTime>,
}

static CACHE: Mutex<Option<Cached>> = Mutex::new(None);

/// Current credentials from the process environment, fetched again when near expiry.
pub fn current() -> Result<Credentials, String> {
    let source = Source::detect(|name| std::env::var(name).ok())?;
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(cached) = cache.as_ref() {
        let fresh = cached.expires.is_none_or(|at| SystemTime::now() + REFRESH_BEFORE_EXPIRY < at);
        if cached.source == source && fresh && source != Source::Environment {
            return Ok(cached.credentials.clone());
        }
    }
    let (credentials, expires) = fetch(&source, |name| std::env::var(name).ok())?;
    *cache = Some(Cached { source, credentials: credentials.clone(), expires });
    Ok(credentials)
}

/// Reads credentials from `source`; `var` reads the environment.
pub fn fetch(
    source: &Source,
    var: impl Fn(&str) -> Option<String>,
) -> Result<(Credentials, Option<SystemTime>), String> {
    match source {
        Source::Environment => {
            let var = |name: &str| var(name).filter(|v| !v.is_empty());
            match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
                (Some(access_key_id), Some(secret_access_key)) => Ok((
                    Credentials { access_key_id, secret_access_key, session_token: var("AWS_SESSION_TOKEN") },
                    None,
                )),
                _ => Err("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must both be set".into()),
            }
        }
        Source::Container { url, authorization } => {
            let header = match authorization {
                None => None,
                Some(Authorization::Token) => var("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
                Some(Authorization::TokenFile(path)) => Some(
                    std::fs::read_to_string(path)
                        .map_err(|e| format!("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {path}: {e}"))?
                        .trim()
                        .to_string(),
                ),
            };
            let body = http_get(url, header.as_deref()).map_err(|e| format!("container credentials {url}: {e}"))?;
            parse_container_credentials(&body).map_err(|e| format!("container credentials {url}: {e}"))
        }
    }
}

/// The JSON the ECS agent and the EKS Pod Identity agent answer with.
pub fn parse_container_credentials(body: &str) -> Result<(Credentials, Option<SystemTime>), String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        access_key_id: String,
        secret_access_key: String,
        token: Option<String>,
        expiration: Option<String>,
    }
    let answer: Answer = serde_json::from_str(body).map_err(|e| format!("unexpected answer ({e})"))?;
    let expires = match answer.expiration {
        Some(text) => Some(
            bson::DateTime::parse_rfc3339_str(&text)
                .map_err(|_| format!("unreadable Expiration '{text}'"))?
                .to_system_time(),
        ),
        None => None,
    };
    let credentials = Credentials {
        access_key_id: answer.access_key_id,
        secret_access_key: answer.secret_access_key,
        session_token: answer.token.filter(|t| !t.is_empty()),
    };
    Ok((credentials, expires))
}

/// A plain-HTTP GET (the credential endpoints are link-local or loopback, never TLS).
fn http_get(url: &str, authorization: Option<&str>) -> Result<String, String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// endpoints are supported")?;
    let (authority, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let with_port = if authority.contains(':') { authority.to_string() } else { format!("{authority}:80") };
    let address = with_port
        .to_socket_addrs()
        .map_err(|e| format!("resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("resolve {authority}: no address"))?;
    let mut stream = TcpStream::connect_timeout(&address, HTTP_TIMEOUT).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT)).map_err(|e| e.to_string())?;
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    // HTTP/1.0: the answer ends when the connection closes, never chunked.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n{auth}Accept: application/json\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream.take(1 << 20).read_to_end(&mut response).map_err(|e| e.to_string())?;
    let response = String::from_utf8(response).map_err(|_| "answer is not UTF-8".to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("malformed HTTP answer")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("HTTP {status}"));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn environment_keys_come_first_then_the_container_endpoint() {
        let keys = [("AWS_ACCESS_KEY_ID", "AKID"), ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/creds/x")];
        assert_eq!(Source::detect(env(&keys)), Ok(Source::Environment));
        let ecs = [("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/abc")];
        assert_eq!(
            Source::detect(env(&ecs)),
            Ok(Source::Container { url: "http://169.254.170.2/v2/credentials/abc".into(), authorization: None })
        );
        let pod_identity = [
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://169.254.170.23/v1/credentials"),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "/var/run/secrets/token"),
        ];
        assert_eq!(
            Source::detect(env(&pod_identity)),
            Ok(Source::Container {
                url: "http://169.254.170.23/v1/credentials".into(),
                authorization: Some(Authorization::TokenFile("/var/run/secrets/token".into())),
            })
        );
        let error = Source::detect(env(&[])).unwrap_err();
        assert!(error.contains("AWS_ACCESS_KEY_ID") && error.contains("ECS task role"), "{error}");
    }

    #[test]
    fn half_set_environment_keys_are_an_error_not_a_fallthrough() {
        let only_id = [("AWS_ACCESS_KEY_ID", "AKID")];
        let error = fetch(&Source::Environment, env(&only_id)).unwrap_err();
        assert!(error.contains("must both be set"), "{error}");
    }

    #[test]
    fn reads_the_container_answer_with_its_expiry() {
        let body = r#"{"AccessKeyId":"ASIAX","SecretAccessKey":"s3cr3t","Token":"tok","Expiration":"2026-11-25T18:00:00Z","RoleArn":"arn:aws:iam::1:role/r"}"#;
        let (credentials, expires) = parse_container_credentials(body).expect("parses");
        assert_eq!(credentials.access_key_id, "ASIAX");
        assert_eq!(credentials.session_token.as_deref(), Some("tok"));
        let expected = bson::DateTime::parse_rfc3339_str("2026-11-25T18:00:00Z").unwrap().to_system_time();
        assert_eq!(expires, Some(expected));
        let error = parse_container_credentials(r#"{"code":"AccessDenied"}"#).unwrap_err();
        assert!(error.contains("unexpected answer"), "{error}");
    }

    #[test]
    fn fetches_from_a_container_endpoint_with_its_authorization_token() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut request = [0u8; 1024];
            let n = stream.read(&mut request).expect("read");
            let request = String::from_utf8_lossy(&request[..n]).to_string();
            let body =
                r#"{"AccessKeyId":"ASIAX","SecretAccessKey":"k","Token":"t","Expiration":"2030-01-01T00:00:00Z"}"#;
            write!(stream, "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{body}").expect("write");
            request
        });
        let source = Source::Container {
            url: format!("http://127.0.0.1:{port}/v1/credentials"),
            authorization: Some(Authorization::Token),
        };
        let (credentials, _) =
            fetch(&source, env(&[("AWS_CONTAINER_AUTHORIZATION_TOKEN", "pod-token")])).expect("fetched");
        assert_eq!(credentials.secret_access_key, "k");
        let request = server.join().expect("server");
        assert!(request.starts_with("GET /v1/credentials HTTP/1.0\r\n"), "{request}");
        assert!(request.contains("Authorization: pod-token\r\n"), "{request}");
    }

    #[test]
    fn an_endpoint_that_refuses_is_a_clear_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let _ = stream.read(&mut [0u8; 1024]);
            let _ = stream.write_all(b"HTTP/1.0 403 Forbidden\r\n\r\nno");
        });
        let source = Source::Container { url: format!("http://127.0.0.1:{port}/creds"), authorization: None };
        let error = fetch(&source, env(&[])).unwrap_err();
        assert!(error.contains("HTTP 403") && error.contains("/creds"), "{error}");
    }
}
