//! What every partition task shares: the target writer, the dead-letter topic, DDL state,
//! namespace mapping, metrics, readiness, the retry loop, the topics read, and the limits.

use service_kit::health::Health;

use crate::config::ApplyConfig;
use crate::ddl::DdlApplier;
use crate::dlq::DeadLetters;
use crate::mapping::Mapper;
use crate::metrics::Metrics;
use crate::retry::Retrier;
use crate::subscription::Subscription;
use crate::writer::Writer;

pub struct Shared {
    pub writer: Writer,
    pub dead_letters: DeadLetters,
    pub ddl: DdlApplier,
    pub mapper: Mapper,
    pub metrics: Metrics,
    pub health: Health,
    pub retrier: Retrier,
    /// The topics this service reads: how many copies of a DDL marker it must reach.
    pub subscription: Subscription,
    pub apply: ApplyConfig,
}
