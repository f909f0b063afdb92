//! cdc-source configuration: defaults → `--config` TOML file → `CDC_SOURCE__SECTION__KEY`.

use serde::{Deserialize, Serialize};
use service_kit::app::ServiceConfig;
use service_kit::config::Validate;
use service_kit::connect::{KafkaConnection, MongoConnection};
use service_kit::http::HttpConfig;
use service_kit::telemetry::LogConfig;

/// Environment variables override the file as `CDC_SOURCE__<SECTION>__<KEY>`.
pub const ENV_PREFIX: &str = "CDC_SOURCE";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Probe and metrics endpoint.
    pub http: HttpConfig,
    pub log: LogConfig,
    /// The source deployment whose changes are captured.
    pub mongo: MongoConnection,
    /// The Kafka cluster the changes are produced to.
    pub kafka: KafkaConnection,
    pub capture: CaptureConfig,
    pub snapshot: SnapshotConfig,
    pub topics: TopicConfig,
    pub delivery: DeliveryConfig,
    /// Active and standby instances of one capture.
    pub election: ElectionConfig,
    /// Per-namespace rules applied before anything is written to Kafka: fields excluded,
    /// renamed, masked or hashed, documents filtered (docs/configuration.md, "Transforms").
    pub transforms: transform::TransformConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: HttpConfig::on_port(8081),
            log: LogConfig::default(),
            mongo: MongoConnection::default(),
            kafka: KafkaConnection::default(),
            capture: CaptureConfig::default(),
            snapshot: SnapshotConfig::default(),
            topics: TopicConfig::default(),
            delivery: DeliveryConfig::default(),
            election: ElectionConfig::default(),
            transforms: transform::TransformConfig::default(),
        }
    }
}

/// What is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every database but `admin`, `config` and `local`.
    Deployment,
    /// One database: `capture.database`.
    Database,
    /// A list of `db.collection`: `capture.collections`.
    Collections,
}

pub use service_kit::connect::Compat;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Logical name of this source: `source.name` in every event, the checkpoint's key, and
    /// part of the Kafka transactional id. Two running instances must not share it.
    pub name: String,
    /// `deployment`, `database` or `collections`.
    pub scope: Scope,
    /// The database watched when `scope = "database"`.
    pub database: String,
    /// The `db.collection` names watched when `scope = "collections"` (comma-separated from the
    /// environment).
    #[serde(deserialize_with = "service_kit::config::deserialize_string_list")]
    pub collections: Vec<String>,
    /// Only namespaces (`db.collection`) matching this regular expression are captured.
    pub include: String,
    /// Namespaces matching this regular expression are not captured (applied after `include`).
    pub exclude: String,
    /// Ask for pre-images (`fullDocumentBeforeChange: whenAvailable`) and put them in `before`.
    /// Collections need `changeStreamPreAndPostImages` enabled; not on DocumentDB.
    pub pre_images: bool,
    /// `mongodb` or `documentdb`.
    pub compat: Compat,
    /// Debezium (`debezium`, default) or Flink (`flink`) shape of `before`/`after`.
    pub mode: envelope::Mode,
    /// Write a tombstone (same key, null value) after each delete, for log compaction.
    pub tombstones: bool,
    /// Change stream batch size (documents per getMore).
    pub batch_size: u32,
    /// How long the server waits for new changes before answering an empty batch, in ms.
    pub max_await_ms: u64,
    /// What to do when the stored resume point is no longer in the source's history:
    /// `fail` (stay up but not ready, with a clear error and metric) or `resnapshot`.
    pub on_history_lost: HistoryLostPolicy,
    /// How long the source keeps change history, in hours, when it cannot be read: Amazon
    /// DocumentDB's `change_stream_log_retention_duration` (default 3 h there). 0 = read the
    /// oplog window (MongoDB), or assume DocumentDB's default of 3 h.
    pub history_retention_hours: u32,
    /// How often the indexes of every captured collection are listed and compared with the last
    /// listing, in ms, where the change stream does not report index changes (Amazon DocumentDB,
    /// MongoDB before 6.0): new indexes go out as `createIndexes`, dropped ones as
    /// `dropIndexes`. 0 = never (indexes are then copied by the snapshot only).
    pub schema_check_interval_ms: u64,
    /// Where a capture without a checkpoint starts, without a snapshot: changes after this source
    /// cluster time, `"<seconds>:<increment>"` (a failback's reverse capture starts after the new
    /// primary's promotion, docs/operations.md section 15). Needs `snapshot.mode = "never"`;
    /// ignored once a checkpoint exists. Empty: not set.
    pub start_after_cluster_time: String,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            name: "mongo".to_string(),
            scope: Scope::Deployment,
            database: String::new(),
            collections: Vec::new(),
            include: String::new(),
            exclude: String::new(),
            pre_images: false,
            compat: Compat::Auto,
            mode: envelope::Mode::Debezium,
            tombstones: true,
            batch_size: 1000,
            max_await_ms: 500,
            on_history_lost: HistoryLostPolicy::Fail,
            history_retention_hours: 0,
            schema_check_interval_ms: 60_000,
            start_after_cluster_time: String::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryLostPolicy {
    Fail,
    Resnapshot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Copy existing documents when no checkpoint exists, then stream.
    Initial,
    /// Never copy: stream from now (or from the checkpoint).
    Never,
    /// Like `initial`, and also when the resume point has been lost.
    WhenNeeded,
    /// Copy when no checkpoint exists, then stop (no streaming).
    InitialOnly,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// `initial`, `never`, `when_needed` or `initial_only`.
    pub mode: SnapshotMode,
    /// Collections copied at the same time.
    pub max_parallel_collections: usize,
    /// Readers of one large collection at the same time, each copying an `_id` range (split
    /// points sampled with `$sample`). 1 = one reader per collection. DocumentDB, which has no
    /// `min()`/`max()` cursor bounds, always copies a collection with one reader.
    pub parallel_ranges: usize,
    /// A collection is split into ranges of at least this many documents (by its estimated
    /// count): one of fewer than twice this is copied by one reader.
    pub min_range_documents: u64,
    /// Documents per read batch, in `_id` order.
    pub batch_size: u32,
    /// When a copied collection's indexes are sent, relative to its documents: `after_copy`
    /// (the target builds them once over all documents) or `before_copy` (it maintains them
    /// while the documents arrive). Unique indexes always go before the documents.
    pub indexes: IndexTiming,
}

