//! `[transforms]` end to end: a collection of people (nested addresses, arrays) per rule (each
//! rule alone, then all together), copied by the snapshot and then changed by a streamed
//! workload (inserts, `$set`, `$unset`, array truncations, replaces, deletes, documents moving in
//! and out of the filter). The target must equal the source passed through the rules, computed
//! here by a reference of the test's own (the filter's membership by the source server's own
//! query engine); no excluded or clear-text masked or hashed value may be in any record on the
//! topics, aborted transactions included; `sink-writer verify`, given the same rules file and
//! key, must report equal. Runs in both profiles (`E2E_COMPAT=documentdb`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bson::{doc, Binary, Bson, Document};
use e2e::pipeline::Pipeline;
use e2e::sink_commands::sink_command;
use futures::TryStreamExt;
use hmac::{Hmac, Mac};
use mongodb::IndexModel;
use sha2::Sha256;

const KEY: &str = "e2e-transforms-hmac-key-0123456789";
const FILTER: &str = r#"{"status": "active", "age": {"$gte": 18}}"#;
/// Each rule alone, then all together.
const KINDS: [&str; 6] = ["exclude", "rename", "mask", "hash", "filter", "all"];

fn has(kind: &str, rule: &str) -> bool {
    kind == rule || kind == "all"
}

