//! Interop, proven by the real tools on the real broker (installed by scripts/interop/install.sh):
//! - our topics → the MongoDB Kafka Connector 2.0.1 sink (Kafka Connect 4.4.0, Debezium
//!   ChangeStreamHandler, JSON without schemas, default error handling);
//! - our topics in mode = "flink" → Flink 2.2.1 SQL, debezium-json, default error handling;
//! - the Debezium 3.6.1 MongoDB connector's topics (Kafka Connect 4.1.1; snapshot and stream,
//!   change_streams_update_full, JSON with and without schemas) → sink-writer.
//!
//! Each checks what the tool built against the source, document for document.

use std::collections::BTreeMap;
use std::time::Duration;

use bson::spec::BinarySubtype;
use bson::{doc, oid::ObjectId, Binary, Bson, DateTime, Decimal128, Document, Regex, Timestamp};
use e2e::interop::{debezium_properties, flink_sql, scratch, wait_while_running, Connect, ConnectKind};
use e2e::pipeline::{compare_databases, Pipeline};
use futures::TryStreamExt;

fn every_type(i: i32) -> Document {
    doc! {
        "_id": i,
        "i32": i, "i64": i64::from(i) * 10_000_000_000, "dbl": f64::from(i) + 0.5, "str": format!("s{i} é"),
        "bool": i % 2 == 0,
        "oid": ObjectId::parse_str("64b7f1e2a1b2c3d4e5f60718").expect("oid"),
        "dec": "1234.5678".parse::<Decimal128>().expect("decimal"),
        "date": DateTime::from_millis(1_700_000_000_000 + i64::from(i)),
        "ts": Timestamp { time: 1_700_000_000, increment: i as u32 },
        "bin": Binary { subtype: BinarySubtype::Generic, bytes: vec![1, 2, 3] },
        "uuid": Binary { subtype: BinarySubtype::Uuid, bytes: vec![7; 16] },
        "re": Regex { pattern: "^a".into(), options: "i".into() },
        "min": Bson::MinKey, "max": Bson::MaxKey, "nil": Bson::Null, "whole": 2.0_f64,
        "nested": {"a": [1, {"b": [2, 3]}], "c": {"d": "e"}},
        "tags": ["x", "y", "z"],
    }
}

/// Inserts, updates of every kind, replaces and deletes on `coll`, plus an update whose
/// document is deleted in the same transaction (its looked-up document is null).
async fn workload(client: &mongodb::Client, coll: &mongodb::Collection<Document>, n: i32) {
    coll.insert_many((0..n).map(every_type)).await.expect("insert");
    for i in 0..n {
        let filter = doc! {"_id": i};
        match i % 6 {
            0 => coll
                .update_one(filter, doc! {"$set": {"nested.c.d": "changed", "i64": 7_i64}, "$unset": {"str": ""}})
                .await
                .map(|_| ()),
            1 => coll.update_one(filter, doc! {"$inc": {"i32": 5, "i64": 1_i64}}).await.map(|_| ()),
            2 => coll.update_one(filter, doc! {"$push": {"tags": "w"}}).await.map(|_| ()),
            3 => coll.update_one(filter, vec![doc! {"$set": {"tags": {"$slice": ["$tags", 1]}}}]).await.map(|_| ()),
            4 => coll.replace_one(filter, doc! {"_id": i, "replaced": true, "i32": 1}).await.map(|_| ()),
            _ => coll.delete_one(filter).await.map(|_| ()),
        }
        .expect("write");
    }
    let mut session = client.start_session().await.expect("session");
    session.start_transaction().await.expect("transaction");
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"i32": 99}}).session(&mut session).await.expect("update");
    coll.delete_one(doc! {"_id": 1}).session(&mut session).await.expect("delete");
    session.commit_transaction().await.expect("commit");
}

/// The MongoDB Kafka Connector's sink properties for our topics, into `database`.
fn mkc_properties(topics: &[(String, &str)], database: &str, handler: &str) -> String {
    let mut props = format!(
        "connector.class=com.mongodb.kafka.connect.MongoSinkConnector\n\
         tasks.max=1\n\
         topics={}\n\
         connection.uri={}\n\
         database={database}\n\
         change.data.capture.handler=com.mongodb.kafka.connect.sink.cdc.debezium.mongodb.{handler}\n",
        topics.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>().join(","),
        test_support::services().mongo_target_uri,
    );
    for (topic, collection) in topics {
        props.push_str(&format!("topic.override.{topic}.collection={collection}\n"));
    }
    props
}

