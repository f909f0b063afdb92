//! Issue 28, against the real servers: the whole failback story with the two loopback replica
//! sets as the two regions (source = A, the old primary; target = B, the new one). A replicates
//! to B under a workload; the sink stops and the last changes on A never cross (the outage);
//! `failover record` keeps T and F; B is promoted and written to (also documents A changed after
//! T); A comes back: the reverse capture from F, `failback reconcile` (A's divergent documents,
//! and only they, saved in the rollback collection, then brought to B's state), a crash in the
//! middle of it run again, A equal to B (`verify` exit 0); the planned switch back, and A → B
//! again from the new point without a snapshot, equal under a final workload. No step copies a
//! collection: the documents read are counted.

use std::ops::Range;
use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use e2e::pipeline::{metric, Pipeline};
use e2e::sink_commands::{sink_command, source_now, timed_write};
use envelope::ClusterTime;
use futures::TryStreamExt;
use service_kit::config::SecretUri;
use test_support::eventually;
use tokio_util::sync::CancellationToken;

/// Seconds the side being left must have been quiet.
const QUIET: u64 = 4;

/// A pipeline in another direction or generation of `p`: its own capture name, prefix, group and
/// dead-letter topic (`<name>_<suffix>`), starting after `start_after` without a snapshot; from B
/// to A when `reverse`. The databases (and the metadata database's name) stay `p`'s.
fn direction(p: &Pipeline, suffix: &str, reverse: bool, start_after: ClusterTime) -> Pipeline {
    let prefix = format!("{}_{suffix}", p.name);
    let mut source_config = p.source_config.clone();
    source_config.capture.name = prefix.clone();
    source_config.topics.prefix = prefix.clone();
    source_config.snapshot.mode = cdc_source::SnapshotMode::Never;
    source_config.capture.start_after_cluster_time = format!("{}:{}", start_after.t, start_after.i);
    let mut sink_config = p.sink_config.clone();
    sink_config.consume.topics = vec![format!("^{prefix}\\..*")];
    sink_config.consume.group_id = format!("{prefix}-sink");
    sink_config.consume.dead_letter_topic = format!("{prefix}-dlq");
    let (mut source, mut target) = (p.source.clone(), p.target.clone());
    if reverse {
        source_config.mongo.uri = p.sink_config.mongo.uri.clone();
        sink_config.mongo.uri = p.source_config.mongo.uri.clone();
        std::mem::swap(&mut source, &mut target);
    }
    Pipeline { name: p.name.clone(), source, target, source_config, sink_config }
}

/// Runs `sink-writer <args> --json` with `p`'s sink settings and a short quiet period.
async fn command(p: &Pipeline, args: &[&str]) -> (i32, serde_json::Value) {
    let started = Instant::now();
    let out = sink_command(p, args, &[("FAILBACK__QUIET_SECONDS", &QUIET.to_string())]).await;
    eprintln!("failback: sink-writer {} took {:.1} s", args.join(" "), started.elapsed().as_secs_f64());
    out
}

/// One more write of an application to `db` (an `$inc` of document 0), and its cluster time: the
/// consistency point passes it once every earlier change is applied (an idle DocumentDB stream
/// tells no position, so the point is awaited past a write, not past the present).
async fn last_write(db: &mongodb::Database) -> ClusterTime {
    let at =
        timed_write(db, doc! {"update": "docs", "updates": [{"q": {"_id": 0}, "u": {"$inc": {"n": 1_i64}}}]}).await;
    // Another database's write moves MongoDB's stream position past it at once (an idle replica
    // set's oplog moves every 10 s); nothing captured.
    let tick = db.client().database(&format!("{}_tick", db.name()));
    tick.collection::<Document>("ticks").insert_one(doc! {"at": bson::Timestamp::from(at)}).await.expect("tick");
    at
}

/// Waits until `p`'s consistency point passes `at`.
async fn point_passes(p: &Pipeline, at: ClusterTime) {
    eventually("the consistency point passes the last write", Duration::from_secs(120), || async {
        let (_, status) = sink_command(p, &["status"], &[]).await;
        let point = &status["consistent_up_to_cluster_time"];
        let point = ClusterTime { t: point["t"].as_u64()? as u32, i: point["i"].as_u64()? as u32 };
        (point >= at).then_some(())
    })
    .await
}

