//! What `verify` compares: the source's namespaces (collections, views, time-series collections)
//! that `--namespace` or `verify.include`/`exclude` select, and on a full verify also what exists
//! only on the target: collections (and so whole databases) no compared source namespace maps
//! to, in the databases the source's map to or whose names the selection takes.

use std::collections::BTreeSet;

use bson::doc;
use envelope::Namespace;
use futures::TryStreamExt;
use mongodb::results::CollectionType;
use regex::Regex;

use crate::config::Config;
use crate::error::Error;
use crate::mapping::Mapper;

/// What a namespace is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Collection,
    View,
    Timeseries,
}

impl Kind {
    fn of(kind: &CollectionType) -> Self {
        match kind {
            CollectionType::View => Kind::View,
            CollectionType::Timeseries => Kind::Timeseries,
            // Collections, and whatever later servers add.
            _ => Kind::Collection,
        }
    }

    /// Whether it holds documents of its own to compare (a view shows another's).
    pub fn has_documents(self) -> bool {
        self != Kind::View
    }
}

/// Databases that are never compared.
fn internal(db: &str, config: &Config) -> bool {
    ["admin", "config", "local"].contains(&db) || db == config.apply.metadata_database
}

/// The selection of `verify.include` / `verify.exclude`, anchored.
pub struct Selection {
    include: Option<Regex>,
    exclude: Option<Regex>,
}

impl Selection {
    pub fn new(config: &Config) -> Result<Self, Error> {
        let anchored = |p: &str| Regex::new(&format!("^(?:{p})$")).map_err(|e| Error::fatal(e.to_string()));
        let include = (!config.verify.include.is_empty()).then(|| anchored(&config.verify.include)).transpose()?;
        let exclude = (!config.verify.exclude.is_empty()).then(|| anchored(&config.verify.exclude)).transpose()?;
        Ok(Self { include, exclude })
    }

    pub fn takes(&self, ns: &Namespace) -> bool {
        let name = ns.to_string();
        self.include.as_ref().is_none_or(|r| r.is_match(&name))
            && !self.exclude.as_ref().is_some_and(|r| r.is_match(&name))
    }
}

/// Every namespace of `client`'s user databases with what it is (never `system.*`).
pub async fn list(client: &mongodb::Client, config: &Config) -> Result<Vec<(Namespace, Kind)>, Error> {
    let mut found = Vec::new();
    for db in client.list_database_names().await.map_err(|e| Error::mongo("list databases", e))? {
        if internal(&db, config) {
            continue;
        }
        let mut cursor =
            client.database(&db).list_collections().await.map_err(|e| Error::mongo("list collections", e))?;
        while let Some(spec) = cursor.try_next().await.map_err(|e| Error::mongo("list collections", e))? {
            if !spec.name.starts_with("system.") {
                found.push((Namespace::new(&db, &spec.name), Kind::of(&spec.collection_type)));
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// What `db.coll` is on `client`; none when it does not exist.
pub async fn kind_of(client: &mongodb::Client, ns: &Namespace) -> Result<Option<Kind>, Error> {
    let mut cursor = client
        .database(&ns.db)
        .list_collections()
        .filter(doc! {"name": &ns.coll})
        .await
        .map_err(|e| Error::mongo("list collections", e))?;
    let spec = cursor.try_next().await.map_err(|e| Error::mongo("list collections", e))?;
    Ok(spec.map(|s| Kind::of(&s.collection_type)))
}

/// The source namespaces selected.
pub async fn source(
    config: &Config,
    named: &[String],
    source: &mongodb::Client,
) -> Result<Vec<(Namespace, Kind)>, Error> {
    if named.is_empty() {
        let selection = Selection::new(config)?;
        return Ok(list(source, config).await?.into_iter().filter(|(ns, _)| selection.takes(ns)).collect());
    }
    let mut found = Vec::new();
    for name in named {
        let ns = name
            .split_once('.')
            .map(|(d, c)| Namespace::new(d, c))
            .ok_or(Error::fatal(format!("--namespace {name}: not db.collection")))?;
        let kind = kind_of(source, &ns).await?.unwrap_or(Kind::Collection);
        found.push((ns, kind));
    }
    Ok(found)
}

/// The target's namespaces no compared source namespace maps to, in scope (see the top).
pub async fn only_on_target(
    config: &Config,
    compared: &[Namespace],
    mapper: &Mapper,
    target: &mongodb::Client,
) -> Result<Vec<(Namespace, Kind)>, Error> {
    let selection = Selection::new(config)?;
    let mapped: BTreeSet<Namespace> = compared.iter().map(|ns| mapper.map(ns)).collect();
    let databases: BTreeSet<&str> = mapped.iter().map(|ns| ns.db.as_str()).collect();
    Ok(list(target, config)
        .await?
        .into_iter()
        .filter(|(ns, _)| !mapped.contains(ns) && (databases.contains(ns.db.as_str()) || selection.takes(ns)))
        .collect())
}
