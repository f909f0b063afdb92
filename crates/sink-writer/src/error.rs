//! What can go wrong, split by what happens next: transient target or Kafka failures are
//! retried with capped backoff without committing; records that can never be applied go to the
//! dead-letter topic; configuration problems stop the service with the cause.

use rdkafka::error::KafkaError;
use service_kit::connect::{classify_mongo, kafka_is_transient, MongoErrorClass};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad settings or an unusable environment: fix the configuration and restart.
    #[error("{0}")]
    Fatal(String),
    #[error("cannot serve HTTP: {0}")]
    Http(#[from] std::io::Error),
    #[error("mongodb ({context}): {reason}")]
    Mongo { context: String, retriable: bool, reason: String },
    #[error("kafka ({context}): {reason}")]
    Kafka { context: String, retriable: bool, reason: String },
    /// The partition was revoked or the service is stopping: work in flight is abandoned and
    /// redone by whoever owns the partition next.
    #[error("stopped")]
    Stopped,
}

impl Error {
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Mongo { retriable, .. } | Error::Kafka { retriable, .. } => *retriable,
            Error::Fatal(_) | Error::Http(_) | Error::Stopped => false,
        }
    }

    pub fn mongo(context: &str, e: mongodb::error::Error) -> Self {
        Error::Mongo {
            context: context.to_string(),
            retriable: classify_mongo(&e) == MongoErrorClass::Transient,
            reason: e.kind.to_string(),
        }
    }

    pub fn kafka(context: &str, e: KafkaError) -> Self {
        Error::Kafka { context: context.to_string(), retriable: kafka_is_transient(&e), reason: e.to_string() }
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::Fatal(message)
    }
}
