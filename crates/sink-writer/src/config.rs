//! sink-writer configuration: defaults → `--config` TOML file → `SINK_WRITER__SECTION__KEY`.

use serde::{Deserialize, Serialize};
use service_kit::app::ServiceConfig;
use service_kit::config::Validate;
use service_kit::connect::{KafkaConnection, MongoConnection};
use service_kit::http::HttpConfig;
use service_kit::telemetry::LogConfig;

/// Environment variables override the file as `SINK_WRITER__<SECTION>__<KEY>`.
pub const ENV_PREFIX: &str = "SINK_WRITER";

/// The smallest memory budget that still lets a large record through with the client's prefetch.
const MIN_MEMORY_BUDGET: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Probe and metrics endpoint.
    pub http: HttpConfig,
    pub log: LogConfig,
    /// The target deployment the changes are applied to.
    pub mongo: MongoConnection,
    /// The Kafka cluster the changes are consumed from.
    pub kafka: KafkaConnection,
    pub consume: ConsumeConfig,
    pub apply: ApplyConfig,
    /// `sink-writer verify`: the source to compare with, and how hard to read it.
    pub verify: VerifyConfig,
    /// `sink-writer status`: what "ready to cut over" requires.
    pub status: StatusConfig,
    /// `verify --repair` and `dead-letters retry`: asking cdc-source to send documents again.
    pub repair: RepairConfig,
    /// `sink-writer failover record` and `sink-writer failback …`: going back after a failover.
    pub failback: FailbackConfig,
    /// The rules cdc-source applies (`[transforms]`, the same section or the same
    /// `rules_file`, and the same hash key): `verify` compares the source passed through them
    /// with the target. Not used by the apply path.
    pub transforms: transform::TransformConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: HttpConfig::on_port(8082),
            log: LogConfig::default(),
            mongo: MongoConnection::default(),
            kafka: KafkaConnection::default(),
            consume: ConsumeConfig::default(),
            apply: ApplyConfig::default(),
            verify: VerifyConfig::default(),
            status: StatusConfig::default(),
            repair: RepairConfig::default(),
            failback: FailbackConfig::default(),
            transforms: transform::TransformConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumeConfig {
    /// Topics to consume. An entry starting with `^` is a regular expression
    /// (e.g. `^cdc\..*`), as librdkafka subscribes. From the environment: comma-separated.
    #[serde(deserialize_with = "service_kit::config::deserialize_string_list")]
    pub topics: Vec<String>,
    /// Consumer group; replicas sharing it split the partitions.
    pub group_id: String,
    /// Topic receiving records that cannot be applied, with headers saying why. Never read by
    /// this service, even when `topics` matches it.
    pub dead_letter_topic: String,
    /// How often durable offsets are committed, in ms.
    pub commit_interval_ms: u64,
    /// How often the topic list is checked for new topics matching a `^regex` entry, in ms.
    pub topic_refresh_interval_ms: u64,
    /// The largest record the topics may hold, in bytes: cdc-source's `delivery.max_message_bytes`
    /// (the `max.message.bytes` it gives the topics it creates). Every record up to it is fetched
    /// and accounted in the memory budget; `doctor` refuses topics that allow larger ones.
    pub max_record_bytes: usize,
}

impl Default for ConsumeConfig {
    fn default() -> Self {
        Self {
            topics: vec!["^cdc\\..*".to_string()],
            group_id: "sink-writer".to_string(),
            dead_letter_topic: "sink-writer.dlq".to_string(),
            commit_interval_ms: 1000,
            topic_refresh_interval_ms: 5000,
            max_record_bytes: 16 * 1024 * 1024,
        }
    }
}

/// One namespace mapping rule: the first rule whose `source` matches `db.collection` wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingRule {
    /// Regular expression over the source `db.collection` (anchored).
    pub source: String,
    /// Target `db.collection`; `$1`, `${1}`… are the rule's capture groups (`${1}_x` when letters follow).
    pub target: String,
}

