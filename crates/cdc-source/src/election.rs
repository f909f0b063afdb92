//! Which instance of a capture is active (`election.enabled`), elected through Kafka itself as
//! Kafka Connect elects its leader: every instance is a member of one consumer group
//! (`election.group_id`) subscribed to the capture's checkpoint topic, which has one partition;
//! the member the group assigns that partition is active, the others stand by. The group notices
//! a silent member after `election.session_timeout_ms` (a crash, a frozen process, a cut link)
//! and hands the partition to a standby; an instance that stops leaves the group at once.
//!
//! What librdkafka believes about membership can be stale (a frozen or cut-off member still
//! believes it holds the partition when it wakes), so before it produces an instance proves that
//! it still owns the partition by committing an offset for it: the group coordinator refuses a
//! commit from a member it has evicted, and accepting one restarts the member's session, so the
//! partition cannot move for a session timeout afterwards. Whatever a former active instance still
//! sends is fenced by the transactional id its successor initialised (`producer`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use service_kit::connect::create_topic;
use service_kit::health::Health;
use service_kit::kafka_auth::{AuthContext, TokenSource};
use tokio::sync::watch;

use crate::config::Config;
use crate::delivery::store::CHECKPOINT_TOPIC_CONFIG;
use crate::delivery::topics;
use crate::error::Error;

/// A member of the election group, until [`Election::leave`] (or drop).
pub struct Election {
    consumer: Option<Arc<BaseConsumer<Membership>>>,
    active: watch::Receiver<bool>,
    stop: Arc<AtomicBool>,
    poller: Option<std::thread::JoinHandle<()>>,
    topic: String,
    session_timeout: Duration,
}

/// The group's callbacks, served by the poll thread: they say whether the partition is ours.
struct Membership {
    topic: String,
    active: watch::Sender<bool>,
    tokens: Option<TokenSource>,
    /// Set once this instance leaves: the revocation that follows is its own doing.
    leaving: Arc<AtomicBool>,
}

impl ClientContext for Membership {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(&self, _: Option<&str>) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        AuthContext::generate(&self.tokens)
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // An unreachable broker is for the session timeout to judge (and librdkafka logs it).
        let transport = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown)
        );
        if transport {
            tracing::debug!(%error, reason, "election group member");
        } else {
            tracing::warn!(%error, reason, "election group member");
        }
    }
}

impl ConsumerContext for Membership {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let ours = |list: &TopicPartitionList| list.elements().iter().any(|e| e.topic() == self.topic);
        match rebalance {
            Rebalance::Assign(list) if ours(list) => {
                // The partition's records are not needed: holding it is the point.
                if let Err(e) = consumer.pause(list) {
                    tracing::debug!(error = %e, "pausing the election partition");
                }
                tracing::info!(topic = %self.topic, "the election group assigned this instance the checkpoint partition");
                self.active.send_replace(true);
            }
            Rebalance::Revoke(list) if ours(list) => {
                if self.leaving.load(Ordering::Acquire) {
                    tracing::info!(topic = %self.topic, "left the election");
                } else {
                    let lost = consumer.assignment_lost();
                    tracing::warn!(topic = %self.topic, lost, "the election group took the checkpoint partition from this instance");
                }
                self.active.send_replace(false);
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "election group rebalance failed"),
            _ => {}
        }
    }
}

impl Election {
    /// Joins the group, creating the checkpoint topic first when it is missing (with the settings
    /// the producer would give it): a group on a missing topic never assigns anything.
    pub async fn join(config: &Config, health: &Health) -> Result<Election, Error> {
        let topic = config.checkpoint_topic();
        let session_timeout = Duration::from_millis(config.election.session_timeout_ms);
        let (sender, active) = watch::channel(false);
        let stop = Arc::new(AtomicBool::new(false));
        let membership = Membership {
            topic: topic.clone(),
            active: sender,
            tokens: config.kafka.token_source(),
            leaving: stop.clone(),
        };
        let consumer: BaseConsumer<Membership> = client_config(config)
            .create_with_context(membership)
            .map_err(|e| Error::kafka("create the election group member", e))?;
        let consumer = Arc::new(consumer);
        if let Err(e) = ensure_topic(config, &consumer, &topic).await {
            // Closing a group member blocks: not on the runtime.
            let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
            return Err(e);
        }
        consumer.subscribe(&[topic.as_str()]).map_err(|e| Error::kafka("join the election group", e))?;
        let beat = health.register_loop("election", Duration::from_secs(60));
        let (polled, stopping) = (consumer.clone(), stop.clone());
        let poller = std::thread::Builder::new()
            .name("election".into())
            .spawn(move || {
                // Rebalances, heartbeats' outcomes and token requests arrive through poll.
                while !stopping.load(Ordering::Acquire) {
                    beat.beat();
                    let _ = polled.poll(Duration::from_millis(200));
                }
            })
            .map_err(|e| Error::fatal(format!("election thread: {e}")))?;
        tracing::info!(group = %config.election_group(), %topic, "joined the election");
        Ok(Election { consumer: Some(consumer), active, stop, poller: Some(poller), topic, session_timeout })
    }

    /// Whether the group last assigned this instance the partition (librdkafka's belief).
    pub fn holds(&self) -> bool {
        *self.active.borrow()
    }

