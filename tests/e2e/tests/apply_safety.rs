//! What the target does to writes, and what a revoked partition may still do: unique secondary
//! indexes, commands over 16 MiB, `$`-prefixed and dotted field names, a dead-letter topic the
//! subscription matches. The target must end equal to the
//! source, with dead letters only for records that can never be applied.

use std::time::Duration;

use bson::{doc, Bson, Document};
use e2e::mongod::PrivateMongod;
use e2e::pipeline::Pipeline;
use sink_writer::ApplyMode;
use test_support::{consume_all, eventually, metric};

async fn dead_letters(p: &Pipeline, wait: Duration) -> usize {
    let topic = p.sink_config.consume.dead_letter_topic.clone();
    consume_all(&p.sink_config.kafka.bootstrap_servers, &[&topic], usize::MAX, wait).await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_values_moving_between_documents_across_partitions_converge_without_dead_letters() {
    let mut p = Pipeline::new("unique", 4).await;
    // One record per write, one write at a time per partition: partitions take turns at random.
    p.sink_config.apply.batch_max_docs = 1;
    p.sink_config.apply.max_in_flight = 1;
    let users = 120;
    for db in [p.source_db(), p.target_db()] {
        db.run_command(
            doc! {"createIndexes": "users", "indexes": [{"key": {"email": 1}, "name": "email", "unique": true}]},
        )
        .await
        .expect("unique index");
    }
    let coll = p.source_db().collection::<Document>("users");
    coll.insert_many((0..users).map(|i| doc! {"_id": i, "email": format!("start-{i}")})).await.expect("users");
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    p.converged(Duration::from_secs(60)).await;
    sink.stop().await;
    // While the sink is away: user k hands its address to user k+1 after taking a fresh one, so
    // each address moves to the next document (most often on another partition) and never comes
    // back. Applied partition by partition, a taker often comes before its giver.
    for round in 0..3 {
        for k in 0..users - 1 {
            let current: Document = coll.find_one(doc! {"_id": k}).await.expect("read").expect("user");
            let handed = current.get_str("email").expect("email").to_string();
            coll.update_one(doc! {"_id": k}, doc! {"$set": {"email": format!("r{round}-fresh-{k}")}})
                .await
                .expect("free");
            coll.update_one(doc! {"_id": k + 1}, doc! {"$set": {"email": handed}}).await.expect("take");
        }
    }
    let sink = p.start_sink().await;
    p.converged(Duration::from_secs(180)).await;
    let body = sink.metrics().await;
    assert_eq!(dead_letters(&p, Duration::from_secs(3)).await, 0, "a conflict was dead-lettered");
    assert!(metric(&body, "sink_writer_unique_conflicts_total") > 0.0, "the workload never made partitions collide");
    sink.stop().await;
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_whose_bson_exceeds_one_command_arrives_whole() {
    let mut p = Pipeline::new("bigbulk", 1).await;
    // Batches fill up to their byte limit (of JSON).
    p.sink_config.apply.batch_max_wait_ms = 3000;
    let source = p.start_source().await;
    let coll = p.source_db().collection::<Document>("numbers");
    // ~30 KB of JSON each, ~90 KB of BSON: a batch of JSON bytes is ~3× larger as commands.
    let digits: Vec<i32> = (0..10_000).map(|i| i % 10).collect();
    for chunk in 0..12 {
        coll.insert_many((0..100).map(|i| doc! {"_id": chunk * 100 + i, "digits": digits.clone()}))
            .await
            .expect("insert");
    }
    let topic = format!("{}.{}.numbers", p.name, p.name);
    consume_all(&p.sink_config.kafka.bootstrap_servers, &[&topic], 1200, Duration::from_secs(120)).await;
    let sink = p.start_sink().await;
    p.converged(Duration::from_secs(180)).await;
    assert_eq!(dead_letters(&p, Duration::from_secs(2)).await, 0);
    sink.stop().await;
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_with_dollar_prefixed_and_dotted_field_names_follow_every_change() {
    let p = Pipeline::new("dollar", 2).await;
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    let coll = p.source_db().collection::<Document>("prices");
    let docs =
        (0..20).map(|i| doc! {"_id": i, "$price": i, "a.b": "dotted", "nested": {"$x": 1, "c.d": 2}, "plain": 0});
    coll.insert_many(docs).await.expect("insert");
    for i in 0..20 {
        let update = vec![doc! {"$replaceWith": {"$setField": {"field": {"$literal": "$price"}, "input": "$$ROOT",
        "value": {"$add": [{"$getField": {"$literal": "$price"}}, 100]}}}}];
        coll.update_one(doc! {"_id": i}, update).await.expect("pipeline update of $price");
        coll.update_one(doc! {"_id": i}, doc! {"$set": {"plain": i, "nested.c": true}}).await.expect("plain update");
    }
    if test_support::documentdb_profile() {
        // DocumentDB cannot store such names: every change of those documents is dead-lettered
        // with the reason, and the rest of the collection is applied.
        coll.insert_one(doc! {"_id": 100, "plain": "after"}).await.expect("plain insert");
        let target = p.target_db().collection::<Document>("prices");
        eventually("the plain document is applied", Duration::from_secs(60), || async {
            target.find_one(doc! {"_id": 100}).await.ok().flatten()
        })
        .await;
        assert_eq!(target.count_documents(doc! {"_id": {"$lt": 100}}).await.expect("count"), 0);
        let topic = p.sink_config.consume.dead_letter_topic.clone();
        let letters = consume_all(&p.sink_config.kafka.bootstrap_servers, &[&topic], 20, Duration::from_secs(30)).await;
        assert!(letters.len() >= 20, "each of the 20 documents is dead-lettered: {}", letters.len());
        for letter in &letters {
            let error = letter.header("error").unwrap_or_default();
            assert!(error.contains("field name"), "the dead letter names the field DocumentDB cannot store: {error}");
        }
        sink.stop().await;
        source.stop().await;
        return;
    }
    p.converged(Duration::from_secs(60)).await;
    assert_eq!(dead_letters(&p, Duration::from_secs(2)).await, 0);
    sink.stop().await;
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_topic_matched_by_the_subscription_gets_one_dead_letter_per_poison_record() {
    let mut p = Pipeline::new("dlqloop", 1).await;
    // The demo's naming: the pattern matches the dead-letter topic too.
    p.sink_config.consume.dead_letter_topic = format!("{}.dlq", p.name);
    p.items_need_a_numeric_qty_in_the_target().await;
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    p.insert_items_one_refused().await;
    let target = p.target_db().collection::<Document>("items");
    eventually("the good documents", Duration::from_secs(60), || async {
        (target.count_documents(doc! {}).await.ok()? == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(dead_letters(&p, Duration::from_secs(3)).await, 1, "the poison record once");
    assert_eq!(metric(&sink.metrics().await, "sink_writer_dead_letters_total"), 1.0);
    sink.stop().await;
    source.stop().await;
}

/// What a healthy target answers while it is busy, not because of the document: an operation
/// killed (Interrupted), a lock not taken in time (LockTimeout, LockBusy), a mongos that cannot
/// reach a shard's primary yet (FailedToSatisfyReadPreference, NetworkInterfaceExceededTimeLimit).
/// The writes wait and apply; none is dead-lettered. (A shard's routing table moving,
/// StaleConfig, cannot be staged: `failCommand` refuses to raise it without its extra info.)
async fn refusals_that_are_not_the_documents_fault_delay_writes_and_dead_letter_none(mode: ApplyMode, name: &str) {
    let own = PrivateMongod::start().await;
    let mut p = Pipeline::new(name, 2).await;
    p.target_own(&own);
    p.sink_config.apply.mode = mode;
    p.sink_config.apply.max_backoff_ms = 300;
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    let coll = p.source_db().collection::<Document>("c");
    coll.insert_many((0..40).map(|i| doc! {"_id": i, "v": 0})).await.expect("insert");
    p.converged(Duration::from_secs(60)).await;
    let namespace = format!("{}.c", p.name);
    for code in [11601, 24, 46, 133, 202] {
        let failing = doc! {"failCommands": ["insert", "update", "delete"], "namespace": &namespace, "errorCode": code};
        own.fail_command(Bson::Document(doc! {"times": 3}), failing).await;
        coll.update_many(doc! {}, doc! {"$inc": {"v": 1}}).await.expect("update");
        coll.insert_one(doc! {"_id": 1000 + code}).await.expect("insert");
        coll.delete_one(doc! {"_id": code % 40}).await.expect("delete");
        p.converged(Duration::from_secs(60)).await;
    }
    assert_eq!(metric(&sink.metrics().await, "sink_writer_dead_letters_total"), 0.0, "a write was dead-lettered");
    assert_eq!(dead_letters(&p, Duration::from_secs(2)).await, 0, "the dead-letter topic has records");
    own.fail_nothing().await;
    sink.stop().await;
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_that_are_not_the_documents_fault_dead_letter_nothing_exactly_once() {
    refusals_that_are_not_the_documents_fault_delay_writes_and_dead_letter_none(ApplyMode::ExactlyOnce, "busy_exact")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_that_are_not_the_documents_fault_dead_letter_nothing_idempotent() {
    refusals_that_are_not_the_documents_fault_delay_writes_and_dead_letter_none(ApplyMode::Idempotent, "busy_idem")
        .await;
}
