//! One namespace verified: its documents compared and the differences checked again, then what it
//! is, its options and indexes, checked again too; or a namespace found only on the target.

use bson::{Document, RawDocumentBuf};
use envelope::Namespace;

use super::documents::{self, Counts, Held, Pace, Pair, Tally};
use super::recheck::{self, Replication};
use super::report::Findings;
use super::{indexes, scope};
use crate::error::Error;

/// What every namespace is verified with.
pub struct Verifier<'a> {
    pub source: &'a mongodb::Client,
    pub target: &'a mongodb::Client,
    pub replication: &'a Replication<'a>,
    pub pace: &'a Pace,
    pub held: &'a Held,
    /// `--sample N`; none: every document.
    pub sample: Option<usize>,
    pub parallel: usize,
    pub max_rechecked: usize,
    /// `[transforms]`: the source as cdc-source sends it is what the target must equal.
    pub transforms: &'a transform::Rules,
}

impl Verifier<'_> {
    /// Source namespace `ns`, `mapped` on the target.
    pub async fn compare(&self, ns: &Namespace, mapped: &Namespace, kind: scope::Kind) -> Result<Findings, Error> {
        let pair = Pair {
            source: self.source.database(&ns.db).collection::<RawDocumentBuf>(&ns.coll),
            target: self.target.database(&mapped.db).collection::<RawDocumentBuf>(&mapped.coll),
            rule: self.transforms.for_namespace(&ns.to_string()),
        };
        // Documents a server refuses to read (a broken time-series collection, say) differ.
        let (tally, rechecked, unreadable) = match self.documents(&pair, kind).await {
            Ok((tally, rechecked)) => (tally, rechecked, None),
            Err(e) if !e.is_retriable() => {
                let tally = Tally::new(self.max_rechecked);
                (tally, recheck::Rechecked::default(), Some(format!("documents cannot be compared: {e}")))
            }
            Err(e) => return Err(e),
        };
        let (source_db, target_db) = (self.source.database(&ns.db), self.target.database(&mapped.db));
        let schema = || indexes::differences(&source_db, &ns.coll, &target_db, &mapped.coll, pair.view());
        let not_rechecked = tally.found.total().saturating_sub(rechecked.total());
        let (mut schema, schema_unconfirmed) = self.settle(schema().await?, schema).await?;
        schema.extend(unreadable);
        Ok(Findings {
            kind,
            only_on_target: false,
            compared: tally.compared,
            found: tally.found,
            different: rechecked.different,
            unconfirmed: rechecked.unconfirmed,
            in_flight: rechecked.in_flight,
            repaired: 0,
            not_rechecked,
            extra_documents: 0,
            schema,
            schema_unconfirmed,
        })
    }

    /// The documents compared and their differences checked again.
    async fn documents(&self, pair: &Pair, kind: scope::Kind) -> Result<(Tally, recheck::Rechecked), Error> {
        let cap = self.max_rechecked;
        let mut tally = match (kind.has_documents(), self.sample) {
            (false, _) => Tally::new(cap),
            (true, Some(size)) => documents::compare_sample(pair, size, self.pace, self.held, cap).await?,
            (true, None) => documents::compare_all(pair, self.parallel, self.pace, self.held, cap).await?,
        };
        let kept = std::mem::take(&mut tally.kept);
        let count = kept.len();
        let rechecked = recheck::recheck(pair, kept, self.replication, self.pace, self.held).await;
        self.held.sub(count);
        Ok((tally, rechecked?))
    }

    /// A namespace that exists only on the target, once the consistency point has passed the
    /// present and it still does (a drop may be on its way).
    pub async fn only_on_target(&self, ns: &Namespace, kind: scope::Kind) -> Result<Findings, Error> {
        let what = match kind {
            scope::Kind::Collection => "collection",
            scope::Kind::View => "view",
            scope::Kind::Timeseries => "time-series collection",
        };
        let line = format!("{what} only on the target");
        let exists =
            || async { Ok(scope::kind_of(self.target, ns).await?.map(|_| vec![line.clone()]).unwrap_or_default()) };
        let (schema, schema_unconfirmed) = self.settle(vec![line.clone()], exists).await?;
        let documents = if kind.has_documents() && !schema.is_empty() {
            let coll = self.target.database(&ns.db).collection::<Document>(&ns.coll);
            coll.estimated_document_count().await.unwrap_or(0)
        } else {
            0
        };
        Ok(Findings {
            kind,
            only_on_target: true,
            found: Counts { extra: documents, ..Counts::default() },
            extra_documents: documents,
            schema,
            schema_unconfirmed,
            ..Findings::unreadable(kind, String::new())
        })
    }

    /// Schema differences `first` found, checked again once the consistency point has passed the
    /// present: those still there are differences; all are unconfirmed when it did not pass.
    async fn settle<F, Fut>(&self, first: Vec<String>, again: F) -> Result<(Vec<String>, Vec<String>), Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<String>, Error>>,
    {
        if first.is_empty() {
            return Ok((first, Vec::new()));
        }
        if !self.replication.passes(self.replication.now().await?).await? {
            return Ok((Vec::new(), first));
        }
        let again = again().await?;
        Ok((first.into_iter().filter(|line| again.contains(line)).collect(), Vec::new()))
    }
}