/// How batches reach the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyMode {
    /// `exactly_once` where the target has transactions (a replica set, a sharded cluster, Amazon
    /// DocumentDB), `idempotent` where it has not (a standalone server).
    #[default]
    Auto,
    /// Each batch is one target transaction that also records the partition's offset and checks
    /// its ownership epoch: a new owner resumes exactly where the target is, nothing is replayed
    /// and no document ever moves backward; a former owner's late transaction fails. One batch
    /// of a partition is written at a time.
    ExactlyOnce,
    /// Idempotent writes, offsets in Kafka only: after a crash or rebalance the new owner replays
    /// from the last committed offset, so a document may show older versions for a moment.
    Idempotent,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApplyConfig {
    /// `auto` (default), `exactly_once` or `idempotent`: see docs/configuration.md.
    pub mode: ApplyMode,
    /// Most bytes of BSON one target transaction writes (`exactly_once`): a batch is cut before
    /// the record that would pass it (a single larger record goes alone). Amazon DocumentDB
    /// refuses transactions over 32 MB of change log.
    pub transaction_max_bytes: usize,
    /// Most messages in one batch (one partition).
    pub batch_max_docs: usize,
    /// Most bytes of message values in one batch.
    pub batch_max_bytes: usize,
    /// How long a batch waits to fill, in ms.
    pub batch_max_wait_ms: u64,
    /// Bulk writes in flight per partition (batches over disjoint documents overlap), in the
    /// `idempotent` mode.
    pub max_in_flight: usize,
    /// Write concern `w`: `majority` (default), or a number.
    pub write_concern: String,
    /// Journal acknowledgement (`j`).
    pub journal: bool,
    /// Namespace rules, tried in order; no match keeps the source name.
    pub mapping: Vec<MappingRule>,
    /// Database of the sink's own bookkeeping (applied DDL).
    pub metadata_database: String,
    /// Longest pause between retries of a failing write, in ms.
    pub max_backoff_ms: u64,
    /// On a revoke or stop no new write starts; this is how long the writes already sent may
    /// take to be answered before they are abandoned, in ms. Keep it above the target's
    /// one-way network delay.
    pub drain_timeout_ms: u64,
    /// How long a write refused by a unique secondary index (duplicate key) is retried before
    /// it goes to the dead-letter topic, in ms: the conflict resolves once the change that
    /// freed the value (often on another partition) is applied.
    pub conflict_retry_timeout_ms: u64,
    /// Bytes all buffered and in-flight records may take together (the Kafka client's prefetch
    /// included), whatever the number of partitions or size of documents. Keep it well below
    /// the container's memory limit.
    pub memory_budget_bytes: usize,
    /// Who removes documents that a TTL index covers: `source_deletes` (default: the target's
    /// TTL indexes are created never to expire, the source's deletes remove documents; set the
    /// real value at a cutover, see `<metadata_database>.ttl`) or `target_expires` (the source's
    /// `expireAfterSeconds`, on the target's own clock).
    pub ttl: TtlPolicy,
    /// How often the target's indexes are compared with those the source announced, in ms: an
    /// index on the target only is reported (never dropped), a TTL or `hidden` that differs is
    /// set as announced. 0 = never.
    pub index_check_interval_ms: u64,
    /// `auto` (DocumentDB endpoints recognised by host name), `mongodb` or `documentdb`
    /// (no retryable writes).
    pub compat: service_kit::connect::Compat,
}

impl Default for ApplyConfig {
    fn default() -> Self {
        Self {
            mode: ApplyMode::Auto,
            transaction_max_bytes: 16 * 1024 * 1024,
            batch_max_docs: 2000,
            batch_max_bytes: 8 * 1024 * 1024,
            batch_max_wait_ms: 20,
            max_in_flight: 4,
            write_concern: "majority".to_string(),
            journal: true,
            mapping: Vec::new(),
            metadata_database: "__sink_writer".to_string(),
            max_backoff_ms: 10_000,
            drain_timeout_ms: 30_000,
            conflict_retry_timeout_ms: 300_000,
            memory_budget_bytes: 320 * 1024 * 1024,
            ttl: TtlPolicy::SourceDeletes,
            index_check_interval_ms: 60_000,
            compat: service_kit::connect::Compat::Auto,
        }
    }
}

/// What `sink-writer verify` compares, and how hard it may read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifyConfig {
    /// The source deployment to compare the target with (a read-only user is enough). Empty:
    /// `verify` refuses to run. Credentials are redacted wherever it is printed.
    pub source_uri: service_kit::config::SecretUri,
    /// Only source namespaces (`db.collection`) matching this regular expression are compared;
    /// empty: every collection of every database but `admin`, `config`, `local`.
    pub include: String,
    /// Namespaces matching this are not compared.
    pub exclude: String,
    /// Most source documents read per second, so it can run against production (0: no limit).
    pub max_docs_per_second: u64,
    /// Ranges of `_id` compared at once.
    pub parallel: usize,
    /// How long a difference may wait for the consistency point to pass the moment it was seen
    /// (it may only be in flight) before it is reported, in ms.
    pub settle_timeout_ms: u64,
    /// Most `_id`s listed per kind of difference and namespace.
    pub max_listed: usize,
    /// Most differences per namespace kept to be checked again (memory stays bounded whatever
    /// the size); more are counted, and reported as unconfirmed (`not_rechecked`).
    pub max_rechecked: usize,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        Self {
            source_uri: service_kit::config::SecretUri::new(""),
            include: String::new(),
            exclude: String::new(),
            max_docs_per_second: 20_000,
            parallel: 4,
            settle_timeout_ms: 60_000,
            max_listed: 20,
            max_rechecked: 10_000,
        }
    }
}

