//! AWS credential endpoints served on loopback, handing out the test broker's MSK IAM keys, so
//! the services' credential chain can be run on each source without leaving the machine:
//! STS `AssumeRoleWithWebIdentity` (EKS IRSA), EC2 instance metadata (IMDSv2), the IAM Identity
//! Center portal (`GetRoleCredentials`, SSO profiles), the container endpoint (EKS Pod Identity
//! with its token file, or a fixed authorization token) and the ECS agent behind
//! `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`. Each counts the credentials it handed out and the
//! requests it refused for lacking what the real service demands (the web identity token, the
//! IMDSv2 session token, the SSO access token, the container authorization token).
//!
//! A test can make an endpoint grant short-lived credentials (so they rotate during a run),
//! answer slowly, or fail (HTTP 503) for a while. The broker accepts one set of keys, so
//! rotated credentials carry the same keys with a new expiry.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use test_support::services;

/// What a handler sees of a request.
pub struct Request {
    pub method: String,
    /// Path and query (the absolute URL when the endpoint serves as an HTTP proxy).
    pub target: String,
    /// Names in lower case.
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// What a test sets on a running endpoint, and what it counted.
struct Control {
    served: AtomicUsize,
    refused: AtomicUsize,
    failing: AtomicBool,
    /// Lifetime of the credentials handed out, in seconds.
    lifetime_secs: AtomicU64,
    /// Pause before every answer with credentials but the first, in ms.
    slow_ms: AtomicU64,
}

/// One endpoint: its base URL and how many credentials it handed out.
pub struct Endpoint {
    pub url: String,
    control: Arc<Control>,
}

impl Endpoint {
    /// Credentials handed out so far.
    pub fn served(&self) -> usize {
        self.control.served.load(Ordering::Relaxed)
    }

    /// Requests refused for a missing or wrong token or path (never the 503s of [`Self::fail`]).
    pub fn refused(&self) -> usize {
        self.control.refused.load(Ordering::Relaxed)
    }

    /// Credentials handed out from now on expire `lifetime` after they are handed out (an hour
    /// unless set).
    pub fn grant_for(self, lifetime: Duration) -> Self {
        self.control.lifetime_secs.store(lifetime.as_secs(), Ordering::Relaxed);
        self
    }

    /// Every answer with credentials after the first waits `pause` (an overloaded endpoint).
    pub fn slow_after_first(self, pause: Duration) -> Self {
        self.control.slow_ms.store(u64::try_from(pause.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self
    }

    /// While `failing`, every request is answered 503 (the service is down or throttling).
    pub fn fail(&self, failing: bool) {
        self.control.failing.store(failing, Ordering::Relaxed);
    }
}

/// An answer, and whether it handed out credentials.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    credentials: bool,
}

impl Answer {
    fn new(status: u16, content_type: &'static str, body: impl Into<String>) -> Answer {
        Answer { status, headers: vec![("Content-Type", content_type.into())], body: body.into(), credentials: false }
    }

    fn credentials(content_type: &'static str, body: String) -> Answer {
        Answer { credentials: true, ..Answer::new(200, content_type, body) }
    }
}

/// What a handler needs besides the request: when the credentials it hands out expire.
struct Grant {
    lifetime_secs: i64,
}

impl Grant {
    fn expiration(&self) -> String {
        expiration_in(self.lifetime_secs)
    }
}

/// Serves `handle` on a loopback port, a thread per connection, one request per connection.
fn serve(handle: impl Fn(&Request, &Grant) -> Answer + Send + Sync + 'static) -> Endpoint {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let control = Arc::new(Control {
        served: AtomicUsize::new(0),
        refused: AtomicUsize::new(0),
        failing: AtomicBool::new(false),
        lifetime_secs: AtomicU64::new(3600),
        slow_ms: AtomicU64::new(0),
    });
    let (handle, shared) = (Arc::new(handle), control.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (handle, control) = (handle.clone(), shared.clone());
            std::thread::spawn(move || {
                let Some(request) = read_request(&mut stream) else { return };
                let answer = if control.failing.load(Ordering::Relaxed) {
                    Answer::new(503, "text/plain", "Service Unavailable")
                } else {
                    let lifetime_secs = i64::try_from(control.lifetime_secs.load(Ordering::Relaxed)).unwrap_or(3600);
                    handle(&request, &Grant { lifetime_secs })
                };
                if answer.credentials {
                    if control.served.fetch_add(1, Ordering::Relaxed) > 0 {
                        std::thread::sleep(Duration::from_millis(control.slow_ms.load(Ordering::Relaxed)));
                    }
                } else if matches!(answer.status, 400 | 401 | 403 | 404) {
                    control.refused.fetch_add(1, Ordering::Relaxed);
                }
                let headers: String =
                    answer.headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {} X\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{}",
                    answer.status,
                    answer.body.len(),
                    answer.body
                );
            });
        }
    });
    Endpoint { url, control }
}

