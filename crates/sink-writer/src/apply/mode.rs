//! Which apply mode runs: `exactly_once` where the target has transactions, and the metadata
//! collections that mode writes to inside them, created first (Amazon DocumentDB creates no
//! collection inside a transaction).

use bson::doc;

use crate::apply::exact::SCRATCH;
use crate::apply::ledger::{self, Ledger};
use crate::apply::parked_store::PARKED;
use crate::config::ApplyMode;
use crate::error::Error;

/// Whether batches go as transactions; in that mode, the metadata collections exist after it.
pub async fn exactly_once(client: &mongodb::Client, mode: ApplyMode, ledger: &Ledger) -> Result<bool, Error> {
    let exactly_once = match mode {
        ApplyMode::ExactlyOnce => true,
        ApplyMode::Idempotent => false,
        ApplyMode::Auto => has_transactions(client).await?,
    };
    if exactly_once {
        for name in [ledger::COLLECTION, PARKED, SCRATCH] {
            let db = ledger.database();
            if db
                .list_collection_names()
                .filter(doc! {"name": name})
                .await
                .map_err(|e| Error::mongo("list collections", e))?
                .is_empty()
            {
                match db.create_collection(name).await {
                    Ok(()) => {}
                    Err(e)
                        if service_kit::failure::command_code(&e)
                            == Some(service_kit::failure::code::NAMESPACE_EXISTS) => {}
                    Err(e) => return Err(Error::mongo("create the ledger's collections", e)),
                }
            }
        }
        let parked = ledger.database().collection::<bson::Document>(PARKED);
        let index = mongodb::IndexModel::builder().keys(doc! {"group": 1, "doc": 1, "seq": 1}).build();
        parked.create_index(index).await.map_err(|e| Error::mongo("index the parked writes", e))?;
    } else if mode == ApplyMode::Auto {
        tracing::warn!(
            "the target has no transactions (a standalone server): apply.mode idempotent; after a restart documents \
             may show older versions for a moment"
        );
    }
    tracing::info!(mode = if exactly_once { "exactly_once" } else { "idempotent" }, "apply mode");
    Ok(exactly_once)
}

/// A replica set member, a mongos or Amazon DocumentDB (which answers as a replica set).
async fn has_transactions(client: &mongodb::Client) -> Result<bool, Error> {
    let hello = client.database("admin").run_command(doc! {"hello": 1}).await.map_err(|e| Error::mongo("hello", e))?;
    Ok(hello.get_str("setName").is_ok() || hello.get_str("msg") == Ok("isdbgrid"))
}