/// Our topics (Debezium mode, four partitions, a drop among the data) → the MongoDB Kafka
/// Connector sink with its default error handling (errors.tolerance=none): it applies every data
/// event and skips our control events. It applies no drop (it has no such operation), so the
/// dropped collection's older documents stay in its target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_kafka_connector_applies_our_topics_and_skips_control_events() {
    let p = Pipeline::new("mkc", 4).await;
    let source = p.start_source().await;
    let db = p.source_db();
    let gone = db.collection::<Document>("gone");
    gone.insert_many((0..20).map(|i| doc! {"_id": i, "old": true})).await.expect("insert");
    gone.drop().await.expect("drop");
    gone.insert_many((100..120).map(|i| doc! {"_id": i, "old": false})).await.expect("insert after the drop");
    workload(&p.source, &db.collection("items"), 60).await;

    let target = format!("{}_mkc", p.name);
    let topics: Vec<(String, &str)> =
        ["gone", "items"].into_iter().map(|c| (format!("{}.{}.{c}", p.name, p.name), c)).collect();
    // The older MongoDbHandler (oplog `patch` updates) only on the topic without updates: it
    // skips control events the same way.
    let oplog_target = format!("{}_mkc_oplog", p.name);
    let connect = Connect::start(
        ConnectKind::MongoKafkaConnector,
        &scratch(&p.name),
        &[
            ("mkc", mkc_properties(&topics, &target, "ChangeStreamHandler")),
            ("mkc-oplog", mkc_properties(&topics[..1], &oplog_target, "MongoDbHandler")),
        ],
    )
    .await;
    let target_db = p.target.database(&target);
    wait_while_running(
        &connect,
        "mkc",
        "the connector's target equals the source",
        Duration::from_secs(150),
        || async {
            let c = compare_databases(&p.source_db(), &target_db).await;
            // Exactly the 20 documents the drop removed are extra: MKC cannot drop.
            (c.lost > 0 || c.divergent > 0 || c.extra != 20).then(|| format!("{c:?}"))
        },
    )
    .await;
    let kept = target_db.collection::<Document>("gone").count_documents(doc! {"old": true}).await.expect("count");
    assert_eq!(kept, 20, "the dropped documents are what MKC keeps");
    let oplog = p.target.database(&oplog_target).collection::<Document>("gone");
    wait_while_running(&connect, "mkc-oplog", "MongoDbHandler wrote the inserts", Duration::from_secs(60), || async {
        let n = oplog.count_documents(doc! {}).await.expect("count");
        (n != 40).then(|| format!("{n} documents"))
    })
    .await;
    connect.assert_not_failed("mkc").await;
    connect.assert_not_failed("mkc-oplog").await;
    connect.stop().await;
    source.stop().await;
}

