//! Exactly-once apply: no document on the target ever moves backward (read from the target's own
//! change stream), no former owner writes late, nothing is dropped on the way, and no record
//! stalls the sink: replays after kill -9 and rebalances, records near Kafka's size limit, a
//! cycle of unique values, a parked write overtaken by a newer one, a drop applied while a new
//! owner takes a partition over, a partition task that dies, and inserts of documents the target
//! already holds.

use std::time::{Duration, Instant};

use bson::{doc, Document};
use e2e::pipeline::Pipeline;
use e2e::process::Proc;
use e2e::toxiproxy::Toxiproxy;
use test_support::{consume_all, eventually, http_get, metric, services};

async fn dead_letters(p: &Pipeline, wait: Duration) -> usize {
    let topic = p.sink_config.consume.dead_letter_topic.clone();
    consume_all(&p.sink_config.kafka.bootstrap_servers, &[&topic], usize::MAX, wait).await.len()
}

/// Two sink-writer processes under continuous `$inc` updates, each killed with -9 once, with a
/// long commit interval and small batches (a replay then spans many batches): the target's own
/// change stream must never show a counter going down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_counter_never_moves_backward_across_kill_9_and_rebalances() {
    let servers = services();
    let mut p = Pipeline::new("counter", 4).await;
    p.sink_config.consume.commit_interval_ms = 20_000;
    p.sink_config.apply.batch_max_docs = 200;
    p.sink_config.kafka.options.insert("session.timeout.ms".into(), "6000".into());
    p.sink_config.kafka.options.insert("heartbeat.interval.ms".into(), "1000".into());
    let dir = p.dir();
    let counters = p.source_db().collection::<Document>("counters");
    counters.insert_many((0..200).map(|i| doc! {"_id": i, "n": 0_i64})).await.expect("insert");
    let watch = e2e::monotonic::Watch::start(p.target_db(), None, "n").await;
    let source = p.start_source().await;
    let replica = |name: &str| {
        let env = p.sink_process_env(e2e::free_addr(), &servers.service_target_uri);
        Proc::new(name, e2e::binary("sink-writer"), vec![], env, &dir)
    };
    let (mut a, mut b) = (replica("sink-a"), replica("sink-b"));
    a.start();
    b.start();
    let writer = {
        let counters = counters.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut i = 0_i32;
            while started.elapsed() < Duration::from_secs(40) {
                counters.update_one(doc! {"_id": i % 200}, doc! {"$inc": {"n": 1_i64}}).await.expect("update");
                i = i.wrapping_add(7);
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    a.kill9();
    tokio::time::sleep(Duration::from_secs(8)).await;
    a.start();
    tokio::time::sleep(Duration::from_secs(8)).await;
    b.kill9();
    tokio::time::sleep(Duration::from_secs(8)).await;
    b.start();
    writer.await.expect("writer");
    p.converged(Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let observed = watch.finish();
    assert!(observed.changes > 1000, "the target's change stream showed only {} changes", observed.changes);
    assert!(
        observed.backward.is_empty(),
        "{} of {} changes on the target lowered a counter, e.g. {:?}",
        observed.backward.len(),
        observed.changes,
        &observed.backward[..observed.backward.len().min(5)]
    );
    a.stop();
    b.stop();
    source.stop().await;
}

/// One 12 MiB document that does not compress, with every setting at its default: it arrives,
/// and so does everything written after it, on every partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_12_mib_incompressible_document_arrives_and_the_stream_goes_on() {
    let p = Pipeline::new("big12", 4).await;
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    let coll = p.source_db().collection::<Document>("docs");
    coll.insert_one(doc! {"_id": "big", "text": e2e::workload::incompressible(12, 12 * 1024 * 1024)})
        .await
        .expect("insert the large document");
    coll.insert_many((0..100).map(|i| doc! {"_id": i, "after": true})).await.expect("insert after it");
    p.converged(Duration::from_secs(120)).await;
    assert_eq!(dead_letters(&p, Duration::from_secs(2)).await, 0);
    sink.stop().await;
    source.stop().await;
}

/// A=x and B=y under a unique index; while cdc-source is down the application moves A to a
/// temporary value, B to x and A to y. The looked-up events carry only the final documents, so
/// each write is refused while the other document still holds its value: the cycle is broken
/// and the target reaches the source's state, with no dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_of_unique_values_made_while_capture_was_down_converges() {
    let p = Pipeline::new("swap", 2).await;
    for db in [p.source_db(), p.target_db()] {
        db.run_command(
            doc! {"createIndexes": "users", "indexes": [{"key": {"email": 1}, "name": "email", "unique": true}]},
        )
        .await
        .expect("unique index");
    }
    let users = p.source_db().collection::<Document>("users");
    // Several pairs, some on one partition, some across the two.
    let pairs = 6;
    users
        .insert_many((0..pairs).flat_map(|k| {
            [
                doc! {"_id": format!("a{k}"), "email": format!("x{k}")},
                doc! {"_id": format!("b{k}"), "email": format!("y{k}")},
            ]
        }))
        .await
        .expect("users");
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    p.converged(Duration::from_secs(60)).await;
    source.stop().await;
    for k in 0..pairs {
        let (a, b) = (format!("a{k}"), format!("b{k}"));
        users.update_one(doc! {"_id": &a}, doc! {"$set": {"email": format!("tmp{k}")}}).await.expect("A to tmp");
        users.update_one(doc! {"_id": &b}, doc! {"$set": {"email": format!("x{k}")}}).await.expect("B to x");
        users.update_one(doc! {"_id": &a}, doc! {"$set": {"email": format!("y{k}")}}).await.expect("A to y");
    }
    let source = p.start_source().await;
    p.converged(Duration::from_secs(90)).await;
    assert_eq!(dead_letters(&p, Duration::from_secs(2)).await, 0, "a write of the swap was dead-lettered");
    sink.stop().await;
    source.stop().await;
}

