//! What a failback keeps, so that every step can be run again after a crash and goes on where it
//! stopped:
//!
//! - the failover, on the new primary (`<failback.failover_database>.failover`, `_id` the forward
//!   sink's group): T (`consistent_up_to`), F (`promoted_at`), and once the original direction is
//!   back, S (`switched_back_at`). Written once: running `failover record` again never takes a
//!   later F;
//! - the failback's progress, on the old primary (`<apply.metadata_database>.failback`, `_id` the
//!   failover's): the phase reached, where the scan of the old primary's changes ended, the
//!   reconciliation's report and S.

use bson::{doc, DateTime, Document};
use envelope::ClusterTime;
use futures::TryStreamExt;

use crate::error::Error;

/// The collection of failovers, on the new primary.
pub const FAILOVERS: &str = "failover";
/// The collection of failback progress, on the old primary.
pub const PROGRESS: &str = "failback";

/// A failover, as `failover record` kept it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failover {
    /// The forward sink's consumer group.
    pub id: String,
    /// T: every change the old primary made at or before it is on the new primary.
    pub consistent_up_to: ClusterTime,
    /// F: the new primary's cluster time when it was promoted; its own writes come after it.
    pub promoted_at: ClusterTime,
    /// Messages the forward sink had not applied (changes after T that may never cross).
    pub pending_messages: i64,
    /// The `namespaces` of the `[transforms]` rules the old primary's documents went through on
    /// their way to the new primary: what it holds of them is not what the old primary had.
    pub transformed: Vec<String>,
    pub recorded_at: DateTime,
    /// S, once the original direction restarts.
    pub switched_back_at: Option<ClusterTime>,
}

impl Failover {
    pub fn to_document(&self) -> Document {
        let mut d = doc! {
            "_id": &self.id,
            "consistent_up_to": bson::Timestamp::from(self.consistent_up_to),
            "promoted_at": bson::Timestamp::from(self.promoted_at),
            "pending_messages": self.pending_messages,
            "transformed": &self.transformed,
            "recorded_at": self.recorded_at,
        };
        if let Some(at) = self.switched_back_at {
            d.insert("switched_back_at", bson::Timestamp::from(at));
        }
        d
    }

    pub fn from_document(d: &Document) -> Result<Self, Error> {
        let bad = |what: &str| Error::fatal(format!("failover record {d}: no {what}"));
        Ok(Self {
            id: d.get_str("_id").map_err(|_| bad("_id"))?.to_string(),
            consistent_up_to: d.get_timestamp("consistent_up_to").map_err(|_| bad("consistent_up_to"))?.into(),
            promoted_at: d.get_timestamp("promoted_at").map_err(|_| bad("promoted_at"))?.into(),
            pending_messages: d.get_i64("pending_messages").unwrap_or(0),
            transformed: d
                .get_array("transformed")
                .map(|list| list.iter().filter_map(|n| n.as_str().map(String::from)).collect())
                .unwrap_or_default(),
            recorded_at: d.get_datetime("recorded_at").copied().unwrap_or(DateTime::MIN),
            switched_back_at: d.get_timestamp("switched_back_at").ok().map(ClusterTime::from),
        })
    }

    /// As JSON for the commands' output.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "failover": self.id,
            "consistent_up_to_cluster_time": time_json(self.consistent_up_to),
            "promoted_at_cluster_time": time_json(self.promoted_at),
            "pending_messages": self.pending_messages,
            "transformed": self.transformed,
            "recorded_at": self.recorded_at.try_to_rfc3339_string().unwrap_or_default(),
            "switched_back_at_cluster_time": self.switched_back_at.map(time_json),
        })
    }
}

/// `{t, i}`, as `status --json` prints cluster times.
pub fn time_json(at: ClusterTime) -> serde_json::Value {
    serde_json::json!({"t": at.t, "i": at.i})
}

/// `<seconds>:<increment>`, as cdc-source's `capture.start_after_cluster_time` takes it.
pub fn time_text(at: ClusterTime) -> String {
    format!("{}:{}", at.t, at.i)
}

/// The failover named `group`; with no name, the one not switched back yet (an error when there
/// are several), else the last one recorded (a step run again after the switch back).
pub async fn failover(db: &mongodb::Database, group: &str) -> Result<Option<Failover>, Error> {
    let coll = db.collection::<Document>(FAILOVERS);
    let filter = if group.is_empty() {
        doc! {}
    } else {
        doc! {"_id": group}
    };
    let found: Vec<Failover> = coll
        .find(filter)
        .await
        .map_err(|e| Error::mongo("read the failover record", e))?
        .try_collect::<Vec<Document>>()
        .await
        .map_err(|e| Error::mongo("read the failover record", e))?
        .iter()
        .map(Failover::from_document)
        .collect::<Result<_, _>>()?;
    let open: Vec<&Failover> = found.iter().filter(|f| f.switched_back_at.is_none()).collect();
    if open.len() > 1 {
        return Err(Error::fatal(format!(
            "several failovers are recorded in {}.{FAILOVERS}: set failback.failover_group to the forward sink's \
             consume.group_id",
            db.name()
        )));
    }
    Ok(open.first().copied().or_else(|| found.iter().max_by_key(|f| f.recorded_at)).cloned())
}

