//! One change event, or one document read whole, through its namespace's rule.
//!
//! The filter decides on the whole source document, before the field rules. For an update it
//! compares the document before (the pre-image when recorded) with the document now (the
//! `updateLookup` result):
//!
//! | before | now | sent |
//! |---|---|---|
//! | matched | matches | the update, its document and description through the field rules |
//! | did not match | matches | the document whole, as a replace (`u` without `updateDescription`) |
//! | matched | does not match | a delete (`d`, then a tombstone) |
//! | did not match | does not match | nothing |
//!
//! Without a pre-image, "before" is what "now" says when the update changed none of the paths
//! the filter reads, and unknown otherwise: unknown and matching now is sent as a replace,
//! unknown and not matching as a delete (a delete of a document the target never had is a
//! no-op). An update whose document is gone (deleted since: the delete follows) keeps its
//! description through the field rules; with a filter it goes without one (the delete that
//! follows leaves the target right whatever the document was). An update whose description the
//! rules empty (it changed only excluded fields) is not sent. Inserts and snapshot reads that do
//! not match are not sent; deletes always are, unless a pre-image shows the document did not
//! match.

use bson::{Document, RawDocumentBuf};
use envelope::{ChangeEvent, Op};

use crate::rules::Rule;
use crate::update::touches;

/// A document the rules cannot read or write back.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error("a document of {namespace} cannot be read for the transform rules: {reason}")]
    Decode { namespace: String, reason: String },
    #[error("a document of {namespace} cannot be written after the transform rules: {reason}")]
    Encode { namespace: String, reason: String },
}

impl Rule {
    /// The event as it leaves the source region; `None` when nothing is to be sent.
    pub fn change(
        &self,
        event: ChangeEvent<RawDocumentBuf>,
    ) -> Result<Option<ChangeEvent<RawDocumentBuf>>, TransformError> {
        let ns = event.ns.to_string();
        let decode = |raw: &RawDocumentBuf| {
            raw.to_document().map_err(|e| TransformError::Decode { namespace: ns.clone(), reason: e.to_string() })
        };
        let before = event.before.as_ref().map(decode).transpose()?;
        let after = event.after.as_ref().map(decode).transpose()?;
        let passed_before = before.as_ref().map(|b| self.passes(b));
        let mut out = ChangeEvent {
            document_key: self.fields.document(&event.document_key),
            before: None,
            after: None,
            update_description: None,
            ..event
        };
        match (out.op, &after) {
            (Op::Read | Op::Create, Some(doc)) if !self.passes(doc) => return Ok(None),
            (Op::Read | Op::Create, _) => {}
            (Op::Delete, _) if passed_before == Some(false) => return Ok(None),
            (Op::Delete, _) => {}
            (Op::Update, None) if self.filter.is_some() => {
                if passed_before == Some(false) {
                    return Ok(None);
                }
            }
            (Op::Update, None) => {
                out.update_description = event.update_description.as_ref().map(|d| self.fields.update(d, None));
            }
            (Op::Update, Some(doc)) => {
                let now = self.passes(doc);
                let was = match (&self.filter, passed_before, &event.update_description) {
                    (None, _, _) => Some(true),
                    (Some(_), Some(was), _) => Some(was),
                    (Some(filter), None, Some(description)) if !touches(description, filter.paths()) => Some(now),
                    (Some(_), None, _) => None,
                };
                match (was, now) {
                    (Some(false), false) => return Ok(None),
                    (_, false) => {
                        out.op = Op::Delete;
                        out.before = before.as_ref().map(|b| self.encode(&ns, b)).transpose()?;
                        return Ok(Some(out));
                    }
                    (Some(true), true) => {
                        if let Some(description) = &event.update_description {
                            let changed = self.fields.update(description, Some(doc));
                            let emptied = changed.updated_fields.is_empty()
                                && changed.removed_fields.is_empty()
                                && changed.truncated_arrays.is_empty();
                            let had = !description.updated_fields.is_empty()
                                || !description.removed_fields.is_empty()
                                || !description.truncated_arrays.is_empty();
                            if emptied && had {
                                return Ok(None);
                            }
                            out.update_description = Some(changed);
                        }
                    }
                    // Arrives whole: a replace.
                    (_, true) => {}
                }
            }
        }
        out.after = match (&after, &event.after) {
            (Some(doc), Some(raw)) => Some(self.document_raw(&ns, doc, raw)?),
            _ => None,
        };
        out.before = before.as_ref().map(|b| self.encode(&ns, b)).transpose()?;
        Ok(Some(out))
    }

    /// A document read whole (a snapshot read, `verify`): `None` when the filter leaves it out.
    pub fn read(&self, namespace: &str, raw: &RawDocumentBuf) -> Result<Option<RawDocumentBuf>, TransformError> {
        let doc = raw
            .to_document()
            .map_err(|e| TransformError::Decode { namespace: namespace.to_string(), reason: e.to_string() })?;
        if !self.passes(&doc) {
            return Ok(None);
        }
        self.document_raw(namespace, &doc, raw).map(Some)
    }

    fn document_raw(
        &self,
        namespace: &str,
        doc: &Document,
        raw: &RawDocumentBuf,
    ) -> Result<RawDocumentBuf, TransformError> {
        if self.fields.is_empty() {
            return Ok(raw.clone());
        }
        self.encode(namespace, doc)
    }

    fn encode(&self, namespace: &str, doc: &Document) -> Result<RawDocumentBuf, TransformError> {
        RawDocumentBuf::from_document(&self.fields.document(doc))
            .map_err(|e| TransformError::Encode { namespace: namespace.to_string(), reason: e.to_string() })
    }
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
