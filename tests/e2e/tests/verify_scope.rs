//! What `sink-writer verify` must find beyond the documents of the source's collections, against
//! the real servers: namespaces only on the target (a collection, a whole database), views,
//! time-series collections, index keys in order; and that it holds a bounded number of
//! documents whatever the size of what it compares.

use std::time::{Duration, Instant};

use bson::{doc, Document};
use e2e::pipeline::Pipeline;
use e2e::sink_commands::sink_command;

fn namespace<'a>(report: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    report["namespaces"].as_array()?.iter().find(|n| n["namespace"] == name)
}

fn schema_lines(entry: &serde_json::Value) -> String {
    entry["schema"].as_array().map(|l| format!("{l:?}")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_target_only_namespaces_views_time_series_and_swapped_index_keys() {
    let mut p = Pipeline::new("scope", 2).await;
    // Views and time-series collections are MongoDB's: a DocumentDB source has neither.
    p.both_mongodb();
    p.source_config.delivery.watermark_interval_ms = 300;
    let db = p.source_db();
    db.collection::<Document>("orders")
        .insert_many((0..50).map(|i| doc! {"_id": i, "a": i, "b": i % 5}))
        .await
        .expect("insert");
    db.run_command(doc! {"createIndexes": "orders", "indexes": [{"key": {"a": 1, "b": 1}, "name": "ab"}]})
        .await
        .expect("compound index");
    db.run_command(doc! {"create": "orders_view", "viewOn": "orders", "pipeline": [{"$match": {"a": {"$gt": 1}}}]})
        .await
        .expect("view");
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    p.converged(Duration::from_secs(90)).await;
    // A second database of the test's, on the target only.
    let only = format!("{}_only", p.name);
    let include = format!("{}(_only)?\\..*", p.name);
    let settings = [("VERIFY__INCLUDE", include.as_str())];

    let (code, report) = sink_command(&p, &["verify"], &settings).await;
    assert_eq!(code, 0, "equal after the copy: {report}");
    let view = namespace(&report, &format!("{}.orders_view", p.name)).expect("the view is compared");
    assert_eq!(view["kind"], "view", "{report}");

    // Behind the pipeline's back on the target: a collection and a database the source never
    // had, the compound index with its fields swapped under the same name, the view's pipeline
    // changed. On the source: a time-series collection (which replication does not carry).
    let target = p.target_db();
    target.collection::<Document>("stray").insert_one(doc! {"_id": 1}).await.expect("target-only collection");
    p.target.database(&only).collection::<Document>("c").insert_one(doc! {"_id": 1}).await.expect("target-only db");
    target.run_command(doc! {"dropIndexes": "orders", "index": "ab"}).await.expect("drop");
    target
        .run_command(doc! {"createIndexes": "orders", "indexes": [{"key": {"b": 1, "a": 1}, "name": "ab"}]})
        .await
        .expect("swapped index");
    target
        .run_command(doc! {"collMod": "orders_view", "viewOn": "orders", "pipeline": [{"$match": {"a": {"$gt": 2}}}]})
        .await
        .expect("view changed");
    db.run_command(doc! {"create": "metrics", "timeseries": {"timeField": "ts", "metaField": "m"}})
        .await
        .expect("time-series");
    db.collection::<Document>("metrics")
        .insert_many((0..5).map(|i| doc! {"ts": bson::DateTime::now(), "m": i, "v": i}))
        .await
        .expect("measurements");

    let (code, report) = sink_command(&p, &["verify"], &settings).await;
    assert_eq!(code, 1, "{report}");
    for stray in [format!("{}.stray", p.name), format!("{only}.c")] {
        let entry = namespace(&report, &stray).unwrap_or_else(|| panic!("{stray} not reported: {report}"));
        assert_eq!(entry["only_on_target"], true, "{entry}");
        assert_eq!(entry["extra"], 1, "{entry}");
    }
    let orders = namespace(&report, &format!("{}.orders", p.name)).expect("orders");
    assert!(schema_lines(orders).contains("index ab"), "the swapped index: {orders}");
    assert_eq!((orders["missing"].as_u64(), orders["different"].as_u64()), (Some(0), Some(0)), "{orders}");
    let view = namespace(&report, &format!("{}.orders_view", p.name)).expect("the view");
    assert!(schema_lines(view).contains("pipeline"), "the view's definition: {view}");
    let metrics = namespace(&report, &format!("{}.metrics", p.name)).expect("the time-series collection");
    assert_eq!(metrics["kind"], "timeseries", "{metrics}");
    assert!(schema_lines(metrics).contains("timeseries"), "its settings: {metrics}");
    // Not on the target (DocumentDB profile), or there without its buckets (MongoDB profile).
    let measurements_missing = metrics["compared"] == 5 && metrics["missing"] == 5;
    assert!(measurements_missing || schema_lines(metrics).contains("cannot be compared"), "{metrics}");
    assert_eq!(report["outcome"], "different", "{report}");

    p.target.database(&only).drop().await.expect("drop the target-only database");
    sink.stop().await;
    source.stop().await;
}

/// The peak of what `verify` holds must not grow with what it compares: 20,000 documents, and
/// 30,000 more only on the target after the source's last `_id` (read at once before issue 22),
/// with a recheck list capped at 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_holds_a_bounded_number_of_documents_however_many_differ() {
    let mut p = Pipeline::new("bounded", 2).await;
    p.source_config.delivery.watermark_interval_ms = 300;
    let source_docs = p.source_db().collection::<Document>("big");
    for chunk in (0..20_000).collect::<Vec<i32>>().chunks(5000) {
        source_docs.insert_many(chunk.iter().map(|i| doc! {"_id": *i, "v": *i})).await.expect("insert");
    }
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    p.converged(Duration::from_secs(120)).await;
    let target_docs = p.target_db().collection::<Document>("big");
    for chunk in (1_000_000..1_030_000).collect::<Vec<i32>>().chunks(5000) {
        target_docs.insert_many(chunk.iter().map(|i| doc! {"_id": *i})).await.expect("extra");
    }
    let settings = [("VERIFY__MAX_RECHECKED", "500"), ("VERIFY__PARALLEL", "2"), ("VERIFY__MAX_DOCS_PER_SECOND", "0")];
    let started = Instant::now();
    let (code, report) = sink_command(&p, &["verify"], &settings).await;
    assert_eq!(code, 1, "{report}");
    let big = namespace(&report, &format!("{}.big", p.name)).expect("big");
    assert_eq!(big["compared"], 20_000, "{big}");
    assert_eq!(big["found"]["extra"], 30_000, "every extra document counted: {big}");
    assert_eq!(big["extra"], 500, "the rechecked ones confirmed: {big}");
    assert_eq!(big["not_rechecked"], 29_500, "{big}");
    assert_eq!(big["extra_ids"].as_array().map(Vec::len), Some(20), "a capped list: {big}");
    // Two ranges at a time, each a chunk of 1,001 from each side, and the capped list per range
    // and overall.
    let bound = 2 * (2 * 1001 + 500) + 500;
    let held = report["held_peak"].as_u64().expect("held_peak");
    assert!(held > 0 && held <= bound, "documents held at once: {held} > {bound}");
    eprintln!("verify of 50,000 documents: {:?}, peak held {held}", started.elapsed());
    sink.stop().await;
    source.stop().await;
}

/// A million documents compared, half of them different (500,000 missing on the target, 500,000
/// only on it): the verify process' peak resident memory stays bounded. Takes a few minutes, so
/// it is ignored by default: `cargo test -p e2e --test verify_scope -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn verify_of_a_million_documents_stays_within_bounded_memory() {
    let p = Pipeline::new("million", 2).await;
    let pad = "x".repeat(64);
    let (source, target) = (p.source_db().collection::<Document>("big"), p.target_db().collection::<Document>("big"));
    let write = |coll: mongodb::Collection<Document>, ids: std::ops::Range<i32>| {
        let pad = pad.clone();
        async move {
            for chunk in ids.collect::<Vec<i32>>().chunks(10_000) {
                coll.insert_many(chunk.iter().map(|i| doc! {"_id": *i, "v": *i, "pad": &pad})).await.expect("insert");
            }
        }
    };
    tokio::join!(
        write(source.clone(), 0..1_000_000),
        write(target.clone(), 0..500_000),
        write(target.clone(), 2_000_000..2_500_000)
    );
    // Nothing replicates here: the differences stay unconfirmed; what counts is the memory.
    let settings = [("VERIFY__MAX_DOCS_PER_SECOND", "0"), ("VERIFY__SETTLE_TIMEOUT_MS", "1000")];
    let mut child = tokio::process::Command::new(e2e::binary("sink-writer"))
        .args(["verify", "--json"])
        .env_clear()
        .envs(e2e::sink_commands::sink_env(&p, &settings))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("verify starts");
    let pid = child.id().expect("pid");
    let started = Instant::now();
    let mut peak_kib = 0_u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let hwm = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
            peak_kib = peak_kib.max(hwm.unwrap_or(0));
        }
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = child.wait_with_output().await.expect("output");
    let report = e2e::sink_commands::json_of(&["verify"], &out.stdout, &out.stderr);
    eprintln!("verify of 1,000,000 + 1,000,000 documents: {:?}, peak RSS {peak_kib} KiB", started.elapsed());
    assert_eq!(status.code(), Some(3), "{report}");
    let big = namespace(&report, &format!("{}.big", p.name)).expect("big");
    assert_eq!((big["found"]["missing"].as_u64(), big["found"]["extra"].as_u64()), (Some(500_000), Some(500_000)));
    assert!(peak_kib > 0 && peak_kib < 96 * 1024, "peak RSS {peak_kib} KiB");
    for db in [p.source_db(), p.target_db()] {
        db.drop().await.expect("drop");
    }
}
