//! Whether a sink still runs: the members of its Kafka consumer group. A sink that stops leaves
//! its group at once; one that was killed stays a member until the group's session timeout.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use service_kit::connect::KafkaConnection;
use service_kit::kafka_auth::{self, AuthContext};

use crate::error::Error;

/// How many members `group` has now (none: no sink of that group runs).
pub async fn members(kafka: &KafkaConnection, group: &str) -> Result<usize, Error> {
    kafka.prepare_auth().await;
    let (kafka, group) = (kafka.clone(), group.to_string());
    tokio::task::spawn_blocking(move || {
        // Another group id: asking must not make this process a member.
        let consumer: BaseConsumer<AuthContext> = kafka
            .client_config_with(&[("group.id", &format!("{group}.failback")), ("enable.auto.commit", "false")])
            .create_with_context(kafka.context())
            .map_err(|e| Error::kafka("create a group reader", e))?;
        kafka_auth::serve_events(&consumer);
        let list = consumer
            .fetch_group_list(Some(&group), Duration::from_secs(10))
            .map_err(|e| Error::kafka(&format!("describe consumer group {group}"), e))?;
        Ok(list.groups().iter().filter(|g| g.name() == group).map(|g| g.members().len()).sum())
    })
    .await
    .map_err(|e| Error::fatal(format!("group reader task: {e}")))?
}