/// Documents wait (parked) for a unique value the target still gives another document; while
/// their retries travel a slow link, newer versions of the same documents arrive and park behind
/// them, and then the value is freed. Every newest version must reach the target: none is dropped
/// with the retry it overtook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_write_is_never_dropped_for_the_retry_it_overtook() {
    let mut p = Pipeline::new("parkrace", 2).await;
    p.sink_config.apply.max_backoff_ms = 200;
    let toxiproxy = Toxiproxy::start(&p.dir()).await;
    p.sink_config.mongo.uri = service_kit::config::SecretUri::new(p.target_via(&toxiproxy).await);
    for db in [p.source_db(), p.target_db()] {
        db.run_command(
            doc! {"createIndexes": "users", "indexes": [{"key": {"email": 1}, "name": "email", "unique": true}]},
        )
        .await
        .expect("unique index");
    }
    let users = p.source_db().collection::<Document>("users");
    let takers = 12;
    users.insert_many((0..takers).map(|k| doc! {"_id": k, "email": format!("own-{k}"), "v": 0})).await.expect("users");
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    p.converged(Duration::from_secs(60)).await;
    // The target alone still gives each value to a document the source no longer has.
    let strays = p.target_db().collection::<Document>("users");
    strays
        .insert_many((0..takers).map(|k| doc! {"_id": format!("stray-{k}"), "email": format!("shared-{k}")}))
        .await
        .expect("strays");
    // Replies take 1.5 s: a retry the target accepts is known to have passed only that late.
    toxiproxy.reply_latency("target", 1500).await;
    for k in 0..takers {
        users.update_one(doc! {"_id": k}, doc! {"$set": {"email": format!("shared-{k}"), "v": 1}}).await.expect("take");
    }
    // One transaction per refused write here, each three round trips on the slow link.
    eventually("every taker parked", Duration::from_secs(240), || async {
        (metric(&sink.metrics().await, "sink_writer_unique_conflicts_total") >= f64::from(takers)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The values are freed; the next retry passes, and while its reply travels, newer versions
    // arrive (spread over a whole retry period, so some do whatever its phase) and park.
    strays.delete_many(doc! {"_id": {"$regex": "^stray-"}}).await.expect("free the values");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for k in 0..takers {
        users.update_one(doc! {"_id": k}, doc! {"$set": {"v": 2}}).await.expect("newer version");
        tokio::time::sleep(Duration::from_millis(130)).await;
    }
    p.converged(Duration::from_secs(240)).await;
    assert_eq!(dead_letters(&p, Duration::from_secs(2)).await, 0);
    sink.stop().await;
    source.stop().await;
}

/// A drop's markers: replica A reaches its copy on one partition (with everything before it
/// applied) and dies before it commits any offset; the other partition is held back by a write
/// the target refuses for now. Replica B takes both partitions over on a slow link; while it
/// would replay A's partition, the other partition passes its marker and the drop is applied.
/// No event older than the drop may land after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_applied_during_a_takeover_lets_no_older_event_land_after_it() {
    drop_during_takeover(sink_writer::ApplyMode::ExactlyOnce).await;
}

/// The same in the `idempotent` mode: the new owner starts at the marker the former one reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_applied_during_a_takeover_lets_no_older_event_land_after_it_when_idempotent() {
    drop_during_takeover(sink_writer::ApplyMode::Idempotent).await;
}

