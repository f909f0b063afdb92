//! Every metric sink-writer exports, in one place. Labels are bounded: topics, partitions,
//! write kinds, DDL kinds, rejection stages; never a document id.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct Metrics {
    /// Messages taken from Kafka, by topic.
    pub consumed: IntCounterVec,
    /// Documents written to the target, by kind (`replace`, `update`, `delete`).
    pub applied: IntCounterVec,
    /// Time of one round of bulk writes.
    pub bulk_seconds: Histogram,
    /// Messages per batch.
    pub batch_messages: Histogram,
    /// High watermark minus the next durable offset, per partition.
    pub consumer_lag: IntGaugeVec,
    /// Now minus the source cluster time of the last applied event, in seconds.
    pub replication_lag_seconds: IntGauge,
    /// Records sent to the dead-letter topic, by stage (`decode`, `plan`, `apply`, `ddl`).
    pub dead_letters: IntCounterVec,
    /// Retries after transient failures.
    pub retries: IntCounter,
    /// DDL applied to the target, by kind.
    pub ddl_applied: IntCounterVec,
    /// Partitions this replica owns.
    pub assigned_partitions: IntGauge,
    /// Ownership checks after the process stood still, by outcome (`confirmed`, `refused`).
    pub ownership_checks: IntCounterVec,
    /// Writes a unique secondary index refused for now (retried until the value is free).
    pub unique_conflicts: IntCounter,
    pub unique_cycles_broken: IntCounter,
    /// Partition tasks that ended with an error and were started again.
    pub partition_restarts: IntCounter,
    /// Writes still unanswered when a revoke's drain deadline passed (abandoned).
    pub writes_abandoned: IntCounter,
    /// Times a partition's fetching paused for a full queue or a spent budget.
    pub partition_pauses: IntCounter,
    /// The configured memory budget, in bytes.
    pub memory_budget_bytes: IntGauge,
    /// Bytes of records held now (queued, batched or being written), against the budget.
    pub buffered_bytes: IntGauge,
    /// Schema changes (indexes, collection options) the target refuses for now.
    pub schema_conflicts: IntGauge,
    /// Indexes on the target that the source never announced (reported, left as they are).
    pub target_only_indexes: IntGauge,
    /// The last whole second (source cluster time) every change of which, on every partition
    /// of every topic read, is on the target (all replicas).
    pub consistent_up_to: IntGauge,
    /// Now minus that time.
    pub consistency_lag_seconds: IntGauge,
    /// Partitions whose consistent point open dead letters hold (of this group).
    pub held_by_dead_letters: IntGauge,
}

