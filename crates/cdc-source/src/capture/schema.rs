//! What a collection is besides its documents, read from the source: its options (a view's
//! `viewOn` and `pipeline`) as `listCollections` reports them, its indexes as `listIndexes` does,
//! and which captured namespaces exist. Which indexes must reach the target before the
//! documents is decided here too.

use bson::{doc, Bson, Document};
use envelope::Namespace;
use futures::TryStreamExt;

use crate::capture::routing::NamespaceFilter;
use crate::capture::schema_events::Described;
use crate::error::{command_code, Error};

/// NamespaceNotFound: the collection is gone.
use service_kit::failure::code::NAMESPACE_NOT_FOUND;

/// A collection or a view, with its options.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub ns: Namespace,
    pub view: bool,
    /// `options` of `listCollections`, without the `uuid`.
    pub options: Document,
}

/// Every captured collection and view, in namespace order (time-series collections, which the
/// snapshot does not copy, are left out).
pub async fn captured(client: &mongodb::Client, filter: &NamespaceFilter) -> Result<Vec<Listed>, Error> {
    let databases = client.list_database_names().await.map_err(|e| Error::mongo("list databases", e))?;
    let mut listed = Vec::new();
    for db in databases.into_iter().filter(|db| filter.wants_database(db)) {
        // Amazon DocumentDB refuses `type` in a listCollections filter: the kinds are picked here.
        let entries = entries(client, &db, doc! {}).await?;
        let kinds = entries.iter().filter(|entry| matches!(entry.get_str("type"), Ok("collection" | "view")));
        listed.extend(kinds.filter_map(|entry| listed_entry(&db, entry)).filter(|l| filter.wants(&l.ns)));
    }
    listed.sort_by(|a, b| a.ns.cmp(&b.ns));
    Ok(listed)
}

/// One collection or view; none when it does not exist.
pub async fn collection(client: &mongodb::Client, ns: &Namespace) -> Result<Option<Listed>, Error> {
    Ok(list(client, &ns.db, doc! {"name": &ns.coll}).await?.into_iter().next())
}

async fn list(client: &mongodb::Client, db: &str, filter: Document) -> Result<Vec<Listed>, Error> {
    Ok(entries(client, db, filter).await?.iter().filter_map(|entry| listed_entry(db, entry)).collect())
}

/// `listCollections` of `db` with `filter`, as the server lists them.
async fn entries(client: &mongodb::Client, db: &str, filter: Document) -> Result<Vec<Document>, Error> {
    let cursor = client
        .database(db)
        .run_cursor_command(doc! {"listCollections": 1, "filter": filter})
        .await
        .map_err(|e| Error::mongo("list collections", e))?;
    cursor.try_collect().await.map_err(|e| Error::mongo("list collections", e))
}

fn listed_entry(db: &str, entry: &Document) -> Option<Listed> {
    let name = entry.get_str("name").ok()?.to_string();
    let view = entry.get_str("type") == Ok("view");
    let mut options = entry.get_document("options").cloned().unwrap_or_default();
    options.remove("uuid");
    Some(Listed { ns: Namespace::new(db, name), view, options })
}

/// The collection's indexes as `listIndexes` reports them, but the `_id` index every collection
/// has; none when the collection is gone.
pub async fn indexes(client: &mongodb::Client, ns: &Namespace) -> Result<Vec<Document>, Error> {
    let command = client.database(&ns.db).run_cursor_command(doc! {"listIndexes": &ns.coll}).await;
    let cursor = match command {
        Ok(cursor) => cursor,
        Err(e) if command_code(&e) == Some(NAMESPACE_NOT_FOUND) => return Ok(Vec::new()),
        Err(e) => return Err(Error::mongo("list indexes", e)),
    };
    let specs: Vec<Document> = cursor.try_collect().await.map_err(|e| Error::mongo("list indexes", e))?;
    Ok(specs.into_iter().filter(|spec| spec.get_str("name") != Ok("_id_")).collect())
}

/// An index listed without `collation` on a collection that has a default collation was built
/// with the simple one (listings leave it out); built again from its listing as it stands it
/// would take the collection's (and a text index refuses any). Such specs get
/// `collation: {locale: "simple"}`; nothing changes without a default collation.
pub fn simple_collation(collection_options: &Document, indexes: &mut [Document]) {
    if !collection_options.contains_key("collation") {
        return;
    }
    for index in indexes.iter_mut().filter(|index| !index.contains_key("collation")) {
        index.insert("collation", doc! {"locale": "simple"});
    }
}

/// Completes a streamed `createIndexes` the way [`simple_collation`] does, from the collection's
/// options now (the event does not carry them).
pub async fn complete(
    client: &mongodb::Client,
    kind: &str,
    ns: &Namespace,
    described: &mut Described,
) -> Result<(), Error> {
    if kind != "createIndexes" {
        return Ok(());
    }
    let Ok(specs) = described.description.get_array_mut("indexes") else { return Ok(()) };
    if specs.iter().all(|spec| spec.as_document().is_none_or(|spec| spec.contains_key("collation"))) {
        return Ok(());
    }
    let Some(listed) = collection(client, ns).await? else { return Ok(()) };
    let mut indexes: Vec<Document> = specs.iter().filter_map(|spec| spec.as_document().cloned()).collect();
    simple_collation(&listed.options, &mut indexes);
    *specs = indexes.into_iter().map(Bson::Document).collect();
    Ok(())
}

/// Whether an index must be on the target before the collection's documents: a unique one, or
/// the target takes duplicates the source refused and the conflict goes unnoticed.
pub fn before_documents(index: &Document) -> bool {
    match index.get("unique") {
        Some(Bson::Boolean(unique)) => *unique,
        Some(Bson::Int32(n)) => *n != 0,
        Some(Bson::Int64(n)) => *n != 0,
        Some(Bson::Double(n)) => *n != 0.0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_listed_without_collation_keep_the_simple_one_on_a_collection_with_a_default() {
        let text = doc! {"key": {"_fts": "text", "_ftsx": 1}, "name": "search"};
        let french = doc! {"key": {"a": 1}, "name": "a_1", "collation": {"locale": "fr"}};
        let mut indexes = vec![text.clone(), french.clone()];
        simple_collation(&doc! {"validator": {}}, &mut indexes);
        assert_eq!(indexes, vec![text.clone(), french.clone()], "no default collation: unchanged");
        simple_collation(&doc! {"collation": {"locale": "fr"}}, &mut indexes);
        assert_eq!(indexes[0].get_document("collation").ok(), Some(&doc! {"locale": "simple"}));
        assert_eq!(indexes[1], french);
    }

    #[test]
    fn unique_indexes_go_before_the_documents() {
        assert!(before_documents(&doc! {"key": {"a": 1}, "name": "a_1", "unique": true}));
        assert!(before_documents(&doc! {"key": {"a": 1}, "name": "a_1", "unique": 1}), "as older servers write it");
        assert!(!before_documents(&doc! {"key": {"a": 1}, "name": "a_1", "unique": false}));
        assert!(!before_documents(&doc! {"key": {"a": 1}, "name": "a_1", "expireAfterSeconds": 60}));
    }
}