fn rules_file(db: &str) -> String {
    let rule = |kind: &str| {
        let mut lines = vec![format!("[[rules]]\nnamespaces = '{db}\\.people_{kind}'")];
        if has(kind, "exclude") {
            lines.push(r#"exclude = ["ssn", "addresses.phone"]"#.into());
        }
        if has(kind, "rename") {
            lines.push(r#"rename = { "addresses.zip" = "postcode", "nick" = "alias" }"#.into());
        }
        if has(kind, "mask") {
            lines.push(r#"mask = ["phone", "birth.year", "tags"]"#.into());
        }
        if has(kind, "hash") {
            lines.push(r#"hash = ["email"]"#.into());
            if kind == "all" {
                lines.push(r#"hash_output = "binary""#.into());
            }
        }
        if has(kind, "filter") {
            lines.push(format!("filter = '{FILTER}'"));
        }
        lines.join("\n")
    };
    KINDS.iter().map(|k| rule(k)).collect::<Vec<_>>().join("\n\n")
}

/// A person; `v` versions the values so every write has tokens of its own. Inactive people of
/// `never` stay out of the filter for good: their name must never be on a topic.
fn person(kind: &str, id: i32, v: i32, active: bool, never: bool) -> Document {
    let name = if never { format!("NEVER-{kind}-{id}") } else { format!("N-{kind}-{id}-{v}") };
    doc! {
        "_id": id, "name": name, "nick": format!("nick{id}"), "email": format!("MAIL-{kind}-{id}-{v}@example.com"),
        "ssn": format!("SSN-{kind}-{id}-{v}"), "phone": format!("TEL-{kind}-{id}-{v}"),
        "status": if active { "active" } else { "inactive" }, "age": 15 + (id * 7 + v) % 50,
        "birth": {"year": 1970 + id, "city": "Lyon"},
        "addresses": [
            {"zip": format!("Z{id}a"), "city": "Paris", "phone": format!("ATEL-{kind}-{id}-{v}")},
            {"zip": format!("Z{id}b"), "city": "Nice", "phone": format!("ATEL-{kind}-{id}-{v}b")},
        ],
        "tags": [format!("TAG-{kind}-{id}-a"), format!("TAG-{kind}-{id}-b"), format!("TAG-{kind}-{id}-c")],
    }
}

/// The reference: what the rules of `kind` make of a source document, written here apart from
/// the product.
fn reference(kind: &str, doc: &Document) -> Document {
    let hmac = |text: &str| -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(KEY.as_bytes()).expect("key");
        mac.update(text.as_bytes());
        mac.finalize().into_bytes().to_vec()
    };
    let mask = |v: &Bson| match v {
        Bson::String(_) => Bson::String("****".into()),
        Bson::Int32(_) => Bson::Int32(0),
        Bson::Array(items) => Bson::Array(items.iter().map(|_| Bson::String("****".into())).collect()),
        other => panic!("the test masks no {other:?}"),
    };
    let mut out = Document::new();
    for (name, value) in doc {
        let mut value = value.clone();
        match name.as_str() {
            "ssn" if has(kind, "exclude") => continue,
            "phone" | "tags" if has(kind, "mask") => value = mask(&value),
            "email" if has(kind, "hash") => {
                let digest = hmac(value.as_str().expect("email text"));
                value = if kind == "all" {
                    Bson::Binary(Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: digest })
                } else {
                    Bson::String(digest.iter().map(|b| format!("{b:02x}")).collect())
                };
            }
            "birth" if has(kind, "mask") => {
                let mut birth = value.as_document().expect("birth").clone();
                if let Some(year) = birth.get("year").cloned() {
                    birth.insert("year", mask(&year));
                }
                value = Bson::Document(birth);
            }
            "addresses" => {
                let items = value.as_array().expect("addresses").iter().map(|a| {
                    let Bson::Document(a) = a else { return a.clone() };
                    let mut element = Document::new();
                    for (field, v) in a {
                        match field.as_str() {
                            "phone" if has(kind, "exclude") => {}
                            "postcode" if has(kind, "rename") => {}
                            "zip" if has(kind, "rename") => {
                                element.insert("postcode", v.clone());
                            }
                            _ => {
                                element.insert(field.clone(), v.clone());
                            }
                        }
                    }
                    Bson::Document(element)
                });
                value = Bson::Array(items.collect());
            }
            _ => {}
        }
        let name = if name == "nick" && has(kind, "rename") { "alias".to_string() } else { name.clone() };
        out.insert(name, value);
    }
    out
}

/// What the target must hold for `kind`: the source's documents that pass the filter (asked of
/// the source server itself), through the reference, by `_id`.
async fn expected(p: &Pipeline, kind: &str) -> HashMap<i32, Document> {
    let coll = p.source_db().collection::<Document>(&format!("people_{kind}"));
    let filter = if has(kind, "filter") {
        bson_filter()
    } else {
        doc! {}
    };
    let docs: Vec<Document> = coll.find(filter).await.expect("find").try_collect().await.expect("read");
    docs.iter().map(|d| (d.get_i32("_id").expect("_id"), reference(kind, d))).collect()
}

fn bson_filter() -> Document {
    let json: serde_json::Value = serde_json::from_str(FILTER).expect("json");
    bson::to_document(&json).expect("a document")
}

async fn difference(p: &Pipeline) -> Option<String> {
    for kind in KINDS {
        let want = expected(p, kind).await;
        let coll = p.target_db().collection::<Document>(&format!("people_{kind}"));
        let have: Vec<Document> = match coll.find(doc! {}).await {
            Ok(cursor) => cursor.try_collect().await.unwrap_or_default(),
            Err(e) => return Some(format!("{kind}: {e}")),
        };
        if have.len() != want.len() {
            return Some(format!("people_{kind}: {} documents on the target, {} expected", have.len(), want.len()));
        }
        for doc in have {
            let id = doc.get_i32("_id").unwrap_or(-1);
            let bytes = |d: &Document| bson::to_vec(d).unwrap_or_default();
            match want.get(&id) {
                Some(w) if bytes(w) == bytes(&doc) => {}
                other => return Some(format!("people_{kind} {id}: target {doc} but expected {other:?}")),
            }
        }
    }
    None
}

/// Every key and value of every record on the pipeline's topics, aborted transactions included.
fn topic_bytes(bootstrap: &str, prefix: &str) -> Vec<u8> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", test_support::unique("scan"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_uncommitted")
        .create()
        .expect("consumer");
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10)).expect("metadata");
    let mut assignment = TopicPartitionList::new();
    for topic in metadata.topics().iter().filter(|t| t.name().starts_with(prefix)) {
        for partition in topic.partitions() {
            assignment.add_partition_offset(topic.name(), partition.id(), Offset::Beginning).expect("assign");
        }
    }
    assert!(assignment.count() > 0, "no topic starts with {prefix}");
    // Up to each partition's end now (read_uncommitted: the high watermark), whatever comes later.
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    for element in assignment.elements() {
        let (_, high) = consumer
            .fetch_watermarks(element.topic(), element.partition(), Duration::from_secs(10))
            .expect("watermarks");
        if high > 0 {
            ends.insert((element.topic().to_string(), element.partition()), high);
        }
    }
    consumer.assign(&assignment).expect("assign");
    let mut bytes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ends.is_empty() {
        assert!(Instant::now() < deadline, "the topics were not read to their end: {ends:?}");
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            bytes.extend_from_slice(m.key().unwrap_or_default());
            bytes.push(b'\n');
            bytes.extend_from_slice(m.payload().unwrap_or_default());
            bytes.push(b'\n');
        }
        // The position passes transaction markers too, which are never delivered.
        for element in consumer.position().expect("position").elements() {
            if let Offset::Offset(at) = element.offset() {
                let key = (element.topic().to_string(), element.partition());
                if ends.get(&key).is_some_and(|high| at >= *high) {
                    ends.remove(&key);
                }
            }
        }
    }
    bytes
}