impl Metrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            consumed: IntCounterVec::new(
                Opts::new("sink_writer_messages_consumed_total", "Messages taken from Kafka."),
                &["topic"],
            )?,
            applied: IntCounterVec::new(
                Opts::new("sink_writer_documents_applied_total", "Documents written to the target."),
                &["kind"],
            )?,
            bulk_seconds: Histogram::with_opts(
                HistogramOpts::new("sink_writer_bulk_write_duration_seconds", "Time of one round of bulk writes.")
                    .buckets(exponential_buckets(0.001, 2.0, 15)?),
            )?,
            batch_messages: Histogram::with_opts(
                HistogramOpts::new("sink_writer_batch_messages", "Messages per batch.")
                    .buckets(exponential_buckets(1.0, 4.0, 10)?),
            )?,
            consumer_lag: IntGaugeVec::new(
                Opts::new("sink_writer_consumer_lag", "High watermark minus the next durable offset."),
                &["topic", "partition"],
            )?,
            replication_lag_seconds: IntGauge::new(
                "sink_writer_replication_lag_seconds",
                "Now minus the source cluster time of the last applied event.",
            )?,
            dead_letters: IntCounterVec::new(
                Opts::new("sink_writer_dead_letters_total", "Records sent to the dead-letter topic."),
                &["stage"],
            )?,
            retries: IntCounter::new("sink_writer_retries_total", "Retries after transient failures.")?,
            ddl_applied: IntCounterVec::new(
                Opts::new("sink_writer_ddl_applied_total", "DDL applied to the target."),
                &["kind"],
            )?,
            assigned_partitions: IntGauge::new("sink_writer_assigned_partitions", "Partitions this replica owns.")?,
            ownership_checks: IntCounterVec::new(
                Opts::new(
                    "sink_writer_ownership_checks_total",
                    "Partition ownership checks before writing after the process stood still, by outcome.",
                ),
                &["outcome"],
            )?,
            unique_conflicts: IntCounter::new(
                "sink_writer_unique_conflicts_total",
                "Writes a unique secondary index refused for now; retried until the value is free.",
            )?,
            unique_cycles_broken: IntCounter::new(
                "sink_writer_unique_cycles_broken_total",
                "Cycles of unique values among parked writes, resolved together in one transaction.",
            )?,
            partition_restarts: IntCounter::new(
                "sink_writer_partition_restarts_total",
                "Partition tasks that ended with an error and were started again from the durable offset.",
            )?,
            writes_abandoned: IntCounter::new(
                "sink_writer_writes_abandoned_total",
                "Partition tasks whose writes were still unanswered when a revoke's drain deadline passed.",
            )?,
            partition_pauses: IntCounter::new(
                "sink_writer_partition_pauses_total",
                "Times a partition's fetching paused because its queue was full or the memory budget spent \
                 (what was prefetched for it is fetched again on resume).",
            )?,
            memory_budget_bytes: IntGauge::new("sink_writer_memory_budget_bytes", "The configured memory budget.")?,
            buffered_bytes: IntGauge::new(
                "sink_writer_buffered_bytes",
                "Bytes of records held now (queued, batched or being written), against the memory budget.",
            )?,
            schema_conflicts: IntGauge::new(
                "sink_writer_schema_conflicts",
                "Schema changes (indexes, collection options) the target refuses for now; tried again when data changes.",
            )?,
            target_only_indexes: IntGauge::new(
                "sink_writer_target_only_indexes",
                "Indexes on the target the source never announced, found by the periodic index comparison (left as they are).",
            )?,
            consistent_up_to: IntGauge::new(
                "sink_writer_consistent_up_to_timestamp_seconds",
                "The last whole second of source cluster time every change of which (every partition of every topic \
                 read, all replicas) is on the target.",
            )?,
            consistency_lag_seconds: IntGauge::new(
                "sink_writer_consistency_lag_seconds",
                "Now minus the source cluster time up to which the target is consistent.",
            )?,
            held_by_dead_letters: IntGauge::new(
                "sink_writer_partitions_held_by_dead_letters",
                "Partitions whose consistent point open dead letters of this group hold.",
            )?,
        };
        registry.register(Box::new(metrics.consumed.clone()))?;
        registry.register(Box::new(metrics.applied.clone()))?;
        registry.register(Box::new(metrics.bulk_seconds.clone()))?;
        registry.register(Box::new(metrics.batch_messages.clone()))?;
        registry.register(Box::new(metrics.consumer_lag.clone()))?;
        registry.register(Box::new(metrics.replication_lag_seconds.clone()))?;
        registry.register(Box::new(metrics.dead_letters.clone()))?;
        registry.register(Box::new(metrics.retries.clone()))?;
        registry.register(Box::new(metrics.ddl_applied.clone()))?;
        registry.register(Box::new(metrics.assigned_partitions.clone()))?;
        registry.register(Box::new(metrics.ownership_checks.clone()))?;
        registry.register(Box::new(metrics.unique_conflicts.clone()))?;
        registry.register(Box::new(metrics.unique_cycles_broken.clone()))?;
        registry.register(Box::new(metrics.partition_restarts.clone()))?;
        registry.register(Box::new(metrics.writes_abandoned.clone()))?;
        registry.register(Box::new(metrics.partition_pauses.clone()))?;
        registry.register(Box::new(metrics.memory_budget_bytes.clone()))?;
        registry.register(Box::new(metrics.buffered_bytes.clone()))?;
        registry.register(Box::new(metrics.schema_conflicts.clone()))?;
        registry.register(Box::new(metrics.target_only_indexes.clone()))?;
        registry.register(Box::new(metrics.consistent_up_to.clone()))?;
        registry.register(Box::new(metrics.consistency_lag_seconds.clone()))?;
        registry.register(Box::new(metrics.held_by_dead_letters.clone()))?;
        Ok(metrics)
    }
}
