//! What can go wrong, split by what happens next: retriable errors restart the pipeline from
//! the last durable checkpoint after a capped backoff; permanent ones stop the service with a
//! message naming the cause and the fix; a lost resume point follows `capture.on_history_lost`.

use rdkafka::error::KafkaError;
/// The errors both services have: fatal, HTTP, MongoDB, Kafka.
pub use service_kit::error::Error as Common;
pub use service_kit::failure::Failure;
use service_kit::failure::{classify_mongo, MongoErrorClass};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad settings, the HTTP port, a failed MongoDB or Kafka call: what both services have.
    #[error(transparent)]
    Common(#[from] Common),
    /// The stored resume point is no longer in the source's history (oplog / change stream
    /// retention too short for the time the source was stopped).
    #[error(
        "the resume point is no longer in the source's change history ({0}); set \
         capture.on_history_lost = \"resnapshot\" to copy again, or raise the oplog / change stream retention"
    )]
    HistoryLost(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The broker fenced our transactional producer: our transaction outlived
    /// `transaction.timeout.ms` (a long pause), or another instance with the same
    /// `capture.name` started. Restarting (a new producer fences the other) is right in the
    /// first case; the pipeline gives up when it keeps happening.
    #[error(
        "kafka ({0}): fenced: the transaction timed out, or another cdc-source with the same capture.name started"
    )]
    Fenced(String),
}

impl Error {
    /// Bad settings or an unusable environment: fix the configuration and restart.
    pub fn fatal(message: String) -> Self {
        Error::Common(Common::Fatal(message))
    }

    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Common(common) => common.is_retriable(),
            Error::Checkpoint(_) | Error::Fenced(_) => true,
            Error::HistoryLost(_) => false,
        }
    }

    /// A short label for the restart metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Common(common) => common.kind(),
            Error::HistoryLost(_) => "history_lost",
            Error::Checkpoint(_) => "checkpoint",
            Error::Fenced(_) => "fenced",
        }
    }

    /// A failed MongoDB call; a resume point gone from the source's history is `HistoryLost`.
    pub fn mongo(context: &str, e: mongodb::error::Error) -> Self {
        match classify_mongo(&e) {
            MongoErrorClass::HistoryLost => Error::HistoryLost(e.kind.to_string()),
            _ => Common::mongo(context, e).into(),
        }
    }

    /// A failed Kafka call; a fenced producer is `Fenced`, and a record too large says what to raise.
    pub fn kafka(context: &str, e: KafkaError) -> Self {
        if matches!(&e, KafkaError::Transaction(t) if t.code() == rdkafka::types::RDKafkaErrorCode::Fenced) {
            return Error::Fenced(context.to_string());
        }
        let mut failure = Failure::kafka(context, &e);
        if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge) {
            failure.reason.push_str(
                ": an event is larger than the broker or producer accepts; raise the topic's max.message.bytes and \
                 delivery.max_message_bytes",
            );
        }
        Common::Kafka(failure).into()
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

/// The server's error code, for a command error.
pub use service_kit::failure::command_code;

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;
    use mongodb::error::{CommandError, ErrorKind};

    /// The error the driver makes of a server's `{ok: 0, code, codeName, errmsg}` reply.
    fn server_error(code: i32, name: &str, message: &str) -> mongodb::error::Error {
        let reply = doc! {"ok": 0.0, "code": code, "codeName": name, "errmsg": message};
        let command: CommandError = bson::from_document(reply).expect("a command error reply");
        mongodb::error::Error::from(ErrorKind::Command(command))
    }

    #[test]
    fn every_lost_resume_point_follows_on_history_lost() {
        let lost = [
            (
                286,
                "ChangeStreamHistoryLost",
                "Resume of change stream was not possible, as the resume point may no longer be in the oplog.",
            ),
            (280, "ChangeStreamFatalError", "cannot resume stream; the resume token was not found."),
            // Amazon DocumentDB: the change stream log no longer holds the position.
            (136, "CappedPositionLost", "CollectionScan died due to position in capped collection being deleted"),
            // The same conditions as MongoDB before 4.2 reported them.
            (
                40576,
                "Location40576",
                "resume of change stream was not possible, as the resume point may no longer be in the oplog.",
            ),
            (40585, "Location40585", "resume of change stream was not possible, as the resume token was not found."),
            (40615, "Location40615", "The resume token UUID does not exist. Has the collection been dropped?"),
        ];
        for (code, name, message) in lost {
            let error = Error::mongo("change stream", server_error(code, name, message));
            assert!(matches!(error, Error::HistoryLost(_)), "{code} {name}: {error:?}");
        }
        let elected = Error::mongo("change stream", server_error(10107, "NotWritablePrimary", "not primary"));
        assert!(elected.is_retriable() && !matches!(elected, Error::HistoryLost(_)));
        let bad = Error::mongo("change stream", server_error(40324, "Location40324", "Unrecognized pipeline stage"));
        assert!(!bad.is_retriable() && !matches!(bad, Error::HistoryLost(_)));
    }

    #[test]
    fn every_error_keeps_its_restart_label_and_retry_decision() {
        let failure = || Failure::retriable("x", "down");
        let cases = [
            (Error::fatal("bad".into()), "fatal", false),
            (Error::from(std::io::Error::other("port")), "http", false),
            (Error::Common(Common::Mongo(failure())), "mongodb", true),
            (Error::Common(Common::Kafka(Failure::permanent("x", "refused"))), "kafka", false),
            (Error::HistoryLost("gone".into()), "history_lost", false),
            (Error::Checkpoint("write".into()), "checkpoint", true),
            (Error::Fenced("commit".into()), "fenced", true),
        ];
        for (error, kind, retriable) in cases {
            assert_eq!((error.kind(), error.is_retriable()), (kind, retriable), "{error:?}");
        }
        assert_eq!(Error::fatal("bad".into()).to_string(), "bad", "the shared errors keep their messages");
    }
}
