//! Reading documents in `_id` order between two `_id`s, with only what both MongoDB and Amazon
//! DocumentDB have: `$gte`/`$lt` compare within one BSON type bracket, so a window that spans
//! brackets is read bracket by bracket (`$type`), in the server's order. Each document comes
//! back as its `_id` and a hash of its exact BSON (field order and types count); a source
//! document first goes through its namespace's transform rule (a [`View`]), as cdc-source sends
//! it: hashed as the rules make it, or marked `filtered` when the rule's filter leaves it out.

use std::hash::{Hash, Hasher};

use bson::{doc, Bson, Document, RawDocumentBuf};
use futures::TryStreamExt;
use service_kit::id_order;

use crate::error::Error;

/// A document as compared: its `_id` (and that `_id`'s exact bytes), and a hash of its BSON.
#[derive(Debug, Clone)]
pub struct Seen {
    pub id: Bson,
    pub key: Vec<u8>,
    pub hash: u64,
    /// A source document the transform rule's filter leaves out: the target must not have it.
    pub filtered: bool,
}

impl Seen {
    pub fn of(raw: &RawDocumentBuf) -> Option<Seen> {
        let id: Bson = raw.get("_id").ok()??.to_raw_bson().try_into().ok()?;
        Some(Seen { key: key_of(&id), id, hash: hash_of(raw.as_bytes()), filtered: false })
    }

    /// A document of `coll` as the target should have it under `view`.
    pub fn viewed(
        coll: &mongodb::Collection<RawDocumentBuf>,
        raw: &RawDocumentBuf,
        view: View,
    ) -> Result<Option<Seen>, Error> {
        let Some(rule) = view else { return Ok(Seen::of(raw)) };
        let namespace = coll.namespace().to_string();
        match rule.read(&namespace, raw).map_err(|e| Error::fatal(e.to_string()))? {
            Some(transformed) => Ok(Seen::of(&transformed)),
            None => Ok(Seen::of(raw).map(|s| Seen { filtered: true, ..s })),
        }
    }
}

/// The transform rule source documents go through before they are compared, if any.
pub type View<'a> = Option<&'a transform::Rule>;

/// The exact bytes of an `_id` (an Int32 and an Int64 of the same value differ).
pub fn key_of(id: &Bson) -> Vec<u8> {
    bson::to_vec(&doc! {"_id": id.clone()}).unwrap_or_default()
}

