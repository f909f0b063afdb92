//! cdc-source configuration: defaults → `--config` TOML file → `CDC_SOURCE__SECTION__KEY`.

use serde::{Deserialize, Serialize};
use service_kit::app::ServiceConfig;
use service_kit::config::Validate;
use service_kit::connect::{KafkaConnection, MongoConnection};
use service_kit::http::HttpConfig;
use service_kit::telemetry::LogConfig;

/// Environment variables override the file as `CDC_SOURCE__<SECTION>__<KEY>`.
pub const ENV_PREFIX: &str = "CDC_SOURCE";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Probe and metrics endpoint.
    pub http: HttpConfig,
    pub log: LogConfig,
    /// The source deployment whose changes are captured.
    pub mongo: MongoConnection,
    /// The Kafka cluster the changes are produced to.
    pub kafka: KafkaConnection,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: HttpConfig::on_port(8081),
            log: LogConfig::default(),
            mongo: MongoConnection::default(),
            kafka: KafkaConnection::default(),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        self.mongo.validate("mongo", &mut problems);
        self.kafka.validate("kafka", &mut problems);
        problems
    }
}

impl ServiceConfig for Config {
    fn log(&self) -> &LogConfig {
        &self.log
    }
}