fn time_of(value: &serde_json::Value) -> ClusterTime {
    ClusterTime { t: value["t"].as_u64().expect("t") as u32, i: value["i"].as_u64().expect("i") as u32 }
}

/// An application writing to one side until stopped: every 20 ms an insert (`_id`s from
/// `first`), an `$inc` of one of `ids`, and every fifth time a delete of another of them. It never
/// touches the documents the failback rolls back.
struct Application {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<i32>,
}

impl Application {
    fn start(coll: mongodb::Collection<Document>, side: &'static str, ids: Range<i32>, first: i32) -> Self {
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut round = 0;
            while !stopped.is_cancelled() {
                coll.insert_one(doc! {"_id": first + round, "n": 0_i64, "side": side}).await.expect("insert");
                let one = ids.start + round.rem_euclid(ids.len() as i32);
                coll.update_one(doc! {"_id": one}, doc! {"$inc": {"n": 1_i64}, "$set": {"by": side}})
                    .await
                    .expect("update");
                if round % 5 == 0 {
                    coll.delete_one(doc! {"_id": one + 1}).await.expect("delete");
                }
                round += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            round
        });
        Self { stop, task }
    }

    /// Stops it; how many rounds it wrote.
    async fn stop(self) -> i32 {
        self.stop.cancel();
        self.task.await.expect("the application")
    }
}