    /// Returns once the group's decision differs from `holds`.
    pub async fn changed_from(&self, holds: bool) {
        let mut decision = self.active.clone();
        // An error means the sender is gone with the poll thread: nothing will change any more.
        if decision.wait_for(|now| *now != holds).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Proves that this instance still holds the partition now: the group coordinator accepts an
    /// offset commit for it only from the member it assigned it to, in the current generation.
    pub async fn confirm(&self) -> Result<(), String> {
        if !self.holds() {
            return Err("the group assigned the checkpoint partition to another instance".into());
        }
        let consumer = self.consumer.clone().ok_or("left the election")?;
        let topic = self.topic.clone();
        let commit = tokio::task::spawn_blocking(move || {
            let mut list = TopicPartitionList::new();
            list.add_partition_offset(&topic, 0, Offset::Offset(0)).map_err(|e| e.to_string())?;
            consumer.commit(&list, CommitMode::Sync).map_err(|e| e.to_string())
        });
        match tokio::time::timeout(self.session_timeout, commit).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(format!("commit task: {e}")),
            Err(_) => Err(format!("no answer within {} ms", self.session_timeout.as_millis())),
        }
    }

    /// Leaves the group (the partition goes to a standby at once) and waits until it has.
    pub async fn leave(mut self) {
        if let Some(leaving) = self.leaving() {
            let _ = tokio::task::spawn_blocking(leaving).await;
        }
    }

    /// What ends the membership: stop polling, then close the consumer (blocking: it waits for
    /// the group to acknowledge). Run off the async runtime.
    fn leaving(&mut self) -> Option<impl FnOnce() + Send + 'static> {
        self.stop.store(true, Ordering::Release);
        let (poller, consumer) = (self.poller.take()?, self.consumer.take()?);
        Some(move || {
            let _ = poller.join();
            drop(consumer);
        })
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        if let Some(leaving) = self.leaving() {
            let _ = std::thread::Builder::new().name("election-leave".into()).spawn(leaving);
        }
    }
}

/// The member's settings: ours first, then whatever `kafka.options` sets.
fn client_config(config: &Config) -> rdkafka::ClientConfig {
    let session = config.election.session_timeout_ms;
    let heartbeat = (session / 10).max(100).to_string();
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let client_id = format!("cdc-source-{}-{}", config.capture.name, if host.is_empty() { "election" } else { &host });
    let session = session.to_string();
    let group = config.election_group();
    let defaults = [
        ("group.id", group.as_str()),
        ("client.id", client_id.as_str()),
        // Keeps the partition with its holder when another instance joins or comes back.
        ("partition.assignment.strategy", "cooperative-sticky"),
        ("session.timeout.ms", session.as_str()),
        ("heartbeat.interval.ms", heartbeat.as_str()),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "latest"),
        ("allow.auto.create.topics", "false"),
    ];
    config.kafka.client_config_with(&defaults)
}

/// Creates the checkpoint topic unless it exists (checked first: a user allowed to use the topic
/// but not to create topics would be refused a creation of an existing one).
async fn ensure_topic(config: &Config, consumer: &Arc<BaseConsumer<Membership>>, topic: &str) -> Result<(), Error> {
    let (asking, name) = (consumer.clone(), topic.to_string());
    let exists = tokio::task::spawn_blocking(move || {
        let metadata = asking.fetch_metadata(None, Duration::from_secs(10)).map_err(|e| Error::kafka("metadata", e))?;
        Ok::<_, Error>(metadata.topics().iter().any(|t| t.name() == name && t.error().is_none()))
    })
    .await
    .map_err(|e| Error::fatal(format!("metadata task: {e}")))??;
    if exists {
        return Ok(());
    }
    let admin = config.kafka.admin().map_err(|e| Error::kafka("create admin client", e))?;
    let max_message_bytes = config.delivery.max_message_bytes.to_string();
    let mut configs = vec![("max.message.bytes", max_message_bytes.as_str())];
    configs.extend(CHECKPOINT_TOPIC_CONFIG);
    match create_topic(&admin, topic, 1, config.topics.replication_factor, &configs).await {
        Ok(created) => {
            if created {
                tracing::info!(topic, "created the checkpoint topic");
            }
            Ok(())
        }
        Err(e) => Err(topics::creation_failed(topic, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_member_keeps_the_partition_with_its_holder_and_heartbeats_ten_times_a_session() {
        let mut config = Config::default();
        config.capture.name = "inventory".into();
        let member = client_config(&config);
        assert_eq!(member.get("group.id"), Some("cdc-source-inventory"));
        assert_eq!(member.get("partition.assignment.strategy"), Some("cooperative-sticky"));
        assert_eq!(
            (member.get("session.timeout.ms"), member.get("heartbeat.interval.ms")),
            (Some("10000"), Some("1000"))
        );
        config.election.group_id = "elect".into();
        config.election.session_timeout_ms = 6000;
        config.kafka.options.insert("security.protocol".into(), "SASL_SSL".into());
        let member = client_config(&config);
        assert_eq!(member.get("group.id"), Some("elect"));
        assert_eq!(member.get("heartbeat.interval.ms"), Some("600"));
        assert_eq!(member.get("security.protocol"), Some("SASL_SSL"), "kafka.options reach the member");
    }
}
