//! What every service starts before its pipeline: the metrics registry, the health state and
//! the HTTP port serving both.

use std::net::SocketAddr;

use prometheus::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::http::{self, HttpConfig};

pub struct Shell {
    pub health: Health,
    pub registry: Registry,
    /// The bound address (the real port when the configuration asked for port 0).
    pub http_addr: SocketAddr,
    http: JoinHandle<std::io::Result<()>>,
    http_shutdown: CancellationToken,
}

impl Shell {
    /// Binds the HTTP port and starts serving. The registry already holds the process metrics
    /// (CPU, RSS, open files) under `process_`, `{metric_prefix}_build_info{version}` = 1,
    /// `{metric_prefix}_ready` (1 while `/health/readyz` would answer 200) and the MSK IAM and
    /// AWS credential metrics (`metrics`).
    pub async fn start(metric_prefix: &str, config: &HttpConfig) -> std::io::Result<Shell> {
        let http_shutdown = CancellationToken::new();
        let registry = Registry::new();
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .map_err(std::io::Error::other)?;
        let build_info = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(format!("{metric_prefix}_build_info"), "Build information; always 1."),
            &["version"],
        )
        .map_err(std::io::Error::other)?;
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        registry.register(Box::new(build_info)).map_err(std::io::Error::other)?;
        let health = Health::new();
        // Not ready once no valid AWS credentials are kept (when any are used: MSK IAM, MONGODB-AWS).
        health.declare_probe("aws-credentials", crate::aws_identity::readiness);
        registry
            .register(Box::new(ReadinessCollector::new(metric_prefix, health.clone()).map_err(std::io::Error::other)?))
            .map_err(std::io::Error::other)?;
        registry
            .register(Box::new(crate::metrics::AuthCollector::new(metric_prefix).map_err(std::io::Error::other)?))
            .map_err(std::io::Error::other)?;
        let listener = http::bind(config)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.listen_addr)))?;
        let http_addr = listener.local_addr()?;
        tracing::info!(%http_addr, "serving /health/livez, /health/readyz and /metrics");
        let http = tokio::spawn(http::serve(listener, health.clone(), registry.clone(), http_shutdown.clone()));
        Ok(Shell { health, registry, http_addr, http, http_shutdown })
    }

    /// Ends a service whose pipeline returned `result`: aborts its background tasks (probes,
    /// tickers), stops serving HTTP, and returns how the service ended.
    pub async fn finish<E: From<std::io::Error>>(
        self,
        background: Vec<JoinHandle<()>>,
        result: Result<(), E>,
    ) -> Result<(), E> {
        for task in background {
            task.abort();
        }
        self.http_shutdown.cancel();
        self.http.await.map_err(std::io::Error::other)??;
        result
    }
}

/// A started service: where it serves, and the task to wait for.
pub struct Running<E> {
    pub http_addr: SocketAddr,
    task: JoinHandle<Result<(), E>>,
}

impl<E: From<String>> Running<E> {
    pub fn new(http_addr: SocketAddr, task: JoinHandle<Result<(), E>>) -> Self {
        Self { http_addr, task }
    }

    /// Whether the service has ended (by itself, or after a stop request).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for the service to stop and returns how it ended.
    pub async fn wait(self) -> Result<(), E> {
        self.task.await.map_err(|e| E::from(format!("service task failed: {e}")))?
    }
}

/// `{prefix}_ready`: the readiness verdict, read from [`Health`] at every scrape, so alerts and
/// dashboards see exactly what the readiness probe sees.
struct ReadinessCollector {
    health: Health,
    gauge: prometheus::IntGauge,
}

impl ReadinessCollector {
    fn new(prefix: &str, health: Health) -> prometheus::Result<Self> {
        let gauge = prometheus::IntGauge::new(format!("{prefix}_ready"), "1 while every component is ready, else 0.")?;
        Ok(Self { health, gauge })
    }
}

impl prometheus::core::Collector for ReadinessCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.gauge.set(i64::from(self.health.readiness().is_ok()));
        self.gauge.collect()
    }
}
