//! The target's catalog as applying DDL needs it: whether a collection exists, and the commands
//! that drop, rename and change collections. The target MongoDB / DocumentDB in service
//! ([`TargetCatalog`]); an in-memory catalog with injected faults in unit tests (`fake.rs`).
//! Each command is idempotent, as a claimer taking over after a crash may send it again.

use std::sync::Arc;

use bson::{doc, Document};
use envelope::{Ddl, Namespace};
use futures::future::BoxFuture;
use service_kit::failure::code::NAMESPACE_NOT_FOUND;
use service_kit::failure::command_code as mongo_code;

use crate::ddl::schema::Schema;
use crate::error::{Common, Error, Failure};

pub trait Catalog: Send + Sync {
    /// Whether the collection `ns` exists.
    fn exists<'a>(&'a self, ns: &'a Namespace) -> BoxFuture<'a, Result<bool, Error>>;

    /// Drops the collection `ns` (done already when it does not exist).
    fn drop_collection<'a>(&'a self, ns: &'a Namespace) -> BoxFuture<'a, Result<(), Error>>;

    /// The names of the collections (and views) of database `db`.
    fn collections<'a>(&'a self, db: &'a str) -> BoxFuture<'a, Result<Vec<String>, Error>>;

    /// Drops database `db`.
    fn drop_database<'a>(&'a self, db: &'a str) -> BoxFuture<'a, Result<(), Error>>;

    /// Renames `from` over `to`, replacing whatever `to` holds. `Ok(None)` once done, also when
    /// `from` is gone (renamed already); `Ok(Some(reason))` when the target refuses it for good.
    fn rename<'a>(&'a self, from: &'a Namespace, to: &'a Namespace) -> BoxFuture<'a, Result<Option<String>, Error>>;

    /// A collection, view, index or option change of `target` (`schema/`: what the target
    /// refuses is recorded there, not returned).
    fn change<'a>(&'a self, ddl: &'a Ddl, target: &'a Namespace) -> BoxFuture<'a, Result<(), Error>>;
}

/// The target MongoDB / DocumentDB.
pub struct TargetCatalog {
    pub client: mongodb::Client,
    pub schema: Arc<Schema>,
}

impl Catalog for TargetCatalog {
    fn exists<'a>(&'a self, ns: &'a Namespace) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            service_kit::connect::collection_exists(&self.client.database(&ns.db), &ns.coll)
                .await
                .map_err(Error::Common)
        })
    }

    fn drop_collection<'a>(&'a self, ns: &'a Namespace) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let collection = self.client.database(&ns.db).collection::<Document>(&ns.coll);
            collection.drop().await.map_err(|e| Error::mongo("drop collection", e))
        })
    }

    fn collections<'a>(&'a self, db: &'a str) -> BoxFuture<'a, Result<Vec<String>, Error>> {
        Box::pin(async move {
            self.client.database(db).list_collection_names().await.map_err(|e| Error::mongo("list collections", e))
        })
    }

    fn drop_database<'a>(&'a self, db: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move { self.client.database(db).drop().await.map_err(|e| Error::mongo("drop database", e)) })
    }

    fn rename<'a>(&'a self, from: &'a Namespace, to: &'a Namespace) -> BoxFuture<'a, Result<Option<String>, Error>> {
        Box::pin(async move {
            let command = doc! {"renameCollection": from.to_string(), "to": to.to_string(), "dropTarget": true};
            match self.client.database("admin").run_command(command).await {
                Ok(_) => Ok(None),
                Err(e) if mongo_code(&e) == Some(NAMESPACE_NOT_FOUND) => Ok(None),
                Err(e) => match Error::mongo("rename collection", e) {
                    Error::Common(Common::Mongo(Failure { retriable: false, reason, .. })) => {
                        Ok(Some(format!("rename {from} to {to}: {reason}")))
                    }
                    other => Err(other),
                },
            }
        })
    }

    fn change<'a>(&'a self, ddl: &'a Ddl, target: &'a Namespace) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.schema.apply(ddl, target))
    }
}