/// Our topics in mode = "flink" → Flink SQL's debezium-json format with default settings: no
/// parse error, `value.source.table` names the collection, and the table the changelog builds
/// equals the source (as relaxed JSON, which is what Flink reads), apart from the dropped
/// collection's older rows (Flink has no drop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flink_sql_reads_our_flink_mode_topics() {
    let mut p = Pipeline::new("flink", 2).await;
    p.source_config.capture.mode = envelope::Mode::Flink;
    let source = p.start_source().await;
    let db = p.source_db();
    let gone = db.collection::<Document>("gone");
    gone.insert_many((0..10).map(|i| doc! {"_id": i, "bool": true})).await.expect("insert");
    gone.drop().await.expect("drop");
    gone.insert_many((100..110).map(|i| doc! {"_id": i, "bool": false})).await.expect("insert after the drop");
    workload(&p.source, &db.collection("items"), 30).await;
    // Everything is on the topics before the bounded Flink scan starts: a last insert, once
    // committed, follows every earlier record (the source commits its batches in order).
    let items = db.collection::<Document>("items");
    items.insert_one(every_type(1000)).await.expect("last insert");
    let items_topic = format!("{}.{}.items", p.name, p.name);
    test_support::eventually("the last insert on its topic", Duration::from_secs(60), || async {
        let records = test_support::consume_all(
            &test_support::services().kafka_bootstrap,
            &[&items_topic],
            1,
            Duration::from_secs(2),
        )
        .await;
        records.iter().any(|r| r.key.as_deref() == Some(br#"{"id":"1000"}"#.as_slice())).then_some(())
    })
    .await;

    let columns = [
        ("_id", "INT"),
        ("i32", "INT"),
        ("i64", "BIGINT"),
        ("dbl", "DOUBLE"),
        ("str", "STRING"),
        ("bool", "BOOLEAN"),
        ("oid", "STRING"),
        ("dec", "STRING"),
        ("date", "STRING"),
        ("ts", "STRING"),
        ("bin", "STRING"),
        ("uuid", "STRING"),
        ("re", "STRING"),
        ("min", "STRING"),
        ("max", "STRING"),
        ("nil", "STRING"),
        ("whole", "DOUBLE"),
        ("nested", "STRING"),
        ("tags", "STRING"),
        ("replaced", "BOOLEAN"),
    ];
    let table_ddl = |name: &str, source: &str, key: &str| {
        format!(
            "CREATE TABLE {name} (\n  `coll` STRING METADATA FROM 'value.source.table' VIRTUAL,\n  \
             `db` STRING METADATA FROM 'value.source.database' VIRTUAL,\n  {}{key}\n) WITH (\n  \
             'connector' = 'kafka',\n  {source},\n  \
             'properties.bootstrap.servers' = '{}',\n  'properties.group.id' = '{}-flink',\n  \
             'properties.isolation.level' = 'read_committed',\n  'scan.startup.mode' = 'earliest-offset',\n  \
             'scan.bounded.mode' = 'latest-offset',\n  'value.format' = 'debezium-json'\n)",
            columns.iter().map(|(c, t)| format!("`{c}` {t}")).collect::<Vec<_>>().join(",\n  "),
            test_support::services().kafka_bootstrap,
            p.name,
        )
    };
    let create = table_ddl("src", &format!("'topic-pattern' = '{}\\.{}\\..*'", p.name, p.name), "");
    let query = "SELECT CONCAT(`coll`, '/', CAST(`_id` AS STRING)) AS `key`, * FROM src".to_string();
    let table = flink_sql(&scratch(&p.name), &[create, query]).await.unwrap_or_else(|e| panic!("Flink failed:\n{e}"));
    eprintln!("flink changelog: {}", table.changes);

    let unnamed = table.rows.iter().filter(|r| !r["coll"].is_string()).count();
    assert_eq!(unnamed, 0, "rows whose value.source.table metadata is null (Flink reads source.table)");
    let rows: BTreeMap<String, &serde_json::Map<String, serde_json::Value>> =
        table.rows.iter().map(|r| (r["key"].as_str().unwrap_or_default().to_string(), r)).collect();
    let mut expected = BTreeMap::new();
    for coll in ["gone", "items"] {
        let docs: Vec<Document> =
            db.collection(coll).find(doc! {}).await.expect("find").try_collect().await.expect("read");
        for d in docs {
            expected.insert(format!("{coll}/{}", d.get_i32("_id").expect("int _id")), d);
        }
    }
    let mut differences = Vec::new();
    for (key, source) in &expected {
        let Some(row) = rows.get(key) else {
            differences.push(format!("{key}: missing in Flink's table"));
            continue;
        };
        assert_eq!(row["db"], serde_json::json!(p.name), "value.source.database");
        assert_eq!(row["coll"].as_str(), key.split('/').next(), "value.source.table names the collection");
        for (column, _) in &columns {
            let want = source
                .get(*column)
                .map(|v| {
                    serde_json::from_str::<serde_json::Value>(&envelope::extjson::value_to_string(
                        v,
                        envelope::extjson::Style::Relaxed,
                    ))
                    .expect("relaxed JSON")
                })
                .unwrap_or(serde_json::Value::Null);
            let got = match (&want, &row[*column]) {
                // Flink hands a STRING column the JSON text of an object or array.
                (serde_json::Value::Object(_) | serde_json::Value::Array(_), serde_json::Value::String(text)) => {
                    serde_json::from_str(text).unwrap_or(serde_json::Value::String(text.clone()))
                }
                (_, other) => other.clone(),
            };
            let same = match (&want, &got) {
                (serde_json::Value::Number(a), serde_json::Value::Number(b)) => a.as_f64() == b.as_f64(),
                _ => want == got,
            };
            if !same {
                differences.push(format!("{key}.{column}: source {want}, Flink {got}"));
            }
        }
    }
    let extra: Vec<&String> = rows.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(differences.is_empty(), "Flink's table differs from the source:\n{}", differences.join("\n"));
    // The dropped collection's older rows: Flink's changelog has no drop.
    assert_eq!(extra.len(), 10, "only the dropped rows are extra: {extra:?}");
    assert!(extra.iter().all(|k| k.starts_with("gone/")));

    // Aggregates need whole rows retracted: with a primary key and
    // table.exec.source.cdc-events-duplicate, Flink keeps each key's last row and retracts it
    // itself, so key-only -U/-D rows (no pre-images) and the repeated delete of an update whose
    // document is gone count right.
    let keyed = table_ddl("items", &format!("'topic' = '{items_topic}'"), ",\n  PRIMARY KEY (`_id`) NOT ENFORCED");
    let aggregate = "SELECT `coll`, COUNT(*) AS `n`, SUM(CAST(`i32` AS BIGINT)) AS `total` FROM items GROUP BY `coll`";
    let totals = flink_sql(
        &scratch(&format!("{}-agg", p.name)),
        &["SET 'table.exec.source.cdc-events-duplicate' = 'true'".to_string(), keyed, aggregate.to_string()],
    )
    .await
    .unwrap_or_else(|e| panic!("Flink failed:\n{e}"));
    let docs: Vec<Document> = items.find(doc! {}).await.expect("find").try_collect().await.expect("read");
    let total: i64 = docs.iter().filter_map(|d| d.get_i32("i32").ok()).map(i64::from).sum();
    assert_eq!(totals.rows.len(), 1, "{:?}", totals.rows);
    assert_eq!(totals.rows[0]["n"], serde_json::json!(docs.len()), "COUNT(*) over the changelog");
    assert_eq!(totals.rows[0]["total"], serde_json::json!(total), "SUM(i32) over the changelog");
    source.stop().await;
}

/// One `_id` of every type a document can have.
fn ids() -> Vec<Bson> {
    vec![
        Bson::ObjectId(ObjectId::parse_str("64b7f1e2a1b2c3d4e5f60718").expect("oid")),
        Bson::Int32(7),
        Bson::Int64(8),
        Bson::Int64(9_007_199_254_740_993),
        Bson::Double(1.5),
        Bson::Double(2.0),
        Bson::Decimal128("1234.5678".parse().expect("decimal")),
        Bson::String("quote \" é 🎉".into()),
        Bson::DateTime(DateTime::from_millis(1_700_000_000_120)),
        Bson::DateTime(DateTime::from_millis(-5)),
        Bson::Binary(Binary { subtype: BinarySubtype::Uuid, bytes: vec![0xab; 16] }),
        Bson::Boolean(true),
        Bson::Timestamp(Timestamp { time: 1_700_000_000, increment: 3 }),
        Bson::MinKey,
        Bson::Document(doc! {"tenant": 4, "n": 77_i64, "tags": [1, [2, 3]]}),
    ]
}

/// Debezium 3.6.1's own topics (snapshot of existing documents, then streamed changes;
/// change_streams_update_full; JSON without and with schemas) → sink-writer: the target equals
/// the source byte for byte and nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debezium_topics_replicate_exactly_through_sink_writer() {
    let plain = Pipeline::new("dbz_plain", 4).await;
    let schema = Pipeline::new("dbz_schema", 4).await;
    for p in [&plain, &schema] {
        // Existing documents: Debezium's snapshot reads them.
        p.source_db().collection::<Document>("items").insert_many((1000..1040).map(every_type)).await.expect("seed");
        let typed = ids().into_iter().enumerate().map(|(n, id)| doc! {"_id": id, "n": n as i32, "phase": "snapshot"});
        p.source_db().collection::<Document>("ids").insert_many(typed).await.expect("seed ids");
    }
    let connect = Connect::start(
        ConnectKind::Debezium,
        &scratch(&plain.name),
        &[
            ("dbz-plain", debezium_properties(&plain.name, false)),
            ("dbz-schema", debezium_properties(&schema.name, true)),
        ],
    )
    .await;
    for (p, connector) in [(&plain, "dbz-plain"), (&schema, "dbz-schema")] {
        let topic = format!("{}.{}.items", p.name, p.name);
        let bootstrap = test_support::services().kafka_bootstrap;
        wait_while_running(&connect, connector, "the snapshot", Duration::from_secs(120), || {
            let (topic, bootstrap) = (topic.clone(), bootstrap.clone());
            async move {
                let n = test_support::consume_all(&bootstrap, &[&topic], 40, Duration::from_secs(3)).await.len();
                (n < 40).then(|| format!("{n} snapshot records"))
            }
        })
        .await;
    }
    let sinks = [plain.start_sink().await, schema.start_sink().await];
    for p in [&plain, &schema] {
        let items = p.source_db().collection::<Document>("items");
        workload(&p.source, &items, 30).await;
        // Streamed changes to documents the snapshot read.
        items
            .update_many(doc! {"_id": {"$gte": 1000, "$lt": 1010}}, doc! {"$set": {"after_snapshot": true}})
            .await
            .expect("update");
        items.delete_many(doc! {"_id": {"$gte": 1030}}).await.expect("delete");
        // Every _id type streamed: updated, replaced, deleted, inserted again.
        let typed = p.source_db().collection::<Document>("ids");
        for (n, id) in ids().into_iter().enumerate() {
            let filter = doc! {"_id": id.clone()};
            match n % 3 {
                0 => typed.update_one(filter, doc! {"$set": {"phase": "updated", "big": 5_i64}}).await.map(|_| ()),
                1 => typed.replace_one(filter, doc! {"_id": id.clone(), "phase": "replaced"}).await.map(|_| ()),
                _ => {
                    async {
                        typed.delete_one(filter).await?;
                        typed.insert_one(doc! {"_id": id.clone(), "phase": "again"}).await.map(|_| ())
                    }
                    .await
                }
            }
            .expect("write");
        }
    }
    for (p, connector) in [(&plain, "dbz-plain"), (&schema, "dbz-schema")] {
        wait_while_running(&connect, connector, "the target equals the source", Duration::from_secs(120), || async {
            p.difference().await
        })
        .await;
        let dead = test_support::consume_all(
            &test_support::services().kafka_bootstrap,
            &[&p.sink_config.consume.dead_letter_topic],
            0,
            Duration::from_secs(3),
        )
        .await;
        assert!(
            dead.is_empty(),
            "{connector}: {} records dead-lettered, the first: {:?}",
            dead.len(),
            dead.first().and_then(|r| r.value.as_deref()).map(String::from_utf8_lossy)
        );
    }
    for sink in sinks {
        sink.stop().await;
    }
    connect.stop().await;
}

