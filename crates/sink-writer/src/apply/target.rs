//! The target as the `idempotent` write path needs it: one write command sent and its reply,
//! and which documents a collection holds. The driver's `Client` is the real one; unit tests
//! use `fake.rs`. What a reply means is read in `writer.rs`, so a fake's replies go through the
//! same reading as the server's. (Transactions, `exactly_once`, use a session directly.)

use bson::{doc, Bson, Document, RawDocumentBuf};
use envelope::Namespace;
use futures::future::BoxFuture;
use futures::TryStreamExt;

use crate::error::{Common, Error, Failure};

pub trait Target: Send + Sync {
    /// Runs the write command `name` (`insert`, `update` or `delete`) on database `db`, outside
    /// any transaction: the server's reply, or why there is none.
    fn write<'a>(
        &'a self,
        db: &'a str,
        name: &'static str,
        command: RawDocumentBuf,
    ) -> BoxFuture<'a, Result<Document, CommandError>>;

    /// The documents (`_id` only) of `ns` among `ids`.
    fn present<'a>(&'a self, ns: &'a Namespace, ids: Vec<Bson>) -> BoxFuture<'a, Result<Vec<Document>, Error>>;
}

/// Why a command has no reply to read.
#[derive(Debug)]
pub enum CommandError {
    /// The command as a whole was refused for good: one of its statements is the cause.
    Refused { code: i32, reason: String },
    /// Anything else (transient): the round is retried.
    Failed(Error),
}

impl CommandError {
    /// A driver error of the command `name`, by what happens next.
    pub fn from_driver(name: &str, e: mongodb::error::Error) -> Self {
        let failed = Error::mongo(name, e.clone());
        match (&failed, service_kit::failure::command_code(&e)) {
            (Error::Common(Common::Mongo(Failure { retriable: false, reason, .. })), Some(code)) => {
                CommandError::Refused { code, reason: reason.clone() }
            }
            _ => CommandError::Failed(failed),
        }
    }
}

impl Target for mongodb::Client {
    fn write<'a>(
        &'a self,
        db: &'a str,
        name: &'static str,
        command: RawDocumentBuf,
    ) -> BoxFuture<'a, Result<Document, CommandError>> {
        Box::pin(async move {
            self.database(db).run_raw_command(command).await.map_err(|e| CommandError::from_driver(name, e))
        })
    }

    fn present<'a>(&'a self, ns: &'a Namespace, ids: Vec<Bson>) -> BoxFuture<'a, Result<Vec<Document>, Error>> {
        Box::pin(async move {
            let context = "find which documents the target has";
            self.database(&ns.db)
                .collection::<Document>(&ns.coll)
                .find(doc! {"_id": {"$in": ids}})
                .projection(doc! {"_id": 1})
                .await
                .map_err(|e| Error::mongo(context, e))?
                .try_collect()
                .await
                .map_err(|e| Error::mongo(context, e))
        })
    }
}