/// Records `failover` unless one of that group is recorded already; returns the one kept.
pub async fn record_failover(db: &mongodb::Database, failover: &Failover) -> Result<Failover, Error> {
    let coll = db.collection::<Document>(FAILOVERS);
    let mut fields = failover.to_document();
    fields.remove("_id");
    coll.update_one(doc! {"_id": &failover.id}, doc! {"$setOnInsert": fields})
        .upsert(true)
        .await
        .map_err(|e| Error::mongo("record the failover", e))?;
    let kept = coll
        .find_one(doc! {"_id": &failover.id})
        .await
        .map_err(|e| Error::mongo("read the failover record", e))?
        .ok_or_else(|| Error::fatal("the failover record is gone after it was written".into()))?;
    Failover::from_document(&kept)
}

/// Notes on the failover record that the original direction restarted after `at`.
pub async fn switched_back(db: &mongodb::Database, id: &str, at: ClusterTime) -> Result<(), Error> {
    db.collection::<Document>(FAILOVERS)
        .update_one(doc! {"_id": id}, doc! {"$set": {"switched_back_at": bson::Timestamp::from(at)}})
        .await
        .map_err(|e| Error::mongo("record the switch back", e))?;
    Ok(())
}

/// How far a failback got, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Nothing done yet (or a reconciliation that stopped before its versions were all saved).
    New,
    /// Every divergent version is saved in `rollback`; the re-sends may not all be answered.
    Saved,
    /// The new primary re-sent every rolled back document.
    Reconciled,
    /// The original direction restarts after `switched_back_at`.
    SwitchedBack,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::New => "new",
            Phase::Saved => "saved",
            Phase::Reconciled => "reconciled",
            Phase::SwitchedBack => "switched_back",
        }
    }

    fn of(name: &str) -> Self {
        match name {
            "saved" => Phase::Saved,
            "reconciled" => Phase::Reconciled,
            "switched_back" => Phase::SwitchedBack,
            _ => Phase::New,
        }
    }
}

/// Where a failback stands on the old primary: its phase and what its steps recorded (its
/// document in [`PROGRESS`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FailbackState {
    pub phase: Phase,
    /// Where the scan of the old primary's changes ended (its marker).
    pub scanned_up_to: Option<ClusterTime>,
    /// What the scan found, kept for the report of a run that finds the work done.
    pub scan: Option<Document>,
    pub switched_back_at: Option<ClusterTime>,
}

/// The progress of failover `id` (phase `New` when there is none).
pub async fn progress(db: &mongodb::Database, id: &str) -> Result<FailbackState, Error> {
    let found = db
        .collection::<Document>(PROGRESS)
        .find_one(doc! {"_id": id})
        .await
        .map_err(|e| Error::mongo("read the failback's progress", e))?
        .unwrap_or_default();
    Ok(FailbackState {
        phase: Phase::of(found.get_str("phase").unwrap_or_default()),
        scanned_up_to: found.get_timestamp("scanned_up_to").ok().map(ClusterTime::from),
        scan: found.get_document("scan").ok().cloned(),
        switched_back_at: found.get_timestamp("switched_back_at").ok().map(ClusterTime::from),
    })
}

/// The fields that move a failback to `phase`: `fields`, the phase, and when (`<phase>_on`, a
/// wall-clock time: `switched_back_at` is S, a cluster time). Pure.
fn progress_update(phase: Phase, fields: Document) -> Document {
    let mut set = fields;
    set.insert("phase", phase.name());
    set.insert(format!("{}_on", phase.name()), DateTime::now());
    set
}

/// Moves failover `id` to `phase`, with `fields` set beside it.
pub async fn advance(db: &mongodb::Database, id: &str, phase: Phase, fields: Document) -> Result<(), Error> {
    let set = progress_update(phase, fields);
    db.collection::<Document>(PROGRESS)
        .update_one(doc! {"_id": id}, doc! {"$set": set})
        .upsert(true)
        .await
        .map_err(|e| Error::mongo("record the failback's progress", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failover_reads_back_as_written() {
        let failover = Failover {
            id: "orders-sink".into(),
            consistent_up_to: ClusterTime { t: 100, i: 3 },
            promoted_at: ClusterTime { t: 130, i: 1 },
            pending_messages: 12,
            transformed: vec!["app\\.people".into()],
            recorded_at: DateTime::from_millis(1_000),
            switched_back_at: None,
        };
        assert_eq!(Failover::from_document(&failover.to_document()).expect("reads"), failover);
        let back = Failover { switched_back_at: Some(ClusterTime { t: 200, i: 0 }), ..failover };
        assert_eq!(Failover::from_document(&back.to_document()).expect("reads"), back);
        assert!(Failover::from_document(&doc! {"_id": "x"}).is_err(), "T and F are required");
        assert_eq!(time_text(ClusterTime { t: 130, i: 1 }), "130:1");
    }

    #[test]
    fn a_phase_keeps_the_fields_recorded_with_it() {
        let s = bson::Timestamp { time: 200, increment: 4 };
        let set = progress_update(Phase::SwitchedBack, doc! {"switched_back_at": s});
        assert_eq!(set.get_timestamp("switched_back_at"), Ok(s), "S stays a cluster time");
        assert_eq!(set.get_str("phase"), Ok("switched_back"));
        assert!(set.get_datetime("switched_back_on").is_ok());
    }

    #[test]
    fn phases_are_ordered_and_named() {
        assert!(Phase::New < Phase::Saved && Phase::Saved < Phase::Reconciled);
        assert!(Phase::Reconciled < Phase::SwitchedBack);
        for phase in [Phase::New, Phase::Saved, Phase::Reconciled, Phase::SwitchedBack] {
            assert_eq!(Phase::of(phase.name()), phase);
        }
    }
}