/// The streamed workload, the same on every collection.
async fn workload(p: &Pipeline, kind: &str) {
    let coll = p.source_db().collection::<Document>(&format!("people_{kind}"));
    for id in 100..120 {
        coll.insert_one(person(kind, id, 0, id % 3 != 0, id % 6 == 0)).await.expect("insert");
    }
    for id in 0..40 {
        let by = doc! {"_id": id};
        let v = 1 + id;
        let change = match id % 6 {
            0 => {
                doc! {"$set": {"email": format!("MAIL-{kind}-{id}-{v}@example.com"), "name": format!("N-{kind}-{id}-{v}")}}
            }
            1 => doc! {"$set": {"ssn": format!("SSN-{kind}-{id}-{v}")}},
            2 => {
                doc! {"$set": {"addresses.1.zip": format!("Z{id}-{v}"), "addresses.0.phone": format!("ATEL-{kind}-{id}-{v}")}}
            }
            3 => doc! {"$unset": {"phone": "", "ssn": ""}},
            4 => doc! {"$pop": {"tags": 1, "addresses": 1}},
            _ => {
                doc! {"$set": {"addresses.0": {"zip": format!("Z{id}-{v}"), "phone": format!("ATEL-{kind}-{id}-{v}"), "city": "Brest"},
                "phone": format!("TEL-{kind}-{id}-{v}"), "birth.year": 1999, "nick": format!("nick{v}")}}
            }
        };
        coll.update_one(by.clone(), change).await.expect("update");
        // In and out of the filter: through `status`, through `age`, and back.
        match id % 7 {
            0 => coll.update_one(by.clone(), doc! {"$set": {"status": "inactive"}}).await.expect("out"),
            1 => coll.update_one(by.clone(), doc! {"$set": {"status": "active", "age": 30}}).await.expect("in"),
            2 => coll.update_one(by.clone(), doc! {"$set": {"age": 12}}).await.expect("too young"),
            3 => coll.update_one(by.clone(), doc! {"$inc": {"age": 40}}).await.expect("older"),
            _ => coll.update_one(by.clone(), doc! {"$set": {"x": id}}).await.expect("touch"),
        };
        if id % 9 == 0 {
            coll.replace_one(by.clone(), person(kind, id, 50 + v, id % 2 == 0, false)).await.expect("replace");
        }
        if id % 8 == 5 {
            coll.delete_one(by.clone()).await.expect("delete");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_target_is_the_source_through_the_rules_and_nothing_hidden_reaches_kafka() {
    let started = Instant::now();
    let mut p = Pipeline::new("transforms", 2).await;
    let dir = p.dir();
    let rules = dir.join("rules.toml");
    std::fs::write(&rules, rules_file(&p.name)).expect("rules file");
    let rules_path = rules.display().to_string();
    p.source_config.transforms.rules_file = rules_path.clone();
    p.source_config.transforms.hash_key = transform_key();
    for kind in KINDS {
        let coll = p.source_db().collection::<Document>(&format!("people_{kind}"));
        let people: Vec<Document> = (0..40).map(|id| person(kind, id, 0, id % 4 != 3, id % 8 == 3)).collect();
        coll.insert_many(people).await.expect("insert");
        let unique = mongodb::options::IndexOptions::builder().unique(true).build();
        coll.create_indexes([
            IndexModel::builder().keys(doc! {"email": 1}).options(unique).build(),
            IndexModel::builder().keys(doc! {"ssn": 1}).build(),
            IndexModel::builder().keys(doc! {"addresses.zip": 1}).build(),
        ])
        .await
        .expect("indexes");
    }
    let source = p.start_source().await;
    let sink = p.start_sink().await;
    for kind in KINDS {
        workload(&p, kind).await;
    }
    eprintln!("transforms: snapshot and workload written after {:.1} s", started.elapsed().as_secs_f64());
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = None;
    while Instant::now() < deadline {
        last = difference(&p).await;
        if last.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(last.is_none(), "the target is not the source through the rules: {last:?}");
    eprintln!("transforms: the target is the source through the rules after {:.1} s", started.elapsed().as_secs_f64());

    // Nothing hidden on any topic.
    let bootstrap = p.source_config.kafka.bootstrap_servers.clone();
    let prefix = format!("{}.", p.name);
    let bytes = tokio::task::spawn_blocking(move || topic_bytes(&bootstrap, &prefix)).await.expect("scan");
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("N-exclude-"), "the scan read the records");
    for kind in KINDS {
        let mut hidden = Vec::new();
        if has(kind, "exclude") {
            hidden.extend([format!("SSN-{kind}-"), format!("ATEL-{kind}-")]);
        }
        if has(kind, "mask") {
            hidden.extend([format!("TEL-{kind}-"), format!("TAG-{kind}-")]);
        }
        if has(kind, "hash") {
            hidden.push(format!("MAIL-{kind}-"));
        }
        if has(kind, "filter") {
            hidden.push(format!("NEVER-{kind}-"));
        }
        for token in hidden {
            // ATEL- contains TEL-: look for the token at a boundary of its own.
            let found =
                text.match_indices(&token).any(|(at, _)| at == 0 || !text.as_bytes()[at - 1].is_ascii_alphabetic());
            assert!(!found, "{token} is on a topic");
        }
    }

    // Indexes: none on an excluded field, renamed keys, a unique one on a hashed field.
    let names = |kind: &'static str| {
        let db = p.target_db();
        async move {
            let coll = db.collection::<Document>(&format!("people_{kind}"));
            let specs: Vec<IndexModel> = coll.list_indexes().await.expect("indexes").try_collect().await.expect("read");
            specs.into_iter().map(|m| m.keys).collect::<Vec<Document>>()
        }
    };
    assert!(!names("exclude").await.contains(&doc! {"ssn": 1}));
    assert!(names("rename").await.contains(&doc! {"addresses.postcode": 1}));
    assert!(names("hash").await.contains(&doc! {"email": 1}));

    // doctor: the rule of every captured namespace, and what it leaves out.
    let servers = test_support::services();
    let (_, printed) = e2e::doctor(
        "cdc-source",
        &[
            ("MONGO__URI", servers.service_source_uri.clone()),
            ("KAFKA__BOOTSTRAP_SERVERS", servers.kafka_bootstrap.clone()),
            ("CAPTURE__NAME", p.name.clone()),
            ("CAPTURE__SCOPE", "database".into()),
            ("CAPTURE__DATABASE", p.name.clone()),
            ("TOPICS__PREFIX", p.name.clone()),
            ("TRANSFORMS__RULES_FILE", rules_path.clone()),
            ("TRANSFORMS__HASH_KEY", KEY.into()),
        ],
    )
    .await;
    for line in [
        format!("{}.people_all (rule '{}\\.people_all'): addresses.phone: exclude;", p.name, p.name),
        format!("{}.people_exclude: index ssn_1 not created: its key 'ssn' is excluded", p.name),
        "filter {\"status\": \"active\"".to_string(),
    ] {
        assert!(printed.contains(&line), "doctor does not say {line}: {printed}");
    }
    assert!(!printed.contains(KEY), "{printed}");
    eprintln!("transforms: topics scanned, indexes checked after {:.1} s", started.elapsed().as_secs_f64());
    let (code, report) = sink_command(
        &p,
        &["verify"],
        &[("TRANSFORMS__RULES_FILE", rules_path.as_str()), ("TRANSFORMS__HASH_KEY", KEY)],
    )
    .await;
    assert_eq!((code, &report["outcome"]), (0, &serde_json::json!("equal")), "{report:#}");
    eprintln!("transforms: verify equal after {:.1} s", started.elapsed().as_secs_f64());
    let excluded = format!("{}.people_exclude", p.name);
    let (code, report) = sink_command(&p, &["verify", "--namespace", &excluded], &[]).await;
    assert_eq!(code, 1, "without the rules the target differs: {report}");
    sink.stop().await;
    source.stop().await;
    eprintln!("transforms: {:.1} s", started.elapsed().as_secs_f64());
}

fn transform_key() -> transform::HashKey {
    transform::HashKey::new(KEY)
}

/// Runs `<service> --config FILE --print-config` with `env`: exit code, stdout and stderr.
async fn print_config(service: &str, file: &std::path::Path, env: &[(&str, &str)]) -> (i32, String) {
    let out = tokio::process::Command::new(e2e::binary(service))
        .arg("--config")
        .arg(file)
        .arg("--print-config")
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .await
        .expect("runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn every_configuration_problem_is_reported_at_start_and_the_key_never_printed() {
    let dir = test_support::workspace_root().join(".cache/e2e").join(test_support::unique("transforms-config"));
    std::fs::create_dir_all(&dir).expect("dir");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        r#"[[transforms.rules]]
namespaces = 'crm\.people'
exclude = ["ssn", "address"]
mask = ["address.city"]
rename = { nick = "ssn" }
hash = ["email"]

[[transforms.rules]]
namespaces = 'crm\.orders'
exclude = ["card"]
filter = '{"card.number": {"$exists": true}}'

[[transforms.rules]]
namespaces = 'crm\.x'
filter = '{"a": {"$near": [1, 2]}}'
"#,
    )
    .expect("write");
    for service in ["cdc-source", "sink-writer"] {
        let (code, text) = print_config(service, &bad, &[]).await;
        assert_eq!(code, 2, "{service}: {text}");
        for problem in [
            "path conflict: mask 'address.city' and exclude 'address'",
            "rename 'nick' to 'ssn'",
            "hash rules need a key",
            "the filter reads 'card.number', which is excluded",
            "unknown operator $near",
        ] {
            assert!(text.contains(problem), "{service}: '{problem}' not in {text}");
        }
    }
    let good = dir.join("good.toml");
    std::fs::write(&good, "[[transforms.rules]]\nnamespaces = 'crm\\.people'\nhash = ['email']\n").expect("write");
    let (code, text) = print_config("cdc-source", &good, &[("CDC_SOURCE__TRANSFORMS__HASH_KEY", KEY)]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(r#""hash_key": "***""#) && !text.contains(KEY), "{text}");
}
