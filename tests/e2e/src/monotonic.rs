//! What a reader of the target sees, version after version: the target's own change stream,
//! watched for a counter field that the source only ever raises. A value lower than one seen
//! before for the same document is a backward move (an older version written after a newer
//! one). The stream resumes after errors (a target mongod killed by the fault suite).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bson::{Bson, Document};
use futures::StreamExt;
use mongodb::change_stream::event::ResumeToken;

/// The values seen per document, and each move back.
#[derive(Debug, Default)]
pub struct Observed {
    highest: HashMap<String, i64>,
    pub changes: usize,
    pub backward: Vec<String>,
}

/// A running watch of `field` in the target database (or one collection of it).
pub struct Watch {
    observed: Arc<Mutex<Observed>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    /// Starts watching; returns once the stream is open (changes made after that are seen).
    pub async fn start(db: mongodb::Database, collection: Option<&str>, field: &str) -> Watch {
        let observed = Arc::new(Mutex::new(Observed::default()));
        let (field, collection) = (field.to_string(), collection.map(str::to_string));
        let open = |db: mongodb::Database, collection: Option<String>, resume: Option<ResumeToken>| async move {
            match collection {
                Some(name) => db.collection::<Document>(&name).watch().resume_after(resume).await,
                None => db.watch().resume_after(resume).await,
            }
        };
        let mut stream = open(db.clone(), collection.clone(), None).await.expect("the target's change stream");
        let seen = observed.clone();
        let task = tokio::spawn(async move {
            loop {
                while let Some(event) = stream.next().await {
                    let Ok(event) = event else { break };
                    record(&seen, &event, &field);
                }
                let resume = stream.resume_token();
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if let Ok(reopened) = open(db.clone(), collection.clone(), resume.clone()).await {
                        stream = reopened;
                        break;
                    }
                }
            }
        });
        Watch { observed, task }
    }

    /// Stops watching: what was seen.
    pub fn finish(self) -> Observed {
        self.task.abort();
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *observed)
    }
}

fn record(seen: &Mutex<Observed>, event: &mongodb::change_stream::event::ChangeStreamEvent<Document>, field: &str) {
    let Some(key) = event.document_key.as_ref().and_then(|k| k.get("_id")).map(|id| format!("{id}")) else {
        return;
    };
    let number = |value: Option<&Bson>| match value {
        Some(Bson::Int64(n)) => Some(*n),
        Some(Bson::Int32(n)) => Some(i64::from(*n)),
        _ => None,
    };
    let n = match (&event.full_document, &event.update_description) {
        (Some(doc), _) => number(doc.get(field)),
        (None, Some(update)) => number(update.updated_fields.get(field)),
        _ => None,
    };
    let Some(n) = n else { return };
    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    seen.changes += 1;
    let highest = seen.highest.entry(key.clone()).or_insert(n);
    if n < *highest {
        let was = *highest;
        seen.backward.push(format!("{key}: {was} -> {n}"));
    } else {
        *highest = n;
    }
}
