//! Issue 22, 4, against the real servers: a change the target refuses is a dead letter that holds
//! the consistency point of its partition (the metric and `status` stay before the refused
//! change while later changes keep flowing) until an operator resolves it: `dead-letters retry`
//! (after the target is fixed) has cdc-source send the document's current state again, which
//! converges and lets the point move on; `skip` records the decision and releases it too.
//! `status` counts the open dead letters of this group only. In both apply modes.

use std::time::Duration;

use bson::{doc, Document};
use e2e::pipeline::{metric, Pipeline, Started};
use e2e::sink_commands::{sink_command, timed_write};
use envelope::ClusterTime;
use test_support::eventually;

const POINT: &str = "sink_writer_consistent_up_to_timestamp_seconds";

/// The open dead letter of this group for `items` `_id` `id`, once recorded.
async fn open_letter(p: &Pipeline, id: i32) -> Document {
    let letters = p.target.database(&p.sink_config.apply.metadata_database).collection::<Document>("dead_letters");
    let filter = doc! {"group": &p.sink_config.consume.group_id, "ns": format!("{}.items", p.name),
    "id": id.to_string(), "state": "open"};
    eventually("the dead letter recorded", Duration::from_secs(60), || async {
        letters.find_one(filter.clone()).await.expect("read dead letters")
    })
    .await
}

