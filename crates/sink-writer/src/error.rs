//! What can go wrong, split by what happens next: transient target or Kafka failures are
//! retried with capped backoff without committing; records that can never be applied go to the
//! dead-letter topic; configuration problems stop the service with the cause.

use rdkafka::error::KafkaError;
pub use service_kit::failure::Failure;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad settings or an unusable environment: fix the configuration and restart.
    #[error("{0}")]
    Fatal(String),
    #[error("cannot serve HTTP: {0}")]
    Http(#[from] std::io::Error),
    #[error("mongodb {0}")]
    Mongo(Failure),
    #[error("kafka {0}")]
    Kafka(Failure),
    /// Another replica took the partition over in the target's ledger (`exactly_once`): this
    /// owner's transaction was refused and nothing of it was written.
    #[error("fenced: {0}")]
    Fenced(String),
    /// The partition was revoked or the service is stopping: work in flight is abandoned and
    /// redone by whoever owns the partition next.
    #[error("stopped")]
    Stopped,
}

impl Error {
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Mongo(failure) | Error::Kafka(failure) => failure.retriable,
            Error::Fatal(_) | Error::Http(_) | Error::Fenced(_) | Error::Stopped => false,
        }
    }

    pub fn mongo(context: &str, e: mongodb::error::Error) -> Self {
        Error::Mongo(Failure::mongo(context, &e))
    }

    pub fn kafka(context: &str, e: KafkaError) -> Self {
        Error::Kafka(Failure::kafka(context, &e))
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::Fatal(message)
    }
}
