//! Reading requested documents from the source: `find` by `_id` with read concern `majority`
//! (what the change stream also shows: never a write that may roll back), in one session whose
//! `operationTime` is the read's cluster time. Nothing DocumentDB lacks: no snapshot read at a
//! cluster time, no write to the source.

use std::collections::{HashSet, VecDeque};

use bson::{doc, Bson, RawDocumentBuf};
use envelope::{encode_key, ClusterTime, Namespace, Payload};
use mongodb::options::{CollectionOptions, ReadConcern};

use super::window::Read;
use crate::error::Error;

/// `_id`s per `find`.
const CHUNK: usize = 100;

/// Reads documents of `left` (taking them off the front) until about `max_bytes` are held; an
/// `_id` left unread stays in `left` for the next window.
pub async fn documents(
    client: &mongodb::Client,
    ns: &Namespace,
    left: &mut VecDeque<Bson>,
    max_bytes: usize,
) -> Result<Read, Error> {
    let options = CollectionOptions::builder().read_concern(ReadConcern::majority()).build();
    let coll = client.database(&ns.db).collection_with_options::<RawDocumentBuf>(&ns.coll, options);
    let mut session = client
        .start_session()
        .causal_consistency(false)
        .await
        .map_err(|e| Error::mongo("start a session to re-read documents", e))?;
    let mut read = Read::default();
    let mut bytes = 0;
    while !left.is_empty() && bytes < max_bytes {
        let chunk: Vec<Bson> = left.iter().take(CHUNK).cloned().collect();
        let mut cursor = coll
            .find(doc! {"_id": {"$in": chunk.clone()}})
            .session(&mut session)
            .await
            .map_err(|e| Error::mongo("re-read documents", e))?;
        let mut returned = HashSet::new();
        let mut exhausted = true;
        while let Some(doc) = cursor.next(&mut session).await {
            let doc = doc.map_err(|e| Error::mongo("re-read documents", e))?;
            envelope::extjson::check_raw_document(&doc).map_err(|e| {
                Error::fatal(format!("a document of {ns} did not decode: {e}; fix it in the source, then restart"))
            })?;
            bytes += doc.as_bytes().len();
            returned.insert(encode_key(&Payload::id(&doc).unwrap_or(Bson::Null)));
            read.found.push(doc);
            if bytes >= max_bytes {
                exhausted = false;
                break;
            }
        }
        drop(cursor);
        for id in chunk {
            let key = encode_key(&id);
            if returned.contains(&key) {
                left.retain(|other| encode_key(other) != key);
            } else if exhausted {
                left.retain(|other| encode_key(other) != key);
                read.gone.push(id);
            }
        }
    }
    let at = session
        .operation_time()
        .ok_or_else(|| Error::fatal(format!("the source answered a read of {ns} without an operationTime")))?;
    read.at = ClusterTime::from(at);
    if !read.gone.is_empty() && !crate::server::collection_exists(client, ns).await? {
        // The collection is gone: its drop is (or was) in the stream, nothing to delete.
        read.gone.clear();
    }
    Ok(read)
}
