//! The DDL log, `<metadata_database>.ddl`, as the barrier needs it: one entry per DDL and
//! consumer group, holding the partitions that arrived at its markers (and at which offsets),
//! who claims it and until when, the step it fixed, and whether it is applied. The driver's
//! collection is the real one; unit tests use `fake.rs`. Every call is one query, so what the
//! barrier does between two of them is the barrier's, not the log's.

use bson::{doc, DateTime, Document};
use futures::future::BoxFuture;
use futures::TryStreamExt;
use mongodb::options::ReturnDocument;

use crate::error::Error;

pub trait Log: Send + Sync {
    /// Adds `arrival` (at `offset`) to the entry `id`, creating it with `new` unless it exists:
    /// the entry after.
    fn arrive<'a>(
        &'a self,
        id: &'a str,
        arrival: &'a str,
        offset: i64,
        new: Document,
    ) -> BoxFuture<'a, Result<Option<Document>, Error>>;

    /// The entry `id`; `context` says in an error what it was read for.
    fn entry<'a>(&'a self, id: &'a str, context: &'static str) -> BoxFuture<'a, Result<Option<Document>, Error>>;

    /// Gives `by` the right to apply `id` until `until`, unless it is applied or another
    /// holds a claim still running at `now`: whether it was given.
    fn claim<'a>(
        &'a self,
        id: &'a str,
        by: &'a str,
        now: DateTime,
        until: DateTime,
    ) -> BoxFuture<'a, Result<bool, Error>>;

    /// Fixes what applying `id` does, unless an earlier claimer fixed it.
    fn fix_step<'a>(&'a self, id: &'a str, step: &'static str) -> BoxFuture<'a, Result<(), Error>>;

    /// Sets `fields` (applied, when, why it was refused) in the entry `id`.
    fn mark<'a>(&'a self, id: &'a str, fields: Document) -> BoxFuture<'a, Result<(), Error>>;

    /// The applied entries of `group` (and those written before entries named their group).
    fn applied<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<Vec<Document>, Error>>;

    /// The entries of `group` that `arrival` reached, with their arrivals only.
    fn arrivals<'a>(&'a self, group: &'a str, arrival: &'a str) -> BoxFuture<'a, Result<Vec<Document>, Error>>;
}

impl Log for mongodb::Collection<Document> {
    fn arrive<'a>(
        &'a self,
        id: &'a str,
        arrival: &'a str,
        offset: i64,
        new: Document,
    ) -> BoxFuture<'a, Result<Option<Document>, Error>> {
        Box::pin(async move {
            self.find_one_and_update(
                doc! {"_id": id},
                doc! {
                    "$addToSet": {"arrived": arrival, "arrivals": {"at": arrival, "offset": offset}},
                    "$setOnInsert": new,
                },
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await
            .map_err(|e| Error::mongo("record ddl arrival", e))
        })
    }

    fn entry<'a>(&'a self, id: &'a str, context: &'static str) -> BoxFuture<'a, Result<Option<Document>, Error>> {
        Box::pin(async move { self.find_one(doc! {"_id": id}).await.map_err(|e| Error::mongo(context, e)) })
    }

    fn claim<'a>(
        &'a self,
        id: &'a str,
        by: &'a str,
        now: DateTime,
        until: DateTime,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let claimed = self
                .update_one(
                    doc! {"_id": id, "applied": {"$ne": true},
                    "$or": [{"claimed_until": {"$exists": false}}, {"claimed_until": {"$lt": now}}]},
                    doc! {"$set": {"claimed_by": by, "claimed_until": until}},
                )
                .await
                .map_err(|e| Error::mongo("claim ddl", e))?;
            Ok(claimed.modified_count == 1)
        })
    }

    fn fix_step<'a>(&'a self, id: &'a str, step: &'static str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            self.update_one(doc! {"_id": id, "step": {"$exists": false}}, doc! {"$set": {"step": step}})
                .await
                .map_err(|e| Error::mongo("record ddl step", e))?;
            Ok(())
        })
    }

    fn mark<'a>(&'a self, id: &'a str, fields: Document) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            self.update_one(doc! {"_id": id}, doc! {"$set": fields})
                .await
                .map_err(|e| Error::mongo("mark ddl applied", e))?;
            Ok(())
        })
    }

    fn applied<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<Vec<Document>, Error>> {
        Box::pin(async move {
            let filter = doc! {"applied": true, "$or": [{"group": group}, {"group": {"$exists": false}}]};
            self.find(filter)
                .await
                .map_err(|e| Error::mongo("read applied ddl", e))?
                .try_collect()
                .await
                .map_err(|e| Error::mongo("read applied ddl", e))
        })
    }

    fn arrivals<'a>(&'a self, group: &'a str, arrival: &'a str) -> BoxFuture<'a, Result<Vec<Document>, Error>> {
        Box::pin(async move {
            self.find(doc! {"group": group, "arrivals.at": arrival})
                .projection(doc! {"arrivals": 1})
                .await
                .map_err(|e| Error::mongo("read ddl arrivals", e))?
                .try_collect()
                .await
                .map_err(|e| Error::mongo("read ddl arrivals", e))
        })
    }
}
