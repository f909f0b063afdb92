//! `verify --repair`: the documents found different (or unconfirmed) are sent again by
//! cdc-source, ordered with its stream (a document changing meanwhile is never set back to an
//! older copy), then checked again as every difference is (`recheck.rs`): once the consistency
//! point passes the present, a target seen at a state the source had since the request is
//! repaired; what still differs is reported. Namespaces only on the target, schema differences
//! and differences not kept (`verify.max_rechecked`) are left to the operator.

use bson::{Bson, RawDocumentBuf};
use envelope::Namespace;

use super::documents::{Difference, Kind, Pair};
use super::namespace::Verifier;
use super::read;
use super::recheck::{self, Rechecked};
use super::report::Findings;
use crate::config::Config;
use crate::error::Error;
use crate::resend::Resend;

/// What the repair asked for and what cdc-source answered.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Summary {
    pub requested: u64,
    pub requests: u64,
    pub resent: u64,
    pub deleted: u64,
    pub superseded: u64,
    /// Requests no capture answered within `repair.reply_timeout_ms`, or refusals.
    pub unanswered: u64,
    pub refused: Vec<String>,
}

/// Repairs the document differences of `found` (source namespace, target namespace, findings)
/// and replaces them by what the recheck after the repair concluded. The documents are read and
/// checked again as `verifier` compared them: the same clients, transforms, pace and bound.
pub async fn repair(
    config: &Config,
    verifier: &Verifier<'_>,
    found: &mut [(Namespace, Namespace, Findings)],
) -> Result<Summary, Error> {
    let Verifier { source, target, transforms, replication, pace, held, .. } = verifier;
    let mut summary = Summary::default();
    let mut watched: Vec<(usize, Pair, Vec<Difference>)> = Vec::new();
    let mut resend: Option<Resend> = None;
    for (index, (ns, mapped, findings)) in found.iter().enumerate() {
        let wanted: Vec<(Bson, Kind)> = findings.different.iter().chain(&findings.unconfirmed).cloned().collect();
        if wanted.is_empty() {
            continue;
        }
        let pair = Pair {
            source: source.database(&ns.db).collection::<RawDocumentBuf>(&ns.coll),
            target: target.database(&mapped.db).collection::<RawDocumentBuf>(&mapped.coll),
            rule: transforms.for_namespace(&ns.to_string()),
        };
        // The source's states before the request: the target reaching one of them, or a later
        // one, is repaired.
        let ids: Vec<&Bson> = wanted.iter().map(|(id, _)| id).collect();
        pace.take(ids.len() as u64).await;
        let before = read::many_as(&pair.source, pair.view(), &ids).await?;
        let differences: Vec<Difference> = wanted
            .iter()
            .map(|(id, kind)| {
                let key = read::key_of(id);
                let source = before.get(&key).map(|s| s.hash);
                Difference { id: id.clone(), key, kind: *kind, source }
            })
            .collect();
        if resend.is_none() {
            resend = Some(Resend::new(config).await?);
        }
        if let Some(resend) = resend.as_mut() {
            let sent = resend.request(ns, wanted.iter().map(|(id, _)| id.clone()).collect(), "verify --repair").await?;
            summary.requests += sent.len() as u64;
        }
        summary.requested += wanted.len() as u64;
        held.add(differences.len());
        watched.push((index, pair, differences));
    }
    let Some(resend) = resend else { return Ok(summary) };
    let answers = resend.answers().await?;
    summary.unanswered = answers.unanswered.len() as u64;
    for reply in answers.replies.values() {
        summary.resent += reply.resent;
        summary.deleted += reply.deleted;
        summary.superseded += reply.superseded;
        summary.refused.extend(reply.error.clone());
    }
    for (index, pair, differences) in watched {
        let count = differences.len();
        let Rechecked { different, unconfirmed, in_flight } =
            recheck::recheck(&pair, differences, replication, pace, held).await?;
        held.sub(count);
        let findings = &mut found[index].2;
        findings.different = different;
        findings.unconfirmed = unconfirmed;
        findings.repaired = in_flight;
    }
    Ok(summary)
}
