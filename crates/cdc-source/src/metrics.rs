//! Every metric cdc-source exports, in one place. Labels are bounded: op codes, namespaces
//! (one per captured collection), error kinds; never a document id.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct Metrics {
    /// Events made durable in Kafka, by op (`c`, `u`, `d`, `r`, `ddl`, `tombstone`) and namespace.
    pub events: IntCounterVec,
    /// Bytes of keys and values made durable in Kafka.
    pub bytes: IntCounter,
    /// Time to make one batch durable (transaction commit, or every acknowledgement).
    pub batch_seconds: Histogram,
    /// Records per batch.
    pub batch_records: Histogram,
    /// Batches that failed to become durable (the pipeline restarts from the checkpoint).
    pub delivery_errors: IntCounter,
    /// Now minus the cluster time of the last event made durable, in seconds.
    pub seconds_behind_source: IntGauge,
    /// Unix time of the last stored checkpoint (age = now − this).
    pub checkpoint_timestamp: IntGauge,
    /// Seconds since the last stored checkpoint, refreshed every second.
    pub checkpoint_age: IntGauge,
    /// Snapshot: documents copied and estimated totals, per namespace; estimated seconds left.
    pub snapshot_copied: IntGaugeVec,
    pub snapshot_estimated: IntGaugeVec,
    pub snapshot_remaining_seconds: IntGauge,
    /// Pipeline restarts after transient errors and change stream reopenings, by reason.
    pub restarts: IntCounterVec,
    /// 1 while the resume point is lost and capture.on_history_lost = "fail".
    pub history_lost: IntGauge,
    /// How far back the source keeps history (oplog window, or configured retention), seconds.
    pub history_window: IntGauge,
    /// `delivery.memory_budget_bytes`: what all buffers together are sized to stay within.
    pub memory_budget: IntGauge,
    /// Bytes of records queued between capture and delivery or in the batch being delivered.
    pub queued_bytes: IntGauge,
    /// Cluster time (seconds) of the last watermark written: every change captured up to it is
    /// in Kafka.
    pub watermark_timestamp: IntGauge,
    /// 1 while this instance captures (alone, or holding the election), 0 while it stands by.
    pub active: IntGauge,
    /// Times this instance won the election and took over capture.
    pub promotions: IntCounter,
    /// Documents of re-send requests, by outcome: `resent` (read and sent again), `deleted` (the
    /// source no longer has them), `superseded` (their own change came through the stream first).
    pub resent: IntCounterVec,
}

impl Metrics {
    /// Standing by: this instance stores no checkpoint, so the position gauges of a former
    /// active term must not age on (alerts on them would fire for the standby).
    pub fn stand_by(&self) {
        self.active.set(0);
        self.checkpoint_timestamp.set(0);
        self.checkpoint_age.set(0);
        self.seconds_behind_source.set(0);
    }

    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            events: IntCounterVec::new(
                Opts::new("cdc_source_events_total", "Events made durable in Kafka."),
                &["op", "namespace"],
            )?,
            bytes: IntCounter::new("cdc_source_produced_bytes_total", "Bytes of keys and values made durable.")?,
            batch_seconds: Histogram::with_opts(
                HistogramOpts::new("cdc_source_batch_duration_seconds", "Time to make one batch durable.")
                    .buckets(exponential_buckets(0.001, 2.0, 15)?),
            )?,
            batch_records: Histogram::with_opts(
                HistogramOpts::new("cdc_source_batch_records", "Records per batch.")
                    .buckets(exponential_buckets(1.0, 4.0, 10)?),
            )?,
            delivery_errors: IntCounter::new(
                "cdc_source_delivery_errors_total",
                "Batches that failed to become durable.",
            )?,
            seconds_behind_source: IntGauge::new(
                "cdc_source_seconds_behind_source",
                "Now minus the cluster time of the last durable event.",
            )?,
            checkpoint_timestamp: IntGauge::new(
                "cdc_source_checkpoint_timestamp_seconds",
                "Unix time of the last stored checkpoint.",
            )?,
            checkpoint_age: IntGauge::new(
                "cdc_source_checkpoint_age_seconds",
                "Seconds since the last stored checkpoint.",
            )?,
            snapshot_copied: IntGaugeVec::new(
                Opts::new("cdc_source_snapshot_documents_copied", "Documents copied by the snapshot."),
                &["namespace"],
            )?,
            snapshot_estimated: IntGaugeVec::new(
                Opts::new("cdc_source_snapshot_documents_estimated", "Estimated documents to copy."),
                &["namespace"],
            )?,
            snapshot_remaining_seconds: IntGauge::new(
                "cdc_source_snapshot_remaining_seconds",
                "Estimated seconds until the snapshot completes.",
            )?,
            restarts: IntCounterVec::new(
                Opts::new("cdc_source_restarts_total", "Pipeline restarts and stream reopenings, by reason."),
                &["reason"],
            )?,
            history_lost: IntGauge::new("cdc_source_history_lost", "1 while the resume point is lost.")?,
            history_window: IntGauge::new(
                "cdc_source_history_window_seconds",
                "How far back the source keeps change history (oplog window or configured retention).",
            )?,
            memory_budget: IntGauge::new(
                "cdc_source_memory_budget_bytes",
                "The memory budget all buffers are sized within (delivery.memory_budget_bytes).",
            )?,
            queued_bytes: IntGauge::new(
                "cdc_source_queued_bytes",
                "Bytes of records queued for delivery or in the batch being delivered.",
            )?,
            watermark_timestamp: IntGauge::new(
                "cdc_source_watermark_timestamp_seconds",
                "Source cluster time (Unix seconds) of the last watermark: every change captured up to it is in Kafka.",
            )?,
            active: IntGauge::new(
                "cdc_source_active",
                "1 while this instance captures (alone or elected), 0 while it stands by.",
            )?,
            promotions: IntCounter::new(
                "cdc_source_promotions_total",
                "Times this instance won the election and took over capture.",
            )?,
            resent: IntCounterVec::new(
                Opts::new("cdc_source_resent_documents_total", "Documents of re-send requests, by outcome."),
                &["outcome"],
            )?,
        };
        registry.register(Box::new(metrics.events.clone()))?;
        registry.register(Box::new(metrics.bytes.clone()))?;
        registry.register(Box::new(metrics.batch_seconds.clone()))?;
        registry.register(Box::new(metrics.batch_records.clone()))?;
        registry.register(Box::new(metrics.delivery_errors.clone()))?;
        registry.register(Box::new(metrics.seconds_behind_source.clone()))?;
        registry.register(Box::new(metrics.checkpoint_timestamp.clone()))?;
        registry.register(Box::new(metrics.checkpoint_age.clone()))?;
        registry.register(Box::new(metrics.snapshot_copied.clone()))?;
        registry.register(Box::new(metrics.snapshot_estimated.clone()))?;
        registry.register(Box::new(metrics.snapshot_remaining_seconds.clone()))?;
        registry.register(Box::new(metrics.restarts.clone()))?;
        registry.register(Box::new(metrics.history_lost.clone()))?;
        registry.register(Box::new(metrics.history_window.clone()))?;
        registry.register(Box::new(metrics.memory_budget.clone()))?;
        registry.register(Box::new(metrics.queued_bytes.clone()))?;
        registry.register(Box::new(metrics.watermark_timestamp.clone()))?;
        registry.register(Box::new(metrics.active.clone()))?;
        registry.register(Box::new(metrics.promotions.clone()))?;
        registry.register(Box::new(metrics.resent.clone()))?;
        Ok(metrics)
    }
}
