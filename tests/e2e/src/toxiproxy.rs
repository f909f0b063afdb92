//! Toxiproxy (built from the Go module proxy by `scripts/tools.sh toxiproxy`), started for one
//! run: TCP proxies whose links the fault suite cuts and the benchmark slows.

use std::net::SocketAddr;
use std::time::Duration;

use test_support::http_request;

use crate::process::Proc;

/// Toxiproxy, started for the run (or one already running): a TCP proxy per link whose faults
/// we control.
pub struct Toxiproxy {
    _proc: Option<Proc>,
    api: SocketAddr,
}

impl Toxiproxy {
    pub async fn start(dir: &std::path::Path) -> Toxiproxy {
        let bin = test_support::workspace_root().join(".cache/bin/toxiproxy-server");
        assert!(bin.is_file(), "{} is missing: run `scripts/tools.sh toxiproxy`", bin.display());
        let api = crate::free_addr();
        let mut proc = Proc::new(
            "toxiproxy",
            bin,
            vec!["-host".into(), "127.0.0.1".into(), "-port".into(), api.port().to_string()],
            vec![],
            dir,
        );
        proc.start();
        test_support::eventually("toxiproxy answers", Duration::from_secs(20), || async {
            http_request(api, "GET", "/version", None).await.ok().filter(|(s, _)| *s == 200)
        })
        .await;
        Toxiproxy { _proc: Some(proc), api }
    }

    /// The Toxiproxy answering at `api`, started by someone else (the three-broker cluster's).
    pub fn attach(api: SocketAddr) -> Toxiproxy {
        Toxiproxy { _proc: None, api }
    }

    async fn call(&self, method: &str, path: &str, body: &str) {
        let (status, answer) = http_request(self.api, method, path, Some(body)).await.expect("toxiproxy API");
        assert!((200..300).contains(&status), "toxiproxy {method} {path}: {status} {answer}");
    }

    /// A proxy on a free port to `upstream`; returns the port clients use.
    pub async fn proxy(&self, name: &str, upstream: &str) -> SocketAddr {
        self.proxy_on(name, crate::free_addr(), upstream).await
    }

    /// A proxy listening on `listen` (e.g. the port a Kafka listener advertises).
    pub async fn proxy_on(&self, name: &str, listen: SocketAddr, upstream: &str) -> SocketAddr {
        let body = format!(r#"{{"name":"{name}","listen":"{listen}","upstream":"{upstream}","enabled":true}}"#);
        self.call("POST", "/proxies", &body).await;
        listen
    }

    pub async fn enable(&self, name: &str, enabled: bool) {
        self.call("POST", &format!("/proxies/{name}"), &format!(r#"{{"enabled":{enabled}}}"#)).await;
    }

    pub async fn latency(&self, name: &str, ms: u64, jitter: u64) {
        for stream in ["downstream", "upstream"] {
            let body = format!(
                r#"{{"name":"lat_{stream}","type":"latency","stream":"{stream}","attributes":{{"latency":{ms},"jitter":{jitter}}}}}"#
            );
            self.call("POST", &format!("/proxies/{name}/toxics"), &body).await;
        }
    }

    /// Delays only what the upstream answers (the replies), by `ms`.
    pub async fn reply_latency(&self, name: &str, ms: u64) {
        let body = format!(
            r#"{{"name":"lat_downstream","type":"latency","stream":"downstream","attributes":{{"latency":{ms},"jitter":0}}}}"#
        );
        self.call("POST", &format!("/proxies/{name}/toxics"), &body).await;
    }

    pub async fn clear_latency(&self, name: &str) {
        for stream in ["downstream", "upstream"] {
            self.call("DELETE", &format!("/proxies/{name}/toxics/lat_{stream}"), "").await;
        }
    }
}