/// A document whose `_id` is a small Int64, deleted and inserted again, from Debezium's topics.
/// Debezium's key says `{"id":"8"}` (relaxed JSON), so the delete's document key decodes as
/// Int32 8 while the insert's (from its document) is Int64 8; sink-writer groups a batch's writes
/// by the key as the record key renders it (the same for both), so the delete and the insert
/// stay in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debezium_small_int64_id_deleted_and_inserted_again_converges() {
    let p = Pipeline::new("dbz_int64", 1).await;
    let typed = p.source_db().collection::<Document>("ids");
    typed.insert_one(doc! {"_id": 8_i64, "phase": "snapshot"}).await.expect("seed");
    let connect =
        Connect::start(ConnectKind::Debezium, &scratch(&p.name), &[("dbz", debezium_properties(&p.name, false))]).await;
    let sink = p.start_sink().await;
    p.converged(Duration::from_secs(120)).await;
    typed.delete_one(doc! {"_id": 8_i64}).await.expect("delete");
    typed.insert_one(doc! {"_id": 8_i64, "phase": "again"}).await.expect("insert");
    wait_while_running(&connect, "dbz", "the target equals the source", Duration::from_secs(60), || async {
        p.difference().await
    })
    .await;
    sink.stop().await;
    connect.stop().await;
}
