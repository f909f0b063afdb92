//! The errors both services have, defined once: a fatal problem (settings, environment), the
//! HTTP port, and a failed MongoDB or Kafka call ([`Failure`]: whether to retry is decided
//! there). Each service's `Error` wraps this one transparently (same messages) beside the
//! variants only it has, and keeps its own `mongo()` / `kafka()` constructors where it
//! classifies more (cdc-source: a lost resume point, a fenced producer).

use rdkafka::error::KafkaError;

use crate::failure::Failure;

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
}

impl Error {
    /// Whether the same work may succeed later: a MongoDB or Kafka failure that says so.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Mongo(failure) | Error::Kafka(failure) => failure.retriable,
            Error::Fatal(_) | Error::Http(_) => false,
        }
    }

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Fatal(_) => "fatal",
            Error::Http(_) => "http",
            Error::Mongo(_) => "mongodb",
            Error::Kafka(_) => "kafka",
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

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::error::{CommandError, ErrorKind};
    use rdkafka::types::RDKafkaErrorCode;

    fn server_error(code: i32, name: &str) -> mongodb::error::Error {
        let reply = bson::doc! {"ok": 0.0, "code": code, "codeName": name, "errmsg": "refused"};
        let command: CommandError = bson::from_document(reply).expect("a command error reply");
        mongodb::error::Error::from(ErrorKind::Command(command))
    }

    #[test]
    fn only_failures_that_say_so_are_retried() {
        let elected = Error::mongo("insert", server_error(10107, "NotWritablePrimary"));
        assert!(elected.is_retriable() && elected.kind() == "mongodb", "{elected:?}");
        let refused = Error::mongo("insert", server_error(40324, "Location40324"));
        assert!(!refused.is_retriable(), "{refused:?}");
        let down = Error::kafka("produce", KafkaError::Global(RDKafkaErrorCode::AllBrokersDown));
        assert!(down.is_retriable() && down.kind() == "kafka", "{down:?}");
        let fatal = Error::from("set mongo.uri".to_string());
        assert!(!fatal.is_retriable() && fatal.kind() == "fatal");
        let http = Error::from(std::io::Error::new(std::io::ErrorKind::AddrInUse, "in use"));
        assert!(!http.is_retriable() && http.kind() == "http");
    }

    #[test]
    fn messages_name_the_store_and_the_context() {
        let refused = Error::mongo("insert", server_error(40324, "Location40324"));
        assert!(refused.to_string().starts_with("mongodb (insert): "), "{refused}");
        let down = Error::kafka("produce", KafkaError::Global(RDKafkaErrorCode::AllBrokersDown));
        assert!(down.to_string().starts_with("kafka (produce): "), "{down}");
        assert_eq!(Error::Fatal("set mongo.uri".into()).to_string(), "set mongo.uri");
        let http = Error::from(std::io::Error::new(std::io::ErrorKind::AddrInUse, "in use"));
        assert_eq!(http.to_string(), "cannot serve HTTP: in use");
    }
}
