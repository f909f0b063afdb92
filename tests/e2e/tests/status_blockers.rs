//! `sink-writer status` against the real servers: ready to cut over only when a full verify of
//! every namespace, young enough, found everything equal; no schema change is refused; the
//! consistency lag is under the threshold; no dead letter of this group is unresolved; and
//! cdc-source's checkpoint is fresh. Each condition broken alone keeps it not ready, and the
//! verdict names that one.

use std::time::Duration;

use bson::{doc, Document};
use e2e::pipeline::Pipeline;
use e2e::sink_commands::sink_command;
use test_support::eventually;

/// `status --json` (with `args` and settings `extra`): the exit code, and the blockers named.
async fn status(p: &Pipeline, args: &[&str], extra: &[(&str, &str)]) -> (i32, Vec<String>, serde_json::Value) {
    let mut command = vec!["status"];
    command.extend_from_slice(args);
    let (code, json) = sink_command(p, &command, extra).await;
    let blockers = json["blockers"]
        .as_array()
        .unwrap_or_else(|| panic!("status lists its blockers: {json}"))
        .iter()
        .filter_map(|b| b.as_str().map(str::to_string))
        .collect();
    (code, blockers, json)
}

async fn ready(p: &Pipeline, args: &[&str], extra: &[(&str, &str)]) {
    eventually("ready to cut over", Duration::from_secs(60), || async {
        let (code, blockers, json) = status(p, args, extra).await;
        assert_eq!(code == 0, blockers.is_empty(), "{json}");
        (code == 0 && json["verdict"] == "ready to cut over").then_some(())
    })
    .await;
}

/// Waits until `status` is not ready for exactly one reason, which contains `names`.
async fn blocked_by(p: &Pipeline, args: &[&str], extra: &[(&str, &str)], names: &str) {
    let mut last = serde_json::Value::Null;
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let (code, blockers, json) = status(p, args, extra).await;
            if code == 1 && blockers.len() == 1 && blockers[0].contains(names) {
                assert!(json["verdict"].as_str().is_some_and(|v| v.contains(names)), "{json}");
                return;
            }
            last = json;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    assert!(found.is_ok(), "status never blocked by '{names}' alone: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_blocker_alone_keeps_status_not_ready_and_is_named() {
    let mut p = Pipeline::new("blockers", 2).await;
    p.source_config.delivery.watermark_interval_ms = 300;
    // DocumentDB reports index builds only through cdc-source's periodic comparison.
    p.source_config.capture.schema_check_interval_ms = 1000;
    let coll = p.source_db().collection::<Document>("c");
    coll.insert_many((0..20).map(|i| doc! {"_id": i, "u": i})).await.expect("insert");
    let source = p.start_source().await;
    let mut sink = p.start_sink().await;
    p.converged(Duration::from_secs(90)).await;
    let namespace = format!("{}.c", p.name);

    // Only a full verify of every namespace counts.
    blocked_by(&p, &[], &[], "no full verify").await;
    for verify in [&["verify", "--namespace", namespace.as_str()][..], &["verify", "--sample", "5"][..]] {
        let (code, report) = sink_command(&p, verify, &[]).await;
        assert_eq!(code, 0, "{verify:?}: {report}");
        blocked_by(&p, &[], &[], "no full verify").await;
    }
    let (code, report) = sink_command(&p, &["verify"], &[]).await;
    assert_eq!(code, 0, "{report}");
    ready(&p, &[], &[]).await;

    // A verify older than status.verify_max_age_seconds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    blocked_by(&p, &[], &[("STATUS__VERIFY_MAX_AGE_SECONDS", "1")], "old").await;

    // An open dead letter of this group; not those of other groups or resolved ones.
    let dead_letters = p.target.database(&p.sink_config.apply.metadata_database).collection::<Document>("dead_letters");
    let group = p.sink_config.consume.group_id.clone();
    let letter = |id: &str, group: &str, state: &str| {
        doc! {"_id": id, "group": group, "topic": "t", "partition": 0, "offset": 7_i64, "stage": "apply",
        "reason": "refused by the target's validator", "state": state, "at": bson::DateTime::now()}
    };
    dead_letters
        .insert_many([
            letter("a", &group, "skipped"),
            letter("b", "another-group", "open"),
            letter("c", &group, "retried"),
        ])
        .await
        .expect("resolved dead letters");
    ready(&p, &[], &[]).await;
    dead_letters.insert_one(letter("d", &group, "open")).await.expect("an open dead letter");
    blocked_by(&p, &[], &[], "1 unresolved dead letter").await;
    dead_letters.update_one(doc! {"_id": "d"}, doc! {"$set": {"state": "skipped"}}).await.expect("skip it");
    ready(&p, &[], &[]).await;

    // A schema change the target refuses: a unique index over a value the target holds twice.
    let target = p.target_db().collection::<Document>("c");
    target.update_one(doc! {"_id": 1}, doc! {"$set": {"u": 2}}).await.expect("drift");
    p.source_db()
        .run_command(doc! {"createIndexes": "c", "indexes": [{"key": {"u": 1}, "name": "u", "unique": true}]})
        .await
        .expect("unique index");
    blocked_by(&p, &[], &[], "schema change").await;
    target.update_one(doc! {"_id": 1}, doc! {"$set": {"u": 1}}).await.expect("undo the drift");
    // Writes to the namespace make the sink try the index again.
    eventually("the index built on the target", Duration::from_secs(60), || async {
        coll.update_one(doc! {"_id": 0}, doc! {"$inc": {"n": 1}}).await.expect("touch");
        let (code, _, _) = status(&p, &[], &[]).await;
        (code == 0).then_some(())
    })
    .await;

    // The sink stopped: the consistency point stays behind.
    sink.stop().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    blocked_by(&p, &["--max-lag-seconds", "2"], &[], "consistency lag").await;
    sink = p.start_sink().await;
    ready(&p, &[], &[]).await;

    // cdc-source stopped: its checkpoint ages (the lag is allowed here, so that only it blocks).
    source.stop().await;
    let lenient = ["--max-lag-seconds", "3600"];
    blocked_by(&p, &lenient, &[("STATUS__CHECKPOINT_MAX_AGE_SECONDS", "3")], "cdc-source checkpoint").await;
    // Without a capture to read the checkpoint of, status cannot say cdc-source is alive.
    blocked_by(&p, &lenient, &[("STATUS__CAPTURE_NAMES", "")], "status.capture_names").await;
    sink.stop().await;
}