/// When the snapshot sends a collection's indexes that are not unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexTiming {
    BeforeCopy,
    AfterCopy,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            mode: SnapshotMode::Initial,
            max_parallel_collections: 2,
            parallel_ranges: 4,
            min_range_documents: 100_000,
            batch_size: 2000,
            indexes: IndexTiming::AfterCopy,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicConfig {
    /// Topic prefix: events of `db.coll` go to `<prefix>.<db>.<coll>` (Debezium's convention).
    pub prefix: String,
    /// When set, every event goes to this one topic instead.
    pub single_topic: String,
    /// Partitions of topics this service creates.
    pub partitions: i32,
    /// Replication factor of topics this service creates; -1 takes the broker's default.
    pub replication_factor: i32,
    /// Compacted topic holding the checkpoint (resume token, snapshot progress), keyed by
    /// `capture.name`. Empty (default): `__cdc_source.<capture.name>.checkpoint`, one per
    /// source, so another source's open transaction never hides this one's latest checkpoint
    /// from a `read_committed` reader.
    pub checkpoint_topic: String,
    /// Topic of re-send requests (`sink-writer verify --repair`, `dead-letters retry`) and the
    /// replies. Empty (default): `__cdc_source.<capture.name>.requests`.
    pub request_topic: String,
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            prefix: "cdc".to_string(),
            single_topic: String::new(),
            partitions: 4,
            replication_factor: -1,
            checkpoint_topic: String::new(),
            request_topic: String::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// Events and the checkpoint in one Kafka transaction: a crash neither loses nor
    /// duplicates (for consumers reading committed data).
    ExactlyOnce,
    /// Idempotent producer; the checkpoint moves after every earlier event is acknowledged. A
    /// crash may repeat events since the last checkpoint, never lose one.
    AtLeastOnce,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointStore {
    /// The compacted `topics.checkpoint_topic` (stateless pods).
    Kafka,
    /// A local file, `delivery.checkpoint_file` (development).
    File,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// `exactly_once` (Kafka transactions) or `at_least_once`.
    pub guarantee: Guarantee,
    /// `kafka` or `file`.
    pub checkpoint_store: CheckpointStore,
    /// Path of the checkpoint when `checkpoint_store = "file"`.
    pub checkpoint_file: String,
    /// Most events in one batch (one transaction in exactly-once mode).
    pub batch_max_events: usize,
    /// Most bytes of record values in one batch.
    pub batch_max_bytes: usize,
    /// How long a batch that starts on an idle queue waits to fill before it is sent, in ms
    /// (events that queued while the previous batch was made durable go at once).
    pub batch_max_wait_ms: u64,
    /// How often an idle stream's position is checkpointed, in ms.
    pub idle_checkpoint_interval_ms: u64,
    /// When set, a heartbeat record (`{"ts_ms", "resumeToken"}`, key `{"serverName"}`) goes to
    /// this topic with every idle checkpoint, so consumers can tell a quiet source from a dead one.
    pub heartbeat_topic: String,
    /// Events waiting between capture and the producer (bounded: capture pauses when full).
    pub queue_capacity: usize,
    /// Memory the process is sized to stay within, whatever the document sizes. Fixed costs
    /// first (`FIXED_BYTES`: the process at rest and MongoDB reads, 80 MiB); then a twelfth (at
    /// least the largest record and 1 MiB) for the producer's own buffer (librdkafka's
    /// `queue.buffering.max.kbytes`, unless `kafka.options` sets it), which librdkafka holds
    /// three times over (the record, its batch, the compressed batch in flight; measured); the
    /// rest, at most a quarter, for records queued between capture and the producer. At least
    /// 4 × `max_message_bytes`. The default fits the chart's 256 MiB container limit.
    pub memory_budget_bytes: usize,
    /// Compression of produced batches: `lz4`, `zstd`, `snappy`, `gzip` or `none`.
    pub compression: String,
    /// The codec's level (librdkafka `compression.level`): -1 = the codec's default; gzip 0–9,
    /// lz4 0–12, zstd 1–12 (as librdkafka takes it).
    pub compression_level: i32,
    /// Largest record the producer sends, in bytes (the broker's `message.max.bytes` must allow it).
    pub max_message_bytes: usize,
    /// Longest pause between retries after a transient failure, in ms.
    pub max_backoff_ms: u64,
    /// How long a stop waits for the in-flight batch to be committed, in ms.
    pub shutdown_timeout_ms: u64,
    /// How often a watermark (the source cluster time up to which every captured change is in
    /// Kafka) is written to every partition of every topic this source writes, in ms; in the
    /// same transaction as the data in exactly-once mode. 0 = no watermarks.
    pub watermark_interval_ms: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            guarantee: Guarantee::ExactlyOnce,
            checkpoint_store: CheckpointStore::Kafka,
            checkpoint_file: "cdc-source.checkpoint.json".to_string(),
            batch_max_events: 10_000,
            batch_max_bytes: 16 * 1024 * 1024,
            batch_max_wait_ms: 10,
            idle_checkpoint_interval_ms: 1000,
            heartbeat_topic: String::new(),
            queue_capacity: 20_000,
            memory_budget_bytes: 224 * 1024 * 1024,
            // Half lz4's bytes across the region boundary for ~5% more CPU (docs/benchmarks.md,
            // "Bytes across the region boundary"); every Kafka client since 2.1 reads it.
            compression: "zstd".to_string(),
            compression_level: -1,
            max_message_bytes: 16 * 1024 * 1024,
            max_backoff_ms: 30_000,
            shutdown_timeout_ms: 20_000,
            watermark_interval_ms: 1000,
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        self.mongo.validate("mongo", &mut problems);
        self.kafka.validate("kafka", &mut problems);
        let capture = &self.capture;
        if capture.name.is_empty() || !capture.name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            problems.push("capture.name must be non-empty and use only letters, digits, '.', '_' and '-'".into());
        }
        match capture.scope {
            Scope::Database if capture.database.is_empty() => {
                problems.push("capture.database must be set when capture.scope = \"database\"".into())
            }
            Scope::Collections if capture.collections.is_empty() => problems
                .push("capture.collections must list db.collection names when capture.scope = \"collections\"".into()),
            _ => {}
        }
        for name in &capture.collections {
            if !name.contains('.') || name.starts_with('.') || name.ends_with('.') {
                problems.push(format!("capture.collections entry '{name}' is not of the form db.collection"));
            }
        }
        for (key, pattern) in [("capture.include", &capture.include), ("capture.exclude", &capture.exclude)] {
            if let Err(e) = regex::Regex::new(pattern) {
                problems.push(format!("{key} is not a valid regular expression: {e}"));
            }
        }
        if capture.compat == Compat::Documentdb && capture.pre_images {
            problems.push(
                "capture.pre_images is not available on Amazon DocumentDB (capture.compat = \"documentdb\")".into(),
            );
        }
        problems.extend(crate::start::problems(
            &capture.start_after_cluster_time,
            self.snapshot.mode == SnapshotMode::Never,
        ));
        if capture.batch_size == 0 || self.snapshot.batch_size == 0 {
            problems.push("capture.batch_size and snapshot.batch_size must be at least 1".into());
        }
        if self.snapshot.max_parallel_collections == 0 || self.snapshot.parallel_ranges == 0 {
            problems.push("snapshot.max_parallel_collections and snapshot.parallel_ranges must be at least 1".into());
        }
        if self.snapshot.min_range_documents == 0 {
            problems.push("snapshot.min_range_documents must be at least 1".into());
        }
        if self.topics.partitions < 1 {
            problems.push("topics.partitions must be at least 1".into());
        }
        if self.topics.prefix.is_empty() && self.topics.single_topic.is_empty() {
            problems.push("one of topics.prefix or topics.single_topic must be set".into());
        }
        let delivery = &self.delivery;
        if delivery.guarantee == Guarantee::ExactlyOnce && delivery.checkpoint_store != CheckpointStore::Kafka {
            problems.push(
                "delivery.guarantee = \"exactly_once\" needs delivery.checkpoint_store = \"kafka\" (the checkpoint \
                 is written in the same transaction as the events)"
                    .into(),
            );
        }
        if delivery.batch_max_events == 0 || delivery.queue_capacity == 0 || delivery.batch_max_bytes == 0 {
            problems.push("delivery.batch_max_events, batch_max_bytes and queue_capacity must be at least 1".into());
        }
        if delivery.memory_budget_bytes / 4 < delivery.max_message_bytes {
            problems.push(format!(
                "delivery.memory_budget_bytes ({}) must be at least 4 x delivery.max_message_bytes ({}): the producer's \
                 buffer holds at least the largest record, and librdkafka holds it several times over",
                delivery.memory_budget_bytes, delivery.max_message_bytes
            ));
        }
        if !["lz4", "zstd", "snappy", "gzip", "none"].contains(&delivery.compression.as_str()) {
            problems.push(format!(
                "delivery.compression '{}' is not one of lz4, zstd, snappy, gzip, none",
                delivery.compression
            ));
        }
        let levels = match delivery.compression.as_str() {
            "gzip" => -1..=9,
            "lz4" | "zstd" => -1..=12,
            _ => -1..=-1,
        };
        if !levels.contains(&delivery.compression_level) {
            problems.push(format!(
                "delivery.compression_level {} is not a level of {} ({}..={}; -1 = its default)",
                delivery.compression_level,
                delivery.compression,
                levels.start(),
                levels.end()
            ));
        }
        if self.election.enabled && delivery.guarantee != Guarantee::ExactlyOnce {
            problems.push(
                "election.enabled needs delivery.guarantee = \"exactly_once\": only the transactional id fences \
                 an active instance that lost the election"
                    .into(),
            );
        }
        if self.election.session_timeout_ms < 1000 {
            problems.push("election.session_timeout_ms must be at least 1000".into());
        }
        if let Err(found) = transform::Rules::load(&self.transforms) {
            problems.extend(found);
        }
        problems
    }
}

