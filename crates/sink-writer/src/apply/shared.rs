//! What every partition task shares: the target writer, the dead-letter topic and book, DDL state,
//! namespace mapping, metrics, readiness, the retry loop, the topics read, and the limits.

use envelope::Namespace;
use mongodb::options::WriteConcern;
use service_kit::health::Health;

use crate::apply::ledger::Ledger;
use crate::apply::retry::Retrier;
use crate::apply::round::Writes;
use crate::apply::writer::Writer;
use crate::config::ApplyConfig;
use crate::consume::subscription::Subscription;
use crate::ddl::DdlApplier;
use crate::dead_letters::DeadLetterBook;
use crate::dlq::DeadLetters;
use crate::error::Error;
use crate::mapping::Mapper;
use crate::metrics::Metrics;

pub struct Shared {
    pub client: mongodb::Client,
    pub writer: Writer,
    /// Each batch one transaction with the partition's offset (`apply.mode`).
    pub exactly_once: bool,
    /// The partitions' offsets and epochs in the target (`exactly_once`).
    pub ledger: Ledger,
    /// What field names the target stores (none with dots or a leading `$` on DocumentDB).
    pub field_names: crate::apply::write_plan::FieldNames,
    /// The write concern of transactions' commits.
    pub write_concern: WriteConcern,

    pub dead_letters: DeadLetters,
    /// The dead letters recorded in the target, and the partitions they hold.
    pub dead_letter_book: DeadLetterBook,
    pub ddl: DdlApplier,
    /// Schema changes the target refused, tried again once data changed.
    pub schema: std::sync::Arc<crate::ddl::schema::Schema>,
    pub mapper: Mapper,
    pub metrics: Metrics,
    pub health: Health,
    pub retrier: Retrier,
    /// The topics this service reads: how many copies of a DDL marker it must reach.
    pub subscription: Subscription,
    pub apply: ApplyConfig,
}

impl Shared {
    /// What rounds of writes and their dead letters use.
    pub fn writes(&self) -> Writes<'_> {
        Writes {
            target: &self.client,
            writer: &self.writer,
            dead_letters: &self.dead_letters,
            book: &self.dead_letter_book,
            retrier: &self.retrier,
            metrics: &self.metrics,
        }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Whether `ns` is known to exist on the target.
    pub fn collection_known(&self, ns: &Namespace) -> bool {
        self.ddl.collections.known(ns)
    }

    /// Creates `ns` on the target when it is missing (plain: a create event from the source
    /// carries its options, and the snapshot copies them), and remembers it exists.
    pub async fn create_collection(&self, ns: &Namespace) -> Result<(), Error> {
        let db = self.client.database(&ns.db);
        if !service_kit::connect::collection_exists(&db, &ns.coll).await.map_err(Error::Common)? {
            match db.create_collection(&ns.coll).await {
                Ok(()) => {}
                // Created meanwhile (another partition, a DDL).
                Err(e)
                    if service_kit::failure::command_code(&e) == Some(service_kit::failure::code::NAMESPACE_EXISTS) => {
                }
                Err(e) => return Err(Error::mongo("create a collection", e)),
            }
        }
        self.ddl.collections.exists(ns);
        Ok(())
    }
}
