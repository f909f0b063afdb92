//! How far back the source keeps change history: the window a stored resume point must stay
//! inside. On MongoDB it is the oplog's span (first entry to now); DocumentDB hides its change
//! stream log, so its configured retention stands in (`capture.history_retention_hours`).

use std::time::Duration;

use bson::{doc, Document, Timestamp};
use mongodb::options::FindOneOptions;
use mongodb::Client;

use crate::config::{CaptureConfig, Compat};
use crate::metrics::Metrics;

/// DocumentDB's default `change_stream_log_retention_duration`.
const DOCUMENTDB_DEFAULT_RETENTION_HOURS: u32 = 3;

/// Where a window figure comes from, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Oplog,
    Configured,
    DocumentdbDefault,
}

/// Seconds of history the source keeps, and where that figure comes from.
pub async fn window(
    client: &Client,
    capture: &CaptureConfig,
    now_s: i64,
) -> Result<(i64, Source), mongodb::error::Error> {
    if capture.history_retention_hours > 0 {
        return Ok((i64::from(capture.history_retention_hours) * 3600, Source::Configured));
    }
    if capture.compat == Compat::Documentdb {
        return Ok((i64::from(DOCUMENTDB_DEFAULT_RETENTION_HOURS) * 3600, Source::DocumentdbDefault));
    }
    let oplog = client.database("local").collection::<Document>("oplog.rs");
    let first = oplog
        .find_one(doc! {})
        .with_options(FindOneOptions::builder().sort(doc! {"$natural": 1}).projection(doc! {"ts": 1}).build())
        .await?;
    let first_s = first.and_then(|d| d.get_timestamp("ts").ok()).map_or(now_s, |ts: Timestamp| i64::from(ts.time));
    Ok(((now_s - first_s).max(0), Source::Oplog))
}

/// Keeps `cdc_source_history_window_seconds` current (once a minute; errors leave the last value).
pub async fn ticker(client: Client, capture: CaptureConfig, metrics: Metrics) {
    loop {
        let now_s = crate::server::now_ms() / 1000;
        match window(&client, &capture, now_s).await {
            Ok((seconds, _)) => metrics.history_window.set(seconds),
            Err(e) => tracing::debug!(error = %e, "cannot read the source's history window"),
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}