async fn drop_during_takeover(mode: sink_writer::ApplyMode) {
    let servers = services();
    let mut p = Pipeline::new("takeoverdrop", 2).await;
    p.sink_config.apply.mode = mode;
    p.sink_config.consume.commit_interval_ms = 600_000;
    p.sink_config.apply.batch_max_docs = 10;
    p.sink_config.apply.max_in_flight = 1;
    p.sink_config.apply.max_backoff_ms = 300;
    p.sink_config.kafka.options.insert("session.timeout.ms".into(), "6000".into());
    p.sink_config.kafka.options.insert("heartbeat.interval.ms".into(), "1000".into());
    let dir = p.dir();
    let toxiproxy = Toxiproxy::start(&dir).await;
    let slow_link = p.target_via(&toxiproxy).await;
    for db in [p.source_db(), p.target_db()] {
        db.run_command(doc! {"createIndexes": "gone", "indexes": [{"key": {"u": 1}, "name": "u", "unique": true}]})
            .await
            .expect("unique index");
    }
    p.source_db().collection::<Document>("kept").insert_one(doc! {"_id": 1}).await.expect("kept");
    let gone = p.source_db().collection::<Document>("gone");
    // A document on partition 1 whose last change the target refuses until the test says so.
    let held = e2e::ids_on_partition(1, 2, 0, 1)[0];
    gone.insert_one(doc! {"_id": held, "u": "free"}).await.expect("held document");
    let source = p.start_source().await;
    let mut a = Proc::new(
        "sink-a",
        e2e::binary("sink-writer"),
        vec![],
        p.sink_process_env(e2e::free_addr(), &servers.service_target_uri),
        &dir,
    );
    a.start();
    p.converged(Duration::from_secs(60)).await;
    p.target_db().collection::<Document>("gone").insert_one(doc! {"_id": "stray", "u": "taken"}).await.expect("stray");
    gone.update_one(doc! {"_id": held}, doc! {"$set": {"u": "taken"}}).await.expect("refused for now");
    // Partition 0's backlog before the drop.
    let ids = e2e::ids_on_partition(0, 2, 1000, 300);
    gone.insert_many(ids.iter().map(|i| doc! {"_id": i, "u": format!("u{i}")})).await.expect("backlog");
    gone.drop().await.expect("drop");
    let meta = p.target.database(&p.sink_config.apply.metadata_database).collection::<Document>("ddl");
    eventually("A reaches the drop's marker on partition 0", Duration::from_secs(60), || async {
        let entry = meta.find_one(doc! {"kind": "drop"}).await.ok()??;
        (!entry.get_array("arrived").map(Vec::is_empty).unwrap_or(true)).then_some(())
    })
    .await;
    a.kill9();
    toxiproxy.latency("target", 300, 0).await;
    let b_http = e2e::free_addr();
    let mut b = Proc::new("sink-b", e2e::binary("sink-writer"), vec![], p.sink_process_env(b_http, &slow_link), &dir);
    b.start();
    eventually("B owns both partitions", Duration::from_secs(60), || async {
        let body = http_get(b_http, "/metrics").await.ok()?.1;
        (metric(&body, "sink_writer_assigned_partitions") >= 2.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Partition 1 passes its marker now: the drop is applied while B is busy with partition 0.
    p.target_db().collection::<Document>("gone").delete_one(doc! {"_id": "stray"}).await.expect("free the value");
    eventually("the drop is applied", Duration::from_secs(120), || async {
        let entry = meta.find_one(doc! {"kind": "drop"}).await.ok()??;
        entry.get_bool("applied").unwrap_or(false).then_some(())
    })
    .await;
    // Whatever B still had on its way lands within a few of its round trips.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let left = p.target_db().collection::<Document>("gone").count_documents(doc! {}).await.expect("count");
    assert_eq!(left, 0, "{left} documents written after the drop, by events older than it");
    p.converged(Duration::from_secs(60)).await;
    b.stop();
    toxiproxy.clear_latency("target").await;
    source.stop().await;
}

/// A partition task that dies (here its decoder panics, through a test hook) makes readiness red
/// while the other partition keeps writing, and the partition starts again and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_whose_decoder_panics_turns_readiness_red_and_recovers() {
    let p = Pipeline::new("decoderpanic", 2).await;
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    let coll = p.source_db().collection::<Document>("docs");
    coll.insert_one(doc! {"_id": "first"}).await.expect("insert");
    p.converged(Duration::from_secs(60)).await;
    let topic = format!("{}.{}.docs", p.name, p.name);
    sink_writer::hooks::panic_decoding(&topic, 0, 1);
    coll.insert_many((0..200).map(|i| doc! {"_id": i})).await.expect("insert");
    eventually("readiness red while partition 0 is down", Duration::from_secs(30), || async {
        let (status, body) = http_get(sink.addr, "/health/readyz").await.ok()?;
        (status != 200 && body.contains(&format!("{topic}/0"))).then_some(())
    })
    .await;
    p.converged(Duration::from_secs(60)).await;
    eventually("ready again", Duration::from_secs(30), || async {
        (http_get(sink.addr, "/health/readyz").await.ok()?.0 == 200).then_some(())
    })
    .await;
    assert!(metric(&sink.metrics().await, "sink_writer_partition_restarts_total") >= 1.0);
    sink.stop().await;
    source.stop().await;
}

/// New documents go to the target as inserts (inside a transaction an upsert of a missing key
/// walks every key other partitions added meanwhile; outside one it still costs more). The
/// target already holds some of them: one stale copy, and one under an equal `_id` of another
/// BSON type, which the check before the write does not see as the same key, so its insert is
/// refused; each still takes the source's content, beside a thousand new documents, with no dead
/// letter and nothing parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_of_documents_the_target_already_holds_become_replacements() {
    inserts_of_held_documents(sink_writer::ApplyMode::ExactlyOnce).await;
}

/// The same in the `idempotent` mode: a refused insert is sent again as an upsert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_of_documents_the_target_already_holds_become_replacements_when_idempotent() {
    inserts_of_held_documents(sink_writer::ApplyMode::Idempotent).await;
}

