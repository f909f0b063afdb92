//! Both services in-process against the real servers, and the convergence check.

use std::time::Duration;

use bson::{doc, Document};
use futures::TryStreamExt;
use service_kit::config::SecretUri;
pub use test_support::metric;
use test_support::{http_get, services, unique};
use tokio_util::sync::CancellationToken;

/// A source database replicated to a target database of the same name, through its own topics.
pub struct Pipeline {
    pub name: String,
    pub source: mongodb::Client,
    pub target: mongodb::Client,
    pub source_config: cdc_source::Config,
    pub sink_config: sink_writer::Config,
}

pub struct Started {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    pub addr: std::net::SocketAddr,
}

impl Started {
    /// Waits until the service is ready; a service that fails later fails the test.
    async fn watch<E>(name: &'static str, running: service_kit::shell::Running<E>, stop: CancellationToken) -> Self
    where
        E: From<String> + std::fmt::Display + Send + 'static,
    {
        let addr = running.http_addr;
        let task = tokio::spawn(async move {
            if let Err(e) = running.wait().await {
                panic!("{name} failed: {e}");
            }
        });
        wait_ready(addr).await;
        Started { stop, task, addr }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task).await.expect("stops in time").expect("joins");
    }

    pub async fn metrics(&self) -> String {
        http_get(self.addr, "/metrics").await.map(|(_, body)| body).unwrap_or_default()
    }
}

impl Pipeline {
    pub async fn new(test: &str, partitions: i32) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
        let servers = services();
        let name = unique(test);
        let mut source_config = cdc_source::Config::default();
        source_config.http.listen_addr = "127.0.0.1:0".parse().expect("addr");
        source_config.mongo.uri = SecretUri::new(servers.service_source_uri.clone());
        source_config.kafka.bootstrap_servers = servers.kafka_bootstrap.clone();
        source_config.capture.name = name.clone();
        source_config.capture.scope = cdc_source::Scope::Database;
        source_config.capture.database = name.clone();
        source_config.capture.max_await_ms = 200;
        source_config.topics.prefix = name.clone();
        source_config.topics.partitions = partitions;
        source_config.delivery.batch_max_wait_ms = 20;

