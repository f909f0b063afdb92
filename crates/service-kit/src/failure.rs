//! A failed call to MongoDB or Kafka, shaped the same in both services: what was being done,
//! why it failed, and whether trying again can help (decided once, in `connect`). Each service's
//! `Error` wraps it in its own `Mongo` and `Kafka` variants and adds what only it has.

use rdkafka::error::KafkaError;

use crate::connect::{classify_mongo, kafka_is_transient, MongoErrorClass};

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
