//! What can go wrong, split by what happens next: retriable errors restart the pipeline from
//! the last durable checkpoint after a capped backoff; permanent ones stop the service with a
//! message naming the cause and the fix; a lost resume point follows `capture.on_history_lost`.

use rdkafka::error::KafkaError;

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
    /// The stored resume point is no longer in the source's history (oplog / change stream
    /// retention too short for the time the source was stopped).
    #[error(
        "the resume point is no longer in the source's change history ({0}); set \
         capture.on_history_lost = \"resnapshot\" to copy again, or raise the oplog / change stream retention"
    )]
    HistoryLost(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
}

/// MongoDB error codes after which retrying helps (elections, shutdowns, network).
const TRANSIENT_MONGO_CODES: [i32; 16] =
    [6, 7, 43, 89, 91, 150, 189, 234, 262, 9001, 10107, 11600, 11602, 13435, 13436, 64];

/// ChangeStreamHistoryLost, and the fatal error older servers give for a vanished token.
const HISTORY_LOST_CODES: [i32; 2] = [286, 280];

impl Error {
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Mongo { retriable, .. } | Error::Kafka { retriable, .. } => *retriable,
            Error::Checkpoint(_) => true,
            Error::Fatal(_) | Error::Http(_) | Error::HistoryLost(_) => false,
        }
    }

    /// A short label for the restart metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Fatal(_) => "fatal",
            Error::Http(_) => "http",
            Error::Mongo { .. } => "mongodb",
            Error::Kafka { .. } => "kafka",
            Error::HistoryLost(_) => "history_lost",
            Error::Checkpoint(_) => "checkpoint",
        }
    }

    pub fn mongo(context: &str, e: mongodb::error::Error) -> Self {
        use mongodb::error::ErrorKind;
        let code = match e.kind.as_ref() {
            ErrorKind::Command(c) => Some(c.code),
            ErrorKind::Write(mongodb::error::WriteFailure::WriteConcernError(wc)) => Some(wc.code),
            _ => None,
        };
        if let Some(code) = code.filter(|c| HISTORY_LOST_CODES.contains(c)) {
            return Error::HistoryLost(format!("code {code}: {}", e.kind));
        }
        let retriable = e.contains_label("ResumableChangeStreamError")
            || e.contains_label("RetryableWriteError")
            || matches!(
                e.kind.as_ref(),
                ErrorKind::ServerSelection { .. } | ErrorKind::ConnectionPoolCleared { .. } | ErrorKind::Io(_)
            )
            || code.is_some_and(|c| TRANSIENT_MONGO_CODES.contains(&c));
        Error::Mongo { context: context.to_string(), retriable, reason: e.kind.to_string() }
    }

    pub fn kafka(context: &str, e: KafkaError) -> Self {
        let too_large = matches!(e.rdkafka_error_code(), Some(rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge));
        let retriable = match &e {
            _ if too_large => false,
            KafkaError::Transaction(t) => !t.is_fatal(),
            KafkaError::ClientCreation(_) => false,
            _ => true,
        };
        let reason = match &e {
            _ if too_large => format!(
                "{e}: an event is larger than the broker or producer accepts; raise the topic's max.message.bytes \
                 and delivery.max_message_bytes"
            ),
            KafkaError::Transaction(t) if t.code() == rdkafka::types::RDKafkaErrorCode::Fenced => {
                format!("{e}: another cdc-source with the same capture.name took over")
            }
            _ => e.to_string(),
        };
        Error::Kafka { context: context.to_string(), retriable, reason }
    }
}
