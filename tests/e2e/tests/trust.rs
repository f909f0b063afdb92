//! The questions before a failover or cutover, against the real servers: is the target equal to
//! the source (`sink-writer verify`), up to which source moment is it consistent (the
//! consistency point), and may I switch now (`sink-writer status`)?

use std::time::Duration;

use bson::{doc, Document};
use e2e::pipeline::{metric, Pipeline};
use test_support::eventually;

async fn sink_command(p: &Pipeline, command: &[&str]) -> (i32, serde_json::Value) {
    e2e::sink_commands::sink_command(p, command, &[]).await
}

/// Issue 22, 1: with the sink stopped and the source changing 20 documents, `verify` must not
/// call the target equal: nothing was seen to move past the differences, so they are
/// unconfirmed (exit 3), and `status` does not count such a verify as passing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_sink_is_never_equal_only_unconfirmed_and_status_does_not_count_it() {
    let mut p = Pipeline::new("stopped", 2).await;
    p.source_config.delivery.watermark_interval_ms = 300;
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    let coll = p.source_db().collection::<Document>("coll");
    coll.insert_many((0..20).map(|i| doc! {"_id": i, "v": 0})).await.expect("insert");
    p.converged(Duration::from_secs(90)).await;
    let quick = [("VERIFY__SETTLE_TIMEOUT_MS", "3000")];
    let namespace = format!("{}.coll", p.name);
    let (code, report) = sink_command_with(&p, &["verify"], &quick).await;
    assert_eq!(code, 0, "equal while the sink runs: {report}");
    let lenient = ["status", "--max-lag-seconds", "3600"];
    eventually("ready while the sink runs", Duration::from_secs(30), || async {
        let (code, status) = sink_command(&p, &lenient).await;
        (code == 0).then_some(status)
    })
    .await;

    sink.stop().await;
    let updater = {
        let coll = coll.clone();
        tokio::spawn(async move {
            loop {
                coll.update_many(doc! {}, doc! {"$inc": {"v": 1}}).await.expect("update");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    for args in [&["verify", "--namespace", namespace.as_str()][..], &["verify"][..]] {
        let (code, report) = sink_command_with(&p, args, &quick).await;
        assert_eq!(code, 3, "{args:?}: the target is behind on all 20: {report}");
        assert_eq!(report["equal"], false, "{report}");
        assert_eq!(report["outcome"], "unconfirmed", "{report}");
        assert_eq!((report["unconfirmed"].as_u64(), report["in_flight"].as_u64()), (Some(20), Some(0)), "{report}");
    }
    let (code, status) = sink_command(&p, &lenient).await;
    assert_eq!(code, 1, "an unconfirmed verify does not pass: {status}");
    let verdict = status["verdict"].as_str().unwrap_or_default();
    assert!(verdict.contains("could not confirm 20"), "{status}");
    updater.abort();
    source.stop().await;
}

async fn sink_command_with(p: &Pipeline, command: &[&str], extra: &[(&str, &str)]) -> (i32, serde_json::Value) {
    e2e::sink_commands::sink_command(p, command, extra).await
}

async fn workload(p: &Pipeline, rounds: i32) {
    for name in ["orders", "users"] {
        let coll = p.source_db().collection::<Document>(name);
        coll.insert_many((0..300).map(|i| doc! {"_id": i, "n": i, "tags": ["a", "b"], "sub": {"x": i64::from(i)}}))
            .await
            .expect("insert");
        for r in 0..rounds {
            coll.update_many(doc! {"n": {"$mod": [3, r % 3]}}, doc! {"$inc": {"n": 1}, "$push": {"tags": r}})
                .await
                .expect("update");
        }
        coll.delete_many(doc! {"n": {"$mod": [7, 0]}}).await.expect("delete");
    }
}

fn listed<'a>(json: &'a serde_json::Value, kind: &str) -> Vec<&'a str> {
    json["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|n| n[kind].as_array().into_iter().flatten().filter_map(serde_json::Value::as_str))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_what_differs_and_only_that() {
    let mut p = Pipeline::new("verify", 4).await;
    p.source_config.delivery.watermark_interval_ms = 300;
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    workload(&p, 5).await;
    p.converged(Duration::from_secs(90)).await;

    let (code, report) = sink_command(&p, &["verify"]).await;
    assert_eq!(code, 0, "equal after the workload: {report}");
    assert_eq!(report["equal"], true);
    assert!(report["compared"].as_u64().unwrap_or(0) > 400, "{report}");

    // Behind the pipeline's back: a changed field, a deleted and an extra document, an Int32
    // turned into a Double (equal as numbers, not as BSON).
    let target = p.target_db().collection::<Document>("orders");
    target.update_one(doc! {"_id": 1}, doc! {"$set": {"sub.x": 999_i64}}).await.expect("change");
    target.delete_one(doc! {"_id": 2}).await.expect("delete");
    target.insert_one(doc! {"_id": "stray"}).await.expect("extra");
    let n = target.find_one(doc! {"_id": 4}).await.expect("read").expect("doc").get_i32("n").expect("Int32");
    target.update_one(doc! {"_id": 4}, doc! {"$set": {"n": f64::from(n)}}).await.expect("to double");
    let (code, report) = sink_command(&p, &["verify"]).await;
    assert_eq!(code, 1, "{report}");
    assert_eq!(listed(&report, "missing_ids"), vec!["2"], "{report}");
    assert_eq!(listed(&report, "extra_ids"), vec!["\"stray\""], "{report}");
    let mut different = listed(&report, "different_ids");
    different.sort();
    assert_eq!(different, vec!["1", "4"], "{report}");

    // A sample compares random documents only, and finds the differences among them.
    let (code, report) =
        sink_command(&p, &["verify", "--namespace", &format!("{}.users", p.name), "--sample", "50"]).await;
    assert_eq!((code, report["compared"].as_u64()), (0, Some(50)), "{report}");
    sink.stop().await;
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_while_a_workload_runs_reports_no_in_flight_change() {
    let mut p = Pipeline::new("verifylive", 4).await;
    p.source_config.delivery.watermark_interval_ms = 300;
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    let coll = p.source_db().collection::<Document>("live");
    coll.insert_many((0..2000).map(|i| doc! {"_id": i, "v": 0})).await.expect("insert");
    p.converged(Duration::from_secs(90)).await;
    let writer = {
        let coll = coll.clone();
        tokio::spawn(async move {
            for round in 1.. {
                for i in (0..2000).step_by(7) {
                    if coll.update_one(doc! {"_id": i}, doc! {"$set": {"v": round}}).await.is_err() {
                        return;
                    }
                }
            }
        })
    };
    let (code, report) = sink_command(&p, &["verify"]).await;
    writer.abort();
    assert_eq!(code, 0, "in-flight changes reported as differences: {report}");
    assert!(report["in_flight"].as_u64().unwrap_or(0) > 0, "the workload never put a change in flight: {report}");
    sink.stop().await;
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consistency_point_advances_with_an_idle_partition_stops_with_the_sink_and_never_passes_a_change() {
    let mut p = Pipeline::new("point", 2).await;
    p.source_config.delivery.watermark_interval_ms = 300;
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    // Only partition 0 gets documents: partition 1 stays idle.
    let ids = e2e::ids_on_partition(0, 2, 0, 400);
    let coll = p.source_db().collection::<Document>("busy");
    let point = |body: &str| metric(body, "sink_writer_consistent_up_to_timestamp_seconds") as u32;
    for (n, id) in ids.iter().enumerate() {
        coll.insert_one(doc! {"_id": *id, "n": n as i32}).await.expect("insert");
    }
    let seen = eventually("a consistency point", Duration::from_secs(60), || async {
        let at = point(&sink.metrics().await);
        (at > 0).then_some(at)
    })
    .await;
    assert!(seen <= source_time(&p).await, "the point is ahead of the source");
    eventually("the point advances with one partition idle", Duration::from_secs(60), || async {
        (point(&sink.metrics().await) > seen).then_some(())
    })
    .await;
    check_point_never_passes_a_missing_change(&p, &sink).await;
    sink.stop().await;
    // The sink stopped: the recorded point stays where it was.
    let book_before = status_point(&p).await;
    coll.insert_one(doc! {"_id": -1}).await.expect("insert while the sink is down");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(status_point(&p).await, book_before, "no sink, no progress");
    source.stop().await;
}

/// The source's present cluster time, in seconds.
async fn source_time(p: &Pipeline) -> u32 {
    let reply = p.source.database("admin").run_command(doc! {"ping": 1}).await.expect("ping");
    reply.get_timestamp("operationTime").map(|t| t.time).expect("operationTime")
}

/// Writes documents whose source cluster time is known, and checks at every reported point that
/// each one written at or before it is in the target.
async fn check_point_never_passes_a_missing_change(p: &Pipeline, sink: &e2e::pipeline::Started) {
    let coll = p.source_db().collection::<Document>("timed");
    let target = p.target_db().collection::<Document>("timed");
    let mut written: Vec<(i32, u32)> = Vec::new();
    for i in 0..200 {
        coll.insert_one(doc! {"_id": i}).await.expect("insert");
        written.push((i, source_time(p).await));
        if i % 20 == 19 {
            let at = metric(&sink.metrics().await, "sink_writer_consistent_up_to_timestamp_seconds") as u32;
            let due: Vec<i32> = written.iter().filter(|(_, t)| *t < at).map(|(i, _)| *i).collect();
            let found = target.count_documents(doc! {"_id": {"$in": due.clone()}}).await.expect("count");
            assert_eq!(found as usize, due.len(), "the point {at} passed changes not in the target yet");
        }
    }
}

async fn status_point(p: &Pipeline) -> Option<u64> {
    let (_, status) = sink_command(p, &["status"]).await;
    status["consistent_up_to"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_ready_only_when_lag_dead_letters_ddl_and_verify_allow() {
    let mut p = Pipeline::new("status", 2).await;
    p.source_config.delivery.watermark_interval_ms = 300;
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    workload(&p, 2).await;
    p.converged(Duration::from_secs(90)).await;
    let (code, status) = sink_command(&p, &["status"]).await;
    assert_eq!(code, 1, "no verify yet: {status}");
    assert!(status["verdict"].as_str().unwrap_or("").contains("no full verify"), "{status}");
    let (code, _) = sink_command(&p, &["verify"]).await;
    assert_eq!(code, 0);
    let (code, status) = eventually("ready", Duration::from_secs(30), || async {
        let (code, status) = sink_command(&p, &["status"]).await;
        (code == 0).then_some((code, status))
    })
    .await;
    assert_eq!(status["verdict"], "ready to cut over", "{code} {status}");
    assert_eq!(status["dead_letters"], 0);
    assert!(status["consistent_up_to"].as_u64().is_some());
    assert!(status["topics"].as_array().is_some_and(|t| t.len() >= 2), "{status}");
    sink.stop().await;
    source.stop().await;
}

/// A snapshot's first records on each partition are the collections' `create` markers, stamped
/// with the snapshot's start; its copies follow. Until the copies are applied, the point must not
/// claim the documents the source held before that start: with no sink running the target is
/// empty, so no point may cover the second those documents were acknowledged in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_point_never_covers_a_snapshot_the_target_has_not_applied() {
    let mut p = Pipeline::new("point_snapshot", 2).await;
    p.source_config.snapshot.mode = cdc_source::SnapshotMode::Initial;
    p.source_config.delivery.watermark_interval_ms = 300;
    for name in ["orders", "users"] {
        let coll = p.source_db().collection::<Document>(name);
        coll.insert_many((0..500).map(|i| doc! {"_id": i, "v": name})).await.expect("insert");
    }
    let acknowledged = source_time(&p).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let source = p.start_source().await;
    eventually("the snapshot copied", Duration::from_secs(60), || async {
        let body = source.metrics().await;
        let copied: f64 = ["orders", "users"]
            .iter()
            .map(|c| {
                let namespace = format!("{}.{c}", p.name);
                metric(&body, &format!("cdc_source_snapshot_documents_copied{{namespace=\"{namespace}\"}}"))
            })
            .sum();
        (copied >= 1000.0).then_some(())
    })
    .await;
    // Watermarks follow the copies on every partition.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(p.target_db().collection::<Document>("orders").count_documents(doc! {}).await.expect("count"), 0);
    let claimed = status_point(&p).await;
    assert!(
        claimed.is_none_or(|at| at < u64::from(acknowledged)),
        "the point {claimed:?} covers second {acknowledged}, whose documents are not on the target"
    );

    let sink = p.start_sink().await;
    p.converged(Duration::from_secs(90)).await;
    eventually("the point passes the snapshot once it is applied", Duration::from_secs(60), || async {
        status_point(&p).await.filter(|at| *at >= u64::from(acknowledged)).map(|_| ())
    })
    .await;
    sink.stop().await;
    source.stop().await;
}