impl DeliveryConfig {
    /// What the process holds whatever the budget: ~32 MiB at rest (runtime, clients, pools),
    /// and MongoDB reads: a change-stream reply of up to 16 MiB, the documents split out of it,
    /// the events read ahead of the loop (`capture/prefetch.rs`) and the events being converted
    /// (four times 16 MiB, and a reply being received while the events before wait: five).
    pub const FIXED_BYTES: usize = (32 + 5 * 16) * 1024 * 1024;

    /// Bytes of records the queue to the producer may hold, with the batch being delivered:
    /// what the fixed costs and the producer (its buffer held three times over) leave, at
    /// most a quarter of the budget and at least a sixteenth.
    pub fn queue_bytes(&self) -> usize {
        let budget = self.memory_budget_bytes;
        let rest = budget.saturating_sub(Self::FIXED_BYTES + 3 * self.producer_buffer_kbytes() * 1024);
        rest.clamp(budget / 16, budget / 4)
    }

    /// The producer's buffer (librdkafka's `queue.buffering.max.kbytes`), in KiB.
    pub fn producer_buffer_kbytes(&self) -> usize {
        (self.memory_budget_bytes / 12).max(self.max_message_bytes + 1024 * 1024) / 1024
    }
}

impl Config {
    /// The election's consumer group (see `election.group_id`).
    pub fn election_group(&self) -> String {
        if self.election.group_id.is_empty() {
            format!("cdc-source-{}", self.capture.name)
        } else {
            self.election.group_id.clone()
        }
    }