        let mut sink_config = sink_writer::Config::default();
        sink_config.http.listen_addr = "127.0.0.1:0".parse().expect("addr");
        sink_config.mongo.uri = SecretUri::new(servers.service_target_uri.clone());
        sink_config.kafka.bootstrap_servers = servers.kafka_bootstrap.clone();
        sink_config.kafka.options.insert("topic.metadata.refresh.interval.ms".into(), "1000".into());
        sink_config.consume.topics = vec![format!("^{name}\\..*")];
        sink_config.consume.group_id = format!("{name}-sink");
        sink_config.consume.dead_letter_topic = format!("{name}-dlq");
        sink_config.consume.commit_interval_ms = 200;
        sink_config.apply.metadata_database = format!("{name}_meta");
        // E2E_COMPAT=documentdb runs the suite in the DocumentDB profile (make test does both):
        // the services use compat = "documentdb" and reach MongoDB through docdb-guard, which
        // refuses what Amazon DocumentDB refuses; the test's own clients below stay direct.
        if std::env::var("E2E_COMPAT").is_ok() {
            let compat = if test_support::documentdb_profile() {
                service_kit::connect::Compat::Documentdb
            } else {
                service_kit::connect::Compat::Mongodb
            };
            source_config.capture.compat = compat;
            sink_config.apply.compat = compat;
        }
        let source = test_support::mongo(&servers.mongo_source_uri).await;
        let target = test_support::mongo(&servers.mongo_target_uri).await;
        Self { name, source, target, source_config, sink_config }
    }

    /// For tests of what only a MongoDB source does (expanded change events): the source runs
    /// with `compat = "mongodb"` against the source mongod directly, also in the DocumentDB profile.
    pub fn source_is_mongodb(&mut self) {
        self.source_config.capture.compat = service_kit::connect::Compat::Mongodb;
        self.source_config.mongo.uri = SecretUri::new(services().mongo_source_uri);
    }

    /// For tests of what only MongoDB has on both sides (views, time series): both services run
    /// with `compat = "mongodb"` against the mongods directly, also in the DocumentDB profile
    /// (a DocumentDB source could not hold what such a test writes).
    pub fn both_mongodb(&mut self) {
        self.source_is_mongodb();
        self.sink_config.apply.compat = service_kit::connect::Compat::Mongodb;
        self.sink_config.mongo.uri = SecretUri::new(services().mongo_target_uri);
    }

    /// Points the sink and the test's target client at a mongod of the test's own (failpoints
    /// there touch nobody else).
    pub fn target_own(&mut self, own: &crate::mongod::PrivateMongod) {
        self.sink_config.mongo.uri = SecretUri::new(own.uri.clone());
        self.target = own.client.clone();
    }

    pub fn source_db(&self) -> mongodb::Database {
        self.source.database(&self.name)
    }

    pub fn target_db(&self) -> mongodb::Database {
        self.target.database(&self.name)
    }

    pub async fn start_source(&self) -> Started {
        let stop = CancellationToken::new();
        let running = cdc_source::start(self.source_config.clone(), stop.clone()).await.expect("cdc-source starts");
        Started::watch("cdc-source", running, stop).await
    }

    pub async fn start_sink(&self) -> Started {
        let stop = CancellationToken::new();
        let running = sink_writer::start(self.sink_config.clone(), stop.clone()).await.expect("sink-writer starts");
        Started::watch("sink-writer", running, stop).await
    }

    /// Gives the target's `items` a rule the source lacks: `qty` must be a number. Before the
    /// sink starts, or it may create `items` without it.
    pub async fn items_need_a_numeric_qty_in_the_target(&self) {
        self.target_db()
            .run_command(
                doc! {"create": "items", "validator": {"qty": {"$type": "number"}}, "validationAction": "error"},
            )
            .await
            .expect("target validator");
    }

    /// Three source `items`; the target refuses the second (`_id` 2, a text `qty`) under
    /// [`Pipeline::items_need_a_numeric_qty_in_the_target`].
    pub async fn insert_items_one_refused(&self) {
        self.source_db()
            .collection::<Document>("items")
            .insert_many(vec![doc! {"_id": 1, "qty": 1}, doc! {"_id": 2, "qty": "many"}, doc! {"_id": 3, "qty": 3}])
            .await
            .expect("insert");
    }

    /// A directory of this test's own (logs of the processes it starts).
    pub fn dir(&self) -> std::path::PathBuf {
        let dir = test_support::workspace_root().join(".cache/e2e").join(&self.name);
        std::fs::create_dir_all(&dir).expect("test directory");
        dir
    }

    /// A proxy named `target` to the target the services use (the guard in the DocumentDB
    /// profile): the URI that reaches the target through it.
    pub async fn target_via(&self, toxiproxy: &crate::toxiproxy::Toxiproxy) -> String {
        let uri = services().service_target_uri;
        let host = uri.trim_start_matches("mongodb://").split(['/', '?']).next().unwrap_or_default().to_string();
        let link = toxiproxy.proxy("target", &host).await;
        format!("mongodb://{link}/?directConnection=true")
    }

    /// The `SINK_WRITER__…` environment of a sink-writer process with this pipeline's sink
    /// settings, serving HTTP on `http` and writing to `mongo_uri`.
    pub fn sink_process_env(&self, http: std::net::SocketAddr, mongo_uri: &str) -> Vec<(String, String)> {
        let c = &self.sink_config;
        let mut env = vec![
            ("HTTP__LISTEN_ADDR".to_string(), http.to_string()),
            ("MONGO__URI".into(), mongo_uri.to_string()),
            ("MONGO__SERVER_SELECTION_TIMEOUT_MS".into(), c.mongo.server_selection_timeout_ms.to_string()),
            ("KAFKA__BOOTSTRAP_SERVERS".into(), c.kafka.bootstrap_servers.clone()),
            ("CONSUME__TOPICS".into(), c.consume.topics.join(",")),
            ("CONSUME__GROUP_ID".into(), c.consume.group_id.clone()),
            ("CONSUME__DEAD_LETTER_TOPIC".into(), c.consume.dead_letter_topic.clone()),
            ("CONSUME__COMMIT_INTERVAL_MS".into(), c.consume.commit_interval_ms.to_string()),
            ("APPLY__METADATA_DATABASE".into(), c.apply.metadata_database.clone()),
            ("APPLY__MAX_BACKOFF_MS".into(), c.apply.max_backoff_ms.to_string()),
            ("APPLY__DRAIN_TIMEOUT_MS".into(), c.apply.drain_timeout_ms.to_string()),
            ("APPLY__BATCH_MAX_DOCS".into(), c.apply.batch_max_docs.to_string()),
            ("APPLY__BATCH_MAX_WAIT_MS".into(), c.apply.batch_max_wait_ms.to_string()),
            ("APPLY__MAX_IN_FLIGHT".into(), c.apply.max_in_flight.to_string()),
            ("APPLY__CONFLICT_RETRY_TIMEOUT_MS".into(), c.apply.conflict_retry_timeout_ms.to_string()),
            ("APPLY__MEMORY_BUDGET_BYTES".into(), c.apply.memory_budget_bytes.to_string()),
            ("CONSUME__MAX_RECORD_BYTES".into(), c.consume.max_record_bytes.to_string()),
            (
                "APPLY__MODE".into(),
                match c.apply.mode {
                    sink_writer::ApplyMode::Auto => "auto",
                    sink_writer::ApplyMode::ExactlyOnce => "exactly_once",
                    sink_writer::ApplyMode::Idempotent => "idempotent",
                }
                .into(),
            ),
            ("APPLY__COMPAT".into(), format!("{:?}", c.apply.compat).to_lowercase()),
        ];
        for (key, value) in &c.kafka.options {
            env.push((format!("KAFKA__OPTIONS__{}", key.replace('.', "_").to_uppercase()), value.clone()));
        }
        env.into_iter().map(|(k, v)| (format!("SINK_WRITER__{k}"), v)).collect()
    }

    /// Waits until every source collection equals its target collection, document for document
    /// and byte for byte (types and field order), and no extra collection exists in the target.
    /// A source without documents never counts as converged: the test would prove nothing.
    pub async fn converged(&self, timeout: Duration) {
        let mut last = String::new();
        let outcome = tokio::time::timeout(timeout, async {
            loop {
                match self.difference().await {
                    None => return,
                    Some(diff) => last = diff,
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
        .await;
        assert!(outcome.is_ok(), "target did not converge within {timeout:?}: {last}");
    }

    /// The first difference between source and target, if any (an empty source is one).
    pub async fn difference(&self) -> Option<String> {
        let comparison = self.compare().await;
        if comparison.source_documents == 0 && comparison.first.is_none() {
            return Some("the source holds no documents: nothing would be compared".into());
        }
        let Comparison { source_documents, lost, divergent, extra, first } = comparison;
        first.map(|first| {
            format!("{first} ({source_documents} source documents: {lost} lost, {divergent} divergent, {extra} extra)")
        })
    }

    /// Every collection of the source database against the target's, document by document.
    pub async fn compare(&self) -> Comparison {
        use service_kit::connect::Compat;
        match self.sink_config.apply.compat {
            Compat::Auto => compare_databases(&self.source_db(), &self.target_db()).await,
            compat => compare_databases_carrying(&self.source_db(), &self.target_db(), compat == Compat::Mongodb).await,
        }
    }
}

/// How a target database differs from its source.
#[derive(Debug, Default, Clone)]
pub struct Comparison {
    pub source_documents: usize,
    /// In the source, not in the target.
    pub lost: usize,
    /// In both, not byte-equal (types and field order count).
    pub divergent: usize,
    /// In the target only (including whole extra collections).
    pub extra: usize,
    /// A description of the first difference found.
    pub first: Option<String>,
}

/// Compares every collection of `source` with the same-named one in `target`. In the DocumentDB
/// profile, views are left out when DocumentDB cannot hold them (the schema checks require the
/// sink to report them instead).
pub async fn compare_databases(source: &mongodb::Database, target: &mongodb::Database) -> Comparison {
    let view = doc! {"create": "v", "viewOn": "c", "pipeline": [], "$db": "db"};
    let views_carried = !test_support::documentdb_profile() || docdb_guard::check(&view).is_ok();
    compare_databases_carrying(source, target, views_carried).await
}

/// [`compare_databases`], saying whether the sink carries views (its `compat`).
pub async fn compare_databases_carrying(
    source: &mongodb::Database,
    target: &mongodb::Database,
    views_carried: bool,
) -> Comparison {
    let specs: Vec<_> = source.list_collections().await.expect("source collections").try_collect().await.expect("list");
    let mut names: Vec<String> = specs
        .into_iter()
        .filter(|spec| views_carried || spec.collection_type != mongodb::results::CollectionType::View)
        .filter(|spec| views_carried || !spec.name.starts_with("system."))
        .map(|spec| spec.name)
        .collect();
    let mut target_names = target.list_collection_names().await.expect("target collections");
    names.sort();
    target_names.sort();
    let mut result = Comparison::default();
    for name in target_names.iter().filter(|n| !names.contains(n)) {
        result.extra += all(target, name, &mut result.first).await.len();
        result.first.get_or_insert_with(|| format!("collection {name} exists only in the target"));
    }
    for name in names {
        let source_docs = all(source, &name, &mut result.first).await;
        let mut target_docs: std::collections::HashMap<Vec<u8>, Document> =
            all(target, &name, &mut result.first).await.into_iter().map(|d| (id_key(&d), d)).collect();
        result.source_documents += source_docs.len();
        for s in &source_docs {
            match target_docs.remove(&id_key(s)) {
                None => {
                    result.lost += 1;
                    result.first.get_or_insert_with(|| format!("{name}: {:?} missing in the target", s.get("_id")));
                }
                Some(t) if bson::to_vec(s).ok() != bson::to_vec(&t).ok() => {
                    result.divergent += 1;
                    result.first.get_or_insert_with(|| format!("{name}: source {s:?} but target {t:?}"));
                }
                Some(_) => {}
            }
        }
        if !target_docs.is_empty() {
            result.extra += target_docs.len();
            result.first.get_or_insert_with(|| format!("{name}: {} documents only in the target", target_docs.len()));
        }
    }
    result
}

/// The `_id` as bytes, to match documents across the two sides.
fn id_key(d: &Document) -> Vec<u8> {
    bson::to_vec(&doc! {"_id": d.get("_id").cloned().unwrap_or(bson::Bson::Null)}).unwrap_or_default()
}

/// Every document of `coll`; a read interrupted (the sink renaming or dropping the collection
/// meanwhile) is a difference for now, noted in `first`.
async fn all(db: &mongodb::Database, coll: &str, first: &mut Option<String>) -> Vec<Document> {
    let read = async { db.collection::<Document>(coll).find(doc! {}).sort(doc! {"_id": 1}).await?.try_collect().await };
    match read.await {
        Ok(docs) => docs,
        Err(e) => {
            first.get_or_insert_with(|| format!("{}.{coll}: read interrupted ({e})", db.name()));
            Vec::new()
        }
    }
}

pub use test_support::wait_ready;
