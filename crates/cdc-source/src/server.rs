//! The clock, and what cdc-source asks the source deployment outside its streams and copies: its
//! cluster time and its replica set name. A leaf: it uses no other module of the crate but
//! `error`.

use bson::doc;
use envelope::ClusterTime;

use crate::error::Error;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The deployment's current cluster time (`operationTime` of a no-op read).
pub async fn cluster_time(client: &mongodb::Client) -> Result<ClusterTime, Error> {
    let reply = client.database("admin").run_command(doc! {"ping": 1}).await.map_err(|e| Error::mongo("ping", e))?;
    let time = reply
        .get_timestamp("operationTime")
        .ok()
        .or_else(|| reply.get_document("$clusterTime").ok().and_then(|c| c.get_timestamp("clusterTime").ok()));
    time.map(ClusterTime::from)
        .ok_or_else(|| Error::fatal("the source reports no cluster time: is it a replica set (or DocumentDB)?".into()))
}

/// The replica set's name, for `source.rs` (none on a sharded cluster).
pub async fn replica_set_name(client: &mongodb::Client) -> Option<String> {
    let hello = client.database("admin").run_command(doc! {"hello": 1}).await.ok()?;
    hello.get_str("setName").ok().map(str::to_string)
}

/// The server's version, as text and as numbers (`buildInfo`'s `versionArray`).
pub async fn version(client: &mongodb::Client) -> Result<(String, Vec<i64>), Error> {
    let info =
        client.database("admin").run_command(doc! {"buildInfo": 1}).await.map_err(|e| Error::mongo("buildInfo", e))?;
    let text = info.get_str("version").unwrap_or("unknown").to_string();
    let parts = info
        .get_array("versionArray")
        .map(|a| a.iter().filter_map(|v| v.as_i32().map(i64::from).or_else(|| v.as_i64())).collect())
        .unwrap_or_default();
    Ok((text, parts))
}

/// Whether a collection (or view) exists on the source now.
pub async fn collection_exists(client: &mongodb::Client, ns: &envelope::Namespace) -> Result<bool, Error> {
    service_kit::connect::collection_exists(&client.database(&ns.db), &ns.coll).await.map_err(Error::Common)
}