fn hash_of(bytes: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// The filters that, read one after the other each sorted by `_id`, return exactly the documents
/// with `lo <= _id < hi` (either bound may be open). Pure.
pub fn window(lo: Option<&Bson>, hi: Option<&Bson>) -> Vec<Document> {
    let first = lo.map_or(0, id_order::bracket);
    let last = hi.map_or(id_order::BRACKET_COUNT - 1, id_order::bracket);
    (first..=last)
        .map(|b| {
            let mut condition = doc! {"$type": id_order::bracket_types(b)};
            // NaN sorts before every other number but matches no range: from NaN on is the whole
            // numeric bracket.
            if let Some(lo) = lo.filter(|lo| b == first && !id_order::is_nan(lo)) {
                condition.insert("$gte", lo.clone());
            }
            if let Some(hi) = hi.filter(|_| b == last) {
                condition.insert("$lt", hi.clone());
            }
            doc! {"_id": condition}
        })
        .collect()
}

/// Up to `limit` documents of `[lo, hi)` in `_id` order.
pub async fn read(
    coll: &mongodb::Collection<RawDocumentBuf>,
    lo: Option<&Bson>,
    hi: Option<&Bson>,
    limit: usize,
) -> Result<Vec<Seen>, Error> {
    read_as(coll, None, lo, hi, limit).await
}

/// [`read`] through a view: documents its filter leaves out come back `filtered`, in their place.
pub async fn read_as(
    coll: &mongodb::Collection<RawDocumentBuf>,
    view: View<'_>,
    lo: Option<&Bson>,
    hi: Option<&Bson>,
    limit: usize,
) -> Result<Vec<Seen>, Error> {
    let mut seen = Vec::new();
    for filter in window(lo, hi) {
        if seen.len() >= limit {
            break;
        }
        let left = i64::try_from(limit - seen.len()).unwrap_or(i64::MAX);
        let mut cursor =
            coll.find(filter).sort(doc! {"_id": 1}).limit(left).await.map_err(|e| Error::mongo("verify read", e))?;
        while let Some(raw) = cursor.try_next().await.map_err(|e| Error::mongo("verify read", e))? {
            seen.extend(Seen::viewed(coll, &raw, view)?);
        }
    }
    Ok(seen)
}

/// The documents with these `_id`s (exactly these: see [`one`]), by `_id` key, read `CHUNK` at a
/// time; through a view, documents its filter leaves out are as good as missing.
pub async fn many_as(
    coll: &mongodb::Collection<RawDocumentBuf>,
    view: View<'_>,
    ids: &[&Bson],
) -> Result<std::collections::HashMap<Vec<u8>, Seen>, Error> {
    const CHUNK: usize = 1000;
    let mut found = std::collections::HashMap::new();
    for chunk in ids.chunks(CHUNK) {
        let wanted: std::collections::HashSet<Vec<u8>> = chunk.iter().map(|id| key_of(id)).collect();
        let list: Vec<Bson> = chunk.iter().map(|id| (*id).clone()).collect();
        let mut cursor = coll.find(doc! {"_id": {"$in": list}}).await.map_err(|e| Error::mongo("verify read", e))?;
        while let Some(raw) = cursor.try_next().await.map_err(|e| Error::mongo("verify read", e))? {
            if let Some(seen) = Seen::viewed(coll, &raw, view)?.filter(|s| !s.filtered && wanted.contains(&s.key)) {
                found.insert(seen.key.clone(), seen);
            }
        }
    }
    Ok(found)
}

/// The document with this `_id` (exactly this one: the same value of another numeric type is
/// another document here), if there is one.
pub async fn one(coll: &mongodb::Collection<RawDocumentBuf>, id: &Bson) -> Result<Option<Seen>, Error> {
    let key = key_of(id);
    let mut cursor = coll.find(doc! {"_id": id.clone()}).await.map_err(|e| Error::mongo("verify read", e))?;
    while let Some(raw) = cursor.try_next().await.map_err(|e| Error::mongo("verify read", e))? {
        if let Some(seen) = Seen::of(&raw).filter(|s| s.key == key) {
            return Ok(Some(seen));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_within_one_bracket_is_one_read() {
        let filters = window(Some(&Bson::Int32(5)), Some(&Bson::Int64(90)));
        assert_eq!(filters.len(), 1);
        let condition = filters[0].get_document("_id").expect("_id");
        assert_eq!(condition.get("$gte"), Some(&Bson::Int32(5)));
        assert_eq!(condition.get("$lt"), Some(&Bson::Int64(90)));
    }

    #[test]
    fn a_window_across_brackets_reads_each_in_order() {
        let filters = window(Some(&Bson::Int32(5)), Some(&Bson::String("m".into())));
        assert_eq!(filters.len(), 2, "numbers from 5, then strings below m");
        assert!(filters[0].get_document("_id").expect("_id").contains_key("$gte"));
        assert!(filters[1].get_document("_id").expect("_id").contains_key("$lt"));
        assert_eq!(window(None, None).len(), id_order::BRACKET_COUNT, "everything: every bracket");
    }

    #[test]
    fn a_window_from_a_nan_reads_every_number() {
        // The server matches no range against NaN (`$gte: NaN` finds only NaN), while NaN sorts
        // before every other number: a window from NaN is the numbers bracket from its start.
        let filters = window(Some(&Bson::Double(f64::NAN)), Some(&Bson::Int32(100)));
        let condition = filters[0].get_document("_id").expect("_id");
        assert!(!condition.contains_key("$gte"), "{condition:?}");
        assert_eq!(condition.get("$lt"), Some(&Bson::Int32(100)));
    }

    #[test]
    fn keys_and_hashes_are_exact() {
        assert_ne!(key_of(&Bson::Int32(8)), key_of(&Bson::Int64(8)));
        let a = RawDocumentBuf::from_document(&doc! {"_id": 1, "a": 1, "b": 2}).expect("bson");
        let b = RawDocumentBuf::from_document(&doc! {"_id": 1, "b": 2, "a": 1}).expect("bson");
        let c = RawDocumentBuf::from_document(&doc! {"_id": 1, "a": 1.0, "b": 2}).expect("bson");
        let (a, b, c) = (Seen::of(&a).expect("seen"), Seen::of(&b).expect("seen"), Seen::of(&c).expect("seen"));
        assert_eq!(a.key, b.key);
        assert_ne!(a.hash, b.hash, "field order counts");
        assert_ne!(a.hash, c.hash, "types count");
    }
}