async fn inserts_of_held_documents(mode: sink_writer::ApplyMode) {
    let mut p = Pipeline::new("freshins", 2).await;
    p.sink_config.apply.mode = mode;
    let held = p.target_db().collection::<Document>("docs");
    held.insert_many([doc! {"_id": "stale", "v": "old"}, doc! {"_id": 5_i32, "v": "old"}])
        .await
        .expect("target copies");
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    let coll = p.source_db().collection::<Document>("docs");
    coll.insert_many((0..1000).map(|i| doc! {"_id": format!("n{i}"), "v": "new"})).await.expect("new documents");
    coll.insert_many([doc! {"_id": "stale", "v": "new"}, doc! {"_id": 5.0_f64, "v": "new"}]).await.expect("held ones");
    eventually("every document holds the source's content", Duration::from_secs(90), || async {
        let new = held.count_documents(doc! {"v": "new"}).await.ok()?;
        let all = held.count_documents(doc! {}).await.ok()?;
        (new == 1002 && all == 1002).then_some(())
    })
    .await;
    assert_eq!(dead_letters(&p, Duration::from_secs(2)).await, 0);
    assert_eq!(metric(&sink.metrics().await, "sink_writer_unique_conflicts_total"), 0.0);
    sink.stop().await;
    source.stop().await;
}

