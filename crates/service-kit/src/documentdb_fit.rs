//! What an Amazon DocumentDB target will not carry of a deployment's collections, for `doctor`:
//! each selected collection's options (`listCollections`), indexes (`listIndexes`) and a sample
//! of its documents (`$sample`) are read, and `docdb_rules::carried` (the guard's rule table)
//! says what the target leaves out, does not build or dead-letters. Only commands DocumentDB has.

use bson::{doc, Bson, Document};
use docdb_rules::carried::{self, Loss, Outcome};
use futures::TryStreamExt;

use crate::doctor::Report;

/// Documents sampled per collection for field names and types the target cannot store.
pub const SAMPLE_DOCUMENTS: i64 = 100;
/// NamespaceNotFound: dropped while it was read.
use crate::failure::code::NAMESPACE_NOT_FOUND;
use crate::failure::command_code as code;

/// One collection or view and what the target will not carry of it.
#[derive(Debug, Clone)]
pub struct Fit {
    /// `db.collection`.
    pub namespace: String,
    pub losses: Vec<Loss>,
}

/// Every collection and view that `wanted(db, collection)` selects in the databases
/// `wanted_database` selects (never `admin`, `config`, `local`, `system.*`, time-series
/// collections: those are not replicated at all), in namespace order.
pub async fn survey(
    client: &mongodb::Client,
    wanted_database: impl Fn(&str) -> bool,
    wanted: impl Fn(&str, &str) -> bool,
) -> Result<Vec<Fit>, mongodb::error::Error> {
    let mut fits = Vec::new();
    for db in client.list_database_names().await? {
        if ["admin", "config", "local"].contains(&db.as_str()) || !wanted_database(&db) {
            continue;
        }
        // DocumentDB refuses `type` in the filter: the kinds are picked here.
        let entries: Vec<Document> =
            client.database(&db).run_cursor_command(doc! {"listCollections": 1}).await?.try_collect().await?;
        for entry in entries {
            let (Ok(coll), Ok(kind)) = (entry.get_str("name"), entry.get_str("type")) else { continue };
            if !matches!(kind, "collection" | "view") || coll.starts_with("system.") || !wanted(&db, coll) {
                continue;
            }
            let mut options = entry.get_document("options").cloned().unwrap_or_default();
            options.remove("uuid");
            let mut losses = carried::collection(&db, coll, &options);
            if kind == "collection" {
                for spec in indexes(client, &db, coll).await? {
                    losses.extend(carried::index(&db, coll, &spec, &options));
                }
                losses.extend(documents(client, &db, coll).await?);
            }
            fits.push(Fit { namespace: format!("{db}.{coll}"), losses });
        }
    }
    fits.sort_by(|a, b| a.namespace.cmp(&b.namespace));
    Ok(fits)
}

/// One report line per collection the target will not carry whole: a warning, or a blocker
/// when `data_loss_blocks` and documents would be dead-lettered; `preamble` opens each detail.
pub fn report(report: &mut Report, fits: &[Fit], preamble: &str, data_loss_blocks: bool) {
    let whole = fits.iter().filter(|fit| fit.losses.is_empty()).count();
    for fit in fits.iter().filter(|fit| !fit.losses.is_empty()) {
        let listed: Vec<String> = fit.losses.iter().map(ToString::to_string).collect();
        let name = format!("documentdb target {}", fit.namespace);
        let detail = format!("{preamble}{}", listed.join("; "));
        match data_loss_blocks && fit.losses.iter().any(|loss| loss.outcome.loses_data()) {
            true => report.fail(name, detail),
            false => report.warn(name, detail),
        }
    }
    report.ok("documentdb target", format!("{whole} of {} collections and views carried whole", fits.len()));
}

async fn indexes(client: &mongodb::Client, db: &str, coll: &str) -> Result<Vec<Document>, mongodb::error::Error> {
    match client.database(db).run_cursor_command(doc! {"listIndexes": coll}).await {
        Ok(cursor) => {
            let specs: Vec<Document> = cursor.try_collect().await?;
            Ok(specs.into_iter().filter(|spec| spec.get_str("name") != Ok("_id_")).collect())
        }
        Err(e) if code(&e) == Some(NAMESPACE_NOT_FOUND) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The sampled documents the target cannot store, as one loss naming how many and the first.
async fn documents(client: &mongodb::Client, db: &str, coll: &str) -> Result<Option<Loss>, mongodb::error::Error> {
    let collection = client.database(db).collection::<Document>(coll);
    let sampled: Vec<Document> = match collection.aggregate([doc! {"$sample": {"size": SAMPLE_DOCUMENTS}}]).await {
        Ok(cursor) => cursor.try_collect().await?,
        Err(e) if code(&e) == Some(NAMESPACE_NOT_FOUND) => return Ok(None),
        Err(e) => return Err(e),
    };
    let refused: Vec<(Loss, Bson)> = sampled
        .iter()
        .filter_map(|d| carried::document(db, coll, d).map(|loss| (loss, d.get("_id").cloned().unwrap_or(Bson::Null))))
        .collect();
    let Some((first, id)) = refused.first() else { return Ok(None) };
    Ok(Some(Loss {
        what: format!("{} of {} sampled documents", refused.len(), sampled.len()),
        outcome: Outcome::DeadLettered,
        reason: format!("{} (first: _id {id})", first.reason),
    }))
}