fn read_request(stream: &mut std::net::TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    let length = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request { method, target, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

fn expiration_in(seconds: i64) -> String {
    bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() + seconds * 1000)
        .try_to_rfc3339_string()
        .expect("rfc3339")
}

/// Decodes `application/x-www-form-urlencoded` (enough for STS's parameters).
fn form(body: &str) -> HashMap<String, String> {
    let decode = |s: &str| {
        let bytes = s.replace('+', " ").into_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                if let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or(""), 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    body.split('&').filter_map(|pair| pair.split_once('=')).map(|(k, v)| (decode(k), decode(v))).collect()
}

/// STS answering `AssumeRoleWithWebIdentity` for `role_arn` presented with `web_identity_token`
/// (what EKS IRSA mounts into the pod).
pub fn sts(role_arn: &'static str, web_identity_token: &'static str) -> Endpoint {
    let iam = services().kafka_iam;
    serve(move |request, grant| {
        let params = form(&request.body);
        let param = |name: &str| params.get(name).map(String::as_str);
        if request.method != "POST"
            || param("Action") != Some("AssumeRoleWithWebIdentity")
            || param("RoleArn") != Some(role_arn)
            || param("WebIdentityToken") != Some(web_identity_token)
        {
            let error = "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>\
                         <Message>not the expected role or token</Message></Error></ErrorResponse>";
            return Answer::new(400, "text/xml", error);
        }
        let body = format!(
            "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
             <AssumeRoleWithWebIdentityResult>\
             <Credentials><AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey>\
             <SessionToken>{}</SessionToken><Expiration>{}</Expiration></Credentials>\
             <AssumedRoleUser><Arn>{role_arn}/replicator</Arn><AssumedRoleId>AROATEST:replicator</AssumedRoleId></AssumedRoleUser>\
             <SubjectFromWebIdentityToken>system:serviceaccount:replication:replicator</SubjectFromWebIdentityToken>\
             </AssumeRoleWithWebIdentityResult>\
             <ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ResponseMetadata>\
             </AssumeRoleWithWebIdentityResponse>",
            iam.access_key_id,
            xml_escape(&iam.secret_access_key),
            xml_escape(&iam.session_token),
            grant.expiration()
        );
        Answer::credentials("text/xml", body)
    })
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// EC2 instance metadata, IMDSv2 only: a session token from `PUT /latest/api/token`, then the
/// instance profile's role and its credentials with that token.
pub fn imds(role: &'static str) -> Endpoint {
    const SESSION: &str = "imds-session-token-for-the-test";
    let iam = services().kafka_iam;
    serve(move |request, grant| {
        let path = request.target.split('?').next().unwrap_or("");
        if request.method == "PUT" && path == "/latest/api/token" {
            return match request.headers.get("x-aws-ec2-metadata-token-ttl-seconds") {
                Some(ttl) => {
                    let mut answer = Answer::new(200, "text/plain", SESSION);
                    answer.headers.push(("X-aws-ec2-metadata-token-ttl-seconds", ttl.clone()));
                    answer
                }
                None => Answer::new(400, "text/plain", ""),
            };
        }
        if request.headers.get("x-aws-ec2-metadata-token").map(String::as_str) != Some(SESSION) {
            return Answer::new(401, "text/plain", "");
        }
        match path.strip_prefix("/latest/meta-data/iam/security-credentials/") {
            Some("") => Answer::new(200, "text/plain", role),
            Some(name) if name == role => {
                let body = format!(
                    r#"{{"Code":"Success","LastUpdated":"{}","Type":"AWS-HMAC","AccessKeyId":"{}","SecretAccessKey":"{}","Token":"{}","Expiration":"{}"}}"#,
                    expiration_in(0),
                    iam.access_key_id,
                    iam.secret_access_key,
                    iam.session_token,
                    grant.expiration()
                );
                Answer::credentials("text/plain", body)
            }
            _ => Answer::new(404, "text/plain", ""),
        }
    })
}

/// The IAM Identity Center portal's `GetRoleCredentials`, for `access_token` (what `aws sso
/// login` caches).
pub fn sso_portal(access_token: &'static str) -> Endpoint {
    let iam = services().kafka_iam;
    serve(move |request, grant| {
        let federation = request.method == "GET" && request.target.starts_with("/federation/credentials?");
        if !federation || request.headers.get("x-amz-sso_bearer_token").map(String::as_str) != Some(access_token) {
            return Answer::new(401, "application/json", r#"{"message":"Session token not found or invalid"}"#);
        }
        let expiration_ms = bson::DateTime::now().timestamp_millis() + grant.lifetime_secs * 1000;
        let body = format!(
            r#"{{"roleCredentials":{{"accessKeyId":"{}","secretAccessKey":"{}","sessionToken":"{}","expiration":{expiration_ms}}}}}"#,
            iam.access_key_id, iam.secret_access_key, iam.session_token
        );
        Answer::credentials("application/json", body)
    })
}

/// The container credentials endpoint (ECS agent, EKS Pod Identity agent), for requests
/// carrying `authorization` (`AWS_CONTAINER_AUTHORIZATION_TOKEN`).
pub fn container(authorization: &'static str) -> Endpoint {
    serve(move |request, grant| {
        if request.headers.get("authorization").map(String::as_str) != Some(authorization) {
            return Answer::new(401, "application/json", "");
        }
        container_credentials(grant)
    })
}

/// The EKS Pod Identity agent: accepts the service account token the kubelet keeps projected
/// into `token_file` (`AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`), as it is *now*: when the
/// kubelet rotates the file, only the new token is accepted.
pub fn pod_identity_agent(token_file: PathBuf) -> Endpoint {
    serve(move |request, grant| {
        let current = std::fs::read_to_string(&token_file).unwrap_or_default();
        if current.is_empty() || request.headers.get("authorization") != Some(&current) {
            return Answer::new(401, "application/json", r#"{"message":"invalid service account token"}"#);
        }
        container_credentials(grant)
    })
}

/// The ECS agent's credentials endpoint for a task with `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI
/// = relative_uri`. The SDK roots that URI at `http://169.254.170.2`, a link-local address the
/// test cannot serve; this endpoint is reached as the HTTP proxy (`HTTP_PROXY`, which the SDK's
/// HTTP client honours), so it sees the SDK's own absolute URL and answers it only.
pub fn ecs_agent(relative_uri: &'static str) -> Endpoint {
    serve(move |request, grant| {
        if request.method != "GET" || request.target != format!("http://169.254.170.2{relative_uri}") {
            return Answer::new(404, "application/json", r#"{"message":"no such task credentials"}"#);
        }
        container_credentials(grant)
    })
}

fn container_credentials(grant: &Grant) -> Answer {
    let iam = services().kafka_iam;
    let body = format!(
        r#"{{"AccessKeyId":"{}","SecretAccessKey":"{}","Token":"{}","Expiration":"{}"}}"#,
        iam.access_key_id,
        iam.secret_access_key,
        iam.session_token,
        grant.expiration()
    );
    Answer::credentials("application/json", body)
}