/// Replica A writes through a link where requests take 20 s to arrive, and a revocation waits
/// only 3 s for its writes: what A sent before losing a partition is still on its way when replica
/// B, the new owner, writes newer versions (a cooperative rebalance hands the partition over in
/// about 10 s). The target's change stream must never show an older one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_partition_on_a_slow_link_writes_nothing_after_the_new_owner_starts() {
    let p = Pipeline::new("slowrevoke", 2).await;
    let target_host =
        services().service_target_uri.trim_start_matches("mongodb://").split(['/', '?']).next().map(str::to_string);
    let link = e2e::delay_line::DelayLine::start(&target_host.expect("target host")).await;
    let via_link = format!("mongodb://{}/?directConnection=true", link.addr);
    let watch = e2e::monotonic::Watch::start(p.target_db(), None, "n").await;
    let source = p.start_source().await;
    let coll = p.source_db().collection::<Document>("docs");
    coll.insert_many((0..20).map(|i| doc! {"_id": i, "n": 0_i64})).await.expect("insert");

    let mut a_config = p.sink_config.clone();
    // Its client tolerates the link (the driver's own checks take 20 s a round trip) and has its
    // connections before the link slows down: a write goes out at once, never behind a handshake.
    a_config.mongo.uri =
        service_kit::config::SecretUri::new(format!("{via_link}&connectTimeoutMS=60000&minPoolSize=8"));
    a_config.mongo.server_selection_timeout_ms = 120_000;
    a_config.apply.drain_timeout_ms = 3000;
    let a_stop = tokio_util::sync::CancellationToken::new();
    let a = sink_writer::start(a_config, a_stop.clone()).await.expect("A starts");
    let a_addr = a.http_addr;
    let a_task = tokio::spawn(a.wait());
    e2e::pipeline::wait_ready(a_addr).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    link.set_delay(Duration::from_secs(20));

    // Every document keeps counting up while A, then B, apply.
    let writing = tokio_util::sync::CancellationToken::new();
    let writer = {
        let (coll, writing) = (coll.clone(), writing.clone());
        tokio::spawn(async move {
            while !writing.is_cancelled() {
                for i in 0..20 {
                    coll.update_one(doc! {"_id": i}, doc! {"$inc": {"n": 1_i64}}).await.expect("update");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    // Once A sends a write on the slow link, replica B joins: one partition moves from A to B,
    // which writes newer versions within seconds, while A's write is still on its way.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = link.updates_sent();
    eventually("A sends a write of each partition on the slow link", Duration::from_secs(120), || async {
        (link.updates_sent() >= sent + 2).then_some(())
    })
    .await;
    let b = p.start_sink().await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    writing.cancel();
    writer.await.expect("writer");
    // A stops too (its last partition is revoked the same way): B catches up on everything.
    a_stop.cancel();
    a_task.await.expect("joins").expect("A stops cleanly");
    p.converged(Duration::from_secs(120)).await;
    // Anything A still sent would land within its link's delay.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let observed = watch.finish();
    assert!(observed.changes > 100, "the target's change stream showed only {} changes", observed.changes);
    assert!(
        observed.backward.is_empty(),
        "a former owner's write landed after the new owner's: {:?}",
        &observed.backward[..observed.backward.len().min(5)]
    );
    b.stop().await;
    source.stop().await;
}

/// `apply.mode = idempotent` keeps its offsets in Kafka; a restarted sink resumes at the offset it
/// committed. The partition's last DDL marker (here the collection's `create`, before all its
/// documents) only says where an owner may start at the earliest: starting there read the whole
/// partition again, putting older versions of every document back for a while and moving the
/// group's committed offset backward.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_sink_restarted_resumes_at_its_committed_offset_not_at_an_older_ddl_marker() {
    let mut p = Pipeline::new("idem_restart", 1).await;
    p.sink_config.apply.mode = sink_writer::ApplyMode::Idempotent;
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    let coll = p.source_db().collection::<Document>("c");
    coll.insert_many((0..400).map(|i| doc! {"_id": i, "v": 0})).await.expect("insert");
    for v in 1..=20 {
        coll.update_one(doc! {"_id": 0}, doc! {"$set": {"v": v}}).await.expect("update");
    }
    p.converged(Duration::from_secs(60)).await;
    sink.stop().await;
    // Restarted with nothing new to read: it must not commit an offset behind the one it found.
    let sink = p.start_sink().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    sink.stop().await;

    let sink = p.start_sink().await;
    coll.insert_one(doc! {"_id": 1000}).await.expect("insert after the restart");
    p.converged(Duration::from_secs(60)).await;
    let consumed = metric(&sink.metrics().await, "sink_writer_messages_consumed_total");
    assert!(consumed < 100.0, "the restarted sink read {consumed} records again (420 were applied before)");
    sink.stop().await;
    source.stop().await;
}