/// Samples the point for a while: always before `refused`, while `ticks` keeps reaching the target.
async fn held_before(p: &Pipeline, sink: &Started, refused: ClusterTime) {
    let ticks = p.target_db().collection::<Document>("ticks");
    let tick = || async { ticks.find_one(doc! {"_id": 0}).await.expect("tick").and_then(|d| d.get_i64("n").ok()) };
    let first_tick = tick().await.unwrap_or(0);
    for _ in 0..20 {
        let point = metric(&sink.metrics().await, POINT) as u32;
        assert!(point > 0 && point < refused.t, "the point {point} passed the refused change at {refused:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(tick().await.unwrap_or(0) > first_tick + 5, "later changes keep reaching the target");
    let (code, status) = sink_command(p, &["status"], &[]).await;
    assert_eq!(code, 1, "{status}");
    let second = status["consistent_up_to"].as_u64().unwrap_or(u64::MAX);
    assert!(second < u64::from(refused.t), "status claims {second}, the refused change is at {refused:?}: {status}");
    assert_eq!(status["dead_letters"], 1, "{status}");
    assert!(status["verdict"].as_str().unwrap_or_default().contains("1 unresolved dead letter"), "{status}");
}

/// Waits until the point (metric and status) passes `at`.
async fn passes(p: &Pipeline, sink: &Started, at: ClusterTime) {
    eventually("the point moves past the resolved change", Duration::from_secs(60), || async {
        (metric(&sink.metrics().await, POINT) as u32 > at.t).then_some(())
    })
    .await;
    let (_, status) = sink_command(p, &["status"], &[]).await;
    assert!(status["consistent_up_to"].as_u64().unwrap_or(0) >= u64::from(at.t), "{status}");
    assert_eq!(status["dead_letters"], 0, "{status}");
}

async fn a_refused_document_holds_the_point_until_retried_or_skipped(mode: sink_writer::ApplyMode) {
    let mut p = Pipeline::new("dead_letters", 2).await;
    p.source_config.delivery.watermark_interval_ms = 300;
    p.sink_config.apply.mode = mode;
    p.items_need_a_numeric_qty_in_the_target().await;
    let db = p.source_db();
    db.collection::<Document>("ticks").insert_one(doc! {"_id": 0, "n": 0_i64}).await.expect("tick");
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    let ticker = {
        let ticks = db.collection::<Document>("ticks");
        tokio::spawn(async move {
            loop {
                ticks.update_one(doc! {"_id": 0}, doc! {"$inc": {"n": 1_i64}}).await.expect("tick");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    timed_write(&db, doc! {"insert": "items", "documents": [{"_id": 1, "qty": 1}]}).await;
    eventually("the point", Duration::from_secs(60), || async {
        (metric(&sink.metrics().await, POINT) > 0.0).then_some(())
    })
    .await;

    // Refused by the target's validator: a dead letter, recorded with what it was.
    let refused = timed_write(&db, doc! {"insert": "items", "documents": [{"_id": 2, "qty": "many"}]}).await;
    let letter = open_letter(&p, 2).await;
    assert_eq!(letter.get_str("stage"), Ok("apply"), "{letter}");
    assert_eq!(letter.get_str("key"), Ok(r#"{"id":"2"}"#), "{letter}");
    assert_eq!(letter.get_timestamp("cluster_time").map(ClusterTime::from), Ok(refused), "{letter}");
    assert!(letter.get_str("reason").is_ok_and(|r| r.to_lowercase().contains("validation")), "{letter}");
    timed_write(&db, doc! {"insert": "items", "documents": [{"_id": 3, "qty": 3}]}).await;
    let target = p.target_db().collection::<Document>("items");
    eventually("a later change applied", Duration::from_secs(30), || async {
        target.find_one(doc! {"_id": 3}).await.expect("read").map(|_| ())
    })
    .await;
    held_before(&p, &sink, refused).await;
    let (code, listed) = sink_command(&p, &["dead-letters", "list"], &[]).await;
    assert_eq!(code, 0, "{listed}");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["state"], "open", "{listed}");

    // Another group's open dead letter is not this group's business.
    let letters = p.target.database(&p.sink_config.apply.metadata_database).collection::<Document>("dead_letters");
    letters
        .insert_one(
            doc! {"_id": "other|t|0|1", "group": "another-group", "topic": "t", "partition": 0, "offset": 1_i64,
            "stage": "apply", "reason": "x", "state": "open", "at": bson::DateTime::now()},
        )
        .await
        .expect("another group's");

    // Fixed on the target, retried: the document's current state converges and the point moves on.
    p.target_db().run_command(doc! {"collMod": "items", "validator": {}}).await.expect("fix the target");
    let (code, retried) = sink_command(&p, &["dead-letters", "retry", "--all"], &[]).await;
    assert_eq!(code, 0, "{retried}");
    assert_eq!(retried["requested"], 1, "{retried}");
    assert_eq!(retried["resent"].as_u64().unwrap_or(0) + retried["superseded"].as_u64().unwrap_or(0), 1, "{retried}");
    eventually("the refused document on the target", Duration::from_secs(60), || async {
        target.find_one(doc! {"_id": 2, "qty": "many"}).await.expect("read").map(|_| ())
    })
    .await;
    let resolved = letters.find_one(doc! {"_id": letter.get_str("_id").expect("_id")}).await.expect("read");
    let resolved = resolved.expect("still recorded");
    assert_eq!(resolved.get_str("state"), Ok("retried"), "{resolved}");
    passes(&p, &sink, refused).await;

    // Refused again; skipped with a reason: the decision is recorded and the point moves on.
    p.target_db()
        .run_command(doc! {"collMod": "items", "validator": {"qty": {"$type": "number"}}})
        .await
        .expect("the rule again");
    let skipped = timed_write(&db, doc! {"insert": "items", "documents": [{"_id": 4, "qty": "lots"}]}).await;
    let letter = open_letter(&p, 4).await;
    held_before(&p, &sink, skipped).await;
    let id = letter.get_str("_id").expect("_id");
    let (code, out) =
        sink_command(&p, &["dead-letters", "skip", id, "--reason", "accepted: text quantities"], &[]).await;
    assert_eq!((code, &out["skipped"]), (0, &serde_json::json!(1)), "{out}");
    let decided = letters.find_one(doc! {"_id": id}).await.expect("read").expect("recorded");
    assert_eq!(decided.get_str("state"), Ok("skipped"), "{decided}");
    let decision = decided.get_document("skipped").expect("who, when, why");
    assert_eq!(decision.get_str("reason"), Ok("accepted: text quantities"));
    assert!(decision.get_str("by").is_ok() && decision.get_datetime("at").is_ok(), "{decided}");
    passes(&p, &sink, skipped).await;
    ticker.abort();
    sink.stop().await;
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_a_refused_document_holds_the_point_until_retried_or_skipped() {
    a_refused_document_holds_the_point_until_retried_or_skipped(sink_writer::ApplyMode::ExactlyOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_a_refused_document_holds_the_point_until_retried_or_skipped() {
    a_refused_document_holds_the_point_until_retried_or_skipped(sink_writer::ApplyMode::Idempotent).await;
}

/// A write a unique index on the target refuses waits (parked) for `apply.conflict_retry_timeout_ms`
/// while later batches pass watermarks; when it goes to the dead-letter topic, none of those may
/// be claimed: the point stays before it.
async fn a_parked_write_given_up_holds_the_point(mode: sink_writer::ApplyMode) {
    let mut p = Pipeline::new("dead_parked", 1).await;
    p.source_config.delivery.watermark_interval_ms = 300;
    p.sink_config.apply.mode = mode;
    p.sink_config.apply.conflict_retry_timeout_ms = 4000;
    // The target holds a rule the source lacks: `u` is unique.
    p.target_db()
        .run_command(doc! {"createIndexes": "items", "indexes": [{"key": {"u": 1}, "name": "u", "unique": true}]})
        .await
        .expect("unique index on the target");
    let db = p.source_db();
    db.collection::<Document>("ticks").insert_one(doc! {"_id": 0, "n": 0_i64}).await.expect("tick");
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    let ticker = {
        let ticks = db.collection::<Document>("ticks");
        tokio::spawn(async move {
            loop {
                ticks.update_one(doc! {"_id": 0}, doc! {"$inc": {"n": 1_i64}}).await.expect("tick");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    timed_write(&db, doc! {"insert": "items", "documents": [{"_id": 1, "u": 1}]}).await;
    eventually("the point", Duration::from_secs(60), || async {
        (metric(&sink.metrics().await, POINT) > 0.0).then_some(())
    })
    .await;
    let refused = timed_write(&db, doc! {"insert": "items", "documents": [{"_id": 2, "u": 1}]}).await;
    let letter = open_letter(&p, 2).await;
    assert!(letter.get_str("reason").is_ok_and(|r| r.contains("duplicate")), "{letter}");
    held_before(&p, &sink, refused).await;
    ticker.abort();
    sink.stop().await;
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_a_parked_write_given_up_holds_the_point() {
    a_parked_write_given_up_holds_the_point(sink_writer::ApplyMode::ExactlyOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_a_parked_write_given_up_holds_the_point() {
    a_parked_write_given_up_holds_the_point(sink_writer::ApplyMode::Idempotent).await;
}

/// The batch that applies a re-sent document also marks its dead letter resolved. A sink that
/// stops in between (here the target refuses that mark until the sink is stopped) must not leave
/// the dead letter open for ever, holding the point and `status`, while its document is repaired.
async fn a_dead_letter_is_resolved_though_the_sink_stopped_while_marking_it(mode: sink_writer::ApplyMode) {
    let own = e2e::mongod::PrivateMongod::start().await;
    let mut p = Pipeline::new("dead_mark", 1).await;
    p.target_own(&own);
    p.sink_config.apply.mode = mode;
    p.sink_config.apply.max_backoff_ms = 300;
    p.source_config.delivery.watermark_interval_ms = 300;
    p.items_need_a_numeric_qty_in_the_target().await;
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    let db = p.source_db();
    timed_write(&db, doc! {"insert": "items", "documents": [{"_id": 1, "qty": 1}, {"_id": 2, "qty": "many"}]}).await;
    let letter = open_letter(&p, 2).await;
    let id = letter.get_str("_id").expect("_id").to_string();

    p.target_db().run_command(doc! {"collMod": "items", "validator": {}}).await.expect("fix the target");
    let meta = &p.sink_config.apply.metadata_database;
    own.fail_command(
        bson::Bson::String("alwaysOn".into()),
        doc! {"failCommands": ["update"], "namespace": format!("{meta}.dead_letters"), "appName": "sink-writer",
        "errorCode": 91},
    )
    .await;
    let (code, retried) = sink_command(&p, &["dead-letters", "retry", "--all"], &[]).await;
    assert_eq!(code, 0, "{retried}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    sink.stop().await;
    own.fail_nothing().await;
    let sink = p.start_sink().await;
    let letters = p.target.database(meta).collection::<Document>("dead_letters");
    eventually("the dead letter resolved", Duration::from_secs(45), || async {
        let state = letters
            .find_one(doc! {"_id": &id})
            .await
            .expect("read")
            .and_then(|l| l.get_str("state").ok().map(str::to_owned));
        (state.as_deref() == Some("retried")).then_some(())
    })
    .await;
    let target = p.target_db().collection::<Document>("items");
    assert!(target.find_one(doc! {"_id": 2, "qty": "many"}).await.expect("read").is_some(), "the document repaired");
    let (_, status) = sink_command(&p, &["status"], &[]).await;
    assert_eq!(status["dead_letters"], 0, "{status}");
    sink.stop().await;
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_a_dead_letter_is_resolved_though_the_sink_stopped_while_marking_it() {
    a_dead_letter_is_resolved_though_the_sink_stopped_while_marking_it(sink_writer::ApplyMode::ExactlyOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_a_dead_letter_is_resolved_though_the_sink_stopped_while_marking_it() {
    a_dead_letter_is_resolved_though_the_sink_stopped_while_marking_it(sink_writer::ApplyMode::Idempotent).await;
}