/// The rollback collection on A (`p`: the forward pipeline).
async fn rollback_rows(p: &Pipeline) -> Vec<Document> {
    p.source
        .database(&p.sink_config.apply.metadata_database)
        .collection::<Document>("rollback")
        .find(doc! {})
        .await
        .expect("rollback")
        .try_collect()
        .await
        .expect("rollback rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_is_failed_back_without_a_copy_and_the_old_primarys_divergent_writes_are_rolled_back() {
    let started = Instant::now();
    let phase = |what: &str| eprintln!("failback: {what} after {:.1} s", started.elapsed().as_secs_f64());
    let mut p = Pipeline::new("failback", 2).await;
    p.source_config.delivery.watermark_interval_ms = 300;
    // The pipelines of the way back and of the switch back find their new topics soon.
    p.sink_config.consume.topic_refresh_interval_ms = 500;
    let (docs_a, orders_a) =
        (p.source_db().collection::<Document>("docs"), p.source_db().collection::<Document>("orders"));
    let (docs_b, orders_b) =
        (p.target_db().collection::<Document>("docs"), p.target_db().collection::<Document>("orders"));
    docs_a.insert_many((0..300).map(|i| doc! {"_id": i, "n": 0_i64, "v": "start"})).await.expect("docs");
    orders_a.insert_many((0..100).map(|i| doc! {"_id": format!("o{i}"), "qty": i})).await.expect("orders");

    phase("step 1");
    // 1. A → B under a workload.
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    phase("forward started");
    let app = Application::start(docs_a.clone(), "A", 200..260, 1000);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(app.stop().await > 10, "the application wrote while A replicated to B");
    phase("forward workload");
    point_passes(&p, last_write(&p.source_db()).await).await;
    phase("forward point");
    p.converged(Duration::from_secs(120)).await;
    let (code, refused) = command(&p, &["failover", "record"]).await;
    assert_eq!(code, 1, "T still moves while the sink runs: {refused}");
    assert!(refused["blockers"][0].as_str().unwrap_or_default().contains("still runs"), "{refused}");

    phase("step 2");
    // 2. The outage: the sink stops, and A's last changes never cross (they reach Kafka, which
    //    the source region takes down with it).
    sink.stop().await;
    let divergent_from = source_now(&p).await;
    for id in 1..=4 {
        docs_a.update_one(doc! {"_id": id}, doc! {"$set": {"v": "after T", "side": "A"}}).await.expect("A update");
    }
    docs_a.delete_many(doc! {"_id": {"$in": [10, 11]}}).await.expect("A deletes");
    docs_a.insert_many([doc! {"_id": 5000, "side": "A"}, doc! {"_id": 5001, "side": "A"}]).await.expect("A inserts");
    orders_a.update_one(doc! {"_id": "o1"}, doc! {"$set": {"qty": -1}}).await.expect("A order");
    orders_a.delete_one(doc! {"_id": "o2"}).await.expect("A order delete");
    tokio::time::sleep(Duration::from_secs(1)).await;
    source.stop().await;

    phase("step 3");
    // 3. Failover: T and F recorded in B's metadata database, once.
    let (code, dry) = command(&p, &["failover", "record", "--dry-run"]).await;
    assert_eq!((code, dry["recorded"].as_bool()), (0, Some(false)), "{dry}");
    let failovers = p.target.database(&p.sink_config.apply.metadata_database).collection::<Document>("failover");
    assert_eq!(failovers.count_documents(doc! {}).await.expect("count"), 0, "a dry run writes nothing");
    let (code, recorded) = command(&p, &["failover", "record"]).await;
    assert_eq!((code, recorded["recorded"].as_bool()), (0, Some(true)), "{recorded}");
    let pending = recorded["failover"]["pending_messages"].as_i64().expect("pending");
    assert!(pending >= 10, "the outage's 10 changes are in Kafka, not applied: {recorded}");
    let (t, f) = (
        time_of(&recorded["failover"]["consistent_up_to_cluster_time"]),
        time_of(&recorded["failover"]["promoted_at_cluster_time"]),
    );
    assert!(t <= divergent_from, "T {t:?} is before the outage's first write (after {divergent_from:?})");
    let on_b = docs_b.find_one(doc! {"_id": 1}).await.expect("read").expect("doc 1 on B");
    assert_eq!(on_b.get_str("v"), Ok("start"), "the outage's changes did not cross");
    let (code, again) = command(&p, &["failover", "record"]).await;
    assert_eq!((code, again["already_recorded"].as_bool()), (0, Some(true)), "{again}");
    assert_eq!(time_of(&again["failover"]["promoted_at_cluster_time"]), f, "F is never taken again");

    phase("step 4");
    // 4. B is promoted: the reverse capture from F, and B's own writes, also to documents A
    //    changed after T. A comes back meanwhile, and takes one more write: the reconciliation
    //    refuses while A takes writes.
    let rev = direction(&p, "back", true, f);
    docs_a.update_one(doc! {"_id": 150}, doc! {"$set": {"v": "late", "side": "A"}}).await.expect("A late write");
    let quiet_from = Instant::now();
    let (code, refused) = command(&rev, &["failback", "reconcile"]).await;
    assert_eq!(code, 1, "{refused}");
    assert!(refused["blockers"].to_string().contains("still taking writes"), "{refused}");
    let rev_source = rev.start_source().await;
    docs_b.update_one(doc! {"_id": 1}, doc! {"$set": {"v": "B wins", "side": "B"}}).await.expect("B update");
    docs_b.update_one(doc! {"_id": 10}, doc! {"$set": {"v": "B kept it"}}).await.expect("B update of A's delete");
    docs_b.delete_one(doc! {"_id": 2}).await.expect("B delete of A's update");
    docs_b.insert_one(doc! {"_id": 5000, "side": "B"}).await.expect("B insert of A's _id");
    orders_b.update_one(doc! {"_id": "o3"}, doc! {"$set": {"qty": 333}}).await.expect("B order");
    // B's applications write on through the failback, until the planned switch back.
    let app_b = Application::start(docs_b.clone(), "B", 100..140, 7000);

    phase("step 5");
    // 5. A has been quiet long enough: reconcile.
    tokio::time::sleep(Duration::from_secs(QUIET + 1).saturating_sub(quiet_from.elapsed())).await;
    let expected: Vec<(&str, Bson)> = [1, 2, 3, 4, 10, 11, 150, 5000, 5001]
        .into_iter()
        .map(|id| ("docs", Bson::Int32(id)))
        .chain(["o1", "o2"].into_iter().map(|id| ("orders", Bson::String(id.into()))))
        .collect();
    let (code, dry) = command(&rev, &["failback", "reconcile", "--dry-run"]).await;
    assert_eq!(code, 0, "{dry}");
    assert_eq!(dry["rolled_back"].as_u64(), Some(expected.len() as u64), "{dry}");
    assert!(rollback_rows(&p).await.is_empty(), "a dry run saves nothing");

    // A crash after the versions are saved, before the re-sends: the next run goes on.
    let mut config = rev.sink_config.clone();
    config.verify.source_uri = SecretUri::new(rev.source_config.mongo.uri.expose());
    config.verify.include = format!("{}\\..*", p.name);
    config.status.capture_names = vec![rev.source_config.capture.name.clone()];
    config.failback.quiet_seconds = QUIET;
    sink_writer::hooks::stop_failback_after("saved");
    let args = service_kit::cli::parse_command("failback", &["reconcile", "--json"]).expect("arguments");
    let crashed = sink_writer::failback::failback_command(config, args).await;
    assert_eq!(crashed, std::process::ExitCode::from(2), "stopped by the test hook");
    let saved = rollback_rows(&p).await;
    assert_eq!(saved.len(), expected.len(), "every version saved before the crash: {saved:?}");
    assert!(saved.iter().all(|r| r.get_str("state") == Ok("saved")), "{saved:?}");

    let (code, report) = command(&rev, &["failback", "reconcile"]).await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["rolled_back"].as_u64(), Some(expected.len() as u64), "{report}");
    assert_eq!(report["resend"]["unanswered"], 0, "{report}");
    let by_ns: Vec<(String, u64)> = report["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .map(|n| (n["ns"].as_str().unwrap_or_default().to_string(), n["rolled_back"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(by_ns, vec![(format!("{}.docs", p.name), 9), (format!("{}.orders", p.name), 2)], "{report}");

    // The rollback collection holds the divergent documents, A's versions, and nothing else.
    let rows = rollback_rows(&p).await;
    let mut found: Vec<(String, Bson)> = rows
        .iter()
        .map(|r| (r.get_str("ns").unwrap_or_default().to_string(), r.get("id").cloned().unwrap_or(Bson::Null)))
        .collect();
    let mut wanted: Vec<(String, Bson)> =
        expected.iter().map(|(c, id)| (format!("{}.{c}", p.name), id.clone())).collect();
    found.sort_by_key(|(ns, id)| format!("{ns} {id}"));
    wanted.sort_by_key(|(ns, id)| format!("{ns} {id}"));
    assert_eq!(found, wanted);
    let version = |id: Bson| rows.iter().find(|r| r.get("id") == Some(&id)).cloned().expect("saved");
    assert_eq!(version(Bson::Int32(1)).get_document("document").expect("A's version").get_str("side"), Ok("A"));
    assert_eq!(version(Bson::Int32(10)).get("document"), Some(&Bson::Null), "A had deleted it");
    assert_eq!(version(Bson::Int32(5001)).get_str("new_primary"), Ok("absent"));
    assert!(rows.iter().all(|r| r.get_str("state") == Ok("resent") && r.get_timestamp("cluster_time").is_ok()));
    // No copy: the old primary's change stream from T, then only the changed documents, by
    // `_id`, on each side (the collections hold some 400 documents).
    let scan = &report["scan"];
    let changed = scan["documents_changed"].as_u64().expect("documents changed");
    assert_eq!(changed, expected.len() as u64 + scan["already_equal"].as_u64().expect("equal"), "{report}");
    assert!(changed < 40, "only what A changed after T: {report}");
    for side in ["old_primary", "new_primary"] {
        assert!(scan["documents_read"][side].as_u64().expect("read") <= changed, "{side}: {report}");
    }
    let (code, again) = command(&rev, &["failback", "reconcile"]).await;
    assert_eq!((code, again["rolled_back"].as_u64()), (0, Some(expected.len() as u64)), "done, nothing more: {again}");
    let (code, listed) = command(&rev, &["failback", "report"]).await;
    assert_eq!((code, listed["rolled_back"].as_u64()), (0, Some(expected.len() as u64)), "for the owners: {listed}");

    assert!(app_b.stop().await > 10, "B took writes during the failback");
    let b_last = last_write(&p.target_db()).await;

    phase("step 6");
    // 6. The reverse sink: B's changes after F, then the re-sent documents; A equals B.
    let rev_sink = rev.start_sink().await;
    point_passes(&rev, b_last).await;
    phase("reverse point");
    rev.converged(Duration::from_secs(120)).await;
    let (code, verified) = command(&rev, &["verify"]).await;
    assert_eq!(code, 0, "A equals B: {verified}");
    assert_eq!(
        docs_a.find_one(doc! {"_id": 1}).await.expect("read").and_then(|d| d.get_str("v").ok().map(String::from)),
        Some("B wins".into())
    );
    assert!(docs_a.find_one(doc! {"_id": 2}).await.expect("read").is_none(), "B's delete wins");
    assert!(docs_a.find_one(doc! {"_id": 5001}).await.expect("read").is_none(), "rolled back");
    let metrics = rev_source.metrics().await;
    assert_eq!(metric(&metrics, "cdc_source_snapshot_documents_copied"), 0.0, "no copy on the way back");
    assert_eq!(metric(&metrics, "cdc_source_resent_documents_total"), expected.len() as f64, "only the rolled back");

    phase("step 7");
    // 7. The planned switch back: refused while the reverse sink runs, and while B changed
    //    something A lacks.
    let (code, refused) = command(&rev, &["failback", "switch-back"]).await;
    assert_eq!(code, 1, "{refused}");
    assert!(refused["blockers"].to_string().contains("still runs"), "{refused}");
    rev_sink.stop().await;
    let b_last = timed_write(&p.target_db(), doc! {"insert": "docs", "documents": [{"_id": 8000, "side": "B"}]}).await;
    let (code, refused) = command(&rev, &["failback", "switch-back"]).await;
    assert_eq!(code, 1, "{refused}");
    assert!(refused["blockers"].to_string().contains("changed 1 documents"), "{refused}");
    let rev_sink = rev.start_sink().await;
    point_passes(&rev, b_last).await;
    let (code, verified) = command(&rev, &["verify"]).await;
    assert_eq!(code, 0, "{verified}");
    rev_sink.stop().await;
    let (code, dry) = command(&rev, &["failback", "switch-back", "--dry-run"]).await;
    assert_eq!(code, 0, "{dry}");
    let (code, switched) = command(&rev, &["failback", "switch-back"]).await;
    assert_eq!(code, 0, "{switched}");
    let s = time_of(&switched["switched_back_at_cluster_time"]);
    let (code, again) = command(&rev, &["failback", "switch-back"]).await;
    assert_eq!((code, time_of(&again["switched_back_at_cluster_time"])), (0, s), "S is kept");
    let record = failovers.find_one(doc! {}).await.expect("read").expect("the failover");
    assert!(record.get_timestamp("switched_back_at").is_ok(), "{record}");
    rev_source.stop().await;

    phase("step 8");
    // 8. A → B again from S, without a snapshot, under a final workload.
    let fwd = direction(&p, "again", false, s);
    let fwd_source = fwd.start_source().await;
    let fwd_sink = fwd.start_sink().await;
    phase("again started");
    let app = Application::start(docs_a.clone(), "A again", 20..60, 9000);
    orders_a.delete_one(doc! {"_id": "o5"}).await.expect("A order");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(app.stop().await > 10, "the final workload wrote");
    point_passes(&fwd, last_write(&p.source_db()).await).await;
    phase("again point");
    fwd.converged(Duration::from_secs(120)).await;
    let (code, verified) = command(&fwd, &["verify"]).await;
    assert_eq!(code, 0, "B equals A: {verified}");
    assert_eq!(metric(&fwd_source.metrics().await, "cdc_source_snapshot_documents_copied"), 0.0, "no copy");
    fwd_sink.stop().await;
    fwd_source.stop().await;
    phase("the end");
}
