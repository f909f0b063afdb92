//! cdc-source: MongoDB change streams → Kafka, in the source region.
//!
//! ```text
//!   signals ──► shutdown token ─────────────────────────────────────┐
//!   Shell: /health/livez /health/readyz /metrics                      ▼
//!   source MongoDB ──ping──► connectivity watch ──► readiness ◄── Kafka metadata
//! ```
//!
//! Delivery guarantee: none yet — this is the service shell (configuration, probes, metrics,
//! clean stop); the capture pipeline lands with its own issue.
//!
//! Errors: [`Error::Fatal`] (configuration or environment; exit 1 with the cause),
//! [`Error::Http`] (the probe port cannot be served).

mod config;
mod error;

use std::net::SocketAddr;
use std::time::Duration;

use service_kit::connect::{self, KafkaProbe};
use service_kit::shell::Shell;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{Config, ENV_PREFIX};
pub use error::Error;

/// A started service: where it serves, and the task to wait for.
pub struct Running {
    pub http_addr: SocketAddr,
    task: JoinHandle<Result<(), Error>>,
}

impl Running {
    pub async fn wait(self) -> Result<(), Error> {
        self.task.await.map_err(|e| Error::Fatal(format!("service task failed: {e}")))?
    }
}

/// Runs until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    start(config, shutdown).await?.wait().await
}

/// Starts the service and returns once its HTTP port is bound.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let shell = Shell::start("cdc_source", &config.http, shutdown.clone()).await?;
    let mongo = config.mongo.client("cdc-source").await.map_err(|e| Error::Fatal(format!("mongo.uri: {}", e.kind)))?;
    let kafka = KafkaProbe::new(&config.kafka).map_err(|e| Error::Fatal(format!("kafka: {e}")))?;
    let http_addr = shell.http_addr;
    let task = tokio::spawn(async move {
        connect::watch(shell.health.clone(), "source-mongodb", mongo, "kafka", kafka, Duration::from_secs(5), shutdown)
            .await;
        shell.stop().await?;
        Ok(())
    });
    Ok(Running { http_addr, task })
}
