//! The Kafka consumer and its group membership: its settings (from the memory budget), the
//! rebalance callbacks (start a task per assigned partition; on revoke stop the revoked ones,
//! wait for their writes and commit what is durable before the partitions are released, so a
//! new owner never races the old one), and the member as the ownership fence uses it.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::{ClientContext, TopicPartitionList};

use crate::config::Config;
use crate::consume::fence::Owner;
use crate::consume::offsets::{self, Tp};
use crate::consume::partitions::Partitions;
use crate::error::Error;

pub type Kafka = StreamConsumer<Context>;

pub struct Context {
    pub partitions: Arc<Partitions>,
    /// MSK IAM tokens, when `kafka.auth = "aws_msk_iam"`.
    token: Option<service_kit::kafka_auth::TokenSource>,
}

impl ClientContext for Context {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(&self, _: Option<&str>) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        service_kit::kafka_auth::AuthContext::generate(&self.token)
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(revoked) = rebalance {
            let offsets = self.partitions.stop_blocking(Some(&tps(revoked)));
            tracing::info!(partitions = revoked.count(), "partitions revoked: their writes finished");
            if let Err(e) = offsets::commit(consumer, &offsets, CommitMode::Sync) {
                tracing::warn!(error = %e, "commit on revoke failed: the next owner repeats some writes");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(assigned) => {
                // Kafka's client keeps a partition paused through a revoke and a new assignment (a
                // lost group session): the new task starts with nothing held, so it reads.
                if let Err(e) = consumer.resume(assigned) {
                    tracing::warn!(error = %e, "cannot resume the assigned partitions");
                }
                self.partitions.assign(&tps(assigned));
                tracing::info!(partitions = assigned.count(), "partitions assigned: one task each");
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }
}

fn tps(list: &TopicPartitionList) -> Vec<Tp> {
    list.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect()
}

/// The group member, once the consumer exists: what the ownership fence commits through.
#[derive(Default)]
pub struct Member {
    consumer: OnceLock<Weak<Kafka>>,
}

impl Member {
    pub fn set(&self, consumer: &Arc<Kafka>) {
        let _ = self.consumer.set(Arc::downgrade(consumer));
    }
}

impl Owner for Member {
    fn commit(&self, topic: &str, partition: i32, offset: i64) -> Result<(), String> {
        let consumer = self.consumer.get().and_then(Weak::upgrade).ok_or("the consumer is gone")?;
        offsets::commit(consumer.as_ref(), &[((topic.to_string(), partition), offset)], CommitMode::Sync)
            .map_err(|e| e.to_string())
    }
}

/// How the memory budget is shared: the consumer's prefetch and fetch responses, the dead-letter
/// producer's buffer, and the records this service holds (queued, batched, being written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    pub prefetch_kbytes: usize,
    pub fetch_max_bytes: usize,
    /// The largest fetch response the client accepts: a full fetch plus the largest record
    /// batch, which the broker returns whole even past `fetch.max.bytes`.
    pub receive_max_bytes: usize,
    pub records_bytes: usize,
}

impl MemoryPlan {
    /// What the dead-letter producer may buffer (`dlq.rs`), one large dead letter and more.
    pub const DEAD_LETTER_BUFFER: usize = 48 * 1024 * 1024;
    /// What the process holds whatever the data: runtime, clients, connection pools and their
    /// buffers, the allocator's slack (~25 MiB measured at rest; the rest is margin for
    /// fragmentation under large documents).
    pub const BASELINE: usize = 64 * 1024 * 1024;
    /// A fetch response's own framing, beyond the records it carries.
    const RESPONSE_OVERHEAD: usize = 1024 * 1024;

    /// Measured on a 64 KiB-document backlog over 40 partitions (docs/benchmarks.md): an eighth
    /// for the prefetch keeps catch-up at full speed; records get the rest. `max_record` is the
    /// largest record the topics hold (`consume.max_record_bytes`).
    pub fn new(budget: usize, max_record: usize) -> Self {
        let prefetch = budget / 8;
        let fetch_max_bytes = (budget / 32).clamp(1024 * 1024, 50 * 1024 * 1024);
        let receive_max_bytes = fetch_max_bytes + max_record + Self::RESPONSE_OVERHEAD;
        let rest = budget.saturating_sub(prefetch + receive_max_bytes + Self::DEAD_LETTER_BUFFER + Self::BASELINE);
        Self {
            prefetch_kbytes: (prefetch / 1024).max(1024),
            fetch_max_bytes,
            receive_max_bytes,
            records_bytes: rest.max(budget / 4),
        }
    }
}

/// The consumer, not yet subscribed.
pub fn create(config: &Config, partitions: Arc<Partitions>, memory: MemoryPlan) -> Result<Arc<Kafka>, Error> {
    let prefetch = memory.prefetch_kbytes.to_string();
    let fetch_max = memory.fetch_max_bytes.to_string();
    let receive_max = memory.receive_max_bytes.to_string();
    let client_config = config.kafka.client_config_with(&[
        ("group.id", &config.consume.group_id),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "earliest"),
        ("isolation.level", "read_committed"),
        ("partition.assignment.strategy", "cooperative-sticky"),
        ("session.timeout.ms", "30000"),
        ("max.poll.interval.ms", "300000"),
        ("topic.metadata.refresh.interval.ms", "10000"),
        // A fetch waiting for committed data gives up after 100 ms, not librdkafka's 500:
        // end-to-end latency at moderate rates, for a few more idle fetches.
        ("fetch.wait.max.ms", "100"),
        // A partition is fetched only while the one prefetch queue is under its limit, which
        // other partitions' records keep it at on a backlog: a partition resumed after a pause
        // is looked at again every 50 ms, not librdkafka's 1,000 (its first records came 0.5 to
        // 3 s after the resume, measured on the 4-partition backlog in `exactly_once`).
        ("fetch.queue.backoff.ms", "50"),
        // One queue for all partitions (none is split off): its prefetch is bounded once.
        ("queued.max.messages.kbytes", &prefetch),
        ("fetch.max.bytes", &fetch_max),
        ("receive.message.max.bytes", &receive_max),
    ]);
    let context = Context { partitions, token: config.kafka.token_source() };
    let consumer: Kafka = client_config.create_with_context(context).map_err(|e| Error::kafka("create consumer", e))?;
    Ok(Arc::new(consumer))
}

/// A third of the session timeout the group applies (an operator may change it): a stand-still
/// shorter than that cannot have cost a partition.
pub fn ownership_lease(config: &Config) -> Duration {
    let session_ms =
        config.kafka.client_config().get("session.timeout.ms").and_then(|v| v.parse::<u64>().ok()).unwrap_or(30_000);
    Duration::from_millis(session_ms / 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_plan_stays_within_the_budget() {
        for mib in [16, 64, 320, 1024] {
            let budget = mib * 1024 * 1024;
            let plan = MemoryPlan::new(budget, 16 * 1024 * 1024);
            assert!(
                plan.receive_max_bytes > plan.fetch_max_bytes + 16 * 1024 * 1024,
                "a full fetch and the largest record"
            );
            let total = plan.prefetch_kbytes * 1024 + plan.receive_max_bytes + plan.records_bytes;
            assert!(plan.records_bytes >= budget / 4, "{mib} MiB: records get a fair share");
            if mib >= 320 {
                assert!(total + MemoryPlan::DEAD_LETTER_BUFFER + MemoryPlan::BASELINE <= budget, "{mib} MiB: {plan:?}");
            }
        }
    }
}