/// What `sink-writer status` requires before it says "ready to cut over".
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusConfig {
    /// Most seconds between the consistency point and now (`--max-lag-seconds` overrides it).
    pub max_lag_seconds: u64,
    /// Oldest full `verify` (every namespace, not `--sample`, not `--namespace`) that counts,
    /// in seconds.
    pub verify_max_age_seconds: u64,
    /// `capture.name` of every cdc-source feeding these topics: their checkpoints must be fresh
    /// (cdc-source alive and making progress). From the environment: comma-separated. Empty:
    /// status cannot tell, and is never ready.
    #[serde(deserialize_with = "service_kit::config::deserialize_string_list")]
    pub capture_names: Vec<String>,
    /// The checkpoint topic, as cdc-source's `topics.checkpoint_topic`. Empty (default):
    /// `__cdc_source.<capture name>.checkpoint` for each name.
    pub checkpoint_topic: String,
    /// Oldest checkpoint that counts as fresh, in seconds (cdc-source writes one with every
    /// batch, and every `delivery.idle_checkpoint_interval_ms` when idle).
    pub checkpoint_max_age_seconds: u64,
}

impl Default for StatusConfig {
    fn default() -> Self {
        Self {
            max_lag_seconds: 10,
            verify_max_age_seconds: 24 * 3600,
            capture_names: Vec::new(),
            checkpoint_topic: String::new(),
            checkpoint_max_age_seconds: 60,
        }
    }
}

impl StatusConfig {
    /// Each capture name with the topic its checkpoint is in.
    pub fn checkpoints(&self) -> Vec<(String, String)> {
        self.capture_names
            .iter()
            .map(|name| {
                let topic = if self.checkpoint_topic.is_empty() {
                    format!("__cdc_source.{name}.checkpoint")
                } else {
                    self.checkpoint_topic.clone()
                };
                (name.clone(), topic)
            })
            .collect()
    }
}

/// How `verify --repair` and `dead-letters retry` ask cdc-source to send documents again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepairConfig {
    /// cdc-source's request topics (its `topics.request_topic`), one per capture feeding these
    /// topics; every request goes to each, and the capture of the namespace answers. From the
    /// environment: comma-separated. Empty (default): `__cdc_source.<name>.requests` for every
    /// name in `status.capture_names`.
    #[serde(deserialize_with = "service_kit::config::deserialize_string_list")]
    pub request_topics: Vec<String>,
    /// How long to wait for cdc-source's replies, in ms (it answers while streaming, one request
    /// at a time, each once the stream has passed the documents' read).
    pub reply_timeout_ms: u64,
    /// Most `_id`s in one request (more go in several).
    pub max_ids_per_request: usize,
}

impl Default for RepairConfig {
    fn default() -> Self {
        Self { request_topics: Vec::new(), reply_timeout_ms: 120_000, max_ids_per_request: 1000 }
    }
}

/// How a failback finds its failover and reads the two deployments (docs/operations.md, section
/// 15). The `failback` commands run with the reverse sink's settings: `mongo.uri` the old primary,
/// `verify.source_uri` the new one, `status.capture_names` the reverse capture.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailbackConfig {
    /// The metadata database of the sink that replicated into the new primary, on the new primary:
    /// where `sink-writer failover record` kept the failover. Empty: `apply.metadata_database`.
    pub failover_database: String,
    /// That sink's `consume.group_id`, which names its failover. Empty: the one failover recorded
    /// there that was not switched back yet.
    pub failover_group: String,
    /// At `reconcile`, the old primary must have taken no write in the compared namespaces for
    /// this long, in seconds: it is not taking writes any more. (`switch-back` refuses on any
    /// change of the new primary after the reverse consistency point.)
    pub quiet_seconds: u64,
    /// How long reading a deployment's changes up to the present may take, in ms (the read ends at
    /// a marker it writes into the metadata database).
    pub scan_timeout_ms: u64,
}

impl Default for FailbackConfig {
    fn default() -> Self {
        Self {
            failover_database: String::new(),
            failover_group: String::new(),
            quiet_seconds: 60,
            scan_timeout_ms: 120_000,
        }
    }
}

