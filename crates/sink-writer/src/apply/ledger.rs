//! The partitions' ledger in the target (`<metadata_database>.partitions`, `exactly_once` mode):
//! one document per consumer group and partition holding the next offset to read, the cluster
//! time up to which the partition is applied, and the ownership epoch.
//!
//! A replica taking a partition over bumps the epoch and reads the offset back: it resumes
//! exactly where the target is. Every batch's transaction first updates the document on the
//! condition that the epoch is still its own, so a former owner's transaction fails instead of
//! writing: either the bump finds the old transaction holding the document and waits for it to
//! end (the new owner then reads the offset it wrote), or the old transaction finds the epoch
//! moved (or conflicts with the bump) and aborts. Kafka's committed offset follows the ledger,
//! for lag and tooling only.

use bson::{doc, DateTime, Document};
use envelope::ClusterTime;
use mongodb::options::ReturnDocument;
use mongodb::ClientSession;

use crate::consume::offsets::Tp;
use crate::error::Error;

/// The collection, in the metadata database.
pub const COLLECTION: &str = "partitions";

/// What a new owner learned when it took a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub epoch: i64,
    /// The next offset to read, once a transaction recorded one.
    pub offset: Option<i64>,
}

/// The ledger of one consumer group.
#[derive(Clone)]
pub struct Ledger {
    db: mongodb::Database,
    coll: mongodb::Collection<Document>,
    group: String,
    /// Who claims (host and process), for operators reading the ledger.
    owner: String,
}

impl Ledger {
    pub fn new(client: &mongodb::Client, metadata_database: &str, group: &str) -> Self {
        let db = client.database(metadata_database);
        let owner = format!(
            "{}:{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "sink-writer".to_string()),
            std::process::id()
        );
        Self { coll: db.collection(COLLECTION), db, group: group.to_string(), owner }
    }

    /// The metadata database, where the ledger and the parked writes live.
    pub fn database(&self) -> &mongodb::Database {
        &self.db
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// The ledger document's `_id` of a partition.
    pub fn id(&self, tp: &Tp) -> String {
        format!("{}|{}|{}", self.group, tp.0, tp.1)
    }

    /// Takes the partition: bumps its epoch (waiting, on the server, for a transaction of the
    /// former owner that holds the document to end) and reads where the target is.
    pub async fn claim(&self, tp: &Tp) -> Result<Claim, Error> {
        let claimed = self
            .coll
            .find_one_and_update(
                doc! {"_id": self.id(tp)},
                doc! {
                    "$inc": {"epoch": 1_i64},
                    "$set": {"owner": &self.owner, "claimed_at": DateTime::now()},
                    "$setOnInsert": {"group": &self.group, "topic": &tp.0, "partition": tp.1},
                },
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await
            .map_err(|e| Error::mongo("claim the partition in the ledger", e))?
            .ok_or_else(|| Error::fatal("the ledger returned no document after an upsert".into()))?;
        let epoch = claimed.get_i64("epoch").map_err(|e| Error::fatal(format!("ledger epoch: {e}")))?;
        Ok(Claim { epoch, offset: claimed.get_i64("offset").ok() })
    }

    /// Inside `session`'s transaction, before its writes: records that the transaction brings
    /// the partition to `offset` (and, when given, that it is applied up to `consistent`), on the
    /// condition that `epoch` still owns it. `Err(Fenced)` when another owner took it.
    pub async fn advance_in(
        &self,
        session: &mut ClientSession,
        tp: &Tp,
        epoch: i64,
        offset: i64,
        consistent: Option<ClusterTime>,
    ) -> Result<(), Error> {
        let command = doc! {
            "update": COLLECTION,
            "updates": [{"q": {"_id": self.id(tp), "epoch": epoch}, "u": advance(offset, consistent)}],
        };
        let reply = self
            .db
            .run_command(command)
            .session(&mut *session)
            .await
            .map_err(|e| Error::mongo("advance the ledger", e))?;
        self.matched(&reply, tp, epoch)
    }

    /// The same outside a transaction (a DDL marker passed: no data goes with it).
    pub async fn advance(&self, tp: &Tp, epoch: i64, offset: i64) -> Result<(), Error> {
        let command = doc! {
            "update": COLLECTION,
            "updates": [{"q": {"_id": self.id(tp), "epoch": epoch}, "u": advance(offset, None)}],
            "writeConcern": {"w": "majority"},
        };
        let reply = self.db.run_command(command).await.map_err(|e| Error::mongo("advance the ledger", e))?;
        self.matched(&reply, tp, epoch)
    }

    fn matched(&self, reply: &Document, tp: &Tp, epoch: i64) -> Result<(), Error> {
        if let Ok(errors) = reply.get_array("writeErrors") {
            return Err(Error::fatal(format!("the ledger refused an update: {errors:?}")));
        }
        match reply.get_i32("n") {
            Ok(1) => Ok(()),
            Ok(_) => Err(Error::Fenced(format!(
                "{}/{}: epoch {epoch} no longer owns the partition in the target (another replica took it over)",
                tp.0, tp.1
            ))),
            Err(_) => Err(Error::fatal(format!("the ledger answered an update without a count: {reply:?}"))),
        }
    }
}

fn advance(offset: i64, consistent: Option<ClusterTime>) -> Document {
    let mut set = doc! {"offset": offset, "updated_at": DateTime::now()};
    if let Some(at) = consistent {
        set.insert("consistent", bson::Timestamp::from(at));
    }
    doc! {"$set": set}
}
