//! What can go wrong, split by what happens next: transient target or Kafka failures are
//! retried with capped backoff without committing; records that can never be applied go to the
//! dead-letter topic; configuration problems stop the service with the cause.

use rdkafka::error::KafkaError;
/// The errors both services have: fatal, HTTP, MongoDB, Kafka.
pub use service_kit::error::Error as Common;
pub use service_kit::failure::Failure;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad settings, the HTTP port, a failed MongoDB or Kafka call: what both services have.
    #[error(transparent)]
    Common(#[from] Common),
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
    /// Bad settings or an unusable environment: fix the configuration and restart.
    pub fn fatal(message: String) -> Self {
        Error::Common(Common::Fatal(message))
    }

    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Common(common) => common.is_retriable(),
            Error::Fenced(_) | Error::Stopped => false,
        }
    }

    pub fn mongo(context: &str, e: mongodb::error::Error) -> Self {
        Common::mongo(context, e).into()
    }

    pub fn kafka(context: &str, e: KafkaError) -> Self {
        Common::kafka(context, e).into()
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::fatal(message)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Common::Http(e).into()
    }
}