    /// The checkpoint topic in use (see `topics.checkpoint_topic`).
    pub fn checkpoint_topic(&self) -> String {
        if self.topics.checkpoint_topic.is_empty() {
            format!("__cdc_source.{}.checkpoint", self.capture.name)
        } else {
            self.topics.checkpoint_topic.clone()
        }
    }
}

impl ServiceConfig for Config {
    fn log(&self) -> &LogConfig {
        &self.log
    }
    fn http(&self) -> &HttpConfig {
        &self.http
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::default().validate(), Vec::<String>::new());
    }

    #[test]
    fn cross_field_rules_are_all_reported() {
        let mut config = Config::default();
        config.capture.scope = Scope::Database;
        config.capture.include = "(".into();
        config.capture.compat = Compat::Documentdb;
        config.capture.pre_images = true;
        config.delivery.checkpoint_store = CheckpointStore::File;
        config.delivery.compression = "brotli".into();
        config.delivery.memory_budget_bytes = 32 * 1024 * 1024;
        let problems = config.validate();
        assert_eq!(problems.len(), 6, "{problems:#?}");
    }

    #[test]
    fn zstd_and_each_codecs_levels_are_accepted_and_others_refused() {
        let problems = |compression: &str, level: i32| {
            let mut config = Config::default();
            config.delivery.compression = compression.into();
            config.delivery.compression_level = level;
            config.validate().into_iter().filter(|p| p.contains("compression")).count()
        };
        assert_eq!(problems("zstd", -1), 0);
        assert_eq!(problems("zstd", 3), 0);
        assert_eq!(problems("lz4", 12), 0);
        assert_eq!(problems("gzip", 12), 1, "gzip stops at 9");
        assert_eq!(problems("snappy", 1), 1, "snappy has no levels");
        assert_eq!(problems("zstd", 13), 1);
    }

    #[test]
    fn an_election_needs_transactions_to_fence_the_former_active_instance() {
        let mut config = Config::default();
        config.election.enabled = true;
        assert_eq!(config.validate(), Vec::<String>::new());
        assert_eq!(config.election_group(), "cdc-source-mongo");
        config.delivery.guarantee = Guarantee::AtLeastOnce;
        config.election.session_timeout_ms = 10;
        let problems = config.validate();
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].contains("election.enabled needs"), "{problems:#?}");
    }

    #[test]
    fn the_queue_gets_what_fixed_costs_and_the_producer_leave() {
        let mut delivery = DeliveryConfig::default();
        let mib = |n: usize| n * 1024 * 1024;
        for budget in [64, 160, 224, 512, 2048] {
            delivery.memory_budget_bytes = mib(budget);
            let producer = 3 * delivery.producer_buffer_kbytes() * 1024;
            let queue = delivery.queue_bytes();
            assert!(queue >= mib(budget) / 16 && queue <= mib(budget) / 4, "{budget} MiB: queue {queue}");
            if budget >= 224 {
                let total = DeliveryConfig::FIXED_BYTES + producer + queue;
                assert!(total <= mib(budget), "{budget} MiB: everything fits ({total})");
            }
        }
    }
}

/// Several instances of one capture, one active and the others standing by: the active one is
/// the member of a Kafka consumer group on the checkpoint topic that holds its partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElectionConfig {
    /// Take part in the election (needs `delivery.guarantee = "exactly_once"`: the transactional
    /// id fences a former active instance). Off: this instance captures alone, always.
    pub enabled: bool,
    /// The consumer group of the election. Empty (default): `cdc-source-<capture.name>`.
    pub group_id: String,
    /// How long the group waits for a silent active instance (dead, frozen, cut off) before a
    /// standby takes over, in ms; within the broker's `group.min/max.session.timeout.ms`.
    pub session_timeout_ms: u64,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        Self { enabled: false, group_id: String::new(), session_timeout_ms: 10_000 }
    }
}
