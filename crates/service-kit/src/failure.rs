//! A failed call to MongoDB or Kafka, shaped the same in both services: what was being done,
//! why it failed, and whether trying again can help (decided here, once for both). The shared
//! `error::Error` wraps it in its `Mongo` and `Kafka` variants.

use rdkafka::error::KafkaError;

/// What to do about a MongoDB error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MongoErrorClass {
    /// Elections, shutdowns, network: retry with backoff.
    Transient,
    /// The change stream's resume point is gone from the source's history.
    HistoryLost,
    /// Anything else: retrying will not help.
    Permanent,
}

/// MongoDB's error codes both services name (the server's `error_codes.yml`), in one table.
pub mod code {
    pub const UNAUTHORIZED: i32 = 13;
    pub const AUTHENTICATION_FAILED: i32 = 18;
    pub const USER_NOT_FOUND: i32 = 11;
    pub const NAMESPACE_NOT_FOUND: i32 = 26;
    pub const INDEX_NOT_FOUND: i32 = 27;
    pub const NAMESPACE_EXISTS: i32 = 48;
    pub const INDEX_OPTIONS_CONFLICT: i32 = 85;
    pub const INDEX_KEY_SPECS_CONFLICT: i32 = 86;
    pub const COMMAND_NOT_SUPPORTED_ON_VIEW: i32 = 166;
    pub const QUERY_PLAN_KILLED: i32 = 175;
    /// A change event over 16 MiB (BSONObjectTooLarge).
    pub const BSON_OBJECT_TOO_LARGE: i32 = 10334;
    pub const DUPLICATE_KEY: i32 = 11000;
    /// Atlas / DocumentDB: the user may not run the command (AtlasError, DocumentDB's own).
    pub const ATLAS_UNAUTHORIZED: i32 = 8000;
}

/// A server error's code, when the error is a command's refusal.
pub fn command_code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

/// Server error codes after which retrying helps: what a busy or changing deployment answers,
/// never what a document causes (a write refused with any other code is the document's fault
/// and goes to the dead-letter topic).
/// - network and hosts: HostUnreachable 6, HostNotFound 7, NetworkTimeout 89, SocketException
///   9001, NetworkInterfaceExceededTimeLimit 202, FailedToSatisfyReadPreference 133 (a mongos
///   without a reachable shard primary yet);
/// - elections and shutdowns: ShutdownInProgress 91, PrimarySteppedDown 189, NotWritablePrimary
///   10107, InterruptedAtShutdown 11600, InterruptedDueToReplStateChange 11602,
///   NotPrimaryNoSecondaryOk 13435, NotPrimaryOrSecondary 13436;
/// - sharding metadata in motion: StaleShardVersion 63, StaleEpoch 150, StaleConfig 13388;
/// - an operation stopped or outwaited: Interrupted 11601 (a `killOp`), MaxTimeMSExpired 50,
///   ExceededTimeLimit 262, LockTimeout 24, LockBusy 46, WriteConflict 112,
///   TransactionExceededLifetimeLimitSeconds 290, WriteConcernFailed 64;
/// - cursors and streams: CursorNotFound 43, RetryChangeStream 234.
pub const TRANSIENT_MONGO_CODES: [i32; 26] = [
    6, 7, 24, 43, 46, 50, 63, 64, 89, 91, 112, 133, 150, 189, 202, 234, 262, 290, 9001, 10107, 11600, 11601, 11602,
    13388, 13435, 13436,
];

/// Codes that mean the resume point is gone from the source's history: ChangeStreamHistoryLost
/// (286) and the fatal error for a resume token the server cannot find (280); Amazon DocumentDB's
/// CappedPositionLost (136: its change stream log no longer holds the position); and the codes
/// MongoDB before 4.2 (whose API DocumentDB 3.6 / 4.0 follows) gave for the same: 40576 (resume
/// point no longer in the oplog), 40585 (resume token not found), 40615 (resume token's
/// collection gone).
const HISTORY_LOST_CODES: [i32; 6] = [286, 280, 136, 40576, 40585, 40615];

pub fn classify_mongo(e: &mongodb::error::Error) -> MongoErrorClass {
    use mongodb::error::{ErrorKind, WriteFailure};
    let code = match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(wc)) => Some(wc.code),
        _ => None,
    };
    if code.is_some_and(|c| HISTORY_LOST_CODES.contains(&c)) {
        return MongoErrorClass::HistoryLost;
    }
    // A transaction that met a write conflict, an election or a network error is retried whole.
    let transient = e.contains_label("ResumableChangeStreamError")
        || e.contains_label("RetryableWriteError")
        || e.contains_label("TransientTransactionError")
        || e.contains_label("UnknownTransactionCommitResult")
        || matches!(
            e.kind.as_ref(),
            ErrorKind::ServerSelection { .. } | ErrorKind::ConnectionPoolCleared { .. } | ErrorKind::Io(_)
        )
        || code.is_some_and(|c| TRANSIENT_MONGO_CODES.contains(&c));
    if transient {
        MongoErrorClass::Transient
    } else {
        MongoErrorClass::Permanent
    }
}

/// Whether a Kafka error may go away by itself (a fenced or misconfigured client will not,
/// nor will a record larger than the broker accepts).
pub fn kafka_is_transient(e: &KafkaError) -> bool {
    if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge) {
        return false;
    }
    match e {
        KafkaError::Transaction(t) => !t.is_fatal(),
        KafkaError::ClientCreation(_) | KafkaError::ClientConfig(..) => false,
        _ => true,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What was being done (a command, a setting, a stage).
    pub context: String,
    /// Whether the same call may succeed later (elections, network, a broker restart).
    pub retriable: bool,
    pub reason: String,
}

impl Failure {
    pub fn new(context: impl Into<String>, retriable: bool, reason: impl Into<String>) -> Self {
        Self { context: context.into(), retriable, reason: reason.into() }
    }

    /// A failure the same call may get past later.
    pub fn retriable(context: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(context, true, reason)
    }

    /// A failure no retry gets past.
    pub fn permanent(context: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(context, false, reason)
    }

    pub fn mongo(context: &str, e: &mongodb::error::Error) -> Self {
        Self::new(context, classify_mongo(e) == MongoErrorClass::Transient, e.kind.to_string())
    }

    pub fn kafka(context: &str, e: &KafkaError) -> Self {
        Self::new(context, kafka_is_transient(e), e.to_string())
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({}): {}", self.context, self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kafka_failure_says_whether_to_retry() {
        let down = Failure::kafka("produce", &KafkaError::Global(rdkafka::types::RDKafkaErrorCode::AllBrokersDown));
        assert!(down.retriable, "{down:?}");
        assert!(down.to_string().starts_with("(produce): "), "{down}");
        let large =
            Failure::kafka("produce", &KafkaError::Global(rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge));
        assert!(!large.retriable, "a record too large stays too large");
    }
}