impl Config {
    /// Where the failover is recorded, on the new primary (`failback.failover_database`).
    pub fn failover_database(&self) -> &str {
        if self.failback.failover_database.is_empty() {
            &self.apply.metadata_database
        } else {
            &self.failback.failover_database
        }
    }

    /// The request topics in use (`repair.request_topics`).
    pub fn request_topics(&self) -> Vec<String> {
        if !self.repair.request_topics.is_empty() {
            return self.repair.request_topics.clone();
        }
        self.status.capture_names.iter().map(|name| format!("__cdc_source.{name}.requests")).collect()
    }
}

impl Validate for Config {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        self.mongo.validate("mongo", &mut problems);
        self.kafka.validate("kafka", &mut problems);
        if self.consume.topics.is_empty() {
            problems.push("consume.topics must name at least one topic or ^regex".into());
        }
        for topic in self.consume.topics.iter().filter(|t| t.starts_with('^')) {
            if let Err(e) = regex::Regex::new(topic) {
                problems.push(format!("consume.topics entry '{topic}' is not a valid regular expression: {e}"));
            }
        }
        if self.consume.group_id.is_empty() {
            problems.push("consume.group_id must be set".into());
        }
        if let Err(found) = transform::Rules::load(&self.transforms) {
            problems.extend(found);
        }
        if self.consume.dead_letter_topic.is_empty() {
            problems.push("consume.dead_letter_topic must be set: bad records go there instead of stalling".into());
        }
        let apply = &self.apply;
        if apply.batch_max_docs == 0 || apply.batch_max_bytes == 0 || apply.max_in_flight == 0 {
            problems.push("apply.batch_max_docs, batch_max_bytes and max_in_flight must be at least 1".into());
        }
        if apply.transaction_max_bytes < 1024 * 1024 {
            problems.push("apply.transaction_max_bytes must be at least 1048576 (1 MiB)".into());
        }
        if apply.memory_budget_bytes < MIN_MEMORY_BUDGET {
            problems.push(format!("apply.memory_budget_bytes must be at least {MIN_MEMORY_BUDGET} (16 MiB)"));
        }
        if self.consume.max_record_bytes < 1024 * 1024 {
            problems.push("consume.max_record_bytes must be at least 1048576 (Kafka's default record limit)".into());
        } else if apply.memory_budget_bytes < 4 * self.consume.max_record_bytes {
            problems.push(format!(
                "apply.memory_budget_bytes ({}) must be at least 4 x consume.max_record_bytes ({}): a fetch of the \
                 largest record and the record itself must fit",
                apply.memory_budget_bytes, self.consume.max_record_bytes
            ));
        }
        for (name, pattern) in [("verify.include", &self.verify.include), ("verify.exclude", &self.verify.exclude)] {
            if let Err(e) = regex::Regex::new(pattern) {
                problems.push(format!("{name} '{pattern}' is not a valid regular expression: {e}"));
            }
        }
        if self.verify.parallel == 0 {
            problems.push("verify.parallel must be at least 1".into());
        }
        if self.verify.max_rechecked == 0 {
            problems.push("verify.max_rechecked must be at least 1".into());
        }
        if self.repair.max_ids_per_request == 0 {
            problems.push("repair.max_ids_per_request must be at least 1".into());
        }
        if self.consume.topic_refresh_interval_ms == 0 {
            problems.push("consume.topic_refresh_interval_ms must be at least 1".into());
        }
        if apply.write_concern != "majority" && apply.write_concern.parse::<u32>().is_err() {
            problems.push(format!("apply.write_concern '{}' must be \"majority\" or a number", apply.write_concern));
        }
        for rule in &apply.mapping {
            if let Err(e) = regex::Regex::new(&rule.source) {
                problems.push(format!("apply.mapping source '{}' is not a valid regular expression: {e}", rule.source));
            }
            if !rule.target.contains('.') {
                problems.push(format!("apply.mapping target '{}' is not of the form db.collection", rule.target));
            }
        }
        problems
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
    fn problems_are_listed_together() {
        let mut config = Config::default();
        config.consume.topics = vec!["^(".into()];
        config.apply.write_concern = "most".into();
        config.apply.mapping = vec![MappingRule { source: "a\\..*".into(), target: "nodot".into() }];
        assert_eq!(config.validate().len(), 3, "{:#?}", config.validate());
    }
}

/// Who removes documents a TTL index covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TtlPolicy {
    /// The source's deletes: target TTL indexes never expire anything (cutover sets them).
    #[default]
    SourceDeletes,
    /// The target's own TTL monitor, with the source's `expireAfterSeconds`.
    TargetExpires,
}
